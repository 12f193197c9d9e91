"""hhrnet: HigherHRNet (Cheng et al., CVPR 2020) reproduced as a compact PyTorch package."""

from .config import Config, ModelConfig, preset
from .model import HigherHRNet, count_flops, count_parameters

__all__ = ["Config", "ModelConfig", "HigherHRNet", "preset", "count_parameters", "count_flops"]
__version__ = "0.1.0"
