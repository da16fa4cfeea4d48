import math

import pytest
import torch

from hdae_core import HDAE, ModelConfig
from hdae_core.directions import load_directions
from hdae_core.directions import AttributeClassifiers, load_classifiers, train_classifiers
from hdae_core.editing import (
    LatentStats, check_levels, edit_images, interpolate, manipulate, mix_levels, normalized_weights, slerp,
    style_mix_grid, style_mix_labels, truncate,
)
from hdae_core.evaluation import auroc_intervals
from hdae_core.model import encode_dataset, untrained_like
from conftest import codes_matter

L, D = 3, 4



@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return codes_matter(HDAE(ModelConfig.preset("tiny", "hdae_u")).eval())


def stats_for(codes):
    return LatentStats.from_codes(codes)


# ---------------------------------------------------------------- Eq. 1–2


def test_normalized_weights_range_and_extremes():
    n = torch.tensor([[0.5, -2.0], [0.1, 1.0]])
    w = normalized_weights(n)
    assert w.shape == n.shape and w.min() == 0 and w.max() == 1
    assert w[0, 1] == 1 and w[1, 0] == 0  # max |n| is −2, min |n| is 0.1
    assert torch.allclose(w[0, 0], torch.tensor((0.5 - 0.1) / 1.9))
    assert torch.equal(normalized_weights(torch.full((3,), -2.0)), torch.ones(3))  # constant |n|: all ones


def test_truncate_keeps_exactly_k_largest():
    n = torch.tensor([[0.3, -5.0, 0.0, 2.0], [-1.0, 0.2, 4.0, -0.1]])
    t = truncate(n, 3)
    assert int((t != 0).sum()) == 3
    assert torch.equal(t, torch.tensor([[0.0, -5.0, 0.0, 2.0], [0.0, 0.0, 4.0, 0.0]]))
    assert torch.equal(truncate(n, None), n) and torch.equal(truncate(n, n.numel()), n)
    # ties go to the lower flat index
    assert torch.equal(truncate(torch.tensor([1.0, -1.0, 1.0]), 2), torch.tensor([1.0, -1.0, 0.0]))
    for k in (0, n.numel() + 1, -1):
        with pytest.raises(ValueError, match=r"\[1, 8\]"):
            truncate(n, k)


# ---------------------------------------------------------------- mixing


def test_mix_levels():
    a, b = torch.randn(2, L, D), torch.randn(2, L, D)
    assert torch.equal(mix_levels(a, b, range(L)), b)
    assert torch.equal(mix_levels(a, b, []), a)
    m = mix_levels(a, b, [0, 2])
    assert torch.equal(m[:, [0, 2]], b[:, [0, 2]]) and torch.equal(m[:, 1], a[:, 1])
    assert torch.equal(mix_levels(a[:1], b, [1])[:, 1], b[:, 1])  # a batch of 1 broadcasts
    with pytest.raises(ValueError, match="0..2"):
        mix_levels(a, b, [L])
    with pytest.raises(ValueError, match=r"\[B, 3, 4\]"):
        mix_levels(a, torch.randn(2, L, D + 1), [0])


# ---------------------------------------------------------------- interpolation


def test_slerp_preserves_unit_norm_and_endpoints():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(1, 3, 5, 5, generator=g), torch.randn(1, 3, 5, 5, generator=g)
    a, b = a / a.norm(), b / b.norm()
    t = torch.linspace(0, 1, 7)
    out = slerp(a, b, t)
    assert out.shape == (7, 3, 5, 5)
    assert torch.allclose(out.flatten(1).norm(dim=1), torch.ones(7), atol=1e-5)
    assert torch.equal(out[0], a[0]) and torch.equal(out[-1], b[0])


