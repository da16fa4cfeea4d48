"""Caches are keyed by what they were fitted on: the same model reuses, another model or changed weights refit."""
import json
import shutil

import pytest
import torch

from hdae_core import HDAE, ModelConfig, cache, pipeline, pretrained
from hdae_core import checkpoint as ck
from hdae_core.data import open_data
from hdae_core.directions import directions_for


def _model(seed: int) -> HDAE:
    torch.manual_seed(seed)
    return HDAE(ModelConfig.preset("tiny", "hdae_u")).eval()


@pytest.fixture(scope="module")
def src():
    return open_data(None, size=16)


def test_model_identity_follows_the_weights():
    a, b = _model(0), _model(1)
    assert cache.model_identity(a) == cache.model_identity(_model(0))
    assert cache.model_identity(a) != cache.model_identity(b)
    with torch.no_grad():
        next(a.parameters()).view(-1)[0] += 1e-3
    assert cache.model_identity(a) != cache.model_identity(_model(0))


def test_directions_same_model_reuses_another_model_refits(src, tmp_path):
    entry = tmp_path / "report" / "classifiers_hdae_u"
    first, where = directions_for(_model(0), src, n_encode=64, cache_dir=entry)
    assert "fitted here" in where and "no directions cached" in where
    assert cache.read_identity(entry)["model"] == cache.model_identity(_model(0))
    again, where = directions_for(_model(0), src, n_encode=64, cache_dir=entry)
    assert where.startswith("directions loaded from") and torch.equal(again.weight, first.weight)
    # a second model of the same variant in the same report folder: its own directions, and the reason
    other, where = directions_for(_model(1), src, n_encode=64, cache_dir=entry)
    assert "fitted here" in where and "another model" in where
    assert not torch.equal(other.weight, first.weight)
    assert cache.read_identity(entry)["model"] == cache.model_identity(_model(1))
    # other fitting parameters are another entry too
    _, where = directions_for(_model(1), src, n_encode=48, cache_dir=entry)
    assert "fitted here" in where and "data" in where


def test_a_checkpoint_whose_weights_file_changed_refits(src, tmp_path):
    folder = tmp_path / "ck"
    ck.save(_model(0), folder)
    entry = tmp_path / "classifiers"
    _, where = directions_for(ck.load(folder), src, n_encode=64, cache_dir=entry)
    assert "fitted here" in where
    _, where = directions_for(ck.load(folder), src, n_encode=64, cache_dir=entry)
    assert where.startswith("directions loaded")
    ck.save(_model(2), tmp_path / "ck2")
    for f in (tmp_path / "ck2").glob("*.safetensors"):  # the same folder, other weights
        shutil.copyfile(f, folder / f.name)
    _, where = directions_for(ck.load(folder), src, n_encode=64, cache_dir=entry)
    assert "fitted here" in where and "another model" in where


def test_fetch_keeps_a_folder_that_is_not_a_cache_entry(tmp_path):
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "thesis.txt").write_text("mine")
    value, where = cache.fetch(mine, {"k": 1}, lambda: 3, lambda v, f: (f / "v.json").write_text(json.dumps(v)),
                               lambda f: json.loads((f / "v.json").read_text()), "numbers")
    assert value == 3 and "not cached" in where
    assert (mine / "thesis.txt").read_text() == "mine" and not (mine / "v.json").exists()


def test_an_interrupted_entry_is_refitted(tmp_path):
    entry = tmp_path / "entry"
    calls = []

    def fit():
        calls.append(1)
        return 5

    def save(v, f):
        (f / "v.json").write_text(json.dumps(v))

    def load(f):
        return json.loads((f / "v.json").read_text())

    cache.fetch(entry, {"k": 1}, fit, save, load, "numbers")
    assert cache.fetch(entry, {"k": 1}, fit, save, load, "numbers")[0] == 5 and len(calls) == 1
    (entry / "v.json").unlink()  # damaged: the identity is there, the value is not
    value, where = cache.fetch(entry, {"k": 1}, fit, save, load, "numbers")
    assert value == 5 and len(calls) == 2 and "could not be read" in where


