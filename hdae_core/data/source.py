"""The images a study runs on: the built-in Shapes world, or the user's folder / LMDB with an optional attribute file.

Every study notebook calls ``open_data(data, attributes, size)`` and asks the result for a training split
(directions, statistics, latent DDIM), a judge split (the classifiers that score edits on real data) and a
held-out split (the images reconstructed, mixed, edited). Shapes keeps its seeds (training 0/1, judge 2,
held-out 10 000) and its ground truth (factors, label maps, an attribute oracle); a user's data set is split
once by a fixed permutation: 60 % training, 20 % judge, 20 % held-out.

Images of another size than the checkpoint's are centre-cropped and resized to it, with a note (each study's
``metrics.json`` and the report name the native size and how many were upscaled). Files that can't be
read are left out when the folder is opened (a folder with none usable is refused), counted and reported.
Rows match images by relative path, a bare name by file name, stem or number only where that is unique
(``celeba.match_rows``); images without a row are left out of every study, counted and reported, and so
are attribute columns that are constant (no edit direction can be fitted for them).
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .attributes import BINARY, CONTINUOUS, read_attributes
from .celeba import AttributeImages
from .shapes import Shapes

SHAPES_SEEDS = {"train": 1, "judge": 2, "heldout": 10_000}
SPLITS = ("train", "judge", "heldout")
NEEDS_GROUND_TRUTH = "needs the Shapes world's ground truth ({what}); --data {data} has none"


def is_shapes(data) -> bool:
    return data is None or (isinstance(data, str) and data.strip().lower() in ("", "shapes", "none"))


class _Split(Dataset):
    """Items ``positions`` of a data set, as dicts with ``image`` (and ``attributes``); knows its file names."""

    def __init__(self, base, positions: np.ndarray, attribute_names: list[str], names: list[str]):
        self.base, self.positions = base, positions
        self.attribute_names = attribute_names
        self.names = names

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> dict:
        item = self.base[int(self.positions[i])]
        out = {"image": item["image"]}
        if "attributes" in item:
            out["attributes"] = item["attributes"]
        return out

    def batch(self, indices) -> dict[str, Any]:
        items = [self[int(i)] for i in indices]
        out = {"image": torch.stack([it["image"] for it in items]), "names": [self.names[int(i)] for i in indices]}
        if items and "attributes" in items[0]:
            out["attributes"] = torch.stack([torch.as_tensor(it["attributes"]) for it in items])
        return out


class StudyData:
    """What every study asks of its images (see the module docstring): splits, attributes, notes for the report.

    ``open_data`` returns a ``ShapesData`` (the built-in world, with ground truth) or a ``FolderData`` (the user's
    images); a second world with ground truth would be a third subclass. ``describe()`` goes into metrics.json.
    """

    ground_truth = False  # factors, label maps and an attribute oracle exist for these images

    def __init__(self, source: str, size: int, attribute_file=None):
        self.source, self.size = source, int(size)
        self.notes: list[str] = []
        self.attribute_file = str(attribute_file) if attribute_file else None
        self.attribute_names: list[str] = []
        self.attribute_kinds: dict[str, str] = {}
        self.correlated_pairs: list[tuple[str, str, float]] = []
        self.constant_attributes: list[str] = []
        self.n_images, self.n_unannotated = None, 0

    # ---------------------------------------------------------------- what studies ask for

    @property
    def has_attributes(self) -> bool:
        return bool(self.attribute_names)

    def binary_attributes(self) -> list[str]:
        return [n for n in self.attribute_names if self.attribute_kinds[n] == BINARY]

    def pick(self, wanted, n: int = 4, binary: bool = True) -> list[str]:
        """The names of ``wanted`` the data has; when it has none of them, its first ``n`` (binary) attributes."""
        have = self.binary_attributes() if binary else self.attribute_names
        have = [n for n in have if n not in self.constant_attributes]  # no direction can be fitted for those
        chosen = [w for w in (wanted or []) if w in have]
        if not chosen and have:
            chosen = have[:n]
            self.notes.append(f"attributes {list(wanted or [])} not in the data: shown instead {chosen}")
        return chosen

    def split(self, which: str = "train"):
        """The data set of a split: items are dicts with ``image`` (and ``attributes``); ``attribute_names`` set."""
        if which not in SPLITS:
            raise ValueError(f"split: expected one of {SPLITS}, got {which!r}")
        return self._splits[which]

    def available(self, which: str = "heldout") -> int:
        return len(self.split(which))

    def take(self, n: int, which: str = "heldout", what: str = "images") -> int:
        """``n``, or fewer (with a note) when the split holds fewer images."""
        have = self.available(which)
        if n > have:
            self.notes.append(f"{what}: asked for {n}, the {which} split has {have}; used {have}")
            return have
        return int(n)

    def batch(self, n: int, which: str = "heldout", start: int = 0) -> dict[str, Any]:
        """Items ``start``…``start+n-1`` of a split as one batch: ``image`` [n, 3, S, S], ``attributes``, ``names``."""
        n = self.take(start + n, which) - start
        if n < 1:
            raise ValueError(f"the {which} split has {self.available(which)} images; none left from {start}")
        return self._batch(which, start, n)

    def images(self, n: int, which: str = "heldout", start: int = 0) -> torch.Tensor:
        return self.batch(n, which, start)["image"]

    def needs_ground_truth(self, what: str) -> str | None:
        """None on Shapes; else why a part that needs ground truth (``what``) is skipped."""
        return None if self.ground_truth else NEEDS_GROUND_TRUTH.format(what=what, data=self.source)

    def describe(self) -> dict[str, Any]:
        """What the study ran on, for metrics.json and the report."""
        raise NotImplementedError


class ShapesData(StudyData):
    """The built-in Shapes world: one seed per split, every factor known."""

    ground_truth = True

    def __init__(self, size: int = 32, train_seed: int | None = None, heldout_seed: int | None = None):
        super().__init__("shapes", size)
        seeds = dict(SHAPES_SEEDS, **({"train": int(train_seed)} if train_seed is not None else {}),
                     **({"heldout": int(heldout_seed)} if heldout_seed is not None else {}))
        self._splits = {k: Shapes(size=self.size, seed=s) for k, s in seeds.items()}
        self.attribute_names = list(Shapes.attribute_names)
        self.attribute_kinds = {n: BINARY for n in self.attribute_names}
        self.correlated_pairs = list(self._splits["train"].correlated_pairs)

    def _batch(self, which: str, start: int, n: int) -> dict[str, Any]:
        out = self.split(which).batch(list(range(start, start + n)))
        out["names"] = [f"shape {i}" for i in range(start, start + n)]
        return out

    def describe(self) -> dict[str, Any]:
        return {"source": "shapes", "image_size": self.size, "ground_truth": True, "attributes": self.attribute_names}


class FolderData(StudyData):
    """The user's image folder or LMDB, with an optional attribute file, split once by a fixed permutation."""

    def __init__(self, path, attributes=None, size: int = 32):
        super().__init__(str(path), size, attributes)
        self._open_user(Path(path), attributes)

    def _open_user(self, path: Path, attributes) -> None:
        from . import make_dataset  # here: the package defines it after importing this module

        if not path.exists():
            raise FileNotFoundError(f"data: {path} does not exist (expected an image folder or an LMDB folder)")
        # studies only read the images: grayscale, RGBA and palette images are converted to RGB (training refuses
        # them unless asked, `--convert-images`); a file that cannot be read is left out, and a note says so below
        images = make_dataset(path, self.size, flip=False, on_error="skip", convert_mode=True)
        self.dataset = images
        self._note_size(images)
        files = list(getattr(images, "files", []))
        base = images
        self.n_images = len(images)
        if attributes:
            df, kinds = read_attributes(attributes)
            try:
                base = AttributeImages(images, df, on_error="skip")
            except ValueError as e:
                if "no image has an attribute row" not in str(e):
                    raise
                raise ValueError(
                    f"attributes: none of the {len(df)} rows of {attributes} names an image in {path} "
                    f"(rows like {str(df.index[0])!r}, images like {files[0] if files else 'the LMDB keys'!r}; "
                    "a row matches an image by its path relative to the folder, or by file name, stem or "
                    "number without zero padding where only one image and one row share it)") from None
            self.n_unannotated = len(base.skipped)
            if self.n_unannotated:
                example = next(iter(base.skipped))
                shown = Path(example).relative_to(path).as_posix() if Path(example).is_relative_to(path) else example
                self.notes.append(f"{self.n_unannotated} of {self.n_images} images have no row in {attributes}: "
                                  f"left out of every study (e.g. {shown})")
            ambiguous = [f"{Path(k).name}: {v[len('ambiguous: '):]}" for k, v in base.skipped.items()
                         if v.startswith("ambiguous")]
            if ambiguous:
                self.notes.append(f"{len(ambiguous)} of them could take more than one row, so take none "
                                  f"(rows match by relative path, by bare name only when unique), e.g. {ambiguous[0]}")
            if base.unused_rows:
                used = set(base.names)
                unused = next(str(r) for r in df.index if str(r) not in used)
                self.notes.append(f"{base.unused_rows} of the {len(df)} rows of {attributes} label no image "
                                  f"in {path} (e.g. {unused!r})")
            self.attribute_names = list(base.attribute_names)
            self.attribute_kinds = {n: kinds[n] for n in self.attribute_names}
            names = [files[int(i)] if files else str(i) for i in base.indices]
            self._values = base.values
        else:
            names = files or [f"{path.name}[{i}]" for i in range(len(images))]
            self._values = None
        n = len(base)
        perm = np.random.default_rng(0).permutation(n)
        n_eval = max(1, round(0.2 * n)) if n >= 5 else 0
        parts = {"heldout": perm[:n_eval], "judge": perm[n_eval:2 * n_eval], "train": perm[2 * n_eval:]}
        if n < 5:
            parts = {k: perm for k in SPLITS}
            self.notes.append(f"only {n} usable images: every split (training, judge, held-out) uses all of them")
        self._splits = {k: _Split(base, np.sort(v), self.attribute_names, [names[int(j)] for j in np.sort(v)])
                        for k, v in parts.items()}
        self._split_rows = {k: np.sort(v) for k, v in parts.items()}
        self.constant_attributes = self._note_constant(attributes)
        self.correlated_pairs = self._correlations()

    def _note_constant(self, attributes) -> list[str]:
        """Attributes with one value over the data, or over its training split: no direction can be fitted for them."""
        if self._values is None:
            return []
        out = []
        train = self._values[self._split_rows["train"]]
        for j, name in enumerate(self.attribute_names):
            every, values = np.unique(self._values[:, j]), np.unique(train[:, j])
            if len(every) == 1:
                self.notes.append(f"attribute {name!r} is {every[0]:g} for every one of the {len(self._values)} "
                                  f"annotated images in {attributes}: no edit direction can be fitted for it")
            elif len(values) == 1:
                self.notes.append(f"attribute {name!r} is {values[0]:g} for every one of the {len(train)} images of "
                                  f"the training split: no edit direction can be fitted for it")
            else:
                continue
            out.append(name)
        return out

    def _note_size(self, images) -> None:
        """A note when the images are not square at the checkpoint's size (the first usable one, as decoded)."""
        if getattr(images, "first_size", None):
            w, h = images.first_size
        else:
            w = h = int(getattr(images, "resolution", self.size))
        if (w, h) != (self.size, self.size):
            what = "upscaled" if min(w, h) < self.size else "downscaled"
            self.notes.append(f"images are {w}x{h} px (the first one), the checkpoint's size {self.size} px: "
                              f"centre-cropped and {what} to {self.size} px before every study")

    def _correlations(self, min_abs: float = 0.3) -> list[tuple[str, str, float]]:
        """Each binary attribute's most correlated binary partner in the training split (|φ| ≥ ``min_abs``)."""
        if self._values is None:
            return []
        binary = [i for i, n in enumerate(self.attribute_names) if self.attribute_kinds[n] == BINARY]
        y = self._values[self._split_rows["train"]][:, binary]
        if len(binary) < 2 or len(y) < 4:
            return []
        with np.errstate(invalid="ignore", divide="ignore"):
            phi = np.nan_to_num(np.corrcoef(y.T), nan=0.0)
        np.fill_diagonal(phi, 0.0)
        pairs, seen = [], set()
        for a in range(len(binary)):
            b = int(np.abs(phi[a]).argmax())
            if abs(phi[a, b]) < min_abs or frozenset((a, b)) in seen:
                continue
            seen.add(frozenset((a, b)))
            rate = float((y[:, a] == y[:, b]).mean())
            pairs.append((self.attribute_names[binary[a]], self.attribute_names[binary[b]], rate))
        return pairs

    def _batch(self, which: str, start: int, n: int) -> dict[str, Any]:
        return self._splits[which].batch(range(start, start + n))

    def describe(self) -> dict[str, Any]:
        skipped = dict(getattr(self.dataset, "skipped", {}))
        notes = list(dict.fromkeys(self.notes))
        upscaled = len(getattr(self.dataset, "upscaled", {}))
        if upscaled:
            notes.append(f"{upscaled} image(s) smaller than {self.size} px were upscaled")
        if skipped:
            notes.append(f"{len(skipped)} image file(s) can't be used and are left out, e.g. {next(iter(skipped.values()))}")
        kinds = Counter(self.attribute_kinds.values())
        return {"source": self.source, "image_size": self.size, "ground_truth": False, "images": self.n_images,
                "attribute_file": self.attribute_file, "attributes": self.attribute_names,
                "binary_attributes": kinds.get(BINARY, 0), "continuous_attributes": kinds.get(CONTINUOUS, 0),
                "without_annotation": self.n_unannotated, "unreadable": len(skipped),
                "constant_attributes": list(self.constant_attributes),
                "splits": {k: self.available(k) for k in SPLITS}, "notes": notes}


def open_data(data=None, attributes=None, size: int = 32, train_seed: int | None = None,
              heldout_seed: int | None = None) -> StudyData:
    """The study's images: ``data`` None / 'shapes' (built-in) or a folder / LMDB; ``attributes`` a file (any format)."""
    if isinstance(attributes, str) and not attributes.strip():
        attributes = None
    if attributes is not None and not Path(os.fspath(attributes)).is_file():
        raise FileNotFoundError(f"attributes: {attributes} is not a file")
    if is_shapes(data):
        if attributes:
            raise ValueError("attributes: an attribute file goes with --data (a folder or LMDB); the built-in "
                             "Shapes world carries its own")
        return ShapesData(size, train_seed=train_seed, heldout_seed=heldout_seed)
    return FolderData(data, attributes, size=size)
