"""The one timing protocol every engine goes through, and the output checks against the baseline."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Callable, Iterator

import numpy as np


@dataclass
class Latency:
    samples_ms: list[float]
    median_ms: float
    p90_ms: float
    p10_ms: float
    iqr_ms: float
    other_load: dict | None = None  # OtherLoad.figures() over the timing: what else kept the CPUs busy

    @property
    def slowest_quarter_ms(self) -> float:
        """The fastest of the slowest quarter of the samples (a quarter, rounded up, are this slow or slower):
        counted, not interpolated as a 75th percentile is between a fast sample and a slow one."""
        ordered = sorted(self.samples_ms)
        return float(ordered[len(ordered) - math.ceil(len(ordered) / 4)])

    @classmethod
    def from_samples(cls, samples_ms: list[float]) -> "Latency":
        a = np.asarray(samples_ms, dtype=np.float64)
        q10, q25, q50, q75, q90 = np.percentile(a, [10, 25, 50, 75, 90])
        return cls(samples_ms=[round(float(s), 6) for s in a], median_ms=float(q50), p90_ms=float(q90),
                   p10_ms=float(q10), iqr_ms=float(q75 - q25))


class OtherLoad:
    """How many of the CPUs this process may run on other processes kept busy, on average, from its
    making to `figures()`: their busy time (steal too: on a VM, another guest had the CPU) less this
    process's own CPU time (every thread of it); and how long this process's threads waited, ready to
    run, for a CPU (Linux's schedstat): other work that took the CPUs its threads needed even where it
    got no more than its fair share of them. Rows timed while the host was shared say so."""

    def __init__(self):
        import psutil

        self._psutil, self._process = psutil, psutil.Process()
        try:
            self._cpus = sorted(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            self._cpus = list(range(os.cpu_count() or 1))
        self._start = self._read()

    def _read(self) -> tuple[float, float, float, float | None] | None:
        """(busy seconds of this process's CPUs, its own CPU seconds, now, seconds its threads waited for
        a CPU or None where the kernel keeps no schedstat); None where /proc cannot say."""
        try:
            per_cpu = self._psutil.cpu_times(percpu=True)
            if max(self._cpus) >= len(per_cpu):  # an offline CPU shifts the list: no longer one entry per CPU number
                return None
            busy = sum(t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)
                       for t in (per_cpu[i] for i in self._cpus))  # (guest time is counted in user already)
            own = self._process.cpu_times()
            return busy, own.user + own.system, time.monotonic(), _threads_waited()
        except (OSError, self._psutil.Error):
            return None

    def figures(self) -> dict | None:
        """{"cores": other processes' busy CPUs on average, "of_cpus": the CPUs this process may run on,
        "waited": seconds its threads waited for a CPU per second (where the kernel says)}."""
        end = self._read()
        if self._start is None or end is None or end[2] - self._start[2] < 0.05:  # (CPU times count in 10 ms ticks)
            return None
        busy, own, seconds = (b - a for a, b in zip(self._start[:3], end[:3]))
        figures = {"cores": round(max(0.0, busy - own) / seconds, 2), "of_cpus": len(self._cpus)}
        if self._start[3] is not None and end[3] is not None:  # (a thread that ended meanwhile takes its wait along)
            figures["waited"] = round(max(0.0, end[3] - self._start[3]) / seconds, 2)
        return figures


def _threads_waited() -> float | None:
    """Seconds this process's threads have waited, ready to run, for a CPU (/proc/self/task/*/schedstat's
    second field, in ns); None where the kernel keeps no schedstat."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    waited = 0
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/schedstat") as stat:
                waited += int(stat.read().split()[1])
        except (OSError, IndexError, ValueError):  # a thread gone since the listing: its wait goes with it
            continue
    return waited / 1e9


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
    upcoming = 0  # the sample paced() waits to give: the untimed calls before it run in its order

    def in_turn(i: int) -> list[int]:
        return [(i + k) % len(calls) for k in range(len(calls))]

    def keep_running():  # in the coming sample's order, so that no call is always timed just after itself
        for j in in_turn(upcoming):
            calls[j]()

    samples: list[list[float]] = [[] for _ in calls]
    load = OtherLoad()
    for i in paced(repeats, span_s, keep_running):
        for j in in_turn(i):
            start = time.perf_counter_ns()
            calls[j]()
            samples[j].append((time.perf_counter_ns() - start) / 1e6)
        upcoming = i + 1
        if on_repeat is not None:
            on_repeat(i + 1, repeats)
    figures = load.figures()
    return [replace(Latency.from_samples(s), other_load=figures) for s in samples]


