import json

import pytest
import torch

from hdae_core import HDAE, ModelConfig
from hdae_core import checkpoint as ck


def _model(variant="hdae_u"):
    m = HDAE(ModelConfig.preset("tiny", variant))
    for p in m.parameters():  # non-zero everywhere so outputs depend on every tensor
        torch.nn.init.normal_(p, std=0.02)
    return m.eval()


def test_save_load_bit_identical(tmp_path):
    m = _model()
    ema = _model()
    ck.save(m, tmp_path / "c", ema=ema)
    assert {p.name for p in (tmp_path / "c").iterdir()} == {"config.json", "model.safetensors", "ema.safetensors"}
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    t = torch.tensor([3, 600])
    for loaded, ref in [(ck.load(tmp_path / "c"), ema), (ck.load(tmp_path / "c", ema=False), m)]:
        codes = ref.encode(x)
        assert torch.equal(loaded.encode(x), codes)
        assert torch.equal(loaded.decoder(x, t, codes), ref.decoder(x, t, codes))
        assert loaded.config == ref.config


def test_overwrite_is_atomic_and_leaves_no_temp(tmp_path):
    m = _model()
    ck.save(m, tmp_path / "c")
    ck.save(_model(), tmp_path / "c")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_other_config_is_refused(tmp_path):
    ck.save(_model("hdae_u"), tmp_path / "c")
    meta = json.loads((tmp_path / "c" / "config.json").read_text())
    meta["model"]["variant"] = "dae"
    (tmp_path / "c" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ck.CheckpointError, match=r"model.safetensors: weights do not match the config"):
        ck.load(tmp_path / "c")


def test_missing_and_truncated_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint folder not found"):
        ck.load(tmp_path / "nope")
    ck.save(_model(), tmp_path / "c")
    w = tmp_path / "c" / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(ck.CheckpointError, match=r"model.safetensors: unreadable weights .*truncated"):
        ck.load(tmp_path / "c")
    (tmp_path / "c" / "config.json").unlink()
    with pytest.raises(ck.CheckpointError, match=r"config.json: missing"):
        ck.load(tmp_path / "c")


def test_nothing_is_unpickled(tmp_path):
    """A pickle planted as the weights file is rejected as unreadable, never executed."""
    ck.save(_model(), tmp_path / "c")
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {marker}",))

    torch.save({"x": Evil()}, tmp_path / "c" / "model.safetensors")
    with pytest.raises(ck.CheckpointError):
        ck.load(tmp_path / "c", ema=False)
    assert not marker.exists()
