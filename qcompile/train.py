"""The training loop: seeded, resumable, DDP-ready, with progress and per-epoch records.

Run directory (``--out``):
    checkpoint.pt   latest epoch (model, optimizer, RNG), replaced atomically each epoch
    metrics.jsonl   one JSON object per finished epoch
    summary.json    final figures (test_acc, bits per layer, timings, stage report)

Under ``torchrun`` every rank trains on its shard of each global batch (gloo on CPU, DDP
averages gradients); rank 0 evaluates and writes. The loop is deterministic under a seed:
batch order and augmentation depend only on (seed, epoch), the global RNG is checkpointed, and
the learning rate is a function of the epoch, so ``--resume`` after a kill ends with the same
weights as an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from qcompile import distributed as D
from qcompile.batches import batches, epoch_generator, num_batches
from qcompile.builder import RunCheckpoints, build
from qcompile.checkpoint import load_checkpoint, save_checkpoint
from qcompile.data import Dataset, load_dataset
from qcompile.errors import QCompileError
from qcompile.fileio import atomic_write, check_writable, writing
from qcompile.optim import learning_rate, make_optimizer, set_learning_rate
from qcompile.recipe import Recipe
from qcompile.stages import QuantModel

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"


def default_out(recipe: Recipe) -> Path:
    model = recipe.model.name.rpartition(":")[2]
    s = recipe.stage
    return (
        Path("runs")
        / f"{model}-{recipe.data.name}-{recipe.method}-w{s.wbits}a{s.abits}-s{recipe.train.seed}"
    )


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 512) -> float:
    was = model.training
    model.eval()
    correct = sum(
        int((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum())
        for i in range(0, len(x), batch_size)
    )
    model.train(was)
    return correct / max(1, len(x))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class RunState:
    start_epoch: int
    history: list[dict[str, Any]]


def _recipe_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    diffs = []
    for section in sorted(set(old) | set(new)):
        a, b = old.get(section, {}), new.get(section, {})
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                diffs.append(
                    f"{section}.{key}: {a.get(key)!r} (checkpoint) vs {b.get(key)!r} (now)"
                )
    return diffs


def _restore(
    out: Path, recipe: Recipe, model: QuantModel, opt: torch.optim.Optimizer, resume: bool
) -> RunState:
    ckpt_path = out / CHECKPOINT
    if not ckpt_path.exists():
        if resume and D.rank() == 0:
            print(f"note: no checkpoint in {out}; starting a new run", file=sys.stderr)
        return RunState(0, [])
    if not resume:
        raise QCompileError(
            f"{out} already holds a run ({CHECKPOINT}); "
            "pass --resume to continue it or choose another --out"
        )
    ckpt = load_checkpoint(ckpt_path)
    diffs = _recipe_diff(ckpt["recipe"], recipe.to_dict())
    if diffs:
        raise QCompileError(f"--resume: {out} was trained with another recipe: {'; '.join(diffs)}")
    try:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise QCompileError(
            f"--resume: {ckpt_path} does not fit this model: {str(e).splitlines()[0]}"
        ) from None
    torch.set_rng_state(ckpt["rng"])
    history = _read_history(out / METRICS)[: ckpt["epoch"]]
    return RunState(int(ckpt["epoch"]), history)


def _read_history(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut by a kill: everything after it is lost anyway
    return rows


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(r) + "\n" for r in rows)
    atomic_write(path, lambda tmp: tmp.write_text(text))


def _init_distributed() -> None:
    if D.launched_by_torchrun() and not D.is_distributed():
        dist.init_process_group("gloo")
        local = int(os.environ.get("LOCAL_WORLD_SIZE", D.world_size()))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))


def train(
    recipe: Recipe,
    out: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train ``recipe``; returns the summary (also written to ``out/summary.json``)."""
    _init_distributed()
    rank, world = D.rank(), D.world_size()
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    out = Path(out) if out is not None else default_out(recipe)
    check_writable(out, "run directory", directory=True)  # on every rank: all stop together
    spec = recipe.train
    seed_everything(spec.seed)
    data = load_dataset(recipe.data.name, recipe.data.dir, recipe.data.image_size)
    model = build(recipe, data.in_shape, data.num_classes)
    stage = model.stage
    opt = make_optimizer(model, spec)
    state = _restore(out, recipe, model, opt, resume)
    stage.prepare(model, RunCheckpoints(data.in_shape, data.num_classes), state.start_epoch == 0)
    runner: nn.Module = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    try:
        steps = num_batches(len(data.train_x), spec.batch_size, world)
    except ValueError as e:
        raise QCompileError(f"--batch-size: {e}") from None
    total = steps * spec.epochs
    history = state.history
    t_run = time.perf_counter()
    for epoch in range(state.start_epoch, spec.epochs):
        lr = learning_rate(spec, epoch)
        set_learning_rate(opt, lr)
        runner.train()
        t0, c0 = time.perf_counter(), time.process_time()
        sums = torch.zeros(3, dtype=torch.float64)  # loss * n, correct, n
        bar = tqdm(
            total=steps, desc=f"epoch {epoch + 1}/{spec.epochs}", leave=False,
            disable=not progress or rank != 0 or not sys.stderr.isatty(),
        )  # fmt: skip
        gen = epoch_generator(spec.seed, epoch)
        for i, (xb, yb) in enumerate(
            batches(data.train_x, data.train_y, spec.batch_size, gen, rank, world, data.augment)
        ):
            stage.on_step(model, epoch * steps + i, total)
            logits = runner(xb)
            loss = F.cross_entropy(logits, yb)
            extra = stage.regularizer(model)
            objective = loss if extra is None else loss + extra
            batch_extra = stage.extra_loss(model, xb, logits)
            objective = objective if batch_extra is None else objective + batch_extra
            value = float(objective.detach())
            if world == 1 and not math.isfinite(value):  # DDP ranks check together below
                raise _diverged(value, epoch, i, spec.lr, out)
            opt.zero_grad(set_to_none=True)
            objective.backward()
            opt.step()
            n = len(yb)
            sums += torch.tensor(
                [float(loss.detach()) * n, float((logits.argmax(1) == yb).sum()), n],
                dtype=torch.float64,
            )
            bar.update(1)
            bar.set_postfix(loss=f"{sums[0] / sums[2]:.3f}", acc=f"{sums[1] / sums[2]:.3f}")
        bar.close()
        # Every rank sees the same sums and (DDP) the same weights, so all stop together; the
        # weights are checked too: the epoch's last step may have made them NaN.
        sums = D.all_reduce_sum(sums)
        finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
        if not (finite and bool(torch.isfinite(sums).all())):
            loss_value = float(sums[0] / sums[2]) if finite else math.nan
            raise _diverged(loss_value, epoch, steps - 1, spec.lr, out)
        stage.on_epoch_end(model, epoch, spec.epochs)
        epoch_time = time.perf_counter() - t0
        # CPU time of this process (every thread): the work itself, which other jobs on a
        # shared machine do not inflate as they do the wall time
        epoch_cpu = time.process_time() - c0
        test_acc = evaluate(model, data.test_x, data.test_y)
        record = {
            "epoch": epoch + 1,
            "lr": lr,
            "loss": float(sums[0] / sums[2]),
            "train_acc": float(sums[1] / sums[2]),
            "test_acc": test_acc,
            "epoch_time_s": round(epoch_time, 4),
            "epoch_cpu_s": round(epoch_cpu, 4),
            **stage.report(model),
        }
        history.append(record)
        if rank == 0:
            with writing(out):
                _write_jsonl(out / METRICS, history)
                _save(out, recipe, epoch + 1, model, opt)
            log(
                f"epoch {epoch + 1}/{spec.epochs}  loss {record['loss']:.4f}  "
                f"train_acc {record['train_acc']:.4f}  test_acc {test_acc:.4f}  {epoch_time:.1f}s"
            )
    final = stage.finalize(model, lambda: evaluate(model, data.test_x, data.test_y))
    summary = _summary(recipe, model, data, history, out, world, time.perf_counter() - t_run)
    summary.update(final)
    if rank == 0:
        with writing(out):
            if final:  # the deployed form differs from the last epoch's: checkpoint it
                _save(out, recipe, spec.epochs, model, opt)
            summary["plots"] = [str(p) for p in stage.plots(out, history)]
            text = json.dumps(summary, indent=2) + "\n"
            atomic_write(out / SUMMARY, lambda tmp: tmp.write_text(text))
    if D.is_distributed():
        dist.barrier()
    return summary


