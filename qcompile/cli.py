"""The ``qcompile`` command line (click).

User mistakes raise :class:`QCompileError` and end as one line on stderr with exit code 2
(``simulate`` exits 1 when implementations disagree); anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from qcompile.errors import Disagreement, QCompileError, one_line
from qcompile.methods import METHODS


def _written_qir(graph: Any, out: Path, **extra: Any) -> dict[str, Any]:
    """What freeze and import report of the .qir they wrote (``--json``)."""
    from qcompile.report import summary

    s = summary(graph)
    return {
        "qir": str(out),
        "nodes": len(graph.nodes),
        "params": s["params"],
        "avg_weight_bits": s["avg_weight_bits"],
        "model_bytes": s["model_bytes"],
        **extra,
    }


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
    help="Zoo name (mlp, lenet, resnet20, resnet18, vgg_small, mobilenetv2, jet_mlp) "
    "or FILE.py:FACTORY. [default: lenet]",
)
@click.option(
    "--data",
    help="digits, mnist5k, jets (synthetic jet tagging), cifar10 or imagefolder. [default: digits]",
)
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
    # A layer whose channels have their own widths (DMBQ) shows their mean.
    bits = ", ".join(f"{k}:{round(v, 2):g}" for k, v in summary["bits"].items())
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
@click.option(
    "--model",
    "model_spec",
    help="The architecture to rebuild, replacing the one the checkpoint's recipe names. "
    "Needed when that is a FILE.py:FACTORY: qcompile imports no code named inside a "
    "checkpoint, so name the factory yourself.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
def freeze(checkpoint: str, output: str | None, model_spec: str | None, as_json: bool) -> None:
    """Freeze a trained CHECKPOINT into the integer IR file MODEL.qir.

    Folds BatchNorm and activation scales into per-channel integer LUTs and biases, chooses
    fixed-point fractions and accumulator widths, packs the codes and verifies the graph.
    The .qir records the checkpoint's path and SHA-256, its recipe and its dataset's name.
    """
    from qcompile.fileio import check_writable, writing
    from qcompile.freeze import freeze_checkpoint
    from qcompile.ir import qir

    out = Path(output) if output else Path(checkpoint).parent / "model.qir"
    check_writable(out, "model")  # before the work
    graph = freeze_checkpoint(checkpoint, model_spec)
    with writing(out):
        qir.save(graph, out)
    result = _written_qir(graph, out, checkpoint_sha256=graph.meta()["checkpoint_sha256"])
    human = (
        f"froze {checkpoint} -> {out}: {len(graph.nodes)} nodes, "
        f"{result['avg_weight_bits']:.2f} average weight bits, {result['model_bytes']} bytes"
    )
    emit(result, as_json, human)


# One option on export and inspect: the same words and values in both.
REUSE_FACTOR = click.option(
    "--reuse-factor",
    metavar="auto|N",
    help="fpga profiles: each layer's reuse factor R (R pipelined iterations sharing its "
    "multipliers), in place of the profile's: auto (one per layer, chosen to fit 80% of the "
    "part at the lowest latency) or an integer for every layer; the Latency strategy builds "
    "every layer at 1.",
)


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "--target",
    help="An fpga profile (fpga, pynq-z2, zcu104, alveo-u250 or a PATH.toml): add the "
    "resource and latency estimate of its hls4ml project and check it fits the part.",
)
@REUSE_FACTOR
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def inspect(model: str, target: str | None, reuse_factor: str | None, as_json: bool) -> None:
    """Per-layer table of MODEL.qir: op, shape, weight bits, levels, parameters, memory;
    with --target, the FPGA estimate (cycles, latency, LUT, FF, DSP, BRAM18 per layer)."""
    from qcompile.ir import qir
    from qcompile.report import summary, table

    t = None
    if target is None and reuse_factor is not None:
        raise QCompileError("inspect --reuse-factor needs --target (an fpga profile)")
    if target is not None:
        from qcompile.backends.registry import artifact_kind, backend
        from qcompile.backends.targets import load_target, with_reuse_factor

        t = with_reuse_factor(load_target(target), reuse_factor)
        if not backend(artifact_kind(t)).preview:  # checked before reading the model
            raise QCompileError(
                f"inspect --target {target}: estimates are for fpga profiles (pynq-z2, zcu104, "
                f"alveo-u250), not {t.kind}; `qcompile export --target rtl` reports da4ml's cost"
            )
    graph = qir.load(model)
    s = summary(graph)
    human = "" if as_json else table(s)
    if t is not None:
        from qcompile.backends.registry import preview

        est, text = preview(graph, t)
        s["estimate"] = est.as_dict()
        human += f"\n\n{text}"
    emit(s, as_json, human)


@cli.command()
@click.argument("model", type=click.Path(exists=False))
@click.option("--data", help="Dataset whose test split to run. [default: the one trained on]")
@click.option(
    "--data-dir",
    help="Directory of a cifar10 or imagefolder dataset (a directory recorded in the .qir "
    "is never read).",
)
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
    "--checkpoint",
    type=click.Path(dir_okay=False),
    help="Also run the trained (fake-quant) model of this checkpoint and report its "
    "accuracy; it must be the file the .qir was frozen from (its SHA-256 is checked).",
)
@click.option(
    "--model",
    "model_spec",
    help="With --checkpoint: the architecture to rebuild, needed when its recipe names a "
    "FILE.py:FACTORY (qcompile imports no code named inside a checkpoint).",
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
    data_dir: str | None,
    inputs: str | None,
    n: int,
    checkpoint: str | None,
    model_spec: str | None,
    save_outputs: str | None,
    as_json: bool,
) -> None:
    """Run MODEL (a .qir file or an exported artifact directory) through every
    implementation and compare their outputs bit for bit.

    Always the integer simulator and the PyTorch frozen model; for an artifact also the
    artifact itself (FPGA C simulation, TVM cpu library, ARM runner under qemu, or the CUDA
    library where a GPU is present), after checking every artifact file against the SHA-256
    its manifest records. Reports `exact`, `max_abs_diff` and the accuracy of each, and, with
    --checkpoint, of the trained fake-quant model.

    Exit status: 0 all implementations agree on every input; 1 they disagree (the message
    names which, on how many inputs, and the first differing input); 2 a usage or input
    error (nothing was compared).
    """
    from qcompile.simulate import disagreement, load_model
    from qcompile.simulate import simulate as run

    if data and inputs:
        raise QCompileError("give --data or --inputs, not both")
    if model_spec and not checkpoint:
        raise QCompileError("--model only applies with --checkpoint")
    graph, impls, extra = load_model(model)
    r = {
        **run(graph, data, inputs, n, impls, data_dir=data_dir, checkpoint=checkpoint,
              model_spec=model_spec, save_outputs=save_outputs),
        **extra,
    }  # fmt: skip

    def show(v: float | None, form: str = "{:.2%}") -> str:
        return "-" if v is None else form.format(v)

    human = (
        f"{r['n']} inputs ({r['inputs']}): exact {100 * r['exact']:.1f}% across "
        f"{', '.join(r['compared'])}, max_abs_diff {show(r['max_abs_diff'], '{:g}')}\n"
        "accuracy: "
        + ", ".join(f"{k.removeprefix('acc_')} {show(v)}" for k, v in r.items() if k[:4] == "acc_")
    )
    if "gpu" in r:
        human += f"\ngpu: {r['gpu']}"
    if save_outputs:
        saved = ", ".join(f"{k}.npy" for k in ["inputs", *r["compared"]])
        human += f"\noutputs saved in {save_outputs}/ ({saved})"
    problem = disagreement(r)
    # On a disagreement stderr holds only the error line (under --json the JSON has it all).
    emit(r, as_json, "" if problem and as_json else human)
    if problem:
        raise Disagreement(problem)


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "--target",
    required=True,
    help="fpga (pynq-z2), rtl (rtl-zcu104), cpu (this host's CPU features), x86-64-v3 / "
    "x86-64-v4 (portable x86 levels: AVX2 / AVX-512), arm (rpi4), gpu (h100), qonnx (a QONNX "
    "model file), a profile in targets/ (pynq-z2, zcu104, alveo-u250, rtl-zcu104, host, "
    "x86-64-v3, x86-64-v4, rpi4, rpi5, jetson-orin, jetson-orin-gpu, h100) or a PATH.toml.",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(),
    help="Artifact directory to create (qonnx: the .onnx file).",
)
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="qonnx only: the batch size of the model's input (qonnx runs fixed shapes).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Replace the output if it exists and is an artifact (or empty; qonnx: a file).",
)
@REUSE_FACTOR
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as one JSON object.")
def export(
    model: str,
    target: str,
    output: str,
    force: bool,
    batch: int,
    reuse_factor: str | None,
    as_json: bool,
) -> None:
    """Compile MODEL.qir for a target into an artifact directory.

    fpga: an hls4ml project (Vitis HLS by default) with bit-packed integer kernels, the .qir,
    manifest.json with a resource and latency estimate (printed in total here; per layer by
    `qcompile inspect MODEL --target PROFILE`; a warning when it does not fit the part) and a
    README; `qcompile simulate DIR` builds its C simulation with g++. The layers' reuse
    factors are the profile's (pynq-z2: auto, one per layer chosen to fit the part) unless
    given by the reuse factor option.

    rtl: fully parallel Verilog of the whole model from da4ml (no vendor tool; dense, conv2d,
    add, clip, flatten, pools) with Vivado/Quartus scripts and da4ml's cost estimate (LUT,
    FF, latency); a model over the profile's max_macs or max_solve_s is one error.
    `qcompile simulate DIR` runs it under Verilator.

    cpu / arm / gpu: the graph compiled by Apache TVM: a host library, an aarch64 object with a
    static runner (run under qemu-aarch64), or CUDA source and PTX. `qcompile simulate DIR`
    runs the artifact and checks it bit for bit against the integer simulator (gpu: where a
    CUDA device is present).

    qonnx: one QONNX .onnx file that qonnx's execute_onnx runs bit for bit (its outputs are
    the integers times each output's unit, qcompile.output_units).
    """
    from qcompile.backends.artifact import check_output
    from qcompile.backends.registry import deploy, describe
    from qcompile.backends.targets import load_target, with_reuse_factor
    from qcompile.ir import qir

    if target == "qonnx":
        if reuse_factor is not None:
            raise QCompileError("--reuse-factor is for fpga profiles, not qonnx; leave it out")
        _export_qonnx(model, output, force, batch, as_json)
        return
    t = with_reuse_factor(load_target(target), reuse_factor)
    graph, qir_bytes = qir.read(model)
    check_output(Path(output), force)  # before compiling
    info = deploy(graph, t, Path(output), force, qir_bytes)
    first, *more = describe(info).split("\n")  # an estimate, a warning: lines of their own
    human = "\n".join([f"exported {model} -> {output} ({first})", *more])
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
    except ImportError as e:
        raise QCompileError(
            f"qcompile import needs qonnx ({e}): pip install 'qcompile[qonnx]'"
        ) from None

    out = Path(output) if output else Path(model).with_suffix(".qir")
    graph, notes = import_qonnx(model)
    qir.save(graph, out)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    result = _written_qir(graph, out, notes=notes)
    human = (
        f"imported {model} -> {out}: {len(graph.nodes)} nodes, "
        f"{result['avg_weight_bits']:.2f} average weight bits, exact"
    )
    emit(result, as_json, human)


def main(argv: list[str] | None = None) -> None:
    """Run the command line; a user's mistake ends as one line on stderr and exit status 2
    (1 when `simulate` finds implementations that disagree)."""
    try:
        cli.main(args=argv, prog_name="qcompile", standalone_mode=False)
    except QCompileError as e:
        click.echo(f"error: {one_line(str(e))}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:  # `qcompile inspect m.qir | head -1`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        sys.exit(141)


if __name__ == "__main__":
    main()
