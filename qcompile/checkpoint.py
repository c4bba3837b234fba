"""Checkpoints: written atomically, read back with ``torch.load(weights_only=True)``.

A checkpoint is a dict of plain containers and tensors (no pickled classes), so loading one
never runs code from the file:

    format     "qcompile-checkpoint"        version   CHECKPOINT_VERSION
    recipe     Recipe.to_dict()             epoch     completed epochs
    model      QuantModel.state_dict()      optimizer optimizer.state_dict()
    rng        torch.get_rng_state()
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from qcompile.errors import QCompileError, clip
from qcompile.fileio import atomic_write, input_file

FORMAT = "qcompile-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    payload = {"format": FORMAT, "version": CHECKPOINT_VERSION, **payload}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and check a qcompile checkpoint; every failure is one clear :class:`QCompileError`."""
    p = input_file(path, "checkpoint")
    shown = clip(str(p))
    if not zipfile.is_zipfile(p):
        raise QCompileError(
            f"checkpoint {shown} is corrupt, truncated or not a PyTorch checkpoint "
            "(not a zip archive)"
        )
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise QCompileError(
            f"checkpoint {shown} holds pickled Python objects, not only tensors and plain "
            "containers; refusing to load it (not a qcompile checkpoint, or tampered with)"
        ) from None
    except Exception as e:  # torch raises RuntimeError, EOFError, ... for damaged archives
        raise QCompileError(
            f"checkpoint {shown} is corrupt or truncated ({type(e).__name__}); re-run training or "
            "use an intact copy"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise QCompileError(
            f"checkpoint {shown} is not a qcompile checkpoint (no format tag '{FORMAT}'); "
            "pass the checkpoint.pt that `qcompile train` wrote"
        )
    version = ckpt.get("version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise QCompileError(
            f"checkpoint {shown} has format version {clip(repr(version), 40)}; this qcompile "
            f"reads up to {CHECKPOINT_VERSION}: upgrade qcompile"
        )
    for key, kind in (("recipe", dict), ("epoch", int), ("model", dict)):
        if key not in ckpt:
            raise QCompileError(
                f"checkpoint {shown} lacks '{key}': it is truncated or tampered with"
            )
        if not isinstance(ckpt[key], kind) or isinstance(ckpt[key], bool):
            raise QCompileError(
                f"checkpoint {shown}: '{key}' is a {type(ckpt[key]).__name__}, not a "
                f"{kind.__name__}; it is tampered with or not from `qcompile train`"
            )
    return ckpt
