"""`hdae figures` on the user's model and images: the imported DiffAE fixture and a checkpoint trained on the spot,
Shapes rendered to PNG with a CelebA-format attribute file, end to end through the notebooks."""
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from hdae_core import ModelConfig, cli, pipeline
from hdae_core.diffae_import import import_diffae_folder
from hdae_core.train import TrainConfig, train
from userdata_helpers import celeba_file, shapes_folder

FIX = Path(__file__).parent / "fixtures" / "diffae"


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    root = tmp_path_factory.mktemp("user")
    info = shapes_folder(root / "img", n=60, size=32)  # 32 px images for 16 px models: resized, with a note
    attrs = celeba_file(root / "list_attr_celeba.txt", info["files"][:-10], info["attributes"][:-10], info["names"])
    diffae = import_diffae_folder(FIX / "tiny_last.ckpt", root / "diffae", latent=FIX / "tiny_latent.pkl",
                                  classifier=FIX / "tiny_cls.ckpt")
    torch.manual_seed(0)
    run = root / "run"
    train(TrainConfig(model=ModelConfig.preset("tiny", "hdae_u"), out=str(run), data=str(root / "img"), steps=6,
                      batch_size=8, eval_every=0, eval_size=8, ckpt_every=6, log_every=3, progress=False,
                      tensorboard=False))
    return {"root": root, "info": info, "attrs": attrs, "diffae": diffae, "run": run}


def test_bad_inputs_stop_before_anything_is_written(faces, tmp_path, capsys):
    out = tmp_path / "reports"
    out.mkdir()
    (out / "keep.txt").write_text("an earlier report")
    (tmp_path / "empty").mkdir()
    other = celeba_file(tmp_path / "other.txt", ["x1.jpg"], faces["info"]["attributes"][:1], faces["info"]["names"])
    (tmp_path / "last.ckpt").write_bytes(b"not ours")
    base = ["figures", "--out", str(out), "--no-progress"]
    cases = {
        "no images in": ["--checkpoint", str(faces["run"]), "--data", str(tmp_path / "empty")],
        "none of the 1 rows": ["--checkpoint", str(faces["run"]), "--data", str(faces["root"] / "img"),
                               "--attributes", str(other)],
        "hdae import-diffae": ["--checkpoint", str(tmp_path / "last.ckpt"), "--data", str(faces["root"] / "img")],
        "not an hdae checkpoint": ["--checkpoint", str(tmp_path / "empty"), "--data", str(faces["root"] / "img")],
    }
    for message, args in cases.items():
        assert cli.main(base + args) == 2, message
        assert message in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]  # nothing written, nothing lost


@pytest.mark.slow
def test_figures_on_the_users_model_and_images(faces, tmp_path):
    out = tmp_path / "reports_faces"
    summary = pipeline.run(profile="smoke", reports=out, progress=False, checkpoint=str(faces["run"]),
                           checkpoint_dae=str(faces["diffae"]), data=str(faces["root"] / "img"),
                           attributes=str(faces["attrs"]))
    nbs = summary["notebooks"]
    assert summary["ok"], {n: r["error"] for n, r in nbs.items()}
    assert nbs["01_train"]["status"] == nbs["02_ablation"]["status"] == "not run"
    index = (out / "index.md").read_text()
    for name in faces["info"]["names"]:  # the user's attribute names, not Shapes'
        assert name in index
    assert "list_attr_celeba.txt" in index and "10 without an annotation row" in index

    # Table 1 on the user's held-out images, both models
    held = pd.read_csv(out / "03_reconstruction" / "heldout_images.csv")["image"].tolist()
    assert held and set(held) <= set(faces["info"]["files"][:-10])
    table = pd.read_csv(out / "03_reconstruction" / "table1.csv")
    assert set(table["model"]) == {"DAE", "HDAE(U)", "mean colour"} and (table["n"] == len(held)).all()
    m03 = nbs["03_reconstruction"]["metrics"]
    assert m03["data"]["without_annotation"] == 10 and any("downscaled to 16" in n for n in m03["data"]["notes"])

    # directions from the user's attributes; edits scored by classifiers, named so; ground-truth parts skipped
    auroc = pd.read_csv(out / "05_directions" / "auroc.csv")
    assert set(auroc["attribute"]) <= set(faces["info"]["names"]) and len(auroc)
    m06 = nbs["06_editing"]["metrics"]
    assert m06["edit_scorer"].startswith("classifier-based") and "oracle" in "".join(m06["skipped"])
    assert "label maps" in nbs["08_layout"]["metrics"]["skipped"]["layout encoder and layout-guided synthesis (Fig. 11)"]
    assert "Shapes world's ground truth" in index and "tiers of the hierarchy" in index
    m07 = json.loads((out / "07_editor" / "metrics.json").read_text())
    assert m07["attribute"] in faces["info"]["names"] or m07.get("skipped")