def paired_p(a_ms: list[float], b_ms: list[float]) -> float | None:
    """Whether two calls timed in turns differ: the two-sided Wilcoxon signed-rank p of their sample
    pairs (each sample of a turn against the other's of that turn); None where no pair differs."""
    from scipy.stats import wilcoxon

    if not any(a != b for a, b in zip(a_ms, b_ms)):
        return None
    return float(wilcoxon(a_ms, b_ms).pvalue)


def output_leaves(out, tensor_type: type) -> list:
    """Every output of one call as it is, in order: nested tuples, lists (TVM's arrays too) and dict
    values flattened as torch.export and ONNX export number them."""
    if isinstance(out, tensor_type):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, Sequence) and not isinstance(out, str):
        return [leaf for item in out for leaf in output_leaves(item, tensor_type)]
    return [out]  # a plain number


def output_arrays(out, tensor_type: type, to_numpy: Callable[[object], np.ndarray] = lambda t: t.numpy()) -> list[np.ndarray]:
    """Every output of one call as numpy arrays, in output_leaves' order (a plain number too)."""
    return [np.asarray(to_numpy(leaf) if isinstance(leaf, tensor_type) else leaf) for leaf in output_leaves(out, tensor_type)]


@dataclass
class Agreement:
    max_abs_diff: float  # of the output furthest outside (or least inside) its tolerance
    top1_agreement: float | None  # None where the first output has no class axis
    within_tolerance: bool
    output: int  # which output max_abs_diff is of
    outputs: int  # how many each input gives


def agreement(reference: list[list[np.ndarray]], outputs: list[list[np.ndarray]], tolerance: float,
              floors: list[float] | None = None, exact_integers: bool = True) -> Agreement:
    """Compare outputs with the baseline's on the same inputs (one list of outputs per input). Every
    output must be within tolerance: its largest absolute difference <= tolerance x the largest
    |value| of that output in the reference (a box in pixels and a score in [0, 1] each on its own
    scale), or <= its floor where one is given (a quantized output may differ by a few of its steps).
    An integer or bool output (token ids, an argmax, a mask) must match exactly: its values are no
    scale for how far an index may be off. Unless not `exact_integers`: a lossy variant's engines may
    pick another index at a near tie, so a tenth of its elements may differ (none of fewer than ten).
    Top-1 agreement: see top1_agreement. Another number of outputs, or an output of another shape,
    raises ValueError (broadcasting would hide it)."""
    count = len(reference[0])
    for ref, out in zip(reference, outputs):
        if len(out) != len(ref):
            raise ValueError(f"{len(out)} outputs where the baseline gives {len(ref)}")
        for k, (r, o) in enumerate(zip(ref, out)):
            if r.shape != o.shape:
                which = f"output {k + 1}'s shape" if count > 1 else "output shape"
                raise ValueError(f"{which} {list(o.shape)} differs from the baseline's {list(r.shape)}")
    diffs = [max(_max_diff(ref[k], out[k]) for ref, out in zip(reference, outputs)) for k in range(count)]
    scales = [max(float(np.max(np.abs(ref[k][np.isfinite(ref[k])]), initial=0.0)) for ref in reference) or 1.0
              for k in range(count)]
    floors = list(floors or []) + [0.0] * count
    allowed = [(0.0 if exact_integers else tolerance * scales[k]) if exact_output(reference[0][k])
               else max(tolerance * scales[k], floors[k]) for k in range(count)]  # (top-1's tie: below)
    excess = []  # how far each output is from its limit: above 1 is outside
    for k in range(count):
        if exact_output(reference[0][k]):  # elements that differ, against those that may
            differ = sum(int(np.count_nonzero(ref[k] != out[k])) for ref, out in zip(reference, outputs))
            may = 0 if exact_integers else math.floor(LOSSY_INDEX_SHARE * sum(ref[k].size for ref in reference))
            excess.append(differ / may if may else math.inf if differ else 0.0)
        else:
            excess.append(diffs[k] / allowed[k] if allowed[k] else math.inf if diffs[k] else 0.0)
    # the output furthest out, or where all are within, the float one closest to its limit: an integer output's
    # distance (two class ids') is no figure of how close it came
    worst = max(range(count), key=lambda k: excess[k] if excess[k] > 1.0 or not exact_output(reference[0][k]) else -1.0)
    return Agreement(max_abs_diff=diffs[worst], top1_agreement=top1_agreement(reference, outputs, allowed[0]),
                     within_tolerance=excess[worst] <= 1.0, output=worst, outputs=count)


