"""One hls4ml layer class for every IR node, registered through hls4ml's Extension API.

The layer carries its node's kernel name, output type and packed weights; the templates
render its config struct from :class:`KernelContext` and its call from ``call_KERNEL.tpl``.
"""

from __future__ import annotations

from dataclasses import replace

import hls4ml
from hls4ml.backends.template import FunctionCallTemplate, LayerConfigTemplate
from hls4ml.model.layers import Layer
from hls4ml.model.types import IntegerPrecisionType

from qcompile.backends.hls4ml.context import TEMPLATES, KernelContext

HEADER = "nnet_utils/nnet_qcompile.h"


def int_type(bits: int, signed: bool) -> IntegerPrecisionType:
    return IntegerPrecisionType(width=bits, signed=signed)


# The weight arrays of a weighted layer (context.weight_arrays) and their C names' prefixes.
ARRAYS = {"levels": "l", "bias": "b", "mult": "m", "row_pos": "rp", "row_bits": "rb"}


class QcompileLayer(Layer):
    """An IR node: attributes ``qc_shape``, ``qc_type`` (bits, signed), ``qc_kernel``,
    ``qc_context`` and, for weight layers, ``qc_codes`` (uint32 words) and ``qc_arrays``
    (name -> (int64 array, signed bits)) for the other arrays the kernel takes."""

    def initialize(self) -> None:
        bits, signed = self.get_attr("qc_type")
        self.add_output_variable(list(self.get_attr("qc_shape")), precision=int_type(bits, signed))
        codes = self.get_attr("qc_codes")
        if codes is not None:
            self.add_weights_variable(
                "codes", "c{index}", precision=int_type(32, False), data=codes
            )
            for name, (data, width) in self.get_attr("qc_arrays").items():
                self.add_weights_variable(
                    name, ARRAYS[name] + "{index}", data=data, precision=int_type(width, True)
                )


class QcompileConfigTemplate(LayerConfigTemplate):
    def __init__(self) -> None:
        super().__init__(QcompileLayer)

    def format(self, node: QcompileLayer) -> str:
        ctx: KernelContext = node.get_attr("qc_context")
        res_t = node.get_output_variable().type.name
        if node.model.config.get_config_value("IOType") == "io_stream":
            res_t += "::value_type"  # streams carry nnet::array chunks of the element type
        ctx = replace(ctx, res_t=res_t)
        if node.get_attr("qc_codes") is not None:
            ctx = replace(
                ctx,
                level_t=node.get_weights("levels").type.name,
                bias_t=node.get_weights("bias").type.name,
                mult_t=node.get_weights("mult").type.name,
                row_t=node.get_weights("row_pos").type.name,
            )
        return ctx.render(node.index)


class QcompileFunctionTemplate(FunctionCallTemplate):
    def __init__(self) -> None:
        super().__init__(QcompileLayer, include_header=[HEADER])

    def format(self, node: QcompileLayer) -> str:
        out = node.get_output_variable()
        params = {"config": f"config{node.index}", "output": out.name, "output_t": out.type.name}
        for i, name in enumerate(node.inputs):
            var = node.get_input_variable(name)
            params[f"in{i}"], params[f"in{i}_t"] = var.name, var.type.name
        params["input"], params["input_t"] = params["in0"], params["in0_t"]
        if node.get_attr("qc_codes") is not None:
            params["codes"] = node.get_weights("codes").name
            params.update({k: node.get_weights(k).name for k in ARRAYS})
        kernel = node.get_attr("qc_kernel")
        call = (TEMPLATES / f"call_{kernel}.tpl").read_text().strip()
        if node.model.config.get_config_value("IOType") != "io_stream":
            return call.format(**params)
        return self._stream(node, kernel, call, params)

    @staticmethod
    def _stream(node: QcompileLayer, kernel: str, call: str, params: dict) -> str:
        """The same call on buffers drained from, and streamed back into, the streams."""
        reads, i = [], 0
        while f"in{i}" in params:
            var = node.get_input_variable(node.inputs[i])
            n, buf = var.size(), f"qc_in{node.index}_{i}"
            reads.append(
                f"    {params[f'in{i}_t']}::value_type {buf}[{n}];\n"
                f"    nnet::qc::from_stream<{params[f'in{i}_t']}, {n}>"
                f"({params[f'in{i}']}, {buf});"
            )
            params[f"in{i}"], params[f"in{i}_t"] = buf, f"{params[f'in{i}_t']}::value_type"
            i += 1
        stream_out, out_t = params["output"], params["output_t"]
        obuf = f"qc_out{node.index}"
        params.update(
            input=params["in0"],
            input_t=params["in0_t"],
            output=obuf,
            output_t=f"{out_t}::value_type",
        )
        wrapper = (TEMPLATES / "call_stream.tpl").read_text()
        return wrapper.format(
            kernel=kernel,
            reads="\n".join(reads),
            output_t=out_t,
            obuf=obuf,
            n_out=node.get_output_variable().size(),
            call=call.format(**params),
            output=stream_out,
        )


_registered: set[str] = set()


def register(backend: str) -> None:
    """Register the layer, its templates and the kernel header with ``backend`` (once)."""
    if backend in _registered:
        return
    hls4ml.model.layers.register_layer("QcompileLayer", QcompileLayer)
    b = hls4ml.backends.get_backend(backend)
    b.register_template(QcompileConfigTemplate)
    b.register_template(QcompileFunctionTemplate)
    b.register_source(TEMPLATES / "nnet_qcompile.h")
    _registered.add(backend)
