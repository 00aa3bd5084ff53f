import os

import pytest

pytest_plugins = ["pytester"]   # test_tooling checks this conftest's skip logic in a sandbox
import torch

# CPU tests never need the extension; CUDA tests build it on first use.
if not torch.cuda.is_available():
    os.environ.setdefault("ANYRES_FAST_EXT", "off")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU on this machine")
    for item in items:
        # The marker itself, not item.keywords: keywords also hold node names and parametrize ids, so a
        # CPU test parametrized with an id "cuda" (e.g. impl="cuda" raising on CPU tensors) would be
        # skipped silently.
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture
def seeded():
    torch.manual_seed(0)
    return torch.Generator().manual_seed(0)


@pytest.fixture
def one_thread():
    """One intra-op thread for tests of many tiny ops: on a shared 2-core machine a second thread only
    adds wake-up and contention costs (restored after the test)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)
