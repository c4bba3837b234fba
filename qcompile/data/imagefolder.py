"""A local ImageFolder tree: ``ROOT/<class>/<image>``, or ``ROOT/train`` + ``ROOT/test|val``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qcompile.data.base import Dataset, normalized, stratified_split
from qcompile.errors import QCompileError, clip

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".webp")
LAYOUT = "ROOT/<class>/<image> (split 80/20) or ROOT/train/<class>/... with ROOT/test or ROOT/val"


def _classes(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _load_tree(root: Path, classes: list[str], size: int) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    images, labels = [], []
    for label, cls in enumerate(classes):
        for path in sorted((root / cls).iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(path) as im:
                    rgb = im.convert("RGB").resize((size, size), Image.BILINEAR)
            except (OSError, UnidentifiedImageError) as e:
                raise QCompileError(f"imagefolder: cannot read image {path}: {e}") from None
            images.append(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))
            labels.append(label)
    if not images:
        raise QCompileError(f"imagefolder: no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    return np.stack(images), np.asarray(labels)


def _layout(directory: str) -> tuple[Path, Path | None, list[str]]:
    """(root, test directory or None for an 80/20 split, class names)."""
    if not directory:
        raise QCompileError(f"imagefolder needs --data-dir laid out as {LAYOUT}")
    root = Path(directory)
    try:
        is_dir = root.is_dir()
    except OSError:  # a name too long, ...
        is_dir = False
    if not is_dir:
        raise QCompileError(f"imagefolder: {clip(directory)} is not a directory; expected {LAYOUT}")
    test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
    if (root / "train").is_dir() and test_dir is not None:
        classes = _classes(root / "train")
        if len(classes) < 2:
            raise QCompileError(f"imagefolder: {root / 'train'} needs at least 2 class folders")
        if _classes(test_dir) != classes:
            raise QCompileError(
                f"imagefolder: class folders differ between {root / 'train'} and {test_dir}"
            )
        return root, test_dir, classes
    classes = _classes(root)
    if len(classes) < 2:
        raise QCompileError(f"imagefolder: {root} needs at least 2 class folders; {LAYOUT}")
    return root, None, classes


def imagefolder_classes(directory: str) -> list[str]:
    """The class names of the tree at ``directory`` (its folder names; no image is read)."""
    return _layout(directory)[2]


def load_imagefolder(directory: str, image_size: int = 32) -> Dataset:
    """Images resized to ``image_size`` square RGB; class names sorted alphabetically."""
    root, test_dir, classes = _layout(directory)
    if test_dir is not None:
        tx, ty = _load_tree(root / "train", classes, image_size)
        vx, vy = _load_tree(test_dir, classes, image_size)
    else:
        x, y = _load_tree(root, classes, image_size)
        tr, te = stratified_split(y, 0.2)
        tx, ty, vx, vy = x[tr], y[tr], x[te], y[te]
    return normalized("imagefolder", tx, ty, vx, vy, len(classes), augment=True)
