"""Errors of the wire protocol.

::

    ProtocolError              any message that cannot be accepted
     +-- (reason attribute)    a short machine-readable code, the same one LineDecoder counts:
                               oversize, bad_utf8, bad_json, not_object, unknown_type,
                               bad_version, invalid, out_of_range (a number outside its
                               range, constants.py), too_deep
"""


class ProtocolError(ValueError):
    """A message was rejected. ``reason`` is a short code; ``detail`` says where and why."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__("%s: %s" % (reason, detail) if detail else reason)
        self.reason = reason
        self.detail = detail
