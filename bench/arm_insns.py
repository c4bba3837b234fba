"""aarch64 instructions per multiply-accumulate of a model's ARM artifacts, under qemu.

A deterministic stand-in for ARM speed without an ARM CPU: the shared counter
(``/work/shared/tools/qemu-insns/count``, a qemu plugin) sums the instructions every
qemu-aarch64 process executes around ``qcompile simulate ARTIFACT --n 1`` and ``--n 101``;
the difference over 100 images and the model's MACs per image is the figure. Each target
profile (``rpi4``: cortex-a72, NEON without dotprod; ``rpi5``: cortex-a76 with dotprod) is
exported from the same .qir. Prints a Markdown table and, last, one JSON object.

    python -m bench.arm_insns MODEL.qir [--counter PATH] [--targets rpi4,rpi5]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from qcompile.ir.qir import load as load_qir

COUNTER = "/work/shared/tools/qemu-insns/count"


def count(counter: str, artifact: Path, n: int) -> int:
    cmd = [counter, sys.executable, "-m", "qcompile", "simulate", str(artifact), "--n", str(n)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return int(re.findall(r"aarch64 instructions: (\d+)", out)[-1])


def main() -> None:
    from bench.report import machine, write_section

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("qir", type=Path)
    ap.add_argument("--counter", default=COUNTER)
    ap.add_argument("--targets", default="rpi4,rpi5")
    a = ap.parse_args()
    graph = load_qir(a.qir)
    per_image_macs = graph.macs()
    rows, figures = [], {}
    with tempfile.TemporaryDirectory(prefix="qcompile-arm-insns-") as tmp:
        for target in a.targets.split(","):
            art = Path(tmp) / target
            export = [sys.executable, "-m", "qcompile", "export", str(a.qir), "--target", target]
            subprocess.run([*export, "-o", str(art)], capture_output=True, check=True)
            one, many = count(a.counter, art, 1), count(a.counter, art, 101)
            per_image = (many - one) / 100
            figures[target] = round(per_image / per_image_macs, 3)
            rows.append(
                f"| {graph.name} | {target} | {per_image_macs} | {per_image:.0f} | "
                f"{figures[target]:.3f} |"
            )
    text = "\n".join(
        [
            "## aarch64 instructions per MAC under qemu (`python -m bench.arm_insns`)",
            "",
            f"`{a.qir.name}`; instructions counted by the qemu plugin around `qcompile "
            "simulate ARTIFACT --n 1` and `--n 101` (the artifact runs image by image), "
            f"difference / 100 / MACs per image; {machine()}.",
            "",
            "| model | target | MACs per image | instructions per image | per MAC |",
            "|---|---|---|---|---|",
            *rows,
        ]
    )
    write_section("arm_insns", text)
    print(text)
    print(json.dumps({"model": graph.name, "macs": per_image_macs, "insns_per_mac": figures}))


if __name__ == "__main__":
    main()
