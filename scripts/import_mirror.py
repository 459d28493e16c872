"""Run import-linter (and grimp) over the installed `aitk` namespace.

The repository keeps `core/`, `providers/`, `cli/`, `tui/` and `themes/` at its root and maps them
to `aitk.*` through setuptools' package-dir; grimp walks a package's own folder only, so it sees no
`aitk.core`. This copies the sources into a temporary `aitk/` tree laid out as installed and runs
the contracts in pyproject.toml (`[tool.importlinter]`) over that.

    .venv/bin/python scripts/import_mirror.py          # lint-imports, exit code as lint-imports'
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("core", "providers", "cli", "tui", "themes")


def build_mirror(dest: Path) -> Path:
    """`dest/aitk/...` with every .py file of the namespace where the installed package has it."""
    pkg = dest / "aitk"
    pkg.mkdir(parents=True)
    shutil.copy2(ROOT / "aitk" / "__init__.py", pkg / "__init__.py")
    for name in SUBPACKAGES:
        for src in (ROOT / name).rglob("*.py"):
            target = pkg / name / src.relative_to(ROOT / name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    return dest


def module_edges() -> dict[str, list[str]]:
    """Every module of the namespace and the modules of ours it imports (module-level or inside a
    function), by grimp, in a child process: the mirror must not replace the `aitk` modules the
    caller has already imported."""
    with tempfile.TemporaryDirectory(prefix="aitk-imports-") as tmp:
        build_mirror(Path(tmp))
        code = ("import grimp, json\n"
                "g = grimp.build_graph('aitk', cache_dir=None)\n"
                "print(json.dumps({m: sorted(g.find_modules_directly_imported_by(m)) for m in g.modules}))")
        out = subprocess.run([sys.executable, "-c", code], cwd=tmp, env={**os.environ, "PYTHONPATH": tmp},
                             capture_output=True, text=True, check=True, timeout=300).stdout
    import json

    return json.loads(out)


def lint() -> int:
    with tempfile.TemporaryDirectory(prefix="aitk-imports-") as tmp:
        build_mirror(Path(tmp))
        exe = Path(sys.executable).with_name("lint-imports")
        env = {**os.environ, "PYTHONPATH": tmp}
        return subprocess.run([str(exe), "--no-cache", str(ROOT / "pyproject.toml")], cwd=tmp, env=env).returncode


if __name__ == "__main__":
    sys.exit(lint())
