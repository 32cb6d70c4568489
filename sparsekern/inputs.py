"""Model input items: how sparsekern calls a model on one batch of calibration or example input.

Everywhere sparsekern takes calibration data or example inputs (pruning criteria "wanda",
"sparsegpt", "apoz", "regression", sensitivity scans, channel pruning, distillation,
``auto.build_table``), one *item* (one batch) may be:

==========================================  ==================================================
item                                        the call
==========================================  ==================================================
a tensor ``x``                              ``model(x)``
a Mapping, e.g. a tokenizer's output        ``model(**item)``
``Args(a, b, mask=m)``                      ``model(a, b, mask=m)``
a tuple/list ``(inputs, targets, ...)``     ``model(inputs)`` (a DataLoader's batch; the first
                                            element is itself any item kind, the rest — labels
                                            — are ignored)
==========================================  ==================================================

A plain tuple is a DataLoader's (inputs, targets) pair, never positional arguments: mark
several positional inputs explicitly with :class:`Args` (``sparsekern.Args``). Callers that
historically took a tuple of positional arguments (``auto``'s example inputs) pass
``tuple_is="args"``.

Core module: imports only torch.
"""
from __future__ import annotations

import contextlib
import contextvars
import inspect
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple

import torch
from torch import nn

ACCEPTED = ("a tensor (model(x)), a Mapping such as a tokenizer's output (model(**item)), "
            "sparsekern.Args(*args, **kwargs) (model(*args, **kwargs)), or an (inputs, targets) "
            "tuple/list whose inputs are one of these")

TUPLE_KINDS = ("pair", "args")


class Args:
    """Positional and keyword arguments of one model call: ``Args(a, b, mask=m)`` calls
    ``model(a, b, mask=m)``. Use it where a plain tuple would be read as (inputs, targets)."""

    __slots__ = ("args", "kwargs")

    def __init__(self, *args, **kwargs):
        self.args = tuple(args)
        self.kwargs = dict(kwargs)

    def __repr__(self) -> str:
        parts = [_short(a) for a in self.args] + [f"{k}={_short(v)}" for k, v in
                                                  self.kwargs.items()]
        return "Args(" + ", ".join(parts) + ")"


