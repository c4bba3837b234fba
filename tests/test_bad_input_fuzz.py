"""300 seeded mutations of a small frozen model through `qcompile inspect` and `simulate`:
each is refused as one line (exit 2) or is a model that verifies and whose simulator and
frozen PyTorch model agree (exit 0). Exit 1 would be a verified model the implementations
disagree on: a gap in the verifier (issue 13, the .qir fuzzer)."""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from qcompile.ir import qir
from tests.bad_inputs import Fixtures, assert_refused, run_main

CASES = 300


def _resign(model: onnx.ModelProto) -> bytes:
    """Replace the content hash, so the edit reaches the field checks and the verifier."""
    props = model.metadata_props
    if len(props) and props[len(props) - 1].key == qir.KEY_HASH:
        del props[len(props) - 1]
    digest = hashlib.sha256(model.SerializeToString()).hexdigest()
    props.add(key=qir.KEY_HASH, value=digest)
    return model.SerializeToString()


def _bytes_edit(rng: np.random.Generator, data: bytes) -> bytes:
    out = bytearray(data)
    at = int(rng.integers(0, len(out)))
    kind = int(rng.integers(0, 4))
    if kind == 0:
        out[at] ^= 1 << int(rng.integers(0, 8))
    elif kind == 1:
        del out[at:]
    elif kind == 2:
        out[at:at] = rng.integers(0, 256, int(rng.integers(1, 32)), dtype=np.uint8).tobytes()
    else:
        del out[at : at + int(rng.integers(1, 64))]
    return bytes(out)


def _pick(rng: np.random.Generator, options: list) -> object:
    return options[int(rng.integers(0, len(options)))]


WEIRD_INTS = [0, 1, -1, 2, 3, 31, 32, 33, 63, 64, 65, 1 << 31, 1 << 40, -(1 << 62), (1 << 63) - 1]


def _field_edit(rng: np.random.Generator, model: onnx.ModelProto) -> None:
    """One edit of a node attribute, an initializer, a shape or a metadata property."""
    g = model.graph
    node = g.node[int(rng.integers(0, len(g.node)))]
    kind = int(rng.integers(0, 8))
    if kind == 0 and len(node.attribute):  # delete an attribute
        del node.attribute[int(rng.integers(0, len(node.attribute)))]
    elif kind == 1 and len(node.attribute):  # retype or revalue an attribute
        a = node.attribute[int(rng.integers(0, len(node.attribute)))]
        name = a.name
        value = _pick(rng, [
            int(_pick(rng, WEIRD_INTS)), "x", 1.5, [1, 2, 3], [int(_pick(rng, WEIRD_INTS))],
        ])  # fmt: skip
        node.attribute.remove(a)
        node.attribute.append(helper.make_attribute(name, value))
    elif kind == 2 and len(g.initializer):  # change an initializer's values, dtype or shape
        t = g.initializer[int(rng.integers(0, len(g.initializer)))]
        arr = numpy_helper.to_array(t).copy()
        how = int(rng.integers(0, 3))
        if how == 0 and arr.size:
            arr.reshape(-1)[int(rng.integers(0, arr.size))] = int(_pick(rng, WEIRD_INTS[:12]))
        elif how == 1:
            arr = arr.astype(_pick(rng, [np.int32, np.float32, np.uint8, np.int64]))
        else:
            arr = arr.reshape(-1)[: max(0, arr.size - 1)]
        t.CopyFrom(numpy_helper.from_array(arr, t.name))
    elif kind == 3:  # a value_info dimension
        vs = [*g.value_info, *g.output, *g.input]
        dims = vs[int(rng.integers(0, len(vs)))].type.tensor_type.shape.dim
        dims[int(rng.integers(0, len(dims)))].dim_value = int(_pick(rng, WEIRD_INTS))
    elif kind == 4:  # the input quantizer's description
        p = next(p for p in model.metadata_props if p.key == qir.KEY_INPUT)
        spec = json.loads(p.value)
        key = str(_pick(rng, sorted(spec)))
        if rng.random() < 0.3:
            del spec[key]
        else:
            spec[key] = _pick(
                rng, [None, "8", 0, -1, 1e308, 0.0, True, int(_pick(rng, WEIRD_INTS))]
            )
        p.value = json.dumps(spec)
    elif kind == 5:  # the free-form metadata and the version
        key = str(_pick(rng, [qir.KEY_META, qir.KEY_VERSION]))
        p = next(p for p in model.metadata_props if p.key == key)
        p.value = str(_pick(rng, ['{"data": 5}', "[]", "{", "3", "0", "x" * 5000, '{"data": "x"}']))
    elif kind == 6:  # the graph's wiring
        how = int(rng.integers(0, 3))
        if how == 0:
            g.node.remove(node)
        elif how == 1 and len(node.input):
            node.input[0] = str(_pick(rng, ["ghost", "input", g.node[0].output[0]]))
        else:
            node.op_type = str(_pick(rng, ["dense", "conv2d", "maxpool", "add", "Relu", ""]))
    else:  # names
        node.name = str(_pick(rng, ["", g.node[0].name, "n" * 3000, "a\nb"]))


def test_mutated_models_through_the_cli(
    bad: Fixtures, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Relative names: messages clip long paths, and a worker's tmp_path (pytest-xdist) is
    # long enough to clip the file name itself away.
    monkeypatch.chdir(tmp_path)
    original = bad.qir.read_bytes()
    rng = np.random.default_rng(20260513)
    seen: Counter[str] = Counter()
    start = time.perf_counter()
    for case in range(CASES):
        if case % 2:
            data = _bytes_edit(rng, original)
        else:
            model = onnx.load_model_from_string(original)
            for _ in range(int(rng.integers(1, 3))):
                _field_edit(rng, model)
            data = _resign(model)
        path = Path(f"case{case}.qir")
        path.write_bytes(data)
        r = run_main(["inspect", path])
        if r.code != 0:
            assert_refused(r, f"case{case}.qir")
            seen["refused"] += 1
            continue
        r = run_main(["simulate", path, "--inputs", bad.inputs])
        assert r.code in (0, 2), (case, r.stderr)  # 1: a verified model that disagrees
        if r.code == 2:
            assert_refused(r)
        seen["refused" if r.code else "agreed"] += 1
    print(f"{CASES} mutants in {time.perf_counter() - start:.1f}s: {dict(seen)}")
    assert seen["refused"] >= CASES * 0.8, seen
