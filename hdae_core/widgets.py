"""The interactive editor's view (ipywidgets) over an ``EditorState`` (``hdae_core.editor_state``).

Attribute sliders with truncated features, level selection and style mixing in one panel; notebooks only
construct and display an ``Editor``; tests drive the same object.
"""
from __future__ import annotations

import html
import io
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from .editor_state import (EDITOR_PARAMETERS, EditorSettingError, EditorState, editor_settings, png_bytes,
                           state_from_checkpoint)
from .editor_state import alpha_strip, follow, save_edit
from .editor_state import pasted as paste_into_upload
from .pretrained import repo_path

__all__ = ["Editor", "EditorState", "state_from_checkpoint", "png_bytes", "editor_settings", "EDITOR_PARAMETERS",
           "EditorSettingError", "example_edit"]


class Editor:
    """The ipywidgets view of an ``EditorState``: a thumbnail gallery and upload (with *paste back*), attribute
    sliders, k, edited levels, a style-mix partner from thumbnails, ``random x_T``, ``compare with DAE``, and the
    buttons Render, α strip, Save and Reset all. ``panels`` holds the captioned images original, reconstruction
    (α = 0), edited (``image_widget``) and the other model's edit; ``render()`` returns the edited image."""

    def __init__(self, state: EditorState, alpha_range: tuple[float, float] = (-1.0, 1.0), alpha_step: float = 0.05,
                 k: int | None = None, display_size: int = 192, compare: EditorState | None = None,
                 save_dir: str | Path | None = None, checkpoint: str | Path | None = None):
        import ipywidgets as W  # lazy: ~0.7 s, and EditorState (tests, scripts) needs no widgets

        if not isinstance(state, EditorState):
            raise TypeError(f"state: expected an EditorState (Editor.from_checkpoint builds one), "
                            f"got {type(state).__name__}")
        self.state = st = state
        self.compare, self.checkpoint = compare, checkpoint
        self.save_dir = Path(save_dir) if save_dir is not None else repo_path("reports/07_editor") / "saved"
        self.scale = max(1, int(display_size) // st.size)
        self._W, self._index, self._rendered_at, self._partner, self._compared = W, 0, None, None, None
        _make_controls(W, self, alpha_range, alpha_step, k)

        for button, action in ((self.render_button, self.render), (self.strip_button, self.strip),
                               (self.save_button, self.save), (self.reset_button, self.reset)):
            button.on_click(lambda _b, act=action: self._safely(act))
        for slider in self.sliders.values():
            slider.observe(self._on_slider, names="value")
        self.upload.observe(self._on_upload, names="value")
        self._refresh_gallery()
        self.widget = _panel(W, self)
        self.widget.add_class("hdae-editor")
        self._preview()

    @classmethod
    def from_checkpoint(cls, path: str | Path, alpha_range: tuple[float, float] = (-1.0, 1.0),
                        alpha_step: float = 0.05, k: int | None = None, display_size: int = 192,
                        compare_checkpoint: str | Path | None = None, save_dir: str | Path | None = None,
                        **state_kw) -> "Editor":
        """An editor for a checkpoint folder (``state_kw`` go to ``state_from_checkpoint``); with
        ``compare_checkpoint`` (a DAE) a second state on the same gallery for ``compare with DAE``."""
        other = state_from_checkpoint(compare_checkpoint, **state_kw) if compare_checkpoint else None
        return cls(state_from_checkpoint(path, **state_kw), alpha_range=alpha_range, alpha_step=alpha_step, k=k,
                   display_size=display_size, compare=other, save_dir=save_dir, checkpoint=path)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    # ---------------------------------------------------------------- programmatic API (widgets and state together)

    @property
    def index(self) -> int:
        """The gallery index of the image being edited."""
        return self._index

    def select(self, index: int) -> None:
        """Edit gallery image ``index`` (shows it; press Render / call ``render()`` for the edit)."""
        self.state.select(index)
        self._index = int(index)
        self.error_label.value = ""
        self._refresh_gallery()
        self._preview()

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
        if index is not None and not 0 <= int(index) < len(self.state.partner_images):
            raise IndexError(f"partner index {index} out of range 0..{len(self.state.partner_images) - 1}")
        self._partner = None if index is None else int(index)
        chosen = {int(v) for v in levels}
        for i, b in enumerate(self.mix_boxes):
            b.value = i in chosen
        self._refresh_gallery()

    def reset(self) -> None:
        """Reset all: sliders to 0, k to all, every level edited, no partner, the image's own x_T."""
        for s in self.sliders.values():
            s.value = 0.0
        self.k_text.value = "all"
        for b in self.level_boxes:
            b.value = True
        self.random_box.value = False
        self.set_partner(None)
        self.state.reset_all()

    def load_image_bytes(self, data: bytes, name: str = "upload") -> int:
        """Decode a PNG/JPEG (centre crop, resize to the model's size), add it to the gallery and select it."""
        idx = self.state.load_image_bytes(data, name)
        self.select(idx)
        return idx

    def k(self) -> int | None:
        """The truncation k from the text box (None for 'all'); ValueError for anything else."""
        return self.state.parse_k(self.k_text.value)

    def edit_levels(self) -> list[int] | None:
        """The ticked edit levels (None when all are ticked)."""
        lv = [i for i, b in enumerate(self.level_boxes) if b.value]
        return None if len(lv) == self.state.L else lv

    def mix_levels(self) -> list[int]:
        """The levels ticked to take from the style-mix partner."""
        return [i for i, b in enumerate(self.mix_boxes) if b.value]

    def comparing(self) -> EditorState | None:
        """The other model's state when ``compare with DAE`` is ticked (and one is loaded), else None."""
        return self.compare if self.compare is not None and self.compare_box.value else None

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
        st.set_partner(self._partner, self.mix_levels())
        st.set_x_T("random" if self.random_box.value else "own")
        return st

    def edited_codes(self, codes: torch.Tensor) -> torch.Tensor:
        return self.sync().edited_codes(codes)

    def render(self) -> torch.Tensor:
        """Decode the current edit into the panels (the other model's and the pasted-back photo when asked for)."""
        st = self.sync()
        x = st.render()
        panel = {"original": st.images[st.index], "reconstruction": st.reconstruction(), "edited": x}
        comparing = self.comparing()
        if comparing is not None:
            panel["DAE edited"] = self._compared = follow(comparing, st).render()
        for caption, img in panel.items():
            self.panels[caption].value = png_bytes(img[None], scale=self.scale)
        self._panel_boxes["DAE edited"].layout.display = None if comparing is not None else "none"
        pasted = paste_into_upload(st, x) if self.paste_box.value else None
        if pasted is not None:
            buf = io.BytesIO()
            pasted.save(buf, format="PNG")
            self.paste_widget.value = buf.getvalue()
        self.paste_widget.layout.display = None if pasted is not None else "none"
        self.status.value = _status(st, self.alphas(), pasted is not None)
        self.error_label.value = ""
        return x

    def strip(self) -> torch.Tensor:
        """Five strengths of the current edit in a row, from −α to +α (one decode)."""
        images = alpha_strip(self.sync())
        self.strip_widget.value = png_bytes(images, scale=self.scale)
        self.strip_widget.layout.display = None
        self.status.value = (f"α strip: {', '.join(f'{n} {a:+.2f}' for n, a in self.alphas().items())}, each times "
                             f"−1, −0.5, 0, +0.5, +1 ({self.state.steps} DDIM steps)")
        return images

    def save(self) -> tuple[Path, Path]:
        """Write the panel as PNG and its recipe as JSON into ``save_dir`` (``editor_state.save_edit``)."""
        edited = self.render()  # the panels show what is saved; save_edit reuses these renders
        comparing = self.comparing()
        png, js = save_edit(self.state, self.save_dir, self.checkpoint, comparing, scale=self.scale, edited=edited,
                            compared=self._compared if comparing is not None else None)
        self.saved_label.value = f"saved {html.escape(str(png))} and {html.escape(js.name)}"
        return png, js

    # ---------------------------------------------------------------- callbacks

    def _safely(self, action) -> None:
        _safely(self, action)

    def _on_slider(self, change) -> None:
        # a slider's last value can reach the kernel just after a Render click (the browser holds back a slider's
        # updates while earlier ones await the kernel): render again, so the panel shows the value the user set
        from_browser = bool(getattr(change["owner"], "_property_lock", None))
        if from_browser and self._rendered_at is not None and time.monotonic() - self._rendered_at < RACE_S:
            self._safely(self.render)

    def _refresh_gallery(self) -> None:
        _refresh_gallery(self)

    def _preview(self) -> None:
        """Show the selected image; the other panels wait for Render."""
        x = self.state.images[self.index]
        self.panels["original"].value = png_bytes(x[None], scale=self.scale)
        blank = png_bytes(torch.zeros_like(x)[None], scale=self.scale)
        for c in ("reconstruction", "edited", "DAE edited"):
            self.panels[c].value = blank
        self.paste_widget.layout.display = "none"
        self.strip_widget.layout.display = "none"  # an α strip of the previous image would mislead
        self.status.value = "press Render"

    def _on_upload(self, change) -> None:
        _on_upload(self, change)


RACE_S = 2.0  # seconds after a render in which a slider's late value triggers another render


def _make_controls(W, ed: "Editor", alpha_range, alpha_step: float, k: int | None) -> None:
    """Every widget of the editor, as attributes of ``ed`` (each with a CSS class the browser test finds it by)."""
    st, compare = ed.state, ed.compare
    ed.upload = _styled(W.FileUpload(accept=".png,.jpg,.jpeg,image/png,image/jpeg", multiple=False,
                                     description="upload"), "hdae-upload")
    ed.paste_box = _styled(W.Checkbox(value=False, description="paste back into the uploaded photo", indent=False),
                           "hdae-paste-box")
    ed.gallery_box, ed.partner_box = W.HBox(), W.HBox()
    ed.sliders = _alpha_sliders(W, st.attribute_names, alpha_range, alpha_step)
    ed.k_text = _styled(W.Text(value="all" if k is None else str(int(k)), description="k (top features)",
                               placeholder=f"all or 1..{st.L * st.D}", style={"description_width": "initial"},
                               layout=W.Layout(width="260px")), "hdae-k")
    res = st.model.config.level_resolutions if st.L > 1 else None
    ed.level_boxes = _level_boxes(W, st.L, res, True, "hdae-level")
    ed.mix_boxes = _level_boxes(W, st.L, res, False, "hdae-mix")
    ed.random_box = _styled(W.Checkbox(value=False, description="random x_T", indent=False), "hdae-random")
    ed.compare_box = _styled(W.Checkbox(value=False, description="compare with DAE", indent=False,
                                        disabled=compare is None), "hdae-compare")
    ed.render_button = _styled(W.Button(description="Render", button_style="primary", icon="paint-brush"),
                               "hdae-render")
    ed.strip_button = _styled(W.Button(description="α strip"), "hdae-strip")
    ed.save_button = _styled(W.Button(description="Save"), "hdae-save")
    ed.reset_button = _styled(W.Button(description="Reset all"), "hdae-reset")
    ed.panels = {c: _styled(W.Image(format="png"), f"hdae-{c}") for c in ("original", "reconstruction", "edited")}
    ed.panels["DAE edited"] = _styled(W.Image(format="png"), "hdae-compare-panel")
    ed.image_widget = ed.panels["edited"]
    ed.image_widget.add_class("hdae-output")
    ed.strip_widget = _styled(W.Image(format="png", layout=W.Layout(display="none")), "hdae-strip-image")
    ed.paste_widget = _styled(W.Image(format="png", layout=W.Layout(max_width="512px", display="none")),
                              "hdae-paste")
    ed.status, ed.error_label = _styled(W.Label(value=""), "hdae-status"), _styled(W.HTML(), "hdae-error")
    ed.directions_label = W.HTML(f"<i>directions: {html.escape(st.directions_source)}</i>")
    ed.saved_label = _styled(W.HTML(), "hdae-saved")


def _safely(ed: "Editor", action) -> None:
    """A button: a bad setting (k, levels, α) shows an error and keeps the previous images."""
    for b in (ed.render_button, ed.strip_button, ed.save_button):
        b.disabled = True
    ed.status.value = "working…"
    try:
        action()
        ed._rendered_at = time.monotonic()
    except (ValueError, KeyError, RuntimeError, OSError) as e:
        ed.error_label.value = _error_html(str(e))
        ed.status.value = "failed"
    except Exception as e:  # noqa: BLE001 - a fault of the editor: in the panel, never a status stuck at "working…"
        ed.error_label.value = _error_html(f"unexpected {type(e).__name__} (a fault of the editor, please report "
                                           f"it): {e}")
        ed.status.value = "failed"
        traceback.print_exc()  # the kernel's log (voila's terminal) keeps the traceback
    finally:
        for b in (ed.render_button, ed.strip_button, ed.save_button):
            b.disabled = False


def _refresh_gallery(ed: "Editor") -> None:
    """The gallery and partner thumbnails, the chosen ones highlighted; drawn again only when images were added."""
    W, st = ed._W, ed.state
    if len(ed.gallery_box.children) != len(st.images):
        ed.gallery_box.children = _thumbs(W, st.images, st.image_names, "hdae-thumb", ed.select)
    if len(ed.partner_box.children) != len(st.partner_images) + 1:
        none = _styled(W.Button(description="none", layout=W.Layout(width="60px")), "hdae-partner-none")
        none.on_click(lambda _b: ed.set_partner(None, ed.mix_levels()))
        ed.partner_box.children = [none, *_thumbs(
            W, st.partner_images, st.partner_names, "hdae-partner",
            lambda j: ed.set_partner(j, ed.mix_levels()))]
    for i, box in enumerate(ed.gallery_box.children):
        box.children[1].button_style = "info" if i == ed.index else ""
    ed.partner_box.children[0].button_style = "info" if ed._partner is None else ""
    for j, box in enumerate(ed.partner_box.children[1:]):
        box.children[1].button_style = "info" if j == ed._partner else ""


def _on_upload(ed: "Editor", change) -> None:
    files = change["new"]
    if not files:
        return
    f = files[0] if isinstance(files, (tuple, list)) else next(iter(files.values()))  # ipywidgets 8 / 7
    name = str(f.get("name", "upload"))
    try:
        ed.load_image_bytes(bytes(f["content"]), name)
    except ValueError as e:  # BadImageError included
        ed.error_label.value = _error_html(f"could not use the upload: {e}")
    finally:
        try:
            ed.upload.value = ()  # so the same file can be chosen again
        except Exception:  # noqa: BLE001 - ipywidgets 7 keeps the value read-only
            pass


def _styled(widget, css: str):
    widget.add_class(css)
    return widget


def _thumbs(W, images: torch.Tensor, names: Sequence[str], css: str, pick) -> list:
    """One small image with a numbered button under it per gallery image (``_refresh_gallery`` marks the chosen)."""
    out = []
    for i, (x, name) in enumerate(zip(images, names)):
        img = W.Image(value=png_bytes(x[None], scale=max(1, 48 // x.shape[-1])), format="png",
                      layout=W.Layout(width="48px", height="48px"))
        b = _styled(W.Button(description=str(i), tooltip=name, layout=W.Layout(width="48px")), f"{css}-{i}")
        b.on_click(lambda _b, j=i: pick(j))
        out.append(W.VBox([img, b], layout=W.Layout(width="52px")))
    return out


def _error_html(message: str) -> str:
    return f"<span style='color:#b00020'>⚠ {html.escape(message)}</span>"


def _status(st: EditorState, alphas: Mapping[str, float], pasted: bool) -> str:
    """The status line under a render: its number, time, steps, the edit, a first inversion, a paste-back."""
    what = ", ".join(f"{n} {a:+.2f}" for n, a in alphas.items()) or "no attribute edit"
    inv = (f"; first render of this image, inversion {st.last_inversion_seconds:.1f} s"
           if st.last_inversion_seconds is not None else "")
    pb = "; pasted back into the upload" if pasted else ""
    xt = f"; random x_T, seed {st.seed}" if st.x_T_mode == "random" else ""
    return f"render {st.renders}: rendered in {st.last_seconds:.1f} s ({st.steps} DDIM steps; {what}{xt}{inv}{pb})"


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


def _level_boxes(W, L: int, resolutions, value: bool, css: str) -> list:
    return [_styled(W.Checkbox(value=value, description=_level_label(i, resolutions), indent=False,
                               layout=W.Layout(width="auto")), f"{css}-{i}") for i in range(L)]


def _panel(W, ed: "Editor"):
    """The editor's controls and images laid out top to bottom."""
    edit_levels = [W.HTML("<b>edit levels (z¹ finest)</b>"), W.HBox(ed.level_boxes)] if ed.state.L > 1 else []
    ed._panel_boxes = {c: W.VBox([W.HTML(f"<b>{c}</b>"), img]) for c, img in ed.panels.items()}
    ed._panel_boxes["DAE edited"].layout.display = "none"
    return W.VBox([
        W.HTML("<b>image</b> (click a thumbnail, or upload your own)"), ed.gallery_box,
        W.HBox([ed.upload, ed.paste_box]),
        W.HTML("<b>attributes</b> (α per direction; all nonzero sliders are summed)"
               if ed.sliders else "<b>attributes</b>: none (no directions); style mixing only"),
        ed.directions_label,
        W.VBox(list(ed.sliders.values())),
        W.HBox([ed.k_text, ed.random_box, ed.compare_box]),
        *edit_levels,
        W.HTML("<b>style mixing</b>: take the ticked levels from the partner"),
        ed.partner_box, W.HBox(ed.mix_boxes),
        W.HBox([ed.render_button, ed.strip_button, ed.save_button, ed.reset_button]),
        ed.error_label,
        W.HBox(list(ed._panel_boxes.values())),
        ed.strip_widget,
        ed.paste_widget,
        ed.status,
        ed.saved_label,
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


