"""The receiver's hot path, made cheaper without changing what passes.

* :func:`compile_schema` turns a committed JSON Schema into nested closures that answer
  "valid?" exactly as ``edge.core.messages`` does (same subset, same rules: ``const`` also
  compares the type, booleans are not numbers, numbers must be finite, ``pattern`` is
  ``re.search``), about ten times faster, because the schema is walked once at start instead of
  for every message. It only answers yes or no; for a message it rejects, the reference
  ``messages.schema_errors`` is asked for the readable reasons. A differential test
  (``tests/controlroom/test_fastcheck.py``) runs both over thousands of mutated messages.

The rules stay in ``edge/core/schemas/*.json``; nothing here restates them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from edge.core import messages as m

Check = Callable[[Any], bool]


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


_TYPES: dict[str, Check] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": _is_number,
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _finite(v: int | float) -> bool:
    try:
        return math.isfinite(v)
    except OverflowError:  # an integer too large for a float: not a valid field value
        return False


def compile_schema(schema: Mapping[str, Any], root: Mapping[str, Any] | None = None) -> Check:
    """A function ``doc -> bool``: True exactly when ``messages._check`` finds no error."""
    root = schema if root is None else root
    s = schema
    if "$ref" in s:
        return compile_schema(m.resolve_ref(s["$ref"], root), root)

    leaf = _leaf(s)
    if leaf is not None:
        return leaf

    gates = _gates(s, root)  # each, when False, ends the check (as the reference returns early)
    on_object = _object_check(s, root)
    on_array = _array_check(s, root)
    on_number = _number_check(s)
    on_string = _string_check(s)

    def check(v: Any) -> bool:
        for gate in gates:
            if not gate(v):
                return False
        if isinstance(v, dict):
            return on_object(v)
        if isinstance(v, list):
            return on_array(v)
        if _is_number(v):
            return on_number(v)
        if isinstance(v, str):
            return on_string(v)
        return True

    return check


def _gates(s: Mapping[str, Any], root: Mapping[str, Any]) -> list[Check]:
    """The checks of ``oneOf``, ``const``, ``enum`` and ``type``, in the reference's order."""
    gates: list[Check] = []
    if "oneOf" in s:
        alts = [compile_schema(sub, root) for sub in s["oneOf"]]
        gates.append(lambda v: sum(1 for f in alts if f(v)) == 1)
    if "const" in s:
        const = s["const"]
        const_type = type(const)
        gates.append(lambda v: v == const and type(v) is const_type)
    if "enum" in s:
        enum = list(s["enum"])
        gates.append(lambda v: v in enum)
    if "type" in s:
        tests = [_TYPES[t] for t in (s["type"] if isinstance(s["type"], list) else [s["type"]])]
        if len(tests) == 1:
            gates.append(tests[0])
        else:
            gates.append(lambda v: any(t(v) for t in tests))
    return gates


def _object_check(s: Mapping[str, Any], root: Mapping[str, Any]) -> Check:
    """``properties``, ``required``, ``additionalProperties`` (bool or a schema),
    ``propertyNames`` and ``maxProperties`` of a dict."""
    props = {k: compile_schema(sub, root) for k, sub in s.get("properties", {}).items()}
    required = list(s.get("required", []))
    extra_schema = s.get("additionalProperties", True)
    closed = extra_schema is False
    extra = compile_schema(extra_schema, root) if isinstance(extra_schema, Mapping) else None
    names = compile_schema(s["propertyNames"], root) if "propertyNames" in s else None
    max_props = s.get("maxProperties")

    def check_object(v: dict[Any, Any]) -> bool:
        if max_props is not None and len(v) > max_props:
            return False
        for key in required:
            if key not in v:
                return False
        for key, val in v.items():
            if names is not None and not names(key):
                return False
            sub = props.get(key)
            if sub is not None:
                if not sub(val):
                    return False
            elif closed or (extra is not None and not extra(val)):
                return False
        return True

    return check_object


