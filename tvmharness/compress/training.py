"""The one training loop fine-tuning, gradual pruning and distillation share.

A model with a labelled training split (the digits CNN) trains on it. A model without one (the
seeded-init zoo) can only be trained to match its fp32 self on seeded noise inputs (data-free
distillation); the row's notes say which it was."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..data import digits_split, random_feeds
from ..models import LoadedModel

BATCH = 64
NOISE_BATCHES_PER_EPOCH = 8
NOISE_BATCH = 4


def labelled_training_set(model: LoadedModel) -> tuple[np.ndarray, np.ndarray] | None:
    """(x_train, y_train) where the model has real training data, else None."""
    if model.source == "zoo" and model.name == "digits_cnn":
        x_train, y_train, _, _ = digits_split()
        return x_train, y_train
    return None


def train(module, base: LoadedModel, epochs: int, lr: float, teacher=None, temperature: float = 4.0,
          alpha: float = 0.0, seed: int = 0, after_step: Callable[[], None] | None = None) -> str:
    """Train `module` in place; returns a note saying on what. With labels, the loss is cross-entropy,
    mixed with alpha x the softened teacher's KL divergence (x T^2) when a teacher is given. Without
    labels, the loss is the KL divergence to the teacher (default: the fp32 model) on seeded noise."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    labelled = labelled_training_set(base)
    if labelled is None:
        teacher = teacher if teacher is not None else base.torch_module
        alpha = 1.0
        batch_inputs = tuple(i.with_batch(NOISE_BATCH) for i in base.inputs)
        xs = [tuple(torch.from_numpy(a) for a in feed)
              for feed in random_feeds(batch_inputs, NOISE_BATCHES_PER_EPOCH, seed=seed + 101)]
        ys = None
        note = (f"trained {epochs} epoch(s) to match the fp32 model on seeded noise "
                f"({NOISE_BATCHES_PER_EPOCH} batches of {NOISE_BATCH}; no labelled data for {base.name})")
    else:
        xs, ys = torch.from_numpy(labelled[0]), torch.from_numpy(labelled[1])
        note = f"trained {epochs} epoch(s) on the {base.name} training split" + (
            f" with a teacher (T={temperature:g}, alpha={alpha:g})" if teacher is not None else "")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=lr)
    module.train()
    for m in module.modules():  # keep batch-norm statistics: a short fine-tune should not re-estimate them
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    if teacher is not None:
        teacher.eval()
    for _ in range(epochs):
        batches = xs if ys is None else list(torch.randperm(len(xs), generator=gen).split(BATCH))
        for batch in batches:
            x, y = (batch, None) if ys is None else ((xs[batch],), ys[batch])  # x: one tensor per model input
            opt.zero_grad()
            logits = module(*x)
            loss = 0.0
            if y is not None and alpha < 1.0:
                loss = (1.0 - alpha) * F.cross_entropy(logits, y)
            if teacher is not None and alpha > 0.0:
                with torch.no_grad():
                    soft = F.softmax(teacher(*x) / temperature, dim=-1)
                loss = loss + alpha * temperature ** 2 * F.kl_div(F.log_softmax(logits / temperature, dim=-1), soft,
                                                                 reduction="batchmean")
            loss.backward()
            opt.step()
            if after_step is not None:
                after_step()
    module.eval()
    return note


def evaluate(module, base: LoadedModel) -> float | None:
    """Held-out accuracy in PyTorch, where the model has labels."""
    import torch

    if base.eval_set is None:
        return None
    x, y = base.eval_set
    with torch.no_grad():
        logits = module(torch.from_numpy(np.concatenate(list(x))))
    return float((logits.argmax(-1).numpy() == y).mean())
