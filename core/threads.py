"""How many threads an ONNX Runtime session should use here: the machine's physical cores.

ORT's default intra-op pool (one thread per logical CPU, plus spinning) leaves ~1.75x of int4
decode on the table at Qwen2.5-0.5B's shape on 2 cores; two threads on two physical cores gave
53-61 tok/s instead of 31-35. Hyperthreads share a core's vector units, so they add contention,
not speed: count cores, not CPUs. A container's CPU quota (cgroup v2 `cpu.max`) caps it too.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path


def _cgroup_limit() -> int | None:
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, math.ceil(int(quota) / int(period)))
    except (ValueError, ZeroDivisionError):
        return None


@functools.cache
def physical_cores() -> int:
    """Physical cores this process may run on (its CPU affinity, /proc/cpuinfo's core ids),
    capped by a container quota; the logical CPU count where /proc/cpuinfo says nothing."""
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        allowed = set(range(os.cpu_count() or 1))
    cores: set[tuple[str, str]] = set()
    try:
        cpu, phys = None, "0"
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "processor":
                cpu, phys = int(value), "0"
            elif key == "physical id":
                phys = value
            elif key == "core id" and cpu in allowed:
                cores.add((phys, value))
    except (OSError, ValueError):
        cores = set()
    count = len(cores) or len(allowed) or 1
    limit = _cgroup_limit()
    return min(count, limit) if limit else count


def session_threads(genai_config: dict) -> int | None:
    """The decoder's `intra_op_num_threads` in a genai_config.json (None when not set)."""
    try:
        value = genai_config["model"]["decoder"]["session_options"].get("intra_op_num_threads")
    except (KeyError, TypeError, AttributeError):
        return None
    return value if isinstance(value, int) and value > 0 else None


def set_session_threads(genai_config: dict, threads: int) -> dict:
    genai_config["model"]["decoder"].setdefault("session_options", {})["intra_op_num_threads"] = threads
    return genai_config