def _diverged(value: float, epoch: int, step: int, lr: float, out: Path) -> QCompileError:
    kept = f"{out / CHECKPOINT} keeps epoch {epoch}" if epoch else f"nothing was written to {out}"
    return QCompileError(
        f"training diverged: the loss became {value} at epoch {epoch + 1}, step {step + 1} "
        f"(lr {lr:g}); lower the learning rate (--lr). {kept}"
    )


def _save(
    out: Path, recipe: Recipe, epoch: int, model: QuantModel, opt: torch.optim.Optimizer
) -> None:
    save_checkpoint(
        out / CHECKPOINT,
        {
            "recipe": recipe.to_dict(),
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "rng": torch.get_rng_state(),
        },
    )


def _summary(
    recipe: Recipe, model: QuantModel, data: Dataset, history: list[dict[str, Any]], out: Path,
    world: int, wall: float,
) -> dict[str, Any]:  # fmt: skip
    times = [h["epoch_time_s"] for h in history]
    last = history[-1] if history else {}
    return {
        "test_acc": evaluate(model, data.test_x, data.test_y),
        "train_acc": last.get("train_acc"),
        "loss": last.get("loss"),
        "bits": model.stored_weight_bits(),  # per-channel widths at their mean, as inspect
        "act_bits": model.act_bits(),
        "method": recipe.method,
        "model": recipe.model.name,
        "data": recipe.data.name,
        "epochs": recipe.train.epochs,
        "seed": recipe.train.seed,
        "world_size": world,
        "epoch_time_s": float(np.median(times)) if times else None,
        "wall_time_s": round(wall, 3),
        "params": sum(p.numel() for p in model.net.parameters()),
        "out": str(out),
        "checkpoint": str(out / CHECKPOINT),
        **model.stage.report(model),
    }
