"""Write notebooks/07_editor.ipynb (no outputs; the first code cell is tagged ``parameters``).

Run ``python notebooks/_build_editor.py`` after editing the cells below; the notebook is generated, not hand-edited.
"""
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

INTRO = """\
# 07 · Interactive editor

Attribute editing with truncated features (HDAE §3.3, Eq. 1–2) and style mixing (Fig. 7) in one panel:
every nonzero slider adds α·√(D·L)·n′/‖n′‖ to the standardised code (n′ restricted to the ticked levels
and truncated to its top-k entries), the ticked partner levels then replace the image's, and DDIM decodes
with the image's own inverted x_T (inverted once per image). Upload a PNG/JPEG to edit your own picture
(centre-cropped and resized to the model's size).

Serve it as an app with `voila notebooks/07_editor.ipynb`; voila cannot pass papermill parameters, so the
defaults below read `HDAE_EDITOR_*` environment variables. Run non-interactively (papermill), it also
renders one example edit into `out_dir` (`editor_example.png`: original | reconstruction | edited, and
`metrics.json`)."""

PARAMETERS = """\
import os

checkpoint = os.environ.get("HDAE_EDITOR_CHECKPOINT", "data/pretrained/shapes32_hdae_u")  # folder or demo-model name
n_images = int(os.environ.get("HDAE_EDITOR_N_IMAGES", "8"))  # gallery: held-out built-in shapes
steps = int(os.environ.get("HDAE_EDITOR_STEPS", "20"))  # DDIM steps for inversion and decoding
n_stats = int(os.environ.get("HDAE_EDITOR_N_STATS", "512"))  # shapes encoded for statistics / classifiers
directions_dir = os.environ.get("HDAE_EDITOR_DIRECTIONS", "")  # a saved AttributeClassifiers folder; empty: train here
out_dir = os.environ.get("HDAE_EDITOR_OUT_DIR", "reports/07_editor")
threads = int(os.environ.get("HDAE_EDITOR_THREADS", "1"))  # small convolutions gain nothing from more
example_attribute = os.environ.get("HDAE_EDITOR_EXAMPLE_ATTRIBUTE", "")  # empty: the first attribute
example_alpha = float(os.environ.get("HDAE_EDITOR_EXAMPLE_ALPHA", "1.0"))"""

SETUP = """\
import json
import time

import torch

from hdae_core import pretrained
from hdae_core.widgets import Editor, png_bytes

torch.set_num_threads(threads)
try:
    ckpt_path = pretrained.resolve(checkpoint)  # a folder, a run folder or a name under data/pretrained
except FileNotFoundError as e:
    print(f"{e}\\n-> using the tiny stand-in the smoke profile trains (reused from reports/_tmp; weak edits)")
    ckpt_path = pretrained.demo_models(profile="smoke")["hdae_u"]
print("checkpoint:", ckpt_path)"""

BUILD = """\
t0 = time.perf_counter()
directions = None
if directions_dir:
    d = pretrained.repo_path(directions_dir)
    if (d / "directions.safetensors").is_file():
        directions = d
    else:
        print(f"{d}: no directions.safetensors; training classifiers on {n_stats} shapes instead")
editor = Editor.from_checkpoint(ckpt_path, n_images=n_images, steps=steps, n_stats=n_stats, directions=directions)
cfg = editor.model.config
print(f"{cfg.variant} at {cfg.image_size} px, codes [{editor.L}, {editor.D}], "
      f"{len(editor.attribute_names)} attributes; ready in {time.perf_counter() - t0:.1f} s")
display(editor)"""

EXAMPLE_MD = """\
## One edit, written to `out_dir`

Skipped under voila (an interactive session needs no files); papermill runs it."""

EXAMPLE = """\
interactive = any(k in os.environ for k in ("VOILA_BASE_URL", "VOILA_SERVER_URL", "VOILA_KERNEL_ID"))
if not interactive:
    out = pretrained.repo_path(out_dir)  # relative paths are from the repository root
    out.mkdir(parents=True, exist_ok=True)
    name = example_attribute or editor.attribute_names[0]
    editor.reset()
    base = editor.render()  # the α = 0 reconstruction; includes the one-off DDIM inversion
    first_s = editor.last_seconds
    editor.set_attribute(name, example_alpha)
    edited = editor.render()
    x0 = editor.images[editor.index]
    u8 = lambda x: ((x.clamp(-1, 1) + 1) * 127.5).round()
    changed = float(((u8(edited) - u8(base)).abs().amax(0) > 2).float().mean())  # > 2 grey levels in any channel
    (out / "editor_example.png").write_bytes(png_bytes([x0, base, edited], scale=editor.scale))
    metrics = {"checkpoint": str(checkpoint), "variant": cfg.variant, "image_size": cfg.image_size,
               "steps": steps, "attribute": name, "alpha": example_alpha,
               "first_render_seconds": round(first_s, 3), "render_seconds": round(editor.last_seconds, 3),
               "changed_pixel_fraction": round(changed, 4),
               "mse_edit_vs_reconstruction": float(((edited - base) ** 2).mean())}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\\n")
    print(json.dumps(metrics, indent=2))
    from IPython.display import Image

    display(Image(data=(out / "editor_example.png").read_bytes()))"""


def build() -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.cells = [
        new_markdown_cell(INTRO),
        new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}),
        new_code_cell(SETUP),
        new_code_cell(BUILD),
        new_markdown_cell(EXAMPLE_MD),
        new_code_cell(EXAMPLE),
    ]
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"editor-{i:02d}"  # stable ids: regenerating gives the same file
    return nb


if __name__ == "__main__":
    path = Path(__file__).with_name("07_editor.ipynb")
    nb = build()
    nbformat.validate(nb)
    nbformat.write(nb, str(path))
    print("wrote", path)
