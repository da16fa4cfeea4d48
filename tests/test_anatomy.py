"""The decoder's anatomy read off the model: level tables, the written-out DDIM step, inversions, the x_T grid."""
import pytest
import torch
from conftest import codes_matter

from hdae_core import ModelConfig, anatomy, diffusion
from hdae_core.model import HDAE
from hdae_core.nn import ResBlock

STEPS = 4


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = codes_matter(HDAE(ModelConfig.preset("tiny", "hdae_u", prediction="v"))).eval()
    x0 = torch.rand((3, 3, model.config.image_size, model.config.image_size), generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        return model, x0, model.encode(x0)


def test_every_decoder_resblock_once_with_its_level_and_measured_resolution(tiny):
    model, _, _ = tiny
    blocks = anatomy.decoder_blocks(model)
    res_blocks = [m for m in model.decoder.modules() if isinstance(m, ResBlock)]
    assert len(blocks) == len(res_blocks) and blocks["block"].is_unique
    for row in blocks.itertuples():
        m = model.decoder.get_submodule(row.block)
        assert m.level == row.level and row.code == f"z{m.level + 1}" and m.out_channels == row.channels
        assert row.role == ("downsampler" if m.down else "upsampler" if m.up else "ResBlock")
    size, L = model.config.image_size, model.num_levels
    # a ResBlock of level l works at size / 2^l; resamplers go between neighbouring levels' resolutions
    plain = blocks[blocks["role"] == "ResBlock"]
    assert ((plain["resolution in"] == size // 2 ** plain["level"]) & (plain["resolution out"] == plain["resolution in"])).all()
    down = blocks[blocks["role"] == "downsampler"]
    assert (down["resolution out"] == size // 2 ** down["level"]).all() and (down["resolution in"] == 2 * down["resolution out"]).all()
    assert blocks["path"].iloc[-1] == "up" and blocks["level"].iloc[-1] == 0  # the block before the output reads z1
    assert set(blocks[blocks["path"] == "middle"]["level"]) == {L - 1}


def test_level_table_counts_the_blocks_per_level(tiny):
    model, _, _ = tiny
    table = anatomy.level_table(model)
    cfg = model.config
    assert list(table.index) == list(range(model.num_levels))
    assert list(table["code"]) == [f"z{l + 1}" for l in range(model.num_levels)]
    assert (table["down ResBlocks"] == cfg.num_res_blocks).all() and (table["up ResBlocks"] == cfg.num_res_blocks + 1).all()
    assert list(table["middle ResBlocks"]) == [0] * (model.num_levels - 1) + [2]
    assert table.loc[0, "resolution"] == f"{cfg.image_size}²" and table.loc[0, "downsampler"] == ""
    assert table.loc[1, "downsampler"] == f"{cfg.image_size}²→{cfg.image_size // 2}²"
    dae = anatomy.level_table(HDAE(ModelConfig.preset("tiny", "dae")))
    assert set(dae["code"]) == {"z (shared)"}  # one code for every block


def test_the_written_out_ddim_step_is_the_samplers_first(tiny):
    model, x0, codes = tiny
    x_T = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2))
    states, decoded = anatomy.decode_states(model, x_T, codes, STEPS)
    ts = model.timesteps(STEPS)
    assert [t for t, _ in states] == ts[::-1] and torch.equal(states[0][1], x_T)
    assert torch.allclose(decoded, model.decode(x_T, codes, STEPS))
    t, t_next = ts[-1], ts[-2]
    a_t, a_next = float(model.alphas_cumprod[t]), float(model.alphas_cumprod[t_next])
    with torch.no_grad():
        v = model.decoder(x_T, torch.full((len(x0),), t), codes)
    eps = a_t ** 0.5 * v + (1 - a_t) ** 0.5 * x_T
    x0_hat = ((x_T - (1 - a_t) ** 0.5 * eps) / a_t ** 0.5).clamp(-1, 1)
    eps = (x_T - a_t ** 0.5 * x0_hat) / (1 - a_t) ** 0.5
    assert torch.allclose(a_next ** 0.5 * x0_hat + (1 - a_next) ** 0.5 * eps, states[1][1], atol=1e-5)


def test_predictions_are_one_another_given_x_t(tiny):
    model, x0, codes = tiny
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
    p = anatomy.predictions(model, x0, codes, [0, 500, 999], noise)
    assert p["x0"].shape == (3, *x0.shape)
    ab = model.alphas_cumprod
    for i, t in enumerate([0, 500, 999]):
        tt = torch.full((len(x0),), t)
        assert torch.allclose(p["x_t"][i], diffusion.q_sample(x0, tt, noise, ab))
        assert torch.allclose(p["eps"][i], diffusion.v_to_eps(p["output"][i], p["x_t"][i], tt, ab))
        a = float(ab[t])  # for v: x̂0 = √ᾱ x_t − √(1−ᾱ) v
        assert torch.allclose(p["x0"][i], a ** 0.5 * p["x_t"][i] - (1 - a) ** 0.5 * p["output"][i], atol=1e-4)


def test_inversion_round_trips_count_calls_and_refine_1_is_the_default(tiny):
    model, x0, codes = tiny
    table, inverted = anatomy.inversion_round_trips(model, x0, codes, STEPS)
    assert list(table["network calls"]) == [STEPS, STEPS + 1]
    assert torch.allclose(inverted[1][0], model.encode_stochastic(x0, codes, STEPS))
    assert torch.allclose(inverted[0][0], model.encode_stochastic(x0, codes, STEPS, refine=0))
    for k, (_, rec) in inverted.items():
        assert table.loc[k, "round-trip MSE"] == pytest.approx(float((rec.clamp(-1, 1) - x0).pow(2).mean()))


def test_code_spread_measures_what_standardisation_removes():
    codes = torch.randn(500, 2, 8, generator=torch.Generator().manual_seed(4))
    codes[:, 0] = codes[:, 0] * torch.linspace(0.1, 1.0, 8) + 3.0  # level 1: spreads 10x apart, offset by 3
    spread = anatomy.code_spread(codes)
    assert list(spread.index) == ["z1", "z2"]
    assert spread.loc["z1", "std max / min"] == pytest.approx(10, rel=0.2)
    assert spread.loc["z1", "|mean| / std: max"] > 20 and spread.loc["z2", "|mean| / std: max"] < 0.5


def test_xT_grid_decodes_a_s_codes_from_three_x_T(tiny):
    model, x0, codes = tiny
    x_T = model.encode_stochastic(x0, codes, STEPS)
    g = anatomy.xT_grid(model, x0, codes, x_T, STEPS, torch.Generator().manual_seed(5))
    assert g["b"] == [1, 2, 0]
    own, other = g["decoded"]["own x_T"], g["decoded"]["B's x_T"]
    assert torch.allclose(own, model.decode(x_T, codes, STEPS).clamp(-1, 1), atol=1e-5)
    assert torch.allclose(other, model.decode(x_T[[1, 2, 0]], codes, STEPS).clamp(-1, 1), atol=1e-5)
    assert g["mse"]["own x_T"]["to A"] == pytest.approx(float((own - x0).pow(2).mean()), rel=1e-5)
    assert g["mse"]["B's x_T"]["to B"] == pytest.approx(float((other - x0[[1, 2, 0]]).pow(2).mean()), rel=1e-5)
