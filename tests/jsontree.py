"""Comparing decoded JSON exactly (the store's and the ingest path's JSON tests)."""


def typed(value):
    """A value's tree with every leaf's type and repr: NaN equals NaN, 1 differs from 1.0."""
    if isinstance(value, dict):
        return ("dict", sorted((repr(k), typed(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [typed(v) for v in value])
    return (type(value).__name__, repr(value))