def _short(v) -> str:
    if isinstance(v, torch.Tensor):
        return str(list(v.shape))
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{k!r}: {_short(x)}" for k, x in v.items()) + "}"
    if isinstance(v, Args):
        return repr(v)
    if isinstance(v, (tuple, list)):
        return "(" + ", ".join(_short(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    return type(v).__name__


def describe(item) -> str:
    """A short description of an item for messages: ``[8, 32]`` for a tensor, the shapes of a
    Mapping's or Args' tensors otherwise."""
    return _short(item)


def unsupported(item, what: str = "input") -> TypeError:
    desc = describe(item)
    desc = "" if desc == type(item).__name__ else f" ({desc})"
    return TypeError(f"{what} is a {type(item).__name__}{desc}; expected {ACCEPTED}")


def split(item, what: str = "input", tuple_is: str = "pair") -> Tuple[tuple, Dict[str, Any]]:
    """(args, kwargs) of the model call for one item (see the module docstring).

    Raises TypeError naming ``what``, the item's type and the accepted kinds.
    """
    if tuple_is not in TUPLE_KINDS:
        raise ValueError(f"tuple_is must be one of {TUPLE_KINDS}, got {tuple_is!r}")
    if isinstance(item, torch.Tensor):
        return (item,), {}
    if isinstance(item, Args):
        return item.args, item.kwargs
    if isinstance(item, Mapping):
        if not all(isinstance(k, str) for k in item):
            raise TypeError(f"{what} is a Mapping with non-string keys "
                            f"{[k for k in item if not isinstance(k, str)][:3]}; its keys must "
                            f"be the model's argument names")
        _check_values(item, what)
        return (), dict(item)
    if isinstance(item, (tuple, list)) and item:
        if tuple_is == "args":
            return tuple(item), {}
        first = item[0]
        if isinstance(first, (tuple, list)):  # ((a, b), y) is ambiguous: ask for Args
            raise TypeError(f"{what} is a {type(item).__name__} whose inputs are a "
                            f"{type(first).__name__}; wrap several positional inputs in "
                            f"sparsekern.Args(...). Accepted: {ACCEPTED}")
        return split(first, what)
    raise unsupported(item, what)


def _is_array_data(v) -> bool:
    """A NumPy-like array, or a non-empty list/tuple of numbers or of such lists: tensor data
    not yet made a tensor (a tokenizer's output without ``return_tensors="pt"``)."""
    if hasattr(v, "__array__") and hasattr(v, "shape") and not isinstance(v, torch.Tensor):
        return True
    if not isinstance(v, (list, tuple)) or not v:
        return False
    first = v[0]
    return (isinstance(first, (int, float)) and not isinstance(first, bool)) or \
        _is_array_data(first)


def _is_collated_ids(v) -> bool:
    """A list of 1-D integer tensors of one length: what torch's default_collate makes of
    examples whose token ids are Python lists (one tensor per position, across the batch)."""
    return (isinstance(v, list) and len(v) > 0 and all(
        isinstance(t, torch.Tensor) and t.dim() == 1 and not t.is_floating_point()
        and not t.is_complex() and t.shape == v[0].shape for t in v))


def _check_values(item: Mapping, what: str) -> None:
    """Raise TypeError naming ``what[key]`` for a Mapping value that holds tensor data as a
    list or NumPy array, or as default_collate's list of per-position tensors (the model
    would fail on it far from the cause); numbers, flags, None and other objects are left
    to the model."""
    for k, v in item.items():
        if _is_array_data(v):
            raise TypeError(f"{what}[{k!r}] is a {type(v).__name__}; expected a tensor: call the "
                            f"tokenizer with return_tensors='pt' (or convert it with "
                            f"torch.as_tensor)")
        if _is_collated_ids(v):
            raise TypeError(f"{what}[{k!r}] is a list of {len(v)} integer tensors "
                            f"{list(v[0].shape)}; expected a tensor: a DataLoader collates lists "
                            f"of token ids this way: give the dataset tensors (datasets: "
                            f"set_format('torch')) or a collate_fn that pads "
                            f"(DataCollatorWithPadding)")


def call(model, item, what: str = "input", tuple_is: str = "pair"):
    """``model`` called on one item: ``model(x)``, ``model(**item)``, ``model(*args, **kw)``."""
    args, kwargs = split(item, what, tuple_is)
    return model(*args, **kwargs)


def output_tensor(out, who: str = "the model") -> torch.Tensor:
    """The tensor a model's output stands for: itself, the first tensor of a Mapping (a Hugging
    Face ModelOutput: ``last_hidden_state`` / ``logits``) other than its ``"loss"`` (present
    first when the inputs hold ``labels``; it stands for the output only when nothing else
    does), or the first item of a tuple."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        found = [(k, v) for k, v in out.items() if isinstance(v, torch.Tensor)]
        for k, v in found:
            if k != "loss":
                return v
        if found:
            return found[0][1]
    elif isinstance(out, (tuple, list)) and out:
        return output_tensor(out[0], who)
    raise TypeError(f"{who} returned a {type(out).__name__}; expected a tensor, a "
                    f"Mapping/ModelOutput holding one, or a tuple whose first item is one")


def _ambiguous_pair(data) -> bool:
    """A top-level pair (x, y) of tensors whose second holds integers, read as a list of
    batches, would run y through the model as a batch of its own; for (input_ids,
    attention_mask) that runs without an error (0 and 1 are valid token ids): a silently
    wrong calibration. Ambiguous: a tuple of two such tensors; a list (a DataLoader's batch
    of a TensorDataset) when its second tensor has the first's shape and only 0s and 1s.
    The same for three or more tensors (input_ids, token_type_ids, attention_mask): a tuple
    whose tensors after the first all hold integers, a list with such a 0/1 tensor."""
    if not (isinstance(data, (tuple, list)) and len(data) >= 2 and
            all(isinstance(t, torch.Tensor) for t in data)):
        return False
    x, rest = data[0], data[1:]
    if type(data) is tuple:
        return all(not y.is_floating_point() and not y.is_complex() for y in rest)
    return not x.is_floating_point() and not x.is_complex() and any(
        x.shape == y.shape and not y.is_floating_point() and not y.is_complex() and
        y.numel() > 0 and bool(((y == 0) | (y == 1)).all()) for y in rest)


_COUNT = {2: "two", 3: "three"}


def check_unambiguous(data, what: str = "calib") -> None:
    """Raise TypeError naming ``what`` when ``data`` (one batch or an iterable of batches) is
    a top-level pair (or triple, ...) that :func:`_ambiguous_pair` cannot read safely."""
    if _ambiguous_pair(data):
        n = _COUNT.get(len(data), str(len(data)))
        shapes = [f"{describe(t)} {t.dtype}" for t in data]
        raise TypeError(f"{what} is a {type(data).__name__} of {n} tensors, "
                        f"{', '.join(shapes[:-1])} and {shapes[-1]}: it could be "
                        f"{n} batches, one (inputs, targets) "
                        f"batch or {n} inputs of one call (input_ids, attention_mask), which "
                        f"run the model differently; say which: [x1, x2] (a list of batches), "
                        f"[(inputs, targets)], or one call's inputs by name: "
                        f"sparsekern.Args(input_ids, attention_mask=mask) or a dict "
                        f"{{'input_ids': ..., 'attention_mask': ...}}")


def items(data, what: str = "calib") -> list:
    """The items of ``data`` as a list: one item (a tensor, Mapping or Args) or an iterable of
    items (a list, a DataLoader). Every item is checked; raises TypeError/ValueError naming
    ``what`` and the batch."""
    if data is None:
        raise ValueError(f"{what} is required: give calibration inputs (a tensor, a "
                         f"tokenizer's output, a list of batches or a DataLoader)")
    if isinstance(data, (torch.Tensor, Mapping, Args)):
        out = [data]
    else:
        check_unambiguous(data, what)
        try:
            out = list(data)
        except TypeError:
            raise TypeError(f"{what} must be one batch or an iterable of batches (a list, a "
                            f"DataLoader), got {type(data).__name__}") from None
    for i, item in enumerate(out):
        check_not_empty(item, f"{what} batch {i}")
    if not out:
        raise ValueError(f"{what} is empty: give at least one batch of inputs")
    return out


def input_tensors(item) -> list:
    """The tensors an item passes to the model (positional, then keyword; the targets of an
    (inputs, targets) pair left out). Raises TypeError as :func:`split` does."""
    args, kwargs = split(item)
    return [v for v in list(args) + list(kwargs.values()) if isinstance(v, torch.Tensor)]


def check_not_empty(item, what: str = "input") -> None:
    """Raise ValueError naming ``what`` and the item's shapes when one of its input tensors is
    empty (a dimension of size 0, e.g. a batch of 0 rows [0, K]): the model would see no data,
    and calibration statistics would be empty or silently missing. Also checks the item's
    kind (TypeError as :func:`split`)."""
    _, kwargs = split(item, what)
    if any(t.dim() > 0 and t.numel() == 0 for t in input_tensors(item)):
        raise ValueError(f"{what} has shape {describe(item)}, which holds no data (a dimension "
                         f"of size 0); expected at least one row in every batch")
    _check_mask_fits(kwargs, what)


def _check_mask_fits(kwargs: Dict[str, Any], what: str) -> None:
    """A 2-D ``attention_mask`` must have the shape of the 2-D ``input_ids`` beside it: models
    may accept another (transformers 5 does), but the real tokens could not be told apart,
    and calibration would count the padding too."""
    ids, mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
    if isinstance(ids, torch.Tensor) and isinstance(mask, torch.Tensor) and ids.dim() == 2 \
            and mask.dim() == 2 and ids.shape != mask.shape:
        raise ValueError(f"{what} has attention_mask of shape {list(mask.shape)} but input_ids of "
                         f"shape {list(ids.shape)}; expected one mask entry per token (the "
                         f"tokenizer's output, unchanged)")


def to_device(item, device):
    """The item with every tensor moved to ``device`` (structure kept)."""
    if isinstance(item, torch.Tensor):
        return item.to(device)
    if isinstance(item, Args):
        return Args(*[to_device(a, device) for a in item.args],
                    **{k: to_device(v, device) for k, v in item.kwargs.items()})
    if isinstance(item, Mapping):
        return {k: to_device(v, device) for k, v in item.items()}
    if isinstance(item, (tuple, list)):
        return type(item)(to_device(v, device) for v in item) if isinstance(item, list) \
            else tuple(to_device(v, device) for v in item)
    return item


def batch_size(item) -> int:
    """Rows of the first tensor of the item's inputs (1 when it has none)."""
    args, kwargs = split(item)
    for v in list(args) + list(kwargs.values()):
        if isinstance(v, torch.Tensor) and v.dim() > 0:
            return int(v.shape[0])
    return 1


def train_flags(model: nn.Module) -> Dict[nn.Module, bool]:
    """{module: its training flag} for every module of ``model``."""
    return {m: m.training for m in model.modules()}


def restore_flags(flags: Mapping[nn.Module, bool]) -> None:
    """Set each module's own training flag back (``model.train(x)`` would overwrite them all)."""
    for m, flag in flags.items():
        m.training = flag


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model.eval()`` inside; every module's own train/eval flag restored on exit."""
    flags = train_flags(model)
    model.eval()
    try:
        yield model
    finally:
        restore_flags(flags)


@contextlib.contextmanager
def no_kv_cache(model: nn.Module) -> Iterator[nn.Module]:
    """Every module's ``config.use_cache`` (a Hugging Face model's) False inside, restored on
    exit. A calibration forward never needs a key/value cache, and a cache object passed to
    each block is state: replaying a block from captured arguments would append to it."""
    changed = []
    try:
        for m in model.modules():
            cfg = getattr(m, "config", None)
            if cfg is None or getattr(cfg, "use_cache", None) is not True or \
                    any(c is cfg for c in changed):
                continue
            try:
                cfg.use_cache = False
            except Exception:  # a frozen or foreign config: leave it as it is
                continue
            changed.append(cfg)
        yield model
    finally:
        for cfg in changed:
            cfg.use_cache = True


# -- real tokens: a padded batch's statistics count only the tokens its attention_mask keeps --

_TOKEN_MASK: contextvars.ContextVar = contextvars.ContextVar("sparsekern_token_mask",
                                                             default=None)


def token_mask_of(item, model: Optional[nn.Module] = None) -> Optional[torch.Tensor]:
    """The item's ``attention_mask`` [batch, seq] (a tokenizer's output: nonzero = a real
    token, 0 = padding) when it passes a 2-D tensor of that name, else None.

    With ``model``, the item's positional and keyword inputs are bound to the parameters of
    ``model.forward`` (:func:`named_inputs`), so ``Args(input_ids, mask)`` finds the mask of a
    forward ``(input_ids, attention_mask, ...)``; a positional input bound to another name
    (GPT-2's second parameter is its key/value cache) is never read as the mask. Without
    ``model``, or when binding fails, only a keyword ``attention_mask`` counts.

    None too for an encoder-decoder model (``config.is_encoder_decoder``) or an item with
    decoder inputs: the mask then covers the encoder's sequence only, and a decoder layer's
    input of the same [batch, seq] shape would lose real tokens."""
    try:
        args, kwargs = split(item)
    except TypeError:
        return None
    named = named_inputs(model, args, kwargs)
    if any(k.startswith("decoder_") for k in named) or getattr(
            getattr(model, "config", None), "is_encoder_decoder", False) is True:
        return None
    m = named.get("attention_mask")
    return m if isinstance(m, torch.Tensor) and m.dim() == 2 else None


#: Attributes under which a wrapper holds the module it runs: DistributedDataParallel and
#: DataParallel (``module``), torch.compile (``_orig_mod``).
_WRAPPED = ("module", "_orig_mod")


def named_inputs(model: Optional[nn.Module], args: tuple, kwargs: Dict[str, Any]
                 ) -> Dict[str, Any]:
    """{parameter name: value} of the call ``model(*args, **kwargs)``, bound to the
    parameters of ``model.forward`` (keywords a ``**kwargs`` parameter takes keep their
    names; inputs a ``*args`` parameter takes are left out). Only ``kwargs`` when ``model``
    is None, its signature cannot be read, or the call does not bind to it."""
    sig = _forward_signature(model)
    if sig is None:
        return dict(kwargs)
    try:
        bound = sig.bind_partial(*args, **kwargs)
    except TypeError:  # the model itself would reject the call: say nothing more here
        return dict(kwargs)
    named: Dict[str, Any] = {}
    for name, value in bound.arguments.items():
        kind = sig.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            named.update(value)
        elif kind is not inspect.Parameter.VAR_POSITIONAL:
            named[name] = value
    return named


def _forward_signature(model, depth: int = 0) -> Optional[inspect.Signature]:
    """The signature of ``model.forward`` (decorators that keep ``__wrapped__`` seen
    through); a wrapper whose forward takes only ``*args, **kwargs`` gives its wrapped
    module's (see ``_WRAPPED``). None when there is none to read."""
    forward = getattr(model, "forward", None)
    if forward is None or depth > 8:  # depth: a wrapper cycle must not loop forever
        return None
    try:
        sig = inspect.signature(forward)
    except (TypeError, ValueError):  # a builtin or C-implemented forward
        return None
    only_varargs = all(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                       for p in sig.parameters.values())
    inner = next((getattr(model, a) for a in _WRAPPED
                  if isinstance(getattr(model, a, None), nn.Module)), None)
    if only_varargs and inner is not None and inner is not model:
        return _forward_signature(inner, depth + 1)
    return sig


@contextlib.contextmanager
def token_mask(mask: Optional[torch.Tensor]) -> Iterator[None]:
    """Inside, :func:`real_token_rows` keeps only the tokens ``mask`` [batch, seq] marks
    real (None: every row); calibration runs each item inside its own mask."""
    token = _TOKEN_MASK.set(mask)
    try:
        yield
    finally:
        _TOKEN_MASK.reset(token)


def current_token_mask() -> Optional[torch.Tensor]:
    return _TOKEN_MASK.get()


def real_tokens(x: torch.Tensor, mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Which rows of a token-shaped x are real tokens, given a token mask [batch, seq]:
    bool [batch, seq] for x [batch, seq, D], bool [batch * seq] for x [batch * seq, D] (the
    tokens flattened batch-major, as OPT does before its MLP); None when there is no mask or
    x is not token-shaped (a pooled embedding, a classifier's logits)."""
    if mask is None:
        return None
    if x.dim() == 3 and tuple(x.shape[:2]) == tuple(mask.shape):
        return mask.to(device=x.device) != 0
    if x.dim() == 2 and x.shape[0] == mask.numel():
        return mask.reshape(-1).to(device=x.device) != 0
    return None


def real_token_rows(x: torch.Tensor) -> torch.Tensor:
    """A layer input x [..., K] as rows [n, K]: under a token mask (see :func:`real_tokens`),
    only the real tokens' rows (padding would skew calibration statistics: its activations
    are whatever the pad token id makes them)."""
    keep = real_tokens(x, _TOKEN_MASK.get())
    return x[keep] if keep is not None else x.reshape(-1, x.shape[-1])
