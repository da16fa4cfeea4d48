"""Real images: a recursive image folder (FFHQ layout) and DiffAE's LMDB format, with strict bad-input handling."""

from __future__ import annotations

import io
import logging
import os
import stat
import warnings
from collections.abc import Iterable
from pathlib import Path

import lmdb
import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
ON_ERROR = ("raise", "skip")

MAX_PIXELS = 40_000_000
# The most pixels (width x height) a data image or an upload may have, read from the file's header before
# anything is decoded. PIL's own decompression-bomb guard starts at 89 megapixels (an error only at 179), so
# a 21 KB PNG of 13300x13300 one-colour pixels passes it and then takes ~530 MB as RGB, more while it is
# converted and cropped. 40 megapixels (120 MB as RGB) admits any camera photo up to ~7300x5500 and data
# sets many times over (FFHQ and CelebA-HQ are 1 megapixel), and keeps one image well under half a GB.

# 16-bit grayscale modes: PIL's convert("RGB") clips them at 255 (all white), so they are scaled instead
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_MODE_WORDS = {
    "L": "grayscale",
    "LA": "grayscale with alpha",
    "I": "32-bit grayscale",
    "I;16": "16-bit grayscale",
    "F": "float grayscale",
    "1": "1-bit",
    "P": "palette",
    "PA": "palette with alpha",
    "RGBA": "RGB with alpha",
    "RGBa": "RGB with premultiplied alpha",
    "CMYK": "CMYK",
    "YCbCr": "YCbCr",
    "LAB": "Lab",
    "HSV": "HSV",
}


class BadImageError(ValueError):
    """An image that can't be used as-is: undecodable, truncated, or not RGB."""


def _check_on_error(on_error: str) -> str:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    return on_error


def _mode_problem(mode: str, name: str) -> BadImageError:
    word = _MODE_WORDS.get(mode, "non-RGB")
    return BadImageError(
        f"{name}: mode {mode!r} ({word}), expected RGB; "
        "convert it, pass convert_mode=True, or pass on_error='skip'"
    )


def check_mode(img: Image.Image, name: str, convert_mode: bool = False) -> Image.Image:
    """The image as RGB: as-is when RGB, converted when convert_mode (alpha dropped, 16 bits scaled to 8), else BadImageError."""
    if img.mode == "RGB":
        return img
    if not convert_mode:
        raise _mode_problem(img.mode, name)
    if img.mode in _SIXTEEN_BIT:
        # 0..65535 onto 0..255 (65535 / 255 = 257), rounded; PNG stores at most 16 bits per sample
        arr = np.asarray(img).astype(np.uint32)
        img = Image.fromarray(((np.clip(arr, 0, 65535) + 128) // 257).astype(np.uint8), "L")
    return img.convert("RGB")


def check_pixels(size: tuple[int, int], name: str) -> None:
    """BadImageError when an image of ``size`` (width, height) has more than MAX_PIXELS pixels."""
    w, h = size
    if w * h > MAX_PIXELS:
        raise BadImageError(f"{name}: {w}x{h} px ({w * h / 1e6:.0f} megapixels) is more than the "
                            f"{MAX_PIXELS / 1e6:.0f}-megapixel limit for an image; downscale it")


def _open(src, name: str) -> Image.Image:
    """Image.open with the pixel limit applied to the header, before any pixel is decoded."""
    try:
        with warnings.catch_warnings():
            # MAX_PIXELS is below PIL's warning threshold: what PIL would warn about is refused below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(src)
    except Image.DecompressionBombError as e:
        raise BadImageError(f"{name}: more than the {MAX_PIXELS / 1e6:.0f}-megapixel limit for an image "
                            f"({e}); downscale it") from None
    try:
        check_pixels(img.size, name)
    except BadImageError:
        img.close()
        raise
    return img


def _source(data):
    return io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data


def read_header(data: bytes | str | os.PathLike, name: str, convert_mode: bool = False) -> tuple[int, int, str]:
    """(width, height, mode) from the header alone; BadImageError when unidentifiable, too large or (unless convert_mode) not RGB."""
    try:
        with _open(_source(data), name) as img:
            w, h, mode = img.size[0], img.size[1], img.mode
    except BadImageError:
        raise
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError) as e:
        raise BadImageError(f"{name}: can't read the image (not an image, or a corrupt file?): {e}") from e
    if mode != "RGB" and not convert_mode:
        raise _mode_problem(mode, name)
    return w, h, mode


def _upright(img: Image.Image) -> Image.Image:
    """The image as a viewer shows it: its EXIF orientation applied (a broken EXIF block is ignored, as viewers do)."""
    try:
        orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # PIL raises many kinds on malformed EXIF; the pixels themselves are fine
        return img
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        return ImageOps.exif_transpose(img)
    return img


def decode_image(data: bytes | str | os.PathLike, name: str, convert_mode: bool = False) -> Image.Image:
    """Open and fully decode an image as RGB, upright per its EXIF; BadImageError (naming `name`) when corrupt, too large or non-RGB."""
    # Truncated files are caught unless PIL.ImageFile.LOAD_TRUNCATED_IMAGES was switched on globally.
    try:
        with _open(_source(data), name) as img:
            img.load()  # decode now: truncation and corruption only show up here
            upright = _upright(img)
            out = check_mode(upright, name, convert_mode)
            return out.copy() if out is img else out
    except BadImageError:
        raise
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError) as e:
        raise BadImageError(f"{name}: can't decode the image (corrupt or truncated file?): {e}") from e


