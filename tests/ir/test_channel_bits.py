"""Per-channel weight widths (``Weights.channel_bits``): row-wise packing, the verifier's
per-row rules, the .qir round trip and what inspect counts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import pytest

from qcompile.errors import QCompileError
from qcompile.ir import Graph, VerifyError, qir, verify
from qcompile.ir.graph import Table, Weights
from qcompile.ir.packing import pack_codes, pack_rows, packed_words, unpack_rows
from qcompile.passes import run_pipeline
from qcompile.report import summary
from tests.backends.helpers import mixed_chain


def _codes(rng: np.random.Generator, widths: tuple[int, ...], per_row: int) -> np.ndarray:
    return np.stack([rng.integers(0, 1 << b, per_row) for b in widths]).astype(np.uint8)


@pytest.mark.parametrize("seed", range(20))
def test_row_packing_round_trip(seed: int) -> None:
    rng = np.random.default_rng(seed)
    widths = tuple(int(b) for b in rng.integers(1, 9, rng.integers(1, 9)))
    per_row = int(rng.integers(1, 70))
    codes = _codes(rng, widths, per_row)
    words = pack_rows(codes, widths)
    assert words.dtype == np.uint32
    assert words.size == sum(packed_words(per_row, b) for b in widths)
    assert np.array_equal(unpack_rows(words, widths, per_row), codes)
    # each row starts on a word boundary and is packed exactly as a flat layer of its width
    start = 0
    for row, b in zip(codes, widths, strict=True):
        n = packed_words(per_row, b)
        assert np.array_equal(words[start : start + n], pack_codes(row, b))
        start += n


def _layer(widths: tuple[int, ...] = (3, 1, 5, 2), per_row: int = 11) -> Weights:
    rng = np.random.default_rng(1)
    bits = max(widths)
    table = Table(rng.integers(-50, 50, (len(widths), 1 << bits)).astype(np.int64))
    codes = _codes(rng, widths, per_row)
    return Weights(bits, codes.shape, codes, False, table, widths)


def test_weights_pack_codes_decoded() -> None:
    w = _layer()
    p = w.pack()
    assert p.packed and p.channel_bits == w.channel_bits
    assert p.words == p.data.size == 2 + 1 + 2 + 1  # 11 codes at 3, 1, 5, 2 bits: 33, 11, ...
    assert np.array_equal(p.codes(), w.data)
    assert np.array_equal(p.decoded(), w.decoded())
    assert p.mean_bits == pytest.approx(11 / 4)


@pytest.mark.parametrize(
    ("widths", "bits", "fragment"),
    [
        ((3, 1), 4, "widest channel is 3 bits"),
        ((2, 2), 2, "all equal"),
        ((2, 9), 9, "weight bits must be 1..8"),
        ((2, 0), 2, "widths of 1..8 bits"),
        ((2,), 2, "widths of 1..8 bits"),
    ],
)
def test_weights_reject_bad_channel_bits(widths: tuple[int, ...], bits: int, fragment: str) -> None:
    codes = np.zeros((2, 3), dtype=np.uint8)
    table = Table(np.zeros((2, 1 << min(bits, 8)), dtype=np.int64))
    with pytest.raises(ValueError, match=fragment):
        Weights(bits, (2, 3), codes, False, table, widths)


def _graph() -> Graph:
    return run_pipeline(mixed_chain("nonuniform"))


def _with_weights(g: Graph, name: str, w: Weights) -> Graph:
    return g.replace_nodes(
        [dataclasses.replace(n, weights=w) if n.name == name else n for n in g.nodes]
    )


def test_verify_rejects_a_code_beyond_its_rows_width() -> None:
    g = _graph()
    conv = next(n for n in g.nodes if n.name == "conv").weights
    assert conv.channel_bits == (3, 1, 4, 2)
    codes = conv.codes().copy()
    codes[1, 0, 0, 0] = 2  # row 1 is 1 bit wide; 2 fits the layer's 4 bits, not the row
    bad = dataclasses.replace(conv, data=codes, packed=False)
    with pytest.raises(VerifyError, match="a code is 2, beyond 1-bit codes in channel 1"):
        verify(_with_weights(g, "conv", bad))
    codes[1, 0, 0, 0] = 1  # at the row's width it is fine
    verify(_with_weights(g, "conv", dataclasses.replace(conv, data=codes, packed=False)))


def test_verify_rejects_bits_in_a_rows_padding() -> None:
    g = _graph()
    conv = next(n for n in g.nodes if n.name == "conv").weights
    # 27 codes a row: row 0 (3 bits, 81 bits) takes words 0-2, row 1 (1 bit) word 3, whose
    # bit 27 is past its last code
    words = conv.data.copy()
    words[3] |= np.uint32(1 << 27)
    with pytest.raises(VerifyError, match="bits set outside any code"):
        verify(_with_weights(g, "conv", dataclasses.replace(conv, data=words)))


def test_qir_round_trip_keeps_channel_bits(tmp_path: Path) -> None:
    g = _graph()
    qir.save(g, tmp_path / "m.qir")
    back = qir.load(tmp_path / "m.qir")
    props = {p.key: p.value for p in qir.to_onnx(g).metadata_props}
    assert props[qir.KEY_VERSION] == str(qir.FORMAT_VERSION)
    for a, b in zip(g.weighted(), back.weighted(), strict=True):
        assert b.weights.channel_bits == a.weights.channel_bits is not None
        assert np.array_equal(b.weights.data, a.weights.data)
        assert np.array_equal(b.weights.decoded(), a.weights.decoded())


def test_qir_load_validates_channel_bits() -> None:
    """A file (with a correct hash) whose channel_bits do not fit its codes is refused."""
    model = qir.to_onnx(_graph())
    node = next(n for n in model.graph.node if n.name == "conv")
    attr = next(a for a in node.attribute if a.name == "channel_bits")
    attr.ints[:] = [4, 1, 4, 2]  # row 0 now needs more words than the codes hold
    _rehash(model)
    with pytest.raises(QCompileError, match=r"malformed.*uint32 words"):
        qir.loads(model.SerializeToString())
    attr.ints[:] = [3, 1, 4]  # one width short
    _rehash(model)
    with pytest.raises(QCompileError, match=r"malformed.*channel_bits"):
        qir.loads(model.SerializeToString())
    attr.ints[:] = [3, 1, 4, 2]  # right again
    _rehash(model)
    assert qir.loads(model.SerializeToString()).nodes[0].weights.channel_bits == (3, 1, 4, 2)


def _rehash(model: onnx.ModelProto) -> None:
    import hashlib

    props = model.metadata_props
    del props[len(props) - 1]
    digest = hashlib.sha256(model.SerializeToString()).hexdigest()
    props.add(key=qir.KEY_HASH, value=digest)


def test_inspect_counts_channel_widths() -> None:
    g = _graph()
    s = summary(g)
    rows = {r["name"]: r for r in s["layers"]}
    assert rows["conv"]["weight_bits"] == pytest.approx(10 / 4)
    assert rows["conv"]["max_weight_bits"] == 4
    dense_mean = sum(1 + i % 8 for i in range(24)) / 24
    assert rows["dense"]["weight_bits"] == pytest.approx(dense_mean)
    n_conv, n_dense = 4 * 27, 24 * 144
    want = (n_conv * 10 / 4 + n_dense * dense_mean) / (n_conv + n_dense)
    assert s["avg_weight_bits"] == round(want, 4)
    # memory is the row-wise words actually stored: 27 codes at 3, 1, 4, 2 bits
    assert rows["conv"]["code_bits"] == 32 * (3 + 1 + 4 + 2)
    assert rows["conv"]["code_bits"] < 32 * packed_words(n_conv, 4)  # all rows at the widest
    dense_words = sum(packed_words(144, 1 + i % 8) for i in range(24))
    assert rows["dense"]["code_bits"] == 32 * dense_words
