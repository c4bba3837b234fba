"""Build an hls4ml ModelGraph from an IR graph (never from float PyTorch)."""

from __future__ import annotations

import contextlib
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qcompile.errors import QCompileError
from qcompile.ir.graph import Graph, Node
from qcompile.ir.ops import Add, AvgPool, Clip, Conv2d, Dense, Flatten, MaxPool, Op
from qcompile.ir.types import TensorInfo

# The kernel template (templates/call_KERNEL.tpl, nnet_qcompile.h) of each op class; an add
# takes add2 or add3 by its input count.
KERNELS: dict[type[Op], str] = {
    Conv2d: "lut_conv2d",
    Dense: "lut_dense",
    MaxPool: "pool2d",
    AvgPool: "pool2d",
    Clip: "clip",
    Flatten: "copy",
}
INPUT = "qc_input"


@dataclass(frozen=True)
class HlsOptions:
    backend: str = "Vitis"
    part: str = "xc7z020clg400-1"
    clock_period: float = 10.0
    io_type: str = "io_parallel"
    strategy: str = "Latency"
    reuse_factor: int = 1
    project: str = "myproject"
    # per-node reuse factors (node name, R): what ``reuse.choose_reuse`` picked for a
    # profile's ``reuse_factor = "auto"``; a node not listed takes ``reuse_factor``
    layer_reuse: tuple[tuple[str, int], ...] = ()
    reuse_auto: bool = False  # layer_reuse was chosen to fit the part (reuse_factor "auto")

    def reuse_of(self, node: str) -> int:
        """The reuse factor node ``node``'s kernel is built for: 1 under the Latency
        strategy (every loop pipelined at II 1), else its own or the model's."""
        if self.strategy == "Latency":
            return 1
        return dict(self.layer_reuse).get(node, self.reuse_factor)


def c_names(graph: Graph) -> dict[str, str]:
    """IR tensor name -> a unique C identifier (hls4ml names each layer by its output)."""
    out: dict[str, str] = {graph.input.name: INPUT}
    for t in [n.output.name for n in graph.nodes]:
        base = re.sub(r"\W", "_", t)
        base = f"l_{base}" if not base or base[0].isdigit() or base == "input" else base
        name, k = base, 1
        while name in out.values():
            k, name = k + 1, f"{base}_{k}"
        out[t] = name
    return out


def _kernel(node: Node) -> str:
    r = node.requant
    if node.weights is None and r is not None and (r.per_channel or r.bias is not None):
        raise QCompileError(
            f"node {node.name}: the fpga backend takes per-channel requantization only on "
            f"conv2d and dense layers, not on {node.kind}"
        )
    if isinstance(node.op, Add):
        if len(node.inputs) not in (2, 3):
            raise QCompileError(
                f"node {node.name}: the fpga backend adds 2 or 3 tensors, not {len(node.inputs)}"
            )
        return f"add{len(node.inputs)}"
    kernel = KERNELS.get(type(node.op))
    if kernel is None:
        raise QCompileError(f"node {node.name}: op {node.kind} has no fpga kernel")
    return kernel


def layer_list(graph: Graph, opts: HlsOptions) -> list[dict[str, Any]]:
    from qcompile.backends.hls4ml.context import kernel_context, table_type, weight_arrays

    names = c_names(graph)
    tensors = graph.tensors()
    # Latency: every loop pipelined at II=1 (and add/clip fully unrolled); Resource: each
    # layer runs its reuse factor's iterations, sharing multipliers (opts.reuse_of).
    layers: list[dict[str, Any]] = [
        {"class_name": "InputLayer", "name": INPUT, "input_shape": list(graph.input.shape)}
    ]
    for node in graph.nodes:
        ins = [tensors[t] for t in node.inputs]
        q = node.output.qtype
        layer = {
            "class_name": "QcompileLayer",
            "name": names[node.output.name],
            "inputs": [names[t] for t in node.inputs],
            "qc_shape": list(node.output.shape),
            "qc_type": (q.bits, q.signed),
            "qc_kernel": _kernel(node),
            "qc_context": kernel_context(node, ins, opts.reuse_of(node.name)),
            "qc_codes": None,
        }
        if node.weights is not None:
            arrays = weight_arrays(node)
            widths = {k: _bits(table_type(v)) for k, v in arrays.items()}
            # the kernel takes both row arrays as one type
            widths["row_pos"] = widths["row_bits"] = max(widths["row_pos"], widths["row_bits"])
            layer.update(
                qc_codes=arrays["codes"],
                qc_arrays={k: (v, widths[k]) for k, v in arrays.items() if k != "codes"},
            )
        layers.append(layer)
    return layers


def _bits(ap: str) -> int:
    return int(ap[ap.index("<") + 1 : ap.index(">")])


def hls_config(graph: Graph, out_dir: Path, opts: HlsOptions) -> dict[str, Any]:
    from hls4ml.utils.config import create_config

    from qcompile.backends.hls4ml.context import ap_type

    cfg = create_config(
        output_dir=str(out_dir),
        project_name=opts.project,
        backend=opts.backend,
        part=opts.part,
        clock_period=opts.clock_period,
        io_type=opts.io_type,
    )
    cfg["HLSConfig"] = {
        "Model": {
            "Precision": "ap_fixed<16,6>",  # unused: every tensor has an explicit type
            "ReuseFactor": opts.reuse_factor,
            "Strategy": opts.strategy,
            # Hand-built layer lists must say it: hls4ml's pass reads the key unguarded.
            # "off": our kernels index channels-first tensors, as the IR lays them out.
            "ChannelsLastConversion": "off",
            "TraceOutput": False,
        },
        "LayerName": {INPUT: {"Precision": {"result": ap_type(graph.input.qtype)}}},
    }
    # per-layer reuse factors are recorded in hls4ml_config.yml too (the kernels read
    # theirs from their config structs)
    names = c_names(graph)
    outputs = {n.name: n.output.name for n in graph.nodes}
    for node, r in opts.layer_reuse:
        cfg["HLSConfig"]["LayerName"][names[outputs[node]]] = {"ReuseFactor": r}
    return cfg


def build(graph: Graph, out_dir: Path, opts: HlsOptions) -> Any:
    """The hls4ml ModelGraph of ``graph`` (lowered by ``passes.pipelines.FPGA``), project
    files under ``out_dir`` not yet written."""
    from hls4ml.model import ModelGraph

    from qcompile.backends.hls4ml.layers import register

    register(opts.backend)
    if len(graph.outputs) != 1:
        raise QCompileError("the fpga backend needs a graph with exactly one output")
    names = c_names(graph)
    with contextlib.redirect_stdout(io.StringIO()):  # hls4ml prints every layer it builds
        return ModelGraph.from_layer_list(
            hls_config(graph, out_dir, opts),
            layer_list(graph, opts),
            inputs=[INPUT],
            outputs=[names[graph.outputs[0]]],
        )


def check_inputs(x: np.ndarray, info: TensorInfo) -> np.ndarray:
    """Inputs must already be on the input grid: integers inside the input type. Off-grid
    floats would be truncated by the C simulation's float -> ap_int conversion."""
    x = np.asarray(x)
    lo, hi = info.qtype.range
    if not np.issubdtype(x.dtype, np.integer) or (x.size and (x.min() < lo or x.max() > hi)):
        raise QCompileError(
            f"C-simulation inputs must be integers in [{lo}, {hi}] (the "
            "quantized input); quantize float inputs first"
        )
    return x.reshape(len(x), -1).astype(np.float64)  # exact: |x| < 2^53
