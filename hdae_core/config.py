"""Configuration dataclasses, named presets and JSON io."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Iterable



@dataclass(frozen=True)
class Variant:
    """One model variant of the paper's Fig. 2 / Fig. 5: which encoder, whether codes are per level, how wide."""

    name: str
    label: str  # the paper's name, used in every figure and table
    encoder: str  # "half_unet" (DiffAE's) or "unet"
    hierarchical: bool  # one code per decoder level (z^l to level l) instead of one code for every block
    wide: bool = False  # one code L·D wide (the paper's DAE(2560) at 128 px)


# the one table of variants: a new variant is a row here plus its encoder in model.build_encoder
VARIANT_TABLE = {v.name: v for v in (
    Variant("dae", "DAE", "half_unet", False),
    Variant("dae_wide", "DAE(wide)", "half_unet", False, wide=True),
    Variant("dae_u", "DAE(U)", "unet", False),
    Variant("hdae_e", "HDAE(E)", "half_unet", True),
    Variant("hdae_u", "HDAE(U)", "unet", True),
)}
VARIANTS = tuple(VARIANT_TABLE)
VARIANT_LABELS = {name: v.label for name, v in VARIANT_TABLE.items()}


_SCALARS = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def _type_error(cls, name: str, want: str, value: Any) -> TypeError:
    return TypeError(f"{cls.__name__} field '{name}': expected {want}, got {type(value).__name__} {value!r}")


def check_field_type(cls, name: str, annotation: str, value: Any) -> None:
    """Raise a TypeError naming the field unless a JSON value fits its annotation (int, float, str, bool,
    tuple[X, ...] as a list, X | None). Bools are not numbers here, and 32.0 is not an int."""
    ann = annotation.replace(" ", "")
    if ann.endswith("|None"):
        if value is None:
            return
        ann = ann[: -len("|None")]
    if ann.startswith("tuple[") and ann.endswith(",...]"):
        item = ann[len("tuple["):-len(",...]")]
        if not isinstance(value, (list, tuple)):
            raise _type_error(cls, name, f"a list of {item}", value)
        for v in value:
            if item in _SCALARS and (not isinstance(v, _SCALARS[item]) or (item != "bool" and isinstance(v, bool))):
                raise _type_error(cls, name, f"a list of {item}", value)
        return
    if ann in _SCALARS:
        if not isinstance(value, _SCALARS[ann]) or (ann != "bool" and isinstance(value, bool)):
            raise _type_error(cls, name, ann, value)


