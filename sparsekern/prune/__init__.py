"""sparsekern.prune: prune a model, fine-tune it with the masks held, convert it to sparse layers.

Ten lines, from a trained dense model to a saved sparse one::

    from sparsekern import prune

    acc = lambda m: prune.accuracy(m, val_loader)
    table = prune.sensitivity_scan(model, acc, png="sensitivity.png")     # one layer at a time
    ratios = prune.ratios_from_sensitivity(table, max_drop=0.01)          # <= 1 point per layer
    masks = prune.prune_model(model, ratios, granularity="fine", criterion="l1")
    prune.fine_tune(model, train_loader, epochs=3, masks=masks)           # pruned weights stay 0
    print(acc(model), prune.sparsity(model)["total"])
    model = prune.convert(model, layout="auto")                           # sparse layers
    prune.save_sparse(model, "model.sparse.pt")
    fresh = prune.load_sparse(MyModel(), "model.sparse.pt")               # unmodified model class

Other granularities: ``granularity="2:4"`` (N:M, no ratio), ``(1, 8)`` / ``(32, 32)``
blocks (convert with ``layout="bsr", blocksize=...``), ``"kernel"`` (Conv2d), and
``prune.channel_prune(model, 0.5, example_input=x, criterion="bn_scale")``, which removes
channels physically (criteria "l1", "l2", "bn_scale", "apoz", "regression").
Iterative: ``prune.iterative_prune(model, [0.3, 0.5, 0.7], train_fn=..., eval_fn=...)``.

Real models (Hugging Face): ``calib`` batches may be tensors, tokenizer outputs (dicts,
``model(**batch)``), ``sparsekern.Args(...)`` or (inputs, targets) pairs (sparsekern.inputs).
``criterion="sparsegpt"`` reconstructs each layer from its calibration Hessian, layer by
layer in forward order; then recover against the dense model::

    teacher = copy.deepcopy(model)
    masks = prune.prune_model(model, granularity="2:4", criterion="sparsegpt", calib=batches)
    prune.distill(model, teacher, unlabeled_batches, masks=masks, steps=200)
In your own loop: ``with prune.MaskHolder(model, masks): <train as usual>``; for a
sparsified model, ``with prune.StoredZeroHolder(model):`` keeps the zeros its packed layers
store (inside BSR blocks, 2:4's spare slots) at zero.

Public names:
    prune_model, apply_masks, MaskHolder, StoredZeroHolder, masks_from_zeros, sparsity (masks)
    SparseGPTConfig                                 (criterion="sparsegpt" settings)
    distill, DEFAULT_DISTILL_LR                     (recovery against the dense teacher)
    MaskUpdate, nm_mask, is_nm                      (distill with moving N:M masks: SR-STE)
    channel_prune, ChannelPruneReport                                       (channels)
    bn_l1_penalty                                                           (network slimming)
    sensitivity_scan, ratios_from_sensitivity, SensitivityTable             (sensitivity)
    iterative_prune, fine_tune, train, accuracy, DEFAULT_FINETUNE_LR        (schedule/trainer)
    convert, save_sparse, load_sparse, SparseConv2d                         (conversion)
    count_params, count_macs                                                (size and cost)
    parse_granularity, CRITERIA                                             (spellings)
"""
from ..conv import SparseConv2d
from .channel import ChannelPruneReport, channel_prune
from .convert import convert, load_sparse, save_sparse
from .criteria import CRITERIA, bn_l1_penalty
from .distill import DEFAULT_DISTILL_LR, distill
from .granularity import parse as parse_granularity
from .mask_update import MaskUpdate, is_nm, nm_mask
from .masks import MaskHolder, StoredZeroHolder, apply_masks, masks_from_zeros, sparsity
from .pruner import calib_read, prune_model
from .sparsegpt import SparseGPTConfig
from .schedule import IterativeResult, iterative_prune
from .sensitivity import SensitivityTable, ratios_from_sensitivity, sensitivity_scan
from .stats import count_macs, count_params
from .trainer import DEFAULT_FINETUNE_LR, accuracy, fine_tune, train

__all__ = ["prune_model", "calib_read", "SparseGPTConfig", "distill", "DEFAULT_DISTILL_LR", "MaskUpdate",
           "is_nm", "nm_mask", "apply_masks", "MaskHolder", "StoredZeroHolder", "masks_from_zeros",
           "sparsity",
           "channel_prune", "ChannelPruneReport", "bn_l1_penalty", "sensitivity_scan",
           "ratios_from_sensitivity", "SensitivityTable", "iterative_prune", "IterativeResult",
           "fine_tune", "train", "accuracy", "DEFAULT_FINETUNE_LR", "convert", "save_sparse",
           "load_sparse", "SparseConv2d", "count_params", "count_macs", "parse_granularity",
           "CRITERIA"]
