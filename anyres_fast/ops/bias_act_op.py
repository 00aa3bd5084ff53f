"""bias_act: y = clamp(act(x + b) * gain, -clamp, +clamp) (StyleGAN2/3 semantics, docs/ops.md §6).

Reference only (pure PyTorch, differentiable to any order). b is [x.shape[dim]] and broadcast along
`dim`. alpha and gain default per activation (lrelu: alpha 0.2, gain sqrt(2)); clamp=None skips it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from . import _dispatch

OP = "bias_act"


@dataclass(frozen=True)
class Activation:
    func: Callable[[torch.Tensor, float], torch.Tensor]
    def_alpha: float
    def_gain: float


ACTIVATIONS = {
    "linear": Activation(lambda x, a: x, 0.0, 1.0),
    "relu": Activation(lambda x, a: F.relu(x), 0.0, math.sqrt(2)),
    "lrelu": Activation(lambda x, a: F.leaky_relu(x, a), 0.2, math.sqrt(2)),
    "tanh": Activation(lambda x, a: torch.tanh(x), 0.0, 1.0),
    "sigmoid": Activation(lambda x, a: torch.sigmoid(x), 0.0, 1.0),
    "elu": Activation(lambda x, a: F.elu(x), 0.0, 1.0),
    "selu": Activation(lambda x, a: F.selu(x), 0.0, 1.0),
    "softplus": Activation(lambda x, a: F.softplus(x), 0.0, 1.0),
    "swish": Activation(lambda x, a: torch.sigmoid(x) * x, 0.0, math.sqrt(2)),
}


def bias_act_ref(x: torch.Tensor, b: Optional[torch.Tensor] = None, dim: int = 1, act: str = "linear",
                 alpha: Optional[float] = None, gain: Optional[float] = None,
                 clamp: Optional[float] = None) -> torch.Tensor:
    """The definition of bias_act in PyTorch (no argument checks: use bias_act for those).

    Args:
        x: float tensor; b: None or (x.shape[dim],); dim: int >= 0; act: a name of ACTIVATIONS;
        alpha, gain: None (the activation's defaults) or floats; clamp: None or float >= 0.
    Returns:
        Tensor like x.
    Raises:
        KeyError: unknown act.
    """
    spec = ACTIVATIONS[act]
    alpha = spec.def_alpha if alpha is None else float(alpha)
    gain = spec.def_gain if gain is None else float(gain)
    if b is not None:
        x = x + b.to(x.dtype).reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = spec.func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def bias_act(x: torch.Tensor, b: Optional[torch.Tensor] = None, dim: int = 1, act: str = "linear",
             alpha: Optional[float] = None, gain: Optional[float] = None, clamp: Optional[float] = None,
             impl: str = "auto") -> torch.Tensor:
    """y = clamp(act(x + b) · gain, −clamp, +clamp), StyleGAN2's bias_act (docs/ops.md §6).

    Only the reference exists: impl "auto" and "ref" run it, "cuda" raises OpUnsupported.

    Args:
        x: float tensor of any shape with at least 1 dimension (float16, bfloat16, float32, float64).
        b: None or a 1-D bias of length x.shape[dim], broadcast along dim.
        dim: int, the axis b runs along (negative counts from the end).
        act: "linear", "relu", "lrelu", "tanh", "sigmoid", "elu", "selu", "softplus" or "swish".
        alpha: None (the activation's default: 0.2 for lrelu) or a finite float (lrelu's slope).
        gain: None (the activation's default: sqrt(2) for relu, lrelu, swish; else 1) or a finite
            float.
        clamp: None or a finite float >= 0.
        impl: "auto", "ref" or "cuda" (raises).

    Returns:
        Tensor of x's shape and dtype; differentiable to any order.

    Raises:
        TypeError: x/b not tensors or of an unsupported dtype; dim not an int; alpha/gain/clamp not
            numbers.
        ValueError: 0-d x, b not 1-D or of the wrong length, dim out of range, unknown act,
            non-finite alpha/gain/clamp, clamp < 0, tensors on different devices, unknown impl.
        OpUnsupported: impl="cuda".
    """
    _dispatch.check_tensor(OP, "x", x)
    if x.ndim == 0:
        raise ValueError(f"{OP}: x must have at least 1 dimension")
    _dispatch.check_tensor(OP, "b", b, ndim=1, allow_none=True)
    _dispatch.check_same_device(OP, x=x, b=b)
    if act not in ACTIVATIONS:
        raise ValueError(f"{OP}: act must be one of {sorted(ACTIVATIONS)}, got {act!r}")
    dim = _dispatch.check_int(OP, "dim", dim)
    if not -x.ndim <= dim < x.ndim:
        raise ValueError(f"{OP}: dim {dim} out of range for x of shape {tuple(x.shape)}")
    dim %= x.ndim
    if b is not None and b.shape[0] != x.shape[dim]:
        raise ValueError(f"{OP}: b has {b.shape[0]} elements but x has {x.shape[dim]} along dim {dim}")
    alpha = _dispatch.check_finite(OP, "alpha", alpha, allow_none=True)
    gain = _dispatch.check_finite(OP, "gain", gain, allow_none=True)
    clamp = _dispatch.check_finite(OP, "clamp", clamp, allow_none=True)
    if clamp is not None and clamp < 0:
        raise ValueError(f"{OP}: clamp must be >= 0 or None, got {clamp}")
    if impl == "cuda":
        raise _dispatch.OpUnsupported(f"{OP}: there is no CUDA kernel for this op (reference only, "
                                      f"docs/ops.md §6); use impl='auto' or 'ref'")
    _dispatch.resolve_impl(OP, "ref" if impl == "auto" else impl, [x])
    return bias_act_ref(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)
