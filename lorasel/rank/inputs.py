"""Where the ranker's inputs come from: the evaluator's stored results, and the training loss.

The evaluator is reached through :func:`load_inputs` only (imported when called), so that the
ranking and its tests do not depend on the evaluator's machinery.
"""

from __future__ import annotations

from pathlib import Path

from lorasel.errors import ResultsError
from lorasel.results import Results
from lorasel.rundir import RunDir


def load_inputs(path: str | Path, workdir: str | Path | None = None) -> Results:
    """The evaluation results of ``path`` (a run directory or a folder of checkpoints).

    Raises ResultsError, naming the folder and the command to run, when it does not exist or
    was never evaluated; the evaluator's own ResultsError for a corrupt store passes through.
    """
    run = RunDir.at(path, workdir)
    if not run.root.exists():
        raise ResultsError(
            f"{run.root} does not exist", hint="give a run directory or a folder of checkpoints"
        )
    if not run.root.is_dir():
        raise ResultsError(f"{run.root} is not a folder", hint="give the folder that holds the checkpoints")
    if not run.results_db.is_file():
        raise ResultsError(
            f"{run.root} has not been evaluated yet (no {run.results_db})",
            hint=f"run `lorasel eval {path}` first",
        )
    try:
        from lorasel.evaluate import load_results
    except ModuleNotFoundError as exc:  # pragma: no cover - only before the evaluator is installed
        if exc.name and exc.name.startswith("lorasel.evaluate"):
            raise ResultsError(
                "this lorasel has no evaluator (lorasel.evaluate)", hint="install the full lorasel package"
            ) from None
        raise
    return load_results(run.root, workdir=run.workdir)
