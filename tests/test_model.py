import math
import pytest
import torch

from hdae_core import HDAE, PRESETS, VARIANTS, ModelConfig
from conftest import codes_matter


def tiny(variant):
    return HDAE(ModelConfig.preset("tiny", variant))


@pytest.mark.parametrize("variant", VARIANTS)
def test_shapes_and_gradients(variant):
    m = codes_matter(tiny(variant))
    cfg = m.config
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    codes = m.encode(x)
    L = cfg.decoder_levels if variant.startswith("hdae") else 1
    D = cfg.code_dim * cfg.decoder_levels if variant == "dae_wide" else cfg.code_dim
    assert codes.shape == (3, L, D) and (m.num_levels, m.code_dim) == (L, D)
    eps = m.decoder(x, torch.tensor([5, 500, 999]), codes)
    assert eps.shape == x.shape
    loss = m(x, torch.tensor([5, 500, 999]), torch.randn_like(x))
    assert loss.shape == (3,)
    loss.mean().backward()
    enc_grads = [p.grad for p in m.encoder.parameters() if p.grad is not None]
    assert enc_grads and any(g.abs().sum() > 0 for g in enc_grads), "no gradient reached the encoder"


@pytest.mark.parametrize("variant", VARIANTS)
def test_training_step_lowers_loss_on_fixed_batch(variant):
    torch.manual_seed(0)
    m = tiny(variant)
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    t = torch.randint(0, 1000, (8,))
    noise = torch.randn_like(x)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    first = m(x, t, noise).mean()
    for _ in range(5):
        opt.zero_grad()
        m(x, t, noise).mean().backward()
        opt.step()
    assert m(x, t, noise).mean().item() < first.item()


def test_hierarchical_routing_each_level_matters():
    """Changing code level l changes ε; in hdae_u level l's code reaches only blocks of level l."""
    m = codes_matter(tiny("hdae_u"))
    x = torch.randn(2, 3, 16, 16)
    t = torch.tensor([100, 700])
    codes = torch.randn(2, m.num_levels, m.code_dim)
    base = m.decoder(x, t, codes)
    for lvl in range(m.num_levels):
        c2 = codes.clone()
        c2[:, lvl] += 1.0
        assert not torch.allclose(m.decoder(x, t, c2), base)
    levels = {b.level for blk in m.decoder.output_blocks for b in blk if hasattr(b, "level")}
    assert levels == set(range(m.num_levels))


def test_every_preset_has_two_levels_and_dae_is_one_code():
    for name in PRESETS:
        cfg = ModelConfig.preset(name)
        assert cfg.decoder_levels >= 2
        assert ModelConfig.preset(name, "dae").code_levels == 1
        assert ModelConfig.preset(name, "dae_wide").code_width == cfg.decoder_levels * cfg.code_dim
    c = ModelConfig.preset("ffhq128")
    assert (c.model_channels, c.channel_mult, c.num_res_blocks, c.embed_channels, c.dropout) == (128, (1, 1, 2, 3, 4), 2, 512, 0.1)
    assert ModelConfig.preset("ffhq256").channel_mult == (1, 1, 2, 2, 4, 4)
    assert ModelConfig.preset("ffhq64").channel_mult == (1, 2, 4, 8)
    d = ModelConfig.preset("diffae32")
    assert (d.model_channels, d.channel_mult, d.enc_channel_mult, d.attention_resolutions, d.num_heads) == (32, (1, 2, 2), (1, 2, 2, 2), (16,), 1)
    # the demo preset predicts v; DiffAE's architectures keep ε (the paper's, and what the DiffAE import needs)
    assert {n: ModelConfig.preset(n).prediction for n in PRESETS} == {
        "tiny": "eps", "shapes32": "v", "diffae32": "eps", "ffhq64": "eps", "ffhq128": "eps", "ffhq256": "eps"}


def test_config_errors_and_json_round_trip():
    with pytest.raises(ValueError, match="unknown variant"):
        ModelConfig.preset("tiny", "vae")
    with pytest.raises(ValueError, match="unknown preset"):
        ModelConfig.preset("ffhq1024")
    with pytest.raises(ValueError, match="at least 2"):
        ModelConfig(channel_mult=(1,))
    cfg = ModelConfig.preset("shapes32", "hdae_e")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_bad_inputs_name_expected_shapes():
    m = tiny("hdae_u")
    with pytest.raises(ValueError, match=r"expected images of shape \[B, 3, 16, 16\]"):
        m.encode(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"codes: expected shape \[B, 2, 32\]"):
        m.decode(torch.zeros(1, 3, 16, 16), torch.zeros(1, 1, 32), steps=2)