def test_interpolate_endpoints_and_level_order():
    g = torch.Generator().manual_seed(2)
    ca, cb = torch.randn(L, D, generator=g), torch.randn(L, D, generator=g)
    xa, xb = torch.randn(3, 4, 4, generator=g), torch.randn(3, 4, 4, generator=g)
    F = 3 * L + 1
    codes, x_T = interpolate(ca, cb, xa, xb, F, path="low_to_high")
    assert codes.shape == (F, L, D) and x_T.shape == (F, 3, 4, 4)
    assert torch.equal(codes[0], ca) and torch.equal(codes[-1], cb)
    assert torch.equal(x_T[0], xa) and torch.equal(x_T[-1], xb)
    # after the first third of the frames, level 0 is B's and the others are still A's
    assert torch.allclose(codes[3, 0], cb[0]) and torch.equal(codes[3, 1:], ca[1:])
    assert not torch.allclose(codes[1, 0], ca[0])
    codes_h, _ = interpolate(ca, cb, xa, xb, F, path="high_to_low")
    assert torch.allclose(codes_h[3, L - 1], cb[L - 1]) and torch.equal(codes_h[3, : L - 1], ca[: L - 1])
    # one level alone: the others and x_T stay A's
    codes_1, x_T_1 = interpolate(ca, cb, xa, xb, 5, path=("level", 1))
    assert torch.equal(codes_1[-1], mix_levels(ca[None], cb[None], [1])[0])
    assert torch.equal(x_T_1, xa.expand(5, -1, -1, -1))
    with pytest.raises(ValueError, match="0..2"):
        interpolate(ca, cb, xa, xb, 5, path=("level", L))


def test_interpolate_single_level_is_plain_lerp():
    ca, cb = torch.zeros(1, D), torch.ones(1, D)
    xa = torch.randn(3, 4, 4)
    codes, _ = interpolate(ca, cb, xa, xa.clone(), 5)
    assert torch.allclose(codes[:, 0, 0], torch.linspace(0, 1, 5))


# ---------------------------------------------------------------- manipulation


def test_manipulate_known_answers():
    g = torch.Generator().manual_seed(3)
    data = torch.randn(50, L, D, generator=g) * 3 + 1
    stats = stats_for(data)
    codes, n = data[:4], torch.randn(L, D, generator=g)
    assert torch.equal(manipulate(codes, n, 0.0, stats), codes)
    alpha = 0.7
    moved = stats.standardize(manipulate(codes, n, alpha, stats)) - stats.standardize(codes)
    assert torch.allclose(moved.flatten(1).norm(dim=1), torch.full((4,), alpha * math.sqrt(D * L)), atol=1e-4)
    assert torch.allclose(moved[0] / moved[0].norm(), n / n.norm(), atol=1e-5)  # along n
    # truncation: only k standardised coordinates move
    moved_k = stats.standardize(manipulate(codes, n, alpha, stats, k=2)) - stats.standardize(codes)
    assert int((manipulate(codes, n, alpha, stats, k=2) != codes)[0].sum()) == 2
    assert int((moved_k[0].abs() > 1e-4).sum()) == 2
    # levels: other levels untouched, exact norm kept
    edited = manipulate(codes, n, alpha, stats, levels=[1])
    assert torch.equal(edited[:, [0, 2]], codes[:, [0, 2]])
    moved_l = stats.standardize(edited) - stats.standardize(codes)
    assert torch.allclose(moved_l[:, 1].norm(dim=1), torch.full((4,), alpha * math.sqrt(D * L)), atol=1e-4)
    # per-code alpha
    per = manipulate(codes, n, torch.tensor([0.0, 1.0, 0.0, 1.0]), stats)
    assert torch.equal(per[0], codes[0]) and torch.allclose(per[1], manipulate(codes[1:2], n, 1.0, stats)[0])


