"""A small CNN that the harness trains on scikit-learn's digits, so that accuracy is real."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..cache import content_hash, entry_lock, intact, stage_dir, torch_write_failed, written_whole
from ..data import digits_split
from ..errors import FAILED, HarnessError, one_line

# Bump when the architecture or the training changes: the cached weights are keyed by it.
# Version 2 trains on one thread: the same weights whatever the host's core count, and 3x to 8x faster
# than on two on a shared 2-core host, quiet to busy (batches of 64 8x8 images are too small to share).
TRAINING = {"version": 2, "epochs": 40, "lr": 3e-3, "batch": 64, "seed": 0, "weight_decay": 1e-4}


class DigitsCNN(nn.Module):
    def __init__(self, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 16, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


def train_digits_cnn(epochs: int = TRAINING["epochs"], width: int = 16, seed: int = TRAINING["seed"]) -> DigitsCNN:
    """Train on the digits training split, deterministically for a given seed (on one thread: the
    caller's thread count is restored after)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(epochs, width, seed)
    finally:
        torch.set_num_threads(threads)


def _train(epochs: int, width: int, seed: int) -> DigitsCNN:
    x_train, y_train, _, _ = digits_split()
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = DigitsCNN(width)
    opt = torch.optim.AdamW(model.parameters(), lr=TRAINING["lr"], weight_decay=TRAINING["weight_decay"])
    xs, ys = torch.from_numpy(x_train), torch.from_numpy(y_train)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(xs), generator=gen)
        for i in range(0, len(xs), TRAINING["batch"]):
            idx = order[i : i + TRAINING["batch"]]
            opt.zero_grad()
            nn.functional.cross_entropy(model(xs[idx]), ys[idx]).backward()
            opt.step()
    return model.eval()


def digits_cnn(cache_dir: Path) -> tuple[DigitsCNN, bool]:
    """The trained CNN, from the cache when it was trained before: (model, cache_hit)."""
    key = content_hash("digits_cnn", TRAINING, torch.__version__)
    path = stage_dir(cache_dir, "models", key) / "digits_cnn.pt"
    if not intact(path):
        with entry_lock(path.parent):  # another process training it now: wait for it, then load its weights
            if not intact(path):
                model = train_digits_cnn()
                try:
                    with written_whole(path, checked=True) as partial:
                        torch.save(model.state_dict(), partial)
                except (OSError, RuntimeError) as err:
                    if not torch_write_failed(err):
                        raise
                    raise HarnessError(f"cannot write digits_cnn's trained weights to {path.parent} (is the disk full?): "
                                       f"{one_line(err)}", "free space there or make it writable, or give another "
                                       "--output-dir", FAILED) from None
                return model, False
    model = DigitsCNN()
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval(), True