def test_decode_deterministic_and_generator():
    m = tiny("hdae_e").eval()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    a = m.reconstruct(x, steps=5, stochastic=False, generator=g1)
    b = m.reconstruct(x, steps=5, stochastic=False, generator=g2)
    assert torch.equal(a, b)
    assert torch.equal(m.reconstruct(x, steps=5), m.reconstruct(x, steps=5))


@pytest.mark.slow
def test_overfit_tiny_reconstructs_better_with_encoded_xT():
    """A tiny model overfitted on a few images: encoded x_T reconstructs far better than random x_T."""
    from hdae_core.data import Shapes

    torch.manual_seed(0)
    m = HDAE(ModelConfig.preset("tiny", "hdae_e"))
    x = Shapes(size=16, seed=0).batch(list(range(4)))["image"]
    opt = torch.optim.Adam(m.parameters(), lr=2e-3)
    xb = x.repeat(2, 1, 1, 1)
    for step in range(250):
        t = torch.randint(0, 1000, (len(xb),))
        loss = m(xb, t, torch.randn_like(xb)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    enc = (m.reconstruct(x, steps=20) - x).pow(2).mean().item()
    rnd = (m.reconstruct(x, steps=20, stochastic=False, generator=torch.Generator().manual_seed(0)) - x).pow(2).mean().item()
    print(f"overfit tiny: encoded-x_T MSE {enc:.4f}, random-x_T MSE {rnd:.4f}")
    assert enc < 0.05 and enc * 3 < rnd


def test_encode_stochastic_refined_by_default():
    """The default inversion (one correction per step, same network calls) undoes decode far better than DiffAE's."""
    torch.manual_seed(0)
    m = tiny("hdae_u").eval()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    codes = m.encode(x)
    err = {k: (m.decode(m.encode_stochastic(x, codes, 10, refine=k), codes, 10) - x).pow(2).mean().item()
           for k in (0, 1)}
    default = (m.decode(m.encode_stochastic(x, codes, 10), codes, 10) - x).pow(2).mean().item()
    print("tiny round trip by refine:", err)
    assert default == err[1] and err[1] < err[0] / 10


def test_norm_groups_sets_every_groupnorm_and_defaults_to_diffae():
    from hdae_core.nn import GroupNorm32

    def groups(m):
        return {(g.num_channels, g.num_groups) for g in m.modules() if isinstance(g, GroupNorm32)}

    assert ModelConfig().norm_groups == 32 and ModelConfig.preset("ffhq128").norm_groups == 32
    base = HDAE(ModelConfig.preset("shapes32", "dae", norm_groups=32))
    assert groups(base) == {(c, math.gcd(32, c)) for c, _ in groups(base)}  # DiffAE's rule
    narrow = HDAE(ModelConfig.preset("shapes32", "dae"))  # the demo preset norms in 8 groups
    assert groups(narrow) == {(c, math.gcd(8, c)) for c, _ in groups(base)}
    assert groups(narrow) != groups(base)
    # the weights are per channel, so a checkpoint's tensors fit either way
    assert {k: v.shape for k, v in base.state_dict().items()} == {k: v.shape for k, v in narrow.state_dict().items()}
    # a config written before the field existed loads with DiffAE's 32
    d = ModelConfig.preset("diffae32", "dae").to_dict()
    del d["norm_groups"]
    assert ModelConfig.from_dict(d).norm_groups == 32
    with pytest.raises(ValueError, match="norm_groups"):
        ModelConfig.preset("tiny", norm_groups=0)


def test_one_channel_per_group_hides_channel_means_from_the_pooled_code():
    # why narrow models want fewer groups: with gcd(32, 32) = 32 groups on 32 channels the pooling
    # head is blind to a per-channel offset of its input (e.g. a global colour); with 8 it is not
    from hdae_core.nn import PoolHead, set_norm_groups

    torch.manual_seed(0)
    head = PoolHead(32, 16)
    h = torch.randn(4, 32, 2, 2)
    shift = torch.randn(1, 32, 1, 1)
    torch.testing.assert_close(head(h + shift), head(h), atol=1e-5, rtol=0)
    set_norm_groups(head, 8)
    assert (head(h + shift) - head(h)).abs().max() > 1e-2
