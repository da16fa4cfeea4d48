"""Shapes: a procedural RGB data set with known low- and high-level factors (a stand-in for faces)."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import numpy as np
import torch
from torch.utils.data import Dataset

# Palette index 0 is "red"; the others are far from red in hue so the attribute is unambiguous.
COLOR_NAMES = ("red", "green", "blue", "yellow", "purple", "cyan")
PALETTE = np.array(
    [
        (0.86, 0.12, 0.12),
        (0.15, 0.68, 0.25),
        (0.16, 0.36, 0.90),
        (0.95, 0.82, 0.15),
        (0.58, 0.24, 0.80),
        (0.10, 0.76, 0.80),
    ],
    dtype=np.float32,
)
SHAPE_NAMES = ("ellipse", "square", "triangle", "star")
LABEL_NAMES = ("background",) + SHAPE_NAMES + ("clutter",)
CLUTTER_LABEL = len(LABEL_NAMES) - 1

# Two tiers, kept apart: every structure factor moves the object's silhouette, every appearance
# factor changes colours and fine detail but never the silhouette.
STRUCTURE_FACTORS = ("shape", "size", "pos_x", "pos_y", "rotation")
APPEARANCE_FACTORS = (
    "color", "texture", "bg_hue", "bg_saturation", "bg_value",
    "light_angle", "light_strength", "bg_texture", "clutter",
)
FACTOR_NAMES = STRUCTURE_FACTORS + APPEARANCE_FACTORS

# Binary "switch" attributes, each present with probability 1/2; only these can be correlated.
SWITCH_ATTRIBUTES = (
    "red", "striped", "bright_background", "lit_from_left", "cluttered",
    "large", "left_side", "top_side", "rotated",
)
ATTRIBUTE_NAMES = SWITCH_ATTRIBUTES + tuple(f"is_{s}" for s in SHAPE_NAMES)
APPEARANCE_ATTRIBUTES = ("red", "striped", "bright_background", "lit_from_left", "cluttered")
STRUCTURE_ATTRIBUTES = tuple(a for a in ATTRIBUTE_NAMES if a not in APPEARANCE_ATTRIBUTES)
# older names of the two tiers
LOW_LEVEL_ATTRIBUTES, HIGH_LEVEL_ATTRIBUTES = APPEARANCE_ATTRIBUTES, STRUCTURE_ATTRIBUTES
# the groups HDAE's reading of the hierarchy is held against (05): structure should sit on the coarse levels,
# the object's and background's appearance on the fine ones; lighting and clutter cover the whole image and are
# reported apart
READING_GROUPS = {"structure": STRUCTURE_ATTRIBUTES, "appearance": ("red", "striped", "bright_background"),
                  "lighting and clutter": ("lit_from_left", "cluttered")}
DEFAULT_PAIR = ("red", "large")

# Factor ranges. Sizes are equal-area radii (fraction of the image side): every shape class of
# size s covers about pi*s^2 of the image, so "large" means the same area for all classes. Objects
# are big (a small one is about 12 px across at 32 px, a large one 17): changing the class, size or
# rotation moves tens of pixels, so structure carries real weight in a pixel loss.
SIZE_SMALL, SIZE_LARGE, LARGE_THRESHOLD = (0.17, 0.21), (0.25, 0.30), 0.23
POS_LOW, POS_HIGH = (0.36, 0.44), (0.56, 0.64)  # symmetric about 0.5, so x -> 1 - x flips side
ROT_SMALL, ROT_LARGE, ROTATED_THRESHOLD = 8.0, (18.0, 35.0), 12.5  # degrees; 35 < 36 = star symmetry / 2
BG_DARK, BG_BRIGHT = (0.12, 0.40), (0.60, 0.88)  # symmetric about 0.5, so v -> 1 - v flips brightness
BG_SATURATION = (0.10, 0.45)
LIGHT_SPREAD = 60.0  # degrees either side of due left / due right
LIGHT_STRENGTH = (0.20, 0.45)
BG_TEXTURE = (0.03, 0.10)
CLUTTER_COUNT = (4, 7)
MAX_CLUTTER = CLUTTER_COUNT[1]
CLUTTER_CANDIDATES = 64  # dot positions tried per item; the first ones clear of the object are used
CLUTTER_RADIUS = (0.045, 0.06)  # 3-4 px dots at 32 px
CLUTTER_MARGIN = 0.04  # gap between a dot and the object's circumscribed circle
CLUTTER_VALUE = (0.95, 0.05)  # dots are near-white on a dark background, near-black on a bright one
ELLIPSE_ASPECT = 1.8  # major / minor axis: a visible orientation, so "rotated" is defined for every class
STAR_INNER = 0.55  # inner / outer radius; chunky, so its arms survive 32 px
NOISE_GRID = 6  # the smooth background texture is bilinear noise on a 6x6 grid

_N_UNIFORM = 24  # uniforms per item for its factors, drawn before its detail
_SHAPE_ANGLES = {"square": 0.0, "triangle": math.pi / 2}  # edge-normal angle at rotation 0 (y down)
_STAR_AREA = 5 * STAR_INNER * math.sin(math.pi / 5)
# circumradius / equal-area radius per class
_CIRCUMRADIUS = np.array(
    [math.sqrt(ELLIPSE_ASPECT), math.sqrt(math.pi / 2), math.sqrt(math.pi / (3 * math.sqrt(3) / 4)), math.sqrt(math.pi / _STAR_AREA)],
    dtype=np.float32,
)
_F = {name: i for i, name in enumerate(FACTOR_NAMES)}
_A = {name: i for i, name in enumerate(ATTRIBUTE_NAMES)}


def _lerp(lo_hi, u):
    return lo_hi[0] + (lo_hi[1] - lo_hi[0]) * u


def _parse_correlation(correlation) -> list[tuple[str, str, float]]:
    """Normalise the `correlation` argument into a list of (name_a, name_b, rate)."""
    if correlation is None:
        return []
    if isinstance(correlation, (int, float)):
        pairs = [(*DEFAULT_PAIR, correlation)]
    else:
        pairs = list(correlation)
    out = []
    for pair in pairs:
        if len(pair) != 3:
            raise ValueError(f"correlated pair {pair!r}: expected (name_a, name_b, rate)")
        a, b, rate = pair
        if rate is None:
            continue
        for name in (a, b):
            if name not in SWITCH_ATTRIBUTES:
                raise ValueError(
                    f"correlated pair {pair!r}: {name!r} can't be correlated; "
                    f"choose from the balanced attributes {list(SWITCH_ATTRIBUTES)}"
                )
        if a == b:
            raise ValueError(f"correlated pair {pair!r}: the two attributes must differ")
        rate = float(rate)
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"correlated pair {pair!r}: rate must lie in [0, 1]")
        out.append((str(a), str(b), rate))
    return out


def _sampling_plan(pairs) -> list[tuple[int, int | None, float]]:
    """Order the switch attributes so each is drawn after the one it is paired with (pairs must form a forest)."""
    n = len(SWITCH_ATTRIBUTES)
    index = {name: i for i, name in enumerate(SWITCH_ATTRIBUTES)}
    edges: dict[int, list[tuple[int, float]]] = {i: [] for i in range(n)}
    root = list(range(n))

    def find(i):
        while root[i] != i:
            root[i] = root[root[i]]
            i = root[i]
        return i

    for a, b, rate in pairs:
        ia, ib = index[a], index[b]
        ra, rb = find(ia), find(ib)
        if ra == rb:
            # a cycle of agreement constraints generally has no joint distribution with these rates
            raise ValueError(
                f"correlated pairs {pairs!r} form a cycle through {a!r} and {b!r}; "
                "the pairs must form a tree (each new pair may share at most one attribute with earlier ones)"
            )
        root[ra] = rb
        edges[ia].append((ib, rate))
        edges[ib].append((ia, rate))
    plan, seen = [], set()
    for start in range(n):
        if start in seen:
            continue
        seen.add(start)
        plan.append((start, None, 0.5))
        queue = [start]
        while queue:
            node = queue.pop(0)
            for other, rate in edges[node]:
                if other not in seen:
                    seen.add(other)
                    plan.append((other, node, rate))
                    queue.append(other)
    return plan


def _hsv_to_rgb(h, s, v):
    """Vectorised HSV -> RGB for arrays of shape [N]; returns [N, 3]."""
    i = np.floor(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.astype(np.int64) % 6
    r = np.choose(i, [v, q, p, p, t, v])
    g = np.choose(i, [t, v, v, q, p, p])
    b = np.choose(i, [p, p, t, v, v, q])
    return np.stack([r, g, b], axis=1)


def _interp_matrix(size: int, grid: int) -> np.ndarray:
    """Bilinear interpolation weights [size, grid] from a grid of nodes to pixel centres."""
    pos = (np.arange(size) + 0.5) / size * (grid - 1)
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, grid - 2)
    w = pos - i0
    m = np.zeros((size, grid), dtype=np.float32)
    m[np.arange(size), i0] = 1 - w
    m[np.arange(size), i0 + 1] = w
    return m


def sample_factors(uniforms: np.ndarray, plan) -> np.ndarray:
    """Map per-item uniforms [N, 24] to factors [N, F] (float64), drawing correlated switches per `plan`."""
    u = uniforms
    n = u.shape[0]
    bits = np.zeros((n, len(SWITCH_ATTRIBUTES)), dtype=bool)
    for k, parent, rate in plan:
        if parent is None:
            bits[:, k] = u[:, k] < 0.5
        else:
            # agree with the partner with probability `rate`; with both marginals 1/2 this makes
            # P(b | a) = P(a | b) = P(a == b) = rate
            bits[:, k] = np.where(u[:, k] < rate, bits[:, parent], ~bits[:, parent])
    on = {name: bits[:, i] for i, name in enumerate(SWITCH_ATTRIBUTES)}
    f = np.zeros((n, len(FACTOR_NAMES)), dtype=np.float64)
    f[:, _F["shape"]] = np.minimum(np.floor(u[:, 9] * len(SHAPE_NAMES)), len(SHAPE_NAMES) - 1)
    f[:, _F["size"]] = np.where(on["large"], _lerp(SIZE_LARGE, u[:, 10]), _lerp(SIZE_SMALL, u[:, 10]))
    f[:, _F["pos_x"]] = np.where(on["left_side"], _lerp(POS_LOW, u[:, 11]), _lerp(POS_HIGH, u[:, 11]))
    f[:, _F["pos_y"]] = np.where(on["top_side"], _lerp(POS_LOW, u[:, 12]), _lerp(POS_HIGH, u[:, 12]))
    sign = np.where(u[:, 14] < 0.5, -1.0, 1.0)
    f[:, _F["rotation"]] = np.where(
        on["rotated"], sign * _lerp(ROT_LARGE, u[:, 13]), (2 * u[:, 13] - 1) * ROT_SMALL
    )
    n_other = len(COLOR_NAMES) - 1
    f[:, _F["color"]] = np.where(on["red"], 0, 1 + np.minimum(np.floor(u[:, 15] * n_other), n_other - 1))
    f[:, _F["texture"]] = on["striped"]
    f[:, _F["bg_hue"]] = u[:, 16]
    f[:, _F["bg_saturation"]] = _lerp(BG_SATURATION, u[:, 17])
    f[:, _F["bg_value"]] = np.where(on["bright_background"], _lerp(BG_BRIGHT, u[:, 18]), _lerp(BG_DARK, u[:, 18]))
    f[:, _F["light_angle"]] = (
        np.where(on["lit_from_left"], 180.0, 0.0) + (2 * u[:, 19] - 1) * LIGHT_SPREAD
    ) % 360.0
    f[:, _F["light_strength"]] = _lerp(LIGHT_STRENGTH, u[:, 20])
    f[:, _F["bg_texture"]] = _lerp(BG_TEXTURE, u[:, 21])
    n_counts = CLUTTER_COUNT[1] - CLUTTER_COUNT[0] + 1
    f[:, _F["clutter"]] = np.where(
        on["cluttered"], CLUTTER_COUNT[0] + np.minimum(np.floor(u[:, 22] * n_counts), n_counts - 1), 0
    )
    return f


def _attributes_np(f: np.ndarray) -> np.ndarray:
    """Binary attributes [N, A] (float32) from factors [N, F]; the single definition of every attribute."""
    col = lambda name: f[:, _F[name]]  # noqa: E731
    shape = np.rint(col("shape"))
    attrs = [
        np.rint(col("color")) == 0,
        np.rint(col("texture")) == 1,
        col("bg_value") > 0.5,
        np.cos(np.deg2rad(col("light_angle"))) < 0,
        np.rint(col("clutter")) > 0,
        col("size") > LARGE_THRESHOLD,
        col("pos_x") < 0.5,
        col("pos_y") < 0.5,
        np.abs(col("rotation")) > ROTATED_THRESHOLD,
    ] + [shape == c for c in range(len(SHAPE_NAMES))]
    return np.stack(attrs, axis=1).astype(np.float32)


def attributes_from_factors(factors) -> torch.Tensor:
    """Binary attributes [N, A] (float32, order ATTRIBUTE_NAMES) implied by factors [N, F] or [F]."""
    f = factors.detach().cpu().double().numpy() if torch.is_tensor(factors) else np.asarray(factors, np.float64)
    out = torch.from_numpy(_attributes_np(f.reshape(-1, len(FACTOR_NAMES))))
    return out[0] if f.ndim == 1 else out


def _draw_detail(rng: np.random.Generator, size: int):
    """Per-item fine detail: clutter candidates [C, 3] (x, y, radius), coarse noise [G, G], pixel noise [H, W]."""
    clutter = rng.random((CLUTTER_CANDIDATES, 3), dtype=np.float32)  # drawn first so it doesn't depend on size
    coarse = rng.standard_normal((NOISE_GRID, NOISE_GRID), dtype=np.float32)
    fine = rng.standard_normal((size, size), dtype=np.float32)
    return clutter, coarse, fine


def clutter_dots(factors: np.ndarray, clutter: np.ndarray) -> np.ndarray:
    """Which clutter candidates [N, C] are drawn: the first `clutter` ones clear of the object's circumcircle."""
    f = np.asarray(factors, dtype=np.float64).reshape(-1, len(FACTOR_NAMES))
    shape = np.rint(f[:, _F["shape"]]).astype(np.int64)
    reach = f[:, _F["size"]] * _CIRCUMRADIUS[shape] + CLUTTER_MARGIN
    x, y, r = _clutter_geometry(clutter)
    clear = np.hypot(x - f[:, _F["pos_x"], None], y - f[:, _F["pos_y"], None]) > reach[:, None] + r
    counts = np.rint(f[:, _F["clutter"]]).astype(np.int64)
    return clear & (np.cumsum(clear, axis=1) <= counts[:, None])


