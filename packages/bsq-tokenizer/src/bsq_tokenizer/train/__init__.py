"""Tokenizer training (``pip install 'bsq-tokenizer[train]'`` for MLflow / Ray); the loop itself needs only torch."""

from bsq_tokenizer.train.perceptual import PatchDiscriminator, PerceptualLoss, hinge_d_loss, hinge_g_loss
from bsq_tokenizer.train.quantize import QuantizeOutput, entropy_penalty, quantize_for_training
from bsq_tokenizer.train.tracking import MLflowTracker, Tracker, flatten, image_grid, make_tracker
from bsq_tokenizer.train.trainer import TokenizerTrainConfig, TokenizerTrainer

__all__ = [
    "MLflowTracker",
    "PatchDiscriminator",
    "PerceptualLoss",
    "QuantizeOutput",
    "TokenizerTrainConfig",
    "TokenizerTrainer",
    "Tracker",
    "entropy_penalty",
    "flatten",
    "hinge_d_loss",
    "hinge_g_loss",
    "image_grid",
    "make_tracker",
    "quantize_for_training",
]
