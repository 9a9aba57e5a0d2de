"""Fixtures shared by the tests; the harness itself is ``bridge_harness``."""

from __future__ import annotations

from pathlib import Path

import pytest
from bridge_harness import Bridge


@pytest.fixture
def bridge(tmp_path: Path) -> Bridge:
    return Bridge(tmp_path)
