"""A remote job's log, live: the Container Apps log stream, parsed into the same metrics as local jobs.

The stream is read as `az containerapp job logs show --follow` does: POST .../getAuthToken, list
the execution's replicas, then GET `{eventStreamEndpoint host}/subscriptions/.../jobs/{job}/
executions/{exe}/replicas/{rep}/containers/{c}/logstream?follow=true&output=text` with that
token, read incrementally. Streams drop (idle timeouts, network, token expiry): the follower
reconnects with a tail and uses the lines' timestamps to drop what it already has; when the tail
no longer reaches back to the last line it had, the lines in between are a gap, filled from Log
Analytics (`ContainerAppConsoleLogs_CL`). Log Analytics is also the source for executions that
already finished. Every line goes to the job's log.txt; `[aitk-metric]` lines also become
metrics.jsonl records (core.metrics.parse_line), exactly as for a local job.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable

from ...core import follow, metrics
from ...core.jobs import JobStore

LOG_STREAM_API = "2023-11-02-preview"  # what the Azure CLI uses for getAuthToken and replicas
TAIL_LINES = 300  # the most the log stream replays on (re)connect
TS_RE = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d+)?(Z|[+-]\d{2}:?\d{2})?\s?(.*)$", re.S)
CRI_RE = re.compile(r"^(?:(?:stdout|stderr)\s+)?[FP]\s")
SYSTEM_RE = re.compile(r"^\s*(Connecting to the container|Successfully Connected to container|"
                       r"Connection to the container .* (?:closed|lost)|Disconnected from container)", re.I)


# -- lines --------------------------------------------------------------------------------------
def ts_key(ts: str | None) -> str | None:
    """A string that sorts like the instant (UTC, nanosecond padded), from an RFC 3339 timestamp."""
    if not ts:
        return None
    mo = TS_RE.match(ts.strip() + " ")
    if not mo:
        return None
    base, frac, tz = mo.group(1), (mo.group(2) or ".")[1:], mo.group(3) or "Z"
    t = dt.datetime.fromisoformat(base + ("+00:00" if tz == "Z" else tz if ":" in tz else tz[:3] + ":" + tz[3:]))
    t = t.astimezone(dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + "." + (frac + "0" * 9)[:9]


def key_to_datetime(key: str) -> dt.datetime:
    return dt.datetime.strptime(key[:26], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=dt.timezone.utc)


def parse_stream_line(raw: str) -> tuple[str | None, str, bool]:
    """(timestamp key or None, text, is a system line) of one log stream line (text or json format)."""
    raw = raw.rstrip("\r\n")
    if raw.startswith("{"):
        try:
            obj = json.loads(raw)
            text = str(obj.get("Log", obj.get("log", "")))
            text = CRI_RE.sub("", text, count=1)
            return ts_key(obj.get("TimeStamp") or obj.get("time")), text, bool(SYSTEM_RE.match(text))
        except ValueError:
            pass
    mo = TS_RE.match(raw)
    if mo:
        key = ts_key(mo.group(1) + (mo.group(2) or "") + (mo.group(3) or ""))
        text = mo.group(4)
        if text.startswith(" ") and SYSTEM_RE.match(text):
            return key, text.strip(), True
        text = CRI_RE.sub("", text, count=1)
        return key, text, bool(SYSTEM_RE.match(text))
    return None, raw, bool(SYSTEM_RE.match(raw))


# -- the job's files ----------------------------------------------------------------------------
class JobLog:
    """Appends to a job's log.txt and metrics.jsonl, from any thread; metrics are never duplicated."""

    def __init__(self, store: JobStore, job_id: str):
        self.store, self.job_id = store, job_id
        self.log_path = store.log_path(job_id)
        self.metrics_path = store.metrics_path(job_id)
        self.state_path = store.job_dir(job_id) / "azure-stream.json"
        self._lock = threading.Lock()
        self._seen_metrics = {json.dumps(m, sort_keys=True) for m in store.metrics(job_id)}
        self.console_lines = 0

    def note(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        self._write([f"[aitk] {stamp} {text}"])

    def lines(self, texts: list[str]) -> None:
        self.console_lines += len(texts)
        self._write(texts)

    def _write(self, texts: list[str]) -> None:
        if not texts:
            return
        records = []
        clean = []
        for t in texts:
            line = follow.clean(t)
            clean.append(line)
            rec = metrics.parse_line(line)
            if rec is not None:
                key = json.dumps(rec, sort_keys=True)
                if key not in self._seen_metrics:
                    self._seen_metrics.add(key)
                    records.append(rec)
        with self._lock:
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write("".join(line + "\n" for line in clean))
            if records:
                with open(self.metrics_path, "a", encoding="utf-8") as f:
                    f.write("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))

    def load_state(self) -> dict:
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}

    def save_state(self, state: dict) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state_path)


