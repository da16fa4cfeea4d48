"""Known-answer tests for hdae_core.data: Shapes, image folders, LMDB and CelebA attributes."""

import logging
import math
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from hdae_core.data import (
    CELEBA_ATTRIBUTES,
    AttributeImages,
    BadImageError,
    ImageFolder,
    LMDBImages,
    Shapes,
    make_dataset,
    read_celeba_attributes,
    write_lmdb,
)

# ---------------------------------------------------------------- Shapes


@pytest.fixture(scope="module")
def shapes32():
    ds = Shapes(size=32, seed=0)
    return ds, ds.batch(range(300))


def col(ds, factors, name):
    return factors[:, ds.factor_names.index(name)]


def attr(ds, attributes, name):
    return attributes[:, ds.attribute_names.index(name)].bool()


@pytest.mark.parametrize("size", [16, 32, 64])
def test_item_structure(size):
    ds = Shapes(size=size, seed=1)
    item = ds[7]
    assert set(item) == {"image", "attributes", "factors", "label_map", "index"}
    assert item["image"].shape == (3, size, size) and item["image"].dtype == torch.float32
    assert item["image"].min() >= -1 and item["image"].max() <= 1
    assert item["image"].std() > 0.05  # not a blank canvas
    assert item["attributes"].shape == (len(ds.attribute_names),) and item["attributes"].dtype == torch.float32
    assert set(item["attributes"].unique().tolist()) <= {0.0, 1.0}
    assert item["factors"].shape == (len(ds.factor_names),) and item["factors"].dtype == torch.float32
    assert item["label_map"].shape == (size, size) and item["label_map"].dtype == torch.long
    assert 0 <= item["label_map"].min() and item["label_map"].max() < len(ds.label_names)
    assert item["index"] == 7
    assert len(ds) == 100_000 and len(ds.attribute_names) >= 8 and len(set(ds.attribute_names)) == len(ds.attribute_names)


def test_deterministic_per_seed_and_index():
    a, b = Shapes(32, seed=3), Shapes(32, seed=3)
    batch = a.batch([11, 5, 99])
    for j, i in enumerate([11, 5, 99]):
        item = b[i]
        for key in ("image", "attributes", "factors", "label_map"):
            assert torch.equal(item[key], batch[key][j]), key
    assert torch.equal(a.batch([5, 11])["image"], torch.stack([a[5]["image"], a[11]["image"]]))
    assert torch.equal(a[-1]["image"], a[len(a) - 1]["image"])
    other = Shapes(32, seed=4).batch([11, 5, 99])
    assert not torch.equal(other["factors"], batch["factors"])
    assert not torch.equal(other["image"], batch["image"])
    assert not torch.equal(a[1]["image"], a[2]["image"])
    with pytest.raises(IndexError):
        a[len(a)]


def test_factors_without_rendering_match_items(shapes32):
    ds, batch = shapes32
    assert torch.equal(ds.factors(range(300)), batch["factors"])
    assert torch.equal(ds.attributes_from_factors(batch["factors"]), batch["attributes"])


def test_attributes_follow_factors(shapes32):
    ds, b = shapes32
    f, a = b["factors"], b["attributes"]
    assert torch.equal(attr(ds, a, "red"), col(ds, f, "color") == 0)
    assert ds.color_names[0] == "red"
    assert torch.equal(attr(ds, a, "striped"), col(ds, f, "texture") == 1)
    assert torch.equal(attr(ds, a, "large"), col(ds, f, "size") > 0.23)
    assert torch.equal(attr(ds, a, "left_side"), col(ds, f, "pos_x") < 0.5)
    assert torch.equal(attr(ds, a, "top_side"), col(ds, f, "pos_y") < 0.5)
    assert torch.equal(attr(ds, a, "rotated"), col(ds, f, "rotation").abs() > 12.5)
    assert torch.equal(attr(ds, a, "cluttered"), col(ds, f, "clutter") > 0)
    assert torch.equal(attr(ds, a, "bright_background"), col(ds, f, "bg_value") > 0.5)
    angle = torch.deg2rad(col(ds, f, "light_angle"))
    assert torch.equal(attr(ds, a, "lit_from_left"), torch.cos(angle) < 0)
    for k, shape in enumerate(ds.shape_names):
        assert torch.equal(attr(ds, a, f"is_{shape}"), col(ds, f, "shape") == k)
    assert torch.equal(a[:, [ds.attribute_names.index(f"is_{s}") for s in ds.shape_names]].sum(1), torch.ones(300))


