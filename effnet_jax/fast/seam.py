"""The one seam between the reference models and the fast CPU kernels.

``fast_path()`` is a context in which Flax modules the fast package knows are computed by its
kernels instead of their own ``__call__``, on their own variables (``flax.linen``'s method
interception; nothing in the model changes):

* whole blocks that declare a fused kernel where they are defined (``@fused_on_cpu(kernel,
  computes=...)`` on the class, e.g. the stock ``EffNetBlock``, whose BatchNorm, pooling and 1x1
  products share hand-written gradients: ``effnet_jax.fast.blocks``), as long as their
  ``__call__`` has the syntax tree the kernel was written for;
* the plain layers any model is made of: ``nn.Conv`` (depthwise as shifted multiply-adds,
  1x1 and 2-tap strided convolutions as matmuls, dense ones with a backward pass XLA:CPU keeps
  on Eigen inside ``lax.scan``: ``dense_conv``) and ``nn.BatchNorm`` (one-pass statistics and a
  hand-written gradient).

Matching is by exact class: a subclass, or a module the fast path does not know, runs its own
``__call__`` (its children may still be fast layers). A layer configured in a way the kernels
do not cover (dilation, masks, explicit padding, ...) runs its own ``__call__`` too. ``init``
always runs the reference code. Tests check every route against the reference to 1e-5.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import inspect
import logging
import textwrap
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from effnet_jax.fast import fused, kernels
from effnet_jax.fast.dense_conv import dense_conv

Handler = Callable[..., Any]  # handler(module, *args, **kwargs) -> output, or NotImplemented
_HANDLERS: dict[type, Handler] = {}
_log = logging.getLogger("effnet_jax")
_recorded: list[list[tuple[str, str]]] = []  # (class name, how it ran) while describe_kernels traces


def register(cls: type, handler: Handler) -> None:
    """Computes modules of exactly class ``cls`` with ``handler(module, *args, **kwargs)``
    inside ``fast_path()``; the handler returns ``NotImplemented`` to decline a call."""
    _HANDLERS[cls] = handler


def handles(module: nn.Module) -> bool:
    """Whether the fast path has a handler for ``module``'s exact class."""
    return type(module) in _HANDLERS


def structure_digest(function) -> str | None:
    """SHA-256 of ``function``'s syntax tree: comments, formatting and docstrings leave it as it
    is, any change to what the code does changes it; ``None`` where the source cannot be read."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError):
        return None
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()


def fused_on_cpu(kernel: Handler, computes: str):
    """Class decorator, written where a block is defined: on the fast path, modules of exactly this
    class run as ``kernel(module, *args, **kwargs)`` (one fused function on their own variables),
    provided the class's ``__call__`` still has the syntax tree ``computes``
    (``structure_digest``) that the kernel was written for. An edited ``__call__`` (another layer,
    another order) runs layer by layer instead, with a warning once; a subclass always does; and
    ``implementation="xla"`` runs ``__call__`` as written (where a breakpoint fires)."""
    def declare(cls):
        @functools.lru_cache(maxsize=None)
        def still_the_declared_block() -> bool:
            same = structure_digest(cls.__call__) == computes
            if not same:
                _log.warning("%s.__call__ is not the block %s.%s computes (edited?): it runs layer by layer "
                             "on the fast nn.Conv/nn.BatchNorm instead", cls.__qualname__, kernel.__module__,
                             kernel.__name__)
            return same

        def handler(module, *args, **kwargs):
            return kernel(module, *args, **kwargs) if still_the_declared_block() else NotImplemented

        handler.recheck = still_the_declared_block.cache_clear  # after editing __call__ in a live session
        register(cls, handler)
        cls.fused_cpu_kernel = f"{kernel.__module__}.{kernel.__name__}"
        return cls

    return declare


def _intercept(next_fun, args, kwargs, context):
    module = context.module
    if context.method_name != "__call__" or module.is_initializing():
        return next_fun(*args, **kwargs)
    handler = _HANDLERS.get(type(module))
    out = NotImplemented if handler is None else handler(module, *args, **kwargs)
    if _recorded and not type(module).__module__.startswith("flax."):
        _recorded[-1].append((type(module).__name__, "layer by layer" if out is NotImplemented else "fused"))
    return next_fun(*args, **kwargs) if out is NotImplemented else out


@contextlib.contextmanager
def fast_path(enabled: bool = True):
    """Within this context (if ``enabled``), known modules run on the fast kernels."""
    if not enabled:
        yield
        return
    with nn.intercept_methods(_intercept):
        yield


def describe_kernels(model, input_shape) -> str:
    """What computes ``model`` (an ``ImageClassifier``) on ``input_shape`` (``(H, W, C)``) here, as
    the log and the results say it: ``"xla"`` (the modules as written), or which blocks run as one
    fused function and which layer by layer, e.g. ``"fused EffNetBlock"``, ``"layer by layer:
    SEGELUBlock"``. Traces the model once (no compile)."""
    if getattr(model, "resolved_implementation", "xla") != "fast":
        return "xla"
    sample = jnp.zeros((2, *input_shape), model.dtype)
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), sample, train=False))
    _recorded.append([])
    try:
        jax.eval_shape(lambda v: model.apply(v, sample, train=True, mutable=["batch_stats"],
                                             rngs={"dropout": jax.random.PRNGKey(0)}), variables)
    finally:
        events = _recorded.pop()
    fused = sorted({name for name, how in events if how == "fused"})
    layered = sorted({name for name, how in events if how != "fused"})
    parts = ([f"fused {', '.join(fused)}"] if fused else []) + ([f"layer by layer: {', '.join(layered)}"] if layered else [])
    return "; ".join(parts) or "layer by layer"


