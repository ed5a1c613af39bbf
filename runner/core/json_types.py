"""What a JSON document holds, as types, and the reading of one into a typed model.

:data:`Json` (any value) and :data:`JsonObject` type data the runner records or passes on without
reading into it (a config, metrics, the facts a training process reports). What it does read has a
typed model of its own, whose ``from_json`` reads through :class:`Fields`: a document of another
shape is a :class:`ContractError` whose one line names the document and the field. Standard
library only (the worker reads its request with it, inside the image).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeAlias, TypeVar, cast

Json: TypeAlias = None | bool | int | float | str | list["Json"] | dict[str, "Json"]
JsonObject: TypeAlias = dict[str, Json]


class ContractError(ValueError):
    """A document that does not have its contract's shape (the message says where)."""


_MISSING = object()


def _kind(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def _optional(ok: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda v: v is None or ok(v)


def _is_str(v: object) -> bool:
    return isinstance(v, str)


def _is_number(v: object) -> bool:
    return type(v) in (int, float)  # a boolean is not a number here


def _is_object(v: object) -> bool:
    return isinstance(v, dict)


def _is_list(v: object) -> bool:
    return isinstance(v, list)


def _is_strings(v: object) -> bool:
    return isinstance(v, list) and all(isinstance(s, str) for s in v)


def _at_least(low: int) -> Callable[[object], bool]:
    return lambda v: type(v) is int and v >= low  # a boolean is not a count


@dataclass(frozen=True)
class Fields:
    """One JSON object being read, ``where`` naming it in errors (``job.json: paths``)."""

    data: Mapping[str, object]
    where: str

    @classmethod
    def of(cls, data: object, where: str) -> Fields:
        if not isinstance(data, dict):
            raise ContractError(f"{where}: expected an object, got {_kind(data)}")
        return cls(data, where)

    def value(self, key: str, ok: Callable[[object], bool], want: str, default: object = _MISSING) -> object:
        """``key``'s value when ``ok`` holds for it, ``default`` when it is absent; else ContractError."""
        value = self.data.get(key, _MISSING)
        if value is _MISSING:
            if default is _MISSING:
                raise ContractError(f"{self.where}: {key} is missing")
            return default
        if not ok(value):
            raise ContractError(f"{self.where}: {key} must be {want}, got {_kind(value)}{_clip(value)}")
        return value

    def str_(self, key: str, default: object = _MISSING) -> str:
        return cast(str, self.value(key, _is_str, "a string", default))

    def opt_str(self, key: str) -> str | None:
        return cast("str | None", self.value(key, _optional(_is_str), "a string", None))

    def int_(self, key: str, default: object = _MISSING, low: int = 0) -> int:
        return cast(int, self.value(key, _at_least(low), f"an integer >= {low}", default))

    def opt_number(self, key: str) -> float | None:
        value = self.value(key, _optional(_is_number), "a number", None)
        return None if value is None else float(cast(float, value))

    def bool_(self, key: str, default: object = _MISSING) -> bool:
        return cast(bool, self.value(key, lambda v: isinstance(v, bool), "true or false", default))

    def obj(self, key: str, default: object = _MISSING) -> JsonObject:
        return cast(JsonObject, self.value(key, _is_object, "an object", default))

    def opt_obj(self, key: str) -> JsonObject | None:
        return cast("JsonObject | None", self.value(key, _optional(_is_object), "an object", None))

    def strs(self, key: str) -> tuple[str, ...]:
        return tuple(cast("list[str]", self.value(key, _is_strings, "a list of strings", [])))

    def opt_int(self, key: str, low: int = 0) -> int | None:
        return cast("int | None", self.value(key, _optional(_at_least(low)), f"an integer >= {low}", None))

    def opt_bool(self, key: str) -> bool | None:
        return cast(
            "bool | None", self.value(key, lambda v: v is None or isinstance(v, bool), "true or false", None)
        )

    def opt_list(self, key: str) -> list[Json] | None:
        return cast("list[Json] | None", self.value(key, _optional(_is_list), "a list", None))

    def items(self, key: str) -> list[Fields]:
        """``key``'s list of objects, each to be read on its own."""
        value = cast("list[object]", self.value(key, _is_list, "a list", []))
        return [Fields.of(v, f"{self.where}: {key}[{i}]") for i, v in enumerate(value)]


def _clip(value: object) -> str:
    """A scalar, shortened, for an error message (an object or a list is named by its kind alone)."""
    if isinstance(value, (dict, list)):
        return ""
    text = json.dumps(value, default=str)
    return " " + (text if len(text) <= 40 else text[:39] + "…")


class _Document(Protocol):
    def to_json(self) -> JsonObject: ...


D = TypeVar("D")


def read(path: Path, parse: Callable[[object, str], D]) -> D:
    """The document in ``path`` parsed by ``parse`` (a ``from_json``); ContractError when the file
    is not JSON or not of the contract's shape, OSError when it cannot be read."""
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ContractError(f"{path}: not a JSON document ({type(exc).__name__})") from None
    return parse(data, str(path))


def write(path: Path, doc: _Document) -> None:
    """``doc`` as indented JSON (values JSON cannot hold, as their text)."""
    path.write_text(json.dumps(doc.to_json(), indent=2, sort_keys=True, default=str))
