"""`simulate --inputs X.npy`: a user's own float inputs, checked before they are loaded.

The .npy header is read and checked first (kind of file, element type, shape, and that the
file holds as many bytes as the header claims), so a damaged or hostile file is one clear
line, never a 233 TiB allocation; then only the first ``n`` rows are read (memory-mapped).

>>> import numpy as np, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "x.npy")
>>> np.save(path, np.zeros((5, 1, 8, 8), np.float32))
>>> read_inputs(path, (1, 8, 8), 3).shape
(3, 1, 8, 8)
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from qcompile.errors import QCompileError, clip
from qcompile.fileio import input_file

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
REAL_KINDS = "iuf"  # signed, unsigned, floating; not bool, complex, strings or objects


def _header(path: Path, where: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) from the .npy header, without reading the data."""
    with open(path, "rb") as f:
        head = f.read(len(NPY_MAGIC))
        if head[: len(ZIP_MAGIC) - 2] == ZIP_MAGIC[:2] and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                names = [n.removesuffix(".npy") for n in z.namelist()][:5]
            raise QCompileError(
                f"{where} is an .npz archive (arrays {', '.join(map(repr, names))}); "
                "--inputs takes one .npy array: np.save('x.npy', archive['NAME'])"
            )
        if head != NPY_MAGIC:
            raise QCompileError(f"{where} is not a .npy file (write one with np.save)")
        f.seek(0)
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        except (ValueError, OSError, EOFError) as e:
            raise QCompileError(f"{where} has a damaged .npy header: {clip(str(e))}") from None
        return tuple(shape), dtype, f.tell()


def read_inputs(path: str, in_shape: tuple[int, ...], n: int) -> np.ndarray:
    """The first ``n`` inputs of the .npy file at ``path`` as float32, checked: real
    numbers, ``N x in_shape`` with N >= 1, finite in float32."""
    p = input_file(path, "--inputs")
    where = f"--inputs {clip(str(path))}"
    shape, dtype, offset = _header(p, where)
    want = f"N x {list(in_shape)}"
    if dtype.hasobject or dtype.kind not in REAL_KINDS or dtype.fields is not None:
        kind = "complex numbers" if dtype.kind == "c" else f"dtype {dtype}"
        raise QCompileError(f"{where} holds {kind}; the model takes real numbers ({want})")
    if len(shape) != len(in_shape) + 1 or tuple(shape[1:]) != tuple(in_shape):
        raise QCompileError(f"{where}: shape {list(shape)}, the model takes {want}")
    if shape[0] == 0:
        raise QCompileError(f"{where} holds no inputs (shape {list(shape)}); give at least one")
    claimed = math.prod(shape) * dtype.itemsize
    have = p.stat().st_size - offset
    if have < claimed:
        raise QCompileError(
            f"{where}: its header claims {shape[0]} inputs ({claimed} bytes) but the file "
            f"holds {max(have, 0)} bytes; it is truncated or its header is wrong"
        )
    try:
        rows = np.load(p, mmap_mode="r", allow_pickle=False)[:n]
        with np.errstate(over="ignore", invalid="ignore"):
            x = np.array(rows, dtype=np.float32)
    except (OSError, ValueError) as e:
        raise QCompileError(f"{where}: cannot read the array: {clip(str(e))}") from None
    if not np.isfinite(x).all():
        raise QCompileError(
            f"{where}: needs finite numbers (found NaN, inf, or values beyond float32's range)"
        )
    return x
