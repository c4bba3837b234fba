"""How the vector kernels store a weight layer's codes: chosen once, at export.

The .qir packs codes as one LSB-first bit stream; a vector unit wants every decode step to
be one load, one shift by a constant and one mask. So each output row's codes (in the order
the kernel reads them, padded with code 0 to whole chunks) are stored in chunks of ``dw``
bytes per *plane*: byte ``l`` of a chunk holds, at bits ``s*p .. s*p+p-1``, the code of
position ``chunk * dw * 8/p + s * dw + l`` (``p`` the plane's width). Shifting the chunk
right by ``s*p`` and masking gives ``dw`` consecutive positions: no permutation of the
activations, no straddling codes. Widths 1, 2, 4 and 8 are one plane; 3, 5, 6 and 7 bits are
split into planes of 4, 2 and 1 bit (``6 = 4 + 2``: the low four bits in one plane, the high
two in another), so every code still costs exactly its width in storage.

Rows are grouped by width (a layer whose channels have their own widths, DMBQ): each group
is stored contiguously, rows in ascending output-channel order, so every decode loop has a
static width. Memory: ``bits * rows * padded_k / 8`` bytes per group; padding is at most one
chunk per row.

>>> codes = np.arange(32, dtype=np.uint8).reshape(1, 32) % 4
>>> lay = RowLayout.plan(k=32, widths=(2,), dw=8)
>>> stored = lay.pack(codes)
>>> np.array_equal(lay.unpack(stored), codes)
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PLANES = {1: (1,), 2: (2,), 3: (2, 1), 4: (4,), 5: (4, 1), 6: (4, 2), 7: (4, 2, 1), 8: (8,)}


@dataclass(frozen=True)
class Group:
    """Rows of one width: ``rows`` (output channels, ascending) stored from byte ``offset``,
    ``row_bytes`` bytes each, each plane's bytes of a row after the previous plane's."""

    bits: int
    rows: tuple[int, ...]
    offset: int
    kr: int  # positions per row, padded to whole chunks of every plane

    @property
    def planes(self) -> tuple[int, ...]:
        return PLANES[self.bits]

    @property
    def row_bytes(self) -> int:
        return self.kr * self.bits // 8

    def plane_offset(self, i: int) -> int:
        """Byte offset of plane ``i`` within a stored row."""
        return self.kr * sum(self.planes[:i]) // 8

    def plane_shift(self, i: int) -> int:
        """Bit position of plane ``i`` within a code."""
        return sum(self.planes[:i])


@dataclass(frozen=True)
class RowLayout:
    """The stored layout of ``k`` codes per row in chunks of ``dw`` bytes per plane."""

    k: int
    dw: int
    groups: tuple[Group, ...]

    @staticmethod
    def plan(k: int, widths: tuple[int, ...], dw: int) -> RowLayout:
        """``widths``: each output row's width (all equal for a plain layer)."""
        groups, offset = [], 0
        for bits in sorted(set(widths)):
            rows = tuple(r for r, b in enumerate(widths) if b == bits)
            chunk = dw * 8 // min(PLANES[bits])  # positions one chunk of the finest plane holds
            kr = -(-k // chunk) * chunk
            groups.append(Group(bits, rows, offset, kr))
            offset += len(rows) * kr * bits // 8
        return RowLayout(k, dw, tuple(groups))

    @property
    def nbytes(self) -> int:
        last = self.groups[-1]
        return last.offset + len(last.rows) * last.row_bytes

    @property
    def max_kr(self) -> int:
        return max(g.kr for g in self.groups)

    @property
    def rows(self) -> int:
        return sum(len(g.rows) for g in self.groups)

    def pack(self, codes: np.ndarray) -> np.ndarray:
        """``codes`` uint8 [rows, k] (each below its row's 2^width) -> the stored bytes."""
        out = np.zeros(self.nbytes, np.uint8)
        for g in self.groups:
            c = np.zeros((len(g.rows), g.kr), np.uint8)
            c[:, : self.k] = codes[list(g.rows)]
            parts = []
            for i, p in enumerate(g.planes):
                plane = (c >> g.plane_shift(i)) & ((1 << p) - 1)
                seg = 8 // p  # segments per chunk
                blocks = plane.reshape(len(g.rows), -1, seg, self.dw).astype(np.uint16)
                packed = np.zeros((*blocks.shape[:2], self.dw), np.uint16)
                for s in range(seg):
                    packed |= blocks[:, :, s, :] << (s * p)
                parts.append(packed.reshape(len(g.rows), -1).astype(np.uint8))
            rows = np.concatenate(parts, axis=1)
            out[g.offset : g.offset + rows.size] = rows.reshape(-1)
        return out

    def unpack(self, stored: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`pack` (the tests' reference decoder): uint8 [rows, k]."""
        out = np.zeros((self.rows, self.k), np.uint8)
        for g in self.groups:
            rows = stored[g.offset : g.offset + len(g.rows) * g.row_bytes]
            rows = rows.reshape(len(g.rows), g.row_bytes)
            code = np.zeros((len(g.rows), g.kr), np.uint8)
            for i, p in enumerate(g.planes):
                seg = 8 // p
                start = g.plane_offset(i)
                raw = rows[:, start : start + g.kr * p // 8].reshape(len(g.rows), -1, 1, self.dw)
                shifts = (np.arange(seg) * p).reshape(1, 1, seg, 1).astype(np.uint8)
                plane = (raw >> shifts) & ((1 << p) - 1)
                code |= (plane.reshape(len(g.rows), g.kr) << g.plane_shift(i)).astype(np.uint8)
            out[list(g.rows)] = code[:, : self.k]
        return out
