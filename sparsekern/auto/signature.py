"""Layer signatures: what a layer's latency depends on (geometry, input shape, dtype, device).

Two layers with equal signatures take the same time, so the latency table measures each
signature once (and caches it on disk). :func:`capture` runs a model once on an example
input and records the signature of every nn.Linear and nn.Conv2d (groups=1) it calls.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from .. import _layers, inputs
from ..prune.layers import prunable_layers


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


@dataclass(frozen=True)
class LayerSig:
    """A Linear ([out, in]) or Conv2d (groups=1) layer called on an input of ``input_shape``.

    ``conv`` holds (kernel_size, stride, padding, dilation, padding_mode) for a Conv2d.
    ``input_zeros``: the fraction of the input that is exactly zero (after a ReLU), rounded
    to 0.05: kernels that skip zero activations (CSC at batch 1) run faster on such inputs,
    so the table measures with the same fraction of zeros.
    """

    kind: str                       # "linear" | "conv2d"
    out_features: int               # out_channels for a Conv2d
    in_features: int                # in_channels for a Conv2d
    bias: bool
    input_shape: Tuple[int, ...]
    dtype: str
    device: str
    conv: Optional[tuple] = None
    input_zeros: float = 0.0        # fraction of exact zeros in the input (ReLU), 0.05 steps

    @property
    def matrix_shape(self) -> Tuple[int, int]:
        """[M, K] of the weight matrix the formats pack."""
        if self.kind == "linear":
            return self.out_features, self.in_features
        kh, kw = self.conv[0]
        return self.out_features, self.in_features * kh * kw

    @property
    def tokens(self) -> int:
        """N of the spmm the layer runs: rows of x for a Linear (pixels x batch for a conv,
        estimated from the input as batch * H * W / stride^2)."""
        n = 1
        for d in self.input_shape[:-1]:
            n *= d
        if self.kind == "linear":
            return n
        b = self.input_shape[0] if len(self.input_shape) == 4 else 1
        h, w = self.input_shape[-2:]
        (sh, sw) = self.conv[1]
        return max(1, b * (h // sh) * (w // sw))

    def to_key(self) -> dict:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["conv"] = None if self.conv is None else [list(v) if isinstance(v, tuple) else v
                                                    for v in self.conv]
        return d

    @classmethod
    def from_key(cls, d: dict) -> "LayerSig":
        """The signature that :meth:`to_key` wrote (e.g. a table entry's "signature")."""
        d = dict(d)
        d["input_shape"] = tuple(d["input_shape"])
        if d.get("conv") is not None:
            d["conv"] = tuple(tuple(v) if isinstance(v, list) else v for v in d["conv"])
        return cls(**d)

    def label(self) -> str:
        M, K = self.matrix_shape
        zeros = f" ({self.input_zeros:.0%} zeros)" if self.input_zeros else ""
        return f"{self.kind} {M}x{K} @ {list(self.input_shape)}{zeros}"

    def build(self, generator: Optional[torch.Generator] = None) -> nn.Module:
        """A dense layer of this geometry with random weights (on the signature's device)."""
        dtype = getattr(torch, self.dtype)
        if self.kind == "linear":
            m = nn.Linear(self.in_features, self.out_features, bias=self.bias)
        else:
            ks, stride, padding, dilation, mode = self.conv
            m = nn.Conv2d(self.in_features, self.out_features, ks, stride=stride,
                          padding=padding, dilation=dilation, bias=self.bias, padding_mode=mode)
        with torch.no_grad():
            m.weight.copy_(torch.randn(m.weight.shape, generator=generator) *
                           m.weight.shape[1] ** -0.5)
            if m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=generator) * 0.1)
        return m.to(device=self.device, dtype=dtype).eval()

    def example_input(self, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """A random input of ``input_shape`` with ``input_zeros`` of it exactly zero."""
        x = torch.randn(self.input_shape, generator=generator)
        if self.input_zeros > 0:
            x = x * (torch.rand(self.input_shape, generator=generator) >= self.input_zeros)
        return x.to(device=self.device, dtype=getattr(torch, self.dtype))


def zero_fraction(x: torch.Tensor) -> float:
    """Fraction of exact zeros in x, rounded to 0.05 (so that near-equal inputs share a
    cache entry)."""
    if x.numel() == 0:
        return 0.0
    return round(float((x == 0).float().mean()) * 20) / 20


def signature_of(module: nn.Module, input_shape, input_zeros: float = 0.0) -> LayerSig:
    """The signature of ``module`` (nn.Linear or groups=1 nn.Conv2d) on ``input_shape``."""
    w = module.weight
    common = dict(bias=module.bias is not None, input_shape=tuple(int(s) for s in input_shape),
                  dtype=_dtype_name(w.dtype), device=str(w.device),
                  input_zeros=float(input_zeros))
    if _layers.is_linear(module):  # nn.Linear or transformers Conv1D: [out, in] as a Linear
        return LayerSig("linear", *_layers.dims(module), **common)
    if type(module) is nn.Conv2d and module.groups == 1:
        pad = module.padding if isinstance(module.padding, str) else tuple(module.padding)
        conv = (tuple(module.kernel_size), tuple(module.stride), pad, tuple(module.dilation),
                module.padding_mode)
        return LayerSig("conv2d", module.out_channels, module.in_channels, conv=conv, **common)
    raise ValueError(f"a latency signature needs an nn.Linear or an nn.Conv2d with groups=1, "
                     f"got {type(module).__name__} (a transformers Conv1D counts as a Linear)")


def supported(module: nn.Module) -> bool:
    return _layers.is_packable(module)


def candidate_layers(model: nn.Module, layers=None) -> Dict[str, nn.Module]:
    """{name: module} of the Linear / Conv2d (groups=1) layers to consider (or ``layers``)."""
    found = {n: m for n, m in prunable_layers(model).items() if supported(m)}
    if layers is None:
        return found
    names = [layers] if isinstance(layers, str) else list(layers)
    missing = [n for n in names if n not in found]
    if missing:
        raise ValueError(f"layers {missing} are not nn.Linear / nn.Conv2d (groups=1) layers of "
                         f"{type(model).__name__}; candidates are {list(found)}")
    return {n: found[n] for n in names}


def tied_layers(model: nn.Module, names=None) -> Dict[str, str]:
    """{name: why} of the candidate layers (``names``, default all) whose weight is tied to
    another module's parameter (GPT-2's lm_head and its token embedding;
    sparsekern._layers.tied_weights, as prune_model and sparsify detect them): sparsify
    leaves them dense, so the latency table and the searches leave them alone (pruning one
    would prune the parameter it shares, for a speedup that never exists)."""
    tied = _layers.tied_weights(model)
    mods = dict(model.named_modules())
    out: Dict[str, str] = {}
    for name in (list(candidate_layers(model)) if names is None else list(names)):
        mod = mods.get(name)
        others = [n for n in tied.get(id(getattr(mod, "weight", None)), ())
                  if n != (f"{name}.weight" if name else "weight")]
        if others:
            out[name] = (f"its weight is tied to {', '.join(map(repr, others))} (one shared "
                         f"Parameter): sparsify leaves it dense, and pruning it would prune "
                         f"the parameter it shares")
    return out


def capture(model: nn.Module, example_input, layers=None) -> Dict[str, LayerSig]:
    """{layer name: signature} of the candidate layers that run on ``example_input``
    (with the fraction of zeros of each layer's actual input).

    ``example_input`` is a tensor, or a tuple of positional arguments of ``model``. A
    layer called several times keeps the first call's input shape; a layer that does not
    run is left out.
    """
    mods = candidate_layers(model, layers)
    sigs: Dict[str, LayerSig] = {}
    handles = []
    reached = []  # the candidate layers entered, in order (names the failing one)
    for name, m in mods.items():
        def hook(mod, args, name=name):
            reached.append(name)
            if name not in sigs and args and isinstance(args[0], torch.Tensor):
                sigs[name] = signature_of(mod, args[0].shape, zero_fraction(args[0]))
        handles.append(m.register_forward_pre_hook(hook))
    try:
        with inputs.eval_mode(model), torch.no_grad():
            args, kwargs = inputs.split(example_input, "example_input", tuple_is="args")
            try:
                model(*args, **kwargs)
            except (RuntimeError, ValueError, IndexError, TypeError, AttributeError,
                    KeyError, AssertionError) as e:  # the model's own checks, whatever kind
                last = f"; the last candidate layer it reached: {reached[-1]!r}" if reached else ""
                hint = ("; a tuple is the model's positional arguments: give several example "
                        "inputs as a list, and named inputs (an attention mask) as a dict such "
                        "as a tokenizer's output"
                        if isinstance(example_input, tuple) else "")
                raise ValueError(f"example_input ({inputs.describe(example_input)}) does not "
                                 f"fit the model {type(model).__name__}: {e}{last}{hint}") from e
    finally:
        for h in handles:
            h.remove()
    return {n: sigs[n] for n in mods if n in sigs}


def call(model: nn.Module, example_input):
    """``model`` on one example input (sparsekern.inputs): ``model(x)``, ``model(**mapping)``,
    ``model(*args, **kwargs)`` for ``sparsekern.Args``, ``model(*t)`` for a plain tuple."""
    return inputs.call(model, example_input, "example_input", tuple_is="args")


def input_label(example_input) -> str:
    """A short name for an example input: its shape, e.g. ``"[1, 64]"``."""
    if isinstance(example_input, tuple):
        return "(" + ", ".join(inputs.describe(t) for t in example_input) + ")"
    inputs.split(example_input, "example_input")  # raises for an unsupported kind
    return inputs.describe(example_input)