def test_manipulate_step_rules():
    g = torch.Generator().manual_seed(4)
    data = torch.randn(50, L, D, generator=g) * 2 - 1
    stats = stats_for(data)
    codes, n = data[:3], torch.tensor([[4.0, 0.0, 0.0, 3.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    # k = all: both rules are the same edit
    assert torch.equal(manipulate(codes, n, 0.5, stats, step_rule="masked"), manipulate(codes, n, 0.5, stats))
    # k = 1 keeps the 4: renormalised moves it by the full α·√(D·L), masked by α·√(D·L)·4/‖n‖ = 4/5 of that
    full = math.sqrt(D * L)
    ren = stats.standardize(manipulate(codes, n, 0.5, stats, k=1)) - stats.standardize(codes)
    msk = stats.standardize(manipulate(codes, n, 0.5, stats, k=1, step_rule="masked")) - stats.standardize(codes)
    assert torch.allclose(ren[:, 0, 0], torch.full((3,), 0.5 * full), atol=1e-4)
    assert torch.allclose(msk[:, 0, 0], torch.full((3,), 0.5 * full * 4 / 5), atol=1e-4)
    assert int((msk.abs() > 1e-5).sum()) == 3  # one coordinate per code
    # masked(α) is renormalised(α·‖n′‖/‖n‖): the same path in code space, walked at another speed
    assert torch.allclose(manipulate(codes, n, 0.5, stats, k=1, step_rule="masked"),
                          manipulate(codes, n, 0.5 * 4 / 5, stats, k=1), atol=1e-5)
    # with levels, ‖n‖ is the norm within those levels (the untruncated edit of those levels)
    m = torch.randn(L, D, generator=g)
    a = manipulate(codes, m, 0.3, stats, k=2, levels=[2], step_rule="masked")
    ratio = truncate(m[2], 2).norm() / m[2].norm()
    assert torch.allclose(a, manipulate(codes, m, 0.3 * float(ratio), stats, k=2, levels=[2]), atol=1e-5)
    with pytest.raises(ValueError, match="step_rule"):
        manipulate(codes, n, 0.5, stats, step_rule="longer")


def test_manipulate_errors_say_what_was_expected():
    codes = torch.randn(2, L, D)
    stats = stats_for(torch.randn(10, L, D))
    with pytest.raises(ValueError, match=r"\[L, D\] = \[3, 4\]"):
        manipulate(codes, torch.randn(L, D + 1), 1.0, stats)
    with pytest.raises(ValueError, match=r"\[1, 5\]"):
        manipulate(codes, torch.randn(1, 5), 1.0, stats_for(torch.randn(10, 1, 5)))  # codes of another model
    with pytest.raises(ValueError, match=r"statistics for \[3, 4\]"):
        manipulate(codes, torch.randn(L, D), 1.0, stats_for(torch.randn(10, 1, 5)))
    with pytest.raises(ValueError, match="0..2"):
        manipulate(codes, torch.randn(L, D), 1.0, stats, levels=[3])
    with pytest.raises(ValueError, match=r"\[1, 12\]"):
        manipulate(codes, torch.randn(L, D), 1.0, stats, k=13)
    with pytest.raises(ValueError, match=r"\[1, 4\]"):
        manipulate(codes, torch.randn(L, D), 1.0, stats, k=5, levels=[0])
    with pytest.raises(ValueError, match="finite"):
        manipulate(codes, torch.randn(L, D), float("nan"), stats)


# ---------------------------------------------------------------- classifiers


def test_classifiers_find_the_informative_coordinate(tmp_path):
    g = torch.Generator().manual_seed(4)
    codes = torch.randn(400, L, D, generator=g) * 2 + 0.5
    attrs = torch.stack([(codes[:, 2, 1] > 0.5).float(), (codes[:, 0, 3] < 0.5).float()], dim=1)
    clf = train_classifiers(codes, attrs, ["a", "b"], test_fraction=0.25, seed=0)
    assert isinstance(clf, AttributeClassifiers)
    assert all(v > 0.95 for v in clf.auroc.values()), clf.auroc
    assert clf.direction("a").shape == (L, D)
    assert divmod(int(clf.direction("a").abs().argmax()), D) == (2, 1)
    assert divmod(int(clf.direction("b").abs().argmax()), D) == (0, 3) and clf.direction("b")[0, 3] < 0
    rep = clf.report()
    assert list(rep.index) == ["a", "b"] and rep.loc["a", "n_test"] == 100
    for n in ("a", "b"):  # the held-out AUROC sits inside its bootstrap interval
        r = clf.meta["report"][n]
        assert r["auroc_low"] <= r["auroc"] <= r["auroc_high"] <= 1.0
    table = auroc_intervals({"m": clf})
    assert list(table["attribute"]) == ["a", "b"] and (table["low"] <= table["auroc"]).all()
    acc = ((clf.logits(codes) > 0).float() == attrs).float().mean()
    assert acc > 0.9
    clf.save(tmp_path)
    back = load_classifiers(tmp_path)
    assert isinstance(back, AttributeClassifiers) and back.names == ["a", "b"]
    assert torch.equal(back.direction("a"), clf.direction("a")) and back.auroc == pytest.approx(clf.auroc)
    assert load_directions(tmp_path).directions["b"].shape == (L, D)  # one format with imported directions


# ---------------------------------------------------------------- with a model


def test_encode_dataset_and_edit_images(tiny):
    from hdae_core.data import Shapes

    ds = Shapes(size=16, seed=0, length=10)
    out = encode_dataset(tiny, ds, n=6, batch_size=4, progress=False)
    Lm, Dm = tiny.num_levels, tiny.code_dim
    assert out["codes"].shape == (6, Lm, Dm) and out["attributes"].shape == (6, len(ds.attribute_names))
    assert out["attribute_names"] == ds.attribute_names
    x0 = ds.batch(range(2))["image"]
    assert torch.allclose(encode_dataset(tiny, x0, progress=False)["codes"], tiny.encode(x0), atol=1e-6)
    assert encode_dataset(tiny, x0, progress=False)["attributes"] is None

    stats = LatentStats.from_codes(out["codes"])
    n = torch.randn(Lm, Dm)
    codes = tiny.encode(x0)
    x_T = tiny.encode_stochastic(x0, codes, 2)
    same = edit_images(tiny, x0, n, 0.0, stats, steps=2, x_T=x_T)
    assert torch.allclose(same, tiny.decode(x_T, codes, 2), atol=1e-4)
    edited = edit_images(tiny, x0, n, 3.0, stats, steps=2, levels=[Lm - 1])
    assert edited.shape == x0.shape and not torch.allclose(edited, same, atol=1e-4)


def test_style_mix_grid_ends_are_a_and_b(tiny):
    g = torch.Generator().manual_seed(5)
    x_a, x_b = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1, torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    grid = style_mix_grid(tiny, x_a, x_b, steps=2)
    Lm = tiny.num_levels
    assert grid.shape == (Lm + 1, 2, 3, 16, 16)
    ca, cb = tiny.encode(x_a), tiny.encode(x_b)
    x_T = tiny.encode_stochastic(x_a, ca, 2)
    assert torch.allclose(grid[0], tiny.decode(x_T, ca, 2), atol=1e-4)
    assert torch.allclose(grid[Lm], tiny.decode(x_T, cb, 2), atol=1e-4)
    assert torch.allclose(grid[1], tiny.decode(x_T, mix_levels(ca, cb, [0]), 2), atol=1e-4)


def test_one_level_validator():
    assert check_levels(2, 4) == [2] and check_levels([3, 0], 4) == [3, 0] and check_levels([], 4) == []
    for bad, msg in (([4], "out of range"), ([1, 1], "distinct"), ([True], "integer"), ([0.5], "integer")):
        with pytest.raises(ValueError, match=msg):
            check_levels(bad, 4)
    with pytest.raises(ValueError, match="distinct"):
        mix_levels(torch.zeros(1, 3, 2), torch.ones(1, 3, 2), [0, 0])


def test_style_mix_labels_name_the_levels_taken_from_b():
    assert style_mix_labels(3) == ["A", "all from A", "z1 from B", "z1..z2 from B", "all from B", "B"]
    assert style_mix_labels(3, "high_to_low") == ["A", "all from A", "z3 from B", "z2..z3 from B", "all from B", "B"]


def test_untrained_like_is_a_fresh_seeded_copy_and_leaves_the_global_rng():
    model = HDAE(ModelConfig.preset("tiny", "hdae_u"))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    state = torch.random.get_rng_state()
    a, b = untrained_like(model, seed=3), untrained_like(model, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    sa, sb, sm = a.state_dict(), b.state_dict(), model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sm[k]) for k in sa if sa[k].is_floating_point())
    assert a.config == model.config and not a.training