def test_label_map_matches_shape_and_area():
    ds = Shapes(64, seed=0, correlation=None)
    b = ds.batch(range(120))
    f, lab = b["factors"], b["label_map"]
    shape = col(ds, f, "shape").long()
    present = torch.stack([(lab == k).flatten(1).any(1) for k in range(len(ds.label_names))], 1)
    # exactly one shape class appears, the factor's; clutter only in cluttered images
    assert torch.equal(present[:, 1:5].float().argmax(1), shape) and torch.equal(present[:, 1:5].sum(1), torch.ones(120, dtype=torch.long))
    clutter_label = ds.label_names.index("clutter")
    assert not present[~attr(ds, b["attributes"], "cluttered"), clutter_label].any()
    # "size" is the equal-area radius: every class covers about pi * (size * H)^2 pixels (a star's
    # tips may leave the frame, so only objects whose circumcircle fits are measured)
    from hdae_core.data.shapes import _CIRCUMRADIUS
    reach = col(ds, f, "size") * torch.from_numpy(_CIRCUMRADIUS)[shape]
    inside = torch.stack([col(ds, f, k) for k in ("pos_x", "pos_y")], 1)
    fits = ((inside - reach[:, None] > 0) & (inside + reach[:, None] < 1)).all(1)
    area = (lab == (shape + 1)[:, None, None]).flatten(1).sum(1).float()
    ratio = (area / (math.pi * (col(ds, f, "size") * 64) ** 2))[fits]
    assert fits.sum() > 40
    assert ratio.min() > 0.9 and ratio.max() < 1.1 and abs(ratio.mean() - 1) < 0.03


def test_objects_are_large_and_structure_moves_many_pixels():
    ds = Shapes(32, seed=0, correlation=None)
    b = ds.batch(range(200))
    obj = ((b["label_map"] >= 1) & (b["label_map"] <= 4)).flatten(1).sum(1).float()
    # a small object is about 12 px across at 32 px, a large one about 17
    assert obj.min() > 70 and obj.mean() > 150
    # changing the class or the rotation of an object moves tens of pixels of its silhouette
    for name in ("is_ellipse", "is_square", "is_triangle", "is_star", "rotated"):
        k = ds.attribute_names.index(name)
        edited = ds.render_factors(ds.edit_factors(b["factors"][:50], name), index=list(range(50)))
        before = (b["label_map"][:50] >= 1) & (b["label_map"][:50] <= 4)
        after = (edited["label_map"] >= 1) & (edited["label_map"] <= 4)
        moved = (before ^ after).flatten(1).sum(1).float()
        assert moved.median() >= 15, (name, moved.median())
        assert k >= 0


def test_tiers_are_separate():
    ds = Shapes(32, seed=0)
    assert set(ds.structure_attributes) | set(ds.appearance_attributes) == set(ds.attribute_names)
    assert not set(ds.structure_attributes) & set(ds.appearance_attributes)
    assert set(ds.structure_factors) | set(ds.appearance_factors) == set(ds.factor_names)
    b = ds.batch(range(60))
    silhouette = (b["label_map"] >= 1) & (b["label_map"] <= 4)
    # every appearance edit leaves the object's silhouette exactly where it was
    for name in ds.appearance_attributes:
        edited = ds.render_factors(ds.edit_factors(b["factors"], name), index=list(range(60)))
        assert torch.equal((edited["label_map"] >= 1) & (edited["label_map"] <= 4), silhouette), name


