"""The ipywidgets editor driven in-process: sliders, levels, k, style mixing, uploads, from_checkpoint."""
import datetime
import io

import numpy as np
import pytest
import torch
from PIL import Image

from hdae_core import HDAE, ModelConfig
from hdae_core import checkpoint as ck
from hdae_core.data import Shapes
from hdae_core.editing import LatentStats, manipulate
from hdae_core.data.images import load_upload_full
from hdae_core.widgets import Editor, EditorState, png_bytes
from conftest import codes_matter

STEPS = 10  # a valid DDIM count (stride 100); a render of the tiny model takes ~0.1 s


def _tiny(variant="hdae_u"):
    torch.manual_seed(0)
    return codes_matter(HDAE(ModelConfig.preset("tiny", variant))).eval()


@pytest.fixture(scope="module")
def setup():
    m = _tiny()
    shapes = Shapes(size=16, seed=3)
    x = shapes.batch(range(16))["image"]
    with torch.no_grad():
        stats = LatentStats.from_codes(m.encode(x))
    g = torch.Generator().manual_seed(1)
    dirs = {n: torch.randn(m.num_levels, m.code_dim, generator=g) for n in ("red", "large")}
    return m, stats, dirs, x[:4]


@pytest.fixture
def editor(setup):
    m, stats, dirs, x = setup
    return Editor(EditorState(m, stats, dirs, images=x, steps=STEPS))


