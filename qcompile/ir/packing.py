"""Bit-packing of weight codes into uint32 words, LSB first.

Codes of ``b`` bits are laid out ``32 // b`` to a word, the first code in the lowest bits;
no code straddles two words (3-, 5-, 6- and 7-bit codes leave the top bits of each word
zero), so a kernel extracts code ``i`` as ``(word[i // n] >> (b * (i % n))) & (2^b - 1)``
with ``n = 32 // b``.

>>> words = pack_codes(np.array([1, 2, 3, 0, 1], dtype=np.uint8), 2)
>>> [hex(w) for w in words]
['0x139']
>>> unpack_codes(words, 2, 5).tolist()
[1, 2, 3, 0, 1]

A layer with a width per output channel is packed row by row (:func:`pack_rows`): row ``r``'s
codes at its own width ``b_r``, each row starting on a word boundary, so a kernel finds row
``r`` at word ``sum(words of rows < r)`` and reads it exactly as a flat layer of ``b_r`` bits.
"""

from __future__ import annotations

import numpy as np


def codes_per_word(bits: int) -> int:
    return 32 // bits


def packed_words(count: int, bits: int) -> int:
    n = codes_per_word(bits)
    return (count + n - 1) // n


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Flatten ``codes`` (C order) and pack them into uint32 words."""
    if not 1 <= bits <= 8:
        raise ValueError(f"codes must be 1..8 bits, got {bits}")
    flat = np.asarray(codes).reshape(-1).astype(np.uint64)
    if flat.size and int(flat.max()) >= 1 << bits:
        raise ValueError(f"a code exceeds {bits} bits")
    n = codes_per_word(bits)
    padded = np.zeros(packed_words(flat.size, bits) * n, dtype=np.uint64)
    padded[: flat.size] = flat
    shifts = (np.arange(n, dtype=np.uint64) * np.uint64(bits)).reshape(1, n)
    return (padded.reshape(-1, n) << shifts).sum(axis=1).astype(np.uint32)


def unpack_codes(words: np.ndarray, bits: int, count: int) -> np.ndarray:
    """The first ``count`` codes of ``words`` as uint8."""
    n = codes_per_word(bits)
    shifts = (np.arange(n, dtype=np.uint32) * np.uint32(bits)).reshape(1, n)
    mask = np.uint32((1 << bits) - 1)
    codes = (np.asarray(words, dtype=np.uint32).reshape(-1, 1) >> shifts) & mask
    return codes.reshape(-1)[:count].astype(np.uint8)


def padding_is_zero(words: np.ndarray, bits: int, count: int) -> bool:
    """True when every bit beyond the ``count`` codes (and above each word's codes) is 0:
    a packed array has exactly one valid encoding."""
    return bool(np.array_equal(pack_codes(unpack_codes(words, bits, count), bits), words))


def row_words(per_row: int, row_bits: tuple[int, ...] | list[int]) -> list[int]:
    """Words each row takes when ``per_row`` codes are packed at its width."""
    return [packed_words(per_row, b) for b in row_bits]


def pack_rows(codes: np.ndarray, row_bits: tuple[int, ...] | list[int]) -> np.ndarray:
    """Pack ``codes`` (``[rows, ...]``) row by row, row ``r`` at ``row_bits[r]`` bits, each row
    padded to whole words.

    >>> words = pack_rows(np.array([[3, 1, 2], [1, 0, 1]], dtype=np.uint8), (2, 1))
    >>> [hex(w) for w in words]
    ['0x27', '0x5']
    >>> unpack_rows(words, (2, 1), 3).tolist()
    [[3, 1, 2], [1, 0, 1]]
    """
    rows = np.asarray(codes).reshape(len(row_bits), -1)
    parts = [pack_codes(row, b) for row, b in zip(rows, row_bits, strict=True)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint32)


def unpack_rows(
    words: np.ndarray, row_bits: tuple[int, ...] | list[int], per_row: int
) -> np.ndarray:
    """Codes packed by :func:`pack_rows` as uint8 ``[rows, per_row]``."""
    sizes = row_words(per_row, row_bits)
    if sum(sizes) != np.asarray(words).size:
        raise ValueError(
            f"{len(row_bits)} rows need {sum(sizes)} words, got {np.asarray(words).size}"
        )
    starts = np.cumsum([0, *sizes])
    out = np.zeros((len(row_bits), per_row), dtype=np.uint8)
    for r, b in enumerate(row_bits):
        out[r] = unpack_codes(words[starts[r] : starts[r + 1]], b, per_row)
    return out


def rows_padding_is_zero(
    words: np.ndarray, row_bits: tuple[int, ...] | list[int], per_row: int
) -> bool:
    """:func:`padding_is_zero` for a row-wise packing: one valid encoding per row."""
    return bool(np.array_equal(pack_rows(unpack_rows(words, row_bits, per_row), row_bits), words))
