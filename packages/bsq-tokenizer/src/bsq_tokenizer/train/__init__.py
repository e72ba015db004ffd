"""Tokenizer training (``pip install 'bsq-tokenizer[train]'``): the loop, its run config and data; ``python -m
bsq_tokenizer.train CONFIG.toml [overrides] [--ray]`` runs it (tracking, checkpoints and Ray via ``infinity_run``)."""

from bsq_tokenizer.train.perceptual import PatchDiscriminator, PerceptualLoss, hinge_d_loss, hinge_g_loss
from bsq_tokenizer.train.quantize import QuantizeOutput, entropy_penalty, quantize_for_training
from bsq_tokenizer.train.trainer import TokenizerTrainConfig, TokenizerTrainer

__all__ = [
    "PatchDiscriminator",
    "PerceptualLoss",
    "QuantizeOutput",
    "TokenizerTrainConfig",
    "TokenizerTrainer",
    "entropy_penalty",
    "hinge_d_loss",
    "hinge_g_loss",
    "quantize_for_training",
]
