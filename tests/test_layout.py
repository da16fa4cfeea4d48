"""Layout encoder (HDAE Fig. 11): shapes, level composition, regression onto a frozen encoder, save/load."""
import ast
import shutil

import pytest
import torch

from hdae_core import HDAE, ModelConfig
from hdae_core import layout
from hdae_core.data import Shapes
from hdae_core.layout import (LayoutConfig, LayoutEncoder, compose_codes, control_agreement, default_levels,
                              synthesize, train_layout_encoder)



def test_default_levels_are_the_coarser_half():
    assert default_levels(1) == [0]
    assert default_levels(2) == [1]
    assert default_levels(5) == [2, 3, 4]
    assert default_levels(6) == [3, 4, 5]


def test_encoder_output_shape_any_size():
    enc = LayoutEncoder(LayoutConfig(num_levels=5, levels=(3, 4), code_dim=7, channels=8))
    for size in (16, 32):
        out = enc(torch.randint(0, 6, (3, size, size)))
        assert out.shape == (3, 2, 7)


def test_compose_codes_puts_layout_levels_exactly():
    image_codes = torch.randn(4, 5, 6)
    layout_codes = torch.randn(4, 2, 6)
    out = compose_codes(layout_codes, image_codes, [1, 3])
    assert out.shape == (4, 5, 6)
    assert torch.equal(out[:, [1, 3]], layout_codes)
    assert torch.equal(out[:, [0, 2, 4]], image_codes[:, [0, 2, 4]])
    # the given order is honoured, and inputs are not modified
    out2 = compose_codes(layout_codes, image_codes, [3, 1])
    assert torch.equal(out2[:, 3], layout_codes[:, 0]) and torch.equal(out2[:, 1], layout_codes[:, 1])
    assert not torch.equal(image_codes[:, [1, 3]], layout_codes)
    # one layout, many images (Fig. 11's rows)
    out3 = compose_codes(layout_codes[:1], image_codes, [1, 3])
    assert out3.shape == (4, 5, 6) and torch.equal(out3[2, [1, 3]], layout_codes[0])


@pytest.mark.parametrize("levels", [[5], [-1], [0, 0], []])
def test_bad_levels_name_the_valid_range(levels):
    with pytest.raises(ValueError, match=r"0\.\.4"):
        compose_codes(torch.randn(1, max(len(levels), 1), 3), torch.randn(1, 5, 3), levels)
    with pytest.raises(ValueError, match=r"0\.\.4"):
        LayoutConfig(num_levels=5, levels=levels)


