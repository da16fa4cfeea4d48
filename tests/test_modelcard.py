import json

import pytest

from hdae_core import ModelConfig
from hdae_core import train as T
from hdae_core.checkpoint import load
from hdae_core.modelcard import export_run

pytestmark = pytest.mark.slow  # each trains a run and measures its quality, 30-45 s


def test_export_run_writes_card_weights_and_quality(tmp_path):
    run = tmp_path / "run"
    T.train(T.TrainConfig(model=ModelConfig.preset("tiny", "hdae_u"), out=str(run), steps=2, batch_size=2,
                          eval_every=0, progress=False, tensorboard=False))
    info = export_run(run, tmp_path / "ship", command="hdae train ...", n_eval=4, progress=False,
                      device="cpu", note="shared the machine with two other runs")
    ship = tmp_path / "ship"
    assert {"config.json", "model.safetensors", "metrics.csv", "quality.json", "README.md"} <= {p.name for p in ship.iterdir()}
    assert not (ship / "ema.safetensors").exists()  # only the EMA weights ship, as the model
    q = json.loads((ship / "quality.json").read_text())
    assert q["n_images"] == 4 and 0 <= q["mse_mean_colour_baseline"] < 1
    # an untrained model cannot carry the content: it must fail the bar
    assert q["passes"] is False and q["passes_with_diffae_inversion"] is False and info["images_seen"] == 4
    assert 0 <= q["mse_encoded_T100"] and 0 <= q["mse_encoded_T100_diffae_inversion"]
    card = (ship / "README.md").read_text()
    assert "does not yet pass" in card and "DiffAE's inversion" in card
    assert "- note: shared the machine with two other runs" in card
    assert "CPU cores" in info["hardware"]  # recorded by train() in the checkpoint
    load(ship)


def test_export_records_every_command_of_a_resumed_run(tmp_path):
    import pytest

    run = tmp_path / "run"
    T.train(T.TrainConfig(model=ModelConfig.preset("tiny", "dae"), out=str(run), steps=1, batch_size=2,
                          eval_every=0, progress=False, tensorboard=False))
    cmds = ["hdae train --batch 32 --steps 8000", "hdae train --batch 256 --steps 9700"]
    info = export_run(run, tmp_path / "ship", command=cmds, n_eval=2, progress=False, device="cpu")
    card = (tmp_path / "ship" / "README.md").read_text()
    assert "- commands, in order" in card
    assert card.index(f"1. `{cmds[0]}`") < card.index(f"2. `{cmds[1]}`")
    assert info["command"] == cmds and load(tmp_path / "ship") is not None
    with pytest.raises(ValueError, match="command"):
        export_run(run, tmp_path / "ship2", command=[], n_eval=2, progress=False, device="cpu")


def test_the_card_describes_the_runs_own_preset_data_and_weights(tmp_path):
    from PIL import Image

    from hdae_core import checkpoint as ck

    data = tmp_path / "imgs"
    data.mkdir()
    for i in range(6):
        Image.new("RGB", (16, 16), (40 * i, 90, 30)).save(data / f"{i}.png")
    run = tmp_path / "run"
    T.train(T.TrainConfig(model=ModelConfig.preset("tiny", "dae"), out=str(run), data=str(data), steps=1,
                          batch_size=2, eval_every=0, eval_size=2, progress=False, tensorboard=False))
    info = export_run(run, tmp_path / "ship", command="hdae train ...", n_eval=4, progress=False, device="cpu")
    card = (tmp_path / "ship" / "README.md").read_text()
    assert "preset `tiny`" in card and f"the images of `{data}`, less the 2 held out" in card
    assert "shapes32" not in card and "Shapes" not in card and "the EMA weights" in card
    assert info["quality"]["n_images"] == 2 and "2 of the run's held-out images" in card
    # the same run's checkpoint without EMA weights
    meta = ck.read_config(run / "checkpoint")
    ck.save(ck.load(run / "checkpoint", ema=False), run / "checkpoint", extra=meta["extra"])
    export_run(run, tmp_path / "ship2", command="hdae train ...", n_eval=2, progress=False, device="cpu")
    card = (tmp_path / "ship2" / "README.md").read_text()
    assert "EMA weights" not in card and "it kept no EMA" in card


def test_a_shapes_card_names_the_seed_it_trained_on(tmp_path):
    run = tmp_path / "run"
    T.train(T.TrainConfig(model=ModelConfig.preset("tiny", "hdae_e"), out=str(run), steps=1, batch_size=2, seed=3,
                          eval_every=0, progress=False, tensorboard=False))
    export_run(run, tmp_path / "ship", command="hdae train ...", n_eval=2, progress=False, device="cpu")
    card = (tmp_path / "ship" / "README.md").read_text()
    assert "at preset `tiny` (16 px), trained on the built-in `Shapes(size=16, seed=3)`" in card
