"""The vector instructions a target's integer kernels may use, and TIR builders for them.

The choice is the target's (``cpu_features.target_isa`` for x86-64: its psABI level or mcpu
and its mattr, for the host profile what this CPU really has; for aarch64 LLVM's reading of
its mcpu and mattr), never this machine's: an artifact runs where its target says.

- x86-64 with AVX2 (32-byte vectors) or AVX512BW (64-byte vectors): ``vpshufb`` looks up
  16-entry tables per 128-bit lane; ``vpmaddubsw`` multiplies unsigned by signed bytes into
  saturating int16 pair sums (exact only where the kernel proves no pair reaches 2^15), then
  ``vpmaddwd`` widens to int32; with VNNI (AVX512-VNNI, or AVX-VNNI at 32 bytes) ``vpdpbusd``
  adds four u8 x s8 products into each int32 lane without any intermediate saturation.
- aarch64 NEON (16-byte vectors): ``tbl`` looks up a 16-entry table; with the dot-product
  extension ``sdot`` adds four s8 x s8 products into each int32 lane, without it ``smlal`` +
  ``smlal2`` add 16 products into int16 lanes (widened by ``saddlp`` every few steps) where
  the proven ranges allow, else ``smull`` + ``saddlp`` in four instructions per 16.

Every builder returns a TIR expression (no bindings: a vector-typed variable would be spilled
to a workspace by TVM's lowering), to be called while a TVMScript macro is parsed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

X86, ARM = "x86", "arm"


@dataclass(frozen=True)
class Isa:
    """A target's integer vector unit: ``vbytes`` bytes per register, ``regs`` registers."""

    arch: str
    vbytes: int
    vnni: bool = False  # x86: vpdpbusd at vbytes
    dotprod: bool = False  # arm: sdot

    @property
    def lanes(self) -> int:
        """int32 lanes of a register."""
        return self.vbytes // 4

    @property
    def regs(self) -> int:
        return 16 if self.arch == X86 and self.vbytes == 32 else 32

    @property
    def signed_acts(self) -> bool:
        """Whether the activation operand of the dot products is signed (sdot, smull) or
        unsigned (vpmaddubsw, vpdpbusd)."""
        return self.arch == ARM

    @property
    def name(self) -> str:
        if self.arch == ARM:
            return "neon+dotprod" if self.dotprod else "neon"
        base = {32: "avx2", 64: "avx512bw"}[self.vbytes]
        return f"{base}+vnni" if self.vnni else base


def isa_of(tvm_target: dict) -> Isa | None:
    """The integer vector unit of an llvm target, or None (the plain TE schedule) where it
    has neither AVX2 nor NEON.

    >>> isa_of({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "x86-64-v3"})
    Isa(arch='x86', vbytes=32, vnni=False, dotprod=False)
    >>> isa_of({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a76"}).name
    'neon+dotprod'
    """
    from qcompile.backends.cpu_features import aarch64_features, is_x86_64, target_isa

    if tvm_target.get("kind") != "llvm":
        return None
    triple = str(tvm_target.get("mtriple", ""))
    if triple.startswith("aarch64"):
        feats = aarch64_features(tvm_target)
        return Isa(ARM, 16, dotprod="dotprod" in feats) if "neon" in feats else None
    if not is_x86_64(triple):
        return None
    feats = target_isa(tvm_target)
    if "avx512bw" in feats:
        return Isa(X86, 64, vnni="avx512vnni" in feats)
    if "avx2" in feats:
        vnni = "avxvnni" in feats or {"avx512vnni", "avx512vl"} <= feats
        return Isa(X86, 32, vnni=vnni)
    return None


# --- x86 -------------------------------------------------------------------------------------

_PSHUFB = {32: "llvm.x86.avx2.pshuf.b", 64: "llvm.x86.avx512.pshuf.b.512"}
_MADDUBS = {32: "llvm.x86.avx2.pmadd.ub.sw", 64: "llvm.x86.avx512.pmaddubs.w.512"}
_MADDWD = {32: "llvm.x86.avx2.pmadd.wd", 64: "llvm.x86.avx512.pmaddw.d.512"}
_DPBUSD = {32: "llvm.x86.avx512.vpdpbusd.256", 64: "llvm.x86.avx512.vpdpbusd.512"}
# --- aarch64 ---------------------------------------------------------------------------------
_TBL1 = "llvm.aarch64.neon.tbl1.v16i8"
_SDOT = "llvm.aarch64.neon.sdot.v4i32.v16i8"
_SMULL = "llvm.aarch64.neon.smull.v8i16"
_SADDLP = "llvm.aarch64.neon.saddlp.v4i32.v8i16"
_SADDLP8 = "llvm.aarch64.neon.saddlp.v8i16.v16i8"
_ADDP = "llvm.aarch64.neon.addp.v4i32"
_ADDP16 = "llvm.aarch64.neon.addp.v8i16"