class LabelColours:
    """Shapes label maps painted one colour per class, so the image (and its codes) is a function of the layout."""

    label_names = Shapes.label_names

    def __init__(self, size=16):
        self.size = size
        self.shapes = Shapes(size, seed=0)
        self.palette = torch.rand(6, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def __len__(self):
        return len(self.shapes)

    def batch(self, idx):
        lm = self.shapes.batch(idx)["label_map"]
        return {"image": self.palette[lm].permute(0, 3, 1, 2).contiguous(), "label_map": lm}


@pytest.mark.slow
def test_training_regresses_held_out_codes_and_round_trips(tmp_path):
    torch.manual_seed(0)
    model = HDAE(ModelConfig.preset("tiny")).eval()  # untrained: codes are still a fixed function of the image
    enc, report = train_layout_encoder(model, LabelColours(16), n_images=320, steps=120, batch_size=32,
                                       lr=2e-3, seed=0, progress=False, channels=16)
    assert report["levels"] == [1]
    assert report["heldout_mse"] < report["initial_heldout_mse"]
    assert report["heldout_r2"] > 0.1, report
    assert report["train_r2"] > report["heldout_r2"] - 0.05

    # the layout encoder outputs codes on the encoder's own scale
    data = LabelColours(16).batch(list(range(320, 328)))
    pred = enc(data["label_map"])
    assert pred.shape == (8, 1, model.code_dim)

    layout.save(enc, tmp_path / "lay", extra={"report": report})
    enc2 = layout.load(tmp_path / "lay")
    assert torch.allclose(enc2(data["label_map"]), pred)

    x = synthesize(model, enc2, data["label_map"][:1], data["image"][:2], steps=4,
                   generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 3, 16, 16) and torch.isfinite(x).all()


def test_training_refuses_size_mismatch():
    model = HDAE(ModelConfig.preset("tiny"))
    with pytest.raises(ValueError, match="16 px"):
        train_layout_encoder(model, Shapes(32), n_images=8, steps=1, progress=False)


def test_control_agreement_counts_layout_and_image_factors():
    names = ["is_circle", "is_square", "large"]
    lay = torch.tensor([[1.0, 0, 1], [0, 1, 0]])  # layout 0: a large circle, layout 1: a small square
    img = torch.tensor([[0.0, 1, 0], [0, 1, 1], [1, 0, 0]])
    # each synthesised image shows its layout's shape, and image j's size
    probs = torch.zeros(2, 3, 3)
    probs[0, :, 0] = probs[1, :, 1] = 0.9
    probs[:, :, 2] = img[None, :, 2] * 0.8 + 0.1
    out = control_agreement(probs, lay, img, names, {"shape": ["is_circle", "is_square"], "large": ["large"]})
    assert out["shape_matches_layout"] == 1.0
    assert out["shape_matches_image"] == pytest.approx(3 / 6)  # (0, 2) and (1, 0), (1, 1) agree by chance
    assert out["large_matches_image"] == 1.0
    assert out["large_matches_layout"] == pytest.approx(3 / 6)


def test_layout_scores_and_outline():
    from hdae_core import oracle
    from hdae_core.data import Shapes

    data = Shapes(size=16, seed=3)
    b = data.batch(list(range(6)))
    net = oracle.PixelOracle(oracle.PixelOracleConfig(image_size=16, channels=8)).eval()
    sc = layout.layout_scores(net, b["image"], b["label_map"], b["factors"], b["factors"], data.factor_names)
    assert sc["iou"].shape == (6,) and ((sc["iou"] >= 0) & (sc["iou"] <= 1)).all()
    assert set(sc["shape_matches_layout"].tolist()) <= {0.0, 1.0}
    mask = (b["label_map"] >= 1) & (b["label_map"] <= 4)
    drawn = layout.outline(b["image"], mask)
    changed = (drawn != b["image"]).any(1)
    assert changed.any() and not (changed & ~mask).any()  # only the mask's own boundary pixels are painted


class _ShapeOracle(torch.nn.Module):
    """A stand-in attribute oracle that reads the shape class from the factors it was built with."""

    def __init__(self, names, shapes):
        super().__init__()
        self.attribute_names, self.shapes = list(names), shapes

    def predict_proba(self, images):
        p = torch.zeros(len(images), len(self.attribute_names))
        p[torch.arange(len(images)), self.attribute_names.index("is_ellipse") + self.shapes] = 1.0
        return p


def test_layout_scores_read_the_shape_with_the_attribute_oracle():
    from hdae_core import oracle
    from hdae_core.data import Shapes

    data = Shapes(size=16, seed=3)
    b = data.batch(list(range(6)))
    net = oracle.PixelOracle(oracle.PixelOracleConfig(image_size=16, channels=8)).eval()
    shape = b["factors"][:, data.factor_names.index("shape")].long()
    wrong = (shape + 1) % 4
    wrong[:2] = shape[:2]  # two of six read right
    sc = layout.layout_scores(net, b["image"], b["label_map"], b["factors"], b["factors"], data.factor_names,
                              attribute_oracle=_ShapeOracle(data.attribute_names, wrong))
    assert sc["shape_read_by"] == "attribute oracle"
    assert sc["shape_matches_layout"].tolist() == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert set(sc["shape_matches_layout_pixel"].tolist()) <= {0.0, 1.0}


def test_for_study_ships_caches_and_refits_by_identity(tmp_path):
    # 08's layout encoder: the shipped one when it was trained on this model with these settings, else the cache
    # entry when it matches, else trained and cached; another model or other settings never reuse it
    torch.manual_seed(0)
    model = HDAE(ModelConfig.preset("tiny", "hdae_u")).eval()
    world = Shapes(size=16, seed=0, correlation=None)
    kw = dict(levels=None, n_images=16, steps=2, batch_size=8, seed=0)
    enc, fit, where = layout.for_study(model, world, tmp_path / "shipped", tmp_path / "cache", **kw)
    assert "fitted here" in where and "no layout encoder cached" in where and "heldout_r2" in fit
    again, fit2, where = layout.for_study(model, world, tmp_path / "shipped", tmp_path / "cache", **kw)
    assert "loaded from" in where and fit2 == fit
    assert all(torch.equal(a, b) for a, b in zip(enc.state_dict().values(), again.state_dict().values()))
    shutil.copytree(tmp_path / "cache", tmp_path / "shipped")
    _, _, where = layout.for_study(model, world, tmp_path / "shipped", tmp_path / "other", **kw)
    assert where.startswith("layout encoder shipped in") and not (tmp_path / "other").exists()
    _, _, where = layout.for_study(model, world, tmp_path / "shipped", tmp_path / "cache", **{**kw, "steps": 3})
    assert "fitted on another steps" in where  # other settings: trained again, the shipped one left alone
    other = HDAE(ModelConfig.preset("tiny", "hdae_u")).eval()  # other weights (another seed)
    _, _, where = layout.for_study(other, world, tmp_path / "shipped", tmp_path / "cache", **kw)
    assert "fitted on another" in where and "model" in where
    _, _, where = layout.for_study(model, world, tmp_path / "shipped", tmp_path / "cache", refit=True, **kw)
    assert "refit asked for" in where


def test_the_shipped_layout_encoder_matches_the_notebook_defaults():
    # what 08_layout asks for by default on the shipped model is what is shipped: it loads instead of training
    from hdae_core import cache, pipeline, pretrained

    folder = pretrained.resolve("shapes32_hdae_u")
    p = {k: ast.literal_eval(v) for k, v in pipeline.notebook_parameters(pipeline.NOTEBOOK_DIR / "08_layout.ipynb").items()
         if k in ("seed", "levels", "n_train", "layout_steps", "layout_batch")}
    model = pretrained.load(folder)
    world = Shapes(size=model.config.image_size, seed=p["seed"], correlation=None)
    wanted = layout.study_identity(model, world, levels=p["levels"], n_images=p["n_train"], steps=p["layout_steps"],
                                   batch_size=p["layout_batch"], seed=p["seed"])
    assert cache.read_identity(folder / layout.SHIPPED_DIR) == cache._plain(wanted)
    enc, fit = layout.load_with_fit(folder / layout.SHIPPED_DIR)
    assert enc.levels and fit["heldout_r2"] > 0
