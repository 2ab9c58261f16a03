"""Config files: read TOML (presets or paths) with ``--set`` overrides, write the resolved TOML.

Every key is checked against the dataclasses of :mod:`trainer.config`; an unknown key or a
value of the wrong type is a :class:`ConfigError` naming it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from pathlib import Path
from typing import Any

from lorasel.errors import ConfigError
from trainer.config import SECTIONS, TrainConfig

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check one TOML value against its field type; ints are accepted for floats."""
    origin = typing.get_origin(annotation)
    if origin is list:
        (item,) = typing.get_args(annotation)
        if not isinstance(value, list):
            raise ConfigError(
                f"{key} must be a list (got {value!r})", hint=f"e.g. {key.split('.')[-1]} = [100, 500]"
            )
        return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false (got {value!r})", hint="write true or false")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer (got {value!r})", hint="write a whole number")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number (got {value!r})", hint="write e.g. 1e-4")
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be finite (got {value!r})", hint="write a finite number")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string (got {value!r})", hint='quote it: key = "value"')
        return value
    raise TypeError(f"unsupported field type {annotation!r}")  # a programming error, not user input


def _build_section(name: str, cls: type, values: Any, source: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(
            f"[{name}] in {source} must be a table (got {values!r})",
            hint=f"write [{name}] then key = value lines",
        )
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"unknown key {name}.{unknown[0]} in {source}",
            hint=f"known keys in [{name}]: {', '.join(sorted(known))}",
        )
    kwargs = {k: _coerce(f"{name}.{k}", v, hints[k]) for k, v in values.items()}
    return cls(**kwargs)


def from_dict(data: dict[str, Any], source: str = "config") -> TrainConfig:
    """Build a config from nested dicts (a parsed TOML document), checking every key."""
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(
            f"unknown section or key {unknown[0]!r} in {source}", hint=f"sections: {', '.join(SECTIONS)}"
        )
    sections = {name: _build_section(name, cls, data.get(name, {}), source) for name, cls in SECTIONS.items()}
    return TrainConfig(**sections)


def to_dict(config: TrainConfig) -> dict[str, dict[str, Any]]:
    return {name: dataclasses.asdict(getattr(config, name)) for name in SECTIONS}


def parse_override(text: str) -> tuple[str, str, Any]:
    """``section.key=value`` → (section, key, value); the value is read as TOML, else as a bare string."""
    name, sep, raw = text.partition("=")
    parts = name.strip().split(".")
    if not sep or len(parts) != 2 or not all(parts):
        raise ConfigError(f"--set {text!r} is not section.key=value", hint="e.g. --set network.rank=8")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return parts[0], parts[1], value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``section.key=value`` applied."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for text in overrides:
        section, key, value = parse_override(text)
        if section not in SECTIONS:
            raise ConfigError(
                f"--set {text!r}: unknown section {section!r}", hint=f"sections: {', '.join(SECTIONS)}"
            )
        out.setdefault(section, {})[key] = value
    return out


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} not found", hint="pass a .toml file or a preset name"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}", hint="check the path") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", hint="check the line named") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text", hint="save it as UTF-8") from None


def _resolve_paths(data: dict[str, Any], base_dir: Path) -> None:
    """Relative dataset / validation / model paths in a file are relative to that file's folder."""
    for section, key in (("dataset", "path"), ("validation", "path")):
        value = data.get(section, {}).get(key) if isinstance(data.get(section), dict) else None
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            data[section][key] = str((base_dir / value).resolve())
    base = data.get("model", {}).get("base") if isinstance(data.get("model"), dict) else None
    if isinstance(base, str) and base.startswith((".", "..")) and (base_dir / base).exists():
        data["model"]["base"] = str((base_dir / base).resolve())


def load_config(spec: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Load a preset by name (``toyworld``) or a TOML file, apply ``--set`` overrides, check it all."""
    from trainer.presets import preset_path

    path = preset_path(str(spec)) or Path(spec).expanduser()
    if not path.is_file() and not str(spec).endswith(".toml"):
        from trainer.presets import preset_names

        raise ConfigError(
            f"{spec!r} is neither a config file nor a preset", hint=f"presets: {', '.join(preset_names())}"
        )
    data = read_toml(path)
    _resolve_paths(data, path.resolve().parent)
    data = apply_overrides(data, list(overrides or []))
    for section, key in (("dataset", "path"), ("validation", "path")):
        value = data.get(section, {}).get(key) if isinstance(data.get(section), dict) else None
        if isinstance(value, str) and value:
            data[section][key] = str(Path(value).expanduser().resolve())
    return from_dict(data, source=str(path))


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def to_toml(config: TrainConfig, header: str = "") -> str:
    """The config as TOML, every key written (the resolved config of a run)."""
    lines = [f"# {line}" for line in header.splitlines()] + ([""] if header else [])
    for section, values in to_dict(config).items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
        lines.append("")
    return "\n".join(lines)


def describe_fields() -> list[tuple[str, Any, str]]:
    """(section.key, default, help) for every setting: the reference table of the README."""
    rows = []
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            rows.append((f"{section}.{f.name}", default, f.metadata.get("help", "")))
    return rows
