"""An optional native gate: msgspec types generated from ``SCHEMA`` that accept a message's
bytes only when the reference walk would accept it *and* cleaning would change nothing.

The compiled walk (compiled.py) is Python: about 0.18 ms for a 19 KB report, the largest part
of an ingest's CPU after decoding. msgspec (C) decodes and checks typed data in one pass, a
few times faster. It is never the judge of a refusal, only of plain, clean acceptance:

- ``Gate(kind).accepts(data)`` is True only when ``data`` decodes to a message of ``kind``
  that ``check(clean(value))`` accepts and that ``clean`` leaves as it is, so the plainly
  decoded value *is* the validated, cleaned message;
- anything else (msgspec refuses, a string that cleaning would change, a field this version
  does not know) gives False and the caller runs the compiled/reference walk, which decides
  as it always did. Without msgspec (a guest, a site without the package), or for a message
  kind with a node msgspec cannot express (``Unsupported``), the walks do everything.

So accept/reject and every error are those of the reference walk by construction; the gate
only has to be no more lenient than it (tests/protocol/test_native.py checks it on generated
and mutated messages). How each schema node is expressed:

- an object with properties: a Struct that forbids unknown fields (extra fields of newer
  agents, legal but rare, take the Python walk); a required property has no default. More
  properties than ``maxProperties`` allows, or none at all, cannot be expressed (unsupported);
- an object with ``additionalProperties`` only: a dict with at most ``maxProperties`` keys of
  at most 256 characters;
- strings: ``maxLength``/``minLength`` (never beyond ``MAX_STRING``, which cleaning cuts at),
  ``pattern`` (``re.search``, as ``check``);
- numbers: ``int`` and ``float`` kept apart (a float stays a float, an int an int; ``true``
  is neither), bounds moved inside to the nearest double for floats so rounding cannot let a
  value through that the exact comparison refuses;
- const/enum: ``Literal`` of exact values (``1.0`` for ``const 1`` is left to the walk);
- depth: the schema is far shallower than ``MAX_DEPTH``; a deeper node is unsupported.

Cleaning replaces C0 (but tab and newline), DEL, C1 controls, lone surrogates and U+2028/9.
In JSON text those can only come from an escape (``\\u...``, ``\\b``, ``\\f``, ``\\r``) or
from their UTF-8 bytes (0x7f, 0xc2 0x80-0x9f, 0xe2 0x80 0xa8/0xa9; raw controls below 0x20
are not JSON and are refused by msgspec, lone surrogates are not UTF-8): ``text_is_clean``
finds none of them in the bytes (it errs on the side of "not clean": ``\\\\u`` counts).
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Dict, List, Literal, Tuple, Union

from .constants import MAX_DEPTH, MAX_ITEMS, MAX_STRING
from .schema import SCHEMA, Schema


class Unsupported(Exception):
    """A schema node the gate cannot express exactly; its message kind has no gate."""


_ESCAPES = (b"\\u", b"\\b", b"\\f", b"\\r")
_C1 = re.compile(b"\xc2[\x80-\x9f]")  # U+0080..U+009F in UTF-8


def text_is_clean(data: bytes) -> bool:
    """False when the JSON text ``data`` may hold a character that cleaning replaces."""
    # one-byte searches (memchr) first: a search for a longer needle is 40 times slower
    if b"\\" in data:
        for escape in _ESCAPES:
            if escape in data:
                return False
    if b"\x7f" in data:
        return False
    if b"\xe2" in data and (b"\xe2\x80\xa8" in data or b"\xe2\x80\xa9" in data):
        return False
    return b"\xc2" not in data or _C1.search(data) is None


def _float_bound(bound: Any, low: bool) -> float:
    """The double closest to ``bound`` on its inside (a float compared with it as a double
    then refuses whatever the exact comparison refuses)."""
    value = float(bound)
    if low and value < bound:
        value = math.nextafter(value, math.inf)
    elif not low and value > bound:
        value = math.nextafter(value, -math.inf)
    return value


class _Builder:
    def __init__(self, root: Schema, msgspec: Any) -> None:
        self.msgspec = msgspec
        self.defs: Dict[str, Schema] = root.get("$defs", {})
        self.count = 0

    def node(self, schema: Schema, depth: int) -> Any:
        if "$ref" in schema:
            return self.node(self.defs[schema["$ref"].rsplit("/", 1)[1]], depth)
        known = {"anyOf", "const", "enum", "type", "properties", "required",
                 "additionalProperties", "items", "maxItems", "maxProperties", "minimum",
                 "maximum", "maxLength", "minLength", "pattern", "title", "description"}
        if set(schema) - known:
            raise Unsupported("keywords %s" % sorted(set(schema) - known))
        if "anyOf" in schema:
            if set(schema) != {"anyOf"}:
                raise Unsupported("anyOf beside other keywords")
            options = [self.node(option, depth) for option in schema["anyOf"]]
            return self._union(options)
        if "const" in schema or "enum" in schema:
            values = [schema["const"]] if "const" in schema else list(schema["enum"])
            if set(schema) - {"const", "enum", "title", "description"}:
                raise Unsupported("const/enum beside a type")
            if not all(type(v) is str or (type(v) is int) for v in values):
                raise Unsupported("const/enum of %r" % (values,))
            if len({type(v) for v in values}) > 1:
                raise Unsupported("const/enum of mixed types")
            return Literal[tuple(values)]  # type: ignore[valid-type]
        types = schema.get("type")
        if types is None:
            raise Unsupported("a node without a type (anything goes: cleaning decides)")
        names = [types] if isinstance(types, str) else list(types)
        options = [self._typed(name, schema, depth) for name in names]
        return self._union(options)

    def _union(self, options: List[Any]) -> Any:
        flat: List[Any] = []
        for option in options:
            flat.extend(option if isinstance(option, tuple) else (option,))
        if len(flat) == 1:
            return flat[0]
        union = Union[tuple(flat)]  # type: ignore[valid-type]
        try:
            self.msgspec.json.Decoder(union)  # msgspec refuses unions it cannot tell apart
        except TypeError as err:
            raise Unsupported("union %r: %s" % (flat, err)) from err
        return union

    def _typed(self, name: str, schema: Schema, depth: int) -> Any:
        Meta = self.msgspec.Meta
        if name == "null":
            return type(None)
        if name == "boolean":
            return bool
        if name == "string":
            max_length = min(schema.get("maxLength", MAX_STRING), MAX_STRING)
            meta: Dict[str, Any] = {"max_length": max_length}
            if schema.get("minLength"):
                meta["min_length"] = schema["minLength"]
            if "pattern" in schema:
                meta["pattern"] = schema["pattern"]
            return Annotated[str, Meta(**meta)]
        if name in ("integer", "number"):
            int_meta: Dict[str, Any] = {}
            float_meta: Dict[str, Any] = {}
            if "minimum" in schema:
                low = schema["minimum"]
                int_meta["ge"] = math.ceil(low)
                float_meta["ge"] = _float_bound(low, True)
            if "maximum" in schema:
                high = schema["maximum"]
                int_meta["le"] = math.floor(high)
                float_meta["le"] = _float_bound(high, False)
            as_int = Annotated[int, Meta(**int_meta)] if int_meta else int
            if name == "integer":
                return as_int
            as_float = Annotated[float, Meta(**float_meta)] if float_meta else float
            return (as_int, as_float)  # flattened by _union's caller
        if depth + 1 >= MAX_DEPTH:
            raise Unsupported("deeper than MAX_DEPTH")
        if name == "array":
            if "items" not in schema:
                raise Unsupported("an array of anything")
            item = self.node(schema["items"], depth + 1)
            limit = min(schema.get("maxItems", MAX_ITEMS), MAX_ITEMS)
            return Annotated[List[item], Meta(max_length=limit)]  # type: ignore[valid-type]
        if name == "object":
            return self._object(schema, depth)
        raise Unsupported("type %r" % name)

    def _object(self, schema: Schema, depth: int, tag: Any = None) -> Any:
        """A Struct (or dict) for an object node; ``tag``: this node is one message kind of
        a union told apart by its ``type`` property, which must be ``const`` ``tag``."""
        Meta = self.msgspec.Meta
        cap = min(schema.get("maxProperties", MAX_ITEMS), MAX_ITEMS)
        props: Dict[str, Schema] = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        if not props:
            if not isinstance(extra, dict):
                raise Unsupported("an object of anything")
            key = Annotated[str, Meta(max_length=256)]
            value = self.node(extra, depth + 1)
            return Annotated[Dict[key, value], Meta(max_length=cap)]  # type: ignore[valid-type]
        if len(props) > cap or isinstance(extra, dict):
            raise Unsupported("an object whose properties alone may exceed its maxProperties")
        required = set(schema.get("required", ()))
        fields: List[Tuple[str, Any, Any]] = []
        rename: Dict[str, str] = {}
        for index, (prop, sub) in enumerate(props.items()):
            if tag is not None and prop == "type":
                if sub != {"const": tag} or prop not in required:
                    raise Unsupported("a message kind without a required const type")
                continue  # msgspec checks it as the union's tag
            attr = "f%d" % index  # property names need not be identifiers
            rename[attr] = prop
            kind = self.node(sub, depth + 1)
            if prop in required:
                fields.append((attr, kind))  # type: ignore[arg-type]
            else:
                fields.append((attr, kind, self.msgspec.UNSET))
        required_first = [f for f in fields if len(f) == 2] + [f for f in fields if len(f) == 3]
        self.count += 1
        options: Dict[str, Any] = {} if tag is None else {"tag_field": "type", "tag": tag}
        return self.msgspec.defstruct("Node%d" % self.count, required_first, kw_only=True,
                                      forbid_unknown_fields=True, rename=rename, gc=False,
                                      **options)


class Gate:
    """Decides plain, clean acceptance of JSON text (see the module): of one message kind,
    of a batch ``{key: [kind, ...]}`` (``Gate.batch``), or of any of several message kinds
    (``Gate.messages``). ``msgspec`` is the module, which the caller imports (diag_protocol
    itself needs the standard library only). Raises ``Unsupported`` when the schema has a
    node msgspec cannot express; the caller then uses the walks alone."""

    def __init__(self, kind: str, msgspec: Any, root: Schema = SCHEMA) -> None:
        self.kind = kind
        self._errors = (msgspec.ValidationError, msgspec.DecodeError)
        self._decoder = msgspec.json.Decoder(
            _Builder(root, msgspec).node(root["$defs"][kind], 0))

    @classmethod
    def batch(cls, kind: str, key: str, msgspec: Any, root: Schema = SCHEMA) -> Gate:
        """For ``{key: [message of kind, ...]}`` and no other field; a batch is accepted
        only when every message in it is."""
        item = _Builder(root, msgspec).node(root["$defs"][kind], 1)
        batch = msgspec.defstruct("Batch", [("items", List[item])],  # type: ignore[valid-type]
                                  rename={"items": key}, forbid_unknown_fields=True, gc=False)
        return cls._of(kind, msgspec, batch)

    @classmethod
    def messages(cls, kinds: Tuple[str, ...], msgspec: Any, root: Schema = SCHEMA) -> Gate:
        """For one message of any of ``kinds`` (told apart by ``type``); kinds the gate
        cannot express are left out (their messages are never accepted here)."""
        builder = _Builder(root, msgspec)
        options = []
        for kind in kinds:
            try:
                options.append(builder._object(root["$defs"][kind], 0, tag=kind))
            except Unsupported:
                continue
        if not options:
            raise Unsupported("none of %s" % (kinds,))
        return cls._of("|".join(kinds), msgspec, Union[tuple(options)])  # type: ignore

    @classmethod
    def _of(cls, kind: str, msgspec: Any, decoded_type: Any) -> Gate:
        gate = cls.__new__(cls)
        gate.kind = kind
        gate._errors = (msgspec.ValidationError, msgspec.DecodeError)
        gate._decoder = msgspec.json.Decoder(decoded_type)
        return gate

    def accepts(self, data: bytes) -> bool:
        """True only when the reference walk accepts ``data`` decoded (as ``loads``) and
        cleaning changes nothing in it. A gate that cannot judge says no, so the walk
        decides: msgspec raises RecursionError on an object nested about 3,000 deep, which it
        skips while it looks for the type tag of ``Gate.messages``."""
        if not text_is_clean(data):
            return False
        try:
            self._decoder.decode(data)
        except self._errors:
            return False
        except RecursionError:
            return False
        return True
