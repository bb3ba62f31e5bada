import numpy as np
import pytest

import time

from tvmharness.measure import Latency, accuracy, agreement, paced, time_call, time_interleaved


def test_latency_statistics_come_from_the_samples():
    lat = Latency.from_samples([float(i) for i in range(1, 101)])
    assert lat.median_ms == pytest.approx(50.5)
    assert lat.p90_ms == pytest.approx(90.1)
    assert lat.iqr_ms == pytest.approx(49.5)
    assert len(lat.samples_ms) == 100


def test_time_call_runs_warmup_and_repeats():
    calls = []
    lat = time_call(lambda: calls.append(1), warmup=3, repeats=30)
    assert len(calls) == 33
    assert len(lat.samples_ms) == 30 and all(s >= 0 for s in lat.samples_ms)


def test_paced_samples_are_due_evenly_over_the_span_and_the_model_keeps_running_between():
    begun, due, busy = time.monotonic(), [], []
    for i in paced(repeats=4, span_s=0.6, keep_running=lambda: busy.append(1)):
        due.append(time.monotonic() - begun)
    assert all(t >= i * 0.15 - 1e-3 for i, t in enumerate(due))  # each sample on time, never early
    assert len(busy) > 100  # the gaps were filled with untimed calls, not sleep


def test_paced_time_call_keeps_one_call_per_sample():
    calls = []
    lat = time_call(lambda: calls.append(1), warmup=2, repeats=30, span_s=0.3)
    assert len(lat.samples_ms) == 30 and len(calls) > 2 + 30 + 100


def test_interleaved_calls_are_timed_in_turns_each_sample_its_own():
    order = []

    def call(name: str, busy_s: float):
        def run():
            order.append(name)
            end = time.perf_counter() + busy_s
            while time.perf_counter() < end:
                pass
        return run

    slow, quick = time_interleaved([call("a", 0.004), call("b", 0.0)], warmup=1, repeats=6)
    assert len(slow.samples_ms) == len(quick.samples_ms) == 6
    assert min(slow.samples_ms) >= 4.0 > max(quick.samples_ms)  # each call's time in its own samples
    timed = order[2:]  # after one warm-up of each
    assert [timed[i:i + 2] for i in range(0, 12, 2)] == [["a", "b"], ["b", "a"]] * 3  # the order turns


def test_agreement_flags_outputs_beyond_tolerance():
    ref = [np.array([[1.0, 5.0, 2.0]], dtype=np.float32)]
    close = agreement(ref, [ref[0] + 1e-5], tolerance=1e-3)
    assert close.within_tolerance and close.top1_agreement == 1.0
    far = agreement(ref, [np.array([[6.0, 5.0, 2.0]], dtype=np.float32)], tolerance=1e-3)
    assert not far.within_tolerance
    assert far.max_abs_diff == pytest.approx(5.0)
    assert far.top1_agreement == 0.0


def test_agreement_refuses_outputs_of_another_shape_and_takes_scalars():
    ref = [np.array([[1.0, 5.0, 2.0]], dtype=np.float32)]
    with pytest.raises(ValueError, match=r"shape \[3\] differs from the baseline's \[1, 3\]"):
        agreement(ref, [ref[0][0]], tolerance=1e-3)  # would broadcast to a diff of 0
    scalar = agreement([np.array(2.0)], [np.array(2.0 + 1e-6)], tolerance=1e-3)
    assert scalar.within_tolerance and scalar.top1_agreement == 1.0


def test_accuracy_counts_top1_hits():
    outputs = [np.array([[0.1, 0.9]]), np.array([[0.8, 0.2]]), np.array([[0.3, 0.7]])]
    assert accuracy(outputs, np.array([1, 0, 0])) == pytest.approx(2 / 3)
