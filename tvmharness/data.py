"""Evaluation and calibration data. Only data that ships inside a package: nothing is downloaded."""

from __future__ import annotations

import functools

import numpy as np

SEED = 0


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


def random_inputs(shape: tuple[int, ...], count: int, seed: int = SEED) -> list[np.ndarray]:
    """Seeded standard-normal inputs, for agreement checks on models with no data set here."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape, dtype=np.float32) for _ in range(count)]