def _clutter_geometry(clutter: np.ndarray):
    """Dot centres (unit = image side) and radii from the candidates' uniforms."""
    c = np.asarray(clutter, dtype=np.float64)
    r = _lerp(CLUTTER_RADIUS, c[..., 2])
    return r + (1 - 2 * r) * c[..., 0], r + (1 - 2 * r) * c[..., 1], r


@functools.lru_cache(maxsize=8)
def _grids(size: int):
    """Pixel-centre coordinates (unit = image side) and the noise interpolation matrix for one size."""
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size
    return axis[None, None, :], axis[None, :, None], _interp_matrix(size, NOISE_GRID)


def render(factors: np.ndarray, clutter: np.ndarray, coarse: np.ndarray, fine: np.ndarray, size: int):
    """Render images [N, 3, H, W] in [0, 1] and label maps [N, H, W] from factors and per-item detail."""
    f = np.asarray(factors, dtype=np.float32).reshape(-1, len(FACTOR_NAMES))
    n, h = f.shape[0], size
    col = lambda name: f[:, _F[name]][:, None, None]  # noqa: E731
    xx, yy, m = _grids(h)

    # background: flat HSV colour + smooth texture + per-pixel grain (the fine detail);
    # two plain GEMMs instead of a stack of tiny ones
    bg = _hsv_to_rgb(f[:, _F["bg_hue"]], f[:, _F["bg_saturation"]], f[:, _F["bg_value"]]).astype(np.float32)
    smooth = np.tensordot(np.tensordot(coarse, m, axes=([2], [1])), m, axes=([1], [1])).transpose(0, 2, 1)
    texture = smooth * 0.8 + fine * 0.45
    texture *= col("bg_texture")
    img = bg[:, :, None, None] + texture[:, None]

    # clutter dots in the free space around the object, blended only inside small windows (a dot
    # covers a few pixels); dot k of every image in one step, so overlapping dots stack in order
    clutter_cov = np.zeros((n, h, h), dtype=np.float32)
    item, dot = np.nonzero(clutter_dots(f, clutter))
    if item.size:
        x_, y_, r_ = _clutter_geometry(clutter[item, dot])
        px, py, r = x_ * h - 0.5, y_ * h - 0.5, r_ * h  # pixel-index units
        half = int(math.ceil(CLUTTER_RADIUS[1] * h + 0.5))
        offsets = np.arange(-half, half + 1)
        cols = np.rint(px).astype(np.int64)[:, None, None] + offsets[None, None, :]
        rows = np.rint(py).astype(np.int64)[:, None, None] + offsets[None, :, None]
        cov = np.clip(r[:, None, None] + 0.5 - np.sqrt((cols - px[:, None, None]) ** 2 + (rows - py[:, None, None]) ** 2), 0, 1)
        valid = (cols >= 0) & (cols < h) & (rows >= 0) & (rows < h) & (cov > 0)
        shape3 = valid.shape
        which = np.broadcast_to(np.arange(item.size)[:, None, None], shape3)[valid]
        it = item[which]
        rank = np.arange(item.size) - np.searchsorted(item, item)  # the dot's rank within its image
        kk = rank[which]
        rr, cc_ = np.broadcast_to(rows, shape3)[valid], np.broadcast_to(cols, shape3)[valid]
        cv = cov[valid].astype(np.float32)
        value = np.where(f[:, _F["bg_value"]] > 0.5, CLUTTER_VALUE[1], CLUTTER_VALUE[0]).astype(np.float32)
        for k in range(int(kk.max()) + 1 if kk.size else 0):
            sel = np.nonzero(kk == k)[0]
            i_, r2, c2, v_ = it[sel], rr[sel], cc_[sel], cv[sel]
            cur = img[i_, :, r2, c2]
            img[i_, :, r2, c2] = cur + (value[i_][:, None] - cur) * v_[:, None]
            clutter_cov[i_, r2, c2] = np.maximum(clutter_cov[i_, r2, c2], v_)

    # the object: signed distance (unit = image side, > 0 inside) in polar coordinates about its centre
    dx, dy = xx - col("pos_x"), yy - col("pos_y")
    rho = np.sqrt(dx * dx + dy * dy)
    rot = np.deg2rad(col("rotation"))
    shape = np.rint(f[:, _F["shape"]]).astype(np.int64)
    radius = (f[:, _F["size"]] * _CIRCUMRADIUS[shape])[:, None, None]
    sd = np.empty((n, h, h), dtype=np.float32)
    for c_, name in enumerate(SHAPE_NAMES):
        idx = np.nonzero(shape == c_)[0]
        if idx.size == 0:
            continue
        r_, R = rho[idx], radius[idx]
        t_ = np.arctan2(dy[idx], dx[idx]) - rot[idx]
        if name == "ellipse":
            # first-order distance to the ellipse (major axis along the rotation): (1 - q) / |grad q|
            a_, b_ = R, R / ELLIPSE_ASPECT
            u_, v_ = r_ * np.cos(t_), r_ * np.sin(t_)
            q = np.sqrt((u_ / a_) ** 2 + (v_ / b_) ** 2)
            grad = np.sqrt((u_ / a_**2) ** 2 + (v_ / b_**2) ** 2) / np.maximum(q, 1e-6)
            sd[idx] = (1 - q) / np.maximum(grad, 1e-6)
            continue
        if name in _SHAPE_ANGLES:
            # fold the angle into one edge's sector; outside, the distance to that edge segment
            # (not its line) keeps corners from growing anti-aliasing spurs
            k = 4 if name == "square" else 3
            sector = 2 * math.pi / k
            phi = np.mod(t_ - _SHAPE_ANGLES[name] + sector / 2, sector) - sector / 2
            apothem = R * math.cos(math.pi / k)
            across = r_ * np.cos(phi) - apothem
            along = np.maximum(np.abs(r_ * np.sin(phi)) - R * math.sin(math.pi / k), 0)
            sd[idx] = np.where(across <= 0, -across, -np.sqrt(across * across + along * along))
        else:
            # star: fold into [0, 36 deg] from a tip (pointing up): inside is the triangle
            # (centre, tip T, inner vertex V); distance to the segment TV
            sector = 2 * math.pi / 5
            phi = np.abs(np.mod(t_ + math.pi / 2 + sector / 2, sector) - sector / 2)
            px, py = r_ * np.cos(phi) - R, r_ * np.sin(phi)  # relative to T = (R, 0)
            ex, ey = STAR_INNER * math.cos(sector / 2) - 1.0, STAR_INNER * math.sin(sector / 2)  # (V - T) / R
            norm = math.hypot(ex, ey)
            line = (-ey * px + ex * py) / norm  # > 0 on the centre's side
            t = np.clip((px * ex + py * ey) / (R * norm * norm), 0, 1)
            seg = np.sqrt((px - t * R * ex) ** 2 + (py - t * R * ey) ** 2)
            sd[idx] = np.where(line >= 0, line, -seg)
    cov = sd
    cov *= h
    cov += 0.5
    np.clip(cov, 0, 1, out=cov)

    # stripes in the object's own frame (they rotate with it), a one-pixel smooth edge against aliasing
    obj = np.broadcast_to(PALETTE[np.rint(f[:, _F["color"]]).astype(np.int64)][:, :, None, None], img.shape).copy()
    idx = np.nonzero(f[:, _F["texture"]] > 0.5)[0]
    if idx.size:
        period = np.maximum(0.6 * col("size")[idx], 3.0 / h)
        u = dx[idx] * np.cos(rot[idx]) + dy[idx] * np.sin(rot[idx])
        stripe = np.clip(np.sin((2 * math.pi) * u / period) * (period * (h / math.pi)), -1, 1)
        obj[idx] *= (1.0 - 0.275 * (stripe + 1.0))[:, None]
    obj -= img
    obj *= cov[:, None]
    img += obj

    # lighting: a linear gradient towards the light, over the whole scene
    a = np.deg2rad(col("light_angle"))
    light = (xx - 0.5) * (2 * np.cos(a)) + (yy - 0.5) * (2 * np.sin(a))
    light *= col("light_strength")
    light += 1.0
    img *= light[:, None]
    np.clip(img, 0.0, 1.0, out=img)

    label = np.where(cov >= 0.5, shape[:, None, None] + 1, np.where(clutter_cov >= 0.5, CLUTTER_LABEL, 0))
    return img, label


