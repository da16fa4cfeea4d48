"""The API says what is wrong: bad tensors raise a ValueError or TypeError naming the argument."""
from __future__ import annotations

import pytest
import torch

from hdae_core import HDAE, ModelConfig
from hdae_core.editing import mix_levels


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return HDAE(ModelConfig.preset("tiny", "hdae_u")).eval()


@pytest.fixture(scope="module")
def x0():
    return torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_mismatched_batches(model, x0):
    codes = model.encode(x0)
    with pytest.raises(ValueError, match="codes: a batch of 2 codes for x_T's batch of 3"):
        model.decode(torch.randn(3, 3, 16, 16), codes, steps=2)
    with pytest.raises(ValueError, match="codes: a batch of 2 codes for x0's batch of 3"):
        model.encode_stochastic(torch.zeros(3, 3, 16, 16), codes, steps=2)
    assert model.decode(torch.randn(3, 3, 16, 16), codes[:1], steps=2).shape == (3, 3, 16, 16)  # one code for all


def test_float64_codes_and_images(model, x0):
    codes = model.encode(x0)
    with pytest.raises(TypeError, match=r"codes: dtype torch.float64.*codes.to\(torch.float32\)"):
        model.decode(torch.randn(2, 3, 16, 16), codes.double(), steps=2)
    with pytest.raises(TypeError, match="x0: dtype torch.float64"):
        model.encode(x0.double())


def test_uint8_images(model, x0):
    u8 = ((x0 + 1) * 127.5).round().to(torch.uint8)
    for call in (lambda: model.encode(u8), lambda: model.encode_stochastic(u8, model.encode(x0), 2)):
        with pytest.raises(TypeError, match=r"x0: expected a floating-point tensor.*uint8.*/ 127\.5 - 1"):
            call()


def test_images_outside_minus_one_one(model, x0):
    img255 = (x0 + 1) * 127.5
    with pytest.raises(ValueError, match=r"x0: values span \[.*\], but images must be in \[-1, 1\]"):
        model.encode(img255)
    with pytest.raises(ValueError, match="x0: values span"):
        model.encode_stochastic(img255, model.encode(x0), 2)
    model.decode(torch.randn(2, 3, 16, 16) * 3, model.encode(x0), steps=2)  # noise is not an image: no range check


def test_nan_images_and_codes(model, x0):
    bad = x0.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="x0: contains NaN"):
        model.encode(bad)
    codes = model.encode(x0)
    nan_codes = codes.clone()
    nan_codes[1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="codes: contains NaN"):
        model.decode(torch.randn(2, 3, 16, 16), nan_codes, steps=2)
    with pytest.raises(ValueError, match="x_T: contains NaN"):
        model.decode(torch.full((2, 3, 16, 16), float("nan")), codes, steps=2)
    with pytest.raises(ValueError, match="codes_a: contains NaN"):
        mix_levels(nan_codes, codes, [0])


def test_mix_levels_wants_integer_levels(model, x0):
    codes = model.encode(x0)
    with pytest.raises(TypeError, match=r"levels: expected a 0-based integer level index.*got float 1\.0"):
        mix_levels(codes, codes, levels=1.0)
    with pytest.raises(ValueError, match="levels: level 7 out of range"):
        mix_levels(codes, codes, levels=[7])


def test_not_a_tensor(model):
    with pytest.raises(TypeError, match="x0: expected a tensor, got list"):
        model.encode([[0.0]])
