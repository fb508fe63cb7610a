"""Typed parts of a JSON object: a dataclass whose ``to_json`` / ``from_json`` follow its fields' types.

:class:`Part` is the base of the run records (:mod:`logitshift.runs.records`) and of what
:func:`logitshift.shift.steer.steer` records (:class:`logitshift.shift.steering.Steering`).
``from_json`` checks every field's type (``str``, ``bool``, ``int``, ``float``, lists, dicts,
unions with ``None``, nested parts, ``Any``) and names the key that does not match
(:class:`RecordError`); ``to_json`` writes JSON's ``null`` for a non-finite float.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .errors import LogitShiftError

R = TypeVar("R", bound="Part")


class RecordError(LogitShiftError):
    """A summary that does not match its command's record type."""


def key(name: str, default: Any = None) -> Any:
    """A field whose JSON key is ``name`` (for keys that are Python keywords, e.g. ``class``)."""
    return field(default=default, metadata={"json": name})


def omit(default: Any = None) -> Any:
    """A field left out of the JSON when it is ``None``."""
    return field(default=default, metadata={"omit_none": True})


@dataclass(kw_only=True)
class Part:
    """A typed piece of a record: ``to_json`` / ``from_json`` by field type."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is None and f.metadata.get("omit_none"):
                continue
            out[f.metadata.get("json", f.name)] = _dump(value)
        out.update({k: _dump(v) for k, v in getattr(self, "extra", {}).items() if k not in out})
        return out

    @classmethod
    def from_json(cls: type[R], obj: Any, where: str = "summary", strict: bool = False) -> R:  # type: ignore[misc]
        """Read ``obj``, checking each field's type; ``strict``: a key the type does not declare is an error
        (the commands validate what they write this way), else it is kept in ``extra``."""
        if not isinstance(obj, dict):
            raise RecordError(f"{where}: expected a JSON object for {cls.__name__}, got {type(obj).__name__}")
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        known = set()
        for f in dataclasses.fields(cls):
            if f.name == "extra":
                continue
            k = f.metadata.get("json", f.name)
            known.add(k)
            if k in obj:
                kwargs[f.name] = _load(hints[f.name], obj[k], f"{where}: key {k!r}", strict)
        unknown = [k for k in obj if k not in known]
        if strict and unknown:
            raise RecordError(f"{where}: key {unknown[0]!r} is not a field of {cls.__name__}")
        if any(f.name == "extra" for f in dataclasses.fields(cls)):
            kwargs["extra"] = {k: v for k, v in obj.items() if k not in known}
        return cls(**kwargs)


def _dump(value: Any) -> Any:
    if isinstance(value, Part):
        return value.to_json()
    if isinstance(value, dict):
        return {str(k): _dump(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_dump(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/∞; the audit's statistics can overflow
    return value


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _load(tp: Any, value: Any, where: str, strict: bool = False) -> Any:
    """``value`` read as type ``tp`` (a union, list, dict, part or scalar), or a :class:`RecordError` naming ``where``."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        return _load_union(typing.get_args(tp), value, where, strict)
    if origin is list:
        (arg,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise RecordError(f"{where}: expected a list, got {type(value).__name__}")
        return [_load(arg, v, f"{where}[{i}]", strict) for i, v in enumerate(value)]
    if origin is dict:
        _, arg = typing.get_args(tp)
        if not isinstance(value, dict):
            raise RecordError(f"{where}: expected an object, got {type(value).__name__}")
        return {str(k): _load(arg, v, f"{where}.{k}", strict) for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, Part):
        return tp.from_json(value, where, strict)  # type: ignore[misc]
    return _load_scalar(tp, value, where)


def _load_union(args: tuple[Any, ...], value: Any, where: str, strict: bool) -> Any:
    """The first of ``args`` that reads ``value`` (``None`` when the union allows it)."""
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _load(arg, value, where, strict)
        except RecordError as exc:
            errors.append(str(exc))
    raise RecordError(errors[0] if len(errors) == 1 else f"{where}: expected {' or '.join(_name(a) for a in args)}, got {value!r:.60}")


def _load_scalar(tp: Any, value: Any, where: str) -> Any:
    """``value`` as a float (an int too, not a bool), an int (not a bool), a str or a bool."""
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp in (str, bool):
        if isinstance(value, tp):
            return value
    else:
        raise RecordError(f"{where}: unsupported field type {tp!r}")
    raise RecordError(f"{where}: expected {_name(tp)}, got {type(value).__name__} {value!r:.60}")


__all__ = ["Part", "RecordError", "key", "omit"]