def strict_from_dict(cls, d: dict[str, Any], optional: Iterable[str] | None = None):
    """Build a config dataclass from JSON, refusing fields it does not know (a config from elsewhere) and
    values of the wrong type. With ``optional`` given, every other field is required: a config that
    lacks one would otherwise load with today's default, which may not be what it was written with."""
    if not isinstance(d, dict):
        raise TypeError(f"{cls.__name__}: expected a JSON object, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(d) - set(fields)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
    if optional is not None:
        missing = sorted(set(fields) - set(d) - set(optional))
        if missing:
            raise ValueError(f"{cls.__name__}: required field(s) {missing} missing")
    for name, value in d.items():
        check_field_type(cls, name, str(fields[name].type), value)
    return cls(**d)


def _tuple(v):
    return tuple(v) if isinstance(v, (list, tuple)) else v


def _jsonable(v):
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


class JsonConfig:
    """JSON io shared by every config dataclass: ``to_dict`` gives JSON values (tuples as lists, nested configs as
    objects); ``from_dict`` is ``strict_from_dict``: unknown fields and wrong types refused, and with
    ``OPTIONAL_FIELDS`` set every field outside it required (None: a missing field takes its default)."""

    OPTIONAL_FIELDS: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        return strict_from_dict(cls, d, optional=cls.OPTIONAL_FIELDS)


PREDICTIONS = ("eps", "v")
BETA_SCHEDULES = ("linear",)


@dataclass(frozen=True)
class ModelConfig(JsonConfig):
    """The autoencoder's architecture; field names follow DiffAE's where they mean the same."""

    image_size: int = 32
    in_channels: int = 3
    model_channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 2)
    enc_channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    attention_resolutions: tuple[int, ...] = (16,)
    num_res_blocks: int = 2
    enc_num_res_blocks: int | None = None
    num_heads: int = 1
    embed_channels: int = 512
    code_dim: int = 512  # width of one level's code; dae_wide's single code is L·code_dim wide
    dropout: float = 0.1
    variant: str = "hdae_u"
    # what the decoder outputs: "eps" (ε, DiffAE's and the paper's choice) or "v" = √ᾱ ε − √(1−ᾱ) x0
    # (Salimans & Ho 2022), whose identity path makes x̂0 at high noise a direct output of the network
    prediction: str = "eps"
    # GroupNorm groups per layer: gcd(norm_groups, C). DiffAE uses 32, which leaves a narrow layer
    # (C ≤ 32) one channel per group: every norm there discards each channel's mean, so the pooled
    # code of a narrow encoder barely sees global colour (README, "Narrow models and GroupNorm")
    norm_groups: int = 32

    def __post_init__(self):
        for name in ("channel_mult", "enc_channel_mult", "attention_resolutions"):
            object.__setattr__(self, name, _tuple(getattr(self, name)))
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; expected one of {', '.join(VARIANTS)}")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {self.prediction!r}; expected one of {', '.join(PREDICTIONS)}")
        for name in ("image_size", "in_channels", "model_channels", "num_res_blocks", "num_heads",
                     "embed_channels", "code_dim", "norm_groups"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("channel_mult", "enc_channel_mult"):
            if not getattr(self, name) or min(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a non-empty list of positive multipliers, got {list(getattr(self, name))}")
        if self.enc_num_res_blocks is not None and self.enc_num_res_blocks < 1:
            raise ValueError(f"enc_num_res_blocks must be at least 1 (or null), got {self.enc_num_res_blocks}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if len(self.channel_mult) < 2:
            raise ValueError(f"channel_mult {self.channel_mult} gives {len(self.channel_mult)} level; HDAE needs at least 2")
        if self.image_size % 2 ** (len(self.channel_mult) - 1):
            raise ValueError(
                f"image_size {self.image_size} is not divisible by 2^{len(self.channel_mult) - 1} "
                f"(channel_mult {self.channel_mult} halves the resolution {len(self.channel_mult) - 1} times)"
            )

    @property
    def decoder_levels(self) -> int:
        """Number of decoder resolution levels (the hierarchy depth L)."""
        return len(self.channel_mult)

    @property
    def code_levels(self) -> int:
        """Levels of the codes tensor: L for hdae_*, 1 for dae*."""
        return self.decoder_levels if VARIANT_TABLE[self.variant].hierarchical else 1

    @property
    def code_width(self) -> int:
        """Width D of one row of the codes tensor."""
        return self.code_dim * self.decoder_levels if VARIANT_TABLE[self.variant].wide else self.code_dim

    @property
    def level_resolutions(self) -> tuple[int, ...]:
        """Pixel resolution of each decoder level, finest first."""
        return tuple(self.image_size // 2**i for i in range(self.decoder_levels))

    @classmethod
    def preset(cls, name: str, variant: str = "hdae_u", **overrides) -> "ModelConfig":
        """A named preset (see ``PRESETS``) with the given variant and field overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
        return dataclasses.replace(PRESETS[name], variant=variant, **overrides)

    def replace(self, **kw) -> "ModelConfig":
        return dataclasses.replace(self, **kw)

    # from JSON every field is required but these, added after format 1 with the default configs before meant
    OPTIONAL_FIELDS = ("norm_groups",)


@dataclass(frozen=True)
class DiffusionConfig(JsonConfig):
    """The noise schedule: linear β from 1e-4 to 0.02 over T steps (scaled by 1000/T, as DiffAE)."""

    T: int = 1000
    beta_schedule: str = "linear"

    def __post_init__(self):
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"unsupported beta_schedule {self.beta_schedule!r}; expected one of {', '.join(BETA_SCHEDULES)}")
        if self.T < 1:
            raise ValueError(f"T must be at least 1, got {self.T}")

    OPTIONAL_FIELDS = ()


@dataclass
class TrainConfig(JsonConfig):
    """Everything ``train`` needs; written as ``train.json`` beside every checkpoint."""

    model: ModelConfig = field(default_factory=lambda: ModelConfig.preset("shapes32"))
    out: str = "runs/default"
    data: str | None = None  # None: the built-in shapes; a folder of images or a DiffAE LMDB
    steps: int = 1000
    batch_size: int = 32  # global, split over ranks
    lr: float = 1e-4
    ema_decay: float = 0.9999
    ema_warmup: bool = True  # decay min(ema_decay, (1 + n) / (10 + n)) so short runs give a usable EMA
    grad_clip: float = 1.0
    seed: int = 0
    amp: str = "auto"  # auto (bf16 on CUDA, off on CPU) | bf16 | fp16 | none
    channels_last: str = "auto"  # auto (on for CUDA) | on | off
    compile: bool = False
    compile_mode: str = "default"  # torch.compile mode: default | reduce-overhead (CUDA graphs) | max-autotune
    device: str | None = None
    num_workers: int = 0
    cache_data: str = "auto"  # auto (on for the built-in shapes on CUDA) | on | off: render the set once into device memory
    max_minutes: float = 0.0  # stop after this much wall time with a checkpoint and an evaluation; 0: no limit
    log_every: int = 50
    eval_every: int = 1000
    eval_size: int = 64
    eval_steps: int = 20
    ckpt_every: int = 1000
    grid_every: int = 0  # 0: at every evaluation
    progress: bool = True
    tensorboard: bool = True
    on_bad_image: str = "error"  # error | skip: what an undecodable or non-RGB image in `data` does
    convert_images: bool = False  # convert grayscale / RGBA / palette images to RGB instead of refusing them
    diverge_factor: float = 1000.0  # a loss this many times its running level stops the run (0: only non-finite)

    def __post_init__(self):
        for name in ("steps", "batch_size", "log_every", "ckpt_every", "eval_size", "eval_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("eval_every", "num_workers", "grid_every", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")
        if not (math.isfinite(self.max_minutes) and self.max_minutes >= 0):
            raise ValueError(f"max_minutes must be a finite number >= 0, got {self.max_minutes!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """From ``train.json``: unknown fields and wrong types refused; a field it lacks (a run written before
        that option existed) takes its default."""
        if not isinstance(d, dict) or not isinstance(d.get("model"), dict):
            raise TypeError("TrainConfig: expected a JSON object with a 'model' object")
        rest = {k: v for k, v in d.items() if k != "model"}
        return dataclasses.replace(strict_from_dict(cls, rest), model=ModelConfig.from_dict(d["model"]))


PRESETS: dict[str, ModelConfig] = {
    # tests: 16 px, a training step in tens of milliseconds on a CPU
    "tiny": ModelConfig(
        image_size=16, model_channels=32, channel_mult=(1, 2), enc_channel_mult=(1, 2, 2),
        attention_resolutions=(8,), num_res_blocks=1, embed_channels=64, code_dim=32, dropout=0.0,
    ),
    # the shipped demo models on the built-in shapes. They predict v, not ε as DiffAE and HDAE do: at this
    # scale an ε decoder never learns to follow its codes from a random x_T (README, "ε or v prediction").
    # Their 16- and 32-channel layers norm in 8 groups, not DiffAE's 32 (README, "Narrow models and GroupNorm")
    "shapes32": ModelConfig(
        image_size=32, model_channels=16, channel_mult=(1, 2, 2, 2), enc_channel_mult=(1, 2, 2, 2, 2),
        attention_resolutions=(8,), num_res_blocks=1, embed_channels=256, code_dim=128, dropout=0.0,
        prediction="v", norm_groups=8,
    ),
    # DiffAE's architecture at 32 px: the speed comparison's reference
    "diffae32": ModelConfig(
        image_size=32, model_channels=32, channel_mult=(1, 2, 2), enc_channel_mult=(1, 2, 2, 2),
        attention_resolutions=(16,), num_res_blocks=2, num_heads=1, embed_channels=512, code_dim=512, dropout=0.1,
    ),
    # DiffAE's published FFHQ autoencoders
    "ffhq64": ModelConfig(
        image_size=64, model_channels=64, channel_mult=(1, 2, 4, 8), enc_channel_mult=(1, 2, 4, 8, 8),
        attention_resolutions=(16,), num_res_blocks=2, embed_channels=512, code_dim=512, dropout=0.1,
    ),
    "ffhq128": ModelConfig(
        image_size=128, model_channels=128, channel_mult=(1, 1, 2, 3, 4), enc_channel_mult=(1, 1, 2, 3, 4, 4),
        attention_resolutions=(16,), num_res_blocks=2, embed_channels=512, code_dim=512, dropout=0.1,
    ),
    "ffhq256": ModelConfig(
        image_size=256, model_channels=128, channel_mult=(1, 1, 2, 2, 4, 4), enc_channel_mult=(1, 1, 2, 2, 4, 4, 4),
        attention_resolutions=(16,), num_res_blocks=2, embed_channels=512, code_dim=512, dropout=0.1,
    ),
}
