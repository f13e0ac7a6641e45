"""Shared pytest fixtures: the real ReasonMap networks beside the project, when present, and the tiny Qwen2.5-VL."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

# ``shared/reasonmap`` beside the checkout; REWARDMAP_REASONMAP_DIR points elsewhere (a git worktree, a cluster copy).
REASONMAP_DIR = Path(
    os.environ.get("REWARDMAP_REASONMAP_DIR") or Path(__file__).resolve().parents[1].parent / "shared" / "reasonmap"
)


def real_station_files() -> list[Path]:
    """The 30 real city networks (``stations/<country>/<city>.json``), or [] when ../shared is absent."""
    return sorted((REASONMAP_DIR / "stations").glob("*/*.json"))


@pytest.fixture
def reasonmap_dir() -> Path:
    """``../shared/reasonmap``; tests that need it skip with a reason when it is absent."""
    if not (REASONMAP_DIR / "stations").is_dir():
        pytest.skip(f"real ReasonMap data not found at {REASONMAP_DIR}")
    return REASONMAP_DIR


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny offline Qwen2.5-VL checkpoint (random weights), built once per session; read it, never write it."""
    from tests.fixtures.tiny_qwen import build_tiny_qwen  # lazily: collection stays fast

    return build_tiny_qwen(tmp_path_factory.mktemp("tiny_qwen"))


@pytest.fixture(scope="session")
def shared_tiny_models(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A ``rewardmap.cpu_run.tiny_model_dir`` override for the session's whole-loop CPU runs: each warm-started tiny
    model is built once per session, not once per test (a minute each); its folder is keyed by everything that
    shapes it, so runs on other settings still get their own. The README's bare run keeps its scratch cache."""
    return f"rewardmap.cpu_run.tiny_model_dir={tmp_path_factory.mktemp('tiny_models')}"


@pytest.fixture(scope="session")
def tiny(tiny_dir: Path) -> tuple[Any, Any]:
    """(tokenizer, processor) of ``tiny_dir``, loaded the way verl loads them."""
    from tests.fixtures.tiny_qwen import load_tiny_qwen

    return load_tiny_qwen(tiny_dir)


@pytest.fixture(scope="session")
def sensitive_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen2.5-VL whose log-probs depend on token positions (``build_position_sensitive_qwen``)."""
    from tests.fixtures.tiny_qwen import build_position_sensitive_qwen

    return build_position_sensitive_qwen(tmp_path_factory.mktemp("tiny_qwen_sensitive"))