def test_clutter_is_visible_and_clear_of_the_object():
    ds = Shapes(32, seed=0, correlation=None)
    b = ds.batch(range(400))
    img, lab = (b["image"] + 1) / 2, b["label_map"]
    cluttered = attr(ds, b["attributes"], "cluttered")
    dots = (lab == ds.label_names.index("clutter")).flatten(1).sum(1)
    # dots cover several pixels each in almost every cluttered image, and none elsewhere
    assert (dots[cluttered] >= 6).float().mean() > 0.98 and (dots[~cluttered] == 0).all()
    # they contrast with the background: near-white on dark, near-black on bright
    is_dot = lab == ds.label_names.index("clutter")
    bg = lab == 0
    for i in torch.nonzero(cluttered)[:50, 0].tolist():
        dot_v = img[i].amax(0)[is_dot[i]].mean()
        bg_v = img[i].amax(0)[bg[i]].mean()
        assert abs(dot_v - bg_v) > 0.3, i
    # a dot never touches the object: the object's label keeps a gap around it
    near = F.max_pool2d(((lab >= 1) & (lab <= 4)).float()[:, None], 3, 1, 1)[:, 0] > 0
    assert not (near & is_dot).any()


def test_rotation_is_visible_for_every_class():
    ds = Shapes(32, seed=0, correlation=None)
    f = ds.factors(range(400))
    shape = col(ds, f, "shape").long()
    for k, name in enumerate(ds.shape_names):
        rows = torch.nonzero(shape == k)[:20, 0]
        solid = ds.edit_factors(ds.edit_factors(f[rows], "striped", False), "rotated", False)
        turned = ds.edit_factors(solid, "rotated", True)
        a = ds.render_factors(solid, index=rows.tolist())["label_map"] > 0
        b = ds.render_factors(turned, index=rows.tolist())["label_map"] > 0
        assert (a ^ b).flatten(1).sum(1).float().min() >= 6, name


def test_pixels_show_the_attributes(shapes32):
    ds, b = shapes32
    img, lab, a = (b["image"] + 1) / 2, b["label_map"], b["attributes"]
    obj = (lab >= 1) & (lab <= 4)
    bg = lab == 0
    # the object's mean colour is red iff "red" (lighting scales all channels alike)
    mean = (img * obj[:, None]).sum((2, 3)) / obj.sum((1, 2))[:, None]
    reddish = (mean[:, 0] > 1.8 * mean[:, 1]) & (mean[:, 0] > 1.8 * mean[:, 2])
    assert torch.equal(reddish, attr(ds, a, "red"))
    # background value (max channel) on the right side of 0.5
    value = (img.amax(1) * bg).sum((1, 2)) / bg.sum((1, 2))
    assert ((value > 0.5) == attr(ds, a, "bright_background")).float().mean() > 0.97
    # lighting: background brighter on the left half iff lit from the left
    lum = img.mean(1)
    left, right = bg.clone(), bg.clone()
    left[:, :, 16:], right[:, :, :16] = False, False
    brighter_left = (lum * left).sum((1, 2)) / left.sum((1, 2)) > (lum * right).sum((1, 2)) / right.sum((1, 2))
    assert (brighter_left == attr(ds, a, "lit_from_left")).float().mean() > 0.95


def test_attribute_rates_in_range():
    ds = Shapes(32, seed=0)
    rates = Shapes.attributes_from_factors(ds.factors(range(2000))).mean(0)
    for name, rate in zip(ds.attribute_names, rates.tolist()):
        assert 0.1 <= rate <= 0.9, (name, rate)


def _conditional(ds, a, b, n=4000):
    attrs = Shapes.attributes_from_factors(ds.factors(range(n)))
    xa, xb = attr(ds, attrs, a), attr(ds, attrs, b)
    return (xa & xb).sum() / xa.sum(), (xa & xb).sum() / xb.sum(), xa.float().mean(), xb.float().mean()


