"""The interactive editor (ipywidgets): attribute sliders with truncated features, level selection, style mixing.

HDAE §3.3 and Fig. 7 as one panel: every nonzero slider adds its manipulation α·√(D·L)·n′/‖n′‖ (in the
standardised space, n′ restricted to the ticked levels and truncated to its top k entries), then the ticked
partner levels replace the image's, and DDIM decodes with the image's own inverted x_T (inverted once per
image and cached). Notebooks only construct and display an ``Editor``; tests drive the same object.
"""
from __future__ import annotations

import io
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from . import editing
from .directions import DIRECTIONS_FILE, AttributeDirections, load_directions
from .plots import image_grid
from .stats import STATS_FILE, LatentStats

__all__ = ["Editor", "resolve_path", "png_bytes", "load_upload"]

# ipywidgets' FileUpload keeps the whole file in the kernel; refuse anything a photo would not need
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
REPO_ROOT = Path(__file__).resolve().parents[1]


def resolve_path(path: str | Path) -> Path:
    """``path`` as given when it exists (absolute or from the working directory), else relative to the repository root.

    Voila runs a notebook from its own folder and papermill from wherever it was called, so paths written
    relative to the repository root (``data/pretrained/…``) resolve in both.
    """
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    alt = REPO_ROOT / p
    return alt if alt.exists() else p


def png_bytes(images: torch.Tensor | Sequence[torch.Tensor], scale: int = 1, pad: int = 1) -> bytes:
    """PNG bytes of images [N, 3, H, W] in [-1, 1] side by side (white padding, nearest-neighbour upscaling)."""
    row = images if isinstance(images, torch.Tensor) else torch.stack(list(images))
    buf = io.BytesIO()
    image_grid([row], scale=scale, pad=pad).save(buf, format="PNG")
    return buf.getvalue()


def load_upload(data: bytes, name: str, size: int) -> torch.Tensor:
    """An uploaded PNG/JPEG as [3, size, size] in [-1, 1]: centre crop, bicubic resize; BadImageError if unusable."""
    from .data.images import BadImageError, center_crop_resize, decode_image, to_tensor

    if len(data) == 0:
        raise BadImageError(f"{name}: the file is empty")
    if len(data) > MAX_UPLOAD_BYTES:
        raise BadImageError(f"{name}: {len(data) / 2**20:.1f} MiB is too large (at most {MAX_UPLOAD_BYTES // 2**20} MiB)")
    # alpha and palette images are common uploads: flatten them to RGB rather than refuse them
    img = decode_image(bytes(data), name, convert_mode=True)
    return to_tensor(center_crop_resize(img, size))


def _direction_dict(directions) -> tuple[dict[str, torch.Tensor], list[str], LatentStats | None]:
    """(name → direction, names in order, the statistics they assume) of directions / classifiers / a dict."""
    if isinstance(directions, AttributeDirections):
        return dict(directions.directions), list(directions.names), directions.stats
    if isinstance(directions, Mapping):
        return {str(k): torch.as_tensor(v) for k, v in directions.items()}, [str(k) for k in directions], None
    if isinstance(directions, (str, Path)):
        d = load_directions(resolve_path(directions))
        return dict(d.directions), list(d.names), d.stats
    raise TypeError(f"directions: expected AttributeDirections / AttributeClassifiers, a dict name -> [L, D] tensor "
                    f"or a folder holding {DIRECTIONS_FILE}, got {type(directions).__name__}")


def _as_images(images, name: str) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        x = images if images.dim() == 4 else images.unsqueeze(0)
    else:
        items = list(images)
        if not items:
            raise ValueError(f"{name}: no images")
        x = torch.stack([torch.as_tensor(i) for i in items])
    return x.detach().float().cpu()


