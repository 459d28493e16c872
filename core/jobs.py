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
# How long a job that has finished keeps trying to record that (a held lock, a full disk) before
# leaving it to the outcome file, which the next reconcile records.
FINAL_WRITE_S = float(os.environ.get("AITK_FINAL_WRITE_S", "1800"))
DISK_FULL_WRITE_S = 60.0
OUTCOME_FILE = "outcome.json"
OUTCOME_RESERVE = 16 << 10  # bytes written at start, overwritten in place at the end
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
        if paths.is_disk_full(e, self.root):
            err = AitkError(f"job database {self.db_path}: {paths.disk_full_message(self.root)}",
                            "free space on that disk and run it again; the job history is intact")
            err.disk_full = True
        elif "locked" in text or "busy" in text:
            err = AitkError(f"job database {self.db_path} is locked by another process",
                            "wait for it to finish, or find the process holding it (fuser)")
        else:
            return AitkError(f"job database {self.db_path} is unreadable: {text}",
                             "it may be corrupted; move it aside to start a fresh history (nothing was changed)")
        err.retryable = True  # a lock is released, a disk gets room: worth trying again
        return err

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
        try:
            self.job_dir(rec.id).mkdir(parents=True)
        except OSError as e:
            if paths.is_disk_full(e):
                raise AitkError(paths.disk_full_message(self.jobs_root), "free space on that disk and retry") from None
            raise
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

    def finish(self, job_id: str, *, bound_s: float | None = None, **fields) -> bool:
        """Record how a running job ended. Retried with backoff while the database is locked or
        the disk is full, for up to `bound_s` (FINAL_WRITE_S): a finished job's result must not be
        lost because another process held the lock past the timeout."""
        started = time.monotonic()
        deadline = started + (FINAL_WRITE_S if bound_s is None else bound_s)
        delay = 0.1
        while True:
            try:
                return self.update(job_id, only_if=(RUNNING,), **fields)
            except AitkError as e:
                if getattr(e, "disk_full", False):
                    # A full disk may stay full: after a minute the outcome file carries the end.
                    deadline = min(deadline, started + DISK_FULL_WRITE_S)
                if not getattr(e, "retryable", False) or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 10.0)

    # -- the outcome file: a job's end, kept in its folder until the database has it ---------
    def outcome_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / OUTCOME_FILE

    def reserve_outcome(self, job_id: str) -> None:
        """Claim the outcome file's room when the job starts, so its end can be written even once
        the job has filled the disk (an overwrite in place needs no new blocks)."""
        path = self.outcome_path(job_id)
        with open(path, "wb") as f:
            f.write(b" " * OUTCOME_RESERVE)
            f.flush()
            os.fsync(f.fileno())

    def write_outcome(self, job_id: str, fields: dict) -> bool:
        data = json.dumps(fields).encode()
        path = self.outcome_path(job_id)
        try:
            with open(path, "r+b" if path.exists() else "wb") as f:
                f.write(data + b" " * max(0, OUTCOME_RESERVE - len(data)))
                f.flush()
                os.fsync(f.fileno())
            return True
        except OSError:
            return False

    def read_outcome(self, job_id: str) -> dict | None:
        try:
            data = json.loads(self.outcome_path(job_id).read_bytes() or b"null")
        except (OSError, ValueError):
            return None  # missing, or still the blank reservation: the job never got to its end
        return data if isinstance(data, dict) and data.get("status") in FINAL else None

    def clear_outcome(self, job_id: str) -> None:
        self.outcome_path(job_id).unlink(missing_ok=True)

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
                    # `started` is the claim time until the job process records its own: the
                    # start-up grace of reconcile counts from here, not from when it was queued.
                    conn.execute("UPDATE jobs SET status = ?, started = ? WHERE id = ?",
                                 (STARTING, time.time(), row["id"]))
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


def die_with_parent():
    """A `preexec_fn` that makes a child process get SIGKILL when the job process that started it
    dies, even by `kill -9` (Linux `PR_SET_PDEATHSIG`): an orphaned model builder would otherwise
    run on, reparented to init, writing a model-sized folder nobody cleans. None elsewhere."""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()
    libc = ctypes.CDLL(None, use_errno=True)

    def arm() -> None:
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the line above
            os._exit(137)

    return arm
