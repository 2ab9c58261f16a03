"""The results store: one SQLite database and PNG files in the state folder (``PATH/lorasel/``).

- ``renders``: one row per finished render, keyed by its cache key (checkpoint content hash,
  strength, prompt, seed, render settings). A row is written only after its PNG is on disk
  (atomic rename), in one transaction per batch, so a run killed at any moment leaves either a
  complete render or nothing, and a rerun renders exactly what is missing.
- ``embeddings``: scorer embeddings of renders, reference images and prompt texts, keyed by
  scorer name, so a rerun or a second ranking never embeds twice.
- ``file_hashes``: content hashes of checkpoint files by (path, size, mtime).
- ``result_*``: the frames of the last complete evaluation (``lorasel.results.Results``).

Schema 2 added ``result_renders.adherence``; a schema-1 store gains the column (empty) when
it is next opened for writing, and reads as adherence not measured until ``lorasel eval``
runs again (which renders nothing new: it only embeds the in-domain prompts' texts).

WAL mode and a busy timeout let several processes (``accelerate launch``) write one store.
"""

from __future__ import annotations

import contextlib
import errno
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lorasel.errors import EvaluationError, ResultsError
from lorasel.io import atomic_write_bytes, os_reason
from lorasel.results import CHECKPOINT_COLUMNS, DIVERSITY_COLUMNS, RENDER_COLUMNS, RENDER_METRICS, Results