def test_correlation_knob():
    ds = Shapes(32, seed=0)
    assert ds.correlated_pairs == [("red", "large", 0.8)]
    assert "red" in ds.low_level_attributes and "large" in ds.high_level_attributes
    for rate in (0.8, 0.95):
        b_given_a, a_given_b, pa, pb = _conditional(Shapes(32, correlation=rate), "red", "large")
        assert abs(b_given_a - rate) < 0.03 and abs(a_given_b - rate) < 0.03
        assert abs(pa - 0.5) < 0.03 and abs(pb - 0.5) < 0.03  # marginals don't move with the knob
    for independent in (None, 0.5):
        b_given_a, a_given_b, _, _ = _conditional(Shapes(32, correlation=independent), "red", "large")
        assert abs(b_given_a - 0.5) < 0.035 and abs(a_given_b - 0.5) < 0.035
    assert Shapes(32, correlation=None).correlated_pairs == []
    pairs = [("striped", "left_side", 0.9), ("top_side", "left_side", 0.2)]
    ds = Shapes(32, correlation=pairs)
    assert ds.correlated_pairs == pairs
    assert abs(_conditional(ds, "striped", "left_side")[0] - 0.9) < 0.03
    assert abs(_conditional(ds, "top_side", "left_side")[1] - 0.2) < 0.03
    assert abs(_conditional(ds, "red", "large")[0] - 0.5) < 0.035  # untouched pair is independent again
    # other factors don't depend on the knob: same seed, same shapes and colours except the paired bits
    f8, f5 = Shapes(32, correlation=0.8).factors(range(50)), Shapes(32, correlation=None).factors(range(50))
    assert torch.equal(f8[:, 0], f5[:, 0])


@pytest.mark.parametrize(
    "bad",
    [
        [("red", "is_ellipse", 0.8)],
        [("red", "nope", 0.8)],
        [("red", "large", 1.5)],
        [("red", "large", 0.8), ("large", "striped", 0.8), ("striped", "red", 0.8)],
        [("red", "red", 0.8)],
    ],
)
def test_correlation_rejects_bad_pairs(bad):
    with pytest.raises(ValueError):
        Shapes(32, correlation=bad)


def test_render_factors_reproduces_and_edits(shapes32):
    ds, b = shapes32
    i = 4
    again = ds.render_factors(b["factors"][i], index=i)
    assert torch.equal(again["image"][0], b["image"][i]) and torch.equal(again["label_map"][0], b["label_map"][i])
    as_dict = ds.factors_dict(b["factors"][i])
    assert torch.equal(ds.render_factors(as_dict, index=i)["image"][0], b["image"][i])
    many = ds.render_factors(b["factors"][:5], index=list(range(5)))
    assert torch.equal(many["image"], b["image"][:5])
    for name in ["red", "striped", "large", "left_side", "rotated", "lit_from_left", "bright_background", "cluttered", "is_star"]:
        edited = ds.edit_factors(b["factors"][:40], name)
        before, after = b["attributes"][:40], Shapes.attributes_from_factors(edited)
        k = ds.attribute_names.index(name)
        assert torch.equal(after[:, k], 1 - before[:, k]), name
        others = [j for j in range(len(ds.attribute_names)) if j != k and not ds.attribute_names[j].startswith("is_")]
        assert torch.equal(after[:, others], before[:, others]), name
        same = ds.edit_factors(b["factors"][:40], name, value=bool(before[0, k]))
        assert torch.equal(same[0], b["factors"][0])
    # recolouring changes only the object and its anti-aliased rim (thin star tips: up to 2 px)
    edited = ds.render_factors(ds.edit_factors(b["factors"][:20], "red"), index=list(range(20)))
    changed = (edited["image"] != b["image"][:20]).any(1)
    obj = ((b["label_map"][:20] >= 1) & (b["label_map"][:20] <= 4)).float()
    rim = F.max_pool2d(obj[:, None], 5, 1, 2)[:, 0] > 0
    assert changed.any() and not (changed & ~rim).any()


def test_dataloader_uses_batched_fetch():
    ds = Shapes(16, seed=2)
    loader = torch.utils.data.DataLoader(ds, batch_size=6)
    first = next(iter(loader))
    ref = ds.batch(range(6))
    for key in ref:
        assert torch.equal(first[key], ref[key]), key


