"""Walk a quantized network traced by torch.fx and emit the integer IR.

Supported: QuantConv2d/QuantLinear (any stage's quantizer, through ``export()``), eval-mode
BatchNorm1d/2d after them, QuantAct (ReLU/ReLU6/none + activation quantizer), ReLU/ReLU6
modules and functions, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d (sizes dividing the input),
Flatten/flatten/view(N, -1), residual ``+``, Identity and Dropout. Anything else is named in
the error.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from qcompile.errors import QCompileError
from qcompile.freeze.emit import Emitter, Target
from qcompile.freeze.values import Grid, Int, LinearTerm, Pending, Value, as_pending
from qcompile.ir import graph as ir
from qcompile.ir.types import QType, TensorInfo
from qcompile.stages.layers import QuantAct, QuantConv2d, QuantLayer, QuantLinear

PASS_THROUGH = (nn.Identity, nn.Dropout, nn.Dropout2d)
RELU_FUNCS = {F.relu: 0.0, torch.relu: 0.0, F.relu6: 6.0}


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, QuantLayer) or super().is_leaf_module(m, qualname)


def trace(net: nn.Module, in_shape: tuple[int, ...]) -> fx.GraphModule:
    try:
        gm = fx.GraphModule(net, _Tracer().trace(net))
    except Exception as e:
        raise QCompileError(
            f"cannot trace the model with torch.fx ({type(e).__name__}: {e}); "
            "freeze needs a forward without data-dependent control flow"
        ) from None
    ShapeProp(gm).propagate(torch.zeros(1, *in_shape))
    return gm


class Lowering:
    def __init__(self, gm: fx.GraphModule, x: Int) -> None:
        self.gm, self.emit = gm, Emitter()
        self.modules = dict(gm.named_modules())
        self.env: dict[fx.Node, Any] = {}
        self.x = x

    def run(self) -> tuple[list[ir.Node], list[str]]:
        outputs: list[str] = []
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                self.env[node] = self.x
            elif node.op == "output":
                outputs = [self.to_int(self.env[a], a.name).info.name for a in _flat(node.args[0])]
            else:
                try:
                    self.env[node] = self.lower(node)
                except (ValueError, NotImplementedError) as e:
                    raise QCompileError(f"layer {node.target} ({node.name}): {e}") from None
        return self.emit.nodes, outputs

    def shape(self, node: fx.Node) -> tuple[int, ...]:
        return tuple(node.meta["tensor_meta"].shape[1:])

    def arg(self, node: fx.Node, i: int = 0) -> Value:
        return self.env[node.args[i]]

    def to_int(self, v: Value, name: str) -> Int:
        return v if isinstance(v, Int) else self.emit.materialize(v, Target(), name)

    def lower(self, node: fx.Node) -> Value:
        if node.op == "call_module":
            return self.module(node, self.modules[node.target])
        if node.op in ("call_function", "call_method"):
            return self.function(node)
        raise NotImplementedError(f"unsupported fx node {node.op}")

    def module(self, node: fx.Node, m: nn.Module) -> Value:
        v = self.arg(node)
        if isinstance(m, PASS_THROUGH):
            return v
        if isinstance(m, QuantConv2d | QuantLinear):
            return self.weighted(node, m, self.to_int(v, f"{node.name}_in"))
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            if not isinstance(v, Pending):
                raise ValueError("BatchNorm must follow a conv or linear layer to be folded")
            g = (m.weight.detach().double() if m.affine else 1.0) / torch.sqrt(
                m.running_var.double() + m.eps
            )
            b = m.bias.detach().double() if m.affine else 0.0
            shift = b - m.running_mean.double() * g
            return v.scaled(np.asarray(g).reshape(-1), np.asarray(shift).reshape(-1))
        if isinstance(m, QuantAct):
            return self.quant_act(node, m, v)
        if type(m) in (nn.ReLU, nn.ReLU6):
            return self.relu(node, v, 6.0 if type(m) is nn.ReLU6 else 0.0)
        if isinstance(m, nn.Conv2d | nn.Linear):
            raise ValueError(
                "float weights: freeze needs every weight layer quantized "
                "(wbits and first_last_wbits 1..8)"
            )
        if isinstance(m, nn.MaxPool2d | nn.AvgPool2d | nn.AdaptiveAvgPool2d):
            return self.pool(node, m, self.to_int(v, f"{node.name}_in"))
        if isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                raise ValueError("only Flatten(start_dim=1) is supported")
            return self.flatten(node, v)
        raise NotImplementedError(f"unsupported layer {type(m).__name__}")

    def function(self, node: fx.Node) -> Value:
        t = node.target
        if t in (operator.add, torch.add, "add"):
            a, b = (self.env[x] for x in node.args[:2])
            return as_pending(a) + as_pending(b)
        if t in RELU_FUNCS or t in ("relu",):
            return self.relu(node, self.arg(node), RELU_FUNCS.get(t, 0.0))
        if t in (torch.flatten, "flatten") and tuple(node.args[1:]) in ((1,), ()):
            if t == "flatten" and not node.args[1:]:
                raise ValueError("x.flatten() would flatten the batch dimension")
            return self.flatten(node, self.arg(node))
        if t == "size":
            return None
        if t in ("view", "reshape") and len(node.args) == 3 and node.args[2] == -1:
            return self.flatten(node, self.arg(node))
        raise NotImplementedError(f"unsupported operation {getattr(t, '__name__', t)}")

    def weighted(self, node: fx.Node, m: QuantConv2d | QuantLinear, x: Int) -> Pending:
        ex = m.export()
        codes = ex.weight.codes.numpy().astype(np.uint8)
        levels = ex.weight.levels.double().numpy()
        levels = np.broadcast_to(levels, (codes.shape[0], levels.shape[1])).copy()
        op: ir.Conv2d | ir.Dense = ir.Dense()
        if isinstance(m, QuantConv2d):
            if m.padding_mode != "zeros" or isinstance(m.padding, str):
                raise ValueError("conv padding must be explicit zero padding")
            op = ir.Conv2d(tuple(m.stride), tuple(m.padding), tuple(m.dilation), m.groups)
        bias = ex.bias.double().numpy() if ex.bias is not None else np.zeros(codes.shape[0])
        grid = None
        if ex.weight.grid is not None:
            g, rows = ex.weight.grid, codes.shape[0]
            scale = np.broadcast_to(g.scale.double().numpy().reshape(-1), (rows,)).copy()
            zero = np.broadcast_to(g.zero.numpy().reshape(-1), (rows,)).astype(np.int64)
            grid = Grid(scale, g.step, zero.copy())
        term = LinearTerm(node.name, x, op, ex.bits, codes, levels, grid, ex.channel_bits)
        return Pending((term,), bias, self.shape(node))

    def quant_act(self, node: fx.Node, m: QuantAct, v: Value) -> Int:
        a = m.export()
        zero = round(a.lo / a.step)
        if abs(zero * a.step - a.lo) > 1e-6 * a.step:
            raise ValueError("activation quantizer's range does not contain 0 on its grid")
        lo, hi = zero, zero + (1 << a.bits) - 1
        if a.fn in ("relu", "relu6"):
            lo = max(lo, 0)
        if a.fn == "relu6":
            hi = min(hi, int(np.floor(6.0 / a.step + 0.5)))
        qtype = QType(a.bits, False) if zero >= 0 else QType.fitting(zero, hi)
        return self.emit.materialize(as_pending(v), Target(a.step, qtype, lo, hi), node.name)

    def relu(self, node: fx.Node, v: Value, cap: float) -> Int:
        x = self.to_int(v, f"{node.name}_in")
        qlo, qhi = x.info.qtype.range
        hi = min(qhi, int(np.floor(cap / x.info.unit + 0.5))) if cap else qhi
        r = ir.Requant(0, max(0, qlo), hi, x.info.qtype.bits + 1)
        info = TensorInfo(node.name, x.info.shape, x.info.qtype, x.info.scale)
        return self.emit.add(ir.Node(node.name, ir.Clip(), (x.info.name,), info, None, r))

    def pool(self, node: fx.Node, m: nn.Module, x: Int) -> Int:
        h, w = x.info.shape[1:]
        if isinstance(m, nn.AdaptiveAvgPool2d):
            oh, ow = _pair(m.output_size, (h, w))
            if h % oh or w % ow:
                raise ValueError(f"adaptive pool to {oh}x{ow} from {h}x{w} is not a plain pool")
            k = s = (h // oh, w // ow)
            p = (0, 0)
        else:
            if getattr(m, "ceil_mode", False) or _pair(getattr(m, "dilation", 1), (1, 1)) != (1, 1):
                raise ValueError("ceil_mode and dilation are not supported in pools")
            k, p = _pair(m.kernel_size, (h, w)), _pair(m.padding, (h, w))
            s = _pair(m.stride or m.kernel_size, (h, w))
        shape = self.shape(node)
        if isinstance(m, nn.MaxPool2d):
            out = TensorInfo(node.name, shape, x.info.qtype, x.info.scale)
            return self.emit.add(ir.Node(node.name, ir.MaxPool(k, s, p), (x.info.name,), out))
        if isinstance(m, nn.AvgPool2d) and not m.count_include_pad and any(p):
            raise ValueError("AvgPool2d(count_include_pad=False) with padding is not supported")
        if isinstance(m, nn.AvgPool2d) and m.divisor_override:
            raise ValueError("AvgPool2d divisor_override is not supported")
        n = k[0] * k[1]
        lo, hi = x.info.qtype.range
        qtype = QType.fitting(min(0, n * lo), n * hi, x.info.qtype.frac)
        r = ir.Requant(0, *qtype.range, qtype.bits + (0 if qtype.signed else 1))
        out = TensorInfo(node.name, shape, qtype, x.info.scale / n)
        return self.emit.add(ir.Node(node.name, ir.AvgPool(k, s, p), (x.info.name,), out, None, r))

    def flatten(self, node: fx.Node, v: Value) -> Int:
        x = self.to_int(v, f"{node.name}_in")
        out = TensorInfo(node.name, self.shape(node), x.info.qtype, x.info.scale)
        return self.emit.add(ir.Node(node.name, ir.Flatten(), (x.info.name,), out))


def _pair(v: Any, full: tuple[int, int]) -> tuple[int, int]:
    t = tuple(v) if isinstance(v, list | tuple) else (v, v)
    return tuple(f if x is None else int(x) for x, f in zip(t, full, strict=True))  # type: ignore[return-value]


def _flat(a: Any) -> list[Any]:
    return [x for y in a for x in _flat(y)] if isinstance(a, list | tuple) else [a]
