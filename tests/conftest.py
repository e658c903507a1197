import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def randomize_(module: torch.nn.Module, scale: float = 0.5) -> torch.nn.Module:
    """Give every parameter random values (zero-initialised layers would hide bugs)."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, scale)
    return module
