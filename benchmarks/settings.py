"""Benchmark settings from environment variables, checked: a bad value is a ConfigError (one
line with a hint from ``python -m benchmarks.run``, and the section's earlier figures kept)."""

from __future__ import annotations

import os

from lorasel.errors import ConfigError


def env_count(name: str, default: int) -> int:
    """A whole number >= 0 from the environment variable ``name``."""
    text = os.environ.get(name, str(default)).strip()
    if not text.isdigit():
        raise ConfigError(
            f"{name}={text!r} is not a count", hint=f"a whole number >= 0, e.g. {name}={default}"
        )
    return int(text)


def env_counts(name: str, default: str) -> tuple[int, ...]:
    """Comma-separated whole numbers > 0 from the environment variable ``name``, sorted and
    without repeats (empty when the variable is empty)."""
    text = os.environ.get(name, default).strip()
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(
            f"{name}={text!r} is not a list of counts", hint=f"whole numbers > 0, e.g. {name}={default or 2}"
        )
    return tuple(sorted({int(p) for p in parts}))
