"""The editor without widgets: the gallery, cached codes and x_T, the edit settings, renders and recipes.

HDAE §3.3 and Fig. 7 as one state: every nonzero α adds its manipulation α·√(D·L)·n′/‖n′‖ (in the
standardised space, n′ restricted to the chosen levels and truncated to its top k entries), then the chosen
partner levels replace the image's, and DDIM decodes with the image's own inverted x_T (inverted once per
image and cached) or a seeded random one. ``hdae_core.widgets.Editor`` is its ipywidgets view; tests and
scripts drive the state directly.
"""
from __future__ import annotations

import io
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from . import cache, diffusion, editing
from .checkpoint import load as load_checkpoint
from .config import VARIANT_LABELS
from .data import Shapes, open_data
from .data.images import load_upload_full, paste_back
from .directions import DIRECTIONS_FILE, AttributeDirections, load_classifiers, load_directions, train_directions
from .model import encode_dataset
from .plots import image_grid, to_uint8
from .pretrained import repo_path, resolve
from .stats import STATS_FILE, LatentStats

__all__ = ["EditorState", "state_from_checkpoint", "png_bytes", "editor_settings", "EDITOR_PARAMETERS",
           "recipe", "apply_recipe", "save_edit", "load_recipe", "RecipeError", "alpha_strip", "follow", "guided_start",
           "RECIPE_FORMAT"]

RECIPE_FORMAT = "hdae-edit-recipe"
X_T_MODES = ("own", "random")  # the image's own inverted x_T, or a seeded random one (what the codes alone carry)

# 07_editor's parameters: (environment variable, type, default). Voila cannot pass parameters, so the served
# notebook reads the variables; a value given explicitly (papermill, `hdae figures`) wins over them.
EDITOR_PARAMETERS: dict[str, tuple[str, type, Any]] = {
    "checkpoint": ("HDAE_EDITOR_CHECKPOINT", str, "shapes32_hdae_u"),
    "checkpoint_dae": ("HDAE_EDITOR_CHECKPOINT_DAE", str, "shapes32_dae"),
    "data": ("HDAE_EDITOR_DATA", str, None),
    "attribute_file": ("HDAE_EDITOR_ATTRIBUTES", str, None),
    "n_images": ("HDAE_EDITOR_N_IMAGES", int, 8),
    "steps": ("HDAE_EDITOR_STEPS", int, 10),
    "n_stats": ("HDAE_EDITOR_N_STATS", int, 2000),
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
    "quick": ("HDAE_EDITOR_QUICK", bool, False),
}
BOOLEANS = {"1": True, "true": True, "0": False, "false": False}  # how a variable spells a bool setting
PROFILE_NAMES = ("full", "smoke")  # the profiles of `hdae figures` (recorded in metrics.json)


class EditorSettingError(ValueError):
    """An editor setting (a parameter or its environment variable) that cannot be used."""


