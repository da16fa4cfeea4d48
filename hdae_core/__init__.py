"""hdae: Hierarchical Diffusion Autoencoders (Lu et al., WACV 2024) as an analysis suite."""
from .config import PRESETS, VARIANTS, DiffusionConfig, ModelConfig
from .model import HDAE

__all__ = ["HDAE", "ModelConfig", "DiffusionConfig", "PRESETS", "VARIANTS"]
__version__ = "0.1.0"
