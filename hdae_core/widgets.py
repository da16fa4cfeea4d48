"""The interactive editor (ipywidgets): attribute sliders with truncated features, level selection, style mixing.

HDAE §3.3 and Fig. 7 as one panel: every nonzero slider adds its manipulation α·√(D·L)·n′/‖n′‖ (in the
standardised space, n′ restricted to the ticked levels and truncated to its top k entries), then the ticked
partner levels replace the image's, and DDIM decodes with the image's own inverted x_T (inverted once per
image and cached). Notebooks only construct and display an ``Editor``; tests drive the same object.
"""
from __future__ import annotations

import html
import io
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any
from pathlib import Path

import torch
from PIL import Image

from . import cache, editing
from .checkpoint import load as load_checkpoint
from .data import Shapes, open_data
from .data.images import load_upload_full, paste_back
from .directions import DIRECTIONS_FILE, AttributeDirections, load_classifiers, load_directions, train_directions
from .model import encode_dataset
from .plots import image_grid
from .pretrained import repo_path, resolve
from .stats import STATS_FILE, LatentStats

__all__ = ["Editor", "EditorState", "state_from_checkpoint", "png_bytes", "editor_settings", "EDITOR_PARAMETERS"]



# 07_editor's parameters: (environment variable, type, default). Voila cannot pass parameters, so the served
# notebook reads the variables; a value given explicitly (papermill, `hdae figures`) wins over them.
EDITOR_PARAMETERS: dict[str, tuple[str, type, Any]] = {
    "checkpoint": ("HDAE_EDITOR_CHECKPOINT", str, "shapes32_hdae_u"),
    "data": ("HDAE_EDITOR_DATA", str, None),
    "attribute_file": ("HDAE_EDITOR_ATTRIBUTES", str, None),
    "n_images": ("HDAE_EDITOR_N_IMAGES", int, 8),
    "steps": ("HDAE_EDITOR_STEPS", int, 10),
    "n_stats": ("HDAE_EDITOR_N_STATS", int, 512),
    "directions_dir": ("HDAE_EDITOR_DIRECTIONS", str, None),
    "directions_cache": ("HDAE_EDITOR_DIRECTIONS_CACHE", str, "reports/05_directions"),
    "example_attribute": ("HDAE_EDITOR_EXAMPLE_ATTRIBUTE", str, None),
    "example_alpha": ("HDAE_EDITOR_EXAMPLE_ALPHA", float, 1.0),
    "oracle_dir": ("HDAE_EDITOR_ORACLE_DIR", str, "reports/_tmp/oracle"),
    "oracle_steps": ("HDAE_EDITOR_ORACLE_STEPS", int, 400),
    "out_dir": ("HDAE_EDITOR_OUT_DIR", str, "reports/07_editor"),
    "seed": ("HDAE_EDITOR_SEED", int, 0),
    "profile": ("HDAE_EDITOR_PROFILE", str, "full"),
    "threads": ("HDAE_EDITOR_THREADS", int, 1),
}


class EditorSettingError(ValueError):
    """An editor setting (a parameter or its environment variable) that cannot be used."""