def _png(arr: np.ndarray, fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def _upload(name: str, content: bytes, type_="image/png"):
    """A FileUpload value as the browser sends it (ipywidgets 8: a tuple of dicts)."""
    return ({"name": name, "type": type_, "size": len(content), "content": memoryview(content),
             "last_modified": datetime.datetime.now(datetime.timezone.utc)},)


def test_slider_changes_rendered_image(editor):
    editor.render_button.click()
    panels = {c: w.value for c, w in editor.panels.items()}
    before = editor.image_widget.value
    assert "rendered in" in editor.status.value and editor.error_label.value == ""
    assert panels["reconstruction"] == before  # α = 0: the edited panel is the reconstruction
    editor.set_attribute("red", 1.0)
    editor.render_button.click()
    after = editor.image_widget.value
    assert after != before
    # the original and the reconstruction stay, the edited panel moves
    assert editor.panels["original"].value == panels["original"]
    assert editor.panels["reconstruction"].value == panels["reconstruction"]
    assert "red +1.00" in editor.status.value
    assert editor.state.last_seconds is not None and editor.state.renders == 2


def test_zero_alpha_is_the_inverted_reconstruction_and_inversion_is_cached(setup, monkeypatch):
    m, stats, dirs, x = setup
    calls = []
    orig = m.encode_stochastic

    def counting(*a, **kw):
        calls.append(1)
        return orig(*a, **kw)

    monkeypatch.setattr(m, "encode_stochastic", counting)
    ed = Editor(EditorState(m, stats, dirs, images=x, steps=STEPS))
    out = ed.render()
    with torch.no_grad():
        codes = m.encode(x[:1])
        want = m.decode(orig(x[:1], codes, STEPS), codes, STEPS)[0].clamp(-1, 1)
    assert out.shape == (3, 16, 16)
    assert torch.equal(out, want)
    ed.set_attribute("large", -0.5)
    ed.render()
    ed.render()
    assert len(calls) == 1  # inverted once for image 0
    ed.select(1)
    ed.render()
    assert len(calls) == 2


def test_nonzero_sliders_are_summed(editor):
    codes, _ = editor.state.inversion()
    editor.set_attribute("red", 0.7)
    editor.set_attribute("large", -0.4)
    want = codes + (manipulate(codes, editor.state.directions["red"], 0.7, editor.state.stats) - codes) \
        + (manipulate(codes, editor.state.directions["large"], -0.4, editor.state.stats) - codes)
    assert torch.allclose(editor.edited_codes(codes), want, atol=1e-6)
    editor.reset()
    assert torch.equal(editor.edited_codes(codes), codes)


def test_level_checkboxes_restrict_the_edit(editor):
    codes, _ = editor.state.inversion()
    editor.set_attribute("red", 1.0)
    all_levels = editor.render()
    editor.level_boxes[1].value = False  # edit z¹ only
    assert editor.edit_levels() == [0]
    edited = editor.edited_codes(codes)
    assert not torch.equal(edited[:, 0], codes[:, 0])
    assert torch.equal(edited[:, 1], codes[:, 1])
    only_low = editor.render()
    assert not torch.equal(only_low, all_levels)
    # no level ticked: an error, and the previous image stays
    editor.level_boxes[0].value = False
    shown = editor.image_widget.value
    editor.render_button.click()
    assert "level" in editor.error_label.value and editor.image_widget.value == shown


def test_truncation_k_and_bad_k(editor):
    codes, _ = editor.state.inversion()
    editor.set_attribute("large", 1.0)
    editor.set_k(5)
    assert int((editor.edited_codes(codes) != codes).sum()) == 5
    editor.render_button.click()
    shown = editor.image_widget.value
    editor.k_text.value = "lots"
    editor.render_button.click()
    assert "k:" in editor.error_label.value and editor.image_widget.value == shown
    editor.k_text.value = "all"
    editor.render_button.click()
    assert editor.error_label.value == "" and editor.image_widget.value != shown


def test_style_mix_partner_changes_the_output(editor):
    base = editor.render()
    codes, _ = editor.state.inversion()
    editor.set_partner(2, levels=[1])
    mixed_codes = editor.edited_codes(codes)
    assert torch.equal(mixed_codes[:, 0], codes[:, 0])
    assert torch.equal(mixed_codes[:, 1], editor.state.inversion(2)[0][:, 1])
    before = editor.image_widget.value
    mixed = editor.render()
    assert not torch.equal(mixed, base) and editor.image_widget.value != before
    # a partner with no level ticked changes nothing
    editor.set_partner(2, levels=[])
    assert torch.equal(editor.render(), base)


def test_bad_upload_sets_error_and_keeps_image(editor):
    editor.render_button.click()
    shown, n, idx = editor.image_widget.value, len(editor.state.images), editor.index
    editor.upload.value = _upload("bad.png", b"not a png!!")
    assert "bad.png" in editor.error_label.value
    assert editor.image_widget.value == shown and len(editor.state.images) == n and editor.index == idx
    assert editor.upload.value == ()  # cleared, so the same file can be chosen again


def test_upload_is_cropped_resized_and_selected(editor):
    rgba = np.zeros((30, 50, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 255  # a red RGBA picture, wider than tall
    n = len(editor.state.images)
    editor.upload.value = _upload("red.png", _png(rgba))
    assert editor.error_label.value == ""
    assert len(editor.state.images) == n + 1 and editor.index == n
    assert editor.state.images[n].shape == (3, 16, 16)
    assert torch.allclose(editor.state.images[n][0], torch.ones(16, 16))  # red channel at +1
    assert editor.state.image_names[-1] == "upload: red.png"
    assert len(editor.gallery_box.children) == n + 1  # a thumbnail for it too
    assert editor.render().shape == (3, 16, 16)
    # a JPEG works too; an empty file is refused with a clear message
    jpg = load_upload_full(_png(np.full((20, 20, 3), 128, np.uint8), "JPEG"), "grey.jpg", 16)[2]
    assert jpg.shape == (3, 16, 16) and jpg.abs().max() < 0.05
    editor.upload.value = _upload("empty.jpg", b"", "image/jpeg")
    assert "empty" in editor.error_label.value and len(editor.state.images) == n + 1


def test_dae_variant_has_one_level(setup):
    _, _, _, x = setup
    m = _tiny("dae")
    with torch.no_grad():
        stats = LatentStats.from_codes(m.encode(Shapes(size=16, seed=3).batch(range(8))["image"]))
    ed = Editor(EditorState(m, stats, {"red": torch.randn(1, m.code_dim)}, images=x, steps=STEPS))
    assert len(ed.level_boxes) == 1 and ed.edit_levels() is None
    base = ed.render()
    ed.set_attribute("red", 1.0)
    assert not torch.equal(ed.render(), base)
    assert "application/vnd.jupyter.widget-view+json" in ed._repr_mimebundle_()


def test_mismatched_directions_are_refused(setup):
    m, stats, _, x = setup
    with pytest.raises(ValueError, match="does not match"):
        Editor(EditorState(m, stats, {"red": torch.randn(3, 7)}, images=x))
    with pytest.raises(KeyError, match="no direction"):
        Editor(EditorState(m, stats, {"red": torch.randn(2, 32)}, images=x, attribute_names=["blue"]))
    with pytest.raises(ValueError, match="expected"):
        Editor(EditorState(m, stats, {"red": torch.randn(2, 32)}, images=torch.zeros(2, 3, 8, 8)))


def test_from_checkpoint_trains_or_loads_directions(tmp_path):
    m = _tiny()
    ck.save(m, tmp_path / "checkpoint")  # a training run's folder layout: run/checkpoint/
    ed = Editor.from_checkpoint(tmp_path, n_images=3, n_stats=48, steps=STEPS, attribute_names=["red", "large"])
    assert ed.state.attribute_names == ["red", "large"] and len(ed.state.images) == 3
    assert set(ed.state.directions) == {"red", "large"}
    assert ed.state.image_names[0].startswith("shape 0:")
    assert ed.gallery_box.children[0].children[1].tooltip.startswith("shape 0:")
    ed.set_attribute("red", 1.0)
    assert ed.render().shape == (3, 16, 16)
    with pytest.raises(KeyError, match="not shapes attributes"):
        Editor.from_checkpoint(tmp_path, n_images=2, n_stats=8, attribute_names=["smiling"])
    # directions + statistics in the folder (as `hdae import-diffae` writes them) are used as they are
    from hdae_core.directions import AttributeDirections
    stats = LatentStats(torch.zeros(2, 32), torch.full((2, 32), 2.0))
    AttributeDirections({"smile": torch.randn(2, 32)}, ["smile"], stats, torch.zeros(1)).save(tmp_path / "checkpoint")
    stats.save(tmp_path / "checkpoint")
    ed2 = Editor.from_checkpoint(tmp_path / "checkpoint", n_images=2, steps=STEPS)
    assert ed2.state.attribute_names == ["smile"] and torch.equal(ed2.state.stats.std, stats.std)



def test_png_bytes_upscales_with_nearest():
    x = torch.stack([torch.full((3, 4, 4), -1.0), torch.full((3, 4, 4), 1.0)])
    im = Image.open(io.BytesIO(png_bytes(x, scale=3)))
    assert im.size == ((2 * 4 + 3) * 3, (4 + 2) * 3)


# ---------------------------------------------------------------- the state without widgets, paste back, user data


def test_state_edits_without_widgets(setup):
    from hdae_core.widgets import EditorState

    m, stats, dirs, x = setup
    st = EditorState(m, stats, dirs, images=x, steps=STEPS)
    base = st.render()
    codes, _ = st.inversion()
    st.set_attribute("red", 0.8)
    st.set_k(7)
    assert int((st.edited_codes(codes) != codes).sum()) == 7
    assert not torch.equal(st.render(), base)
    st.edit_levels = []
    with pytest.raises(ValueError, match="edit levels"):
        st.render()
    with pytest.raises(ValueError, match="k:"):
        st.set_k("many")
    with pytest.raises(KeyError):
        st.set_attribute("blue", 1.0)
    st.reset()
    st.edit_levels = None
    st.set_partner(1, [0])
    assert torch.equal(st.edited_codes(codes)[:, 0], st.inversion(1)[0][:, 0])


def test_paste_back_blends_the_edit_into_the_upload(editor):
    photo = np.zeros((40, 80, 3), np.uint8)
    photo[:, :20] = (0, 0, 255)  # blue margin left of the centred 40x40 crop
    idx = editor.load_image_bytes(_png(photo), "wide.png")
    assert editor.state.uploads[idx][1] == (20, 0, 60, 40)
    editor.paste_box.value = True
    edited = editor.render()
    out = np.asarray(Image.open(io.BytesIO(editor.paste_widget.value)).convert("RGB"))
    assert out.shape == (40, 80, 3) and "pasted back" in editor.status.value
    assert np.array_equal(out[:, :20], photo[:, :20]) and np.array_equal(out[:, 60:], photo[:, 60:])  # outside: kept
    want = ((edited + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    centre = np.asarray(Image.fromarray(want).resize((40, 40), Image.BICUBIC))[20, 20]
    assert np.abs(out[20, 40].astype(int) - centre.astype(int)).max() <= 2  # inside: the edit
    editor.select(0)
    editor.render()
    assert editor.paste_widget.layout.display == "none"  # a gallery image has no photo to paste into


def test_from_checkpoint_on_a_folder_with_attributes(tmp_path):
    from userdata_helpers import csv_file, shapes_folder

    m = _tiny()
    ck.save(m, tmp_path / "ck")
    info = shapes_folder(tmp_path / "img", n=30, size=16)
    attrs = csv_file(tmp_path / "a.csv", info["files"], info["attributes"], info["names"],
                     continuous={"pos_x": info["pos_x"]})
    ed = Editor.from_checkpoint(tmp_path / "ck", n_images=3, n_stats=18, steps=STEPS, data=tmp_path / "img",
                                attribute_file=attrs)
    assert ed.state.attribute_names == info["names"] + ["pos_x"] and len(ed.state.images) == 3
    assert all(n.endswith(".png") for n in ed.state.image_names)
    ed.set_attribute("pos_x", 1.0)
    assert ed.render().shape == (3, 16, 16)
    plain = Editor.from_checkpoint(tmp_path / "ck", n_images=2, n_stats=10, steps=STEPS, data=tmp_path / "img")
    assert plain.state.attribute_names == [] and plain.render().shape == (3, 16, 16)  # style mixing only


def test_editor_settings_explicit_wins_and_a_bad_variable_is_one_line():
    from hdae_core.widgets import EditorSettingError, editor_settings

    env = {"HDAE_EDITOR_STEPS": "ten", "HDAE_EDITOR_SEED": "3"}
    got = editor_settings({"steps": 4}, env)  # the parameter wins: the bad variable is never read
    assert got["steps"] == 4 and got["seed"] == 3 and got["n_images"] == 8
    with pytest.raises(EditorSettingError, match=r"^\$HDAE_EDITOR_STEPS='ten': expected an integer") as e:
        editor_settings({}, env)
    assert "\n" not in str(e.value)
    with pytest.raises(EditorSettingError, match="HDAE_EDITOR_N_IMAGES='0': expected a positive integer"):
        editor_settings({}, {"HDAE_EDITOR_N_IMAGES": "0"})
    with pytest.raises(EditorSettingError, match="expected a finite number"):
        editor_settings({}, {"HDAE_EDITOR_EXAMPLE_ALPHA": "nan"})
    # values that parse but would fail later: refused up front, the variable named
    for var, value, words in (("HDAE_EDITOR_SEED", str(10 ** 30), "expected a seed from 0"),
                              ("HDAE_EDITOR_SEED", "-1", "expected a seed from 0"),
                              ("HDAE_EDITOR_THREADS", "1000", "this machine has"),
                              ("HDAE_EDITOR_PROFILE", "fast", "expected one of full, smoke")):
        with pytest.raises(EditorSettingError, match=f"^\\${var}='{value}': {words}"):
            editor_settings({}, {var: value})
    from hdae_core import pipeline
    from hdae_core.editor_state import PROFILE_NAMES

    assert set(PROFILE_NAMES) == set(pipeline.PROFILES)


def test_an_empty_gallery_and_a_huge_alpha_are_clear_errors(setup):
    m, stats, dirs, x = setup
    with pytest.raises(ValueError, match="empty gallery"):
        EditorState(m, stats, dirs, images=x[:0], steps=STEPS)
    st = EditorState(m, stats, dirs, images=x, steps=STEPS)
    name = st.attribute_names[0]
    with pytest.raises(ValueError, match="finite"):
        st.set_attribute(name, float("inf"))
    st.set_attribute(name, 1e38)
    with pytest.raises(ValueError, match="not finite"):
        st.render()
    st.set_attribute(name, 0.5)
    assert bool(torch.isfinite(st.render()).all())


def test_a_slider_value_arriving_after_render_renders_again(editor):
    editor.render_button.click()
    assert editor.state.renders == 1
    # the browser's late update of the slider, as ipywidgets delivers it from the front end
    editor.sliders["red"].set_state({"value": 0.5})
    assert editor.state.renders == 2 and "red +0.50" in editor.status.value
    editor.set_attribute("red", 0.25)  # a change from code waits for the next Render
    assert editor.state.renders == 2


def test_save_writes_a_panel_and_a_recipe_that_replays_bit_for_bit(setup, tmp_path):
    from hdae_core.editor_state import apply_recipe, load_recipe

    m, stats, dirs, x = setup
    ed = Editor(EditorState(m, stats, dirs, images=x, steps=STEPS), save_dir=tmp_path / "saved")
    ed.select(2)
    ed.set_attribute("red", 0.8)
    ed.set_k(10)
    ed.set_partner(1, [0])
    ed.save_button.click()
    assert ed.error_label.value == "" and "saved" in ed.saved_label.value
    png, js = tmp_path / "saved" / "edit-001.png", tmp_path / "saved" / "edit-001.json"
    assert Image.open(png).size[0] >= 3 * 16  # original | reconstruction | edited
    r = load_recipe(js)
    assert r["alphas"]["red"] == 0.8 and r["k"] == 10 and r["partner"]["levels"] == [0] and r["image"]["index"] == 2
    assert r["x_T"]["mode"] == "own" and r["model"]["variant"] == m.config.variant
    saved = ed.state.last_image.clone()
    ed.save()  # a second save never replaces the first
    assert (tmp_path / "saved" / "edit-002.png").is_file() and (tmp_path / "saved" / "edit-001.png").is_file()
    fresh = EditorState(m, stats, dirs, images=x, steps=STEPS)
    assert torch.equal(apply_recipe(fresh, r).render(), saved)
    with pytest.raises(ValueError, match="recipe for model"):
        apply_recipe(_dae_state(_tiny("dae"), x), r)


def _dae_state(model, x):
    with torch.no_grad():
        stats = LatentStats.from_codes(model.encode(x))
    return EditorState(model, stats, {"red": torch.randn(model.num_levels, model.code_dim)}, images=x, steps=STEPS)


def test_an_uploaded_image_replays_from_the_saved_folder(editor, tmp_path):
    from hdae_core.editor_state import apply_recipe, load_recipe, save_edit

    rgb = np.zeros((20, 20, 3), np.uint8)
    rgb[:, :10] = (200, 30, 30)
    editor.load_image_bytes(_png(rgb), "half.png")
    editor.set_attribute("large", -0.6)
    editor.sync()
    _, js = save_edit(editor.state, tmp_path)
    saved = editor.state.last_image.clone()
    st = editor.state
    fresh = EditorState(st.model, st.stats, dict(st.directions), images=st.images[:2], steps=STEPS)
    assert torch.equal(apply_recipe(fresh, load_recipe(js)).render(), saved)


def test_random_x_T_strip_compare_and_reset_all(setup):
    m, stats, dirs, x = setup
    dae = _dae_state(_tiny("dae"), x)
    ed = Editor(EditorState(m, stats, dirs, images=x, steps=STEPS), compare=dae)
    ed.set_attribute("red", 0.7)
    own = ed.render()
    assert "random x_T" not in ed.status.value
    ed.random_box.value = True
    rand = ed.render()
    assert not torch.equal(own, rand) and ed.state.x_T_mode == "random"
    assert "random x_T, seed 0" in ed.status.value  # the status says what the panel was decoded from
    assert torch.equal(rand, ed.render())  # the same seed: the same random x_T
    strip = ed.strip()
    assert strip.shape == (5, 3, 16, 16) and ed.strip_widget.layout.display is None
    assert (strip[4] - rand).abs().max() < 1e-3  # +α is the edit itself (decoded in a batch of 5)
    ed.select(1)
    assert ed.strip_widget.layout.display == "none"  # another image: its strip is not shown until asked for
    ed.select(0)
    ed.compare_box.value = True
    ed.render()
    assert ed._panel_boxes["DAE edited"].layout.display is None and dae.alphas["red"] == 0.7
    assert dae.index == ed.index and dae.x_T_mode == "random"
    ed.set_k(5)
    ed.set_partner(1, [0])
    ed.reset_button.click()
    assert all(s.value == 0 for s in ed.sliders.values()) and ed.k_text.value == "all"
    assert not ed.random_box.value and ed._partner is None and not any(b.value for b in ed.mix_boxes)
    assert ed.state.k is None and ed.state.partner is None
    with pytest.raises(ValueError, match="every slider is at 0"):
        ed.strip()


def test_guided_start_finds_a_star_and_shows_three_steps(setup):
    m, stats, dirs, x = setup
    st = EditorState(m, stats, dirs, images=Shapes(size=16, seed=10_000).batch(range(2))["image"], steps=STEPS,
                     image_names=["shape 0: red", "shape 1: red"])
    from hdae_core.editor_state import guided_start

    dae = _dae_state(_tiny("dae"), x)
    shown = guided_start(st, dae)
    caps = list(shown)
    assert caps[0] == "original" and caps[1] == "reconstruction"
    assert any("every feature" in c for c in caps) and any("top 10%" in c for c in caps)
    assert any(c.startswith("DAE:") for c in caps) and any(c.startswith(f"z{min(3, m.num_levels)} from image") for c in caps)
    assert len(st.images) > 2 and "is_star" in st.image_names[-1 if len(st.images) == 3 else 2]
    assert all(v.shape == (3, 16, 16) for v in shown.values())
    assert st.k is None and not any(st.alphas.values()) and st.partner is None  # left reset


def test_editor_settings_read_quick_as_a_bool_and_refuse_other_spellings():
    from hdae_core.widgets import EditorSettingError, editor_settings

    assert editor_settings({})["quick"] is False
    for raw, want in (("1", True), ("true", True), (" TRUE ", True), ("0", False), ("False", False)):
        assert editor_settings({}, {"HDAE_EDITOR_QUICK": raw})["quick"] is want
    assert editor_settings({"quick": True}, {"HDAE_EDITOR_QUICK": "maybe"})["quick"] is True  # given wins, unread
    with pytest.raises(EditorSettingError, match=r"^\$HDAE_EDITOR_QUICK='yes': expected 1, 0, true or false") as e:
        editor_settings({}, {"HDAE_EDITOR_QUICK": "yes"})
    assert "\n" not in str(e.value)
    with pytest.raises(EditorSettingError, match="quick='on': expected 1, 0, true or false"):
        editor_settings({"quick": "on"}, {})


def test_picking_a_thumbnail_keeps_the_thumbnails_and_marks_the_chosen(editor):
    boxes = editor.gallery_box.children
    editor.select(2)
    assert editor.gallery_box.children == boxes  # not drawn again for a pick
    assert [b.children[1].button_style for b in boxes] == ["", "", "info", ""]
    editor.set_partner(1, [0])
    assert [b.children[1].button_style for b in editor.partner_box.children[1:]] == ["", "info", "", ""]
    assert editor.partner_box.children[0].button_style == ""


def test_compare_with_dae_follows_an_upload(setup):
    # an uploaded photo joins the DAE's gallery too: compare with DAE renders its edit of the same photo
    m, stats, dirs, x = setup
    ed = Editor(EditorState(m, stats, dirs, images=x[:3], steps=STEPS), compare=_dae_state(_tiny("dae"), x[:3]))
    ed.set_attribute("red", 0.5)
    ed.compare_box.value = True
    yy, xx = np.mgrid[0:40, 0:48]
    idx = ed.load_image_bytes(_png(np.stack([xx * 5, yy * 6, (xx + yy) * 3], -1).clip(0, 255).astype(np.uint8)),
                              "photo.png")
    ed.paste_box.value = True
    ed._safely(ed.render)
    assert ed.error_label.value == "" and "pasted back" in ed.status.value, ed.error_label.value
    assert ed.compare.index == idx and torch.equal(ed.compare.images[idx], ed.state.images[idx])
    assert ed._panel_boxes["DAE edited"].layout.display is None


def test_an_unexpected_error_shows_in_the_panel(setup, monkeypatch):
    # a fault of the editor itself never leaves the status at "working…": it is named in the error panel
    m, stats, dirs, x = setup
    ed = Editor(EditorState(m, stats, dirs, images=x, steps=STEPS))

    def broken():
        raise IndexError("image index 9 out of range 0..3")

    ed._safely(broken)
    assert ed.status.value == "failed" and "unexpected IndexError" in ed.error_label.value
    assert "out of range" in ed.error_label.value and not ed.render_button.disabled
