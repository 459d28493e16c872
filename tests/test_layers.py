"""Layer rules and import cycles, over every import (module-level or deferred inside a function).

The contracts live in pyproject.toml ([tool.importlinter]); scripts/import_mirror.py runs them over
the sources laid out as installed. A file-level cycle is a pair (or ring) of modules that import
each other, even lazily: it hides an order dependency and usually a misplaced piece of code.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import import_mirror  # noqa: E402

pytest.importorskip("grimp")


def test_lint_imports_contracts_hold():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "import_mirror.py")], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    ours = sorted(m for m in graph if m.startswith("aitk"))
    edges = {m: sorted(d for d in graph[m] if d.startswith("aitk") and d != m and not m.startswith(d + "."))
             for m in ours}
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in ours:
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = counter[0]; counter[0] += 1; stack.append(root); on.add(root)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter[0]; counter[0] += 1; stack.append(nxt); on.add(nxt)
                    work.append((nxt, iter(edges.get(nxt, ()))))
                elif nxt in on:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop(); on.discard(m); comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_no_import_cycles_between_files():
    # A package's __init__ importing its own submodules is not a cycle between files of the code;
    # edges from a module to its own parent package are left out above for the same reason.
    cycles = _cycles(import_mirror.module_edges())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)