def editor_settings(given: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Every ``EDITOR_PARAMETERS`` value: the one given (not None), else its environment variable, else the default.

    A variable that does not parse as its type, or a count below 1, is an ``EditorSettingError`` in one line
    naming the variable; a variable is not even read when the value is given."""
    env = os.environ if environ is None else environ
    out = {}
    for name, (var, kind, default) in EDITOR_PARAMETERS.items():
        value, source = given.get(name), name
        if value is None and env.get(var, "").strip():
            value, source = env[var].strip(), f"${var}"
        if value is None:
            out[name] = default
            continue
        raw = value
        try:
            value = kind(value)
        except (TypeError, ValueError):
            raise EditorSettingError(f"{source}={raw!r}: expected {'an integer' if kind is int else 'a number'} "
                                     f"(default {default!r})") from None
        if kind is float and not math.isfinite(value):
            raise EditorSettingError(f"{source}={raw!r}: expected a finite number")
        if kind is int and name != "seed" and value < 1:
            raise EditorSettingError(f"{source}={raw!r}: expected a positive integer (default {default!r})")
        out[name] = value
    return out


def png_bytes(images: torch.Tensor | Sequence[torch.Tensor], scale: int = 1, pad: int = 1) -> bytes:
    """PNG bytes of images [N, 3, H, W] in [-1, 1] side by side (white padding, nearest-neighbour upscaling)."""
    row = images if isinstance(images, torch.Tensor) else torch.stack(list(images))
    buf = io.BytesIO()
    image_grid([row], scale=scale, pad=pad).save(buf, format="PNG")
    return buf.getvalue()


def _direction_dict(directions) -> tuple[dict[str, torch.Tensor], list[str], LatentStats | None]:
    """(name → direction, names in order, the statistics they assume) of directions / classifiers / a dict."""
    if isinstance(directions, AttributeDirections):
        return dict(directions.directions), list(directions.names), directions.stats
    if isinstance(directions, Mapping):
        return {str(k): torch.as_tensor(v) for k, v in directions.items()}, [str(k) for k in directions], None
    if isinstance(directions, (str, Path)):
        d = load_directions(repo_path(directions))
        return dict(d.directions), list(d.names), d.stats
    raise TypeError(f"directions: expected AttributeDirections / AttributeClassifiers, a dict name -> [L, D] tensor "
                    f"or a folder holding {DIRECTIONS_FILE}, got {type(directions).__name__}")


def _checked_directions(directions, attribute_names, stats, L: int, D: int):
    """({name: direction [L, D]} for the sliders, in order; the statistics to edit with), checked against the
    model's codes [L, D]: every error names what does not fit."""
    dirs, dir_names, dir_stats = _direction_dict(directions)
    stats = stats if stats is not None else dir_stats
    if stats is None:
        raise ValueError("stats: no LatentStats given and the directions carry none")
    if tuple(stats.shape) != (L, D):
        raise ValueError(f"stats: statistics for codes {list(stats.shape)}, but the model's codes are "
                         f"[{L}, {D}] (statistics of another model?)")
    names = list(attribute_names) if attribute_names is not None else dir_names
    missing = [n for n in names if n not in dirs]
    if missing:
        raise KeyError(f"attribute_names: no direction for {missing}; available: {dir_names}")
    if not names and attribute_names is not None:
        raise ValueError("attribute_names: no attributes to edit")
    out = {}
    for n in names:
        d = torch.as_tensor(dirs[n]).detach().float().cpu()
        if d.numel() != L * D:
            raise ValueError(f"direction {n!r}: shape {list(d.shape)} does not match the model's codes [{L}, {D}]")
        out[n] = d.reshape(L, D)
    return out, stats


def _as_images(images, name: str) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        x = images if images.dim() == 4 else images.unsqueeze(0)
    else:
        items = list(images)
        if not items:
            raise ValueError(f"{name}: no images")
        x = torch.stack([torch.as_tensor(i) for i in items])
    if x.shape[0] == 0:
        raise ValueError(f"{name}: no images (an empty gallery); give at least one image")
    return x.detach().float().cpu()


class EditorState:
    """The editor without widgets: validation, the gallery, cached codes and x_T, the edit settings, renders.

    ``directions``: ``AttributeDirections`` / ``AttributeClassifiers``, a dict name → direction [L, D]
    (standardised space) or a folder with ``directions.safetensors``; an empty dict edits by style mixing only.
    ``stats`` standardise the codes (None: the directions' own). ``images`` [N, 3, H, W] in [-1, 1] form the
    gallery (None: 8 built-in shapes); ``partner_images`` the style-mix partners (None: the gallery).
    Settings: ``index``, ``alphas`` (name → α), ``k`` (None: all), ``edit_levels`` (None: all),
    ``partner`` (None: no mixing) and ``mix_levels``; ``render()`` decodes them.
    """

    def __init__(self, model, stats: LatentStats | None, directions, images=None,
                 attribute_names: Sequence[str] | None = None, steps: int = 20, partner_images=None,
                 image_names: Sequence[str] | None = None, partner_names: Sequence[str] | None = None):
        self.model = model.eval()
        self.directions_source = "given"  # where the directions came from (``state_from_checkpoint`` says)
        self.steps = int(steps)
        model.timesteps(self.steps)  # an invalid step count fails here, not at the first click
        p = next(model.parameters())
        self._device, self._dtype = p.device, p.dtype
        self.size = int(model.config.image_size)
        self.L, self.D = int(model.num_levels), int(model.code_dim)

        self.directions, self.stats = _checked_directions(directions, attribute_names, stats, self.L, self.D)
        self.attribute_names = names = list(self.directions)

        if images is None:
            images = Shapes(size=self.size, seed=10_000).batch(range(8))["image"]
        self.images = _as_images(images, "images")
        self.check_images(self.images, "images")
        self.image_names = list(image_names) if image_names is not None else [f"image {i}" for i in range(len(self.images))]
        if len(self.image_names) != len(self.images):
            raise ValueError(f"image_names: {len(self.image_names)} names for {len(self.images)} images")
        self.shared_partners = partner_images is None
        if partner_images is None:
            self.partner_images, self.partner_names = self.images, self.image_names
        else:
            self.partner_images = _as_images(partner_images, "partner_images")
            self.check_images(self.partner_images, "partner_images")
            self.partner_names = (list(partner_names) if partner_names is not None
                                  else [f"partner {i}" for i in range(len(self.partner_images))])
        self._codes: dict[int, torch.Tensor] = {}  # gallery index -> codes [1, L, D]
        self._x_T: dict[tuple[int, int], torch.Tensor] = {}  # (gallery index, steps) -> inverted x_T [1, C, H, W]
        self._partner_codes: dict[int, torch.Tensor] = {}
        self.uploads: dict[int, tuple[Image.Image, tuple[int, int, int, int]]] = {}  # index -> (full photo, crop box)
        self.index = 0
        self.alphas: dict[str, float] = {n: 0.0 for n in names}
        self.k: int | None = None
        self.edit_levels: list[int] | None = None
        self.partner: int | None = None
        self.mix_levels: list[int] = []
        self.last_image: torch.Tensor | None = None
        self.last_seconds: float | None = None
        self.last_inversion_seconds: float | None = None
        self.renders = 0

    # ---------------------------------------------------------------- validation

    def check_images(self, x: torch.Tensor, name: str) -> None:
        want = (self.model.config.in_channels, self.size, self.size)
        if x.dim() != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(f"{name}: expected [N, {', '.join(map(str, want))}] in [-1, 1] for this model, "
                             f"got {list(x.shape)}")

    def parse_k(self, text: str) -> int | None:
        """'all' (or empty) → None; an integer in 1..L·D → itself; ValueError for anything else."""
        t = str(text).strip().lower()
        if t in ("", "all", "none"):
            return None
        try:
            k = int(t)
        except ValueError:
            raise ValueError(f"k: expected 'all' or an integer in 1..{self.L * self.D}, got {text!r}") from None
        if not 1 <= k <= self.L * self.D:
            raise ValueError(f"k: expected 'all' or an integer in 1..{self.L * self.D}, got {k}")
        return k

    # ---------------------------------------------------------------- settings

    def select(self, index: int) -> None:
        if not 0 <= int(index) < len(self.images):
            raise IndexError(f"image index {index} out of range 0..{len(self.images) - 1}")
        self.index = int(index)

    def set_attribute(self, name: str, alpha: float) -> None:
        if name not in self.alphas:
            raise KeyError(f"no slider for {name!r}; attributes: {self.attribute_names}")
        if not math.isfinite(float(alpha)):
            raise ValueError(f"alpha for {name!r}: expected a finite number, got {alpha!r}")
        self.alphas[name] = float(alpha)

    def set_k(self, k: int | str | None) -> None:
        self.k = self.parse_k("all" if k is None else str(k))

    def set_partner(self, index: int | None, levels: Sequence[int] = ()) -> None:
        if index is not None and not 0 <= int(index) < len(self.partner_images):
            raise IndexError(f"partner index {index} out of range 0..{len(self.partner_images) - 1}")
        self.partner = None if index is None else int(index)
        self.mix_levels = sorted({int(v) for v in levels})

    def reset(self) -> None:
        """Every α back to 0."""
        self.alphas = {n: 0.0 for n in self.alphas}

    def add_image(self, image: torch.Tensor, name: str) -> int:
        """Append an image [3, H, W] in [-1, 1] to the gallery (and the partners when shared) and select it."""
        x = _as_images(image, "image")
        self.check_images(x, "image")
        self.images = torch.cat([self.images, x])
        self.image_names.append(name)
        if self.shared_partners:
            self.partner_images, self.partner_names = self.images, self.image_names
        self.index = len(self.images) - 1
        return self.index

    def load_image_bytes(self, data: bytes, name: str = "upload") -> int:
        """Decode a PNG/JPEG (centre crop, resize to the model's size), add it and select it; kept for paste-back."""
        full, box, x = load_upload_full(data, name, self.size)
        idx = self.add_image(x, f"upload: {name}")
        self.uploads[idx] = (full, box)
        return idx

    # ---------------------------------------------------------------- codes and renders

    def inversion(self, index: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(codes [1, L, D], x_T [1, C, H, W]) of a gallery image; DDIM inversion runs once per image and step count."""
        i = self.index if index is None else int(index)
        x0 = self.images[i:i + 1].to(self._device, self._dtype)
        with torch.no_grad():
            if i not in self._codes:
                self._codes[i] = self.model.encode(x0)
            key = (i, self.steps)
            if key not in self._x_T:
                self._x_T[key] = self.model.encode_stochastic(x0, self._codes[i], self.steps)
        return self._codes[i], self._x_T[key]

    def partner_codes(self, j: int) -> torch.Tensor:
        """Codes [1, L, D] of partner j (shared with the gallery's when the partners are the gallery)."""
        cache, src = (self._codes, self.images) if self.shared_partners else (self._partner_codes, self.partner_images)
        if j not in cache:
            with torch.no_grad():
                cache[j] = self.model.encode(src[j:j + 1].to(self._device, self._dtype))
        return cache[j]

    def edited_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """The sum of every nonzero α's manipulation (HDAE §3.3), then the partner's chosen levels (Fig. 7)."""
        alphas = {n: a for n, a in self.alphas.items() if a != 0}
        out = codes
        if alphas:
            if self.edit_levels is not None and not self.edit_levels:
                raise ValueError("edit levels: none ticked; tick at least one level to edit (or set every slider to 0)")
            levels = None if self.edit_levels is None or len(self.edit_levels) == self.L else self.edit_levels
            delta = torch.zeros_like(codes)
            for n, a in alphas.items():
                d = self.directions[n].to(codes.device)
                delta = delta + (editing.manipulate(codes, d, a, self.stats, k=self.k, levels=levels) - codes)
            out = codes + delta
        if self.partner is not None and self.mix_levels:
            out = editing.mix_levels(out, self.partner_codes(self.partner), self.mix_levels)
        return out

    def render(self) -> torch.Tensor:
        """Decode the current edit from the image's own x_T: [3, H, W] in [-1, 1]."""
        t0 = time.perf_counter()
        i = self.index
        fresh = (i, self.steps) not in self._x_T
        codes, x_T = self.inversion(i)
        self.last_inversion_seconds = time.perf_counter() - t0 if fresh else None
        edited = self.edited_codes(codes)
        if not bool(torch.isfinite(edited).all()):
            raise ValueError(f"the edited codes are not finite numbers (α {self._alpha_text()} is too large for "
                             f"float{torch.finfo(edited.dtype).bits}); use |α| of a few units")
        with torch.no_grad():
            x = self.model.decode(x_T, edited, self.steps)[0].float().cpu()
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"the decoded image is not finite (α {self._alpha_text()}): the edit left the range "
                             f"this model decodes; use |α| of a few units")
        x = x.clamp(-1, 1)
        self.last_image = x
        self.last_seconds = time.perf_counter() - t0
        self.renders += 1
        return x

    def _alpha_text(self) -> str:
        return ", ".join(f"{n} {a:g}" for n, a in self.alphas.items() if a != 0) or "0"

    def paste_back(self, edited: torch.Tensor | None = None, index: int | None = None,
                   feather: float = 0.08) -> Image.Image | None:
        """The uploaded photo with the edited crop blended back at its place (None when the image is no upload)."""
        i = self.index if index is None else int(index)
        if i not in self.uploads:
            return None
        x = self.last_image if edited is None else edited
        if x is None:
            raise ValueError("paste back: nothing rendered yet")
        full, box = self.uploads[i]
        return paste_back(full, box, x, feather=feather)


class Editor:
    """The ipywidgets view of an ``EditorState``: attribute sliders, k, edited levels, a style-mix partner, an upload
    with *paste back*, Render. Takes the ``EditorState`` arguments; ``render()`` returns the edited image
    [3, H, W] and ``image_widget.value`` holds original | edited as PNG (``paste_widget`` the pasted-back photo).
    """

    def __init__(self, state: EditorState, alpha_range: tuple[float, float] = (-1.0, 1.0), alpha_step: float = 0.05,
                 k: int | None = None, display_size: int = 192):
        import ipywidgets as W  # lazy: ~0.7 s, and EditorState (tests, scripts) needs no widgets

        if not isinstance(state, EditorState):
            raise TypeError(f"state: expected an EditorState (Editor.from_checkpoint builds one), "
                            f"got {type(state).__name__}")
        self.state = st = state
        self.scale = max(1, int(display_size) // st.size)
        desc = {"description_width": "initial"}
        self.image_select = W.Dropdown(options=_options(st.image_names), value=0, description="image",
                                       layout=W.Layout(width="440px"))
        self.upload = W.FileUpload(accept=".png,.jpg,.jpeg,image/png,image/jpeg", multiple=False,
                                   description="upload")
        self.paste_box = W.Checkbox(value=False, description="paste back into the uploaded photo", indent=False)
        self.sliders = _alpha_sliders(W, st.attribute_names, alpha_range, alpha_step)
        self.k_text = W.Text(value="all" if k is None else str(int(k)), description="k (top features)",
                             placeholder=f"all or 1..{st.L * st.D}", style=desc, layout=W.Layout(width="260px"))
        self.k_text.add_class("hdae-k")
        res = st.model.config.level_resolutions if st.L > 1 else None
        self.level_boxes = _level_boxes(W, st.L, res, True)
        self.partner_select = W.Dropdown(options=[("none", -1)] + _options(st.partner_names), value=-1,
                                         description="mix with", layout=W.Layout(width="440px"))
        self.mix_boxes = _level_boxes(W, st.L, res, False)
        self.render_button = W.Button(description="Render", button_style="primary", icon="paint-brush")
        self.render_button.add_class("hdae-render")
        self.reset_button = W.Button(description="Reset sliders")
        self.image_widget = W.Image(format="png", layout=W.Layout(width=f"{2 * st.size * self.scale + 3 * self.scale}px"))
        self.image_widget.add_class("hdae-output")
        self.paste_widget = W.Image(format="png", layout=W.Layout(max_width="512px", display="none"))
        self.paste_widget.add_class("hdae-paste")
        self.status = W.Label(value="")
        self.status.add_class("hdae-status")
        self.error_label = W.HTML(value="")
        self.error_label.add_class("hdae-error")

        self.render_button.on_click(lambda _b: self._render_safely())
        self.reset_button.on_click(lambda _b: self.reset())
        self.image_select.observe(self._on_select, names="value")
        self.upload.observe(self._on_upload, names="value")

        self.widget = _panel(W, self)
        self.widget.add_class("hdae-editor")
        self._preview()

    @classmethod
    def from_checkpoint(cls, path: str | Path, alpha_range: tuple[float, float] = (-1.0, 1.0),
                        alpha_step: float = 0.05, k: int | None = None, display_size: int = 192, **state_kw) -> "Editor":
        """An editor for a checkpoint folder: ``state_kw`` go to ``state_from_checkpoint``, the rest to the view."""
        return cls(state_from_checkpoint(path, **state_kw), alpha_range=alpha_range, alpha_step=alpha_step, k=k,
                   display_size=display_size)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    # ---------------------------------------------------------------- programmatic API (widgets and state together)

    @property
    def index(self) -> int:
        """The gallery index of the image being edited."""
        return int(self.image_select.value)

    def select(self, index: int) -> None:
        """Edit gallery image ``index`` (shows it; press Render / call ``render()`` for the edit)."""
        self.state.select(index)
        self.image_select.value = int(index)

    def set_attribute(self, name: str, alpha: float) -> None:
        """Set the slider of attribute ``name`` to α (clipped to the slider's range by ipywidgets)."""
        if name not in self.sliders:
            raise KeyError(f"no slider for {name!r}; attributes: {self.state.attribute_names}")
        self.sliders[name].value = float(alpha)

    def set_k(self, k: int | None) -> None:
        """Truncate every direction to its top k entries (None: all)."""
        self.k_text.value = "all" if k is None else str(int(k))

    def set_partner(self, index: int | None, levels: Sequence[int] = ()) -> None:
        """Style-mix with partner ``index`` (None: no partner), taking its 0-based ``levels``."""
        self.partner_select.value = -1 if index is None else int(index)
        chosen = {int(v) for v in levels}
        for i, b in enumerate(self.mix_boxes):
            b.value = i in chosen

    def reset(self) -> None:
        """All sliders back to 0."""
        for s in self.sliders.values():
            s.value = 0.0
        self.state.reset()

    def add_image(self, image: torch.Tensor, name: str) -> int:
        """Append an image [3, H, W] in [-1, 1] to the gallery (and the partners when shared) and select it."""
        idx = self.state.add_image(image, name)
        self._refresh_options(idx)
        return idx

    def load_image_bytes(self, data: bytes, name: str = "upload") -> int:
        """Decode a PNG/JPEG (centre crop, resize to the model's size), add it to the gallery and select it."""
        idx = self.state.load_image_bytes(data, name)
        self._refresh_options(idx)
        return idx

    def _refresh_options(self, idx: int) -> None:
        if self.state.shared_partners:
            keep = self.partner_select.value
            self.partner_select.options = [("none", -1)] + _options(self.state.partner_names)
            self.partner_select.value = keep
        self.image_select.options = _options(self.state.image_names)
        self.image_select.value = idx

    def k(self) -> int | None:
        """The truncation k from the text box (None for 'all'); ValueError for anything else."""
        return self.state.parse_k(self.k_text.value)

    def edit_levels(self) -> list[int] | None:
        """The ticked edit levels (None when all are ticked)."""
        lv = [i for i, b in enumerate(self.level_boxes) if b.value]
        return None if len(lv) == self.state.L else lv

    def alphas(self) -> dict[str, float]:
        """The nonzero sliders, name → α."""
        return {n: float(s.value) for n, s in self.sliders.items() if s.value != 0}

    def sync(self) -> EditorState:
        """Copy the widgets' values into the state (ValueError for a bad k)."""
        st = self.state
        st.select(self.index)
        st.alphas = {n: float(s.value) for n, s in self.sliders.items()}
        st.k = self.k()
        st.edit_levels = [i for i, b in enumerate(self.level_boxes) if b.value]
        j = int(self.partner_select.value)
        st.set_partner(None if j < 0 else j, [i for i, b in enumerate(self.mix_boxes) if b.value])
        return st

    def edited_codes(self, codes: torch.Tensor) -> torch.Tensor:
        return self.sync().edited_codes(codes)

    def render(self) -> torch.Tensor:
        """Decode the current edit; updates the image widget (and the pasted-back photo) and the status."""
        st = self.sync()
        x = st.render()
        self.image_widget.value = png_bytes([st.images[st.index], x], scale=self.scale)
        pasted = st.paste_back(x) if self.paste_box.value else None
        if pasted is not None:
            buf = io.BytesIO()
            pasted.save(buf, format="PNG")
            self.paste_widget.value = buf.getvalue()
        self.paste_widget.layout.display = None if pasted is not None else "none"
        self.status.value = _status(st, self.alphas(), pasted is not None)
        self.error_label.value = ""
        return x

    # ---------------------------------------------------------------- callbacks

    def _render_safely(self) -> None:
        """The Render button: a bad setting (k, levels) shows an error and keeps the previous image."""
        self.render_button.disabled = True
        self.status.value = "rendering…"
        try:
            self.render()
        except (ValueError, KeyError, RuntimeError) as e:
            self.error_label.value = _error_html(str(e))
            self.status.value = "render failed"
        finally:
            self.render_button.disabled = False

    def _preview(self) -> None:
        """Show the selected image beside a grey placeholder until the next render."""
        x = self.state.images[self.index]
        self.image_widget.value = png_bytes([x, torch.zeros_like(x)], scale=self.scale)
        self.paste_widget.layout.display = "none"
        self.status.value = "press Render"

    def _on_select(self, change) -> None:
        self.state.select(int(change["new"]))
        self.error_label.value = ""
        self._preview()

    def _on_upload(self, change) -> None:
        files = change["new"]
        if not files:
            return
        f = files[0] if isinstance(files, (tuple, list)) else next(iter(files.values()))  # ipywidgets 8 / 7
        name = str(f.get("name", "upload"))
        try:
            self.load_image_bytes(bytes(f["content"]), name)
        except ValueError as e:  # BadImageError included
            self.error_label.value = _error_html(f"could not use the upload: {e}")
        finally:
            try:
                self.upload.value = ()  # so the same file can be chosen again
            except Exception:  # noqa: BLE001 - ipywidgets 7 keeps the value read-only
                pass


def _options(names: Sequence[str]) -> list[tuple[str, int]]:
    return [(n, i) for i, n in enumerate(names)]


def _error_html(message: str) -> str:
    return f"<span style='color:#b00020'>⚠ {html.escape(message)}</span>"


def _status(st: EditorState, alphas: Mapping[str, float], pasted: bool) -> str:
    """The status line under a render: its number, time, steps, the edit, a first inversion, a paste-back."""
    what = ", ".join(f"{n} {a:+.2f}" for n, a in alphas.items()) or "no attribute edit"
    inv = (f"; first render of this image, inversion {st.last_inversion_seconds:.1f} s"
           if st.last_inversion_seconds is not None else "")
    pb = "; pasted back into the upload" if pasted else ""
    return f"render {st.renders}: rendered in {st.last_seconds:.1f} s ({st.steps} DDIM steps; {what}{inv}{pb})"


def _alpha_sliders(W, names: Sequence[str], alpha_range: tuple[float, float], alpha_step: float) -> dict:
    """One α slider per attribute, each with CSS classes the browser test finds it by."""
    lo, hi = alpha_range
    sliders = {}
    for n in names:
        s = W.FloatSlider(value=0.0, min=float(lo), max=float(hi), step=float(alpha_step), description=n,
                          continuous_update=False, readout_format=".2f", style={"description_width": "initial"},
                          layout=W.Layout(width="420px"))
        s.add_class("hdae-alpha")
        s.add_class(f"hdae-alpha-{_css(n)}")
        sliders[n] = s
    return sliders


def _level_boxes(W, L: int, resolutions, value: bool) -> list:
    return [W.Checkbox(value=value, description=_level_label(i, resolutions), indent=False,
                       layout=W.Layout(width="auto")) for i in range(L)]


def _panel(W, ed: "Editor"):
    """The editor's controls and images laid out top to bottom."""
    edit_levels = [W.HTML("<b>edit levels (z¹ finest)</b>"), W.HBox(ed.level_boxes)] if ed.state.L > 1 else []
    return W.VBox([
        W.HBox([ed.image_select, ed.upload, ed.paste_box]),
        W.HTML("<b>attributes</b> (α per direction; all nonzero sliders are summed)"
               if ed.sliders else "<b>attributes</b>: none (no directions); style mixing only"),
        W.VBox(list(ed.sliders.values())),
        W.HBox([ed.k_text]),
        *edit_levels,
        W.HTML("<b>style mixing</b>: take the ticked levels from the partner"),
        W.HBox([ed.partner_select, W.HBox(ed.mix_boxes)]),
        W.HBox([ed.render_button, ed.reset_button]),
        ed.error_label,
        W.HTML("original | edited"),
        ed.image_widget,
        ed.paste_widget,
        ed.status,
    ])


def state_from_checkpoint(path: str | Path, n_images: int = 8, steps: int = 20, n_stats: int = 512,
                          directions=None, attribute_names: Sequence[str] | None = None, seed: int = 10_000,
                          ema: bool = True, progress: bool = False, data=None, attribute_file=None,
                          directions_cache: str | Path | None = None) -> EditorState:
    """An ``EditorState`` for a checkpoint folder and a data set (``open_data``: Shapes by default, or the user's
    folder / LMDB with an attribute file); the gallery is the first ``n_images`` held-out images.

    Statistics and directions come from ``latent_stats.safetensors`` / ``directions.safetensors`` in the folder
    when present (``hdae import-diffae``); otherwise ``n_stats`` training images are encoded for the statistics
    and, when the data has attributes, a linear classifier (regression for continuous ones) per attribute gives
    the directions (HDAE §3.3). ``directions_cache`` (05_directions' report folder): its cached classifiers are
    used when one was fitted on this model's weights. Without any, the editor edits by style mixing only.
    ``state.directions_source`` says where the directions came from.
    """
    folder = resolve(path)  # a folder, a training run's folder or a demo model's name
    model = load_checkpoint(folder, ema=ema)
    src = open_data(data, attribute_file, size=model.config.image_size,
                    **({"train_seed": 0, "heldout_seed": seed} if data is None else {}))
    batch = src.batch(int(n_images))
    if src.ground_truth:
        names = [f"shape {i}: {_describe(a, src.attribute_names)}" for i, a in enumerate(batch["attributes"])]
    else:
        names = list(batch["names"])
    stats = LatentStats.load(folder) if (folder / STATS_FILE).is_file() else None
    where = "given"
    if directions is None and (folder / DIRECTIONS_FILE).is_file():
        directions, where = load_directions(folder), f"imported with the checkpoint ({folder})"
    elif isinstance(directions, (str, Path)):
        where = f"loaded from {repo_path(directions)}"
        directions = load_directions(repo_path(directions))
    if directions is None and directions_cache is not None and src.has_attributes:
        entries = sorted(Path(directions_cache).glob("classifiers_*"))
        directions, where = cache.lookup(entries, {"kind": "directions", "model": cache.model_identity(model),
                                                   "data": {"source": str(src.source)}}, load_classifiers,
                                         "directions") if entries else (None, f"no cached directions in {directions_cache}")
        if directions is not None:
            stats = directions.stats  # the space they were fitted in
    if stats is None and isinstance(directions, AttributeDirections):
        stats = directions.stats
    if stats is None or directions is None:
        wanted = list(src.attribute_names if attribute_names is None else attribute_names)
        unknown = [n for n in wanted if n not in src.attribute_names]
        if unknown:
            kind = "shapes attributes" if src.ground_truth else f"attributes of {attribute_file}"
            raise KeyError(f"attribute_names: {unknown} are not {kind}; choose from {src.attribute_names}")
        n = src.take(int(n_stats), "train", "images for the editor's statistics")
        enc = encode_dataset(model, src.split("train"), n=n, progress=progress, with_attributes=bool(wanted))
        if stats is None:
            stats = LatentStats.from_codes(enc["codes"])
        if directions is None and wanted:
            cols = [src.attribute_names.index(w) for w in wanted]  # only the attributes that get a slider
            directions = train_directions(enc["codes"], enc["attributes"][:, cols], wanted,
                                          {w: src.attribute_kinds[w] for w in wanted}, stats=stats)
            where = f"fitted here on {n} training images ({where})"
        elif directions is None:
            directions, where = {}, "none: no attributes to fit directions to"
    state = EditorState(model, stats, directions, images=batch["image"], image_names=names, steps=steps,
                        attribute_names=attribute_names)
    state.directions_source = where
    return state


def example_edit(editor: Editor, attribute: str, alpha: float, path: str | Path) -> dict:
    """Render one edit without widgets and write ``path`` (original | reconstruction | edited); its numbers."""
    editor.reset()
    base = editor.render()  # the α = 0 reconstruction; includes the one-off DDIM inversion
    first_s = editor.state.last_seconds
    editor.set_attribute(attribute, alpha)
    edited = editor.render()
    Path(path).write_bytes(png_bytes([editor.state.images[editor.index], base, edited], scale=editor.scale))
    u8 = lambda x: ((x.clamp(-1, 1) + 1) * 127.5).round()  # noqa: E731
    changed = float(((u8(edited) - u8(base)).abs().amax(0) > 2).float().mean())  # > 2 grey levels in any channel
    cfg = editor.state.model.config
    return {"variant": cfg.variant, "image_size": cfg.image_size, "attribute": attribute, "alpha": alpha,
            "first_render_seconds": round(first_s, 3), "render_seconds": round(editor.state.last_seconds, 3),
            "changed_pixel_fraction": round(changed, 4),
            "mse_edit_vs_reconstruction": float(((edited - base) ** 2).mean())}


def _level_label(i: int, res) -> str:
    if res is None:
        return "z (whole code)"
    sup = "¹²³⁴⁵⁶⁷⁸⁹"[i] if i < 9 else f"^{i + 1}"
    return f"z{sup} ({res[i]} px)"


def _css(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)


def _describe(attributes: torch.Tensor, names: Sequence[str]) -> str:
    on = [n for n, a in zip(names, attributes.tolist()) if a > 0.5]
    return ", ".join(on) if on else "(no attributes)"
