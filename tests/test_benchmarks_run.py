"""`python -m benchmarks.run`: bad settings are one line, exit 2, and lose no other section."""

from __future__ import annotations

import sys

import pytest

from benchmarks import run as bench_run


@pytest.mark.parametrize("value", ["abc", "-1", "2.5"])
def test_bad_seed_count_is_one_line_and_keeps_the_report(tmp_path, monkeypatch, capsys, value):
    report = tmp_path / "benchmarks.md"
    report.write_text("# lorasel benchmarks\n\n<!-- section: selection -->\nearlier figures\n")
    monkeypatch.setattr(bench_run, "ROOT", tmp_path)
    monkeypatch.setattr(bench_run, "REPORT", report)
    monkeypatch.setattr(bench_run, "FIGURES", tmp_path / "figures")
    monkeypatch.setenv("LORASEL_BENCH_GRADE_SEEDS", value)
    monkeypatch.delitem(sys.modules, "benchmarks.bench_selection", raising=False)
    assert bench_run.main(["selection"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(err) == 1
    assert "LORASEL_BENCH_GRADE_SEEDS" in err[0] and "is not a count" in err[0] and "(hint: " in err[0]
    assert "earlier figures" in report.read_text()  # the section is kept as it was
