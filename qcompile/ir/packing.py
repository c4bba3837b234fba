"""Bit-packing of weight codes into uint32 words: a dense LSB-first bit stream.

Code ``i`` of ``b`` bits occupies bits ``b*i .. b*i + b - 1`` of the stream, bit ``j`` of the
stream being bit ``j % 32`` of word ``j // 32``. Nothing is wasted between codes: a 3-bit code
may straddle two words (1-, 2-, 4- and 8-bit codes never do). A kernel reads code ``i`` as

    lo = b*i;  w = word[lo // 32] | word[lo // 32 + 1] << 32   (64-bit window)
    code = (w >> (lo % 32)) & (2^b - 1)

and needs the second word only when ``lo % 32 + b > 32``.

>>> words = pack_codes(np.array([1, 2, 3, 0, 1], dtype=np.uint8), 2)
>>> [hex(w) for w in words]
['0x139']
>>> unpack_codes(pack_codes(np.arange(11, dtype=np.uint8) % 8, 3), 3, 11).tolist()
[0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2]

A layer with a width per output channel is packed row by row (:func:`pack_rows`): row ``r``'s
codes at its own width ``b_r``, each row starting on a word boundary, so a kernel finds row
``r`` at word ``sum(words of rows < r)`` and reads it exactly as a flat layer of ``b_r`` bits.
"""

from __future__ import annotations

import numpy as np


def packed_words(count: int, bits: int) -> int:
    """Words holding ``count`` codes of ``bits`` bits."""
    return (count * bits + 31) // 32


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Flatten ``codes`` (C order) and pack them into uint32 words."""
    if not 1 <= bits <= 8:
        raise ValueError(f"codes must be 1..8 bits, got {bits}")
    flat = np.asarray(codes).reshape(-1).astype(np.uint8)
    if flat.size and int(flat.max()) >= 1 << bits:
        raise ValueError(f"a code exceeds {bits} bits")
    # bit j of code i is stream bit bits*i + j
    stream = np.unpackbits(flat[:, None], axis=1, bitorder="little")[:, :bits].reshape(-1)
    n = packed_words(flat.size, bits)
    padded = np.zeros(n * 32, dtype=np.uint8)
    padded[: stream.size] = stream
    return np.packbits(padded, bitorder="little").view("<u4").astype(np.uint32)


def unpack_codes(words: np.ndarray, bits: int, count: int) -> np.ndarray:
    """The first ``count`` codes of ``words`` as uint8."""
    raw = np.ascontiguousarray(np.asarray(words, dtype="<u4")).view(np.uint8)
    stream = np.unpackbits(raw, bitorder="little")[: count * bits]
    if stream.size < count * bits:
        raise ValueError(f"{np.asarray(words).size} words hold fewer than {count} codes")
    weights = (1 << np.arange(bits, dtype=np.uint16)).reshape(1, bits)
    return (stream.reshape(count, bits) * weights).sum(axis=1).astype(np.uint8)


def padding_is_zero(words: np.ndarray, bits: int, count: int) -> bool:
    """True when every bit beyond the ``count`` codes is 0: a packed array has exactly one
    valid encoding."""
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


def row_starts(per_row: int, row_bits: tuple[int, ...] | list[int]) -> np.ndarray:
    """First word of each row of a :func:`pack_rows` layout (int64 ``[rows]``)."""
    return np.cumsum([0, *row_words(per_row, row_bits)])[:-1].astype(np.int64)


def rows_padding_is_zero(
    words: np.ndarray, row_bits: tuple[int, ...] | list[int], per_row: int
) -> bool:
    """:func:`padding_is_zero` for a row-wise packing: one valid encoding per row."""
    return bool(np.array_equal(pack_rows(unpack_rows(words, row_bits, per_row), row_bits), words))
