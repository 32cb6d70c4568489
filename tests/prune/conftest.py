"""Shared fixtures: scikit-learn's digits (ships offline), a small MLP and CNN trained on it.

The trained models are built once per session (seconds) and deep-copied by each test.
Torch runs single-threaded here: on a busy 2-core machine its thread pool makes these tiny
models tens of times slower.
"""
import copy

import pytest
import torch

from sparsekern import prune

from .models import CNN, MLP, Digits


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def digits():
    return Digits()


def _trained(model, digits, image, epochs):
    # Session fixtures are set up before the module-scoped _one_thread: set it here too.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        prune.train(model, digits.loader("train", image), epochs=epochs, lr=3e-3,
                    progress=False)
    finally:
        torch.set_num_threads(before)
    model.eval()
    return model


@pytest.fixture(scope="session")
def _mlp(digits):
    torch.manual_seed(0)
    return _trained(MLP(), digits, False, 20)


@pytest.fixture(scope="session")
def _cnn(digits):
    torch.manual_seed(0)
    return _trained(CNN(), digits, True, 10)


@pytest.fixture
def mlp(_mlp):
    """A fresh copy of the trained MLP (each test may modify it)."""
    return copy.deepcopy(_mlp)


@pytest.fixture
def cnn(_cnn):
    """A fresh copy of the trained CNN (each test may modify it)."""
    return copy.deepcopy(_cnn)
