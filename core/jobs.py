"""The job store: SQLite (WAL) in the user data dir, plus one folder per job.

A job's folder holds `log.txt` (raw output), `metrics.jsonl` and its outputs. The database holds
the record: what, where, state, times, exit code, a one-line error. Many processes (app, CLI,
job processes) read and write it at once; SQLite's locking makes every write whole, and
`PRAGMA user_version` versions the schema.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import paths
from .errors import AitkError

QUEUED, STARTING, RUNNING = "queued", "starting", "running"
SUCCEEDED, FAILED, CANCELLED, INTERRUPTED, SKIPPED = "succeeded", "failed", "cancelled", "interrupted", "skipped"
ACTIVE = (QUEUED, STARTING, RUNNING)
FINAL = (SUCCEEDED, FAILED, CANCELLED, INTERRUPTED, SKIPPED)
# How long a writer waits for another process's lock before giving up with a clear error.
DB_TIMEOUT_S = float(os.environ.get("AITK_DB_TIMEOUT", "10"))
KINDS = ("finetune", "export", "evaluate", "download", "remote")

MIGRATIONS = [
    """
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        project TEXT,
        provider TEXT NOT NULL DEFAULT 'local',
        device TEXT,
        status TEXT NOT NULL,
        created REAL NOT NULL,
        started REAL,
        finished REAL,
        exit_code INTEGER,
        error TEXT,
        parent TEXT REFERENCES jobs(id),
        pid INTEGER,
        params TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX jobs_status ON jobs(status);
    CREATE INDEX jobs_created ON jobs(created);
    """,
    # 2: what a job found (evaluate: base/tuned loss and perplexity), as JSON.
    "ALTER TABLE jobs ADD COLUMN result TEXT",
]


@dataclass
class JobRecord:
    id: str
    kind: str
    status: str
    created: float
    project: str | None = None
    provider: str = "local"
    device: str | None = None
    started: float | None = None
    finished: float | None = None
    exit_code: int | None = None
    error: str | None = None
    parent: str | None = None
    pid: int | None = None
    params: dict = field(default_factory=dict)
    result: dict | None = None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL

    def to_dict(self) -> dict:
        return asdict(self)


COLUMNS = [f.name for f in JobRecord.__dataclass_fields__.values()]


class JobStore:
    def __init__(self, root: Path | None = None):
        self.root = root or paths.data_dir()
        self.root.mkdir(parents=True, exist_ok=True)
        self.db_path = self.root / "jobs.db"
        self.jobs_root = self.root / "jobs"
        self.jobs_root.mkdir(exist_ok=True)
        self._migrate()

    # -- connection ---------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.db_path, timeout=DB_TIMEOUT_S, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout={int(DB_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.row_factory = sqlite3.Row
            return conn
        except sqlite3.DatabaseError as e:
            raise self._db_error(e) from None

    def _db_error(self, e: Exception) -> AitkError:
        text = str(e)
        if "locked" in text or "busy" in text:
            return AitkError(f"job database {self.db_path} is locked by another process",
                             "wait for it to finish, or find the process holding it (fuser)")
        return AitkError(f"job database {self.db_path} is unreadable: {text}",
                         "it may be corrupted; move it aside to start a fresh history (nothing was changed)")

    def _exec(self, sql: str, args: tuple = (), *, many: bool = False):
        conn = self._connect()
        try:
            cur = conn.executemany(sql, args) if many else conn.execute(sql, args)
            return cur.fetchall()
        except sqlite3.DatabaseError as e:
            raise self._db_error(e) from None
        finally:
            conn.close()

    @contextlib.contextmanager
    def _transaction(self):
        """BEGIN IMMEDIATE ... COMMIT: one writer at a time; errors roll back as an AitkError."""
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            conn.execute("COMMIT")
        except sqlite3.DatabaseError as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise self._db_error(e) from None
        finally:
            conn.close()

    def _migrate(self) -> None:
        version = self._exec("PRAGMA user_version")[0][0]
        if version > len(MIGRATIONS):
            raise AitkError(f"job database {self.db_path} was written by a newer aitk (schema {version})",
                            "upgrade aitk")
        if version == len(MIGRATIONS):
            return
        with self._transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]  # another process may have won
            for i in range(version, len(MIGRATIONS)):
                for stmt in filter(str.strip, MIGRATIONS[i].split(";")):
                    conn.execute(stmt)
            conn.execute(f"PRAGMA user_version={len(MIGRATIONS)}")

    # -- records ------------------------------------------------------------------------------
    @staticmethod
    def _row(row: sqlite3.Row) -> JobRecord:
        data = dict(row)
        data["params"] = json.loads(data["params"] or "{}")
        data["result"] = json.loads(data["result"]) if data.get("result") else None
        return JobRecord(**data)

    def create(self, kind: str, *, project: str | None = None, provider: str = "local",
               device: str | None = None, parent: str | None = None, params: dict | None = None) -> JobRecord:
        if kind not in KINDS:
            raise AitkError(f"unknown job kind {kind!r}", f"one of: {', '.join(KINDS)}")
        rec = JobRecord(id=time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6], kind=kind, status=QUEUED,
                        created=time.time(), project=project, provider=provider, device=device,
                        parent=parent, params=params or {})
        self.job_dir(rec.id).mkdir(parents=True)
        values = {**rec.to_dict(), "params": json.dumps(rec.params), "result": None}
        self._exec(f"INSERT INTO jobs ({','.join(COLUMNS)}) VALUES ({','.join('?' * len(COLUMNS))})",
                   tuple(values[c] for c in COLUMNS))
        return rec

    def get(self, job_id: str) -> JobRecord:
        rows = self._exec("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            rows = self._exec("SELECT * FROM jobs WHERE id LIKE ? ORDER BY created DESC", (f"%{job_id}%",))
            if len(rows) != 1:
                raise AitkError(f"no job {job_id!r}" if not rows else f"{job_id!r} matches {len(rows)} jobs",
                                "see `aitk jobs list` for ids")
        return self._row(rows[0])

    def list(self, *, status: tuple[str, ...] | None = None, project: str | None = None,
             limit: int | None = None) -> list[JobRecord]:
        sql, args = "SELECT * FROM jobs WHERE 1=1", []
        if status:
            sql += f" AND status IN ({','.join('?' * len(status))})"
            args += list(status)
        if project:
            sql += " AND project = ?"
            args.append(project)
        sql += " ORDER BY created DESC, id DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [self._row(r) for r in self._exec(sql, tuple(args))]

    def update(self, job_id: str, *, only_if: tuple[str, ...] | None = None, **fields) -> bool:
        """Set fields; with `only_if`, only while the status is one of those (a compare-and-set)."""
        bad = set(fields) - set(COLUMNS)
        if bad:
            raise ValueError(f"unknown job fields {bad}")
        for key in ("params", "result"):
            if key in fields and fields[key] is not None:
                fields[key] = json.dumps(fields[key])
        sql = f"UPDATE jobs SET {', '.join(f'{k} = ?' for k in fields)} WHERE id = ?"
        args = [*fields.values(), job_id]
        if only_if:
            sql += f" AND status IN ({','.join('?' * len(only_if))})"
            args += list(only_if)
        conn = self._connect()
        try:
            return conn.execute(sql, args).rowcount > 0
        except sqlite3.DatabaseError as e:
            raise self._db_error(e) from None
        finally:
            conn.close()

    def claim_next(self, slots: int) -> list[str]:
        """Atomically move the queued local jobs that may start now to `starting`.

        One transaction (BEGIN IMMEDIATE), so two processes scheduling at once never start the
        same job twice or overfill the slots. A job whose parent ended badly is skipped.
        """
        claimed: list[str] = []
        with self._transaction() as conn:
            busy = conn.execute("SELECT COUNT(*) FROM jobs WHERE provider = 'local' AND status IN (?, ?)",
                                (STARTING, RUNNING)).fetchone()[0]
            queued = conn.execute(
                "SELECT j.id, j.parent, p.status AS parent_status FROM jobs j LEFT JOIN jobs p ON p.id = j.parent"
                " WHERE j.provider = 'local' AND j.status = ? ORDER BY j.created, j.id", (QUEUED,)).fetchall()
            for row in queued:
                if row["parent"] and row["parent_status"] in FINAL and row["parent_status"] != SUCCEEDED:
                    conn.execute("UPDATE jobs SET status = ?, finished = ?, error = ? WHERE id = ?",
                                 (SKIPPED, time.time(), f"parent job {row['parent']} {row['parent_status']}",
                                  row["id"]))
                elif (not row["parent"] or row["parent_status"] == SUCCEEDED) and busy < slots:
                    conn.execute("UPDATE jobs SET status = ? WHERE id = ?", (STARTING, row["id"]))
                    claimed.append(row["id"])
                    busy += 1
        return claimed

    def delete(self, job_id: str) -> None:
        import shutil

        self._exec("DELETE FROM jobs WHERE id = ?", (job_id,))
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    # -- files --------------------------------------------------------------------------------
    def job_dir(self, job_id: str) -> Path:
        return self.jobs_root / job_id

    def log_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "log.txt"

    def metrics_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "metrics.jsonl"

    def metrics(self, job_id: str) -> list[dict]:
        path = self.metrics_path(job_id)
        if not path.exists():
            return []
        out = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a line being written right now
        return out


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not running.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True
