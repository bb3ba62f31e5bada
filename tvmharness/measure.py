"""The one timing protocol every engine goes through, and the output checks against the baseline."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterator

import numpy as np


@dataclass
class Latency:
    samples_ms: list[float]
    median_ms: float
    p90_ms: float
    p10_ms: float
    mean_ms: float
    iqr_ms: float

    @property
    def spread(self) -> float:
        """Relative spread: the inter-quartile range over the median."""
        return self.iqr_ms / self.median_ms if self.median_ms else 0.0

    @classmethod
    def from_samples(cls, samples_ms: list[float]) -> "Latency":
        a = np.asarray(samples_ms, dtype=np.float64)
        q10, q25, q50, q75, q90 = np.percentile(a, [10, 25, 50, 75, 90])
        return cls(samples_ms=[round(float(s), 6) for s in a], median_ms=float(q50), p90_ms=float(q90),
                   p10_ms=float(q10), mean_ms=float(a.mean()), iqr_ms=float(q75 - q25))

    def summary(self) -> dict:
        d = asdict(self)
        d.pop("samples_ms")
        d["spread"] = self.spread
        return d


def paced(repeats: int, span_s: float, keep_running: Callable[[], object]) -> Iterator[int]:
    """Yield 0..repeats-1, each when it is due: spread evenly over `span_s` seconds, with
    `keep_running` (an untimed call of the model) called until then. A shared host switches between
    load modes (~15% apart here) every second or so, and a row timed within milliseconds sees only
    one; spread over seconds it sees them all. The machine never idles between samples: after a
    pause (sleep) the next calls run ~15% slower here, a mode of its own."""
    start = time.monotonic()
    for i in range(repeats):
        due = start + i * span_s / repeats
        while time.monotonic() < due:
            keep_running()
        yield i


def time_call(call: Callable[[], object], warmup: int, repeats: int, span_s: float = 0.0,
              on_repeat: Callable[[int, int], None] | None = None) -> Latency:
    """Warm up, then time `repeats` single calls on the same bound input, spread over `span_s`
    seconds of running (see paced); each sample is one call."""
    return time_interleaved([call], warmup, repeats, span_s, on_repeat)[0]


def time_interleaved(calls: list[Callable[[], object]], warmup: int, repeats: int, span_s: float = 0.0,
                     on_repeat: Callable[[int, int], None] | None = None) -> list[Latency]:
    """time_call for several calls at once, in turns: each sample times every call once, back to
    back, the order rotating from sample to sample, so whatever the host does in that window it
    does to all of them alike. Their latencies compare within one run: an A/B of two builds."""
    for _ in range(warmup):
        for call in calls:
            call()

    def keep_running():
        for call in calls:
            call()

    samples: list[list[float]] = [[] for _ in calls]
    for i in paced(repeats, span_s, keep_running):
        for k in range(len(calls)):
            j = (i + k) % len(calls)
            start = time.perf_counter_ns()
            calls[j]()
            samples[j].append((time.perf_counter_ns() - start) / 1e6)
        if on_repeat is not None:
            on_repeat(i + 1, repeats)
    return [Latency.from_samples(s) for s in samples]


@dataclass
class Agreement:
    max_abs_diff: float
    top1_agreement: float
    within_tolerance: bool


def agreement(reference: list[np.ndarray], outputs: list[np.ndarray], tolerance: float) -> Agreement:
    """Compare outputs with the baseline's on the same inputs: largest absolute difference, and the
    share of inputs whose top-1 class matches. Within tolerance: max diff <= tolerance x max |reference|.
    Outputs of another shape than the reference's raise ValueError (broadcasting would hide it)."""
    for r, o in zip(reference, outputs):
        if r.shape != o.shape:
            raise ValueError(f"output shape {list(o.shape)} differs from the baseline's {list(r.shape)}")
    diffs = [float(np.max(np.abs(r.astype(np.float64) - o.astype(np.float64)))) for r, o in zip(reference, outputs)]
    scale = max(float(np.max(np.abs(r))) for r in reference) or 1.0
    top1 = [np.array_equal(_top1(r), _top1(o)) for r, o in zip(reference, outputs)]
    worst = max(diffs)
    return Agreement(max_abs_diff=worst, top1_agreement=float(np.mean(top1)), within_tolerance=worst <= tolerance * scale)


def _top1(batch: np.ndarray) -> np.ndarray:
    batch = np.atleast_1d(batch)  # a scalar output (a loss, a sum) is one "class"
    return np.argmax(batch.reshape(batch.shape[0], -1), axis=1)


def accuracy(outputs: list[np.ndarray], labels: np.ndarray) -> float:
    predicted = np.concatenate([_top1(o) for o in outputs])
    return float(np.mean(predicted == np.asarray(labels)))