class Editor:
    """ipywidgets editor for one HDAE: attribute sliders, k, edited levels, a style-mix partner, Render.

    ``directions``: ``AttributeDirections`` / ``AttributeClassifiers``, a dict name → direction [L, D]
    (standardised space) or a folder with ``directions.safetensors``. ``stats`` standardise the codes
    (None: the directions' own). ``images`` [N, 3, H, W] in [-1, 1] form the gallery (None: 8 built-in
    shapes); ``partner_images`` the style-mix partners (None: the gallery, uploads included).
    ``render()`` returns the edited image [3, H, W]; ``image_widget.value`` holds original | edited as PNG.
    """

    def __init__(self, model, stats: LatentStats | None, directions, images=None,
                 attribute_names: Sequence[str] | None = None, steps: int = 20, partner_images=None,
                 image_names: Sequence[str] | None = None, partner_names: Sequence[str] | None = None,
                 alpha_range: tuple[float, float] = (-1.0, 1.0), alpha_step: float = 0.05,
                 k: int | None = None, display_size: int = 192):
        import ipywidgets as W

        self.model = model.eval()
        self.steps = int(steps)
        model.timesteps(self.steps)  # an invalid step count fails here, not at the first click
        p = next(model.parameters())
        self._device, self._dtype = p.device, p.dtype
        self.size = int(model.config.image_size)
        self.L, self.D = int(model.num_levels), int(model.code_dim)
        self.scale = max(1, int(display_size) // self.size)

        dirs, dir_names, dir_stats = _direction_dict(directions)
        self.stats = stats if stats is not None else dir_stats
        if self.stats is None:
            raise ValueError("stats: no LatentStats given and the directions carry none")
        if tuple(self.stats.shape) != (self.L, self.D):
            raise ValueError(f"stats: statistics for codes {list(self.stats.shape)}, but the model's codes are "
                             f"[{self.L}, {self.D}] (statistics of another model?)")
        names = list(attribute_names) if attribute_names is not None else dir_names
        missing = [n for n in names if n not in dirs]
        if missing:
            raise KeyError(f"attribute_names: no direction for {missing}; available: {dir_names}")
        if not names:
            raise ValueError("attribute_names: no attributes to edit")
        self.directions: dict[str, torch.Tensor] = {}
        for n in names:
            d = torch.as_tensor(dirs[n]).detach().float().cpu()
            if d.numel() != self.L * self.D:
                raise ValueError(f"direction {n!r}: shape {list(d.shape)} does not match the model's codes "
                                 f"[{self.L}, {self.D}]")
            self.directions[n] = d.reshape(self.L, self.D)
        self.attribute_names = names

        if images is None:
            from .data import Shapes

            shapes = Shapes(size=self.size, seed=10_000)
            images = shapes.batch(range(8))["image"]
        self.images = _as_images(images, "images")
        self._check(self.images, "images")
        self.image_names = list(image_names) if image_names is not None else [f"image {i}" for i in range(len(self.images))]
        if len(self.image_names) != len(self.images):
            raise ValueError(f"image_names: {len(self.image_names)} names for {len(self.images)} images")
        self._shared_partners = partner_images is None
        if partner_images is None:
            self.partner_images, self.partner_names = self.images, self.image_names
        else:
            self.partner_images = _as_images(partner_images, "partner_images")
            self._check(self.partner_images, "partner_images")
            self.partner_names = (list(partner_names) if partner_names is not None
                                  else [f"partner {i}" for i in range(len(self.partner_images))])
        self._codes: dict[int, torch.Tensor] = {}  # gallery index -> codes [1, L, D]
        self._x_T: dict[tuple[int, int], torch.Tensor] = {}  # (gallery index, steps) -> inverted x_T [1, C, H, W]
        self._partner_codes: dict[int, torch.Tensor] = {}
        self.last_image: torch.Tensor | None = None
        self.last_seconds: float | None = None
        self.renders = 0

        # ---------------------------------------------------------------- widgets
        desc = {"description_width": "initial"}
        self.image_select = W.Dropdown(options=self._options(self.image_names), value=0, description="image",
                                       layout=W.Layout(width="440px"))
        self.upload = W.FileUpload(accept=".png,.jpg,.jpeg,image/png,image/jpeg", multiple=False,
                                   description="upload")
        self.sliders: dict[str, W.FloatSlider] = {}
        lo, hi = alpha_range
        for n in names:
            s = W.FloatSlider(value=0.0, min=float(lo), max=float(hi), step=float(alpha_step), description=n,
                              continuous_update=False, readout_format=".2f", style=desc,
                              layout=W.Layout(width="420px"))
            s.add_class("hdae-alpha")
            s.add_class(f"hdae-alpha-{_css(n)}")
            self.sliders[n] = s
        self.k_text = W.Text(value="all" if k is None else str(int(k)), description="k (top features)",
                             placeholder=f"all or 1..{self.L * self.D}", style=desc, layout=W.Layout(width="260px"))
        self.k_text.add_class("hdae-k")
        res = model.config.level_resolutions if self.L > 1 else None
        self.level_boxes = [W.Checkbox(value=True, description=self._level_label(i, res), indent=False,
                                       layout=W.Layout(width="auto")) for i in range(self.L)]
        self.partner_select = W.Dropdown(options=[("none", -1)] + self._options(self.partner_names), value=-1,
                                         description="mix with", layout=W.Layout(width="440px"))
        self.mix_boxes = [W.Checkbox(value=False, description=self._level_label(i, res), indent=False,
                                     layout=W.Layout(width="auto")) for i in range(self.L)]
        self.render_button = W.Button(description="Render", button_style="primary", icon="paint-brush")
        self.render_button.add_class("hdae-render")
        self.reset_button = W.Button(description="Reset sliders")
        self.image_widget = W.Image(format="png", layout=W.Layout(width=f"{2 * self.size * self.scale + 3 * self.scale}px"))
        self.image_widget.add_class("hdae-output")
        self.status = W.Label(value="")
        self.status.add_class("hdae-status")
        self.error_label = W.HTML(value="")
        self.error_label.add_class("hdae-error")

        self.render_button.on_click(lambda _b: self._render_safely())
        self.reset_button.on_click(lambda _b: self.reset())
        self.image_select.observe(self._on_select, names="value")
        self.upload.observe(self._on_upload, names="value")

        levels_title = "edit levels (z¹ finest)" if self.L > 1 else None
        edit_levels = [W.HTML(f"<b>{levels_title}</b>"), W.HBox(self.level_boxes)] if levels_title else []
        self.widget = W.VBox([
            W.HBox([self.image_select, self.upload]),
            W.HTML("<b>attributes</b> (α per direction; all nonzero sliders are summed)"),
            W.VBox(list(self.sliders.values())),
            W.HBox([self.k_text]),
            *edit_levels,
            W.HTML("<b>style mixing</b>: take the ticked levels from the partner"),
            W.HBox([self.partner_select, W.HBox(self.mix_boxes)]),
            W.HBox([self.render_button, self.reset_button]),
            self.error_label,
            W.HTML("original | edited"),
            self.image_widget,
            self.status,
        ])
        self.widget.add_class("hdae-editor")
        self._preview()

    # ---------------------------------------------------------------- construction helpers

    @classmethod
    def from_checkpoint(cls, path: str | Path, n_images: int = 8, steps: int = 20, n_stats: int = 512,
                        directions=None, attribute_names: Sequence[str] | None = None, seed: int = 10_000,
                        ema: bool = True, progress: bool = False, **kw) -> "Editor":
        """An editor for a checkpoint folder, its gallery the first ``n_images`` built-in shapes (held-out seed).

        Statistics and directions come from ``latent_stats.safetensors`` / ``directions.safetensors`` in
        the folder when present (``hdae import-diffae``); otherwise ``n_stats`` training shapes are encoded
        and a linear classifier per shapes attribute gives the directions (HDAE §3.3).
        """
        from .checkpoint import load
        from .data import Shapes
        from .pretrained import resolve

        folder = resolve(path)  # a folder, a training run's folder or a demo model's name
        model = load(folder, ema=ema)
        size = model.config.image_size
        gallery = Shapes(size=size, seed=seed)
        batch = gallery.batch(range(int(n_images)))
        names = [f"shape {i}: {_describe(a, gallery.attribute_names)}" for i, a in enumerate(batch["attributes"])]
        stats = LatentStats.load(folder) if (folder / STATS_FILE).is_file() else None
        if directions is None and (folder / DIRECTIONS_FILE).is_file():
            directions = load_directions(folder)
        elif isinstance(directions, (str, Path)):
            directions = load_directions(resolve_path(directions))
        if stats is None and directions is not None:
            stats = directions.stats if isinstance(directions, AttributeDirections) else None
        if stats is None or directions is None:
            train_set = Shapes(size=size, seed=0)
            enc = editing.encode_dataset(model, train_set, n=int(n_stats), progress=progress)
            if stats is None:
                stats = LatentStats.from_codes(enc["codes"])
            if directions is None:
                # only the attributes that get a slider: each classifier is a separate fit
                names_all = list(train_set.attribute_names)
                wanted = names_all if attribute_names is None else list(attribute_names)
                unknown = [n for n in wanted if n not in names_all]
                if unknown:
                    raise KeyError(f"attribute_names: {unknown} are not shapes attributes; choose from {names_all}")
                cols = [names_all.index(n) for n in wanted]
                directions = editing.train_classifiers(enc["codes"], enc["attributes"][:, cols], wanted,
                                                       stats=stats, progress=progress)
        return cls(model, stats, directions, images=batch["image"], image_names=names, steps=steps,
                   attribute_names=attribute_names, **kw)

    def _check(self, x: torch.Tensor, name: str) -> None:
        want = (self.model.config.in_channels, self.size, self.size)
        if x.dim() != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(f"{name}: expected [N, {', '.join(map(str, want))}] in [-1, 1] for this model, "
                             f"got {list(x.shape)}")

    @staticmethod
    def _options(names: Sequence[str]) -> list[tuple[str, int]]:
        return [(n, i) for i, n in enumerate(names)]

    def _level_label(self, i: int, res) -> str:
        if res is None:
            return "z (whole code)"
        sup = "¹²³⁴⁵⁶⁷⁸⁹"[i] if i < 9 else f"^{i + 1}"
        return f"z{sup} ({res[i]} px)"

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    # ---------------------------------------------------------------- programmatic API

    @property
    def index(self) -> int:
        """The gallery index of the image being edited."""
        return int(self.image_select.value)

    def select(self, index: int) -> None:
        """Edit gallery image ``index`` (shows it; press Render / call ``render()`` for the edit)."""
        if not 0 <= int(index) < len(self.images):
            raise IndexError(f"image index {index} out of range 0..{len(self.images) - 1}")
        self.image_select.value = int(index)

    def set_attribute(self, name: str, alpha: float) -> None:
        """Set the slider of attribute ``name`` to α (clipped to the slider's range by ipywidgets)."""
        if name not in self.sliders:
            raise KeyError(f"no slider for {name!r}; attributes: {self.attribute_names}")
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

    def add_image(self, image: torch.Tensor, name: str) -> int:
        """Append an image [3, H, W] in [-1, 1] to the gallery (and the partners when shared) and select it."""
        x = _as_images(image, "image")
        self._check(x, "image")
        self.images = torch.cat([self.images, x])
        self.image_names.append(name)
        idx = len(self.images) - 1
        if self._shared_partners:
            self.partner_images, self.partner_names = self.images, self.image_names
            keep = self.partner_select.value
            self.partner_select.options = [("none", -1)] + self._options(self.partner_names)
            self.partner_select.value = keep
        self.image_select.options = self._options(self.image_names)
        self.image_select.value = idx
        return idx

    def load_image_bytes(self, data: bytes, name: str = "upload") -> int:
        """Decode a PNG/JPEG (centre crop, resize to the model's size), add it to the gallery and select it."""
        return self.add_image(load_upload(data, name, self.size), f"upload: {name}")

    def k(self) -> int | None:
        """The truncation k from the text box (None for 'all'); ValueError for anything else."""
        text = self.k_text.value.strip().lower()
        if text in ("", "all", "none"):
            return None
        try:
            k = int(text)
        except ValueError:
            raise ValueError(f"k: expected 'all' or an integer in 1..{self.L * self.D}, got {self.k_text.value!r}") from None
        if not 1 <= k <= self.L * self.D:
            raise ValueError(f"k: expected 'all' or an integer in 1..{self.L * self.D}, got {k}")
        return k

    def edit_levels(self) -> list[int] | None:
        """The ticked edit levels (None when all are ticked)."""
        lv = [i for i, b in enumerate(self.level_boxes) if b.value]
        return None if len(lv) == self.L else lv

    def alphas(self) -> dict[str, float]:
        """The nonzero sliders, name → α."""
        return {n: float(s.value) for n, s in self.sliders.items() if s.value != 0}

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

    def _partner(self, j: int) -> torch.Tensor:
        """Codes [1, L, D] of partner j (shared with the gallery's when the partners are the gallery)."""
        cache, src = (self._codes, self.images) if self._shared_partners else (self._partner_codes, self.partner_images)
        if j not in cache:
            with torch.no_grad():
                cache[j] = self.model.encode(src[j:j + 1].to(self._device, self._dtype))
        return cache[j]

    def edited_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """The sum of every nonzero slider's manipulation (HDAE §3.3), then the partner's ticked levels (Fig. 7)."""
        alphas = self.alphas()
        out = codes
        if alphas:
            k, levels = self.k(), self.edit_levels()
            if levels == []:
                raise ValueError("edit levels: none ticked; tick at least one level to edit (or set every slider to 0)")
            delta = torch.zeros_like(codes)
            for n, a in alphas.items():
                d = self.directions[n].to(codes.device)
                delta = delta + (editing.manipulate(codes, d, a, self.stats, k=k, levels=levels) - codes)
            out = codes + delta
        j = int(self.partner_select.value)
        mix = [i for i, b in enumerate(self.mix_boxes) if b.value]
        if j >= 0 and mix:
            out = editing.mix_levels(out, self._partner(j), mix)
        return out

    def render(self) -> torch.Tensor:
        """Decode the current edit from the image's own x_T; updates the image widget and status, returns [3, H, W]."""
        t0 = time.perf_counter()
        i = self.index
        fresh = (i, self.steps) not in self._x_T
        codes, x_T = self.inversion(i)
        t_inv = time.perf_counter() - t0
        edited = self.edited_codes(codes)
        with torch.no_grad():
            x = self.model.decode(x_T, edited, self.steps)[0].float().cpu().clamp(-1, 1)
        self.last_image = x
        self.last_seconds = time.perf_counter() - t0
        self.renders += 1
        self.image_widget.value = png_bytes([self.images[i], x], scale=self.scale)
        what = ", ".join(f"{n} {a:+.2f}" for n, a in self.alphas().items()) or "no attribute edit"
        inv = f"; first render of this image, inversion {t_inv:.1f} s" if fresh else ""
        self.status.value = (f"render {self.renders}: rendered in {self.last_seconds:.1f} s "
                             f"({self.steps} DDIM steps; {what}{inv})")
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
            self._error(str(e))
            self.status.value = "render failed"
        finally:
            self.render_button.disabled = False

    def _error(self, message: str) -> None:
        import html

        self.error_label.value = f"<span style='color:#b00020'>⚠ {html.escape(message)}</span>"

    def _preview(self) -> None:
        """Show the selected image beside a grey placeholder until the next render."""
        x = self.images[self.index]
        self.image_widget.value = png_bytes([x, torch.zeros_like(x)], scale=self.scale)
        self.status.value = "press Render"

    def _on_select(self, change) -> None:
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
            self._error(f"could not use the upload: {e}")
        finally:
            try:
                self.upload.value = ()  # so the same file can be chosen again
            except Exception:  # noqa: BLE001 - ipywidgets 7 keeps the value read-only
                pass


def example_edit(editor: Editor, attribute: str, alpha: float, path: str | Path) -> dict:
    """Render one edit without widgets and write ``path`` (original | reconstruction | edited); its numbers."""
    editor.reset()
    base = editor.render()  # the α = 0 reconstruction; includes the one-off DDIM inversion
    first_s = editor.last_seconds
    editor.set_attribute(attribute, alpha)
    edited = editor.render()
    Path(path).write_bytes(png_bytes([editor.images[editor.index], base, edited], scale=editor.scale))
    u8 = lambda x: ((x.clamp(-1, 1) + 1) * 127.5).round()  # noqa: E731
    changed = float(((u8(edited) - u8(base)).abs().amax(0) > 2).float().mean())  # > 2 grey levels in any channel
    cfg = editor.model.config
    return {"variant": cfg.variant, "image_size": cfg.image_size, "attribute": attribute, "alpha": alpha,
            "first_render_seconds": round(first_s, 3), "render_seconds": round(editor.last_seconds, 3),
            "changed_pixel_fraction": round(changed, 4),
            "mse_edit_vs_reconstruction": float(((edited - base) ** 2).mean())}


def _css(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)


def _describe(attributes: torch.Tensor, names: Sequence[str]) -> str:
    on = [n for n, a in zip(names, attributes.tolist()) if a > 0.5]
    return ", ".join(on) if on else "(no attributes)"