# -- Log Analytics ------------------------------------------------------------------------------
def query_logs(ctx, workspace_id: str, execution: str, *, after: str | None = None, before: str | None = None,
               since: dt.datetime | None = None) -> list[tuple[str, str]]:
    """(timestamp key, text) of an execution's console lines in Log Analytics, oldest first."""
    from azure.monitor.query import LogsQueryStatus

    if not re.fullmatch(r"[a-z0-9-]+", execution):
        raise ValueError(f"bad execution name {execution!r}")
    where = [f"ContainerGroupName_s startswith '{execution}'"]
    if after:
        where.append(f"TimeGenerated > datetime({key_to_datetime(after).isoformat().replace('+00:00', 'Z')})")
    if before:
        where.append(f"TimeGenerated < datetime({key_to_datetime(before).isoformat().replace('+00:00', 'Z')})")
    query = ("ContainerAppConsoleLogs_CL | where " + " and ".join(where)
             + " | project TimeGenerated, Log_s | order by TimeGenerated asc")
    start = since or (key_to_datetime(after) - dt.timedelta(minutes=5) if after else None)
    timespan = (start, dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=5)) if start else dt.timedelta(days=30)
    from azure.core.exceptions import HttpResponseError

    try:
        result = ctx.logs_query.query_workspace(workspace_id, query, timespan=timespan)
    except HttpResponseError as e:
        if "Failed to resolve table" in str(e):  # a new workspace: no table until its first log arrives
            return []
        raise
    tables = result.tables if result.status == LogsQueryStatus.SUCCESS else result.partial_data
    out = []
    for table in tables or []:
        names = [c if isinstance(c, str) else getattr(c, "name", str(c)) for c in table.columns]
        ti, li = names.index("TimeGenerated"), names.index("Log_s")
        for row in table.rows:
            t = row[ti]
            key = ts_key(t.isoformat().replace("+00:00", "Z")) if isinstance(t, dt.datetime) else ts_key(str(t))
            out.append((key, "" if row[li] is None else str(row[li]).rstrip("\n")))
    return out


