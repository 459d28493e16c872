"""The engine never imports the UI; the UI's start-up path never imports the heavy ML stack."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

HEAVY = ("torch", "transformers", "peft", "olive", "azure", "datasets", "onnx", "bitsandbytes", "accelerate")


def modules_after(code: str) -> set[str]:
    """Top-level modules loaded after `code`, for a first-time user: empty data and config dirs
    (the session's hold other tests' running Azure jobs, whose reconcile rightly loads the SDK)."""
    with tempfile.TemporaryDirectory(prefix="aitk-hygiene-") as fresh:
        env = {**os.environ, **{f"AITK_{d}_DIR": os.path.join(fresh, d.lower()) for d in ("DATA", "CONFIG", "CACHE")}}
        out = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint('\\n'.join(sys.modules))"],
                             capture_output=True, text=True, timeout=120, check=True, env=env).stdout
    return {m.split(".")[0] for m in out.split()}


# Every engine module, not just the packages: the UI must be optional for scripts and jobs.
ENGINE = (
    "import pkgutil, importlib, aitk.core, aitk.providers\n"
    "for pkg in (aitk.core, aitk.providers):\n"
    "    for m in pkgutil.iter_modules(pkg.__path__):\n"
    "        importlib.import_module(f'{pkg.__name__}.{m.name}')\n"
)


def test_core_does_not_import_textual():
    assert "textual" not in modules_after(ENGINE)


def test_core_modules_import_light():
    """Importing the engine (what the app does at start) loads none of the heavy libraries."""
    loaded = modules_after(ENGINE)
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_app_start_does_not_import_ml_stack():
    code = (
        "import asyncio\n"
        "from aitk.tui.app import AitkApp\n"
        "async def main():\n"
        "    app = AitkApp()\n"
        "    async with app.run_test(size=(100, 30)) as pilot:\n"
        "        await pilot.pause(0.5)\n"
        "asyncio.run(main())\n"
    )
    loaded = modules_after(code)
    assert "textual" in loaded
    assert not loaded & set(HEAVY), loaded & set(HEAVY)
