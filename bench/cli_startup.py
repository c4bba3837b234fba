"""How long the deployment-side commands take to start: `qcompile --help` and `qcompile
inspect` of the demo model (lenet on digits, W4A4), wall time, median of 5 runs each, in
fresh processes, against `python -c pass` in the same run. The deployment side (IR,
simulator, backends, inspect/export/simulate) imports without torch; a firmware engineer
inspecting a model should not pay for it.

    python -m bench.cli_startup [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.report import machine, write_section


def wall(cmd: list[str], repeats: int) -> float:
    """Median wall time of ``cmd`` in seconds (each a fresh process)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def demo_qir(path: Path) -> None:
    """The demo recipe's model, trained and frozen (as `make demo` does)."""
    from qcompile.freeze import freeze_checkpoint
    from qcompile.ir import qir
    from qcompile.recipe import load_recipe
    from qcompile.train import train

    train(load_recipe("models/lenet_digits_w4a4.toml", {}), path.parent / "run", progress=False,
          log=lambda m: None)  # fmt: skip
    qir.save(freeze_checkpoint(path.parent / "run" / "checkpoint.pt"), path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "lenet.qir"
        demo_qir(model)
        figures = {
            "python_s": wall([py, "-c", "pass"], args.repeats),
            "help_s": wall([py, "-m", "qcompile", "--help"], args.repeats),
            "inspect_s": wall([py, "-m", "qcompile", "inspect", str(model)], args.repeats),
            "torch_import_s": wall([py, "-c", "import torch"], args.repeats),
        }
    figures = {k: round(v, 3) for k, v in figures.items()}
    rows = [
        f"| `python -c pass` | {figures['python_s']:.3f} | |",
        f"| `qcompile --help` | {figures['help_s']:.3f} | 0.3 |",
        f"| `qcompile inspect lenet.qir` | {figures['inspect_s']:.3f} | 1.0 |",
        f"| `python -c 'import torch'` (what they no longer pay) | "
        f"{figures['torch_import_s']:.3f} | |",
    ]
    write_section(
        "cli_startup",
        "\n".join(
            [
                "## Command start-up (`python -m bench.cli_startup`)",
                "",
                f"Wall time, median of {args.repeats} fresh processes; {machine()}.",
                "",
                "| command | seconds | goal |",
                "|---|---|---|",
                *rows,
            ]
        ),
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
