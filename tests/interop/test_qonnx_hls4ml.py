"""hls4ml's own QONNX frontend on qcompile's QONNX export: a Brevitas MLP (power-of-two scales,
so every requantization stays in float32, which hls4ml's Quant and ApplyAlpha layers take),
imported and exported again, converted by hls4ml 1.3.0 (after qonnx's cleanup and
channels-last conversion) and run in its C simulation: bit for bit the simulator's integers.

hls4ml's frontend does not take the CNNs: qonnx's channels-last conversion leaves their
average pool (and Brevitas's own export of them) in channels-first form, which hls4ml
refuses (README, "QONNX").
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qcompile.interop.qonnx_export import to_qonnx
from qcompile.interop.qonnx_import import import_qonnx
from qcompile.interop.qonnx_run import integers, output_units
from tests.interop import brevitas_models as bm
from tests.interop.helpers import float_inputs, simulated


def hls4ml_model(model, out_dir):
    import hls4ml
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.util.cleanup import cleanup_model

    m = cleanup_model(ModelWrapper(model))
    m = cleanup_model(m.transform(ConvertToChannelsLastAndClean()).transform(GemmToMatMul()))
    config = hls4ml.utils.config.config_from_onnx_model(
        m, granularity="name", backend="Vitis", default_precision="fixed<32,16>"
    )
    hm = hls4ml.converters.convert_from_onnx_model(
        m, output_dir=str(out_dir), io_type="io_parallel", backend="Vitis", hls_config=config
    )
    hm.compile()
    return hm


@pytest.mark.slow
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_hls4ml_csim_of_the_export_is_exact(tmp_path, bits) -> None:
    torch.manual_seed(bits)
    net = bm.MLP(bits).train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(32, 1, 8, 8))
    graph, _ = import_qonnx(bm.export(net.eval(), tmp_path / "m.onnx"))
    model = to_qonnx(graph, batch=1)
    assert {n.op_type for n in model.graph.node} <= {
        "Div", "Quant", "Flatten", "Transpose", "MatMul", "Mul", "Add"
    }  # fmt: skip
    hm = hls4ml_model(model, tmp_path / "hls")
    x = float_inputs(graph.input.shape, 200, spread=2.0)
    y = np.asarray(hm.predict(np.ascontiguousarray(x.reshape(len(x), -1))))
    want = simulated(graph, x)[0]
    assert np.array_equal(integers(y.reshape(want.shape), output_units(model)[0]), want)
