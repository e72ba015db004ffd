"""bitwise_ar: the Infinity bitwise next-scale autoregressive text-to-image transformer.

Weight-compatible with the official FoundationVision/Infinity checkpoints. Heavy optional pieces (the T5 text encoder
via ``transformers``, training with Ray/MLflow) are imported only where they are used.
"""

from bitwise_ar.config import PRESETS, InfinityConfig, from_official_config, get_preset
from bitwise_ar.layout import ScaleLayout
from bitwise_ar.model import InfinityTransformer, PackedText
from bitwise_ar.pipeline import EditOutput, InfinityPipeline, PipelineOutput
from bitwise_ar.sampling import SamplingConfig, iter_scales, sample

__all__ = [
    "PRESETS",
    "EditOutput",
    "InfinityConfig",
    "InfinityPipeline",
    "InfinityTransformer",
    "PackedText",
    "PipelineOutput",
    "SamplingConfig",
    "ScaleLayout",
    "from_official_config",
    "get_preset",
    "iter_scales",
    "sample",
]
__version__ = "0.1.0"
