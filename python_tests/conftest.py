import os

import pytest
import torch

# CPU tests never need the extension; CUDA tests build it on first use.
if not torch.cuda.is_available():
    os.environ.setdefault("ANYRES_FAST_EXT", "off")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU on this machine")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def seeded():
    torch.manual_seed(0)
    return torch.Generator().manual_seed(0)
