"""The Infinity transformer, split along concepts: text, attention + RoPE-2D, KV cache, blocks, head."""

from bitwise_ar.model.attention import TextMemory
from bitwise_ar.model.kv_cache import KVCache
from bitwise_ar.model.text import PackedText
from bitwise_ar.model.transformer import Condition, InfinityTransformer

__all__ = ["Condition", "InfinityTransformer", "KVCache", "PackedText", "TextMemory"]
