"""The ``qcompile`` command line (click).

User mistakes raise :class:`QCompileError` and end as one line on stderr with exit code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from qcompile.errors import QCompileError
from qcompile.stages import STAGES

METHODS = sorted(STAGES)


def emit(result: dict[str, Any], as_json: bool, human: str) -> None:
    """Print ``human`` (stdout, or stderr under --json) and, with --json, ``result`` as the
    last stdout line."""
    if as_json:
        if human:
            click.echo(human, err=True)
        click.echo(json.dumps(result))
    else:
        click.echo(human)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="qcompile")
def cli() -> None:
    """Train mixed-precision quantized networks and compile them bit-exactly to hardware."""


@cli.command()
@click.argument("recipe", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--model",
    help="Zoo name (mlp, lenet, resnet20, resnet18, vgg_small, mobilenetv2) "
    "or FILE.py:FACTORY. [default: lenet]",
)
@click.option("--data", help="digits, mnist5k, cifar10 or imagefolder. [default: digits]")
@click.option("--data-dir", help="Directory for cifar10 (python batches) or imagefolder.")
@click.option("--method", help=f"Training stage: {' | '.join(METHODS)}. [default: uniform]")
@click.option("--wbits", type=int, help="Weight bits, 1..8, or 32 for float. [default: 4]")
@click.option("--abits", type=int, help="Activation bits, 1..8, or 32 for float. [default: 4]")
@click.option(
    "--target-bits",
    type=float,
    help="Average weight bits the learned-bitwidth methods (sdq, ddq, dmbq) must meet, "
    "weighted by weight count as `inspect` reports it. [default: 2.0]",
)
@click.option("--epochs", type=int, help="Training epochs. [default: 15]")
@click.option(
    "--batch-size", type=int, help="Global batch size (split across DDP ranks). [default: 64]"
)
@click.option("--lr", type=float, help="Base learning rate. [default: 0.01]")
@click.option(
    "--seed", type=int, help="Seed for initialisation, batch order and augmentation. [default: 0]"
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="Run directory. [default: runs/MODEL-DATA-METHOD-wWaA-sSEED]",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the run in --out from its last checkpoint (a new run if it has none).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the summary as one JSON object on the last line."
)
def train(
    recipe: str | None,
    model: str | None,
    data: str | None,
    data_dir: str | None,
    method: str | None,
    wbits: int | None,
    abits: int | None,
    target_bits: float | None,
    epochs: int | None,
    batch_size: int | None,
    lr: float | None,
    seed: int | None,
    out: str | None,
    resume: bool,
    as_json: bool,
) -> None:
    """Train RECIPE (a TOML file in models/), with flags overriding its values.

    Writes OUT/checkpoint.pt (each epoch, atomically), OUT/metrics.jsonl and OUT/summary.json.
    Under `torchrun --nproc_per_node N -m qcompile train ...` it trains with DDP (gloo).
    """
    from qcompile.recipe import load_recipe
    from qcompile.train import train as run

    overrides = {
        "model.name": model,
        "data.name": data,
        "data.dir": data_dir,
        "stage.method": method,
        "stage.wbits": wbits,
        "stage.abits": abits,
        "stage.target_bits": target_bits,
        "train.epochs": epochs,
        "train.batch_size": batch_size,
        "train.lr": lr,
        "train.seed": seed,
    }
    r = load_recipe(recipe, overrides)
    summary = run(r, Path(out) if out else None, resume=resume)
    from qcompile import distributed as D

    if D.rank() != 0:
        return
    bits = ", ".join(f"{k}:{v}" for k, v in summary["bits"].items())
    human = (
        f"test_acc {summary['test_acc']:.4f}  ({r.model.name} on {r.data.name}, {r.method}, "
        f"{r.train.epochs} epochs, {summary['wall_time_s']:.1f}s)\nweight bits  {bits}\n"
        f"checkpoint   {summary['checkpoint']}"
    )
    emit(summary, as_json, human)


@cli.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="Where to write MODEL.qir. [default: model.qir beside the checkpoint]",
)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
def freeze(checkpoint: str, output: str | None, as_json: bool) -> None:
    """Freeze a trained CHECKPOINT into the integer IR file MODEL.qir.

    Folds BatchNorm and activation scales into per-channel integer LUTs and biases, chooses
    fixed-point fractions and accumulator widths, packs the codes and verifies the graph.
    """
    from qcompile.freeze import freeze_checkpoint
    from qcompile.ir import qir
    from qcompile.report import summary

    out = Path(output) if output else Path(checkpoint).parent / "model.qir"
    graph = freeze_checkpoint(checkpoint)
    qir.save(graph, out)
    s = summary(graph)
    result = {
        "qir": str(out),
        "nodes": len(graph.nodes),
        "params": s["params"],
        "avg_weight_bits": s["avg_weight_bits"],
        "model_bytes": s["model_bytes"],
    }
    human = (
        f"froze {checkpoint} -> {out}: {len(graph.nodes)} nodes, "
        f"{s['avg_weight_bits']:.2f} average weight bits, {s['model_bytes']} bytes"
    )
    emit(result, as_json, human)


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def inspect(model: str, as_json: bool) -> None:
    """Per-layer table of MODEL.qir: op, shape, weight bits, levels, parameters, memory."""
    from qcompile.ir import qir
    from qcompile.report import summary, table

    s = summary(qir.load(model))
    emit(s, as_json, "" if as_json else table(s))


@cli.command()
@click.argument("model", type=click.Path(exists=False))
@click.option("--data", help="Dataset whose test split to run. [default: the one trained on]")
@click.option(
    "--inputs",
    type=click.Path(dir_okay=False),
    help="Your own float inputs, a .npy array N x the model's input shape.",
)
@click.option(
    "--n",
    "n",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Number of inputs.",
)
@click.option(
    "--save-outputs",
    type=click.Path(file_okay=False),
    help="Directory to write each implementation's integer outputs to (IMPL.npy), and the "
    "float inputs (inputs.npy), to compare with any other executor.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
def simulate(
    model: str,
    data: str | None,
    inputs: str | None,
    n: int,
    save_outputs: str | None,
    as_json: bool,
) -> None:
    """Run MODEL (a .qir file or an exported artifact directory) through every
    implementation and compare their outputs bit for bit.

    Always the integer simulator and the PyTorch frozen model; for an artifact also the
    artifact itself (FPGA C simulation, TVM cpu library, ARM runner under qemu, or the CUDA
    library where a GPU is present). Reports `exact`, `max_abs_diff` and the accuracy of
    each, and of the fake-quant model when its checkpoint is still where freeze found it.
    """
    from qcompile.simulate import load_model
    from qcompile.simulate import simulate as run

    if data and inputs:
        raise QCompileError("give --data or --inputs, not both")
    graph, impls, extra = load_model(model)
    r = {**run(graph, data, inputs, n, impls, save_outputs), **extra}
    pct = lambda v: "-" if v is None else f"{100 * v:.2f}%"  # noqa: E731
    human = (
        f"{r['n']} inputs ({r['inputs']}): exact {100 * r['exact']:.1f}% across "
        f"{', '.join(r['compared'])}, max_abs_diff {r['max_abs_diff']:g}\n"
        "accuracy: "
        + ", ".join(f"{k.removeprefix('acc_')} {pct(v)}" for k, v in r.items() if k[:4] == "acc_")
    )
    if "gpu" in r:
        human += f"\ngpu: {r['gpu']}"
    if save_outputs:
        saved = ", ".join(f"{k}.npy" for k in ["inputs", *r["compared"]])
        human += f"\noutputs saved in {save_outputs}/ ({saved})"
    emit(r, as_json, human)


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "--target",
    required=True,
    help="fpga (pynq-z2), cpu (this host), arm (rpi4), gpu (h100), qonnx (a QONNX model file), "
    "a profile in targets/ (pynq-z2, zcu104, alveo-u250, host, rpi4, rpi5, jetson-orin, "
    "jetson-orin-gpu, h100) or a PATH.toml.",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(),
    help="Artifact directory to create (qonnx: the .onnx file).",
)
@click.option("--force", is_flag=True, help="Replace the output if it exists.")
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="qonnx only: the batch size of the model's input (qonnx runs fixed shapes).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as one JSON object.")
def export(model: str, target: str, output: str, force: bool, batch: int, as_json: bool) -> None:
    """Compile MODEL.qir for a target into an artifact directory.

    fpga: an hls4ml project (Vitis HLS by default) with bit-packed LUT kernels, the .qir,
    manifest.json and a README; `qcompile simulate DIR` builds its C simulation with g++.
    cpu / arm / gpu: the graph compiled by Apache TVM: a host library, an aarch64 object with a
    static runner (run under qemu-aarch64), or CUDA source and PTX. `qcompile simulate DIR`
    runs the artifact and checks it bit for bit against the integer simulator (gpu: where a
    CUDA device is present). qonnx: one QONNX .onnx file that qonnx's execute_onnx runs bit
    for bit (its outputs are the integers times each output's unit, qcompile.output_units).
    """
    from qcompile.backends.targets import FpgaTarget, load_target
    from qcompile.ir import qir

    if target == "qonnx":
        _export_qonnx(model, output, force, batch, as_json)
        return
    t = load_target(target)
    graph = qir.load(model)
    if isinstance(t, FpgaTarget):
        from qcompile.backends.hls4ml import export_fpga

        info = export_fpga(graph, Path(output), t, force)
        human = (
            f"exported {model} -> {output} (hls4ml {t.backend} project for {t.part}, "
            f"{t.strategy}, reuse factor {t.reuse_factor}); weight memory "
            f"{info['weight_mem_bits']} bits vs "
            f"{info['estimates']['hls4ml_default_bits']} at hls4ml's default ap_fixed<16,6>"
        )
    else:
        from qcompile.backends.tvm import export_tvm

        info = export_tvm(graph, Path(output), t, force)
        human = (
            f"exported {model} -> {output} ({info['target']}: TVM "
            f"{info['profile']['tvm_target']}, built in {info['build_s']} s)"
        )

    emit({**info, "out": output}, as_json, human)


def _export_qonnx(model: str, output: str, force: bool, batch: int, as_json: bool) -> None:
    from qcompile.interop.qonnx_export import save_qonnx
    from qcompile.ir import qir

    graph = qir.load(model)
    save_qonnx(graph, output, batch, force)
    info = {"target": "qonnx", "out": output, "batch": batch, "nodes": len(graph.nodes)}
    human = (
        f"exported {model} -> {output} (QONNX, batch {batch}): qonnx's execute_onnx gives "
        "the simulator's integers times each output's unit (metadata qcompile.output_units)"
    )
    emit(info, as_json, human)


@cli.command("import")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="Where to write MODEL.qir. [default: beside MODEL.onnx, with .qir]",
)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
def import_(model: str, output: str | None, as_json: bool) -> None:
    """Import a QONNX MODEL.onnx (as Brevitas's export_qonnx writes it) into MODEL.qir.

    Exact or not at all: a scale, rounding mode or node the integer contract cannot represent
    exactly is refused with one line naming the node. Notes (stderr) say where qonnx's own
    float32 execution of the source could round.
    """
    try:
        import qonnx  # noqa: F401

        from qcompile.interop.qonnx_import import import_qonnx
        from qcompile.ir import qir
        from qcompile.report import summary
    except ImportError as e:
        raise QCompileError(
            f"qcompile import needs qonnx ({e}): pip install 'qcompile[qonnx]'"
        ) from None

    out = Path(output) if output else Path(model).with_suffix(".qir")
    graph, notes = import_qonnx(model)
    qir.save(graph, out)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    s = summary(graph)
    result = {
        "qir": str(out),
        "nodes": len(graph.nodes),
        "params": s["params"],
        "avg_weight_bits": s["avg_weight_bits"],
        "model_bytes": s["model_bytes"],
        "notes": notes,
    }
    human = (
        f"imported {model} -> {out}: {len(graph.nodes)} nodes, "
        f"{s['avg_weight_bits']:.2f} average weight bits, exact"
    )
    emit(result, as_json, human)


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="qcompile", standalone_mode=False)
    except QCompileError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
