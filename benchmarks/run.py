"""Regenerate reports/benchmarks.md from scratch: `make bench` (or `python -m benchmarks.run`).

Each ``benchmarks/bench_<name>.py`` exposes ``run(out_dir: Path) -> str`` returning one markdown
section (it may write figures into ``out_dir``). Speed figures are ratios against a baseline
measured in the same run: the machines are shared and noisy.
Run one section alone with ``python -m benchmarks.run NAME [NAME ...]``; the other sections of
the existing report are kept.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import os
import platform
import re
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "reports" / "benchmarks.md"
FIGURES = ROOT / "reports" / "figures"
# Order of the sections in the report.
SECTIONS = ["toyworld", "switch", "trainer", "eval", "rank", "tui", "selection"]
MARK = "<!-- section: {} -->"


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (
        f"- CPU: {cpu}, {os.cpu_count()} cores; GPU: {gpu}\n"
        f"- Python {platform.python_version()}, torch {torch.__version__}, threads {torch.get_num_threads()}\n"
        f"- Date: {_dt.date.today().isoformat()}"
    )


def measured_on() -> str:
    """The line that ends each section regenerated: where and when, since sections are rerun alone."""
    cpu, _, rest = machine().partition("\n")
    date = rest.rsplit("Date: ", 1)[-1]
    return f"_Measured on {cpu.removeprefix('- CPU: ')}; {date}._"


def _existing_sections() -> dict[str, str]:
    if not REPORT.is_file():
        return {}
    text = REPORT.read_text()
    parts = re.split(r"<!-- section: (\w+) -->\n", text)
    return {parts[i]: parts[i + 1].rstrip() + "\n" for i in range(1, len(parts) - 1, 2)}


def main(argv: list[str]) -> int:
    from lorasel.errors import LoraselError
    from lorasel.io import atomic_write_text

    wanted = argv or SECTIONS
    unknown = [w for w in wanted if w not in SECTIONS]
    if unknown:
        print(f"error: unknown benchmark section(s) {unknown} (hint: one of {SECTIONS})", file=sys.stderr)
        return 2
    FIGURES.mkdir(parents=True, exist_ok=True)
    sections = _existing_sections()
    failed: list[str] = []
    bad_input = False
    for name in wanted:
        print(f"[bench] {name} ...", flush=True)
        start = time.perf_counter()
        try:
            module = importlib.import_module(f"benchmarks.bench_{name}")
            body = module.run(FIGURES).rstrip() + "\n"
        except LoraselError as exc:  # bad settings: one line; the other sections still run
            print(exc.one_line(), file=sys.stderr)
            failed.append(name)
            bad_input = True
            continue
        except Exception:  # one broken section must not lose the others' measurements
            traceback.print_exc()
            failed.append(name)
            continue
        print(f"[bench] {name} done in {time.perf_counter() - start:.0f} s", flush=True)
        sections[name] = f"{body}\n{measured_on()}\n"
    head = (
        "# lorasel benchmarks\n\n"
        "Regenerate with `make bench` (all sections) or `python -m benchmarks.run SECTION`.\n"
        "Speed figures are ratios against a baseline measured in the same run; absolute times are\n"
        "only indicative on this shared machine. Sections are rerun alone at times: each ends with the\n"
        "machine it was measured on, where known.\n\n"
        f"Machine of the last run:\n\n{machine()}\n"
    )
    body = "".join(f"\n{MARK.format(n)}\n{sections[n]}" for n in SECTIONS if n in sections)
    atomic_write_text(REPORT, head + body)
    print(f"[bench] wrote {REPORT.relative_to(ROOT)}")
    if failed:
        print(f"[bench] failed sections (kept as they were): {', '.join(failed)}", file=sys.stderr)
        return 2 if bad_input else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
