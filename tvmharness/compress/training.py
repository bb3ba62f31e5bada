"""The one training loop fine-tuning, gradual pruning and distillation share.

A model with a labelled training split (the digits CNN) trains on it. A model without one (the
seeded-init zoo) can only be trained to match its fp32 self on seeded noise inputs (data-free
distillation); the row's notes say which it was."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..data import ModelInput, digits_split, random_feeds
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
    labels, it is the squared error to every output of the teacher (default: the fp32 model) on
    seeded noise, each relative to that output's mean square."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    labelled = labelled_training_set(base)
    if labelled is None:
        teacher = teacher if teacher is not None else base.torch_module
        xs, batch = _noise_batches(module, base.inputs, seed, epochs)
        ys = None
        note = (f"trained {epochs} epoch(s) to match the fp32 model on seeded noise "
                f"({len(xs[0])} new batches of {batch} each; no labelled data for {base.name})")
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
    for epoch in range(epochs):
        batches = xs[epoch] if ys is None else list(torch.randperm(len(xs), generator=gen).split(BATCH))
        for batch in batches:
            x, y = (batch, None) if ys is None else ((xs[batch],), ys[batch])  # x: one tensor per model input
            opt.zero_grad()
            outputs = _float_outputs(module(*x))
            with torch.no_grad():
                targets = _float_outputs(teacher(*x)) if teacher is not None else []
            if y is None:  # match every output, each on its own scale (a softmax would not pin embeddings' level)
                loss = sum(F.mse_loss(out, target) / target.square().mean().clamp(min=1e-12)
                           for out, target in zip(outputs, targets, strict=True))
            else:  # labels classify with the first output; a teacher's softened first output guides it
                loss = (1.0 - alpha) * F.cross_entropy(outputs[0], y)
                if targets and alpha > 0.0:
                    soft = F.softmax(targets[0] / temperature, dim=-1)
                    loss = loss + alpha * temperature ** 2 * F.kl_div(F.log_softmax(outputs[0] / temperature, dim=-1),
                                                                     soft, reduction="batchmean")
            loss.backward()
            opt.step()
            if after_step is not None:
                after_step()
    module.eval()
    return note


def _noise_batches(module, inputs: tuple[ModelInput, ...], seed: int, epochs: int) -> tuple[list[list[tuple]], int]:
    """Each epoch's seeded noise (new each epoch, so the model learns the fp32 function, not a few
    samples), in batches of NOISE_BATCH, one tensor per input. A model built for its example's batch
    alone (it reshapes to it) gets as many samples in batches of its own size."""
    import torch

    def draw(batch: int, count: int) -> list[list[tuple]]:
        shaped = tuple(i.with_batch(batch) for i in inputs)
        feeds = [tuple(torch.from_numpy(a) for a in feed) for feed in random_feeds(shaped, count * epochs, seed=seed + 101)]
        return [feeds[k * count:(k + 1) * count] for k in range(epochs)]

    own = inputs[0].shape[0] if inputs[0].shape else 1
    xs = draw(NOISE_BATCH, NOISE_BATCHES_PER_EPOCH)
    try:
        with torch.no_grad():
            module.eval()(*xs[0][0])
        return xs, NOISE_BATCH
    except Exception:  # any error a fixed-batch forward raises; at its own batch it runs, as the baseline did
        return draw(own, max(1, NOISE_BATCHES_PER_EPOCH * NOISE_BATCH // own)), own


def _float_outputs(out) -> list:
    """A call's outputs, flattened as export numbers them, less integer ones (indices): what a loss reads."""
    import torch

    return [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor) and t.is_floating_point()]


def evaluate(module, base: LoadedModel) -> float | None:
    """Held-out accuracy in PyTorch, where the model has labels."""
    import torch

    if base.eval_set is None:
        return None
    x, y = base.eval_set
    with torch.no_grad():
        logits = module(torch.from_numpy(np.concatenate(list(x))))
    return float((logits.argmax(-1).numpy() == y).mean())