def test_an_oracle_of_other_steps_is_not_reused(tmp_path):
    empty = tmp_path / "no_shipped"
    empty.mkdir()
    kw = dict(pretrained_dir=empty, seed=0)
    _, where = pretrained.load_oracle(16, tmp_path / "oracle", train_steps=2, **kw)
    assert "fitted here" in where
    _, where = pretrained.load_oracle(16, tmp_path / "oracle", train_steps=2, **kw)
    assert "loaded from" in where
    _, where = pretrained.load_oracle(16, tmp_path / "oracle", train_steps=3, **kw)
    assert "fitted here" in where and "steps (2 there, 3 here)" in where


def test_out_elsewhere_reads_and_writes_its_own_caches(tmp_path):
    for profile in ("full", "smoke"):
        p06 = pipeline.parameters_for(profile, "06_editing", tmp_path / "elsewhere", {})
        p07 = pipeline.parameters_for(profile, "07_editor", tmp_path / "elsewhere", {})
        assert p06["directions_dir"] == str(tmp_path / "elsewhere" / "05_directions")
        assert p07["directions_cache"] == str(tmp_path / "elsewhere" / "05_directions")
        for name in ("06_editing", "07_editor", "08_layout", "09_sampling"):
            params = pipeline.parameters_for(profile, name, tmp_path / "elsewhere", {})
            assert params["oracle_dir"].startswith(str(tmp_path / "elsewhere")), (name, params["oracle_dir"])


def test_the_editor_takes_05s_directions_only_for_its_own_model(src, tmp_path):
    from hdae_core.widgets import state_from_checkpoint

    folder = tmp_path / "ck"
    ck.save(_model(0), folder)
    report = tmp_path / "05_directions"
    directions_for(ck.load(folder), open_data(None, size=16, train_seed=0), n_encode=64,
                   cache_dir=report / "classifiers_hdae_u")
    state = state_from_checkpoint(folder, n_images=2, steps=2, n_stats=32, directions_cache=report)
    assert state.directions_source.startswith("directions loaded from")
    other = tmp_path / "ck2"
    ck.save(_model(1), other)
    state = state_from_checkpoint(other, n_images=2, steps=2, n_stats=32, directions_cache=report)
    assert state.directions_source.startswith("fitted here on 32")
    assert "none of 1 cached directions" in state.directions_source


def test_a_shipped_pixel_oracle_is_used_only_for_the_training_asked_for(tmp_path):
    shipped_root = tmp_path / "pretrained"
    net, _ = pretrained.load_pixel_oracle(16, tmp_path / "work", train_steps=2, pretrained_dir=shipped_root)
    shutil.copytree(tmp_path / "work" / "pixel_size16", shipped_root / "shapes16_pixel_oracle")
    _, where = pretrained.load_pixel_oracle(16, tmp_path / "elsewhere", train_steps=2, pretrained_dir=shipped_root)
    assert where.startswith("pixel oracle shipped in")
    _, where = pretrained.load_pixel_oracle(16, tmp_path / "elsewhere", train_steps=3, pretrained_dir=shipped_root)
    assert "fitted here" in where  # asked for other training: the shipped one is not used
    _, where = pretrained.load_pixel_oracle(16, tmp_path / "elsewhere", train_steps=2, pretrained_dir=shipped_root,
                                            refit=True)
    assert "fitted here" in where and "refit asked for" in where


def test_a_shipped_latent_ddim_is_used_only_for_its_identity(tmp_path):
    from hdae_core import latent

    calls = []

    def fit():
        calls.append(1)
        cfg = latent.LatentConfig(code_levels=1, code_dim=4, width=8, depth=2)
        codes = torch.randn(32, 1, 4)
        stats = latent.LatentStats.from_codes(codes)
        return latent.train_latent(codes, stats, cfg, steps=2, progress=False), stats

    ident = {"kind": "latent_ddim", "model": "abc", "steps": 2}
    lm, _, where = latent.load_or_fit(ident, fit, tmp_path / "shipped", tmp_path / "cache")
    assert "fitted here" in where and len(calls) == 1
    shutil.copytree(tmp_path / "cache", tmp_path / "shipped")
    _, _, where = latent.load_or_fit(ident, fit, tmp_path / "shipped", tmp_path / "cache2")
    assert where.startswith("latent DDIM shipped in") and len(calls) == 1
    _, _, where = latent.load_or_fit({**ident, "model": "other"}, fit, tmp_path / "shipped", tmp_path / "cache2")
    assert "fitted here" in where and len(calls) == 2
    assert cache.read_identity(tmp_path / "shipped")["model"] == "abc"  # the shipped entry is never rewritten
