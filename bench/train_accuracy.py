"""Foundation acceptance figures: the documented commands, end to end, timed from the shell.

python -m bench.train_accuracy
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time

from bench.report import machine, write_section

RUNS = [
    ("lenet / digits, uniform W4A4, 15 epochs, seed 0", ">= 0.95",
     ["--model", "lenet", "--data", "digits", "--method", "uniform", "--wbits", "4", "--abits", "4",
      "--epochs", "15", "--seed", "0"]),
    ("lenet / mnist5k, float (W32A32), 15 epochs, seed 0", ">= 0.96",
     ["--model", "lenet", "--data", "mnist5k", "--wbits", "32", "--abits", "32", "--epochs", "15",
      "--seed", "0"]),
    ("lenet / mnist5k, uniform W2A2, 15 epochs, seed 0", "-",
     ["--model", "lenet", "--data", "mnist5k", "--wbits", "2", "--abits", "2", "--epochs", "15",
      "--seed", "0"]),
]  # fmt: skip


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, goal, args) in enumerate(RUNS):
            cmd = [
                sys.executable,
                "-m",
                "qcompile",
                "train",
                *args,
                "--out",
                f"{tmp}/{i}",
                "--json",
            ]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            wall = time.perf_counter() - t0
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append((label, goal, r["test_acc"], wall, r["epoch_time_s"]))
            print(f"{label}: test_acc {r['test_acc']:.4f} in {wall:.1f}s", flush=True)
    table = "\n".join(
        f"| {lab} | {acc:.4f} | {goal} | {wall:.1f} | {ep:.3f} |"
        for lab, goal, acc, wall, ep in rows
    )
    write_section(
        "train_accuracy",
        f"""## Training accuracy of the documented commands

`python -m bench.train_accuracy` ({machine()}): each row is `qcompile train ... --json` run as
a subprocess; wall time includes Python start-up and data loading.

| run | test_acc | goal | wall s | median s/epoch |
|---|---|---|---|---|
{table}
""",
    )


if __name__ == "__main__":
    main()
