"""The one training loop fine-tuning, gradual pruning and distillation share.

A model with labelled training data (the digits CNN's split, or a recipe's [data] train file with
labels) trains on it. One with unlabelled training samples is trained to match its fp32 self on
them, and one with none on seeded noise inputs (data-free distillation); the row's notes say which
it was."""

from __future__ import annotations

from typing import Callable

from ..data import DataSet, random_feeds
from ..errors import HarnessError
from ..measure import accuracy, output_arrays
from ..models import LoadedModel
from .base import NotApplicable

BATCH = 64
NOISE_BATCHES_PER_EPOCH = 8
NOISE_BATCH = 4


def train(module, base: LoadedModel, epochs: int, lr: float, teacher=None, temperature: float = 4.0,
          alpha: float = 0.0, seed: int = 0, after_step: Callable[[], None] | None = None) -> str:
    """Train `module` in place; returns a note saying on what. With labels, the loss is cross-entropy,
    mixed with alpha x the softened teacher's KL divergence (x T^2) when a teacher is given. Without
    labels, it is the squared error to every output of the teacher (default: the fp32 model), each
    relative to that output's mean square."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    data = base.train_data
    labelled = data is not None and data.labels is not None
    if not labelled:
        teacher = teacher if teacher is not None else base.torch_module
    epochs_batches, batch = _batches(module, base, data, epochs, seed)
    if data is None:
        note = (f"trained {epochs} epoch(s) to match the fp32 model on seeded noise ({len(epochs_batches[0])} new "
                f"batches of {batch} each; no training data for {base.name})")
    elif not labelled:
        note = f"trained {epochs} epoch(s) to match the fp32 model on {data.source}, in batches of {batch}"
    else:
        note = f"trained {epochs} epoch(s) on {data.source}, in batches of {batch}" + (
            f", with a teacher (T={temperature:g}, alpha={alpha:g})" if teacher is not None else "")
    torch.manual_seed(seed)
    opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=lr)
    module.train()
    for m in module.modules():  # keep batch-norm statistics: a short fine-tune should not re-estimate them
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    if teacher is not None:
        teacher.eval()
    checked_labels = False
    for batches in epochs_batches:
        for x, y in batches:  # x: one tensor per model input
            opt.zero_grad()
            _apply_pruning_masks(module)
            outputs = _float_outputs(module(*x))
            if not outputs:
                raise NotApplicable(f"{base.name} returns no float output to train against", "leave fine-tuning out for it")
            with torch.no_grad():
                targets = _float_outputs(teacher(*x)) if teacher is not None else []
            if y is None:  # match every output, each on its own scale (a softmax would not pin embeddings' level)
                loss = sum(F.mse_loss(out, target) / target.square().mean().clamp(min=1e-6)
                           for out, target in zip(outputs, targets, strict=True))
            else:  # labels classify with the first output; a teacher's softened first output guides it
                if outputs[0].ndim != 2 or outputs[0].shape[1] < 2:
                    raise HarnessError(f"{data.source}'s labels train a first output of (batch, classes), and "
                                       f"{base.name}'s is {list(outputs[0].shape)}",
                                       "give labels for a classifier, or save the training data without 'labels'")
                classes = outputs[0].shape[1]
                if not checked_labels and (data.labels.min() < 0 or data.labels.max() >= classes):  # (torch's: "Target 5 is out of bounds")
                    raise HarnessError(f"{data.source}'s labels hold classes in [{int(data.labels.min())}, "
                                       f"{int(data.labels.max())}], and {base.name}'s first output has {classes} "
                                       f"classes (0 to {classes - 1})", "give labels of the model's classes, 0 to "
                                       f"{classes - 1}")
                checked_labels = True  # (every label, once: the first batch's output says how many classes)
                loss = (1.0 - alpha) * F.cross_entropy(outputs[0], y)
                if targets and alpha > 0.0:
                    soft = F.softmax(targets[0] / temperature, dim=-1)
                    loss = loss + alpha * temperature ** 2 * F.kl_div(F.log_softmax(outputs[0] / temperature, dim=-1),
                                                                     soft, reduction="batchmean")
            loss.backward()
            opt.step()
            if after_step is not None:
                after_step()
    _apply_pruning_masks(module)
    module.eval()
    return note


def _apply_pruning_masks(module) -> None:
    """weight = weight_orig x mask for every pruned layer, now. Pruning's hook does it when a layer is
    called, but some modules read a layer's weight without calling it (nn.MultiheadAttention's
    out_proj): there the weight would stay the tensor of the first step (its graph freed after one
    backward) and weight_orig would never learn."""
    from torch.nn.utils import prune

    for m in module.modules():
        for hook in list(m._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                hook(m, None)


def _batches(module, base: LoadedModel, data: DataSet | None, epochs: int, seed: int) -> tuple[list[list[tuple]], int]:
    """Each epoch's batches of (inputs, labels or None): the training samples reshuffled in batches of
    BATCH, or new seeded noise in batches of NOISE_BATCH (new each epoch, so the model learns the fp32
    function, not a few samples). A model built for its example's batch alone (it reshapes to it)
    gets batches of its own size."""
    import torch

    def noise(size: int) -> list[list[tuple]]:
        count = max(1, NOISE_BATCHES_PER_EPOCH * NOISE_BATCH // size)
        shaped = tuple(i.with_batch(size) for i in base.inputs)
        feeds = [tuple(torch.from_numpy(a) for a in feed) for feed in random_feeds(shaped, count * epochs, seed=seed + 101)]
        return [[(x, None) for x in feeds[k * count:(k + 1) * count]] for k in range(epochs)]

    def shuffled(size: int, whole: bool) -> list[list[tuple]]:
        gen = torch.Generator().manual_seed(seed)
        arrays = [torch.from_numpy(a) for a in data.arrays]
        labels = torch.from_numpy(data.labels) if data.labels is not None else None
        out = []
        for _ in range(epochs):
            picks = [p for p in torch.randperm(len(data), generator=gen).split(size) if not whole or len(p) == size]
            out.append([(tuple(a[p] for a in arrays), labels[p] if labels is not None else None) for p in picks])
        return out

    size = BATCH if data is not None else NOISE_BATCH
    epochs_batches = shuffled(size, False) if data is not None else noise(size)
    try:
        with torch.no_grad():
            module.eval()(*epochs_batches[0][0][0])
        return epochs_batches, size
    except Exception:  # any error a fixed-batch forward raises; at its own batch it runs, as the baseline did
        return (shuffled(base.batch, True) if data is not None else noise(base.batch)), base.batch


def _float_outputs(out) -> list:
    """A call's outputs, flattened as export numbers them, less integer ones (indices): what a loss reads."""
    import torch

    return [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor) and t.is_floating_point()]


def evaluate(module, base: LoadedModel) -> float | None:
    """Held-out accuracy in PyTorch, where the model's held-out data has labels."""
    import torch

    labels = base.eval_labels
    if labels is None:
        return None
    with torch.no_grad():  # scored as the rows are (measure.accuracy)
        outputs = [output_arrays(module(*(torch.from_numpy(a) for a in feed)), torch.Tensor)
                   for feed in base.eval_data.feeds(base.batch)]
    return accuracy(outputs, labels)
