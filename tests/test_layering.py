"""Layering contract: the core never imports the UI, and never the trainer.

Like harlequin's import test: import every core module in a fresh interpreter
and look at sys.modules.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

# Modules above the core: the UI, and orchestration that may use the trainer.
NOT_CORE = ("lorasel.cli", "lorasel.tui", "lorasel.demo", "lorasel.__main__")
UI = ("textual", "rich")


def _loaded_after_importing(package: str, skip: tuple[str, ...]) -> list[str]:
    code = textwrap.dedent(
        f"""
        import importlib, json, pkgutil, sys
        pkg = importlib.import_module({package!r})
        names = [pkg.__name__]
        for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            if info.name.startswith({skip!r}):
                continue
            names.append(info.name)
            importlib.import_module(info.name)
        print(json.dumps({{"imported": names, "modules": sorted(sys.modules)}}))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert data["imported"]
    return data["modules"]


def _offenders(modules: list[str], banned: tuple[str, ...]) -> list[str]:
    return [m for m in modules if m.split(".")[0] in banned]


def test_core_imports_no_ui_and_no_trainer():
    modules = _loaded_after_importing("lorasel", NOT_CORE)
    assert _offenders(modules, UI) == []
    assert _offenders(modules, ("trainer",)) == []


def test_trainer_imports_no_ui():
    modules = _loaded_after_importing("trainer", ())
    assert _offenders(modules, UI) == []
