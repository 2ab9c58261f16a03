"""The toy world's oracle measurements of a benchmark run's renders, cached beside the run.

Measuring a render takes about 2.6 ms; a run of the selection benchmark has 7,812 of them, and
every rerun of the report reads them all. The cache keeps each image's measurement in
``RUN/oracle-FINGERPRINT.csv``: a render's file name is its cache key (checkpoint, strength,
prompt, seed and settings), and the fingerprint hashes the oracle's source, so a changed oracle
measures again.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pandas as pd

#: The toy world's modules whose source decides what the oracle sees in a render.
ORACLE_SOURCES = ("oracle.py", "verdict.py", "world.py")


def oracle_fingerprint() -> str:
    """A hash of the oracle's source: cached measurements are kept only while it is unchanged."""
    import hashlib

    import lorasel.toyworld

    root = Path(lorasel.toyworld.__file__).parent
    digest = hashlib.sha256()
    for name in ORACLE_SOURCES:
        digest.update((root / name).read_bytes())
    return digest.hexdigest()[:16]


def measured_attributes(run_dir: Path, renders: pd.DataFrame) -> pd.DataFrame:
    """The oracle's :func:`~lorasel.toyworld.verdict.render_attributes` of ``renders`` (aligned
    with their index), each image measured once across reruns: kept in
    ``RUN/oracle-FINGERPRINT.csv`` by image (a render's file name is its cache key, which covers
    checkpoint, strength, prompt, seed and settings). An unreadable file is measured again."""
    from lorasel import demo
    from lorasel.toyworld.verdict import ATTRIBUTES, render_attributes

    path = Path(run_dir) / f"oracle-{oracle_fingerprint()}.csv"
    known = pd.DataFrame(columns=list(ATTRIBUTES), dtype=float).rename_axis("image")
    if path.is_file():
        with contextlib.suppress(ValueError, KeyError, pd.errors.ParserError):  # then measured again
            read = pd.read_csv(path, index_col="image")[list(ATTRIBUTES)].astype(float)
            known = read[~read.index.duplicated()]
    todo = renders[~renders["image"].isin(known.index)].drop_duplicates("image")
    if len(todo):
        new = render_attributes(todo, demo.RunDir.at(run_dir).state).set_axis(todo["image"])
        known = pd.concat([known, new.rename_axis("image")]) if len(known) else new.rename_axis("image")
        partial = path.with_suffix(".csv.partial")
        known.to_csv(partial)
        partial.replace(path)
    return known.loc[renders["image"]].set_axis(renders.index)
