"""Per-layer model summaries: output shape, parameters and analytic FLOPs.

FLOPs follow the paper: 2 x multiply-accumulates of the convolution and fully-connected
layers, for one image at inference; BatchNorm (foldable into the convolution), activations
and pooling count zero. Every primitive layer reports its own multiply-accumulates
(``macs``), and plain ``nn.Conv``/``nn.Dense``/``nn.BatchNorm`` layers (a user's own model) are
counted the same way; the summary records each layer call with ``flax.linen.intercept_methods`` while
tracing the model abstractly (``jax.eval_shape``), so no computation runs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class LayerRow:
    """One primitive layer: where it sits, what it is, and what it costs per image."""

    path: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    flops: int


@dataclasses.dataclass(frozen=True)
class ModelSummary:
    """All layers of a model for one input shape, with totals."""

    model: str
    input_shape: tuple[int, ...]
    rows: tuple[LayerRow, ...]

    @property
    def total_params(self) -> int:
        """Trainable parameters (BatchNorm scale and bias included, running statistics not)."""
        return sum(row.params for row in self.rows)

    @property
    def total_flops(self) -> int:
        """FLOPs for one image: 2 x multiply-accumulates of conv and dense layers."""
        return sum(row.flops for row in self.rows)

    def to_text(self) -> str:
        """A fixed-width table of the layers and the totals."""
        header = ("layer", "type", "output shape", "params", "FLOPs")
        lines = [
            (r.path, r.kind, "x".join(map(str, r.output_shape)), f"{r.params:,}", f"{r.flops:,}")
            for r in self.rows
        ]
        lines.append(("total", "", "", f"{self.total_params:,}", f"{self.total_flops:,}"))
        widths = [max(len(str(row[i])) for row in [header, *lines]) for i in range(5)]

        def fmt(row):
            return "  ".join(
                str(c).ljust(w) if i < 3 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths))
            )

        shape = "x".join(map(str, self.input_shape))
        rule = "-" * len(fmt(header))
        body = [fmt(header), rule, *map(fmt, lines[:-1]), rule, fmt(lines[-1])]
        return f"{self.model} on {shape} input\n" + "\n".join(body)


def flax_layer_macs(module: nn.Module, input_shape: Sequence[int], output_shape: Sequence[int]) -> int | None:
    """Multiply-accumulates per example of a plain Flax layer (``nn.Conv``, ``nn.Dense``,
    ``nn.BatchNorm``: 0), or ``None`` for a module that is not one of them."""
    if isinstance(module, nn.Conv):
        taps = math.prod(module.kernel_size) if not isinstance(module.kernel_size, int) else module.kernel_size
        return math.prod(output_shape[1:]) * taps * (input_shape[-1] // module.feature_group_count)
    if isinstance(module, nn.Dense):
        return math.prod(output_shape[1:]) * input_shape[-1]
    if isinstance(module, nn.BatchNorm):
        return 0
    return None


def _macs(module, input_shape, output_shape) -> int | None:
    if hasattr(module, "macs"):
        return module.macs(input_shape, output_shape)
    return flax_layer_macs(module, input_shape, output_shape)


def summarize(model: nn.Module, input_shape: Sequence[int] = (32, 32, 3)) -> ModelSummary:
    """Summarises ``model`` for single images of ``input_shape`` (``H, W, C``).

    Raises the model's own input errors (e.g. an image too small for the network).
    """
    records: list[tuple[tuple[str, ...], nn.Module, tuple, tuple]] = []

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        module = context.module
        if context.method_name == "__call__" and hasattr(out, "shape"):
            macs = _macs(module, tuple(args[0].shape), tuple(out.shape))
            if macs is not None:
                records.append((module.scope.path, module, tuple(out.shape), macs))
        return out

    def init(x):
        with nn.intercept_methods(record):
            return model.init(jax.random.key(0), x, train=False)

    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    variables = jax.eval_shape(init, x)
    params = variables.get("params", {})
    rows = []
    for path, module, out_shape, macs in records:
        node = params
        for key in path:
            node = node.get(key, {})
        count = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(node))
        rows.append(
            LayerRow(
                path="/".join(path),
                kind=type(module).__name__,
                output_shape=out_shape[1:],
                params=count,
                flops=2 * macs,
            )
        )
    name = type(model).__name__
    return ModelSummary(model=name, input_shape=tuple(input_shape), rows=tuple(rows))
