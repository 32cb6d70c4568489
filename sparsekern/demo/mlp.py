"""The digits MLP (``python -m sparsekern demo --model mlp``): an MLP 64 -> 2048 -> 2048 -> 10
trained on scikit-learn's digits (8x8 images, 1797 samples, shipped with scikit-learn),
pruned with fine-tuning on the labels."""
from __future__ import annotations

import os
import time
from collections import OrderedDict

import torch
from torch import nn

from .. import prune
from ..auto.cache import cache_root, digest


class DigitsMLP(nn.Sequential):
    """64 -> hidden -> ... -> hidden -> 10 with ReLU; layers fc1, fc2, ..., head."""

    def __init__(self, hidden: int = 2048, hidden_layers: int = 2):
        layers = [("fc1", nn.Linear(64, hidden)), ("relu1", nn.ReLU())]
        for i in range(2, hidden_layers + 1):
            layers += [(f"fc{i}", nn.Linear(hidden, hidden)), (f"relu{i}", nn.ReLU())]
        layers.append(("head", nn.Linear(hidden, 10)))
        super().__init__(OrderedDict(layers))


def digits_data(seed: int = 0, batch_size: int = 64):
    """(train, val, test) DataLoaders over sklearn's digits (70/10/20 split), pixels / 16."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError("the demo's default data set is scikit-learn's digits: "
                          "pip install scikit-learn (or sparsekern[demo])") from e
    from torch.utils.data import DataLoader, TensorDataset
    d = load_digits()
    X = torch.tensor(d.data, dtype=torch.float32) / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(seed))
    n_tr, n_va = int(0.7 * len(X)), int(0.1 * len(X))
    parts = perm[:n_tr], perm[n_tr:n_tr + n_va], perm[n_tr + n_va:]
    gen = torch.Generator().manual_seed(seed)
    train = DataLoader(TensorDataset(X[parts[0]], y[parts[0]]), batch_size=batch_size,
                       shuffle=True, generator=gen)
    val, test = (DataLoader(TensorDataset(X[p], y[p]), batch_size=256) for p in parts[1:])
    return train, val, test


def trained_digits_model(hidden: int, hidden_layers: int, epochs: int, seed: int, train_loader,
                         use_cache: bool = True, print_fn=print) -> nn.Module:
    """The default model, trained (Adam, lr 1e-3) or loaded from the cache of an earlier run."""
    key = {"model": "DigitsMLP", "hidden": hidden, "hidden_layers": hidden_layers,
           "epochs": epochs, "seed": seed, "lr": 1e-3, "torch": torch.__version__, "v": 1}
    path = cache_root() / "models" / f"digits-{digest(key)}.pt"
    torch.manual_seed(seed)
    model = DigitsMLP(hidden, hidden_layers)
    if use_cache and path.exists():
        try:
            model.load_state_dict(torch.load(path, weights_only=True))
            print_fn(f"dense model: loaded the trained copy from {path}")
            return model.eval()
        except Exception as e:  # a damaged file: train again
            print_fn(f"dense model: cached copy unreadable ({type(e).__name__}); training")
    t = time.perf_counter()
    prune.train(model, train_loader, epochs=epochs, lr=1e-3, progress=False)
    print_fn(f"dense model: trained {epochs} epochs in {time.perf_counter() - t:.1f} s")
    if use_cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save(model.state_dict(), tmp)
            os.replace(tmp, path)
        except OSError as e:  # a cache that cannot be written costs a retrain, not the run
            print_fn(f"dense model: not cached, {path.parent} cannot be written ({e}; the "
                     f"cache folder is $SPARSEKERN_CACHE or ~/.cache/sparsekern)")
    return model.eval()
