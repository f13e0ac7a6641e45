"""Shared pytest fixtures: the real ReasonMap networks beside the project, when present."""

from __future__ import annotations

from pathlib import Path

import pytest

REASONMAP_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "reasonmap"


def real_station_files() -> list[Path]:
    """The 30 real city networks (``stations/<country>/<city>.json``), or [] when ../shared is absent."""
    return sorted((REASONMAP_DIR / "stations").glob("*/*.json"))


@pytest.fixture
def reasonmap_dir() -> Path:
    """``../shared/reasonmap``; tests that need it skip with a reason when it is absent."""
    if not (REASONMAP_DIR / "stations").is_dir():
        pytest.skip(f"real ReasonMap data not found at {REASONMAP_DIR}")
    return REASONMAP_DIR
