"""Typed configs: dataclasses built from plain dicts (YAML), with ``key.sub=value`` overrides.

:func:`from_dict` checks every key and value against the dataclass's type hints:

- an unknown key is a ValueError that names the valid keys (and the closest one, for typos);
- values are checked and, where lossless, converted: ``int`` -> ``float``, numeric strings
  such as ``"1e-4"`` (which YAML 1.1 reads as a string) -> ``float``, lists -> tuples,
  and a ``Literal[...]`` field accepts only its listed values.

Nested dataclass fields take nested dicts, so a whole run config is one ``from_dict`` call.
Those errors are of type :class:`ConfigKeyError`, which carries the key; its ``located`` method
says where the value came from: the override that set it, or else the YAML file.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

C = TypeVar("C")


class ConfigKeyError(ValueError):
    """A config key that is unknown or has a value of the wrong type; ``key`` is its dotted name."""

    def __init__(self, key: str, message: str, located: bool = False) -> None:
        super().__init__(message)
        self.key, self.is_located = key, located

    def located(self, path: str | Path, overrides: Iterable[str] = ()) -> ConfigKeyError:
        """This error with where the value came from: ``override 'model.channels=abc': ...`` when the last
        override that set the key (or a section above it) did, else ``PATH: ...`` (the YAML file)."""
        if self.is_located:
            return self
        item = _setting_override(self.key, overrides)
        return ConfigKeyError(self.key, f"{f'override {item!r}' if item else path}: {self}", located=True)


def _setting_override(key: str, overrides: Iterable[str]) -> str | None:
    """The last of ``overrides`` that set ``key`` or a section above it, if any."""
    setting = [o for o in overrides if (k := o.split("=", 1)[0].strip()) == key or key.startswith(k + ".")]
    return setting[-1] if setting else None


def _union_args(tp: Any) -> tuple[Any, ...] | None:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return typing.get_args(tp)
    return None


def _dataclass_in(tp: Any) -> type | None:
    """The dataclass inside ``tp`` (``X`` or ``X | None``), if any."""
    if dataclasses.is_dataclass(tp):
        return tp
    for arg in _union_args(tp) or ():
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    args = _union_args(tp)
    if args:
        return " or ".join(_type_name(a) for a in args)
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _convert(value: Any, tp: Any, where: str) -> Any:
    """``value`` checked against type ``tp`` and converted where that loses nothing."""

    def bad(what: str | None = None) -> ValueError:
        return ConfigKeyError(where, f"config key {where}: expected {what or _type_name(tp)}, got {value!r}")

    if tp is Any:
        return value
    args = _union_args(tp)
    if args:
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ValueError:
                pass
        raise bad()
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise bad()
        return value
    if tp in (bool, int, str):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise bad()
        return value
    if tp is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad() from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        return float(value)
    if origin is tuple:
        items = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise bad("a list")
        if len(items) == 2 and items[1] is Ellipsis:
            return tuple(_convert(v, items[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(items):
            raise bad(f"a list of {len(items)} values")
        return tuple(_convert(v, t, f"{where}[{i}]") for i, (v, t) in enumerate(zip(value, items, strict=True)))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise bad("a list")
        (item,) = typing.get_args(tp) or (Any,)
        return [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise bad("a mapping")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise bad("a mapping (section)")
        return from_dict(tp, value, where)
    return value


def unknown_key_message(key: str, valid: Iterable[str], where: str = "") -> str:
    """``unknown config key 'train.lrr' (did you mean 'lr'?); valid keys of train: ...``."""
    valid = sorted(valid)
    full = f"{where}.{key}" if where else key
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown config key {full!r}{hint}; valid keys{' of ' + where if where else ''}: {', '.join(valid)}"


def from_dict(cls: type[C], data: Mapping[str, Any] | None, where: str = "") -> C:
    """Build dataclass ``cls`` from ``data``; nested dataclass fields take nested dicts.

    Unknown keys and values of the wrong type are ValueErrors naming the key (see module doc).
    """
    if data is not None and not isinstance(data, Mapping):
        raise ConfigKeyError(where, f"config section {where or '(top level)'} must be a mapping, got {data!r}")
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    types_ = {f.name: hints[f.name] for f in dataclasses.fields(cls)}
    for key in data:
        if key not in types_:
            raise ConfigKeyError(f"{where}.{key}" if where else str(key), unknown_key_message(str(key), types_, where))
    kwargs = {}
    for name, value in data.items():
        path = f"{where}.{name}" if where else name
        sub = _dataclass_in(types_[name])
        if sub is not None and isinstance(value, Mapping):
            kwargs[name] = from_dict(sub, value, path)
        else:
            kwargs[name] = _convert(value, types_[name], path)
    return cls(**kwargs)


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as plain nested dicts/lists (YAML-safe: tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(obj))


_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def parse_value(text: str) -> Any:
    """Parse an override value with YAML rules (numbers, booleans, lists, null), else a string.

    Unlike YAML 1.1, ``1e-4`` (no dot in the mantissa) is a number too.
    """
    import yaml  # lazy: keep `import difflab` cheap

    if _NUMBER.match(text.strip()) and not text.strip().lstrip("+-").isdigit():
        return float(text)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides to a nested dict (new keys are checked later by from_dict).

    An override below a key that holds no section is a :class:`ConfigKeyError` about that key, located
    at the earlier override that set it if one did (else the caller names the file).
    """
    overrides = list(overrides)
    for n, item in enumerate(overrides):
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key.sub=value")
        key, text = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        if not all(parts):
            raise ValueError(f"override {item!r}: empty key part")
        for i, p in enumerate(parts[:-1]):
            nxt = node.setdefault(p, {})
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                section = ".".join(parts[: i + 1])
                e = ConfigKeyError(section, f"config key {section}: expected a mapping (section), got {nxt!r}")
                raise e.located("", overrides[:n]) if _setting_override(section, overrides[:n]) else e
            node = nxt
        node[parts[-1]] = parse_value(text)
    return data


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or bad YAML is a one-line error naming the file."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{p}: a config must be a mapping of sections")
    return data


def dump_yaml(data: Mapping[str, Any]) -> str:
    """YAML text of a plain mapping, keys in their given order."""
    import yaml

    return yaml.safe_dump(dict(data), sort_keys=False)