class Shapes(Dataset):
    """Procedural shapes with known factors, binary attributes, label maps and correlated attribute pairs."""
    # Item i is a pure function of (seed, i, size, correlation): a numpy Generator seeded with
    # [seed, i] draws 24 uniforms for the factors, then the item's fine detail (clutter dots and
    # background noise). `correlation` is a rate for the default pair ("red", "large"), a list of
    # (name_a, name_b, rate), or None (all attributes independent). For a pair, both attributes
    # keep probability 1/2 and agree with probability `rate`: P(b | a) = P(a | b) = P(a == b) = rate,
    # so 0.5 is independence and rates below 0.5 anti-correlate. Pairs must form a tree; pairable
    # attributes are SWITCH_ATTRIBUTES (the is_<shape> ones are 1/4 each and can't be paired).

    attribute_names = list(ATTRIBUTE_NAMES)
    factor_names = list(FACTOR_NAMES)
    label_names = list(LABEL_NAMES)
    shape_names = list(SHAPE_NAMES)
    color_names = list(COLOR_NAMES)
    structure_attributes = list(STRUCTURE_ATTRIBUTES)
    reading_groups = {k: list(v) for k, v in READING_GROUPS.items()}
    appearance_attributes = list(APPEARANCE_ATTRIBUTES)
    structure_factors = list(STRUCTURE_FACTORS)
    appearance_factors = list(APPEARANCE_FACTORS)
    low_level_attributes = appearance_attributes  # older names of the two tiers
    high_level_attributes = structure_attributes

    def __init__(self, size: int = 32, seed: int = 0, length: int = 100_000, correlation=0.8):
        if int(size) < 8:
            raise ValueError(f"size must be at least 8 pixels, got {size}")
        if int(seed) < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        if int(length) < 1:
            raise ValueError(f"length must be positive, got {length}")
        self.size, self.seed, self.length = int(size), int(seed), int(length)
        self.correlated_pairs = _parse_correlation(correlation)
        self._plan = _sampling_plan(self.correlated_pairs)

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return (
            f"Shapes(size={self.size}, seed={self.seed}, length={self.length}, "
            f"correlated_pairs={self.correlated_pairs})"
        )

    def _indices(self, indices) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        idx = np.where(idx < 0, idx + self.length, idx)
        if idx.size and (idx.min() < 0 or idx.max() >= self.length):
            raise IndexError(f"index out of range for Shapes of length {self.length}: {indices}")
        return idx

    def _generators(self, idx):
        return [np.random.default_rng([self.seed, int(i)]) for i in idx]

    def factors(self, indices) -> torch.Tensor:
        """Factors [N, F] (float32, order factor_names) of the given items, without rendering."""
        idx = self._indices(indices)
        u = np.stack([g.random(_N_UNIFORM) for g in self._generators(idx)]) if idx.size else np.zeros((0, _N_UNIFORM))
        return torch.from_numpy(sample_factors(u, self._plan).astype(np.float32))

    def _render(self, factors: np.ndarray, gens) -> tuple[np.ndarray, np.ndarray]:
        detail = [_draw_detail(g, self.size) for g in gens]
        clutter, coarse, fine = (np.stack(d) for d in zip(*detail))
        return render(factors, clutter, coarse, fine, self.size)

    def batch(self, indices) -> dict[str, torch.Tensor]:
        """Items `indices` as stacked tensors: image [N,3,H,W], attributes [N,A], factors [N,F], label_map, index."""
        idx = self._indices(indices)
        if idx.size == 0:
            raise ValueError("batch() needs at least one index")
        gens = self._generators(idx)
        u = np.stack([g.random(_N_UNIFORM) for g in gens])
        factors = sample_factors(u, self._plan).astype(np.float32)
        img, label = self._render(factors, gens)
        factors_t = torch.from_numpy(factors)
        return {
            "image": torch.from_numpy(img).mul_(2).sub_(1),
            "attributes": torch.from_numpy(_attributes_np(factors)),
            "factors": factors_t,
            "label_map": torch.from_numpy(label),
            "index": torch.from_numpy(idx),
        }

    def __getitem__(self, index: int) -> dict:
        """One item: image [3,H,W] in [-1,1], attributes [A] float 0/1, factors [F] float32, label_map [H,W] long."""
        out = self.batch([index])
        item = {k: v[0] for k, v in out.items()}
        item["index"] = int(item["index"])
        return item

    def __getitems__(self, indices) -> list[dict]:
        """A list of items rendered in one vectorised batch (DataLoader's batched fetch uses this)."""
        out = self.batch(indices)
        items = [{k: v[i] for k, v in out.items()} for i in range(len(out["index"]))]
        for item in items:
            item["index"] = int(item["index"])
        return items

    def factors_tensor(self, factors) -> torch.Tensor:
        """A dict {factor name: value or values} or a tensor [F] / [N, F] as a float32 tensor [N, F]."""
        if isinstance(factors, Mapping):
            missing = [k for k in FACTOR_NAMES if k not in factors]
            unknown = [k for k in factors if k not in _F]
            if missing or unknown:
                raise KeyError(f"factor dict: missing {missing}, unknown {unknown}; expected {list(FACTOR_NAMES)}")
            cols = [torch.as_tensor(factors[k], dtype=torch.float32).reshape(-1) for k in FACTOR_NAMES]
            return torch.stack(torch.broadcast_tensors(*cols), dim=1)
        f = torch.as_tensor(factors, dtype=torch.float32)
        if f.shape[-1] != len(FACTOR_NAMES) or f.dim() > 2:
            raise ValueError(f"factors must have shape [F] or [N, F] with F={len(FACTOR_NAMES)}, got {tuple(f.shape)}")
        return f.reshape(-1, len(FACTOR_NAMES))

    def factors_dict(self, factors) -> dict[str, float]:
        """A factor tensor [F] as a dict of python floats."""
        f = self.factors_tensor(factors)
        if f.shape[0] != 1:
            raise ValueError("factors_dict takes one item's factors")
        return {name: float(v) for name, v in zip(FACTOR_NAMES, f[0].tolist())}

    def render_factors(self, factors, index=0) -> dict[str, torch.Tensor]:
        """Render explicit factors with item `index`'s fine detail: {'image' [N,3,H,W] in [-1,1], 'label_map' [N,H,W]}."""
        # With the factors of item i and index=i this reproduces item i exactly; edited factors
        # (see `edit_factors`) give the counterfactual image with the same clutter and noise.
        f = self.factors_tensor(factors)
        idx = self._indices(index)
        if idx.size == 1 and f.shape[0] > 1:
            idx = np.repeat(idx, f.shape[0])
        if idx.size != f.shape[0]:
            raise ValueError(f"got {f.shape[0]} factor rows but {idx.size} indices")
        gens = self._generators(idx)
        for g in gens:
            g.random(_N_UNIFORM)  # the detail comes after the factor uniforms in each item's stream
        img, label = self._render(f.numpy(), gens)
        return {"image": torch.from_numpy(img).mul_(2).sub_(1), "label_map": torch.from_numpy(label)}

    @staticmethod
    def attributes_from_factors(factors) -> torch.Tensor:
        """Binary attributes [N, A] implied by factors [N, F]."""
        return attributes_from_factors(factors)

    def edit_factors(self, factors, name: str, value: bool | None = None) -> torch.Tensor:
        """Set attribute `name` to `value` (None: flip) by changing only the factor that defines it."""
        if name not in _A:
            raise KeyError(f"unknown attribute {name!r}; expected one of {list(ATTRIBUTE_NAMES)}")
        f = self.factors_tensor(factors).clone().double()
        current = attributes_from_factors(f)[:, _A[name]].bool()
        target = ~current if value is None else torch.full_like(current, bool(value))
        change = current != target
        if not change.any():
            return f.float()
        g = f[change]
        on = target[change]
        c = lambda n: g[:, _F[n]]  # noqa: E731

        def remap(x, src, dst):
            return dst[0] + (x - src[0]) / (src[1] - src[0]) * (dst[1] - dst[0])

        if name == "red":
            g[:, _F["color"]] = torch.where(on, 0.0, float(COLOR_NAMES.index("blue")))
        elif name == "striped":
            g[:, _F["texture"]] = on.double()
        elif name == "bright_background":
            g[:, _F["bg_value"]] = 1 - c("bg_value")
        elif name == "lit_from_left":
            g[:, _F["light_angle"]] = (180.0 - c("light_angle")) % 360.0
        elif name == "cluttered":
            g[:, _F["clutter"]] = torch.where(on, float(sum(CLUTTER_COUNT) // 2), 0.0)
        elif name == "large":
            g[:, _F["size"]] = torch.where(
                on, remap(c("size"), SIZE_SMALL, SIZE_LARGE), remap(c("size"), SIZE_LARGE, SIZE_SMALL)
            )
        elif name == "left_side":
            g[:, _F["pos_x"]] = 1 - c("pos_x")
        elif name == "top_side":
            g[:, _F["pos_y"]] = 1 - c("pos_y")
        elif name == "rotated":
            r = c("rotation")
            sign = torch.where(r < 0, -1.0, 1.0)
            g[:, _F["rotation"]] = torch.where(
                on,
                sign * remap(r.abs(), (0.0, ROT_SMALL), ROT_LARGE),
                sign * remap(r.abs().clamp(ROT_LARGE[0], ROT_LARGE[1]), ROT_LARGE, (0.0, ROT_SMALL)),
            )
        else:
            k = SHAPE_NAMES.index(name[3:])
            g[:, _F["shape"]] = torch.where(on, float(k), float((k + 1) % len(SHAPE_NAMES)))
        f[change] = g
        return f.float()
