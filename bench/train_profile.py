"""Where a stage's training step spends the time float training does not: a profile.

Runs the training loop's step (stage hooks, forward, loss and stage terms, backward,
optimizer) for float and for each named configuration of ``bench.train_overhead``, under
``torch.profiler``, and reports per configuration the ops whose self CPU time per step grew
most over float's, with their extra calls. Profiling slows small ops more than large ones,
so the figures say where the time goes, not how much an epoch takes (that is
``bench.train_overhead``'s). Beside them: each step's CPU time without a profiler (its
ratio to float's is what the epoch ratio is made of), and, since the op profile cannot see
the Python that runs between ops, qcompile's own functions' time under cProfile.

    python -m bench.train_profile [--model lenet] [--configs ddq/wa dqa/wa] [--steps 10]
                                  [--rounds 5]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from bench.report import machine, write_section
from bench.train_overhead import MODELS, configurations, synthetic_cifar
from qcompile.batches import batches, epoch_generator
from qcompile.builder import RunCheckpoints, build
from qcompile.data import load_dataset
from qcompile.optim import make_optimizer
from qcompile.recipe import load_recipe
from qcompile.train import seed_everything


class Stepper:
    """One configuration's model, optimizer and batches, stepping as ``qcompile.train``."""

    def __init__(self, overrides: dict[str, Any]) -> None:
        recipe = load_recipe(None, overrides)
        seed_everything(0)
        data = load_dataset(recipe.data.name, recipe.data.dir, recipe.data.image_size)
        self.model = build(recipe, data.in_shape, data.num_classes)
        self.opt = make_optimizer(self.model, recipe.train)
        self.model.stage.prepare(self.model, RunCheckpoints(data.in_shape, data.num_classes), True)
        gen = epoch_generator(0, 0)
        self.batches = list(
            batches(data.train_x, data.train_y, recipe.train.batch_size, gen, augment=data.augment)
        )
        self.total = len(self.batches) * recipe.train.epochs
        self.i = 0

    def steps(self, n: int) -> None:
        model, stage = self.model, self.model.stage
        model.train()
        for _ in range(n):
            xb, yb = self.batches[self.i % len(self.batches)]
            stage.on_step(model, self.i % self.total, self.total)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            extra = stage.regularizer(model)
            objective = loss if extra is None else loss + extra
            batch_extra = stage.extra_loss(model, xb, logits)
            objective = objective if batch_extra is None else objective + batch_extra
            self.opt.zero_grad(set_to_none=True)
            objective.backward()
            self.opt.step()
            float(loss.detach()), float((logits.argmax(1) == yb).sum())
            self.i += 1


