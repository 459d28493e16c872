"""Where AI Toolkit for VS Code keeps its files in a project it generated, and where aitk's own
generated files go in such a folder (so that importing it leaves every AI Toolkit file as it was,
and AI Toolkit still opens it)."""

from __future__ import annotations

from pathlib import Path

OLIVE_CONFIG = Path("finetuning") / "olive-config.json"
INVOKE_OLIVE = Path("finetuning") / "invoke_olive.py"
PROJECT_SETTINGS = Path("setup") / "project-settings.json"
FINETUNING_INFRA = Path("infra") / "finetuning.config.json"
INFERENCE_INFRA = Path("infra") / "inference.config.json"
CONSOLE_CHAT = Path("inference") / "console_chat.py"

# aitk's generated files in an AI Toolkit folder (its own names are taken there).
OWN_OLIVE_CONFIG = Path("finetuning") / "aitk-olive-config.json"
OWN_CHAT_SCRIPT = Path("inference") / "aitk_console_chat.py"
OWN_README = Path("AITK.md")


def is_aitk_layout(root: str | Path) -> bool:
    """An AI Toolkit project: its Olive config plus the script or form that come with it."""
    root = Path(root)
    return (root / OLIVE_CONFIG).is_file() and ((root / INVOKE_OLIVE).is_file()
                                                 or (root / PROJECT_SETTINGS).is_file())
