import pytest
import torch

# one thread: small convolutions gain nothing from more, and oversubscribed cores slow them tenfold
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
