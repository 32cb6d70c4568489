"""Base of the sparse layers: a module holding a packed weight (values, indices, offsets)."""
from __future__ import annotations

import functools
import json
from typing import Dict, List, Tuple

import torch
from torch import nn
from torch.nn.modules.module import _EXTRA_STATE_KEY_SUFFIX

from .formats import from_parts

_FMT_TENSORS = ("values", "indices", "offsets")


def encode_extra_state(state: dict) -> torch.Tensor:
    """A sparse layer's extra state (layout, shape, geometry: JSON-able) as a tensor: uint8
    [n], the UTF-8 bytes of its JSON. A state_dict of tensors only goes wherever tensors go
    (Hugging Face's ``save_pretrained``, safetensors)."""
    data = json.dumps(state, sort_keys=True).encode()
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()


def decode_extra_state(state) -> dict:
    """The dict of :func:`encode_extra_state`'s tensor, or the dict itself (files written
    before the tensor form). Raises ValueError naming what it got otherwise."""
    if isinstance(state, dict):
        return state
    if isinstance(state, torch.Tensor) and state.dtype == torch.uint8 and state.dim() == 1:
        try:
            out = json.loads(bytes(state.detach().cpu().numpy().tobytes()).decode())
        except (UnicodeDecodeError, ValueError):
            out = None
        if isinstance(out, dict):
            return out
        raise ValueError(f"extra state: a uint8 tensor of {state.numel()} bytes that is not the "
                         f"UTF-8 JSON of an object")
    got = (f"a {state.dtype} tensor of shape {list(state.shape)}"
           if isinstance(state, torch.Tensor) else f"a {type(state).__name__}")
    raise ValueError(f"extra state must be a dict or a uint8 [n] tensor of its JSON, got {got}")