def editor_settings(given: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Every ``EDITOR_PARAMETERS`` value: the one given (not None), else its environment variable, else the default.

    A variable that does not parse as its type (a bool as 1, 0, true or false), or a count below 1, is an
    ``EditorSettingError`` in one line naming the variable; a variable is not even read when the value is given."""
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
        if kind is bool:
            if not isinstance(value, bool):
                value = BOOLEANS.get(str(value).strip().lower())
            if value is None:
                raise EditorSettingError(f"{source}={raw!r}: expected 1, 0, true or false (default {default!r})")
            out[name] = value
            continue
        try:
            value = kind(value)
        except (TypeError, ValueError):
            raise EditorSettingError(f"{source}={raw!r}: expected {'an integer' if kind is int else 'a number'} "
                                     f"(default {default!r})") from None
        if kind is float and not math.isfinite(value):
            raise EditorSettingError(f"{source}={raw!r}: expected a finite number")
        if kind is int and name != "seed" and value < 1:
            raise EditorSettingError(f"{source}={raw!r}: expected a positive integer (default {default!r})")
        if name == "seed" and not 0 <= value < 2 ** 63:
            raise EditorSettingError(f"{source}={raw!r}: expected a seed from 0 to 2**63 - 1 (default {default!r})")
        if name == "threads" and value > (os.cpu_count() or 1):
            raise EditorSettingError(f"{source}={raw!r}: this machine has {os.cpu_count()} cores; expected 1 to "
                                     f"{os.cpu_count()} threads (default {default!r})")
        if name == "profile" and value not in PROFILE_NAMES:
            raise EditorSettingError(f"{source}={raw!r}: expected one of {', '.join(PROFILE_NAMES)} "
                                     f"(default {default!r})")
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
    """The editor without widgets. ``directions``: AttributeDirections, a dict name → n [L, D] (standardised
    space) or a directions folder; empty: style mixing only. ``stats``: None for the directions' own. ``images``
    [N, 3, H, W] in [-1, 1]: the gallery (None: 8 built-in shapes); ``partner_images``: None for the gallery.
    Settings: ``index``, ``alphas``, ``k``, ``edit_levels``, ``partner``, ``mix_levels``, ``x_T_mode`` / ``seed``;
    ``render()`` decodes them."""

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
        self._recon: dict[tuple, torch.Tensor] = {}  # (index, steps, x_T mode, seed) -> unedited decode
        self.uploads: dict[int, tuple[Image.Image, tuple[int, int, int, int]]] = {}  # index -> (full photo, crop box)
        self.index = 0
        self.alphas: dict[str, float] = {n: 0.0 for n in names}
        self.k: int | None = None
        self.edit_levels: list[int] | None = None
        self.partner: int | None = None
        self.mix_levels: list[int] = []
        self.x_T_mode, self.seed = "own", 0
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
        return parse_k(text, self.L * self.D)

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

    def reset_all(self) -> None:
        """Every setting back to its start: α 0, k all, every level edited, no partner, the image's own x_T."""
        self.reset()
        self.k, self.edit_levels, self.partner, self.mix_levels, self.x_T_mode = None, None, None, [], "own"

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
        """(codes [1, L, D], x_T [1, C, H, W]) of a gallery image; DDIM inversion runs once per image and step count.
        With ``x_T_mode`` "random" x_T is Gaussian noise drawn from ``seed`` instead (the same for every image)."""
        i = self.index if index is None else int(index)
        x0 = self.images[i:i + 1].to(self._device, self._dtype)
        with torch.no_grad():
            if i not in self._codes:
                self._codes[i] = self.model.encode(x0)
            if self.x_T_mode == "random":
                g = torch.Generator().manual_seed(int(self.seed))
                return self._codes[i], diffusion.randn(x0.shape, g, self._device, self._dtype)
            key = (i, self.steps)
            if key not in self._x_T:
                self._x_T[key] = self.model.encode_stochastic(x0, self._codes[i], self.steps)
        return self._codes[i], self._x_T[key]

    def set_x_T(self, mode: str, seed: int | None = None) -> None:
        """Decode from the image's own inverted x_T ("own") or a random x_T drawn from ``seed`` ("random")."""
        if mode not in X_T_MODES:
            raise ValueError(f"x_T mode: expected one of {X_T_MODES}, got {mode!r}")
        self.x_T_mode, self.seed = mode, self.seed if seed is None else int(seed)

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
        x = self._decode(x_T, edited)[0]
        self.last_image = x
        self.last_seconds = time.perf_counter() - t0
        self.renders += 1
        return x

    def _decode(self, x_T: torch.Tensor, edited: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] in [-1, 1] (CPU, float32) of edited codes; a non-finite edit is a ValueError."""
        if not bool(torch.isfinite(edited).all()):
            raise ValueError(f"the edited codes are not finite numbers (α {self._alpha_text()} is too large for "
                             f"float{torch.finfo(edited.dtype).bits}); use |α| of a few units")
        with torch.no_grad():
            x = self.model.decode(x_T.expand(edited.shape[0], -1, -1, -1), edited, self.steps).float().cpu()
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"the decoded image is not finite (α {self._alpha_text()}): the edit left the range "
                             f"this model decodes; use |α| of a few units")
        return x.clamp(-1, 1)

    def reconstruction(self) -> torch.Tensor:
        """The image decoded from its codes and x_T, unedited (α = 0, no partner), once per image, T and x_T."""
        key = (self.index, self.steps, self.x_T_mode, self.seed if self.x_T_mode == "random" else None)
        if key not in self._recon:
            codes, x_T = self.inversion()
            self._recon[key] = self._decode(x_T, codes)[0]
        return self._recon[key]

    def _alpha_text(self) -> str:
        return ", ".join(f"{n} {a:g}" for n, a in self.alphas.items() if a != 0) or "0"



def parse_k(text: str, size: int) -> int | None:
    """'all' (or empty) → None; an integer in 1..``size`` (L·D) → itself; ValueError for anything else."""
    t = str(text).strip().lower()
    if t in ("", "all", "none"):
        return None
    try:
        k = int(t)
    except ValueError:
        raise ValueError(f"k: expected 'all' or an integer in 1..{size}, got {text!r}") from None
    if not 1 <= k <= size:
        raise ValueError(f"k: expected 'all' or an integer in 1..{size}, got {k}")
    return k


def pasted(state: EditorState, edited: torch.Tensor | None = None, index: int | None = None,
           feather: float = 0.08) -> Image.Image | None:
    """The uploaded photo with the edited crop blended back at its place (None when the image is no upload)."""
    i = state.index if index is None else int(index)
    if i not in state.uploads:
        return None
    x = state.last_image if edited is None else edited
    if x is None:
        raise ValueError("paste back: nothing rendered yet")
    full, box = state.uploads[i]
    return paste_back(full, box, x, feather=feather)


def alpha_strip(state: EditorState, factors: Sequence[float] = (-1.0, -0.5, 0.0, 0.5, 1.0)) -> torch.Tensor:
    """The current edit at several strengths in one decode: every α times each factor, [F, 3, H, W]."""
    if not any(state.alphas.values()):
        raise ValueError("α strip: every slider is at 0; move one to see its edit from -α to +α")
    codes, x_T = state.inversion()
    saved = dict(state.alphas)
    try:
        rows = []
        for f in factors:
            state.alphas = {n: a * float(f) for n, a in saved.items()}
            rows.append(state.edited_codes(codes))
    finally:
        state.alphas = saved
    return state._decode(x_T, torch.cat(rows))


def follow(other: EditorState, state: EditorState) -> EditorState:
    """``other`` (another model on the same gallery, e.g. DAE) set to ``state``'s edit: the same image, the α of
    the attributes both have, k capped to its code size, its own single level, no partner, the same x_T mode.
    Images added to ``state``'s gallery since (uploads) are added to ``other``'s, resized to its image size."""
    for i in range(len(other.images), len(state.images)):
        x = state.images[i:i + 1]
        if x.shape[-1] != other.size:
            x = torch.nn.functional.interpolate(x, size=(other.size, other.size), mode="bilinear", antialias=True)
        other.add_image(x[0], state.image_names[i])
    other.select(state.index)
    other.alphas = {n: state.alphas.get(n, 0.0) for n in other.alphas}
    other.k = None if state.k is None else min(state.k, other.L * other.D)
    other.edit_levels = None
    other.partner, other.mix_levels = None, []
    other.set_x_T(state.x_T_mode, state.seed)
    other.steps = state.steps
    return other


def recipe(state: EditorState, checkpoint: str | Path | None = None) -> dict[str, Any]:
    """Everything that decides the edited image, as JSON: the model's identity, the image, α per attribute, k,
    the edited levels, the partner and its levels, the x_T mode and seed, the DDIM steps."""
    j = state.partner
    return {
        "format": RECIPE_FORMAT, "version": 1,
        "model": {"identity": cache.model_identity(state.model), "variant": state.model.config.variant,
                  "checkpoint": None if checkpoint is None else str(checkpoint)},
        "image": {"index": state.index, "name": state.image_names[state.index],
                  "upload": state.index in state.uploads},
        "alphas": {n: a for n, a in state.alphas.items()}, "k": state.k, "edit_levels": state.edit_levels,
        "partner": None if j is None else {"index": j, "name": state.partner_names[j], "levels": state.mix_levels},
        "x_T": {"mode": state.x_T_mode, "seed": state.seed}, "steps": state.steps,
    }


def _next_free(folder: Path, stem: str) -> str:
    n = 1
    while any((folder / f"{stem}-{n:03d}{ext}").exists() for ext in (".png", ".json", "-input.png")):
        n += 1
    return f"{stem}-{n:03d}"


def save_edit(state: EditorState, folder: str | Path, checkpoint: str | Path | None = None,
              compare: EditorState | None = None, scale: int = 4, edited: torch.Tensor | None = None,
              compared: torch.Tensor | None = None) -> tuple[Path, Path]:
    """Write the current edit's panel (original | reconstruction | edited [| the other model's edit]) as
    ``edit-NNN.png`` and its recipe as ``edit-NNN.json`` into ``folder``; files already there are never replaced
    (the next free number is taken). An uploaded image is kept beside them (``edit-NNN-input.png``). ``edited`` /
    ``compared``: renders of the current settings already made (rendered here when not given)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    edited = state.render() if edited is None else edited
    panel = [state.images[state.index], state.reconstruction(), edited]
    if compare is not None:
        panel.append(follow(compare, state).render() if compared is None else compared)
    stem = _next_free(folder, "edit")
    r = recipe(state, checkpoint)
    r["edited_sha256"] = _digest(edited)
    if r["image"]["upload"]:
        Image.fromarray(to_uint8(state.images[state.index][None])[0]).save(folder / f"{stem}-input.png")
        r["image"]["file"] = f"{stem}-input.png"
    if compare is not None:
        r["compare"] = {"identity": cache.model_identity(compare.model), "variant": compare.model.config.variant}
    png, js = folder / f"{stem}.png", folder / f"{stem}.json"
    png.write_bytes(png_bytes(panel, scale=scale))
    js.write_text(json.dumps(r, indent=2) + "\n")
    return png, js


