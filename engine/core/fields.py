"""JSON read from disk is a user's file like any other: anyone can edit ``events.jsonl``, a
``control.json``, a trash record or a ``studio.json``. Every value read from such a file is
checked against the type the code expects before the code relies on it, here, in one place.

- ``conforms(value, hint)`` checks one value against a type hint (``int``, ``float``, ``str``,
  ``bool``, ``Optional[...]``, ``list[...]``, ``dict[str, ...]``, ``Literal[...]``, ``Any``);
  numbers are finite (``engine.core.checks.is_number``), and ``True`` is not an int.
- ``dataclass_from_dict(cls, data)`` builds a dataclass from a dict only when every field is
  there (or has a default) with the right type, else raises ``ValueError`` saying which field.
- ``text_field``, ``number_field``, ``whole_field`` read one field of a dict as that type, or None.
- ``child_path(folder, name, what)`` turns a name read from a file into a path inside ``folder``,
  or refuses it: a name like ``../..`` never becomes a path outside the folder it names a child of.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from pathlib import Path
from typing import Any, Optional, Union

from engine.core.checks import is_number
from engine.core.names import is_valid_name
from engine.errors import StudioError


def conforms(value: Any, hint: Any) -> bool:
    """Whether ``value`` (as ``json.loads`` gives it) is of the type ``hint`` describes."""
    if hint is Any:
        return True
    if hint is None or hint is type(None):
        return value is None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union or origin is types.UnionType:
        return any(conforms(value, arg) for arg in args)
    if origin is typing.Literal:
        return any(value == arg and type(value) is type(arg) for arg in args)
    if origin in (list, tuple):
        return isinstance(value, list) and all(conforms(item, args[0] if args else Any) for item in value)
    if origin is dict:
        value_hint = args[1] if args else Any
        return isinstance(value, dict) and all(isinstance(k, str) and conforms(v, value_hint) for k, v in value.items())
    if hint is float:
        return is_number(value)
    if hint is int:
        return is_number(value) and isinstance(value, int)
    if hint is bool:
        return isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is dict:
        return isinstance(value, dict)
    if hint is list:
        return isinstance(value, list)
    return False


@functools.lru_cache(maxsize=None)
def _field_types(cls: type) -> tuple[tuple[str, Any, bool], ...]:
    """(name, type hint, required) for each field of a dataclass; hints resolved once per class."""
    hints = typing.get_type_hints(cls)
    return tuple((f.name, hints[f.name],
                  f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
                 for f in dataclasses.fields(cls) if f.init)


def dataclass_problem(cls: type, data: Any) -> Optional[str]:
    """What makes ``data`` unfit to build ``cls`` from (a missing field, a field of the wrong type);
    None when it fits. Keys that ``cls`` does not have are ignored (a newer writer's additions)."""
    if not isinstance(data, dict):
        return f"not a JSON object but {type(data).__name__}"
    for name, hint, required in _field_types(cls):
        if name not in data:
            if required:
                return f"{name} is missing"
        elif not conforms(data[name], hint):
            return f"{name} is {data[name]!r}, not {_describe(hint)}"
    return None


def has_fields(cls: type, data: Any, names: tuple[str, ...]) -> bool:
    """Whether ``data`` is an object holding each of ``names`` with the type ``cls`` gives that
    field: for readers that need a few fields of a large record and build no object."""
    hints = {name: hint for name, hint, _ in _field_types(cls)}
    return isinstance(data, dict) and all(name in data and conforms(data[name], hints[name]) for name in names)


def dataclass_from_dict(cls: type, data: Any) -> Any:
    """``cls`` built from the fields of ``data`` it knows; ``ValueError`` when any is missing or
    of the wrong type (see ``dataclass_problem``)."""
    problem = dataclass_problem(cls, data)
    if problem is not None:
        raise ValueError(f"{cls.__name__}: {problem}")
    return cls(**{name: data[name] for name, _, _ in _field_types(cls) if name in data})


def _describe(hint: Any) -> str:
    if hint is float or hint is int:
        return "a finite number" if hint is float else "a whole number"
    names = {str: "a string", bool: "true or false", dict: "an object", list: "a list"}
    if hint in names:
        return names[hint]
    return str(hint).replace("typing.", "")


# One field of a dict, as the type the reader needs or None: for optional facts (a listing shows
# what it can and leaves the rest blank rather than failing on one edited field).
def text_field(data: dict[str, Any], key: str) -> Optional[str]:
    value = data.get(key)
    return value if isinstance(value, str) and value else None


def number_field(data: dict[str, Any], key: str) -> Optional[float]:
    value = data.get(key)
    return float(value) if is_number(value) else None


def whole_field(data: dict[str, Any], key: str) -> Optional[int]:
    value = data.get(key)
    return value if is_number(value) and isinstance(value, int) else None


def child_path(folder: Path, name: Any, what: str) -> Path:
    """``folder / name`` for a ``name`` read from a file, once it is a valid entry name
    (``engine.core.names``) and the path, links resolved, stays inside ``folder``; a StudioError
    naming ``what`` the file says otherwise."""
    if not isinstance(name, str) or not is_valid_name(name):
        raise StudioError(f"{what} names {name!r}, which is not a valid name: the file was edited or damaged")
    path = Path(folder) / name
    if not path.resolve().is_relative_to(Path(folder).resolve()):
        raise StudioError(f"{what} names {name!r}, which leads outside {folder}: the file was edited or damaged")
    return path