def self_times(stepper: Stepper, steps: int) -> dict[str, tuple[float, float]]:
    """Op name -> (self CPU ms per step, calls per step) over ``steps`` steps."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        stepper.steps(steps)
    return {
        e.key: (e.self_cpu_time_total / 1000 / steps, e.count / steps) for e in prof.key_averages()
    }


def min_self_times(
    stepper: Stepper, steps: int, rounds: int
) -> tuple[float, dict[str, tuple[float, float]]]:
    """The least total ms per step over ``rounds`` rounds, and :func:`self_times` with each
    op's least time: on a shared machine a round's time includes other processes'
    interference, which only ever adds."""
    stepper.steps(3)
    runs = [self_times(stepper, steps) for _ in range(rounds)]
    total = min(sum(ms for ms, _ in r.values()) for r in runs)
    return total, {
        name: (min(r.get(name, (0.0, 0.0))[0] for r in runs), runs[0].get(name, (0.0, 0.0))[1])
        for name in runs[0]
    }


def step_cpu_ms(stepper: Stepper, steps: int, rounds: int) -> float:
    """CPU ms per step without any profiler: the least over ``rounds`` rounds (interference
    from other processes only ever adds). Includes what the op profile cannot see: the
    Python work between ops (module calls, autograd function bodies, argument handling)."""
    stepper.steps(3)
    best = float("inf")
    for _ in range(rounds):
        t = time.process_time()
        stepper.steps(steps)
        best = min(best, (time.process_time() - t) * 1000 / steps)
    return best


def python_times(stepper: Stepper, steps: int) -> dict[str, float]:
    """qcompile function -> its own (not callees') Python ms per step, under cProfile."""
    prof = cProfile.Profile()
    prof.enable()
    stepper.steps(steps)
    prof.disable()
    out: dict[str, float] = {}
    for (path, line, fn), row in pstats.Stats(prof).stats.items():  # type: ignore[attr-defined]
        if "/qcompile/" in path:
            key = f"{path.split('/qcompile/')[-1]}:{line}({fn})"
            out[key] = row[2] * 1000 / steps  # tottime
    return out


def difference(
    ops: dict[str, tuple[float, float]], base: dict[str, tuple[float, float]], top: int
) -> list[tuple[str, float, float]]:
    """The ``top`` ops by extra self time per step, with their extra calls."""
    rows = [
        (name, ms - base.get(name, (0.0, 0.0))[0], calls - base.get(name, (0.0, 0.0))[1])
        for name, (ms, calls) in ops.items()
    ]
    return sorted(rows, key=lambda r: -r[1])[:top]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=list(MODELS), default="lenet")
    ap.add_argument("--configs", nargs="+", default=["dqa/wa", "ddq/wa"])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--top", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--resnet-images", type=int, default=640)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = configurations()
    unknown = [c for c in args.configs if c not in rows]
    if unknown:
        ap.error(f"unknown configuration(s) {unknown}; choose from {sorted(rows)}")
    label, base = MODELS[args.model]
    with tempfile.TemporaryDirectory() as tmp:
        if base["data.name"] == "cifar10":
            base = {**base, "data.dir": str(synthetic_cifar(Path(tmp), args.resnet_images))}
        float_step = Stepper({**base, **rows["float"]})
        float_cpu = step_cpu_ms(float_step, args.steps, args.rounds)
        float_ms, float_ops = min_self_times(float_step, args.steps, args.rounds)
        report: dict[str, Any] = {
            "float_ms": round(float_ms, 3),
            "float_cpu_ms": round(float_cpu, 3),
        }
        sections = []
        for name in args.configs:
            stepper = Stepper({**base, **rows[name]})
            cpu = step_cpu_ms(stepper, args.steps, args.rounds)
            total, ops = min_self_times(stepper, args.steps, args.rounds)
            py = sorted(python_times(stepper, args.steps).items(), key=lambda kv: -kv[1])
            extra, top = total - float_ms, difference(ops, float_ops, args.top)
            report[name] = {
                "cpu_ms": round(cpu, 3),
                "cpu_ratio": round(cpu / float_cpu, 3),
                "extra_ms": round(extra, 3),
                "top": {n: round(d, 3) for n, d, _ in top},
                "python_top": {n: round(ms, 3) for n, ms in py[: args.top]},
            }
            lines = [f"| `{n}` | {d:+.2f} | {c:+.0f} |" for n, d, c in top]
            pylines = [f"| `{n}` | {ms:.2f} |" for n, ms in py[: min(5, args.top)]]
            sections.append(
                f"**{name}**: a step takes {cpu:.2f} ms of CPU against float's {float_cpu:.2f} ms "
                f"({cpu / float_cpu:.2f}x, no profiler); the ops' self time under the profiler "
                f"grows by {extra:+.2f} ms over float's {float_ms:.2f} ms, the rest of the extra "
                f"({cpu - float_cpu - extra:+.2f} ms) is Python between the ops.\n\n"
                "| op | extra self ms/step | extra calls/step |\n|---|---|---|\n"
                + "\n".join(lines)
                + "\n\nPython-side time of qcompile's own functions (cProfile, own time):\n\n"
                "| function | ms/step |\n|---|---|\n" + "\n".join(pylines)
            )
            print(sections[-1] + "\n", flush=True)
    configs = " ".join(args.configs)
    write_section(
        f"train_profile_{args.model}",
        f"## Where the training time goes: {label}\n\n"
        f"`python -m bench.train_profile --model {args.model} --configs {configs} "
        f"--steps {args.steps} --rounds {args.rounds} --threads {args.threads}` ({machine()}). "
        "Step CPU time without a profiler (least over the rounds); self CPU time per step under "
        "torch.profiler (each op's least over the rounds), minus float's, per op (profiling "
        "inflates small ops); qcompile's Python functions' own time under cProfile.\n\n"
        + "\n\n".join(sections),
    )
    print(json.dumps({"model": label, **report}))


if __name__ == "__main__":
    main()
