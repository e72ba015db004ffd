"""Content hashes: sha256 of the raw bytes (exact duplicates) and 64-bit perceptual hashes (near duplicates).

pHash follows the usual definition (grey 32 x 32 LANCZOS thumbnail, 2-D DCT-II, the 8 x 8 lowest frequencies
compared with their median); dHash compares horizontally adjacent pixels of a 9 x 8 thumbnail. Both are returned as
Python ints in [0, 2**64) with bit 63 = first coefficient; distance is the Hamming distance of the two ints.
"""

from __future__ import annotations

import functools
import hashlib
import itertools

import numpy as np
from PIL import Image

__all__ = ["NearDuplicateIndex", "dhash", "hamming", "phash", "sha256_hex"]


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of the raw file bytes."""
    return hashlib.sha256(data).hexdigest()


@functools.cache
def _dct_matrix(n: int) -> np.ndarray:
    # Orthonormal DCT-II basis: D[k, i] = a_k cos(pi (2i + 1) k / 2n).
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    matrix = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    matrix[0] /= np.sqrt(2.0)
    return matrix


def _bits_to_int(bits: np.ndarray) -> int:
    value = 0
    for bit in bits.reshape(-1):
        value = (value << 1) | int(bit)
    return value


def phash(image: Image.Image, *, hash_size: int = 8, highfreq_factor: int = 4) -> int:
    """Perceptual hash (DCT) of an image as an int with ``hash_size**2`` bits."""
    size = hash_size * highfreq_factor
    grey = np.asarray(image.convert("L").resize((size, size), Image.Resampling.LANCZOS), dtype=np.float64)
    dct = _dct_matrix(size)
    coefficients = dct @ grey @ dct.T
    low = coefficients[:hash_size, :hash_size]
    return _bits_to_int(low > np.median(low))


def dhash(image: Image.Image, *, hash_size: int = 8) -> int:
    """Difference hash: is each pixel brighter than its right neighbour, on a (hash_size+1) x hash_size thumbnail."""
    grey = np.asarray(image.convert("L").resize((hash_size + 1, hash_size), Image.Resampling.LANCZOS), dtype=np.int16)
    return _bits_to_int(grey[:, 1:] > grey[:, :-1])


def hamming(a: int, b: int) -> int:
    """Number of differing bits."""
    return (a ^ b).bit_count()


class NearDuplicateIndex:
    """Finds 64-bit hashes within Hamming ``radius`` of any hash added before.

    Pigeonhole multi-index: split the 64 bits into ``radius + 1`` bands; two hashes within ``radius`` bits agree
    exactly on at least one band, so only hashes sharing a band value are compared.
    """

    def __init__(self, radius: int, bits: int = 64) -> None:
        if not 0 <= radius < bits:
            raise ValueError(f"near-duplicate radius must be in [0, {bits}), got {radius}")
        self.radius = radius
        bands = radius + 1
        edges = [round(i * bits / bands) for i in range(bands + 1)]
        self._bands = [(lo, (1 << (hi - lo)) - 1) for lo, hi in itertools.pairwise(edges)]
        self._tables: list[dict[int, list[int]]] = [{} for _ in self._bands]
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def find(self, value: int) -> int | None:
        """A stored hash within the radius of ``value``, or ``None``."""
        for (shift, mask), table in zip(self._bands, self._tables):
            for candidate in table.get((value >> shift) & mask, ()):
                if hamming(candidate, value) <= self.radius:
                    return candidate
        return None

    def add(self, value: int) -> None:
        """Store a hash."""
        for (shift, mask), table in zip(self._bands, self._tables):
            table.setdefault((value >> shift) & mask, []).append(value)
        self._size += 1
