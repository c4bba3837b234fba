"""Checkpoints: written atomically, read back with ``torch.load(weights_only=True)``.

A checkpoint is a dict of plain containers and tensors (no pickled classes), so loading one
never runs code from the file:

    format     "qcompile-checkpoint"        version   CHECKPOINT_VERSION
    recipe     Recipe.to_dict()             epoch     completed epochs
    model      QuantModel.state_dict()      optimizer optimizer.state_dict()
    rng        torch.get_rng_state()
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from qcompile.errors import QCompileError

FORMAT = "qcompile-checkpoint"
CHECKPOINT_VERSION = 1


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then rename over ``path``: readers see the old or the new file,
    never half of one (a killed run leaves its previous checkpoint intact)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    payload = {"format": FORMAT, "version": CHECKPOINT_VERSION, **payload}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and check a qcompile checkpoint; every failure is one clear :class:`QCompileError`."""
    p = Path(path)
    if not p.is_file():
        raise QCompileError(f"checkpoint {p}: no such file")
    if not zipfile.is_zipfile(p):
        raise QCompileError(
            f"checkpoint {p} is corrupt, truncated or not a PyTorch checkpoint (not a zip archive)"
        )
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise QCompileError(
            f"checkpoint {p} holds pickled Python objects, not only tensors and plain containers; "
            "refusing to load it (not a qcompile checkpoint, or tampered with)"
        ) from None
    except Exception as e:  # torch raises RuntimeError, EOFError, ... for damaged archives
        raise QCompileError(
            f"checkpoint {p} is corrupt or truncated ({type(e).__name__}); re-run training or "
            "use an intact copy"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise QCompileError(
            f"checkpoint {p} is not a qcompile checkpoint (no format tag '{FORMAT}'); "
            "pass the checkpoint.pt that `qcompile train` wrote"
        )
    version = ckpt.get("version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise QCompileError(
            f"checkpoint {p} has format version {version!r}; this qcompile reads up to "
            f"{CHECKPOINT_VERSION}: upgrade qcompile"
        )
    for key in ("recipe", "epoch", "model"):
        if key not in ckpt:
            raise QCompileError(f"checkpoint {p} lacks '{key}': it is truncated or tampered with")
    return ckpt
