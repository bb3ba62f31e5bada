"""Evaluation and calibration data. Only data that ships inside a package: nothing is downloaded."""

from __future__ import annotations

import functools
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SEED = 0

Feed = tuple[np.ndarray, ...]  # one call's inputs, in the order the model takes them
FROM_EXAMPLE = "the example"  # a range seen in an example, not a bound the model sets
GIVEN_RANGE = "--input-range or [inputs]"  # the user's: the flag's and the recipe's are merged before they are told apart


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
    range_from: str | None = None  # FROM_EXAMPLE, GIVEN_RANGE, "<table>'s N rows", a zoo model's vocabulary

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


def sizes_text(shape) -> str:
    """An input's sizes as --input-shape takes them and the reports print them: 1x3x224x224."""
    return "x".join(map(str, shape))


def input_text(name: str, dtype: str, shape) -> str:
    """An input as messages and reports name it: x float32 1x3x224x224."""
    return f"{name} {dtype} {sizes_text(shape)}"


@dataclass(frozen=True)
class DataSet:
    """Real samples of a model's inputs, one array per input with the samples first, and their class
    labels where known: a held-out set (accuracy, agreement) or a training set (fine-tuning, int8
    calibration). `source` is what the report calls it."""

    source: str
    arrays: tuple[np.ndarray, ...]
    labels: np.ndarray | None
    digest: str

    def __len__(self) -> int:
        return len(self.arrays[0])

    def feeds(self, batch: int) -> list[Feed]:
        """Calls of `batch` samples each, in order; a last partial batch is left out (TVM builds for
        one batch size)."""
        return [tuple(a[k:k + batch] for a in self.arrays) for k in range(0, len(self) - batch + 1, batch)]

    def labels_fed(self, batch: int) -> np.ndarray:
        """The labels of the samples `feeds(batch)` holds."""
        return self.labels[: len(self) - len(self) % batch]


def data_set(source: str, arrays: tuple[np.ndarray, ...], labels: np.ndarray | None) -> DataSet:
    """A DataSet, hashed over its arrays' dtypes, shapes and bytes (what cached int8 calibrations key on)."""
    from .cache import content_hash

    parts = [[a.dtype.str, list(a.shape), a.tobytes()] for a in (*arrays, *([labels] if labels is not None else []))]
    return DataSet(source, arrays, labels, content_hash(*[p for part in parts for p in part]))


LABELS = "labels"  # the array of class labels in a data set file


