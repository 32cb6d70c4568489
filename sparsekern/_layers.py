"""Linear-like layers: which layers sparsekern packs, and their weight as the [out, K] matrix.

The one place that knows the layer kinds (nn, conv, serialization, prune and auto read it):

    kind         class                                   weight (parameter)     matrix [out, K]
    "linear"     nn.Linear (exactly, not a subclass)     [out, in]              W
    "conv1d_hf"  transformers.pytorch_utils.Conv1D       [in, out] (y = x@W+b)  W.t()  (a view)
    "conv2d"     nn.Conv2d (exactly)                     [out, in/g, kh, kw]    W.reshape(out, -1)

A Hugging Face Conv1D (GPT-2, GPT, ...) is a Linear with its weight stored transposed. It is
recognised by its class's name and module, so ``transformers`` is never imported here: a
model that does not use it never loads it.

Masks and scores of the pruning frontend keep the *parameter's* shape; :func:`to_matrix` and
:func:`from_matrix` turn such a tensor into the [out, K] orientation and back.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.nn.utils import parametrize

#: Human name of the layer kinds sparsekern can pack (for messages).
SUPPORTED_NAMES = "nn.Linear, nn.Conv2d (groups=1) or transformers Conv1D"


def compiled_inner(model) -> Optional[nn.Module]:
    """The module a ``torch.compile`` wrapper (``OptimizedModule``, whose layers are named
    ``_orig_mod.<name>``) wraps; None for anything else. Recognised by name, so
    ``torch._dynamo`` is never imported here."""
    inner = getattr(model, "_orig_mod", None)
    if type(model).__name__ == "OptimizedModule" and isinstance(inner, nn.Module):
        return inner
    return None


def is_hf_conv1d(module: nn.Module) -> bool:
    """True for ``transformers``' Conv1D (any version's module path), without importing it.

    Also checks the layout that its forward relies on: a 2-D weight [nx, nf].
    """
    cls = type(module)
    if parametrize.is_parametrized(module):  # parametrize's generated subclass of the layer
        cls = cls.__bases__[0]
    if cls.__name__ != "Conv1D" or cls.__module__.split(".")[0] != "transformers":
        return False
    w = getattr(module, "weight", None)
    return isinstance(w, torch.Tensor) and w.dim() == 2


def kind(module: nn.Module) -> Optional[str]:
    """"linear", "conv1d_hf", "conv2d" (any groups) or None for any other module."""
    t = type(module)
    if t is nn.Linear:
        return "linear"
    if t is nn.Conv2d:
        return "conv2d"
    if is_hf_conv1d(module):
        return "conv1d_hf"
    return None


def is_linear(module: nn.Module) -> bool:
    """An nn.Linear or a transformers Conv1D: y = x @ matrix.T + bias over the last dim."""
    return kind(module) in ("linear", "conv1d_hf")


def is_prunable(module: nn.Module) -> bool:
    """A layer whose weight the pruning frontend can mask (any Conv2d, grouped included)."""
    return kind(module) is not None


def is_packable(module: nn.Module) -> bool:
    """A layer that becomes a SparseLinear / SparseConv2d (grouped convs stay dense)."""
    k = kind(module)
    return k is not None and (k != "conv2d" or module.groups == 1)


def looks_linear(module: nn.Module) -> bool:
    """Linear-like in the wide sense: any nn.Linear / conv subclass, Bilinear, or Conv1D.

    These are the layers that ``sparsify`` reports on when it leaves them alone.
    """
    if isinstance(module, (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd)):
        return True
    return any(c.__name__ == "Conv1D" and c.__module__.split(".")[0] == "transformers"
               for c in type(module).__mro__)


def skip_reason(module: nn.Module) -> Optional[str]:
    """Why a linear-like ``module`` is not packed (None when it is packable)."""
    if is_packable(module):
        return None
    k = kind(module)
    name = type(module).__name__
    if k == "conv2d":
        return f"grouped Conv2d (groups={module.groups}) is kept dense"
    if isinstance(module, nn.modules.lazy.LazyModuleMixin):
        return f"{name} is not initialized yet (run the model once first)"
    if isinstance(module, nn.Linear):
        return (f"{name} subclasses nn.Linear; only nn.Linear itself is swapped (a subclass "
                f"may change forward, or its parent may read .weight directly)")
    if isinstance(module, nn.modules.conv._ConvNd):
        return f"{name} is not supported (only nn.Conv2d and transformers Conv1D)"
    if isinstance(module, nn.Bilinear):
        return "nn.Bilinear has a 3-D weight; no sparse format holds it"
    return f"{name} is not the transformers Conv1D layout (2-D weight [in, out])"


def weights_left_alone(model: nn.Module) -> Dict[str, str]:
    """{parameter name: why it is left alone} for every stack of weight matrices held
    directly by a module that is not linear-like (see :func:`looks_linear`): a parameter of
    3 or more dims whose leading dim is at least 2 and whose last two are, such as a mixture
    of experts' stacked weight (``nn.Parameter(torch.randn(E, out, in))``, as in
    transformers' MoE blocks) that no sparse layer replaces. Nothing is pruned or packed
    there; the names only complete the reports of ``sparsify`` and ``sparsekern.prune``
    (which would otherwise pass over such a weight in silence). A ViT's ``cls_token``
    [1, 1, D] or ``position_embeddings`` [1, T, D] is no stack of matrices and is not
    listed. Convolutions (4-D weights) and nn.Bilinear are linear-like, reported as layers,
    and not listed here."""
    out: Dict[str, str] = {}
    seen = set()  # a parameter shared by two modules is named once
    for mname, m in model.named_modules():
        if looks_linear(m):
            continue
        for pname, p in m.named_parameters(recurse=False):
            if p is None or p.dim() < 3 or id(p) in seen or min(p.shape[0], *p.shape[-2:]) < 2:
                continue
            seen.add(id(p))
            out[f"{mname}.{pname}" if mname else pname] = (
                f"{p.dim()}-D stack of weight matrices {tuple(p.shape)} (e.g. experts): not "
                f"a Linear-like layer; not pruned")
    return out


def dims(module: nn.Module) -> Tuple[int, int]:
    """(out, K) of the weight matrix: K = in_features, or in_channels/groups*kh*kw."""
    W = module.weight
    if kind(module) == "conv1d_hf":
        return int(W.shape[1]), int(W.shape[0])
    return int(W.shape[0]), math.prod(int(d) for d in W.shape[1:])


def in_features(module: nn.Module) -> int:
    """Size of the last dim of a Linear / Conv1D input (in_channels for a Conv2d)."""
    if kind(module) == "conv2d":
        return int(module.in_channels)
    return dims(module)[1]


def to_matrix(module: nn.Module, t: torch.Tensor) -> torch.Tensor:
    """A tensor of the weight's shape (weight, mask, scores) as [out, K] (a view if it can)."""
    if kind(module) == "conv1d_hf":
        return t.t()
    return flat2d(t)