def center_crop_resize(img: Image.Image, size: int, resample=Image.BICUBIC) -> Image.Image:
    """Centre-crop to a square, then resize to `size` (bicubic by default, antialiased when shrinking)."""
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    if (w, h) != (s, s):
        img = img.crop((left, top, left + s, top + s))
    if s != size:
        img = img.resize((size, size), resample, reducing_gap=None)
    return img


def to_tensor(img: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a float32 tensor [3, H, W] in [-1, 1]."""
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


class _ImageSource(Dataset):
    """Shared decode / crop / flip / skip logic; subclasses provide `_load(i) -> (bytes or path, name)`."""

    def __init__(self, size: int, flip: bool, on_error: str, convert_mode: bool, seed: int | None):
        if int(size) < 1:
            raise ValueError(f"size must be positive, got {size}")
        self.size = int(size)
        self.flip = bool(flip)
        self.on_error = _check_on_error(on_error)
        self.convert_mode = bool(convert_mode)
        self.seed = seed
        self.epoch = 0
        # path or key -> reason, for every item this process skipped (DataLoader workers keep their own)
        self.skipped: dict[str, str] = {}
        # name -> (width, height) of every image this process had to upscale to `size`
        self.upscaled: dict[str, tuple[int, int]] = {}
        self._bad: set[int] = set()
        self.first_size: tuple[int, int] | None = None  # (width, height) of the first usable image, upright

    def __len__(self) -> int:
        raise NotImplementedError

    def _load(self, index: int):
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch for seeded flips, so each epoch flips differently yet reproducibly."""
        self.epoch = int(epoch)

    def _flip_this(self, index: int) -> bool:
        if not self.flip:
            return False
        if self.seed is None:
            # torch's global RNG: DataLoader seeds it per worker, torch.manual_seed makes runs repeatable
            return bool(torch.rand(()) < 0.5)
        return bool(np.random.default_rng([int(self.seed), self.epoch, index]).random() < 0.5)

    def load_image(self, index: int) -> Image.Image:
        """Item `index` decoded, centre-cropped and resized (no flip); raises BadImageError when unusable."""
        data, name = self._load(index)
        img = decode_image(data, name, self.convert_mode)
        if min(img.size) < self.size and name not in self.upscaled:
            self.upscaled[name] = img.size
            # the first one warns at once; the count follows with each power of two, not once per image
            n = len(self.upscaled)
            if n & (n - 1) == 0:
                log.warning("%d image(s) smaller than %d px upscaled so far, e.g. %s (%dx%d)",
                            n, self.size, name, *img.size)
        return center_crop_resize(img, self.size)

    def _skip(self, name: str, reason: str) -> None:
        if name not in self.skipped:
            self.skipped[name] = reason
            log.warning("skipping %s (%d skipped so far)", reason, len(self.skipped))

    def __getitem__(self, index: int) -> dict:
        """{'image': [3, H, W] in [-1, 1], 'index': the index actually returned}; see on_error for bad items."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {type(self).__name__} of length {n}")
        index %= n
        for offset in range(n):
            i = (index + offset) % n
            if i in self._bad:
                continue
            try:
                img = self.load_image(i)
            except BadImageError as e:
                if self.on_error == "raise":
                    raise
                self._bad.add(i)
                self._skip(self._name(i), str(e))
                continue
            if self._flip_this(i):
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
            return {"image": to_tensor(img), "index": i}
        raise RuntimeError(f"{type(self).__name__}: every one of the {n} images is unusable; see .skipped")

    def _name(self, index: int) -> str:
        raise NotImplementedError

    def _first_usable(self) -> int | None:
        """The first item that decodes; those before it are raised (on_error='raise') or marked bad and recorded."""
        # opening the set decodes one image, so a set with none usable is refused up front, not mid-study
        for i in range(len(self)):
            try:
                data, name = self._load(i)
                self.first_size = decode_image(data, name, self.convert_mode).size
                return i
            except BadImageError as e:
                if self.on_error == "raise":
                    raise
                self._bad.add(i)
                self.skipped.setdefault(self._name(i), str(e))
        return None

    def scan(self) -> dict[str, str]:
        """Decode every image once and return {name: problem} for the unusable ones (nothing is raised)."""
        bad = {}
        for i in range(len(self)):
            try:
                data, name = self._load(i)
                decode_image(data, name, self.convert_mode)
            except BadImageError as e:
                bad[self._name(i)] = str(e)
        return bad


class ImageFolder(_ImageSource):
    """All .png/.jpg/.jpeg/.webp files under `root` (recursively, sorted by relative path), square-cropped to `size`."""
    # Opening reads every file's header and decodes the first image, so what is known up front fails
    # up front: a file that can't be identified, is over MAX_PIXELS or (unless convert_mode=True) is not
    # RGB raises BadImageError (a ValueError) naming it with on_error="raise", or with on_error="skip"
    # is left out of `files` and recorded in `skipped`; a folder with no usable image raises ValueError
    # naming the folder. A file that fails later (truncated pixels) raises, or is skipped: logged,
    # recorded in `skipped`, and the next usable image is returned instead (the item's `index` says which).
    # Flips use torch's RNG, or with `seed` a fixed choice per (seed, epoch, index).

    def __init__(
        self,
        root: str | os.PathLike,
        size: int,
        flip: bool = True,
        on_error: str = "raise",
        convert_mode: bool = False,
        seed: int | None = None,
    ):
        super().__init__(size, flip, on_error, convert_mode, seed)
        self.root = Path(root)
        if not self.root.exists():
            raise FileNotFoundError(f"image folder not found: {self.root}")
        if not self.root.is_dir():
            raise NotADirectoryError(f"not a folder: {self.root}")
        listed = find_images(self.root)
        if not listed:
            raise ValueError(
                f"no images in {self.root} (looked recursively for {', '.join(IMAGE_EXTENSIONS)}, any case)"
            )
        # headers only (~20 us a file): what can't be identified, is too large or has the wrong mode is
        # left out now, so len() counts images that can be read
        self.files = [f for f in listed if self._header_ok(f)]
        first = self._first_usable()
        if first is None:
            example = next(iter(self.skipped.values()))
            raise ValueError(f"{self.root}: none of its {len(listed)} image files can be used, e.g. {example}")
        self.files = self.files[first:]  # those before the first usable one failed to decode
        self._bad.clear()
        if self.skipped:
            log.warning("%d of %d image files in %s can't be used and are left out, e.g. %s",
                        len(self.skipped), len(listed), self.root, next(iter(self.skipped.values())))

    def _header_ok(self, file: str) -> bool:
        name = str(self.root / file)
        try:
            read_header(self.root / file, name, self.convert_mode)
            return True
        except BadImageError as e:
            if self.on_error == "raise":
                raise
            self.skipped[name] = str(e)
            return False

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        return f"ImageFolder({str(self.root)!r}, size={self.size}, {len(self)} images)"

    def _load(self, index: int):
        path = self.root / self.files[index]
        return path, str(path)

    def _name(self, index: int) -> str:
        return str(self.root / self.files[index])

    def item_name(self, index: int) -> str:
        """Item ``index``'s name inside the folder (its relative path), the same wherever the folder is."""
        return self.files[index]


def find_images(root: str | os.PathLike) -> list[str]:
    """Relative posix paths of the images under `root`, sorted (FFHQ's zero-padded names sort numerically)."""
    # Linked folders are followed, but each real folder only once (first in sorted walk order): a link
    # to the folder itself or a sibling would otherwise list the same images again, or without end.
    root = Path(root)
    out = []
    seen = {_dir_id(root)}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        kept = []
        for d in sorted(dirnames):
            key = _dir_id(Path(dirpath, d))
            if d.startswith(".") or key is None or key in seen:
                continue
            seen.add(key)
            kept.append(d)
        dirnames[:] = kept
        for fn in filenames:
            if fn.lower().endswith(IMAGE_EXTENSIONS) and not fn.startswith(".") and _maybe_file(Path(dirpath, fn)):
                out.append(Path(dirpath, fn).relative_to(root).as_posix())
    return sorted(out)


def _maybe_file(path: Path) -> bool:
    """False for a pipe, socket or device named like an image (opening a pipe would wait forever)."""
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return True  # a broken link: listed, and reported as unreadable when the folder is opened


def _dir_id(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the folder ``path`` leads to; None when it can't be reached."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


_ENVS: dict = {}  # real path -> (pid, environment); LMDB allows one open per path and process


def _open_lmdb(path: str | os.PathLike):
    """This process's shared read-only environment for `path`, opened on first use."""
    key = os.path.realpath(path)
    pid, env = _ENVS.get(key, (None, None))
    if env is not None and pid != os.getpid():
        # inherited through fork: LMDB handles must not be used in a child, but closing the
        # child's copy is safe without a lock file and lets this process open its own
        env.close()
        env = None
    if env is None:
        # readonly, no lock file, no readahead: safe for many reader processes and random access
        env = lmdb.open(str(path), readonly=True, lock=False, readahead=False, meminit=False, max_readers=64)
        _ENVS[key] = (os.getpid(), env)
    return env


def close_lmdb(path: str | os.PathLike) -> None:
    """Close this process's reader of `path` (e.g. before writing to it again); the next read reopens it."""
    _, env = _ENVS.pop(os.path.realpath(path), (None, None))
    if env is not None:
        env.close()


class LMDBImages(_ImageSource):
    """DiffAE's LMDB format: keys "{resolution}-{index:05d}" holding encoded images, plus a "length" key."""
    # Each process opens its own read-only environment on first use (one per path, shared by
    # instances), so DataLoader workers, forked or spawned, never reuse their parent's.
    # `resolution` (and the key width `zfill`) are read from the first key when not given.
    # Bad entries behave as in ImageFolder (on_error, convert_mode, skipped).

    def __init__(
        self,
        path: str | os.PathLike,
        size: int,
        resolution: int | None = None,
        flip: bool = True,
        on_error: str = "raise",
        convert_mode: bool = False,
        seed: int | None = None,
        zfill: int | None = None,
    ):
        super().__init__(size, flip, on_error, convert_mode, seed)
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"LMDB not found: {self.path}")
        if not (self.path / "data.mdb").is_file():
            raise ValueError(f"{self.path} is not an LMDB folder (no data.mdb in it)")
        try:
            env = _open_lmdb(self.path)
        except lmdb.Error as e:
            raise ValueError(f"{self.path}: can't open the LMDB: {e}") from e
        with env.begin() as txn:
            probe_res, probe_zfill = _probe_key(txn)
            self.resolution = int(resolution) if resolution is not None else probe_res
            self.zfill = int(zfill) if zfill is not None else (probe_zfill or 5)
            if self.resolution is None:
                raise ValueError(f"{self.path}: no image keys like '256-00000' found; is this DiffAE's format?")
            raw = txn.get(b"length")
            if raw is not None:
                try:
                    self.length = int(raw.decode("utf-8"))
                except ValueError as e:
                    raise ValueError(f"{self.path}: the 'length' key holds {raw[:20]!r}, not an integer") from e
            else:
                self.length = _count_keys(txn, f"{self.resolution}-".encode())
            if self.length <= 0:
                raise ValueError(f"{self.path}: the LMDB holds no images")
            if txn.get(self._key(0)) is None:
                raise ValueError(
                    f"{self.path}: no key {self._key(0).decode()!r}; "
                    f"resolution {self.resolution} / zfill {self.zfill} don't match the keys stored"
                )
        if self._first_usable() is None:
            example = next(iter(self.skipped.values()))
            raise ValueError(f"{self.path}: none of its {self.length} images can be used, e.g. {example}")

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return f"LMDBImages({str(self.path)!r}, size={self.size}, resolution={self.resolution}, {len(self)} images)"

    def _key(self, index: int) -> bytes:
        return f"{self.resolution}-{str(index).zfill(self.zfill)}".encode("utf-8")

    def _txn_get(self, key: bytes):
        # looked up per read, never stored: the env must not be pickled or reused across a fork
        with _open_lmdb(self.path).begin(write=False) as txn:
            return txn.get(key)

    def close(self) -> None:
        """Close this process's reader of the LMDB (see close_lmdb)."""
        close_lmdb(self.path)

    def _load(self, index: int):
        key = self._key(index)
        name = self._name(index)
        data = self._txn_get(key)
        if data is None:
            raise BadImageError(f"{name}: key missing from the LMDB")
        return bytes(data), name

    def _name(self, index: int) -> str:
        return f"{self.path}[{self._key(index).decode()}]"

    def item_name(self, index: int) -> str:
        """Item ``index``'s key inside the LMDB, the same wherever the LMDB is."""
        return self._key(index).decode()


def _probe_key(txn) -> tuple[int | None, int | None]:
    """(resolution, zfill) parsed from the first key shaped like '256-00000'."""
    with txn.cursor() as cur:
        for key in cur.iternext(keys=True, values=False):
            res, sep, idx = bytes(key).decode("utf-8", "replace").partition("-")
            if sep and res.isdigit() and idx.isdigit():
                return int(res), len(idx)
    return None, None


def _count_keys(txn, prefix: bytes) -> int:
    n = 0
    with txn.cursor() as cur:
        if cur.set_range(prefix):
            for key in cur.iternext(keys=True, values=False):
                if not bytes(key).startswith(prefix):
                    break
                n += 1
    return n


def write_lmdb(
    images: str | os.PathLike | Iterable,
    path: str | os.PathLike,
    resolution: int,
    format: str = "webp",
    quality: int = 100,
    zfill: int = 5,
    convert_mode: bool = False,
    map_size: int = 1 << 30,
) -> int:
    """Write images (a folder, or an iterable of PIL images / uint8 arrays / file paths) as DiffAE's LMDB; returns the count."""
    # Each image is centre-cropped, Lanczos-resized to `resolution` and stored as `format` (DiffAE's
    # LMDBs use WebP at quality 100; "png" is lossless). Non-RGB input raises unless convert_mode=True.
    fmt = format.upper()
    if fmt == "JPG":
        fmt = "JPEG"
    if fmt not in ("WEBP", "PNG", "JPEG"):
        raise ValueError(f"format must be webp, png or jpeg, got {format!r}")
    if isinstance(images, (str, os.PathLike)):
        root = Path(images)
        if not root.is_dir():
            raise FileNotFoundError(f"image folder not found: {root}")
        files = find_images(root)
        if not files:
            raise ValueError(f"no images in {root} (looked recursively for {', '.join(IMAGE_EXTENSIONS)})")
        images = (root / f for f in files)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    close_lmdb(path)  # a reader left open in this process would block the writer
    env = lmdb.open(str(path), map_size=map_size, readahead=False, meminit=False)
    count, pending = 0, []

    def flush():
        # grow the map instead of failing when a big set outgrows the initial size
        while True:
            try:
                with env.begin(write=True) as txn:
                    for key, value in pending:
                        txn.put(key, value)
                    txn.put(b"length", str(count).encode("utf-8"))
                break
            except lmdb.MapFullError:
                env.set_mapsize(env.info()["map_size"] * 2)
        pending.clear()

    try:
        for i, item in enumerate(images):
            img = _as_pil(item, f"image {i}", convert_mode)
            img = center_crop_resize(img, resolution, Image.LANCZOS)  # as DiffAE's preparation script
            buf = io.BytesIO()
            kwargs = {"quality": quality} if fmt in ("WEBP", "JPEG") else {}
            img.save(buf, format=fmt, **kwargs)
            pending.append((f"{resolution}-{str(i).zfill(zfill)}".encode("utf-8"), buf.getvalue()))
            count = i + 1
            if len(pending) >= 1000:
                flush()
        flush()
    finally:
        env.close()
    return count


def _as_pil(item, name: str, convert_mode: bool) -> Image.Image:
    if isinstance(item, Image.Image):
        return check_mode(item, name, convert_mode)
    if isinstance(item, (str, os.PathLike)):
        return decode_image(item, str(item), convert_mode)
    if torch.is_tensor(item):
        item = item.detach().cpu().numpy()
    arr = np.asarray(item)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise BadImageError(f"{name}: expected a uint8 array [H, W, 3], got {arr.dtype} {arr.shape}")
    return Image.fromarray(arr, "RGB")


# ---------------------------------------------------------------- the editor's uploads

# ipywidgets' FileUpload keeps the whole file in the kernel; refuse anything a photo would not need
MAX_UPLOAD_BYTES = 20 * 1024 * 1024


def load_upload_full(data: bytes, name: str, size: int) -> tuple[Image.Image, tuple[int, int, int, int], torch.Tensor]:
    """(the uploaded photo as RGB, its centre-crop box (left, top, right, bottom), the crop as [3, size, size])."""
    if len(data) == 0:
        raise BadImageError(f"{name}: the file is empty")
    if len(data) > MAX_UPLOAD_BYTES:
        raise BadImageError(f"{name}: {len(data) / 2**20:.1f} MiB is too large (at most {MAX_UPLOAD_BYTES // 2**20} MiB)")
    # alpha and palette images are common uploads: flatten them to RGB rather than refuse them
    img = decode_image(bytes(data), name, convert_mode=True)
    w, h = img.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)  # as center_crop_resize crops
    return img, box, to_tensor(center_crop_resize(img, size))


def paste_back(full: Image.Image, box: tuple[int, int, int, int], edited: torch.Tensor,
               feather: float = 0.08) -> Image.Image:
    """``full`` with ``edited`` ([3, S, S] in [-1, 1], the crop ``box`` = (left, top, right, bottom) resized) resized
    back into the box and blended in with a border ``feather`` (fraction of the box side) that fades to the photo."""
    left, top, right, bottom = box
    side = right - left
    x = ((edited.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    patch = Image.fromarray(x, "RGB").resize((side, side), Image.BICUBIC)
    ramp = max(1, int(round(feather * side)))
    d = np.minimum(np.arange(side), np.arange(side)[::-1])  # distance to the nearest edge, per axis
    w = np.clip(np.minimum.outer(d, d) / ramp, 0.0, 1.0)
    mask = Image.fromarray((w * 255).round().astype(np.uint8), "L")
    out = full.copy()
    out.paste(patch, (left, top), mask)
    return out
