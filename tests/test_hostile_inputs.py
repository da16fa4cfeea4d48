"""Data a careless user might hand over: each is refused when it is opened, with one line naming it, or used right."""
import os
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hdae_core.data import ImageFolder, open_data, read_attributes
from hdae_core.data.celeba import AttributeImages, match_rows, read_celeba_attributes
from hdae_core.data.images import MAX_PIXELS, BadImageError, decode_image, find_images


def _rgb(path: Path, color=(200, 30, 30), size=(12, 12)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _huge_png(path: Path, w: int, h: int, valid: bool = True) -> Path:
    """A black 1-bit PNG of w x h, built row by row (a few KB on disk, never held in memory)."""
    idat = b"\x00"  # header-only: an image decoded anyway fails on this, not on the size
    if valid:
        z, row, parts = zlib.compressobj(9), bytes(1 + (w + 7) // 8), []
        for _ in range(h):
            parts.append(z.compress(row))
        idat = b"".join(parts) + z.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))
    return path


# ---------------------------------------------------------------- folders


def test_a_folder_without_one_readable_image_is_refused_when_opened(tmp_path):
    root = tmp_path / "junk"
    root.mkdir()
    (root / "a.png").write_bytes(b"not a png at all")
    (root / "b.jpg").write_text("hello")
    good = _rgb(tmp_path / "t.png", size=(40, 40)).read_bytes()
    (root / "c.png").write_bytes(good[: len(good) // 2])  # a sound header, truncated pixels
    for on_error in ("skip", "raise"):
        with pytest.raises(ValueError) as e:
            ImageFolder(root, 16, on_error=on_error)
        assert "\n" not in str(e.value) and ("junk" in str(e.value))
    with pytest.raises(ValueError, match=r"junk: none of its 3 image files can be used, e\.g\. .*a\.png"):
        open_data(root, None, size=16)


def test_a_folder_counts_only_the_images_it_can_read(tmp_path):
    root = tmp_path / "mixed"
    for i in range(6):
        _rgb(root / f"{i:02d}.png", (40 * i, 0, 0))
    (root / "00_bad.png").write_bytes(b"junk")
    (root / "zz.webp").write_bytes(b"RIFF....WEBP")
    src = open_data(root, None, size=12)
    d = src.describe()
    assert d["images"] == 6 and d["unreadable"] == 2 and sum(d["splits"].values()) == 6
    assert any("2 image file(s) can't be used" in n and "00_bad.png" in n for n in d["notes"])


def test_studies_read_grayscale_rgba_and_palette_images_as_rgb(tmp_path):
    # training refuses them unless asked (--convert-images); a study only reads them, so they are converted
    from PIL import Image

    root = tmp_path / "modes"
    for i in range(4):
        _rgb(root / f"{i:02d}.png", (40 * i, 0, 0))
    Image.new("L", (20, 20), 128).save(root / "gray.png")
    Image.new("RGBA", (20, 20), (0, 200, 0, 128)).save(root / "alpha.png")
    Image.new("P", (20, 20)).save(root / "palette.png")
    src = open_data(root, None, size=12)
    assert src.describe()["images"] == 7 and src.describe()["unreadable"] == 0
    x = src.batch(src.available("train"), "train")["image"]
    assert x.shape[1:] == (3, 12, 12) and x.min() >= -1 and x.max() <= 1


# ---------------------------------------------------------------- attribute files


@pytest.fixture()
def annotated(tmp_path):
    root = tmp_path / "img"
    for i in range(8):
        _rgb(root / f"{i:05d}.png", (30 * i, 0, 0))
    return root


@pytest.mark.parametrize("cell", ["inf", "-inf", "Infinity", "NaN", "nan", "NA", "1e999", "abc", "1,5"])
def test_a_non_finite_or_non_numeric_cell_is_refused_naming_file_row_and_column(tmp_path, cell):
    path = tmp_path / "attrs.csv"
    rows = [f"{i:05d}.png,{i % 2},{i * 0.5}" for i in range(8)]
    rows[3] = f'00003.png,1,"{cell}"'
    path.write_text("filename,Smiling,age\n" + "\n".join(rows) + "\n")
    with pytest.raises(ValueError) as e:
        read_attributes(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}, line 5 ('00003.png'), column 'age': ") and "\n" not in msg, msg
    assert repr(cell) in msg and "not a finite number" in msg


def test_an_empty_cell_and_a_short_row_name_their_line(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("filename,Smiling,age\n00000.png,1,3\n\n00001.png,,4\n")
    with pytest.raises(ValueError, match=r"a\.csv, line 4 \('00001\.png'\), column 'Smiling': no value"):
        read_attributes(path)
    path.write_text("filename,Smiling,age\n00000.png,1,3\n00001.png,1\n")
    with pytest.raises(ValueError, match=r"a\.csv, line 3: 2 fields, but the header names 3 columns"):
        read_attributes(path)


def test_a_celeba_file_with_another_value_names_row_and_column(tmp_path):
    path = tmp_path / "list_attr_celeba.txt"
    path.write_text("2\nSmiling Male\n000001.jpg 1 -1\n000002.jpg inf 1\n")
    with pytest.raises(ValueError, match=r"line 4 \('000002\.jpg'\), column 'Smiling': value 'inf'"):
        read_celeba_attributes(path)


@pytest.mark.parametrize("header, column", [
    ("filename,smiling,smiling", "'smiling' appears twice"),
    ("filename,Smiling,age,smiling", "'Smiling' and 'smiling' differ only in case"),
    ("filename,filename,smiling", "'filename' appears twice"),
])
def test_a_repeated_column_name_is_refused(tmp_path, header, column):
    path = tmp_path / "dup.csv"
    n = header.count(",")
    path.write_text(header + "\n" + "\n".join(f"{i:05d}.png" + ",1" * n for i in range(3)) + "\n")
    with pytest.raises(ValueError, match=rf"dup\.csv, line 1: the column names? {column}"):
        read_attributes(path)
    celeba = tmp_path / "anno.txt"
    celeba.write_text("1\nSmiling Male Smiling\n0.jpg 1 1 1\n")
    with pytest.raises(ValueError, match=r"anno\.txt, line 2: the attribute name 'Smiling' appears twice"):
        read_celeba_attributes(celeba)


def test_a_csv_with_another_separator_says_so(tmp_path):
    path = tmp_path / "semi.csv"
    path.write_text("filename;Smiling\n00000.png;1\n")
    with pytest.raises(ValueError, match=r"semi\.csv: expected a file-name column .* \(separated by ';'\? use commas\)"):
        read_attributes(path)


def test_a_trailing_comma_is_not_a_column(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("filename,Smiling,\n00000.png,1,\n00001.png,0,\n")
    df, kinds = read_attributes(path)
    assert list(df.columns) == ["Smiling"] and kinds == {"Smiling": "binary"}
    path.write_text("filename,Smiling,\n00000.png,1,5\n")
    with pytest.raises(ValueError, match=r"t\.csv, line 1: column 3 holds values but has no name"):
        read_attributes(path)


# ---------------------------------------------------------------- rows to images


def test_rows_match_by_relative_path_and_bare_names_only_when_unique():
    files = ["a/1.png", "b/0001.png", "c/7.png", "d/7.png", "e/42.png", "f/x.png", "f/x.jpg"]
    rows = ["a/1.png", "7.png", "42.jpg", "x.png"]
    matched, ambiguous = match_rows(rows, files)
    assert matched == {0: 0, 4: 2, 5: 3}  # a/1.png by path, 42 by stem, x.png by file name
    assert 1 not in matched  # a/1.png names a folder: it labels no other '1'
    assert 2 in ambiguous and 3 in ambiguous and "7.png" in ambiguous[2]
    # padded numbers: one image per number, or no match at all
    assert match_rows(["12.jpg"], ["00012.png"])[0] == {0: 0}
    matched, ambiguous = match_rows(["01.jpg"], ["1.png", "0001.png"])
    assert matched == {} and set(ambiguous) == {0, 1}
    assert match_rows(["1.jpg", "0001.jpg"], ["1.png", "0001.png"])[0] == {0: 0, 1: 1}
    assert match_rows(["./a\\1.png"], ["a/1.png"])[0] == {0: 0}


def test_a_row_with_a_folder_labels_that_image_only(tmp_path):
    root = tmp_path / "img"
    _rgb(root / "a" / "1.png", (250, 0, 0))
    _rgb(root / "b" / "0001.png", (0, 0, 250))
    for i in range(2, 6):
        _rgb(root / "a" / f"{i}.png", (0, 250, 0))
    csv = tmp_path / "a.csv"
    csv.write_text("filename,Smiling\n" + "\n".join(f"a/{i}.png,{i % 2}" for i in range(1, 6)) + "\n")
    ds = AttributeImages(root, read_attributes(csv)[0], size=8, on_error="skip")
    assert [ds.images.files[i] for i in ds.indices] == [f"a/{i}.png" for i in range(1, 6)]
    assert list(ds.skipped) == [str(root / "b" / "0001.png")]
    d = open_data(root, csv, size=8).describe()
    assert d["without_annotation"] == 1 and any("b/0001.png" in n for n in d["notes"])


def test_constant_columns_are_said_in_the_data_notes(annotated, tmp_path):
    csv = tmp_path / "c.csv"
    csv.write_text("filename,Smiling,Always,Score\n"
                   + "\n".join(f"{i:05d}.png,{i % 2},1,2.5" for i in range(8)) + "\n")
    src = open_data(annotated, csv, size=12)
    d = src.describe()
    assert d["constant_attributes"] == ["Always", "Score"] == src.constant_attributes
    assert any(n.startswith("attribute 'Always' is 1 for every one of the 8 annotated images")
               and "no edit direction" in n for n in d["notes"])
    assert any(n.startswith("attribute 'Score' is 2.5 for every one") for n in d["notes"])
    assert src.pick(["Always", "Smiling"]) == ["Smiling"]


# ---------------------------------------------------------------- huge images and memory


def test_the_pixel_limit_is_a_documented_bound():
    src = Path(__file__).resolve().parents[1] / "hdae_core" / "data" / "images.py"
    text = src.read_text()
    assert 1_000_000 < MAX_PIXELS <= 40_000_000
    assert "MAX_PIXELS = 40_000_000\n#" in text.replace("\r", "")  # a comment says what it is and why


def test_a_small_png_of_many_pixels_is_refused_from_its_header(tmp_path):
    bomb = _huge_png(tmp_path / "bomb.png", 13300, 13300)
    assert bomb.stat().st_size < 30_000 and 13300 * 13300 > MAX_PIXELS
    t0 = time.perf_counter()
    with pytest.raises(BadImageError, match=r"upload\.png: 13300x13300 px \(177 megapixels\) is more than the 40-megapixel"):
        decode_image(bomb.read_bytes(), "upload.png", convert_mode=True)  # the editor's upload path
    assert time.perf_counter() - t0 < 1.0  # refused before decoding
    with pytest.raises(BadImageError, match=r"bomb\.png: 13300x13300 px"):
        decode_image(bomb, str(bomb))


@pytest.mark.parametrize("w, h", [(20000, 20000), (7000, 6000)])
def test_a_huge_image_in_a_data_folder_is_named(tmp_path, w, h):
    root = tmp_path / "data"
    _huge_png(root / "0_huge.png", w, h, valid=False)  # first in sorted order: also the image the size note reads
    with pytest.raises(ValueError, match=r"0_huge\.png: .*megapixel") as e:
        ImageFolder(root, 16)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=r"data: none of its 1 image files can be used, e\.g\. .*0_huge\.png.*megapixel"):
        open_data(root, None, size=16)
    for i in range(3):
        _rgb(root / f"{i + 1}.png", size=(20, 20))
    d = open_data(root, None, size=16).describe()
    assert d["images"] == 3 and d["unreadable"] == 1
    assert any("0_huge.png" in n and "megapixel" in n for n in d["notes"])
    assert any("20x20 px" in n for n in d["notes"])


# ---------------------------------------------------------------- how images are listed and decoded


@pytest.mark.timeout(60)
def test_a_symlink_loop_is_listed_once(tmp_path):
    root = tmp_path / "loop"
    _rgb(root / "a.png")
    _rgb(root / "sub" / "b.png")
    os.symlink(".", root / "self1")
    os.symlink(".", root / "self2")
    os.symlink("..", root / "sub" / "up")
    os.symlink("sub", root / "twin")  # a second way into a real folder
    outside = _rgb(tmp_path / "elsewhere" / "c.png").parent
    os.symlink(outside, root / "linked")  # a linked folder of its own is followed
    t0 = time.perf_counter()
    assert find_images(root) == ["a.png", "linked/c.png", "sub/b.png"]
    assert time.perf_counter() - t0 < 5
    assert len(ImageFolder(root, 8)) == 3


@pytest.mark.timeout(60)
def test_a_pipe_or_a_broken_link_named_like_an_image(tmp_path):
    root = tmp_path / "odd"
    _rgb(root / "a.png")
    os.mkfifo(root / "pipe.png")  # opening it to read the header would wait for a writer forever
    os.symlink(tmp_path / "gone.png", root / "broken.png")
    ds = ImageFolder(root, 8, on_error="skip")
    assert ds.files == ["a.png"] and list(ds.skipped) == [str(root / "broken.png")]


def _orientation_jpeg(path: Path, orientation: int) -> Path:
    """A 16x8 picture stored with its top half red, bottom half blue, and an EXIF orientation tag."""
    arr = np.zeros((8, 16, 3), np.uint8)
    arr[:4, :, 0] = 255
    arr[4:, :, 2] = 255
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = orientation
    img.save(path, quality=100, exif=exif.tobytes())
    return path


def test_exif_orientation_is_applied(tmp_path):
    img = decode_image(_orientation_jpeg(tmp_path / "rot.jpg", 6), "rot.jpg")
    # orientation 6: shown turned 90 degrees clockwise, so the stored top (red) is on the right
    arr = np.asarray(img).astype(int)
    assert img.size == (8, 16)
    assert arr[:, 5:, 0].mean() > 200 and arr[:, 5:, 2].mean() < 50
    assert arr[:, :3, 2].mean() > 200 and arr[:, :3, 0].mean() < 50
    upright = np.asarray(decode_image(_orientation_jpeg(tmp_path / "up.jpg", 1), "up.jpg"))
    assert upright.shape == (8, 16, 3) and upright[:3, :, 0].mean() > 200


def test_sixteen_bit_grayscale_is_scaled_to_eight_bits(tmp_path):
    ramp = np.linspace(0, 65535, 32).round().astype(np.uint16)[None].repeat(8, 0)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    with pytest.raises(BadImageError, match="16-bit grayscale"):
        decode_image(tmp_path / "g16.png", "g16.png")
    arr = np.asarray(decode_image(tmp_path / "g16.png", "g16.png", convert_mode=True)).astype(int)
    expected = np.round(ramp / 257).astype(int)
    assert np.abs(arr[..., 0] - expected).max() <= 1 and (arr[..., 0] == arr[..., 2]).all()
    assert arr.min() == 0 and arr.max() == 255
    x = ImageFolder(tmp_path, 8, flip=False, convert_mode=True)[0]["image"]
    assert abs(float(x.mean())) < 0.05 and x.max() < 0.3 and (x[:, :, 1:] > x[:, :, :-1]).all()  # a ramp, not white
    i32 = Image.fromarray(ramp.astype(np.int32))  # the older PIL mode for 16-bit files
    assert i32.mode == "I"
    from hdae_core.data.images import check_mode
    assert np.abs(np.asarray(check_mode(i32, "x", True))[..., 1] - expected).max() <= 1
    assert torch.is_tensor(x)