def load_data_set(path: str, inputs: tuple[ModelInput, ...], batch: int, model: str, role: str) -> DataSet:
    """An .npz of one array per model input, named as the input, samples first (each sample one
    call's input without its batch), and optionally `labels`: class ids, one per sample."""
    from .errors import RELATIVE_PATHS, HarnessError, counted, one_line, path_text

    save = (f"save one array per input, samples first, named as the inputs, with the labels if there are: "
            f"np.savez('{Path(path).stem}.npz', {', '.join(f'{i.name}=...' for i in inputs)}, {LABELS}=...)")
    if not Path(path).is_file():
        raise HarnessError(f"{role} data for {model} not found: {path_text(path)}", RELATIVE_PATHS)
    # numpy reads a .npy as one array and anything else as a pickle, whose errors say neither
    with open(path, "rb") as file:
        if file.read(6) == b"\x93NUMPY":
            raise HarnessError(f"{role} data {path} is a .npy file, one array (np.save), not an .npz of one array per "
                               "input (np.savez)", save)
    if not zipfile.is_zipfile(path):
        raise HarnessError(f"{role} data {path} is not an .npz file numpy can read (an .npz is a zip archive of arrays)",
                           save)
    try:
        with np.load(path, allow_pickle=False) as stored:
            found = {name: stored[name] for name in stored.files}
    except Exception as err:  # numpy raises several types for a file that is not an .npz
        raise HarnessError(f"{role} data {path} is not a readable .npz file: {one_line(err)}", save) from None
    names = [i.name for i in inputs]
    if LABELS in names:  # (a Hugging Face model's forward takes labels)
        raise HarnessError(f"{model} takes an input named '{LABELS}', the name a data set's class ids go under: "
                           f"{role} data {path} cannot tell the model's '{LABELS}' from the ones accuracy is scored on",
                           f"measure it on seeded inputs (leave out its {role} data), or rename the model's input")
    missing = [n for n in names if n not in found]
    unknown = sorted(set(found) - set(names) - {LABELS})
    if missing or unknown:
        raise HarnessError(f"{role} data {path} holds arrays {sorted(found)}, and {model} takes inputs {names}"
                           + (f" (no array for {missing})" if missing else "")
                           + (f" ({unknown} are neither an input nor '{LABELS}')" if unknown else ""), save)
    arrays = []
    for spec in inputs:
        if not spec.shape or spec.shape[0] != batch:
            raise HarnessError(f"input '{spec.name}' of {model} is {list(spec.shape)}, not batch-first (the batch is "
                               f"{batch}), and a data set's samples are fed {batch} to a call along the first dimension",
                               f"measure {model} on seeded inputs (leave out its [data] {role})")
        array, sample = found[spec.name], tuple(spec.shape[1:])
        if array.ndim < 1 or array.shape[1:] != sample:
            raise HarnessError(f"{role} data {path}: array '{spec.name}' is {list(array.shape)}, samples of "
                               f"{list(array.shape[1:])}, and input '{spec.name}' of {model} takes {list(spec.shape)}: "
                               f"samples of {list(sample)}", save)
        # Float ids would be rounded, and integer samples of a float input are raw (pixels 0..255 where the
        # model was trained on normalized values): each is refused, not converted.
        if array.dtype.kind not in ("f" if spec.is_float else "biu"):
            raise HarnessError(f"{role} data {path}: array '{spec.name}' is {array.dtype}, and input '{spec.name}' of "
                               f"{model} is {spec.dtype}",
                               f"save '{spec.name}' as {spec.dtype}" + (", scaled as the model takes it (e.g. normalized "
                                                                         "pixels, not 0..255)" if spec.is_float else ""))
        if spec.value_range is not None and spec.range_from != FROM_EXAMPLE and array.size:
            low, high = int(array.min()), int(array.max())
            if low < spec.value_range[0] or high > spec.value_range[1]:  # an id past a table crashes TVM's lookup
                raise HarnessError(f"{role} data {path}: array '{spec.name}' holds values in [{low}, {high}], and input "
                                   f"'{spec.name}' of {model} takes [{spec.value_range[0]}, {spec.value_range[1]}] "
                                   f"({spec.range_from})", "give values within that range" + (
                                       f" (or a wider range: {GIVEN_RANGE})" if spec.range_from == GIVEN_RANGE else ""))
        if not spec.is_float and array.size:  # int64 ids into an int32 input, or 2 into a bool, would change silently
            low, high = (0, 1) if spec.dtype == "bool" else (np.iinfo(spec.dtype).min, np.iinfo(spec.dtype).max)
            if int(array.min()) < low or int(array.max()) > high:
                raise HarnessError(f"{role} data {path}: array '{spec.name}' holds values in [{int(array.min())}, "
                                   f"{int(array.max())}], which input '{spec.name}' of {model} ({spec.dtype}) cannot hold",
                                   f"give values within [{low}, {high}]")
        with np.errstate(over="ignore"):  # a float64 past float32's range becomes an infinity: found below
            converted = np.ascontiguousarray(array.astype(spec.dtype, copy=False))
        if spec.is_float and not np.all(np.isfinite(converted)):  # one NaN trains a variant into NaN weights
            bad = np.flatnonzero(~np.isfinite(converted.reshape(len(converted), -1)).all(axis=1))
            beyond = " (or past float32's range)" if array.dtype.itemsize > converted.dtype.itemsize else ""
            raise HarnessError(f"{role} data {path}: array '{spec.name}' holds NaN or infinite values{beyond} in "
                               f"{counted(len(bad), 'sample')} (the first: sample {bad[0]})",
                               "drop or fix those samples: a model fed them outputs NaN, and a variant trained on "
                               "them learns NaN weights")
        arrays.append(converted)
    counts = {spec.name: len(a) for spec, a in zip(inputs, arrays)}
    labels = found.get(LABELS)
    if labels is not None:
        if labels.dtype.kind == "f":  # a regressor's targets: no class ids, and its outputs need none to be compared
            raise HarnessError(f"{role} data {path}: '{LABELS}' is {labels.dtype} {list(labels.shape)}: floats, and "
                               f"'{LABELS}' are class ids (integers) that a classifier's first output is scored against",
                               f"for a regression model (float targets), leave '{LABELS}' out of the .npz: its outputs "
                               "are then compared with the fp32 model's; for a classifier, save its class ids as "
                               "integers, one per sample")
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise HarnessError(f"{role} data {path}: '{LABELS}' is {labels.dtype} {list(labels.shape)}, not one class id per sample",
                               f"save '{LABELS}' as integers, one per sample")
        counts[LABELS] = len(labels)
        labels = labels.astype(np.int64)
    if len(set(counts.values())) > 1:
        raise HarnessError(f"{role} data {path}: its arrays hold different numbers of samples: "
                           + ", ".join(f"'{name}' {counted(n, 'sample')}" for name, n in counts.items()),
                           "give every array (and the labels) the same number of samples, one per row of its first "
                           "dimension")
    count = min(counts.values())
    if count < batch:
        raise HarnessError(f"{role} data {path} holds {counted(count, 'sample')}, fewer than one batch of {batch}",
                           "give every array (and the labels) at least one batch of samples")
    held, cut = fed_text(count, batch if role == "eval" else 1)
    return data_set(f"{path} ({held}{', labelled' if labels is not None else ''}{cut})", tuple(arrays), labels)


def fed_text(count: int, batch: int, noun: str = "sample") -> tuple[str, str]:
    """Held-out data is fed in calls of `batch` (DataSet.feeds): (how many of its `count` samples are
    fed, what a last partial batch leaves out or "")."""
    from .errors import counted

    left = count % batch
    held = f"{count - left} of its {counted(count, noun)}" if left else counted(count, noun)
    return held, f"; a last partial batch of {left} left out" if left else ""


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