def outside_inference_mode(fn):
    """Packing a layer is a model conversion, not inference: under torch.inference_mode the
    packed values and the copied bias would be inference tensors, and the sparse layer
    could never be trained or fine-tuned afterwards ("Inference tensors cannot be saved for
    backward"). Run ``fn`` with inference mode off (gradients stay off, as under no_grad)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not torch.is_inference_mode_enabled():
            return fn(*args, **kwargs)
        with torch.inference_mode(False), torch.no_grad():
            return fn(*args, **kwargs)
    return wrapper



def check_bias(bias, M: int, values: torch.Tensor) -> None:
    """A packed layer's bias: a floating tensor [M] on the weight's device (the error names
    ``bias``, what it got and what was expected)."""
    if not isinstance(bias, torch.Tensor):
        raise TypeError(f"bias must be a torch.Tensor of shape [{M}] or None, got "
                        f"{type(bias).__name__}")
    if not bias.is_floating_point():
        raise TypeError(f"bias has dtype {bias.dtype}; expected a floating dtype "
                        f"(float32, float16, bfloat16, float64)")
    if bias.device != values.device:
        raise ValueError(f"bias is on {bias.device} but the weight is on {values.device}; "
                         f"expected one device")
    if bias.shape != (M,):
        raise ValueError(f"bias has shape {list(bias.shape)}; expected [{M}]")

class PackedWeightModule(nn.Module):
    """Loads a state_dict whose pattern (so tensor shapes) may differ from this instance's.

    Subclasses hold ``values`` (Parameter), ``indices`` and ``offsets`` (buffers), ``bias``
    (Parameter [M] or None), ``layout``, a ``weight`` property giving the format (its
    ``shape`` is the weight matrix's), and ``check_extra_state(state) -> (M, K)``. Their
    extra state is a uint8 tensor (:func:`encode_extra_state`); a dict is accepted on load.

    ``load_state_dict`` checks the incoming state first (the format with the incoming layout
    and shape, through sparsekern.formats' validation; the bias shape) and changes nothing
    when it is rejected.
    """

    def __setattr__(self, name: str, value) -> None:
        # ``weight`` is a read-only property (the format over values/indices/offsets). A
        # Parameter assigned to it went to nn.Module.register_parameter, which raised
        # KeyError "attribute 'weight' already exists" (transformers' tie_weights() onto a
        # packed lm_head); say what it is and what to do instead.
        if name == "weight" and isinstance(getattr(type(self), "weight", None), property):
            cls = type(self).__name__
            got = (f"a {type(value).__name__} of shape {list(value.shape)}"
                   if isinstance(value, torch.Tensor) else f"a {type(value).__name__}")
            raise AttributeError(
                f"{cls}.weight cannot be assigned (got {got}): it is the layer's packed sparse "
                f"weight (read-only, held as values/indices/offsets), not a Parameter. Tying it "
                f"to another parameter (transformers' tie_weights(): lm_head and the token "
                f"embedding) needs a dense layer: a tied layer must stay dense, and "
                f"sparsekern.sparsify leaves tied layers dense. Put the dense layer back "
                f"(layer.to_dense()) before tying, or keep the model untied "
                f"(config.tie_word_embeddings=False); to change the values, load them with "
                f"load_state_dict")
        super().__setattr__(name, value)

    def check_extra_state(self, state) -> Tuple[int, int]:
        raise NotImplementedError

    def fixed_geometry(self, state) -> Dict[str, object]:
        """What a load must not change (a checked extra state -> comparable fields): the
        layer's shape, a conv's geometry."""
        raise NotImplementedError

    def _check_same_geometry(self, extra, prefix: str) -> None:
        """load_state_dict changes a layer's pattern and layout, never its shape or geometry
        (as nn.Linear / nn.Conv2d raise on another shape and keep their stride): a state of
        another layer raises ValueError naming each field, before anything changes."""
        own = self.fixed_geometry(decode_extra_state(self.get_extra_state()))
        new = self.fixed_geometry(extra)
        diff = [f"{k}={new[k]!r} (this layer: {own[k]!r})" for k in own if own[k] != new[k]]
        if diff:
            raise ValueError(f"state {prefix + _EXTRA_STATE_KEY_SUFFIX!r} is of another layer: "
                             f"{', '.join(diff)}; load_state_dict changes a packed layer's "
                             f"sparsity and layout, not its shape or geometry")

    def trainable_like(self, layer: nn.Module) -> "PackedWeightModule":
        """Give ``values`` and ``bias`` the requires_grad of ``layer``'s weight and bias (the
        dense layer this one replaces), and this module its train/eval flag: a frozen layer
        stays frozen, a layer in eval mode stays in eval mode. Returns self."""
        self.train(layer.training)
        w = layer.values if isinstance(layer, PackedWeightModule) else layer.weight
        if self.values.is_floating_point():
            self.values.requires_grad_(w.requires_grad)
        old_bias = getattr(layer, "bias", None)
        if self.bias is not None and isinstance(old_bias, torch.Tensor):
            self.bias.requires_grad_(old_bias.requires_grad)
        return self

    def _incoming(self, state_dict, prefix):
        """(layout, shape, {name: tensor}) that the module would hold after loading."""
        extra = state_dict.get(prefix + _EXTRA_STATE_KEY_SUFFIX)
        if extra is None:
            layout, shape = self.layout, tuple(self.weight.shape)
        else:
            extra = decode_extra_state(extra)
            shape = self.check_extra_state(extra)
            self._check_same_geometry(extra, prefix)
            layout = extra["layout"]
        tensors = {}
        for name in _FMT_TENSORS:
            own, t = getattr(self, name), state_dict.get(prefix + name)
            if t is None:
                t = own
            elif not isinstance(t, torch.Tensor):
                raise TypeError(f"state {prefix + name!r} is a {type(t).__name__}, expected a "
                                f"tensor")
            tensors[name] = t.detach().to(own.device)
        return layout, shape, tensors

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # Validate everything first (nothing changes when the state is rejected), then adopt
        # the incoming tensors' shapes and dtypes, then load.
        try:
            layout, shape, t = self._incoming(state_dict, prefix)
            from_parts(layout, t["values"], t["indices"], t["offsets"], shape, validate=True)
            bias = state_dict.get(prefix + "bias")
            if self.bias is not None and isinstance(bias, torch.Tensor) and \
                    tuple(bias.shape) != (shape[0],):
                raise ValueError(f"state {prefix + 'bias'!r} has shape {list(bias.shape)}; "
                                 f"expected [{shape[0]}]")
        except (ValueError, TypeError) as e:
            if not prefix:  # the module loaded itself: no layer name to give
                raise
            # a submodule: name it (torch's prefix "2." -> layer '2'), as load_sparse does;
            # several packed layers of one model otherwise raised the same message
            try:
                named = type(e)(f"layer {prefix[:-1]!r}: {e}")
            except Exception:  # a subclass with other constructor arguments
                named = (ValueError if isinstance(e, ValueError) else TypeError)(
                    f"layer {prefix[:-1]!r}: {e}")
            raise named from None
        for name in _FMT_TENSORS:
            own, new = getattr(self, name), state_dict.get(prefix + name)
            # Floating values keep the module's own dtype, as load_state_dict keeps every
            # dense parameter's (and this layer's bias): a float32 state loaded into a
            # bfloat16 model is cast, not adopted (adopted, the layer's values were float32
            # next to a bfloat16 bias and inputs, and the forward raised). Index tensors take
            # the incoming dtype: it is part of the format (int16 or int32 row indices).
            dtype = (own.dtype if name == "values" and own.is_floating_point()
                     and new is not None and new.is_floating_point()
                     else None if new is None else new.dtype)
            if new is not None and (own.shape != new.shape or own.dtype != dtype):
                fresh = torch.empty_like(new, device=own.device, dtype=dtype)
                if name == "values":
                    # the same Parameter with the new pattern's data: an optimizer built
                    # before the load (the usual resume) still trains it; its gradient, of
                    # the old pattern, no longer applies
                    own.data = fresh
                    own.grad = None
                else:
                    setattr(self, name, fresh)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)


# The dtypes torch.distributed's gloo and NCCL collectives carry: int16 (CSC row indices
# when M <= 32767) and uint16/uint32 are not among them.
_COLLECTIVE_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.uint8,
                      torch.int8, torch.int32, torch.int64, torch.bool)


def prepare_ddp(model: nn.Module, group=None, src: int = 0) -> List[str]:
    """Ready ``model`` (a model with packed layers) for DistributedDataParallel; call it on
    every rank, on the module given to DistributedDataParallel, before wrapping it.

    DDP broadcasts every buffer from rank 0 when it starts, and neither gloo nor NCCL
    carries int16, the dtype of CSC row indices: the broadcast fails ("Invalid scalar
    type"). This broadcasts each such buffer from ``src`` itself, as int32 (every rank then
    holds src's pattern, as DDP would have made it), and adds its name to the buffers DDP
    leaves alone (index buffers do not change in training). Patterns of other sizes on
    another rank raise a ValueError naming the buffer (on every rank). Without an
    initialized process group of more than one rank only the names are set.

    Returns the names of the buffers handled (empty when every buffer is carried).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    bufs = {n: b for n, b in model.named_buffers() if b.dtype not in _COLLECTIVE_DTYPES}
    if not bufs:
        return []
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1:
        _broadcast_as_int32(bufs, dist, group, src)
    ignored = list(getattr(model, "_ddp_params_and_buffers_to_ignore", ()))
    nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
        model, ignored + [n for n in bufs if n not in ignored])
    return list(bufs)


def _broadcast_as_int32(bufs: Dict[str, torch.Tensor], dist, group, src: int) -> None:
    """Every buffer of ``bufs`` from rank ``src``, sent as int32; the shapes are compared
    first (a broadcast of tensors of other sizes fails or hangs without naming them)."""
    mine = [(n, list(b.shape), str(b.dtype)) for n, b in bufs.items()]
    everyone = [None] * dist.get_world_size(group)
    dist.all_gather_object(everyone, mine, group=group)
    src_index = dist.get_group_rank(group, src) if group is not None else src
    for rank, theirs in enumerate(everyone):
        if theirs != everyone[src_index]:
            diff = next(((a, b) for a, b in zip(everyone[src_index], theirs) if a != b),
                        (everyone[src_index], theirs))
            raise ValueError(f"prepare_ddp: rank {rank} holds {diff[1]} where rank {src} holds "
                             f"{diff[0]}; expected the same packed layers (same pattern sizes) "
                             f"on every rank: prune and pack identically, or load one "
                             f"checkpoint everywhere")
    with torch.no_grad():
        for b in bufs.values():
            t = b.to(torch.int32)
            dist.broadcast(t, src, group=group)
            b.copy_(t)