def _pair(value, default=1) -> tuple[int, int]:
    if value is None:
        return (default, default)
    if isinstance(value, int):
        return (value, value)
    return tuple(value)


def same_padding(spatial, kernel, strides) -> tuple[tuple[int, int], ...]:
    """TensorFlow/Flax 'SAME' padding (the extra pixel after) for each spatial axis."""
    return tuple(lax.padtype_to_pads(tuple(spatial), tuple(kernel), tuple(strides), "SAME"))


def conv_forward(x, kernel, strides, padding: str, groups: int):
    """A convolution (NHWC, HWIO kernel) in its fast form: depthwise as shifted multiply-adds,
    1x1 and 2-tap strided ones as matmuls, and every other (dense or grouped k x k) through
    ``dense_conv``, whose gradients stay on XLA's fast convolution inside loops too."""
    kh, kw, _, cout = kernel.shape
    cin = x.shape[-1]
    if groups == cin and groups > 1 and cout % cin == 0:  # depthwise, with a multiplier
        pads = same_padding(x.shape[1:3], (kh, kw), strides) if padding == "SAME" else ((0, 0), (0, 0))
        if cout > cin:  # grouped-conv convention: output channel o reads input channel o // multiplier
            x = jnp.repeat(x, cout // cin, axis=-1)
        return kernels.depthwise_shift_add(x, kernel[:, :, 0, :], strides, pads)
    if (kh, kw) == (1, 1) and strides == (1, 1):
        if groups == 1:
            return kernels.matmul_channels(x, kernel[0, 0])
        per_in, per_out = cin // groups, cout // groups
        y = jnp.einsum("...gi,igo->...go", x.reshape(*x.shape[:-1], groups, per_in),
                       kernel[0, 0].reshape(per_in, groups, per_out))
        return y.reshape(*x.shape[:-1], cout)
    stride_axis = {(1, 2): 2, (2, 1): 1}.get(strides)
    if groups == 1 and (kh, kw) in ((1, 2), (2, 1)) and stride_axis is not None:
        taps = kernel.reshape(2, cin, cout)
        if padding == "VALID" and strides == (kh, kw):  # the seed's: taps along the strided axis
            return kernels.pair_conv_valid(x, taps, stride_axis)
        if padding == "SAME" and strides == (kw, kh):  # Keras': taps across it
            return kernels.pair_conv_same(x, taps, stride_axis, 3 - stride_axis)
    if cin % groups or cout % groups:
        return NotImplemented  # the reference raises its own error
    pads = same_padding(x.shape[1:3], (kh, kw), strides) if padding == "SAME" else ((0, 0), (0, 0))
    return dense_conv(x, kernel, strides, pads, groups)


def _conv(module: nn.Conv, x):
    plain = (module.mask is None and _pair(module.kernel_dilation) == (1, 1)
             and _pair(module.input_dilation) == (1, 1) and module.padding in ("SAME", "VALID")
             and module.shared_weights and module.conv_general_dilated is None
             and module.conv_general_dilated_cls is None and x.ndim == 4
             and not isinstance(module.kernel_size, int) and len(module.kernel_size) == 2)
    if not plain:
        return NotImplemented
    kernel = module.get_variable("params", "kernel")
    bias = module.get_variable("params", "bias") if module.use_bias else None
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=module.dtype)
    y = conv_forward(x, kernel, _pair(module.strides), module.padding, module.feature_group_count)
    if y is NotImplemented or bias is None:
        return y
    return y + bias


def batch_norm_dtype(module: nn.BatchNorm, x):
    """The output dtype ``nn.BatchNorm`` gives ``x``."""
    return module.dtype or jnp.promote_types(x.dtype, module.param_dtype)


def _identity(x):
    return x


def _batch_norm(module: nn.BatchNorm, x, use_running_average=None, *, mask=None):
    use_running_average = nn.merge_param("use_running_average", module.use_running_average, use_running_average)
    plain = (mask is None and x.ndim == 4 and module.axis in (-1, 3) and module.axis_name is None
             and module.use_bias and module.use_scale and module.axis_index_groups is None)
    if not plain or (not use_running_average and not module.is_mutable_collection("batch_stats")):
        return NotImplemented  # the reference raises its own error for the latter
    scale = module.get_variable("params", "scale")
    bias = module.get_variable("params", "bias")
    mean = module.get_variable("batch_stats", "mean")
    var = module.get_variable("batch_stats", "var")
    dtype = batch_norm_dtype(module, x)
    if use_running_average:
        return kernels.batch_norm_inference(x.astype(dtype), scale, bias, mean, var, module.epsilon, dtype)
    y, batch_mean, batch_var = fused.act_batch_norm(x, scale, bias, _identity, module.epsilon, dtype)
    update_running_averages(module, "", mean, var, batch_mean, batch_var, module.momentum)
    return y


def update_running_averages(module: nn.Module, name: str, mean, var, batch_mean, batch_var, momentum) -> None:
    """``module``'s BatchNorm statistics (its own if ``name`` is empty, else its child
    ``name``'s) moved towards the batch's: ``m * running + (1 - m) * batch``."""
    mean = momentum * mean + (1.0 - momentum) * batch_mean
    var = momentum * var + (1.0 - momentum) * batch_var
    if name:
        module.put_variable("batch_stats", name, {"mean": mean.astype(jnp.float32), "var": var.astype(jnp.float32)})
    else:
        module.put_variable("batch_stats", "mean", mean.astype(jnp.float32))
        module.put_variable("batch_stats", "var", var.astype(jnp.float32))


register(nn.Conv, _conv)
register(nn.BatchNorm, _batch_norm)
