"""`sparsekern demo`: from a trained dense model to a measured faster sparse one, end to end.

The main job (``python -m sparsekern demo``): the pretrained all-MiniLM-L6-v2 sentence
encoder, offline (:mod:`sparsekern.demo.minilm_job`). ``--model mlp``: an MLP trained on
scikit-learn's digits (:mod:`sparsekern.demo.mlp`). Steps (:mod:`sparsekern.demo.pipeline`):
dense baseline -> latency table -> sensitivity -> NetAdapt (or AMC) with the configured
pruning criterion -> recovery with the masks held (fine-tuning on labels, or distillation
from the dense model) -> ``sparsify(layout="auto")`` -> measure -> report.json + PNGs.

Your own model and data, in Python::

    from sparsekern import demo
    cfg = demo.DemoConfig(target_speedup=[2.5, 1.8], out_dir="out")
    result = demo.run(model, train_batches, val_batches, [x[:1], x[:64]], cfg,
                      test=test_batches)
    result.model          # the sparse model; result.report is what report.json holds

``train_batches`` of (inputs, targets) pairs fine-tune with the labels; unlabelled items
(tensors, or Mappings such as a tokenizer's output, called as ``model(**item)``) are
distilled from the dense model, whose outputs are then the quality reference (one vector
per sample: token outputs [B, T, ...] mean-pooled over the tokens the ``attention_mask``
keeps). Generators are read into a list once; the model's weights and train/eval flags
are left as they were.
"""
from .cli import add_arguments, check_arguments, choose_threads, main
from .config import (MAX_ACCURACY_DROP, MAX_PREDICTION_ERROR, REPORT_TIMER, REPORT_WINDOWS,
                     REQUIRED_SPEEDUP, SEARCH_SPEEDUP, SENSITIVITY_RATIOS, SLOWER_TOLERANCE,
                     DemoConfig)
from .mlp import DigitsMLP, digits_data, trained_digits_model
from .pipeline import DemoResult, measure_layers, run
from .tasks import ClassificationTask, DistillTask, Steps, task_for

__all__ = ["run", "DemoConfig", "DemoResult", "measure_layers", "ClassificationTask",
           "DistillTask", "Steps", "task_for", "DigitsMLP", "digits_data",
           "trained_digits_model", "add_arguments", "check_arguments", "main", "choose_threads",
           "REQUIRED_SPEEDUP", "SEARCH_SPEEDUP", "MAX_ACCURACY_DROP", "MAX_PREDICTION_ERROR",
           "SLOWER_TOLERANCE", "REPORT_TIMER", "REPORT_WINDOWS", "SENSITIVITY_RATIOS"]
