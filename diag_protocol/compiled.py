"""``SCHEMA`` compiled once into validator closures that clean and check in one walk.

``clean`` then ``check`` (schema.py) walk a message twice and look keywords up in dictionaries
at every node. Here each schema node becomes one closure, built at import time, that takes a
decoded value, checks it against that node and returns its cleaned copy (strings cut to
``MAX_STRING`` and with bad characters replaced, the same depth and size caps as ``clean``).

The compiled walk only decides *acceptance*. When it refuses a value (or meets anything that is
not plain decoded JSON: a subclass, a tuple, a key that cleaning would change), ``Validator``
runs the reference walk, ``check(clean(value))``, which raises the very ``ProtocolError``
(reason, path, wording) that it always raised, and which still accepts what it accepts. So:

- an accepted message costs one walk;
- a refused message costs the compiled walk up to the refusal, plus the reference walks that
  were the whole cost before;
- accept/reject and every error message are those of the reference by construction; the
  compiled closures only have to be no more lenient than it, and agree with it on plain JSON.

Compiling fails on a keyword that neither walk knows, so a schema change cannot be silently
ignored by the fast path.
"""

import re
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Tuple

from .clean import _BAD_CHARS, clean
from .constants import MAX_DEPTH, MAX_ITEMS, MAX_STRING
from .errors import ProtocolError
from .schema import SCHEMA, Schema, check

Check = Callable[[Any], Any]

#: Keywords that only describe; every other keyword must be one the walks implement.
_ANNOTATIONS = frozenset({"$schema", "$id", "$defs", "title", "description"})
_KEYWORDS = frozenset({
    "$ref", "anyOf", "const", "enum", "type", "properties", "required",
    "additionalProperties", "items", "maxItems", "maxProperties", "minimum", "maximum",
    "maxLength", "minLength", "pattern"}) | _ANNOTATIONS

_NONE = type(None)
#: Exact Python types that ``json`` decodes each JSON Schema type to.
_PY_TYPES: Dict[str, Tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "boolean": (bool,),
    "integer": (int,), "number": (int, float), "null": (_NONE,),
}
_ALL_TYPES: FrozenSet[type] = frozenset((dict, list, str, bool, int, float, _NONE))
_MISSING = object()


class _Reject(Exception):
    """The compiled walk refuses a value; the reference walk will say why."""


def _reject() -> Any:
    raise _Reject


def clean_str(value: str) -> str:
    """``clean_string`` for an exact ``str`` with the default limit, ASCII fast path first."""
    if len(value) > MAX_STRING:
        value = value[:MAX_STRING]
    if value.isascii() and value.isprintable():
        return value  # printable ASCII has none of the characters cleaning replaces
    if _BAD_CHARS.search(value):
        value = _BAD_CHARS.sub("\ufffd", value)
    return value


def _key_is_clean(key: str) -> bool:
    """True when ``clean_string(key, 256)`` would return ``key`` unchanged."""
    return len(key) <= 256 and ((key.isascii() and key.isprintable())
                                or not _BAD_CHARS.search(key))


