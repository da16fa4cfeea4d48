"""The user's images and attributes as study data: three attribute formats, splits, notes and clear errors."""
import numpy as np
import pytest
import torch

from hdae_core import directions, pretrained
from hdae_core.data import open_data, read_attributes
from hdae_core.data.attributes import attribute_format
from userdata_helpers import RENAMED, celeba_file, csv_file, shapes_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces")
    info = shapes_folder(root / "img", n=40, size=32)
    return root, info


def test_three_formats_read_the_same_table(folder):
    root, info = folder
    files, y, names = info["files"], info["attributes"], info["names"]
    celeba = celeba_file(root / "list_attr_celeba.txt", files, y, names)
    mask = celeba_file(root / "CelebAMask-HQ-attribute-anno.txt", files, y, names, jpg_unpadded=True)
    csv = csv_file(root / "attrs.csv", files, y, names, continuous={"pos_x": info["pos_x"]})
    assert [attribute_format(p) for p in (celeba, mask, csv)] == ["celeba", "celeba", "csv"]
    for p in (celeba, mask, csv):
        df, kinds = read_attributes(p)
        assert list(df.columns[:4]) == names and len(df) == 40
        assert np.array_equal(df[names].to_numpy(), (y > 0.5).astype(np.int8)), p.name
    df, kinds = read_attributes(csv)
    assert kinds == {**{n: "binary" for n in names}, "pos_x": "continuous"}
    assert np.allclose(df["pos_x"].to_numpy(), info["pos_x"], atol=1e-4)


@pytest.mark.parametrize("fmt", ["celeba", "mask", "csv"])
def test_images_pair_with_rows_and_unannotated_ones_are_counted(folder, tmp_path, fmt):
    root, info = folder
    files, y, names = info["files"][:30], info["attributes"][:30], info["names"]  # 10 images without a row
    if fmt == "csv":
        path = csv_file(tmp_path / "a.csv", files, y, names)
    else:
        path = celeba_file(tmp_path / "a.txt", files, y, names, jpg_unpadded=fmt == "mask")
    src = open_data(root / "img", path, size=32)
    d = src.describe()
    assert d["images"] == 40 and d["without_annotation"] == 10 and d["attributes"] == names
    assert any("10 of 40 images have no row" in n for n in d["notes"])
    assert sum(d["splits"].values()) == 30 and d["splits"]["heldout"] == 6
    b = src.batch(6)
    by_name = dict(zip(files, y))
    for name, a in zip(b["names"], b["attributes"]):  # every held-out image carries its own row
        assert np.array_equal(a.numpy(), by_name[name])
    train = set(src.split("train").names)
    assert not train & set(b["names"]) and not train & set(src.split("judge").names)


def test_size_note_and_shapes_default(folder):
    root, _ = folder
    src = open_data(root / "img", None, size=16)
    assert any("32x32 px" in n and "downscaled to 16" in n for n in src.describe()["notes"])
    assert src.images(3).shape == (3, 3, 16, 16) and not src.has_attributes
    assert src.needs_ground_truth("label maps").startswith("needs the Shapes world's ground truth")
    shapes = open_data(None, None, size=16)
    assert shapes.ground_truth and shapes.needs_ground_truth("x") is None and "red" in shapes.attribute_names


def test_bad_inputs_are_clear_errors(folder, tmp_path):
    root, info = folder
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images in"):
        open_data(tmp_path / "empty", None, size=32)
    other = celeba_file(tmp_path / "other.txt", ["a.jpg", "b.jpg"], np.ones((2, 4)), info["names"])
    with pytest.raises(ValueError, match="none of the 2 rows of .* names an image"):
        open_data(root / "img", other, size=32)
    with pytest.raises(FileNotFoundError, match="not a file"):
        open_data(root / "img", tmp_path / "missing.csv", size=32)
    bad = tmp_path / "bad.csv"
    bad.write_text("filename,Smiling\n00000.png,yes\n")
    with pytest.raises(ValueError, match=r"bad\.csv, line 2 \('00000\.png'\), column 'Smiling': 'yes' is not a finite number"):
        read_attributes(bad)
    (tmp_path / "notack").mkdir()
    (tmp_path / "notack" / "weights.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match="not an hdae checkpoint"):
        pretrained.load(tmp_path / "notack")
    with pytest.raises(ValueError, match="hdae import-diffae"):
        pretrained.load(tmp_path / "notack" / "weights.pt")


def test_binary_and_continuous_directions_and_the_judge():
    g = torch.Generator().manual_seed(0)
    codes = torch.randn(200, 2, 8, generator=g)
    binary = (codes[:, 0, 0] > 0).float()
    angle = 3.0 * codes[:, 1, 2] + 0.1 * torch.randn(200, generator=g)
    dirs = directions.train_directions(codes, torch.stack([binary, angle, torch.ones(200)], 1),
                                    ["smile", "yaw", "always"], kinds={"yaw": "continuous"})
    rep = dirs.meta["report"]
    assert dirs.names == ["smile", "yaw"] and "always" in dirs.meta["skipped"]
    assert rep["smile"]["auroc"] > 0.95 and rep["yaw"]["kind"] == "continuous" and rep["yaw"]["r2"] > 0.9
    assert dirs.direction("yaw").abs().argmax() == 1 * 8 + 2  # the regression weight sits on the one dimension
    scores = directions.direction_scores(dirs, codes, torch.stack([binary, angle], 1), ["smile", "yaw"],
                                      {"yaw": "continuous"})
    assert scores["smile"]["auroc"] > 0.95 and scores["yaw"]["r2"] > 0.9
