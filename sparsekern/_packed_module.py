"""Base of the sparse layers: a module holding a packed weight (values, indices, offsets)."""
from __future__ import annotations

import torch
from torch import nn

from .formats import from_parts


class PackedWeightModule(nn.Module):
    """Loads a state_dict whose pattern (so tensor shapes) may differ from this instance's.

    Subclasses hold ``values`` (Parameter), ``indices`` and ``offsets`` (buffers), ``layout``,
    and a ``weight`` property giving the format (its ``shape`` is the weight matrix's).
    """

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # Adopt the incoming tensors' shapes and dtypes, load, then validate the whole format.
        for name in ("values", "indices", "offsets"):
            t = state_dict.get(prefix + name)
            if t is None:
                continue
            own = getattr(self, name)
            if own.shape != t.shape or own.dtype != t.dtype:
                new = torch.empty_like(t, device=own.device)
                if name == "values":
                    self.values = nn.Parameter(new, requires_grad=own.requires_grad)
                else:
                    setattr(self, name, new)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        from_parts(self.layout, self.values.detach(), self.indices, self.offsets,
                   self.weight.shape, validate=True)
