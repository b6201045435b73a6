import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))


@pytest.fixture
def shared():
    """../shared (real data and weights); skip when this machine lacks it."""
    if not SHARED.is_dir():
        pytest.skip("../shared (real data and pretrained weights) is absent")
    return SHARED