def test_save_grid_png(tmp_path):
    """A grid round-trips through PNG (catches NaNs / wrong ranges that would show up in figures)."""
    ds = Shapes(32, seed=5)
    img = ((ds.batch(range(16))["image"] + 1) * 127.5).round().byte()
    grid = img.view(4, 4, 3, 32, 32).permute(0, 3, 1, 4, 2).reshape(128, 128, 3).numpy()
    Image.fromarray(grid).save(tmp_path / "grid.png")
    assert np.asarray(Image.open(tmp_path / "grid.png")).std() > 10


# ---------------------------------------------------------------- image folders and LMDB


def _save(path, arr, mode=None, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode).save(path, **kw) if mode else Image.fromarray(arr).save(path, **kw)
    return path


def _halves(h=24, w=24):
    """Left half red, right half blue."""
    arr = np.zeros((h, w, 3), np.uint8)
    arr[:, : w // 2, 0] = 255
    arr[:, w // 2 :, 2] = 255
    return arr


@pytest.fixture()
def folder(tmp_path):
    root = tmp_path / "ffhq"
    rng = np.random.default_rng(0)
    for i in range(5):
        sub = root / f"{i // 3 * 1000:05d}"
        _save(sub / f"{i:05d}.png", rng.integers(0, 256, (20, 20, 3), dtype=np.uint8))
    _save(root / "00000" / "00000.png", _halves())  # overwrite with a known picture
    _save(root / "01000" / "00004.jpg", rng.integers(0, 256, (30, 20, 3), dtype=np.uint8), quality=95)
    (root / "notes.txt").write_text("not an image")
    return root


def test_image_folder_basics(folder):
    ds = ImageFolder(folder, 16, flip=False)
    assert ds.files == ["00000/00000.png", "00000/00001.png", "00000/00002.png", "01000/00003.png", "01000/00004.jpg", "01000/00004.png"]
    item = ds[0]
    assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.float32 and item["index"] == 0
    assert item["image"].min() >= -1 and item["image"].max() <= 1
    # left half red, right half blue, unflipped
    assert item["image"][0, :, :6].mean() > 0.9 and item["image"][2, :, :6].mean() < -0.9
    assert item["image"][2, :, -6:].mean() > 0.9
    assert ds[4]["image"].shape == (3, 16, 16)  # 30x20 is centre-cropped to 20x20


def test_image_folder_center_crop(tmp_path):
    arr = np.zeros((10, 30, 3), np.uint8)
    arr[:, 10:20, 1] = 255  # the centre square is green, the sides black
    _save(tmp_path / "wide.png", arr)
    img = ImageFolder(tmp_path, 10, flip=False)[0]["image"]
    assert img[1].min() > 0.9 and img[0].max() < -0.9


def test_image_folder_flip_seeded(folder):
    def left_is_red(ds):
        return bool(ds[0]["image"][0, :, :6].mean() > 0)

    a = ImageFolder(folder, 16, flip=True, seed=0)
    first = [left_is_red(a) for _ in range(3)]
    assert len(set(first)) == 1  # fixed per (seed, epoch, index)
    seen = set()
    for epoch in range(12):
        a.set_epoch(epoch)
        seen.add(left_is_red(a))
    assert seen == {True, False}
    torch.manual_seed(0)
    assert {left_is_red(ImageFolder(folder, 16)) for _ in range(20)} == {True, False}
    assert not any(not left_is_red(ImageFolder(folder, 16, flip=False)) for _ in range(5))


def test_image_folder_missing_and_empty(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ImageFolder(tmp_path / "nowhere", 16)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match=r"empty.*\.png"):
        ImageFolder(tmp_path / "empty", 16)


@pytest.fixture()
def bad_folder(tmp_path):
    root = tmp_path / "bad"
    rng = np.random.default_rng(1)
    good = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    _save(root / "00000.png", good)
    png = _save(root / "00001.png", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    png.write_bytes(png.read_bytes()[: len(png.read_bytes()) // 2])
    jpg = _save(root / "00002.jpg", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), quality=90)
    jpg.write_bytes(jpg.read_bytes()[: len(jpg.read_bytes()) // 2])
    _save(root / "00003.png", rng.integers(0, 256, (16, 16), dtype=np.uint8), "L")
    _save(root / "00004.png", rng.integers(0, 256, (16, 16, 4), dtype=np.uint8), "RGBA")
    (root / "00005.png").write_bytes(b"definitely not a png")
    _save(root / "00006.png", good)
    return root


@pytest.mark.parametrize(
    "index, pattern, when",
    [
        (1, r"00001\.png: can't decode", "item"),  # a truncated file has a sound header
        (2, r"00002\.jpg: can't decode", "item"),
        (3, r"00003\.png: mode 'L' \(grayscale\), expected RGB", "open"),
        (4, r"00004\.png: mode 'RGBA' \(RGB with alpha\), expected RGB", "open"),
        (5, r"00005\.png: can't read the image", "open"),
    ],
)
def test_bad_images_raise(bad_folder, tmp_path, index, pattern, when):
    # one good image and the bad one: what the header shows is refused when the folder is opened
    root = tmp_path / "one"
    root.mkdir()
    for src in (bad_folder / "00000.png", next(bad_folder.glob(f"{index:05d}.*"))):
        (root / src.name).write_bytes(src.read_bytes())
    if when == "open":
        with pytest.raises(BadImageError, match=pattern):
            ImageFolder(root, 16, flip=False)
    else:
        ds = ImageFolder(root, 16, flip=False)
        with pytest.raises(BadImageError, match=pattern):
            ds[1]
    assert issubclass(BadImageError, ValueError)


def test_bad_images_skip(bad_folder, caplog):
    with caplog.at_level(logging.WARNING, logger="hdae_core.data.images"):
        ds = ImageFolder(bad_folder, 16, flip=False, on_error="skip")
        # the mode and the junk file are seen in the headers: left out at once, so len() counts readable files
        assert ds.files == ["00000.png", "00001.png", "00002.jpg", "00006.png"] and len(ds) == 4
        items = [ds[i] for i in range(len(ds))]
    assert [it["index"] for it in items] == [0, 3, 3, 3]
    assert torch.equal(items[1]["image"], ds[3]["image"])
    assert sorted(p.rsplit("/", 1)[-1] for p in ds.skipped) == ["00001.png", "00002.jpg", "00003.png", "00004.png", "00005.png"]
    assert "grayscale" in ds.skipped[str(bad_folder / "00003.png")]
    # one summary line for what the headers showed, then one warning per file met later
    assert sum("can't be used and are left out" in r.getMessage() for r in caplog.records) == 1
    assert sum("skipping" in r.getMessage() for r in caplog.records) == 2
    assert set(ds.scan()) == {str(bad_folder / "00001.png"), str(bad_folder / "00002.jpg")}
    converted = ImageFolder(bad_folder, 16, flip=False, convert_mode=True, on_error="skip")
    assert "00005.png" not in converted.files
    gray = converted[converted.files.index("00003.png")]["image"]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert converted[converted.files.index("00004.png")]["image"].shape == (3, 16, 16)


def test_lmdb_round_trip(tmp_path, folder):
    arrays = [np.random.default_rng(i).integers(0, 256, (8, 8, 3), dtype=np.uint8) for i in range(4)]
    n = write_lmdb(arrays, tmp_path / "db", resolution=8, format="png")
    assert n == 4
    ds = LMDBImages(tmp_path / "db", 8, flip=False)
    assert len(ds) == 4 and ds.resolution == 8 and ds.zfill == 5
    for i, arr in enumerate(arrays):
        expected = torch.from_numpy(arr).permute(2, 0, 1).float() / 127.5 - 1
        assert torch.allclose(ds[i]["image"], expected) and ds[i]["index"] == i
    # from a folder, DiffAE's default WebP encoding; resized at read time
    assert write_lmdb(folder, tmp_path / "db2", resolution=16) == 6
    ds2 = make_dataset(tmp_path / "db2", 8, flip=False)
    assert isinstance(ds2, LMDBImages) and len(ds2) == 6 and ds2[5]["image"].shape == (3, 8, 8)
    ref = ImageFolder(folder, 8, flip=False)[0]["image"]
    assert (ds2[0]["image"] - ref).abs().mean() < 0.1
    # the open environment never travels to another process
    clone = pickle.loads(pickle.dumps(ds2))
    assert torch.equal(clone[1]["image"], ds2[1]["image"])
    loader = torch.utils.data.DataLoader(ds2, batch_size=3, num_workers=2)
    assert sum(b["image"].shape[0] for b in loader) == 6


def test_lmdb_bad_entries(tmp_path):
    import io

    import lmdb

    path = tmp_path / "db"
    good = np.full((8, 8, 3), 200, np.uint8)
    write_lmdb([good] * 4, path, resolution=8, format="png")
    env = lmdb.open(str(path), map_size=1 << 24)
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8), "L").save(buf, format="PNG")
    with env.begin(write=True) as txn:
        txn.put(b"8-00001", txn.get(b"8-00001")[:20])
        txn.put(b"8-00002", buf.getvalue())
    env.close()
    ds = LMDBImages(path, 8, flip=False)
    with pytest.raises(ValueError, match=r"8-00001\]: can't decode"):
        ds[1]
    with pytest.raises(ValueError, match=r"8-00002\]: mode 'L'"):
        ds[2]
    skip = LMDBImages(path, 8, flip=False, on_error="skip", resolution=8)
    assert [skip[i]["index"] for i in range(4)] == [0, 3, 3, 3] and len(skip.skipped) == 2
    with pytest.raises(FileNotFoundError, match="missing"):
        LMDBImages(tmp_path / "missing", 8)
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match="data.mdb"):
        LMDBImages(tmp_path / "plain", 8)
    with pytest.raises(ValueError, match="resolution"):
        LMDBImages(path, 8, resolution=256)
    with pytest.raises(ValueError, match="mode 'L'"):
        write_lmdb([Image.fromarray(np.zeros((8, 8), np.uint8), "L")], tmp_path / "db3", resolution=8)


def test_make_dataset(tmp_path, folder):
    assert isinstance(make_dataset(None, 16), Shapes) and make_dataset("shapes", 16, seed=3).seed == 3
    assert isinstance(make_dataset(folder, 16), ImageFolder)
    with pytest.raises(FileNotFoundError, match="nope"):
        make_dataset(tmp_path / "nope", 16)
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(ValueError, match="not a data set"):
        make_dataset(tmp_path / "f.txt", 16)


# ---------------------------------------------------------------- CelebA attributes


def _write_attr(path, rows, sep=" ", names=CELEBA_ATTRIBUTES, count=None, trailing=""):
    lines = [str(len(rows) if count is None else count), " ".join(names) + trailing]
    for name, vals in rows:
        lines.append(name + sep + sep.join(str(v) for v in vals))
    path.write_text("\n".join(lines) + "\n")
    return path


def _rows(names, seed=0):
    rng = np.random.default_rng(seed)
    return [(n, rng.choice([-1, 1], 40).tolist()) for n in names]


def test_celeba_attribute_names():
    assert len(CELEBA_ATTRIBUTES) == 40 and CELEBA_ATTRIBUTES[0] == "5_o_Clock_Shadow"
    assert CELEBA_ATTRIBUTES[20] == "Male" and CELEBA_ATTRIBUTES[31] == "Smiling" and CELEBA_ATTRIBUTES[-1] == "Young"


@pytest.mark.parametrize("style", ["mask_hq", "celeba"])
def test_read_celeba_attributes(tmp_path, style):
    rows = _rows(["0.jpg", "1.jpg", "2.jpg"] if style == "mask_hq" else ["000001.jpg", "000002.jpg", "000003.jpg"])
    # list_attr_celeba.txt pads values to two characters (double spaces) and ends the names line with a space
    sep, trailing = (" ", "") if style == "mask_hq" else ("  ", " ")
    path = _write_attr(tmp_path / "anno.txt", rows, sep=sep, trailing=trailing)
    df = read_celeba_attributes(path)
    assert list(df.columns) == CELEBA_ATTRIBUTES and list(df.index) == [r[0] for r in rows]
    assert df.shape == (3, 40) and set(np.unique(df.to_numpy())) <= {0, 1}
    expected = (np.array([r[1] for r in rows]) > 0).astype(int)
    assert np.array_equal(df.to_numpy(), expected)


def test_read_celeba_attributes_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.txt"):
        read_celeba_attributes(tmp_path / "absent.txt")
    rows = _rows(["0.jpg", "1.jpg", "2.jpg"])
    rows[1] = (rows[1][0], rows[1][1][:-1])
    with pytest.raises(ValueError, match=r"short\.txt, line 4: expected 41 fields"):
        read_celeba_attributes(_write_attr(tmp_path / "short.txt", rows))
    with pytest.raises(ValueError, match="line 1 says 5 images but 3"):
        read_celeba_attributes(_write_attr(tmp_path / "count.txt", _rows(["0.jpg", "1.jpg", "2.jpg"]), count=5))
    rows = _rows(["0.jpg", "1.jpg"])
    rows[1][1][3] = 2
    with pytest.raises(ValueError, match=r"line 4 \('1.jpg'\), column 'Bags_Under_Eyes': value '2'"):
        read_celeba_attributes(_write_attr(tmp_path / "value.txt", rows))
    (tmp_path / "nocount.txt").write_text("abc\nx y\n")
    with pytest.raises(ValueError, match="line 1"):
        read_celeba_attributes(tmp_path / "nocount.txt")


def test_attribute_images(tmp_path):
    root = tmp_path / "celebahq"
    for i in range(3):
        arr = np.full((12, 12, 3), 40 * i, np.uint8)
        _save(root / f"{i:05d}.png", arr)
    rows = _rows(["0.jpg", "1.jpg", "2.jpg", "3.jpg"], seed=1)
    anno = _write_attr(tmp_path / "CelebAMask-HQ-attribute-anno.txt", rows)
    ds = AttributeImages(root, anno, size=8, flip=False)
    assert len(ds) == 3 and ds.attribute_names == CELEBA_ATTRIBUTES
    for i in range(3):
        item = ds[i]
        assert torch.equal(item["attributes"], torch.tensor(rows[i][1]).gt(0).float())
        assert item["image"].shape == (3, 8, 8) and abs(item["image"].mean() - (40 * i / 127.5 - 1)) < 0.01
    sub = AttributeImages(root, read_celeba_attributes(anno), size=8, columns=["Male", "Smiling"])
    assert sub.attribute_names == ["Male", "Smiling"] and sub[0]["attributes"].shape == (2,)
    # an image with no row: a clear error, or a counted skip
    _save(root / "00099.png", np.zeros((12, 12, 3), np.uint8))
    with pytest.raises(ValueError, match=r"00099\.png"):
        AttributeImages(root, anno, size=8)
    skip = AttributeImages(root, anno, size=8, on_error="skip")
    assert len(skip) == 3 and list(skip.skipped) == [str(root / "00099.png")]
    # LMDB images pair by position
    write_lmdb(root, tmp_path / "db", resolution=8, format="png")
    by_index = AttributeImages(LMDBImages(tmp_path / "db", 8, flip=False), pd.DataFrame(
        np.eye(4, 40, dtype=np.int8), index=[f"{i}.jpg" for i in range(4)], columns=CELEBA_ATTRIBUTES))
    assert torch.equal(by_index[2]["attributes"], torch.eye(4, 40)[2])


@pytest.mark.slow
def test_every_attribute_is_readable_from_pixels():
    # the bar the world must meet before any model can be asked to encode an attribute
    from hdae_core.oracle import attribute_auroc, train_oracle

    oracle, _ = train_oracle(size=32, n_train=12_000, steps=375, n_test=500, progress=False)
    b = Shapes(32, seed=0, length=14_000, correlation=None).batch(range(12_000, 13_500))
    auroc = attribute_auroc(oracle, b["image"], b["attributes"])
    assert set(auroc) == set(Shapes.attribute_names)
    assert min(auroc.values()) >= 0.97, auroc
