import os

import pytest
import torch

# tests run on the CPU with few threads so they behave the same on a 2-core machine
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
