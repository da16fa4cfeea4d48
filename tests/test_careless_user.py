"""A careless user's inputs: each is refused in one line that names it and says what to do, before anything is
written, and nothing the user already had is lost."""
import json

import pytest
from PIL import Image

from hdae_core import cli, pipeline
from hdae_core.publish import NotPublishable, publish


# ---------------------------------------------------------------- hdae publish


def _report(root):
    """A full report as `hdae figures` writes it (the fields publish reads)."""
    nbs = {}
    for name in pipeline.NOTEBOOKS:
        (root / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(root / name / "figure.png")
        nbs[name] = {"status": "ok", "seconds": 1.0, "figures": ["figure.png"], "tables": [], "metrics": {}}
    summary = {"profile": "full", "notebooks": nbs, "ran": list(nbs), "inputs": {}, "written": "now"}
    (root / "summary.json").write_text(json.dumps(summary))
    return root


def _edit_summary(report, change):
    s = json.loads((report / "summary.json").read_text())
    change(s["notebooks"][pipeline.NOTEBOOKS[0]])
    (report / "summary.json").write_text(json.dumps(s))


def test_publish_never_writes_outside_dest_for_a_figure_named_with_dotdot(tmp_path):
    report = _report(tmp_path / "report")
    (tmp_path / "outside.png").write_bytes(b"the report's neighbour")
    _edit_summary(report, lambda r: r.update(figures=["../../outside.png"]))
    with pytest.raises(NotPublishable, match=r"figures holds '\.\./\.\./outside\.png'.*no '\.\.'"):
        publish(report, tmp_path / "docs")
    assert not (tmp_path / "docs").exists()


def test_publish_never_deletes_what_a_hand_edited_results_md_lists_outside_figures(tmp_path):
    report, docs = _report(tmp_path / "report"), tmp_path / "docs"
    publish(report, docs)
    (tmp_path / "mine.txt").write_text("mine")
    (docs / "notes.png").write_bytes(b"mine too")
    results = docs / "results.md"
    text = results.read_text().replace("<!-- published by hdae publish: ",
                                       "<!-- published by hdae publish: ../mine.txt figures/../notes.png notes.png ")
    results.write_text(text)
    publish(report, docs)
    assert (tmp_path / "mine.txt").read_text() == "mine" and (docs / "notes.png").read_bytes() == b"mine too"


@pytest.mark.parametrize("change", [
    lambda r: r.clear() or r.update(ok=1),  # status missing: refused by the status check, as before
    lambda r: r.update(figures="figure.png"),
    lambda r: r.update(tables=[3]),
    lambda r: r.update(seconds="long"),
])
def test_publish_refuses_a_summary_of_another_shape_in_one_line(tmp_path, change, capsys):
    report = _report(tmp_path / "report")
    _edit_summary(report, change)
    assert cli.main(["publish", str(report), str(tmp_path / "docs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hdae: error: ") and err.count("\n") == 1 and str(report) in err
    assert not (tmp_path / "docs").exists()


def test_publish_refuses_a_notebook_entry_that_is_not_an_object(tmp_path, capsys):
    report = _report(tmp_path / "report")
    s = json.loads((report / "summary.json").read_text())
    s["notebooks"][pipeline.NOTEBOOKS[0]] = "ok"
    (report / "summary.json").write_text(json.dumps(s))
    assert cli.main(["publish", str(report), str(tmp_path / "docs")]) == 2
    err = capsys.readouterr().err
    assert "not a JSON object" in err and err.count("\n") == 1


def test_publish_refuses_a_dest_that_is_a_file(tmp_path, capsys):
    report = _report(tmp_path / "report")
    (tmp_path / "dest").write_text("mine")
    assert cli.main(["publish", str(report), str(tmp_path / "dest")]) == 2
    assert "is a file, not a folder; choose another DEST" in capsys.readouterr().err
    assert (tmp_path / "dest").read_text() == "mine"


# ---------------------------------------------------------------- hdae train


def _images(folder, n, size=(16, 16)):
    folder.mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", size, (40 * i, 100, 50)).save(folder / f"im{i}.png")
    return folder


def _train_args(data, out, *extra):
    return ["train", "--preset", "tiny", "--steps", "2", "--eval-size", "1", "--eval-every", "0",
            "--no-progress", "--no-tensorboard", "--data", str(data), "--out", str(out), *extra]


def test_train_with_a_batch_larger_than_the_data_names_batch_and_leaves_the_folder_reusable(tmp_path, capsys):
    data, out = _images(tmp_path / "imgs", 3), tmp_path / "run"
    assert cli.main(_train_args(data, out, "--batch", "64")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--batch 64" in err and "lower --batch" in err and str(data) in err
    assert [p.name for p in out.iterdir() if p.name != ".train.lock"] == []
    # the corrected command runs in the same folder, without --resume
    assert cli.main(_train_args(data, out, "--batch", "2")) == 0
    assert (out / "checkpoint" / "config.json").is_file()


def test_a_new_run_that_fails_before_its_first_row_leaves_no_run_behind(tmp_path, monkeypatch):
    from hdae_core import train as train_mod

    def broken(*a, **k):
        raise RuntimeError("the first batch could not be read")
        yield

    data, out = _images(tmp_path / "imgs", 4), tmp_path / "run"
    monkeypatch.setattr(train_mod, "batches", broken)
    assert cli.main(_train_args(data, out, "--batch", "2")) == 1
    assert [p.name for p in out.iterdir() if p.name != ".train.lock"] == []
    monkeypatch.undo()
    assert cli.main(_train_args(data, out, "--batch", "2")) == 0


def test_a_run_that_got_a_checkpoint_keeps_its_record_when_a_later_start_fails(tmp_path, capsys):
    data, out = _images(tmp_path / "imgs", 4), tmp_path / "run"
    assert cli.main(_train_args(data, out, "--batch", "2")) == 0
    before = sorted(p.name for p in out.iterdir())
    assert cli.main(_train_args(data, out, "--batch", "64", "--resume", "--steps", "4")) == 2
    assert "lower --batch" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == before


# ---------------------------------------------------------------- the editor's recipes


@pytest.fixture(scope="module")
def editor_setup():
    import torch

    from hdae_core import HDAE, ModelConfig
    from hdae_core.data import Shapes
    from hdae_core.stats import LatentStats

    torch.manual_seed(0)
    m = HDAE(ModelConfig.preset("tiny", "hdae_u")).eval()
    x = Shapes(size=16, seed=3).batch(range(4))["image"]
    with torch.no_grad():
        stats = LatentStats.from_codes(m.encode(x))
    return m, stats, {"red": torch.randn(m.num_levels, m.code_dim)}, x


def _state(editor_setup):
    from hdae_core.editor_state import EditorState

    m, stats, dirs, x = editor_setup
    return EditorState(m, stats, dirs, images=x, steps=2)


def _settings(st):
    return (st.index, dict(st.alphas), st.k, st.edit_levels, st.partner, st.mix_levels, st.steps, st.x_T_mode,
            st.seed, len(st.images))


BAD_RECIPES = {
    "k": ("k", "5"), "k_range": ("k", 10**9), "edit_levels": ("edit_levels", [99]),
    "edit_levels_text": ("edit_levels", "all"), "steps": ("steps", 0), "steps_text": ("steps", "ten"),
    "steps_ddim": ("steps", 1001), "alphas": ("alphas", ["red"]), "alpha": ("alphas", {"red": "big"}),
    "partner": ("partner", "image 0"), "partner_levels": ("partner", {"index": 0, "name": "image 0", "levels": [5]}),
    "partner_index": ("partner", {"index": 99, "name": "image 0", "levels": [0]}),
    "seed": ("x_T", {"mode": "own", "seed": "abc"}), "mode": ("x_T", {"mode": "mine", "seed": 0}),
    "model": ("model", None), "image_index": ("image", {"index": "2", "name": "image 2", "upload": False}),
    "image_file": ("image", {"index": 0, "name": "up", "upload": True, "file": "../elsewhere.png"}),
}


@pytest.mark.parametrize("case", sorted(BAD_RECIPES))
def test_a_hand_edited_recipe_is_refused_in_one_line_and_changes_nothing(editor_setup, tmp_path, case):
    from hdae_core.editor_state import RecipeError, apply_recipe, load_recipe, save_edit

    st = _state(editor_setup)
    st.select(1)
    st.set_attribute("red", 0.5)
    _, js = save_edit(st, tmp_path)
    r = json.loads(js.read_text())
    field, value = BAD_RECIPES[case]
    r[field] = value
    js.write_text(json.dumps(r))
    target = _state(editor_setup)
    target.select(3)
    target.set_attribute("red", -0.25)
    before = _settings(target)
    with pytest.raises(RecipeError) as e:
        apply_recipe(target, load_recipe(js))
    msg = str(e.value)
    assert "\n" not in msg and str(js) in msg and "nothing was changed" in msg
    assert _settings(target) == before


def test_a_recipe_still_replays_after_the_checks(editor_setup, tmp_path):
    from hdae_core.editor_state import apply_recipe, load_recipe, save_edit

    st = _state(editor_setup)
    st.select(2)
    st.set_attribute("red", 0.8)
    st.set_k(10)
    st.edit_levels = [1]
    st.set_partner(1, [0])
    st.set_x_T("random", 5)
    _, js = save_edit(st, tmp_path)
    saved = st.last_image.clone()
    fresh = apply_recipe(_state(editor_setup), load_recipe(js))
    assert (fresh.k, fresh.edit_levels, fresh.partner, fresh.mix_levels) == (10, [1], 1, [0])
    assert (fresh.render() == saved).all()


# ---------------------------------------------------------------- hdae figures --checkpoint


@pytest.mark.parametrize("damage", ["truncate", "remove", "config"])
def test_figures_refuses_a_checkpoint_with_damaged_weights_or_config_before_any_notebook(tmp_path, damage):
    import torch

    from hdae_core import HDAE, ModelConfig, checkpoint

    torch.manual_seed(0)
    ck = checkpoint.save(HDAE(ModelConfig.preset("tiny", "hdae_u")), tmp_path / "ck")
    weights, cfg = tmp_path / "ck" / "model.safetensors", tmp_path / "ck" / "config.json"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "remove":
        weights.unlink()
    else:
        meta = json.loads(cfg.read_text())
        meta["model"]["image_size"] = "big"
        cfg.write_text(json.dumps(meta))
    with pytest.raises(ValueError) as e:
        pipeline.check_inputs(checkpoint=str(ck))
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "ck") in msg
    assert ("image_size" in msg) if damage == "config" else ("missing or cut short" in msg)


def test_a_foreign_config_json_says_what_checkpoint_to_pass(tmp_path, capsys):
    # another project's config.json as --checkpoint: one line naming the file, the format wanted and what to pass
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text('{"name": "another project", "version": 3}')
    (other / "model.safetensors").write_bytes(b"")
    rc = cli.main(["figures", "--checkpoint", str(other), "--out", str(tmp_path / "rep")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("hdae: error: ") and err.count("\n") == 1, err
    assert "not an hdae checkpoint config" in err and "hdae import-diffae" in err and "hdae train" in err
    assert not (tmp_path / "rep").exists()


def test_a_train_command_refused_on_an_argument_leaves_no_out_folder(tmp_path, capsys):
    out = tmp_path / "new" / "run"
    assert cli.main(["train", "--preset", "tiny", "--out", str(out), "--steps", "-3"]) == 2
    assert "--steps" in capsys.readouterr().err and not (tmp_path / "new").exists()
    (tmp_path / "file").write_text("x")
    assert cli.main(["train", "--preset", "tiny", "--out", str(tmp_path / "file" / "run"), "--steps", "1"]) == 2
    assert "is a file" in capsys.readouterr().err
