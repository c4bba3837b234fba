"""The stage interface: how a training method turns a float network into a quantized one.

Every stage (``uniform``, ``dqa``, ...) has a frozen config dataclass (the ``[stage]`` table of
a recipe) and implements ``weight_quantizer``; the base class walks the network, swaps
``Conv2d``/``Linear`` for :class:`QuantConv2d`/:class:`QuantLinear` and ``ReLU``/``ReLU6`` for
:class:`QuantAct`, and puts an input quantizer in front. Training hooks default to no-ops.

First/last-layer policy: the first and last weight layers in definition order keep
``first_last_wbits`` (default 8, as in the DQA, SDQ and DMBQ papers) unless it is ``"same"``;
with ``wbits = 32`` every layer stays float. Activations after every ``ReLU``/``ReLU6`` get
``abits``; the network input gets a signed ``input_bits`` quantizer whenever anything is
quantized, because integer hardware needs integer inputs. Activations applied functionally
(``F.relu`` inside ``forward``) are not seen: use modules.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from torch import Tensor, nn

from qcompile.errors import did_you_mean
from qcompile.quant import (
    ACT_QUANTIZERS,
    FIXED_BITS,
    FLOAT_BITS,
    WEIGHT_QUANTIZERS,
    Quantizer,
    make_act_quantizer,
)
from qcompile.quant.uniform import SAWB_CLOSED_FORM
from qcompile.stages.layers import (
    QuantAct,
    QuantConv2d,
    QuantLinear,
    QuantModel,
    make_input_quant,
)


class CheckpointLoader(Protocol):
    """How a stage reads other runs (:class:`qcompile.builder.RunCheckpoints`)."""

    def trained(self, path: str, what: str) -> QuantModel:
        """The model of checkpoint ``path`` rebuilt for this run's inputs and classes, eval
        mode, without gradients; ``what`` names it in messages."""
        ...

    def copy_weights(self, model: QuantModel, path: str, what: str) -> None:
        """Copy a finished run's weights into ``model`` (weight quantizers start afresh)."""
        ...

    def recipe_wbits(self, path: str, what: str) -> int:
        """The weight bits checkpoint ``path``'s recipe trained with (32: a float run)."""
        ...


def _check_bits(name: str, bits: int) -> None:
    if not (1 <= bits <= 8 or bits == FLOAT_BITS):
        raise ValueError(f"{name} must be 1..8 or 32 (float), got {bits}")


@dataclass(frozen=True)
class StageConfig:
    """Options every stage shares (the ``[stage]`` table of a recipe)."""

    wbits: int = 4
    abits: int = 4
    weight_quant: str = "minmax"
    act_quant: str = "pact"
    per_channel: bool = True
    first_last_wbits: int | str = 8
    input_bits: int = 8
    pact_init: float = 3.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # every method's options: no NaN or inf anywhere
            value = getattr(self, f.name)
            values = value if isinstance(value, tuple) else (value,)
            if any(isinstance(v, float) and not math.isfinite(v) for v in values):
                raise ValueError(f"{f.name} must be finite, got {value}")
        _check_bits("wbits", self.wbits)
        _check_bits("abits", self.abits)
        if not 2 <= self.input_bits <= 8:
            raise ValueError(f"input_bits must be 2..8, got {self.input_bits}")
        if self.first_last_wbits != "same":
            if not isinstance(self.first_last_wbits, int):
                raise ValueError('first_last_wbits must be 1..8, 32 or "same"')
            _check_bits("first_last_wbits", self.first_last_wbits)
        if self.pact_init <= 0:
            raise ValueError(f"pact_init must be positive, got {self.pact_init}")
        if self.weight_quant not in WEIGHT_QUANTIZERS:
            raise ValueError(_choices("weight_quant", self.weight_quant, WEIGHT_QUANTIZERS))
        if self.act_quant not in ACT_QUANTIZERS:
            raise ValueError(_choices("act_quant", self.act_quant, ACT_QUANTIZERS))
        fixed = FIXED_BITS.get(self.weight_quant)
        if fixed is not None and self.wbits not in (fixed, FLOAT_BITS):
            raise ValueError(
                f"weight_quant {self.weight_quant} is {fixed}-bit; got wbits={self.wbits}"
            )
        if self.weight_quant == "sawb_closed":
            for key in ("wbits", "first_last_wbits"):
                bits = getattr(self, key)
                if bits not in (*SAWB_CLOSED_FORM, FLOAT_BITS, "same"):
                    raise ValueError(
                        f"sawb_closed has constants for {sorted(SAWB_CLOSED_FORM)} bits; "
                        f'got {key}={bits} (use weight_quant = "sawb")'
                    )