class _Compiler:
    def __init__(self, root: Schema, in_place: bool = False) -> None:
        self.defs: Dict[str, Schema] = root.get("$defs", {})
        #: Objects and arrays are cleaned in place (and returned) instead of copied.
        self.in_place = in_place

    def node(self, schema: Schema, depth: int) -> Check:
        unknown = set(schema) - _KEYWORDS
        if unknown:
            raise ValueError("schema keyword(s) %s not supported by diag_protocol"
                             % ", ".join(sorted(unknown)))
        if "$ref" in schema:  # as in check(): the target replaces the node
            return self.node(self.defs[schema["$ref"].rsplit("/", 1)[1]], depth)
        if "anyOf" in schema:
            return self._any_of(schema, depth)
        choices = self._choices(schema)
        types = schema.get("type")
        allowed: FrozenSet[type]
        if types is None:
            allowed = _ALL_TYPES
        else:
            names = [types] if isinstance(types, str) else types
            allowed = frozenset(t for name in names for t in _PY_TYPES[name])
        if allowed == _ALL_TYPES and set(schema) <= _ANNOTATIONS | {"const", "enum"}:
            base = self._anything(depth)
        else:
            base = self._typed(schema, allowed, depth)
        if choices is None:
            return base
        return self._one_of_values(base, choices)

    # -- combinators ------------------------------------------------------------------------

    def _any_of(self, schema: Schema, depth: int) -> Check:
        options = [self.node(option, depth) for option in schema["anyOf"]]
        rest_schema = {k: v for k, v in schema.items() if k != "anyOf"}
        rest = None if set(rest_schema) <= _ANNOTATIONS else self.node(rest_schema, depth)

        def any_of(value: Any) -> Any:
            for option in options:
                try:
                    out = option(value)
                except (_Reject, ProtocolError):
                    continue
                # cleaning does not depend on the schema, so any passing option's copy will do
                return out if rest is None else rest(value)
            raise _Reject
        return any_of

    @staticmethod
    def _choices(schema: Schema) -> Optional[List[Any]]:
        if "const" in schema:
            values = [schema["const"]]
        elif "enum" in schema:
            values = list(schema["enum"])
        else:
            return None
        if "const" in schema and "enum" in schema:
            raise ValueError("const and enum on one schema node are not supported")
        for value in values:
            if not isinstance(value, (str, int, float, bool, _NONE)):
                raise ValueError("only scalar const/enum values are supported, not %r"
                                 % (value,))
        return values

    @staticmethod
    def _one_of_values(base: Check, choices: List[Any]) -> Check:
        if all(type(c) is str for c in choices):
            strings = frozenset(choices)

            def string_choice(value: Any) -> Any:
                out = base(value)
                if type(out) is str and out in strings:
                    return out
                raise _Reject
            return string_choice
        scalars = [(c, type(c)) for c in choices]

        def scalar_choice(value: Any) -> Any:
            out = base(value)
            kind = type(out)
            for choice, choice_kind in scalars:
                # JSON equality: 1 == 1.0, but true is neither 1 nor 1.0
                if out == choice and (kind is bool) is (choice_kind is bool):
                    return out
            raise _Reject
        return scalar_choice

    # -- nodes ------------------------------------------------------------------------------

    @staticmethod
    def _anything(depth: int) -> Check:
        """A node without constraints: exactly ``clean`` at this depth."""
        def anything(value: Any) -> Any:
            kind = type(value)
            if kind is str:
                return clean_str(value)
            if kind in _ALL_TYPES and kind is not dict and kind is not list:
                return value
            return clean(value, depth)  # containers, and anything clean() refuses
        return anything

    def _typed(self, schema: Schema, allowed: FrozenSet[type], depth: int) -> Check:
        # bool and None need neither checks nor cleaning: they pass through as they are
        passthrough: FrozenSet[type] = frozenset(k for k in allowed if k is bool or k is _NONE)
        numbers: FrozenSet[type] = frozenset(k for k in allowed if k is int or k is float)
        has_limits = "minimum" in schema or "maximum" in schema
        if not numbers or not has_limits:
            passthrough |= numbers
            numbers = frozenset()
        containers = {k for k in allowed if k is dict or k is list}
        # The common leaves (a nullable string, a number with a minimum) get one closure each.
        if not containers and not numbers and str in allowed:
            return self._string(schema, passthrough)
        if not containers and str not in allowed and numbers:
            return self._number(schema, numbers, passthrough)
        if str not in allowed and not numbers and not containers:
            def scalar(value: Any) -> Any:
                if type(value) in passthrough:
                    return value
                raise _Reject
            return scalar
        handlers: Dict[type, Optional[Check]] = dict.fromkeys(passthrough)
        if str in allowed:
            handlers[str] = self._string(schema, frozenset())
        for kind in numbers:
            handlers[kind] = self._number(schema, numbers, frozenset())
        if dict in containers:
            handlers[dict] = self._object(schema, depth)
        if list in containers:
            handlers[list] = self._array(schema, depth)
        if len(handlers) - len(passthrough) == 1:
            ((only_kind, only),) = [(k, h) for k, h in handlers.items() if h is not None]
            assert only is not None

            def single(value: Any) -> Any:
                kind = type(value)
                if kind is only_kind:
                    return only(value)
                if kind in passthrough:
                    return value
                raise _Reject
            return single
        get = handlers.get

        def dispatch(value: Any) -> Any:
            handler = get(type(value), _MISSING)
            if handler is None:
                return value
            if handler is _MISSING:
                raise _Reject
            return handler(value)  # type: ignore[operator]
        return dispatch

    @staticmethod
    def _string(schema: Schema, passthrough: FrozenSet[type]) -> Check:
        """A string node: checks and cleans a ``str``; ``passthrough`` types go through."""
        # Cleaning keeps min(len, MAX_STRING) characters, so lengths are checked before it:
        # past MAX_STRING a maxLength can never fail, and a minLength always does.
        max_length = schema.get("maxLength", MAX_STRING)
        if max_length >= MAX_STRING:
            max_length = float("inf")
        min_length = schema.get("minLength", 0)
        if min_length > MAX_STRING:
            max_length = -1
        pattern = schema.get("pattern")
        search = re.compile(pattern).search if pattern is not None else None
        bad = _BAD_CHARS.search
        replace = _BAD_CHARS.sub

        def string(value: Any) -> Any:
            if type(value) is not str:
                if type(value) in passthrough:
                    return value
                raise _Reject
            size = len(value)
            if size > max_length or size < min_length:
                raise _Reject
            if size > MAX_STRING:
                value = value[:MAX_STRING]
            # printable ASCII has none of the characters that cleaning replaces
            if not (value.isascii() and value.isprintable()) and bad(value):
                value = replace("\ufffd", value)
            if search is not None and not search(value):
                raise _Reject
            return value
        return string

    @staticmethod
    def _number(schema: Schema, numbers: FrozenSet[type], passthrough: FrozenSet[type]
                ) -> Check:
        """A number node with a minimum and/or maximum; ``passthrough`` types go through."""
        low = schema.get("minimum", float("-inf"))
        high = schema.get("maximum", float("inf"))

        def number(value: Any) -> Any:
            kind = type(value)
            if kind in numbers:
                if value < low or value > high:
                    raise _Reject
                return value
            if kind in passthrough:
                return value
            raise _Reject
        return number

    def _object(self, schema: Schema, depth: int) -> Check:
        if depth >= MAX_DEPTH:
            return lambda value: _reject()
        cap = min(schema.get("maxProperties", MAX_ITEMS), MAX_ITEMS)
        required = tuple(schema.get("required", ()))
        props: Dict[str, Check] = {}
        for name, sub in schema.get("properties", {}).items():
            if not _key_is_clean(name):
                raise ValueError("property name %r would be changed by cleaning" % name)
            props[name] = self.node(sub, depth + 1)
        extra = schema.get("additionalProperties", True)
        closed = extra is False
        if isinstance(extra, dict):
            extra_check: Check = self.node(extra, depth + 1)
        else:
            extra_check = self._anything(depth + 1)
        get = props.get
        if self.in_place:
            def obj_in_place(value: Dict[str, Any]) -> Dict[str, Any]:
                if len(value) > cap:
                    raise _Reject
                for name in required:
                    if name not in value:
                        raise _Reject
                for key, item in value.items():
                    sub = get(key)
                    if sub is not None:
                        new = sub(item)
                    elif closed or type(key) is not str or not _key_is_clean(key):
                        raise _Reject
                    else:
                        new = extra_check(item)
                    if new is not item:
                        value[key] = new  # an existing key: the dict keeps its size
                return value
            return obj_in_place

        def obj(value: Dict[str, Any]) -> Dict[str, Any]:
            if len(value) > cap:
                raise _Reject
            for name in required:
                if name not in value:
                    raise _Reject
            out: Dict[str, Any] = {}
            for key, item in value.items():
                sub = get(key)
                if sub is not None:
                    out[key] = sub(item)
                elif closed or type(key) is not str or not _key_is_clean(key):
                    raise _Reject  # unknown field, or a key cleaning would change
                else:
                    out[key] = extra_check(item)
            return out
        return obj

    def _array(self, schema: Schema, depth: int) -> Check:
        if depth >= MAX_DEPTH:
            return lambda value: _reject()
        cap = min(schema.get("maxItems", MAX_ITEMS), MAX_ITEMS)
        item = (self.node(schema["items"], depth + 1) if "items" in schema
                else self._anything(depth + 1))

        if self.in_place:
            def array_in_place(value: List[Any]) -> List[Any]:
                if len(value) > cap:
                    raise _Reject
                for index, x in enumerate(value):
                    new = item(x)
                    if new is not x:
                        value[index] = new
                return value
            return array_in_place

        def array(value: List[Any]) -> List[Any]:
            if len(value) > cap:
                raise _Reject
            return [item(x) for x in value]
        return array