def _array_check(s: Mapping[str, Any], root: Mapping[str, Any]) -> Check:
    """``items``, ``minItems`` and ``maxItems`` of a list."""
    items = compile_schema(s["items"], root) if "items" in s else None
    min_items, max_items = s.get("minItems"), s.get("maxItems")
    return lambda v: (
        (min_items is None or len(v) >= min_items)
        and (max_items is None or len(v) <= max_items)
        and (items is None or all(items(x) for x in v))
    )


def _number_check(s: Mapping[str, Any]) -> Check:
    """Finite, and ``minimum`` / ``maximum``, for a number (not a bool)."""
    lo, hi = s.get("minimum"), s.get("maximum")
    return lambda v: _finite(v) and (lo is None or v >= lo) and (hi is None or v <= hi)


def _string_check(s: Mapping[str, Any]) -> Check:
    """``minLength``, ``maxLength`` and ``pattern`` (``re.search``) of a string."""
    min_len, max_len = s.get("minLength"), s.get("maxLength")
    pattern = re.compile(s["pattern"]) if "pattern" in s else None
    return lambda v: (
        (min_len is None or len(v) >= min_len)
        and (max_len is None or len(v) <= max_len)
        and (pattern is None or pattern.search(v) is not None)
    )


_ANNOTATIONS = {"description", "title", "$comment"}


def _leaf(s: Mapping[str, Any]) -> Check | None:
    """A tight check for the common leaf forms (one scalar type with its bounds, a string
    ``const``, an ``enum`` of strings); None for anything else (the general path)."""
    keys = set(s) - _ANNOTATIONS
    if keys == {"const"} and isinstance(s["const"], str):
        const = s["const"]
        return lambda v: isinstance(v, str) and v == const
    if keys == {"enum"} and all(isinstance(e, str) for e in s["enum"]):
        enum = frozenset(s["enum"])
        return lambda v: isinstance(v, str) and v in enum
    if "type" not in keys or not isinstance(s["type"], str):
        return None
    kind = s["type"]
    if kind == "string" and keys <= {"type", "pattern", "minLength", "maxLength"}:
        lo_len, hi_len = s.get("minLength", 0), s.get("maxLength")
        pattern = re.compile(s["pattern"]) if "pattern" in s else None
        if pattern is not None and lo_len == 0 and hi_len is None:
            search = pattern.search
            return lambda v: isinstance(v, str) and search(v) is not None
        return lambda v: (
            isinstance(v, str)
            and len(v) >= lo_len
            and (hi_len is None or len(v) <= hi_len)
            and (pattern is None or pattern.search(v) is not None)
        )
    if kind in ("integer", "number") and keys <= {"type", "minimum", "maximum"}:
        lo, hi = s.get("minimum"), s.get("maximum")
        types: Any = int if kind == "integer" else (int, float)
        return lambda v: (
            isinstance(v, types)
            and not isinstance(v, bool)
            and _finite(v)
            and (lo is None or v >= lo)
            and (hi is None or v <= hi)
        )
    return None


_COMPILED: dict[str, Check] = {}


def validator(schema_name: str) -> Check:
    """The compiled check for a committed schema (``alert.v1`` ...), built once."""
    fn = _COMPILED.get(schema_name)
    if fn is None:
        schema = m.load_schema(schema_name)
        fn = _COMPILED[schema_name] = compile_schema(schema)
    return fn


def schema_errors(doc: Any, schema_name: str) -> list[str]:
    """Like ``messages.schema_errors``: [] when valid (fast), else the reference's reasons.
    Never raises for a hostile document."""
    if validator(schema_name)(doc):
        return []
    try:
        errors = m.schema_errors(doc, schema_name)
    except (OverflowError, RecursionError, ValueError) as e:
        return [f"(message): cannot be checked: {e}"]
    # The compiled check is stricter or equal by construction; should the reference find
    # nothing, the document is still refused (never weaker than either).
    return errors or ["(message): refused by the compiled schema check"]