def _choices(key: str, value: str, valid: Iterable[str]) -> str:
    return f"{key} '{value}'{did_you_mean(value, valid)} is not one of {', '.join(sorted(valid))}"


class Stage(ABC):
    """A training method. Subclasses set ``name``, ``config_class`` and ``weight_quantizer``."""

    name: ClassVar[str]
    config_class: ClassVar[type[StageConfig]] = StageConfig

    def __init__(self, config: StageConfig) -> None:
        self.config = config

    @property
    def quantizes(self) -> bool:
        return self.config.wbits != FLOAT_BITS or self.config.abits != FLOAT_BITS

    @abstractmethod
    def weight_quantizer(self, name: str, layer: nn.Conv2d | nn.Linear, bits: int) -> Quantizer:
        """The quantizer for layer ``name`` at ``bits`` (< 32)."""

    def act_quantizer(self, name: str, bits: int) -> Quantizer:
        return make_act_quantizer(self.config.act_quant, bits, self.config.pact_init)

    def layer_wbits(self, index: int, count: int) -> int:
        c = self.config
        if c.wbits == FLOAT_BITS or c.first_last_wbits == "same" or 0 < index < count - 1:
            return c.wbits
        return int(c.first_last_wbits)

    def wrap(self, model: nn.Module) -> QuantModel:
        """A quantized copy of ``model`` (the original is left untouched)."""
        net = copy.deepcopy(model)
        weights = [(n, m) for n, m in net.named_modules() if type(m) in (nn.Conv2d, nn.Linear)]
        replace: dict[str, nn.Module] = {}
        for i, (name, layer) in enumerate(weights):
            bits = self.layer_wbits(i, len(weights))
            if bits == FLOAT_BITS:
                continue
            q = self.weight_quantizer(name, layer, bits)
            replace[name] = (
                QuantConv2d(layer, q) if isinstance(layer, nn.Conv2d) else QuantLinear(layer, q)
            )
        if self.config.abits != FLOAT_BITS:
            for name, m in net.named_modules():
                if type(m) in (nn.ReLU, nn.ReLU6):
                    fn = nn.ReLU6() if isinstance(m, nn.ReLU6) else nn.ReLU()
                    replace[name] = QuantAct(fn, self.act_quantizer(name, self.config.abits))
        for name, module in replace.items():
            _set_submodule(net, name, module)
        input_quant = make_input_quant(self.config.input_bits) if self.quantizes else None
        return QuantModel(net, input_quant, self)

    # Training hooks. ``step`` counts optimizer steps from 0 over the whole run.
    def prepare(self, model: QuantModel, checkpoints: CheckpointLoader, fresh: bool) -> None:  # noqa: B027
        """Called by the training loop before its first step (``fresh``: a new run, not a
        resumed one). A stage that needs another run's model (a distillation teacher, initial
        weights) gets it through ``checkpoints``, so stages build no models themselves."""

    def regularizer(self, model: QuantModel) -> Tensor | None:
        """Extra loss term added to the task loss (None: nothing to add)."""
        return None

    def extra_loss(self, model: QuantModel, x: Tensor, logits: Tensor) -> Tensor | None:
        """Extra loss term that needs the batch: its inputs ``x`` and the model's ``logits``
        (e.g. distillation from a teacher). None: nothing to add."""
        return None

    def on_step(self, model: QuantModel, step: int, total_steps: int) -> None:  # noqa: B027
        """Called before every optimizer step's forward pass."""

    def on_epoch_end(self, model: QuantModel, epoch: int, total_epochs: int) -> None:  # noqa: B027
        """Called after each training epoch (``epoch`` counts from 0)."""

    def report(self, model: QuantModel) -> dict[str, Any]:
        """Stage-specific figures for metrics.jsonl and summary.json."""
        return {}

    def finalize(self, model: QuantModel, evaluate: Callable[[], float]) -> dict[str, Any]:
        """Turn the trained model into the one that deploys (e.g. snap a mixture to its
        lowest-bit member) after the last epoch; returns figures for summary.json."""
        return {}

    def plots(self, out: Path, history: list[dict[str, Any]]) -> list[Path]:
        """Write the stage's plots into the run directory ``out``; returns their paths."""
        return []


def _set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)
