import os

# Inductor's on-disk caches key on the graph, not on this extension's fake kernels: a
# stale entry from an earlier build would be reused. Tests always compile afresh.
os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "0")
os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "0")

import pytest
import torch



@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)