SCHEMA_VERSION = 2
BUSY_TIMEOUT_S = 120.0
_CHUNK = 500  # SQLite's host-parameter limit is 999 on old builds

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS renders (
    key TEXT PRIMARY KEY, checkpoint_hash TEXT NOT NULL, strength REAL NOT NULL,
    prompt TEXT NOT NULL, seed INTEGER NOT NULL, settings TEXT NOT NULL,
    image TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS embeddings (
    scorer TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL, vector BLOB NOT NULL,
    PRIMARY KEY (scorer, kind, key));
CREATE TABLE IF NOT EXISTS file_hashes (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS result_renders ({", ".join(RENDER_COLUMNS)});
CREATE TABLE IF NOT EXISTS result_diversity ({", ".join(DIVERSITY_COLUMNS)});
CREATE TABLE IF NOT EXISTS result_checkpoints ({", ".join(CHECKPOINT_COLUMNS)});
"""


def _locked(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))


def _while_locked(fn, timeout: float = BUSY_TIMEOUT_S):
    """Call ``fn`` until it stops failing with SQLITE_BUSY/LOCKED (or ``timeout`` passes)."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if not _locked(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def _disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(exc, sqlite3.OperationalError) and "full" in str(exc).lower()


class Store:
    """The evaluator's state folder: results database + rendered images."""

    def __init__(self, state_dir: Path, connection: sqlite3.Connection) -> None:
        self.state_dir = state_dir
        self.db_path = state_dir / "results.sqlite"
        self._con = connection
        self._lock = threading.RLock()

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def open(cls, db_path: str | Path, *, create: bool = True) -> Store:
        """Open (or create) the database; a corrupt one raises ``ResultsError`` and is left as is."""
        db_path = Path(db_path)
        if not create and not db_path.is_file():
            raise ResultsError(
                f"no evaluation results in {db_path.parent}", hint="run `lorasel eval PATH` first"
            )
        try:
            db_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EvaluationError(
                f"cannot create the state folder {db_path.parent}: {os_reason(exc, db_path.parent)}",
                hint="pass a writable --workdir",
            ) from exc
        try:
            # One connection, used by the renderer's writer thread and the caller, one at a time.
            con = sqlite3.connect(
                str(db_path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise ResultsError(
                f"cannot open results database {db_path}: {exc}", hint="check its permissions"
            ) from exc
        try:
            con.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            version = con.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ResultsError(
                    f"results database {db_path} was written by a newer lorasel (schema {version})",
                    hint="upgrade lorasel, or pass another --workdir",
                )
            if create:
                # Several processes may open a new store at once (accelerate launch): switching
                # to WAL takes an exclusive lock that the busy timeout does not wait for.
                _while_locked(lambda: con.execute("PRAGMA journal_mode = WAL"))
                con.execute("PRAGMA synchronous = NORMAL")
                con.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        con.execute(statement)
                _add_missing_columns(con, "result_renders", RENDER_COLUMNS)
                con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                con.execute("COMMIT")
            else:
                con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            con.close()
            if _locked(exc):
                raise EvaluationError(
                    f"results database {db_path} stayed locked for {BUSY_TIMEOUT_S:.0f} s",
                    hint="is another `lorasel eval` of the same folder running? wait for it, or use --workdir",
                ) from exc
            if _disk_full(exc):
                raise EvaluationError(
                    f"disk full while opening {db_path}", hint="free some space and rerun"
                ) from exc
            raise ResultsError(
                f"results database {db_path} is corrupt or not a lorasel database ({exc})",
                hint="move it aside (nothing was overwritten) and run `lorasel eval PATH` again",
            ) from exc
        return cls(db_path.parent, con)

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT; rolled back on any error; disk-full becomes one clear error."""
        with self._lock, self._disk_full_is_an_error():
            self._con.execute("BEGIN IMMEDIATE")
            try:
                yield self._con
            except BaseException:
                if self._con.in_transaction:  # SQLite may already have rolled back (e.g. disk full)
                    self._con.execute("ROLLBACK")
                raise
            self._con.execute("COMMIT")

    @contextlib.contextmanager
    def _disk_full_is_an_error(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            if _disk_full(exc):
                raise EvaluationError(
                    f"disk full while writing {self.db_path}; nothing half-written was recorded",
                    hint="free some space and rerun: finished renders are kept",
                ) from exc
            raise

    def _query(self, sql: str, keys: Sequence[str], *prefix: Any) -> list[tuple]:
        rows: list[tuple] = []
        with self._lock:
            for start in range(0, len(keys), _CHUNK):
                chunk = list(keys[start : start + _CHUNK])
                marks = ",".join("?" * len(chunk))
                rows += self._con.execute(sql.format(marks=marks), (*prefix, *chunk)).fetchall()
        return rows

    # -- renders ---------------------------------------------------------------------------
    def done(self, keys: Sequence[str]) -> set[str]:
        """The keys among ``keys`` whose render is recorded and whose image is on disk."""
        rows = self._query("SELECT key, image FROM renders WHERE key IN ({marks})", keys)
        return {key for key, image in rows if (self.state_dir / image).is_file()}

    def images(self, keys: Sequence[str]) -> dict[str, str]:
        """Image path (relative to the state folder) of each recorded render."""
        return dict(self._query("SELECT key, image FROM renders WHERE key IN ({marks})", keys))

    @staticmethod
    def image_path(key: str) -> str:
        return f"renders/{key[:2]}/{key}.png"

    def write_image(self, key: str, png: bytes) -> str:
        """Write one PNG atomically; disk full becomes an ``EvaluationError``, nothing recorded."""
        rel = self.image_path(key)
        try:
            atomic_write_bytes(self.state_dir / rel, png)
        except OSError as exc:
            if _disk_full(exc):
                raise EvaluationError(
                    f"disk full while writing {self.state_dir / rel}; nothing half-written was recorded",
                    hint="free some space and rerun: finished renders are kept",
                ) from exc
            raise EvaluationError(
                f"cannot write {self.state_dir / rel}: {exc}", hint="check the state folder's permissions"
            ) from exc
        return rel

    def record_renders(self, rows: Iterable[tuple[str, str, float, str, int, str, str]]) -> None:
        """(key, checkpoint_hash, strength, prompt, seed, settings_key, image) rows, one transaction."""
        now = time.time()
        with self._transaction() as con:
            con.executemany(
                "INSERT OR REPLACE INTO renders VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [(*r, now) for r in rows]
            )

    def rekey(self, old: str, new: str, key_of: Callable[[str, float, str, int, str], str]) -> int:
        """Record every render made under the settings key ``old`` under ``new`` too (same image,
        same embeddings), so that a change of how the settings are keyed re-renders nothing.

        ``key_of(checkpoint_hash, strength, prompt, seed, settings_key)`` is the render key.
        Done once per pair (remembered in ``meta``), in one transaction: several processes may
        call it at once, and every one then plans from the same store. The old rows stay. Returns
        the renders re-keyed (0 when already done)."""
        mark = f"rekeyed:{old}:{new}"
        with self._transaction() as con:
            if con.execute("SELECT 1 FROM meta WHERE key = ?", (mark,)).fetchone():
                return 0
            rows = con.execute(
                "SELECT key, checkpoint_hash, strength, prompt, seed, image, created FROM renders "
                "WHERE settings = ?",
                (old,),
            ).fetchall()
            new_rows = [
                (key_of(h, st, pr, sd, new), h, st, pr, sd, new, img, t) for _, h, st, pr, sd, img, t in rows
            ]
            con.executemany("INSERT OR IGNORE INTO renders VALUES (?, ?, ?, ?, ?, ?, ?, ?)", new_rows)
            # One pass over the embeddings, joined on the old keys (their primary key leads with
            # the scorer, so a lookup per key would scan the table once per render).
            con.execute("CREATE TEMP TABLE IF NOT EXISTS rekeyed (old TEXT PRIMARY KEY, new TEXT NOT NULL)")
            con.execute("DELETE FROM rekeyed")
            con.executemany(
                "INSERT OR IGNORE INTO rekeyed VALUES (?, ?)",
                [(old_row[0], new_row[0]) for old_row, new_row in zip(rows, new_rows, strict=True)],
            )
            con.execute(
                "INSERT OR IGNORE INTO embeddings SELECT e.scorer, e.kind, r.new, e.vector "
                "FROM embeddings AS e JOIN rekeyed AS r ON e.key = r.old"
            )
            con.execute("DELETE FROM rekeyed")
            con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (mark, str(len(rows))))
        return len(rows)

    # -- embeddings ------------------------------------------------------------------------
    def embeddings(self, scorer: str, kind: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        rows = self._query(
            "SELECT key, vector FROM embeddings WHERE scorer = ? AND kind = ? AND key IN ({marks})",
            keys,
            scorer,
            kind,
        )
        return {key: np.frombuffer(blob, dtype=np.float32).copy() for key, blob in rows}

    def record_embeddings(self, scorer: str, kind: str, vectors: Mapping[str, np.ndarray]) -> None:
        with self._transaction() as con:
            con.executemany(
                "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?)",
                [(scorer, kind, k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in vectors.items()],
            )

    # -- file hashes -----------------------------------------------------------------------
    def cached_hash(self, path: str, size: int, mtime_ns: int) -> str | None:
        row = self._con.execute(
            "SELECT hash FROM file_hashes WHERE path = ? AND size = ? AND mtime_ns = ?",
            (path, size, mtime_ns),
        ).fetchone()
        return row[0] if row else None

    def record_hash(self, path: str, size: int, mtime_ns: int, digest: str) -> None:
        with self._transaction() as con:
            con.execute(
                "INSERT OR REPLACE INTO file_hashes VALUES (?, ?, ?, ?)", (path, size, mtime_ns, digest)
            )

    # -- results ---------------------------------------------------------------------------
    def save_results(self, results: Results) -> None:
        """Replace the stored results with ``results``, in one transaction."""
        renders = results.renders.loc[:, list(RENDER_COLUMNS)]
        diversity = results.diversity.loc[:, list(DIVERSITY_COLUMNS)]
        checkpoints = results.checkpoints.loc[:, list(CHECKPOINT_COLUMNS)].copy()
        checkpoints["metadata"] = [json.dumps(dict(m), sort_keys=True) for m in checkpoints["metadata"]]
        with self._transaction() as con:
            for table, frame in (
                ("result_renders", renders),
                ("result_diversity", diversity),
                ("result_checkpoints", checkpoints),
            ):
                con.execute(f"DELETE FROM {table}")
                # By name: a table migrated from an older schema has its new columns last.
                names = ", ".join(frame.columns)
                marks = ",".join("?" * frame.shape[1])
                con.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", _sql_rows(frame))
            con.execute(
                "INSERT OR REPLACE INTO meta VALUES ('results_settings', ?)",
                (json.dumps(results.settings, sort_keys=True, default=str),),
            )

    def last_settings(self) -> dict[str, Any] | None:
        """The settings record of the last complete evaluation, or None (none, or unreadable:
        :meth:`load_results` is the one that says so)."""
        try:
            row = self._con.execute("SELECT value FROM meta WHERE key = 'results_settings'").fetchone()
            settings = json.loads(row[0]) if row is not None else None
        except (sqlite3.DatabaseError, ValueError):
            return None
        return settings if isinstance(settings, dict) else None

    def load_results(self) -> Results:
        """The last complete evaluation; ``ResultsError`` when there is none."""
        try:
            row = self._con.execute("SELECT value FROM meta WHERE key = 'results_settings'").fetchone()
            if row is None:
                raise ResultsError(
                    f"nothing has been evaluated in {self.state_dir}", hint="run `lorasel eval PATH` first"
                )
            settings = json.loads(row[0])
            renders = pd.read_sql_query("SELECT * FROM result_renders", self._con)
            diversity = pd.read_sql_query("SELECT * FROM result_diversity", self._con)
            checkpoints = pd.read_sql_query("SELECT * FROM result_checkpoints", self._con)
        except (sqlite3.DatabaseError, ValueError) as exc:
            raise ResultsError(
                f"results database {self.db_path} is unreadable ({exc})",
                hint="move it aside and run `lorasel eval PATH` again",
            ) from exc
        for col in RENDER_METRICS:
            if col not in renders:  # a schema-1 store opened read-only: not measured
                renders[col] = np.nan
        for name, frame, columns in (
            ("renders", renders, RENDER_COLUMNS),
            ("diversity", diversity, DIVERSITY_COLUMNS),
            ("checkpoints", checkpoints, CHECKPOINT_COLUMNS),
        ):
            missing = [c for c in columns if c not in frame]
            if missing:
                raise ResultsError(
                    f"results database {self.db_path} is unreadable (its {name} lack columns {missing})",
                    hint="move it aside and run `lorasel eval PATH` again",
                )
        for frame in (renders, checkpoints):
            for col in ("epoch", "step"):
                frame[col] = frame[col].astype("Int64")
        for col in ("strength", *RENDER_METRICS):
            renders[col] = renders[col].astype("float64")
        renders = renders.loc[:, list(RENDER_COLUMNS)]
        for col in ("seed_index", "seed"):
            renders[col] = renders[col].astype("int64")
        diversity["strength"] = diversity["strength"].astype("float64")
        diversity["diversity"] = diversity["diversity"].astype("float64")
        checkpoints["metadata"] = [json.loads(m) for m in checkpoints["metadata"]]
        return Results(renders=renders, diversity=diversity, checkpoints=checkpoints, settings=settings)


def _add_missing_columns(con: sqlite3.Connection, table: str, columns: Sequence[str]) -> None:
    """Bring a table written by an older schema up to date: its missing columns, added empty."""
    have = {row[1] for row in con.execute(f"PRAGMA table_info({table})")}
    for column in columns:
        if column not in have:
            con.execute(f"ALTER TABLE {table} ADD COLUMN {column}")


def _sql_rows(frame: pd.DataFrame) -> list[tuple]:
    """Rows with pandas' missing values as NULL and numpy scalars as Python ones."""
    rows = []
    for record in frame.itertuples(index=False, name=None):
        rows.append(tuple(_sql_value(v) for v in record))
    return rows


def _sql_value(value: Any) -> Any:
    if value is None or value is pd.NA:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value