# -- the live stream ----------------------------------------------------------------------------
class StreamFollower:
    """Follow one execution's console log into a JobLog until the execution is over.

    `finished()` says whether the execution has ended (the watcher polls it). Reconnects with
    backoff; fills gaps from Log Analytics (`workspace_id`) when the replay cannot.
    """

    def __init__(self, ctx, cfg, execution: str, log: JobLog, *, finished: Callable[[], bool],
                 workspace_id: str | None = None, stop: threading.Event | None = None,
                 note: Callable[[str], None] | None = None, started: dt.datetime | None = None):
        self.ctx, self.cfg, self.execution, self.log = ctx, cfg, execution, log
        self.finished = finished
        self.workspace_id = workspace_id
        self.stop = stop or threading.Event()
        self.note = note or log.note
        state = log.load_state()
        self.last_key: str | None = state.get("last_key")
        self.recent: deque[str] = deque(state.get("recent") or [], maxlen=TAIL_LINES)
        self.at_last: set[str] = set(state.get("at_last") or [])  # texts already had at last_key
        self.pending_gaps: list[list[str | None]] = state.get("pending_gaps") or []
        self.connections = 0
        self.gaps_filled = 0
        self._token: tuple[str, float] | None = None
        self._check_overlap = False
        self._base: str | None = None
        self._saved_at = 0.0
        self._first_connection = False
        self.complete = False  # the stream delivered everything up to the container's end
        self._last_clean = False
        # Lines before the first connection's replay: checked against Log Analytics from here.
        self.started_key = ts_key(started.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")) \
            if isinstance(started, dt.datetime) else None

    # -- ARM bits --
    def _path(self) -> str:
        c = self.cfg
        return f"/subscriptions/{c.subscription_id}/resourceGroups/{c.resource_group}/providers/Microsoft.App/jobs/{c.job}"

    def _auth_token(self) -> str:
        if self._token and self._token[1] > time.time() + 60:
            return self._token[0]
        data = self.ctx.arm_request("POST", self._path() + "/getAuthToken", LOG_STREAM_API)
        props = data.get("properties") or {}
        expires = time.time() + 1800
        if props.get("expires"):
            try:
                expires = dt.datetime.fromisoformat(props["expires"].replace("Z", "+00:00")).timestamp()
            except ValueError:
                pass
        self._token = (props["token"], expires)
        return props["token"]

    def _stream_base(self) -> str:
        if self._base is None:
            job = self.ctx.apps.jobs.get(self.cfg.resource_group, self.cfg.job)
            endpoint = job.properties.event_stream_endpoint
            self._base = endpoint[: endpoint.index("/subscriptions/")]
        return self._base

    def _replica(self) -> tuple[str, str] | None:
        data = self.ctx.arm_request("GET", self._path() + f"/executions/{self.execution}/replicas", LOG_STREAM_API)
        for rep in data.get("value") or []:
            containers = (rep.get("properties") or {}).get("containers") or []
            if containers:
                return rep["name"], containers[0]["name"]
        return None

    # -- lines --
    def _save(self) -> None:
        self._saved_at = time.monotonic()
        self.log.save_state({"last_key": self.last_key, "recent": list(self.recent)[-20:],
                             "at_last": sorted(self.at_last)[:20], "pending_gaps": self.pending_gaps})

    def _accept(self, key: str | None, text: str) -> bool:
        """True if the line is new (not a replay of what we have)."""
        if key is None:
            # No timestamp (an unknown format): only a replay right after a reconnect is dropped.
            if self._check_overlap and text in self.recent:
                return False
            return True
        if self.last_key is not None:
            if key < self.last_key or (key == self.last_key and text in self.at_last):
                return False
        return True

    def _emit(self, key: str | None, text: str) -> None:
        if key is not None:
            if key != self.last_key:
                self.last_key, self.at_last = key, set()
            self.at_last.add(text)
        self.recent.append(text)
        self.log.lines([text])
        self._save()  # after every line: a restarted watcher resumes exactly here (a small file)

    def _handle(self, raw: str) -> None:
        key, text, system = parse_stream_line(raw)
        if system:
            return
        if self._check_overlap and key is not None:
            self._check_overlap = False
            if self.last_key is not None and key > self.last_key:
                self._fill_gap(self.last_key, key, first_after=text)
        elif self._first_connection and key is not None:
            self._first_connection = False
            if self.started_key and key > self.started_key:
                self._fill_gap(self.started_key, key, first_after=text, soft=True)
        if self._accept(key, text):
            self._check_overlap = False
            self._emit(key, text)

    def _fill_gap(self, after: str, before: str, first_after: str | None = None, soft: bool = False) -> None:
        """The replay did not reach back to our last line: fetch what lies between from Log Analytics.

        `soft`: the window before the first connection, usually empty (nothing missed): silent then.
        """
        rows = []
        if self.workspace_id:
            try:
                rows = query_logs(self.ctx, self.workspace_id, self.execution, after=after, before=before)
            except Exception as e:  # noqa: BLE001 - a gap is reported, never fatal
                self.note(f"could not query Log Analytics for the gap: {e}")
        rows = [(k, t) for k, t in rows if t not in self.at_last and t != first_after]
        if rows:
            self.note(f"{'log stream connected late' if soft else 'log stream reconnected after a gap'}: "
                      f"{len(rows)} earlier lines recovered from Log Analytics")
            for k, t in rows:
                self._emit(k, t)
            self.gaps_filled += 1
        elif soft:
            self.pending_gaps.append([after, before, "soft"])
        else:
            self.note("log stream reconnected; lines printed meanwhile may be missing (Log Analytics has not "
                      "ingested them yet; they are fetched again when the job ends)")
            self.pending_gaps.append([after, before])
        self._save()

    def fill_pending(self) -> int:
        """After the execution ended: recover pending gaps (appended, marked as such)."""
        if not self.pending_gaps or not self.workspace_id:
            return 0
        got = 0
        for gap in list(self.pending_gaps):
            after, before = gap[0], gap[1]
            rows = [(k, t) for k, t in query_logs(self.ctx, self.workspace_id, self.execution, after=after,
                                                  before=before) if t not in self.recent]
            if rows:
                self.log.note(f"lines from Log Analytics for the gap between {after} and {before}:")
                self.log.lines([t for _, t in rows])
                got += len(rows)
            if rows or len(gap) > 2:  # a soft gap still empty once the execution ended: nothing was missed
                self.pending_gaps.remove(gap)
        self._save()
        return got

    def catch_up(self) -> int:
        """After the execution ended: lines the stream never delivered (it dropped at the end, or never
        connected), from Log Analytics. Returns how many were added."""
        if self.complete or not self.workspace_id:
            return 0
        rows = query_logs(self.ctx, self.workspace_id, self.execution, after=self.last_key)
        rows = [(k, t) for k, t in rows if self._accept(k, t)]
        if rows:
            self.log.note(("the log stream ended early" if self.connections else
                           "the execution ended before its log could be streamed")
                          + f": {len(rows)} lines from Log Analytics")
            for k, t in rows:
                self._emit(k, t)
            self.complete = True
            self._save()
        return len(rows)

    def catch_up_from(self, full_log: list[str]) -> int:
        """Last resort (Log Analytics lagging): the rest of the container's own log file after our last line."""
        if self.complete or not full_log:
            return 0
        start = 0
        if self.recent:
            last = self.recent[-1]
            idx = [i for i, t in enumerate(full_log) if t == last]
            if not idx:
                return 0
            start = idx[-1] + 1
        rest = full_log[start:]
        if rest:
            self.log.note(f"{len(rest)} lines the log stream missed, from the container's log file on the share")
            self.log.lines(rest)
            self.complete = True
        return len(rest)

    # -- the loop --
    def run(self) -> None:
        import requests

        delay = 1.0
        verify = self.ctx.endpoints.verify
        while not self.stop.is_set():
            try:
                rep = self._replica()
                if rep is None:
                    if self.finished():
                        self.complete = self._last_clean
                        return
                    self.stop.wait(min(2.0, self.ctx.endpoints.poll_s))
                    continue
                replica, container = rep
                url = (f"{self._stream_base()}/subscriptions/{self.cfg.subscription_id}/resourceGroups/"
                       f"{self.cfg.resource_group}/jobs/{self.cfg.job}/executions/{self.execution}/replicas/"
                       f"{replica}/containers/{container}/logstream")
                resp = requests.get(url, params={"follow": "true", "output": "text", "tailLines": TAIL_LINES},
                                    headers={"Authorization": f"Bearer {self._auth_token()}"}, stream=True,
                                    timeout=(15, 300), verify=verify)
                if resp.status_code == 401:
                    self._token = None
                    resp.close()
                    continue
                if resp.status_code in (400, 404):
                    resp.close()
                    if self.finished():
                        self.complete = self._last_clean
                        return
                    self.stop.wait(min(2.0, self.ctx.endpoints.poll_s))
                    continue
                resp.raise_for_status()
                self.connections += 1
                self._check_overlap = self.last_key is not None or bool(self.recent)
                self._first_connection = not self._check_overlap
                self._last_clean = False
                clean_end = self._read(resp)
                self._last_clean = clean_end
                self._save()
                delay = 1.0
                if clean_end:
                    # The container's output ended; the execution status may lag a moment.
                    for _ in range(20):
                        if self.finished() or self.stop.is_set():
                            self.complete = self.finished()
                            return
                        self.stop.wait(min(0.5, self.ctx.endpoints.poll_s))
            except Exception as e:  # noqa: BLE001 - any drop: say so, back off, reconnect
                if self.stop.is_set():
                    return
                self._save()
                reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
                self.note(f"log stream dropped ({type(e).__name__}: {reason}); reconnecting in {delay:.0f} s")
                self._last_clean = False
                self.stop.wait(delay if self.ctx.endpoints.poll_s >= 1 else min(delay, 0.2))
                delay = min(delay * 2, 30.0)
                if self.finished() and delay > 8:
                    return

    def _read(self, resp) -> bool:
        """Read until the server ends the stream (True) or it breaks (raises)."""
        buf = b""
        raw = resp.raw
        try:
            while not self.stop.is_set():
                chunk = raw.read1(65536) if hasattr(raw, "read1") else raw.read(4096)
                if not chunk:
                    break
                buf += chunk
                *complete, buf = buf.split(b"\n")
                for line in complete:
                    self._handle(line.decode("utf-8", errors="replace"))
        finally:
            resp.close()
        if buf.strip():
            self._handle(buf.decode("utf-8", errors="replace"))
        return True