def flat2d(t: torch.Tensor) -> torch.Tensor:
    """``t`` [out, ...] as [out, K] (K the product of the other dims; a view if it can). K
    comes from the shape, not -1: a layer with no outputs (nn.Linear(in, 0)) has 0
    elements, which reshape(0, -1) refuses as ambiguous."""
    return t.reshape(t.shape[0], math.prod(t.shape[1:]))


def empty_weight(module: nn.Module) -> Optional[str]:
    """Why a layer with no weights (nn.Linear(in, 0)) has nothing to prune or pack: "its
    weight has no elements (shape [0, 64])"; None when it has weights."""
    w = getattr(module, "weight", None)
    if isinstance(w, torch.Tensor) and w.numel() == 0:
        return f"its weight has no elements (shape {list(w.shape)})"
    return None


def from_matrix(module: nn.Module, m: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_matrix`: an [out, K] tensor back in the weight's shape."""
    if kind(module) == "conv1d_hf":
        return m.t()
    return m.reshape(module.weight.shape)


def weight_matrix(module: nn.Module) -> torch.Tensor:
    """The weight as the [out, K] matrix the formats pack: a view, so writes (``mul_``,
    ``masked_fill_``) reach the real parameter."""
    return to_matrix(module, module.weight)


#: Where torch's quantized layers live (torch.ao.quantization's quantize_dynamic / convert
#: swap nn.Linear for them); their weights are packed int8 tensors, not Parameters.
_QUANTIZED_PACKAGES = ("torch.ao.nn.quantized.", "torch.ao.nn.intrinsic.quantized.",
                       "torch.nn.quantized.", "torch.nn.intrinsic.quantized.")

#: What a message says about quantized layers.
QUANTIZED_NOTE = ("quantized by torch.ao.quantization; quantized layers are not supported: "
                  "sparsekern prunes and packs float layers only, so prune and sparsify the "
                  "float model first, then quantize the layers left dense")


def quantized_name(module: nn.Module) -> Optional[str]:
    """The name torch prints for a torch.ao quantized layer ("DynamicQuantizedLinear",
    "QuantizedConv2d", ...), None for any other module (their packed-parameter holders and
    the reference modules, which are float nn.Linear subclasses, included)."""
    path = type(module).__module__ + "."
    if not path.startswith(_QUANTIZED_PACKAGES) or ".reference." in path:
        return None
    name = module._get_name()
    return name if name.startswith(("Quantized", "DynamicQuantized")) else None


def layer_types(model: nn.Module) -> str:
    """"Embedding x2, LayerNorm x5, ..." over the modules that hold parameters directly and
    the torch.ao quantized layers (which hold none: "DynamicQuantizedLinear x3", with
    :data:`QUANTIZED_NOTE`), for the message of a model with nothing to pack."""
    counts: Counter = Counter()
    quantized = False
    for m in model.modules():
        q = quantized_name(m)
        if q is not None:
            counts[q] += 1
            quantized = True
        elif next(m.parameters(recurse=False), None) is not None:
            counts[type(m).__name__] += 1
    if not counts:
        return "no layer with parameters"
    text = ", ".join(f"{n} x{c}" if c > 1 else n for n, c in counts.items())
    return f"{text} ({QUANTIZED_NOTE})" if quantized else text


def tied_weights(model: nn.Module) -> Dict[int, List[str]]:
    """{id(parameter): every name it has in ``model``} for parameters held by several modules
    (tied weights, e.g. GPT-2's lm_head and token embedding). One module registered under
    several names (a layer shared across depth) shares nothing with another module: its
    weight is not tied (see :func:`module_aliases`)."""
    names: Dict[int, List[str]] = {}
    owners: Dict[int, set] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(n)
        owner = model.get_submodule(n.rpartition(".")[0]) if "." in n else model
        owners.setdefault(id(p), set()).add(id(owner))
    return {k: v for k, v in names.items() if len(v) > 1 and len(owners[k]) > 1}


def module_aliases(model: nn.Module) -> Dict[int, List[str]]:
    """{id(module): its names} for modules registered under several names in ``model``."""
    names: Dict[int, List[str]] = {}
    for n, m in model.named_modules(remove_duplicate=False):
        names.setdefault(id(m), []).append(n)
    return {k: v for k, v in names.items() if len(v) > 1}


def canonical_names(model: nn.Module, names) -> Dict[str, str]:
    """{name: the module's first name} for each of ``names`` that is a later name of a module
    registered under several names (``m.b = m.a``: 'b' -> 'a'). ``named_modules()`` gives
    such a module once, under its first name, so that name is the one the masks, reports and
    sparsity figures use; a later name is still a name of the layer (``get_submodule('b')``,
    the state_dict's 'b.weight')."""
    names = list(names)
    known = {n for n, _ in model.named_modules()}
    if all(n in known for n in names):
        return {}
    wanted, first, out = set(names), {}, {}
    for n, m in model.named_modules(remove_duplicate=False):
        first.setdefault(id(m), n)
        if n in wanted and n not in known:
            out[n] = first[id(m)]
    return out
