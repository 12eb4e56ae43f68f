"""Config dataclasses from a YAML file plus command-line overrides.

``load_config(Cls, "x.yaml", {"learning_rate": "1e-4"}, ["decoding.max_new_tokens=64"])`` reads
the file, applies the nested ``KEY.PATH=VALUE`` items and the top-level overrides (strings from the
command line are converted to the field's type) and names the file, the key and the expected type
in every error. A key named like a secret (``api_key``, ``token``, ``password``, at any depth) is
rejected before anything is written: secrets come from environment variables (``api_key_env``). A command adds the options with :func:`add_override_args` and builds its config
with :func:`config_from_args`.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A bad config file or override; the message names where and which key."""


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _base_types(tp: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return tuple(a for a in typing.get_args(tp) if a is not type(None))
    return (tp,)


def _optional(tp: Any) -> bool:
    return type(None) in typing.get_args(tp)


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert ``value`` (from YAML or a CLI string) to the field type ``tp``."""
    if value is None:
        if _optional(tp):
            return None
        raise ConfigError(f"{where}: may not be null")
    if isinstance(value, str) and value.lower() in ("none", "null") and _optional(tp):
        return None
    errors = []
    for base in _base_types(tp):
        origin = typing.get_origin(base) or base
        try:
            if origin is bool:
                if isinstance(value, bool):
                    return value
                if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
                    return value.lower() in ("true", "1", "yes", "on")
                raise ValueError("expected true/false")
            if origin is int:
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError("expected an integer")
                return int(value)
            if origin is float:
                if isinstance(value, bool):
                    raise ValueError("expected a number")
                return float(value)
            if origin is str:
                if isinstance(value, (dict, list)):
                    raise ValueError("expected a string")
                return str(value)
            if origin is list:
                (item,) = typing.get_args(base) or (Any,)
                items = value.split(",") if isinstance(value, str) else value
                if not isinstance(items, list):
                    raise ValueError("expected a list")
                return [coerce(v.strip() if isinstance(v, str) else v, item, where) for v in items]
            if origin is dict:
                if isinstance(value, str):
                    try:
                        value = yaml.safe_load(value)
                    except yaml.YAMLError as e:
                        raise ValueError(f"expected a mapping, not valid YAML ({getattr(e, 'problem', e)})") from None
                if not isinstance(value, dict):
                    raise ValueError("expected a mapping")
                return value
            if origin is typing.Literal:
                if value in typing.get_args(base):
                    return value
                raise ValueError(f"expected one of {typing.get_args(base)}")
            if base is Any:
                return value
        except (ValueError, TypeError) as e:
            errors.append(str(e))
    raise ConfigError(f"{where}: {value!r} is not valid ({'; '.join(errors) or f'expected {tp}'})")


def read_mapping(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a YAML config file; errors name the file (and the line)."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{p}{line}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of option: value at the top level")
    return data


def secret_keys(data: Any, where: str) -> list[str]:
    """Where ``data`` holds a key named like a secret (:func:`derta.io.is_secret_key`), e.g.
    ``"x.yaml: models[0].options.api_key"``."""
    from .io import is_secret_key

    found: list[str] = []
    if isinstance(data, dict):
        for k, v in data.items():
            here = f"{where}.{k}" if where else str(k)
            if is_secret_key(k):
                found.append(here)
            found += secret_keys(v, here)
    elif isinstance(data, list):
        for i, v in enumerate(data):
            found += secret_keys(v, f"{where}[{i}]")
    return found


def reject_secrets(data: Any, where: str, source: str) -> None:
    """A ConfigError when ``data`` holds a secret: keys come from the environment, never from a file
    or the command line (they would be saved into the run's config.yaml and run.json)."""
    found = secret_keys(data, where)
    if found:
        name = found[0].rsplit(".", 1)[-1]
        env = "api_key_env" if "key" in name.lower() else f"{name}_env"
        raise ConfigError(f"{source}: {found[0]}: a secret may not be written in a config or on the command line; "
                          f"put it in an environment variable and name that variable instead "
                          f"({env}: OPENAI_API_KEY, for example)")


def _flow_or_text(value: str) -> Any:
    """A ``--set`` value: YAML scalars (numbers, true/false, null) as such; a mapping or a list only
    when written in flow syntax (``{a: 1}``, ``[x, y]``); any other text stays a string, so that
    ``prompt="Verdict: unsafe"`` is the text, not a mapping."""
    text = value.strip()
    if not text:
        return ""
    parsed = yaml.safe_load(value)
    if isinstance(parsed, (dict, list)) and not (text[0] + text[-1] in ("{}", "[]")):
        return value
    if isinstance(parsed, str):
        return text if not (text[0] in "'\"" and text[-1] == text[0]) else parsed
    return parsed


def parse_set(item: str) -> tuple[list[str], Any]:
    """``"questions.limit=5"`` -> (["questions", "limit"], 5); the value is read as a YAML scalar,
    or a mapping / list in flow syntax (``{...}``, ``[...]``); other text stays a string."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE")
    try:
        parsed = _flow_or_text(value)
    except yaml.YAMLError as e:
        text = value.strip()
        if text[:1] in ("{", "["):
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({getattr(e, 'problem', e)})") from None
        parsed = value  # plain text that YAML cannot read ("a: b: c"): the text itself
    path = key.strip().split(".")
    reject_secrets({path[-1]: parsed}, ".".join(path[:-1]), "--set")
    return path, parsed


def deep_set(data: Any, path: list[str], value: Any, full: str) -> Any:
    """``data`` with ``value`` placed at ``path`` (a copy of each container on the way; list
    items by index); ``full`` is the ``--set`` item named in errors."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(data, list):
        if not head.isdigit() or int(head) >= len(data):
            raise ConfigError(f"--set {full}: {head!r} is not an index of a list of {len(data)}")
        out = list(data)
        out[int(head)] = deep_set(data[int(head)], rest, value, full)
        return out
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"--set {full}: cannot set {head!r} inside {type(data).__name__} {data!r}")
    return {**data, head: deep_set(data.get(head), rest, value, full)}


def apply_sets(values: dict[str, Any], sets: list[str] | tuple[str, ...], defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """The top-level keys that ``KEY.PATH=VALUE`` items change, each with its new whole value.

    A key missing from ``values`` starts from ``defaults`` (the field's default), so that
    ``--set decoding.temperature=0.7`` keeps the other default decoding settings.
    """
    out: dict[str, Any] = {}
    for item in sets:
        path, value = parse_set(item)
        top = path[0].replace("-", "_")
        current = out[top] if top in out else values.get(top, (defaults or {}).get(top))
        out[top] = deep_set(current, path[1:], value, item)
    return out


def _defaults(cls: type) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def load_config(cls: type[T], path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                sets: list[str] | tuple[str, ...] = ()) -> T:
    """Build ``cls`` from a YAML file, then ``sets`` (nested ``KEY.PATH=VALUE`` items, applied to
    the file's values), then ``overrides`` (whole top-level values; they win)."""
    fields = _field_types(cls)
    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        data = read_mapping(p)
        reject_secrets(data, "", str(p))
        for key, value in data.items():
            name = str(key).replace("-", "_")
            if name not in fields:
                raise ConfigError(f"{p}: unknown key {key!r}; known keys: {', '.join(sorted(fields))}")
            values[name] = coerce(value, fields[name], f"{p}: key {key!r}")
    for name, value in apply_sets(values, sets, _defaults(cls)).items():
        if name not in fields:
            raise ConfigError(f"--set: unknown key {name!r}; known keys: {', '.join(sorted(fields))}")
        values[name] = coerce(value, fields[name], f"--set {name}")
    reject_secrets(overrides or {}, "", "command line")
    for key, value in (overrides or {}).items():
        name = key.replace("-", "_")
        if name not in fields:
            raise ConfigError(f"unknown option --{key.replace('_', '-')}; known: {', '.join(sorted(fields))}")
        values[name] = coerce(value, fields[name], f"option --{name.replace('_', '-')}")
    try:
        return cls(**values)
    except TypeError as e:
        raise ConfigError(f"{path or 'config'}: {e}") from None
    except ValueError as e:
        raise ConfigError(f"{path or 'config'}: {e}") from None


def add_override_args(parser: argparse.ArgumentParser, cls: type) -> None:
    """One ``--field-name VALUE`` option per dataclass field, all defaulting to "not given", and
    ``--set KEY.PATH=VALUE`` (repeatable) for a key inside a section."""
    group = parser.add_argument_group(f"{cls.__name__} options (override the config file)")
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        doc = (f.metadata or {}).get("help", "")
        default = f.default if f.default is not dataclasses.MISSING else "(factory)"
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f"cfg__{f.name}", default=None, metavar="V", help=f"{doc} [default: {default}]")
    group.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", dest="cfg_sets",
                       help="override a nested key, e.g. decoding.max_new_tokens=64 or models.0.spec=hf:./m "
                            "(numbers and true/false as such, {a: 1} / [x, y] as a mapping / list, other text as "
                            "a string; list items by index; repeatable)")


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    return {k[len("cfg__"):]: v for k, v in vars(args).items() if k.startswith("cfg__") and v is not None}


def sets_from(args: argparse.Namespace) -> list[str]:
    return list(getattr(args, "cfg_sets", None) or [])


def config_from_args(cls: type[T], path: str | Path | None, args: argparse.Namespace, extra_sets: list[str] | tuple[str, ...] = ()) -> T:
    """``cls`` from the YAML file ``path`` and the options :func:`add_override_args` added."""
    return load_config(cls, path, overrides_from(args), [*sets_from(args), *extra_sets])


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
