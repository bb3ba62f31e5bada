"""Evaluation and calibration data. Only data that ships inside a package: nothing is downloaded."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

SEED = 0

Feed = tuple[np.ndarray, ...]  # one call's inputs, in the order the model takes them


@dataclass(frozen=True)
class ModelInput:
    """One input a model takes: name, shape (with the batch dimension) and dtype. Seeded inputs of
    an integer or bool dtype are drawn from `value_range` (inclusive: the example's values, the rows
    of the table an ONNX input indexes, or a recipe's [inputs] range, since token ids and indices
    must stay in range; `range_from` says which), from {0, 1} where none gave one; float inputs
    are standard normal."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    value_range: tuple[int, int] | None = None
    range_from: str | None = None  # "the example", "[inputs]" or "<table>'s N rows"

    @property
    def is_float(self) -> bool:
        return np.dtype(self.dtype).kind == "f"

    def with_batch(self, batch: int) -> "ModelInput":
        return ModelInput(self.name, (batch, *self.shape[1:]), self.dtype, self.value_range, self.range_from)

    def signature(self) -> dict:
        """What a compiled model takes: name, shape, dtype (not how its values are seeded)."""
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    def describe(self) -> dict:
        return self.signature() | (
            {"value_range": list(self.value_range), "range_from": self.range_from} if self.value_range is not None else {})


@functools.cache
def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits as NCHW float32 in [0, 1]: x_train, y_train, x_test, y_test (stratified 80/20)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=SEED, stratify=y)
    return x_train, y_train, x_test, y_test


def feed_dict(inputs: tuple[ModelInput, ...], feed: Feed, wanted: list[str]) -> dict[str, np.ndarray]:
    """One call's inputs by the names an ONNX graph takes (ONNX Runtime, the quantizer). An exporter
    drops an input the model never reads; a graph input the model does not have is an error."""
    from .errors import HarnessError

    given = dict(zip((i.name for i in inputs), feed, strict=True))
    missing = [name for name in wanted if name not in given]
    if missing:
        raise HarnessError(f"the ONNX graph takes inputs {missing}, which the model's inputs ({', '.join(given)}) do not "
                           "include", "give the model's inputs the graph's names")
    return {name: given[name] for name in wanted}


def random_feeds(inputs: tuple[ModelInput, ...], count: int, seed: int = SEED) -> list[Feed]:
    """Seeded inputs for models with no data set here (agreement checks, calibration, examples):
    standard normal for float inputs, uniform over `value_range` for integer and bool ones."""
    rng = np.random.default_rng(seed)

    def draw(spec: ModelInput) -> np.ndarray:
        if spec.is_float:
            return rng.standard_normal(spec.shape, dtype=np.float32).astype(spec.dtype, copy=False)
        low, high = spec.value_range or (0, 1)
        return rng.integers(low, high, size=spec.shape, endpoint=True).astype(spec.dtype)

    return [tuple(draw(spec) for spec in inputs) for _ in range(count)]