class Validator:
    """Validate-and-clean against one ``$defs`` entry: returns the cleaned copy or raises the
    reference's ``ProtocolError``. ``depth`` is where the value sits in its message."""

    def __init__(self, name: str, depth: int = 0, root: Schema = SCHEMA,
                 in_place: bool = False) -> None:
        self.name = name
        self.schema = root["$defs"][name]
        self.depth = depth
        #: ``in_place``: for values the caller owns (just decoded, referenced nowhere else):
        #: objects and arrays are cleaned where they are and returned, not copied (a third
        #: less time on a report). A value refused half way may be left partly cleaned;
        #: cleaning is idempotent, so the reference walk still gives the very same error.
        self.in_place = in_place
        self._fast = _Compiler(root, in_place).node(self.schema, depth)

    def __call__(self, value: Any) -> Any:
        try:
            return self._fast(value)
        except (_Reject, ProtocolError):
            pass
        # Refused, or not plain JSON: the reference walk decides, with its own words.
        cleaned = clean(value, self.depth)
        check(cleaned, self.schema)
        return cleaned


VALIDATORS: Dict[str, Validator] = {name: Validator(name) for name in SCHEMA["$defs"]}
#: The envelope validator that cleans in place, for envelopes the caller has just decoded.
ENVELOPE_IN_PLACE = Validator("envelope", in_place=True)


def _envelope_head() -> Schema:
    """The envelope schema with its report left unconstrained, for ``wrap_report``."""
    envelope = dict(SCHEMA["$defs"]["envelope"])
    envelope["properties"] = dict(envelope["properties"], report={})
    return {"$defs": {"envelope": envelope}}


#: Checks an envelope's own fields (host_id, vm_id, received_at, no extra fields) only.
ENVELOPE_HEAD = Validator("envelope", root=_envelope_head())
