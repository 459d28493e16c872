"""Regenerate the README's pictures of aitk-tui: docs/screenshots/*.png, taken from the real app.

    .venv/bin/python scripts/screenshots.py [--size 120x36] [--out docs/screenshots]

The app runs headless (App.run_test) on the same fixtures as the tests (two projects, a fine-tune
running at 62 %, a chat with canned answers; nothing trains), saves each screen with
App.save_screenshot() as SVG, and converts it with `rsvg-convert` (Debian: librsvg2-bin).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from textual.widgets import Select

from aitk.tui import testing
from aitk.tui.testing import until

ROOT = Path(__file__).resolve().parent.parent


async def shoot(size: tuple[int, int], svg_dir: Path) -> list[Path]:
    import aitk.core.server

    aitk.core.server.open_export = lambda model_dir: testing.FakeEngine()  # no model needed for pictures
    app = testing.fixture_app(start_pane="projects")
    app.animation_level = "none"
    saved: list[Path] = []

    async def save(pilot, name: str) -> None:
        for widget in app.screen.query("Input, TextArea"):
            widget.cursor_blink = False
        await pilot.pause()
        await pilot.wait_for_scheduled_animations()
        await pilot.pause(0.2)
        app.save_screenshot(f"{name}.svg", str(svg_dir))
        saved.append(svg_dir / f"{name}.svg")

    async def pane_ready(pilot, name, condition=lambda p: True):
        await until(pilot, lambda: app.pane(name) is not None and app.pane(name).ready and condition(app.pane(name))
                    and app.last_update is not None, timeout=20, what=name)

    async with app.run_test(size=size) as pilot:
        await pane_ready(pilot, "projects", lambda p: p.selected is not None)
        await save(pilot, "projects")
        await pilot.press("f1")
        await pane_ready(pilot, "catalog", lambda p: p.catalog is not None and p.selected)
        catalog = app.pane("catalog")
        catalog.query_one("DataTable").move_cursor(row=list(catalog.rows).index("phi-3-mini-4k"))
        await until(pilot, lambda: catalog.selected == "phi-3-mini-4k", what="phi-3")
        await save(pilot, "catalog")
        await pilot.press("f3")
        await pane_ready(pilot, "jobs", lambda p: p.selected and len(p.query_one("LossChart").train) == 37)
        await save(pilot, "jobs")
        await pilot.press("f4")
        await pane_ready(pilot, "chat", lambda p: p.query_one("#chat-model", Select).value is not Select.NULL)
        chat = app.pane("chat")
        await until(pilot, lambda: "model ready" in testing.text_of(chat.query_one("#chat-status")), what="model")
        chat.query_one("#chat-mode", Select).value = "both"
        await pilot.pause()
        chat.send("What colour is a Touxkru bird?")
        await until(pilot, lambda: not chat.generating and chat.conversation.turns, what="answers")
        await save(pilot, "chat")
        await pilot.press("f2", "ctrl+n")
        for step in range(3):
            await until(pilot, lambda: getattr(app.screen, "index", -1) == step, timeout=20, what=f"step {step}")
            await pilot.press("ctrl+n")
        await until(pilot, lambda: getattr(app.screen, "index", -1) == 3, timeout=20, what="training step")
        await save(pilot, "wizard-training")
        await pilot.press("ctrl+r")
        await until(pilot, lambda: app.screen.index == 2 and app.screen.step.problem is None, timeout=20,
                    what="dataset step")
        await save(pilot, "wizard-dataset")
        await pilot.press("escape")
        await pilot.press("y")
        await pilot.press("question_mark")
        await save(pilot, "help")
    return saved


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="120x36", help="terminal size, COLSxROWS (default 120x36)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    args = ap.parse_args()
    if not shutil.which("rsvg-convert"):
        print("rsvg-convert not found: apt-get install -y librsvg2-bin", file=sys.stderr)
        return 2
    cols, rows = (int(x) for x in args.size.lower().split("x"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="aitk-shots-") as tmp:
        world = testing.World(Path(tmp) / "aitk")
        try:
            svgs = asyncio.run(shoot((cols, rows), Path(tmp)))
        finally:
            world.close()
        for svg in svgs:
            png = out / f"{svg.stem}.png"
            subprocess.run(["rsvg-convert", "--zoom", "1.0", str(svg), "-o", str(png)], check=True)
            print(png.relative_to(ROOT) if png.is_relative_to(ROOT) else png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