def _digest(x: torch.Tensor) -> str:
    import hashlib

    return hashlib.sha256(x.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()


def load_recipe(path: str | Path) -> dict[str, Any]:
    """A recipe written by ``save_edit`` (ValueError naming the file when it is not one)."""
    path = Path(path)
    try:
        r = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not an editor recipe ({type(e).__name__}: {e})") from None
    if not isinstance(r, dict) or r.get("format") != RECIPE_FORMAT:
        raise ValueError(f"{path}: not an editor recipe (format {RECIPE_FORMAT!r} expected)")
    r["_folder"] = str(path.parent)
    r["_file"] = str(path)
    return r


class RecipeError(ValueError):
    """A recipe (hand-edited, cut short, or of another version) that cannot be applied; nothing was changed."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _checked_recipe(state: EditorState, r: Any) -> dict[str, Any]:
    """Every setting of a recipe, checked against ``state`` before any is applied: a RecipeError in one line names
    the recipe, the field and what it allows."""
    where = f"recipe {r.get('_file', '(given as a dict)')}" if isinstance(r, Mapping) else "recipe"

    def bad(field: str, what: str, got: Any) -> RecipeError:
        return RecipeError(f"{where}: field {field!r} {what}, got {got!r}; save the edit again from the editor "
                           f"(nothing was changed)")

    if not isinstance(r, Mapping):
        raise RecipeError(f"{where}: expected a JSON object as load_recipe gives, got {type(r).__name__}")
    for key, kind in (("model", Mapping), ("image", Mapping), ("alphas", Mapping), ("x_T", Mapping)):
        if not isinstance(r.get(key), kind):
            raise bad(key, "must be a JSON object", r.get(key))
    model, img, xt = r["model"], r["image"], r["x_T"]
    have = cache.model_identity(state.model)
    if model.get("identity") != have:
        raise RecipeError(f"{where}: recipe for model {model.get('identity')} ({model.get('checkpoint')}); this "
                          f"editor holds model {have}: load the recipe's checkpoint")
    out: dict[str, Any] = {}
    if not isinstance(img.get("name"), str):
        raise bad("image.name", "must be the gallery image's name", img.get("name"))
    if img.get("file"):
        f = img["file"]
        if not isinstance(f, str) or Path(f).name != f:
            raise bad("image.file", "must be a file name beside the recipe", f)
        file = Path(r.get("_folder", ".")) / f
        try:
            out["upload"] = load_upload_full(file.read_bytes(), f, state.size)[2]
        except OSError as e:
            raise RecipeError(f"{where}: its image {file} can't be read ({e.strerror or e}); keep it beside the "
                              f"recipe (nothing was changed)") from None
    else:
        i = img.get("index")
        if not _is_int(i):
            raise bad("image.index", "must be an integer gallery index", i)
        if not 0 <= i < len(state.images) or state.image_names[i] != img["name"]:
            raise RecipeError(f"{where}: image {img['name']!r} (gallery {i}) is not in this gallery: open the "
                              f"editor on the same data and gallery size (nothing was changed)")
        out["index"] = i
    unknown = sorted(set(map(str, r["alphas"])) - set(state.alphas))
    if unknown:
        raise RecipeError(f"{where}: attributes {unknown} have no direction in this editor "
                          f"({state.attribute_names}); nothing was changed")
    for n, a in r["alphas"].items():
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a):
            raise bad(f"alphas.{n}", "must be a finite number", a)
    out["alphas"] = {n: float(a) for n, a in r["alphas"].items()}
    steps = r.get("steps")
    if not _is_int(steps) or steps < 1:
        raise bad("steps", "must be a positive integer (DDIM steps)", steps)
    try:
        state.model.timesteps(steps)
    except ValueError as e:
        raise bad("steps", f"is no DDIM step count of this model ({e})", steps) from None
    out["steps"] = steps
    k = r.get("k")
    if k is not None and (not _is_int(k) or not 1 <= k <= state.L * state.D):
        raise bad("k", f"must be null (every feature) or an integer in 1..{state.L * state.D}", k)
    out["k"] = k
    def levels(value, field: str, what: str) -> list[int]:
        try:
            if isinstance(value, list):
                return editing.check_levels(value, state.L, field)
        except ValueError:
            pass
        raise bad(field, f"must be {what}a list of distinct levels in 0..{state.L - 1}", value)

    lv = r.get("edit_levels")
    out["edit_levels"] = None if lv is None else levels(lv, "edit_levels", "null (every level) or ")
    p = r.get("partner")
    out["partner"], out["mix_levels"] = None, []
    if p is not None:
        if not isinstance(p, Mapping) or not _is_int(p.get("index")) or not 0 <= p["index"] < len(state.partner_images):
            raise bad("partner", f"must be null or an object whose index is in 0..{len(state.partner_images) - 1}", p)
        out["partner"], out["mix_levels"] = p["index"], levels(p.get("levels", []), "partner.levels", "")
    if xt.get("mode") not in X_T_MODES:
        raise bad("x_T.mode", f"must be one of {list(X_T_MODES)}", xt.get("mode"))
    if not _is_int(xt.get("seed")) or not -2**63 <= xt["seed"] < 2**64:  # what torch.Generator takes
        raise bad("x_T.seed", "must be an integer seed", xt.get("seed"))
    out["x_T"] = (xt["mode"], xt["seed"])
    return out


def apply_recipe(state: EditorState, r: dict[str, Any]) -> EditorState:
    """Set ``state`` to a recipe's edit (``load_recipe``); refused in one line (RecipeError, nothing changed) when it
    is for another model or another gallery image, or a field is not one the editor can take. ``render()`` then
    gives the saved image bit for bit."""
    c = _checked_recipe(state, r)
    if "upload" in c:
        state.add_image(c["upload"], r["image"]["name"])
    else:
        state.select(c["index"])
    state.reset_all()
    for n, a in c["alphas"].items():
        state.set_attribute(n, a)
    state.steps = c["steps"]
    state.k = c["k"]
    state.edit_levels = c["edit_levels"]
    state.set_partner(c["partner"], c["mix_levels"])
    state.set_x_T(*c["x_T"])
    return state


def _find(state: EditorState, wanted, what: str, search: int = 256) -> int:
    """The gallery index of the first Shapes image whose attributes satisfy ``wanted`` (a set of names); when the
    gallery has none, the first such held-out shape is added to it. KeyError when none of ``search`` has them."""
    for i, name in enumerate(state.image_names):
        if name.startswith("shape ") and ":" in name and wanted(set(name.split(":", 1)[1].split(", "))):
            return i
    pool = Shapes(size=state.size, seed=10_000).batch(range(search))
    for j, a in enumerate(pool["attributes"]):
        if wanted({n for n, v in zip(Shapes.attribute_names, a.tolist()) if v > 0.5}):
            return state.add_image(pool["image"][j], f"shape {j}: {_describe(a, Shapes.attribute_names)}")
    raise KeyError(f"no {what} among {search} held-out shapes")


def guided_start(state: EditorState, compare: EditorState | None = None, attribute: str = "red",
                 shape: str = "is_star", k_fraction: float = 0.1, partner_level: int = 2,
                 alpha: float = 1.0) -> dict[str, torch.Tensor]:
    """Three first steps with the editor on a Shapes gallery, as {caption: image [3, H, W]}: ``attribute`` on an
    image of ``shape`` that lacks it, with every feature and with the top ``k_fraction`` of them; the image with
    z^(``partner_level`` + 1) taken from a partner of another shape; the same edit on ``compare`` (DAE).
    Leaves ``state`` (and ``compare``) reset. KeyError when the gallery has no such image."""
    has = _find(state, lambda on: shape in on and attribute not in on, f"a {shape} without {attribute}")
    other = _find(state, lambda on: shape not in on, f"an image that is not a {shape}")
    level = min(partner_level, state.L - 1)
    counts = (state.renders, None if compare is None else compare.renders)  # the guide's renders are not the user's
    state.reset_all()
    state.select(has)
    out = {"original": state.images[has], "reconstruction": state.reconstruction()}
    state.set_attribute(attribute, alpha)
    out[f"{attribute} {alpha:+g}, every feature"] = state.render()
    state.k = max(1, round(k_fraction * state.L * state.D))
    out[f"{attribute} {alpha:+g}, top {k_fraction:.0%} (k = {state.k})"] = state.render()
    if compare is not None:
        label = VARIANT_LABELS.get(compare.model.config.variant, compare.model.config.variant)
        out[f"{label}: {attribute} {alpha:+g}, top {k_fraction:.0%}"] = follow(compare, state).render()
        compare.reset_all()
    state.reset_all()
    state.set_partner(other, [level])
    out[f"z{level + 1} from image {other}"] = state.render()
    out[f"partner (image {other})"] = state.images[other]
    state.reset_all()
    state.renders = counts[0]
    if compare is not None:
        compare.renders = counts[1]
    return out


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


def _describe(attributes: torch.Tensor, names: Sequence[str]) -> str:
    on = [n for n, a in zip(names, attributes.tolist()) if a > 0.5]
    return ", ".join(on) if on else "(no attributes)"
