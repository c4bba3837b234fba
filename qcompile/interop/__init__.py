"""Interoperability with QONNX, the quantized ONNX dialect Brevitas, FINN, hls4ml and qonnx
share: :mod:`qcompile.interop.qonnx_export` writes any verified graph as a QONNX model that
qonnx's executor runs bit for bit; :mod:`qcompile.interop.qonnx_import` reads Brevitas/QONNX
models into the integer IR, exactly or not at all.

Only the export is needed on the deployment side (onnx and numpy); running and importing
QONNX models needs the ``qonnx`` extra.
"""
