import os

import pytest

from tests.fixtures import SHARED

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def shared():
    """../shared (real data and weights); skip when this machine lacks it."""
    if not SHARED.is_dir():
        pytest.skip("../shared (real data and pretrained weights) is absent")
    return SHARED
