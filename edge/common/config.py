"""What every config model shares, on the unit and in the control room.

* :class:`StrictModel`: unknown keys are errors, models are frozen, defaults are validated.
* :func:`resolve_paths`: relative paths in a file are made relative to the file's folder. It
  walks the model tree itself, so a new ``Path`` field needs no entry in a hand-kept list:
  every field typed ``Path`` (or ``Path | None``) is resolved, and a model with a field that
  only sometimes holds a path (an OpenCV device that may be a URL, ``replay:FILE``) says so in
  its ``resolve_extra_paths`` class method.
* :func:`format_errors`: every problem on one line each, with the dotted key; an unknown key
  gets a spelling hint, or "not valid for <type>" when the key belongs to another backend.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Union

from pydantic import BaseModel, ConfigDict, ValidationError

Table = dict[str, Any]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    path_schemes: ClassVar[tuple[str, ...]] = ("rtsp:", "http:", "https:")
    """A string that starts with one of these is a URL, never a relative path."""

    @classmethod
    def resolve_extra_paths(cls, table: Table, base: Path) -> None:
        """Resolve fields that hold a path only sometimes (override where there are any)."""


def resolve_path_text(value: str, base: Path) -> str:
    """``value`` relative to ``base`` unless it is absolute (``~`` expanded) or a URL."""
    if not value or value.startswith(StrictModel.path_schemes) or "://" in value:
        return value
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else base / p)


def resolve_path_list(table: Table, key: str, base: Path) -> None:
    """``table[key]``, a list of paths (e.g. ``trusted_keys``), each resolved against
    ``base`` in place; anything else is left for validation to refuse."""
    items = table.get(key)
    if isinstance(items, list):
        table[key] = [resolve_path_text(k, base) if isinstance(k, str) else k for k in items]


def resolve_paths(model: type[BaseModel], data: Table, base: Path) -> Table:
    """A copy of ``data`` (a parsed TOML table for ``model``) with relative paths resolved."""
    out: Table = _copy(data)
    _resolve_table(model, out, base)
    return out


def _copy(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _copy(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_copy(x) for x in v]
    return v


def _resolve_table(model: type[BaseModel], table: Table, base: Path) -> None:
    for name, field in model.model_fields.items():
        if name not in table:
            continue
        value = table[name]
        ann = field.annotation
        if _mentions(ann, Path) and isinstance(value, str):
            table[name] = resolve_path_text(value, base)
            continue
        for sub in _models_for(ann, value):
            if isinstance(value, dict):
                _resolve_table(sub, value, base)
            elif isinstance(value, list):
                for item in value:
                    if isinstance(item, dict):
                        _resolve_table(sub, item, base)
    if issubclass(model, StrictModel):
        model.resolve_extra_paths(table, base)


def _args(ann: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(ann)
    if origin is typing.Annotated:
        return _args(typing.get_args(ann)[0])
    if origin in (Union, types.UnionType):
        out: list[Any] = []
        for a in typing.get_args(ann):
            out.extend(_args(a) or (a,))
        return tuple(out)
    if origin in (list, tuple):
        return tuple(a for a in typing.get_args(ann) if a is not Ellipsis)
    return ()


def _flat(ann: Any) -> Iterator[Any]:
    args = _args(ann)
    if not args:
        yield ann
        return
    for a in args:
        yield from _flat(a)


def _mentions(ann: Any, kind: type) -> bool:
    return any(a is kind for a in _flat(ann))


def _model_types(ann: Any) -> list[type[BaseModel]]:
    """The config models an annotation names (several for a union of backends)."""
    return [a for a in _flat(ann) if isinstance(a, type) and issubclass(a, BaseModel)]


def _models_for(ann: Any, value: Any) -> list[type[BaseModel]]:
    """The model classes ``value`` may be parsed as: for a discriminated union, the member
    whose ``type`` tag ``value`` names (all members when it names none)."""
    models = _model_types(ann)
    if len(models) > 1:
        items = value if isinstance(value, list) else [value]
        tags = {i.get("type") for i in items if isinstance(i, dict)}
        chosen = [m for m in models if union_tag(m) in tags]
        return chosen or models
    return models


def union_tag(model: type[BaseModel]) -> str | None:
    """The ``type`` literal a backend's config model is chosen by, if it has one."""
    field = model.model_fields.get("type")
    if field is None:
        return None
    args = typing.get_args(field.annotation)
    return str(args[0]) if typing.get_origin(field.annotation) is typing.Literal and args else None


def format_errors(err: ValidationError, source: str, model: type[BaseModel]) -> str:
    """One line per problem, naming the key as written in the file (``camera.fps: ...``)."""
    lines = [f"{source}: invalid configuration"]
    for e in err.errors():
        key, tag, members = _key_of(e["loc"], model)
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            name = key.rsplit(".", 1)[-1]
            other = [
                t for m in members if name in m.model_fields and (t := union_tag(m)) and t != tag
            ]
            if other:
                msg = f"not valid for type = {tag!r} (a key of {', '.join(map(repr, other))})"
            else:
                msg = "unknown key (check the spelling; see the example configs)"
        elif e["type"] == "missing":
            msg = "required key is missing"
        lines.append(f"  {key or '(top level)'}: {msg}")
    return "\n".join(lines)


def _key_of(
    loc: tuple[int | str, ...], model: type[BaseModel]
) -> tuple[str, str | None, list[type[BaseModel]]]:
    """The dotted key for a pydantic error location, without the union tags pydantic adds;
    the last union tag chosen on the way, if any, and the members of that union."""
    parts: list[str] = []
    current: Any = model
    tag: str | None = None
    members: list[type[BaseModel]] = []
    for p in loc:
        if isinstance(p, int):
            parts.append(str(p))
            continue
        if isinstance(current, list):  # a union: pydantic put the member's tag in the path
            match = [m for m in current if union_tag(m) == p]
            if match:
                members, current, tag = current, match[0], p
                continue
            current = None
        parts.append(p)
        field = (
            current.model_fields.get(p)
            if isinstance(current, type) and issubclass(current, BaseModel)
            else None
        )
        models = _model_types(field.annotation) if field is not None else []
        current = models[0] if len(models) == 1 else (models or None)
    return ".".join(parts), tag, members