LOSSY_INDEX_SHARE = 0.1  # of an integer output's elements, a lossy variant's engines may pick otherwise (near ties)


def exact_output(reference: np.ndarray) -> bool:
    """Integers and bools: compared exactly (agreement)."""
    return reference.dtype.kind in "biu"


def _max_diff(ref: np.ndarray, out: np.ndarray) -> float:
    """The largest absolute difference; inf where one has NaN or an infinity the other has not (a NaN
    would otherwise compare as neither larger nor smaller, and pass)."""
    r, o = ref.astype(np.float64), out.astype(np.float64)
    same = (r == o) | (np.isnan(r) & np.isnan(o))
    with np.errstate(invalid="ignore"):  # inf - inf
        diff = np.where(same, 0.0, np.abs(r - o))
    return float(np.max(np.nan_to_num(diff, nan=np.inf), initial=0.0))


def top1_agreement(reference: list[list[np.ndarray]], outputs: list[list[np.ndarray]], tie: float = 0.0) -> float | None:
    """The share of predictions in the first output that pick the same class as the reference's: of
    rows for a (batch, classes) output, of positions for a (batch, classes, ...) map (segmentation's
    (batch, classes, H, W)). None where it has no class axis: a scalar, one value per row, or one class.
    A pick the reference scores within `tie` of its best agrees: classes that close are a tie (two
    equal logits), which rounding breaks either way in each engine."""
    agrees = []
    for ref, out in zip(reference, outputs):
        wanted, picked = _classes(ref[0]), _classes(out[0])
        if wanted is None or picked is None:
            return None
        score = np.take_along_axis(ref[0], np.expand_dims(picked, 1), axis=1).squeeze(1)  # the reference's, of the pick
        agrees.append(((wanted == picked) | (score >= np.max(ref[0], axis=1) - tie)).ravel())
    return float(np.mean(np.concatenate(agrees))) if agrees else None


def _classes(first: np.ndarray) -> np.ndarray | None:
    """The class picked per row (and position): the argmax over axis 1, PyTorch's class axis (as
    nn.CrossEntropyLoss reads it)."""
    if first.ndim < 2 or first.shape[1] < 2:
        return None
    return np.argmax(first, axis=1)


def accuracy(outputs: list[list[np.ndarray]], labels: np.ndarray) -> float:
    """The share of samples whose first output, (batch, classes) per call, picks the labelled class.
    Raises HarnessError when the labels cannot score that output."""
    from .errors import HarnessError

    firsts = [np.asarray(out[0]) for out in outputs]
    fix = "give labels for a classifier whose first output is (batch, classes), or save the data without 'labels'"
    odd = next((f.shape for f in firsts if f.ndim != 2), None)
    if odd is not None:
        raise HarnessError(f"the data's labels score a first output of (batch, classes), and this model's is "
                           f"{list(odd)} per call", fix)
    classes = firsts[0].shape[1]
    if classes < 2:  # one column's argmax is always 0: every sample "right"
        raise HarnessError("the data's labels score a classifier's classes, and this model's first output has one "
                           "column per sample (a regressor's, or one logit): no class to pick",
                           "save the data without 'labels' (agreement with fp32 still compares the outputs)")
    predicted = np.concatenate([f.argmax(axis=1) for f in firsts])
    labels = np.asarray(labels)
    if len(predicted) != len(labels) or labels.min() < 0 or labels.max() >= classes:
        raise HarnessError(f"the data's labels ({len(labels)}, in [{labels.min()}, {labels.max()}]) do not fit the first "
                           f"output's {len(predicted)} samples of {classes} classes", fix)
    return float(np.mean(predicted == labels))
