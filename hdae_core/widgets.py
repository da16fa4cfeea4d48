"""The interactive editor's view (ipywidgets) over an ``EditorState`` (``hdae_core.editor_state``).

Attribute sliders with truncated features, level selection and style mixing in one panel; notebooks only
construct and display an ``Editor``; tests drive the same object.
"""
from __future__ import annotations

import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from .editor_state import (EDITOR_PARAMETERS, EditorSettingError, EditorState, editor_settings, png_bytes,
                           state_from_checkpoint)
from .editor_state import pasted as paste_into_upload

__all__ = ["Editor", "EditorState", "state_from_checkpoint", "png_bytes", "editor_settings", "EDITOR_PARAMETERS",
           "EditorSettingError", "example_edit"]


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
        pasted = paste_into_upload(st, x) if self.paste_box.value else None
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


