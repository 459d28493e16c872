"""Every test session gets its own data/config/cache/projects dirs, and nothing reaches a hub.

Set in os.environ (not monkeypatch) because job processes the tests start inherit them.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_ROOT = Path(tempfile.mkdtemp(prefix="aitk-tests-"))
for _name in ("DATA", "CONFIG", "CACHE", "PROJECTS"):
    os.environ[f"AITK_{_name}_DIR"] = str(_ROOT / _name.lower())
os.environ.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "CI": "1", "TOKENIZERS_PARALLELISM": "false",
                   "HF_HOME": str(_ROOT / "hf")})


@pytest.fixture(scope="session")
def session_root() -> Path:
    return _ROOT


@pytest.fixture(scope="session")
def tiny_test_model() -> Path:
    """The small tiny-model variant, built once per session."""
    from aitk.core import tiny

    return tiny.ensure_tiny(tiny.TEST)
