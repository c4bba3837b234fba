#!/usr/bin/env bash
# `make demo`: train, freeze, simulate and deploy two LeNets on the embedded 8x8 digits, each
# artifact checked bit for bit against the integer simulator (`exact 100.0%`):
#   1. uniform 4-bit weights and activations (plain QAT);
#   2. DMBQ + LBA: per-layer (per-channel) bitwidths and non-uniform levels learned under a
#      2-bit average weight budget.
# Each model goes to every target this machine can run: the FPGA project's C simulation (g++),
# the host CPU (TVM, built for the features this CPU really has) and 64-bit ARM (under qemu).
# A step whose tool is missing is skipped with one line saying what to install.
set -euo pipefail
Q=${VENV:-.venv}/bin/qcompile
OUT=runs/demo

have() { command -v "$1" >/dev/null 2>&1; }
say() { printf '\n== %s\n' "$*"; }

deploy() {  # deploy MODEL.qir PREFIX: export and simulate for fpga, cpu and arm
    local model=$1 prefix=$2
    if have g++; then
        $Q export "$model" --target fpga -o "${prefix}fpga"
        $Q simulate "${prefix}fpga"
        $Q export "$model" --target cpu -o "${prefix}cpu"
        $Q simulate "${prefix}cpu"
    else
        echo "skipped fpga and cpu: they need g++ (apt-get install g++)"
    fi
    if have aarch64-linux-gnu-gcc && have qemu-aarch64; then
        $Q export "$model" --target arm -o "${prefix}arm"
        $Q simulate "${prefix}arm"
    else
        echo "skipped arm: it needs gcc-aarch64-linux-gnu and qemu-user" \
            "(apt-get install gcc-aarch64-linux-gnu qemu-user)"
    fi
}

rm -rf "$OUT"
say "1. LeNet, uniform W4A4 (quantization-aware training, 15 epochs)"
$Q train models/lenet_digits_w4a4.toml --out "$OUT"
$Q freeze "$OUT/checkpoint.pt" -o "$OUT/lenet.qir"
$Q simulate "$OUT/lenet.qir" --checkpoint "$OUT/checkpoint.pt"  # adds the fake-quant model
deploy "$OUT/lenet.qir" "$OUT/"

say "2. LeNet, DMBQ + LBA: bitwidths and non-uniform levels learned under a 2-bit budget"
$Q train models/lenet_digits_dmbq_demo.toml --out "$OUT/dmbq"
$Q freeze "$OUT/dmbq/checkpoint.pt" -o "$OUT/lenet_dmbq.qir"
$Q inspect "$OUT/lenet_dmbq.qir"
$Q simulate "$OUT/lenet_dmbq.qir" --checkpoint "$OUT/dmbq/checkpoint.pt"
deploy "$OUT/lenet_dmbq.qir" "$OUT/dmbq_"