def _call(dtype: str, name: str, *args: Any) -> Any:
    from tvm.script import tirx as T

    return T.call_llvm_pure_intrin(dtype, name, *args)


def vec(isa: Isa, dtype: str, count: int | None = None) -> str:
    """The vector type of ``count`` (default: a register's worth) ``dtype`` elements."""
    bits = int("".join(ch for ch in dtype if ch.isdigit()))
    return f"{dtype}x{count or isa.vbytes * 8 // bits}"


def lookup16(isa: Isa, table: Any, idx: Any) -> Any:
    """Bytes ``table[idx]`` per 16-byte lane (``table`` repeats its 16 entries in every
    128-bit lane; ``idx`` in 0..15)."""
    if isa.arch == ARM:
        return _call("int8x16", _TBL1, table, idx)
    return _call(vec(isa, "int8"), _PSHUFB[isa.vbytes], table, idx)


def maddubs(isa: Isa, a_u8: Any, w_s8: Any) -> Any:
    """int16 lanes: ``a[2i] * w[2i] + a[2i+1] * w[2i+1]``, saturating (x86)."""
    return _call(vec(isa, "int16"), _MADDUBS[isa.vbytes], a_u8, w_s8)


def maddwd(isa: Isa, a: Any, b: Any) -> Any:
    """int32 lanes: ``a[2i] * b[2i] + a[2i+1] * b[2i+1]`` of int16 lanes (x86)."""
    return _call(vec(isa, "int32"), _MADDWD[isa.vbytes], a, b)


def widen16(isa: Isa, v16: Any, scale: int = 1) -> Any:
    """int32 lanes: the sums of adjacent int16 lanes of ``v16``, times ``scale`` (x86
    vpmaddwd; aarch64 saddlp, scale 1)."""
    from tvm.script import tirx as T

    if isa.arch == ARM:
        assert scale == 1, "aarch64 widens int16 sums unscaled"
        return _call("int32x4", _SADDLP, v16)
    return maddwd(isa, v16, T.Broadcast(T.int16(scale), isa.vbytes // 2))


def dpbusd(isa: Isa, acc: Any, a_u8: Any, w_s8: Any) -> Any:
    """``acc`` plus, per int32 lane, four u8 x s8 products (x86 VNNI)."""
    return _call(vec(isa, "int32"), _DPBUSD[isa.vbytes], acc, a_u8, w_s8)


def sdot(acc: Any, a_s8: Any, w_s8: Any) -> Any:
    """``acc`` plus, per int32 lane, four s8 x s8 products (aarch64 dotprod)."""
    return _call("int32x4", _SDOT, acc, a_s8, w_s8)


def smull(a_s8: Any, w_s8: Any, high: bool) -> Any:
    """int16x8: the 8 products of the low (or high) halves of two s8x16 (aarch64
    smull/smull2; added to an int16 vector, smlal/smlal2)."""
    from tvm.script import tirx as T

    half = list(range(8, 16)) if high else list(range(8))
    return _call("int16x8", _SMULL, T.Shuffle([a_s8], half), T.Shuffle([w_s8], half))


def smull_pairs(a_s8: Any, w_s8: Any, high: bool) -> Any:
    """int32x4: the pair sums of the 8 products of the low (or high) halves of two s8x16
    (aarch64 smull/smull2 + saddlp)."""
    return _call("int32x4", _SADDLP, smull(a_s8, w_s8, high))


def addp(a: Any, b: Any) -> Any:
    """int32x4 ``(a0+a1, a2+a3, b0+b1, b2+b3)`` (aarch64 addp)."""
    return _call("int32x4", _ADDP, a, b)


def pair_sums8(a_s8: Any) -> Any:
    """int16x8: the sums of adjacent s8 lanes of an s8x16 (aarch64 saddlp)."""
    return _call("int16x8", _SADDLP8, a_s8)


def addp16(a: Any, b: Any) -> Any:
    """int16x8 ``(a0+a1, .., a6+a7, b0+b1, .., b6+b7)`` (aarch64 addp)."""
    return _call("int16x8", _ADDP16, a, b)
