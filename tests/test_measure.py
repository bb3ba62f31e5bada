import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from tvmharness.measure import (Latency, accuracy, agreement, output_arrays, paced, time_call, time_interleaved,
                                top1_agreement)


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


@pytest.mark.alone  # it reads what else the host's CPUs do
def test_a_row_timed_beside_another_process_s_work_says_how_many_cpus_that_work_took():
    """Other processes' busy CPUs are counted while a row is timed; this process's own threads are not."""
    own = time_call(lambda: spin(0.002), warmup=1, repeats=30, span_s=1.0).other_load  # it keeps a CPU busy itself
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # (the interpreter started)
        beside = time_interleaved([lambda: time.sleep(0.002)] * 2, warmup=1, repeats=30, span_s=1.0)
    finally:
        spinner.kill()
        spinner.wait()
    assert own["of_cpus"] == len(os.sched_getaffinity(0)) and own["cores"] < 0.5, own
    assert beside[0].other_load == beside[1].other_load and beside[0].other_load["cores"] >= 0.7, beside[0].other_load
    # a process on every CPU beside this one's working thread: that thread waits its turn for one
    cpus = len(os.sched_getaffinity(0))
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cpus)]
    try:
        time.sleep(0.3)
        crowded = time_call(lambda: spin(0.002), warmup=1, repeats=30, span_s=1.0).other_load
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    assert own["waited"] < 0.1 and crowded["waited"] >= 0.5 / (cpus + 1), (own, crowded)
    assert time_call(lambda: None, warmup=1, repeats=3).other_load is None  # a window of microseconds: too short to tell


def test_calls_timed_in_turns_each_follow_the_other_so_neither_is_timed_warm_from_itself():
    """A model called right after itself runs faster (its weights still in cache): the untimed calls between
    samples must not leave one call always timed after itself, or in turns it reads faster than its twin."""
    last = [None]

    def twin(name: str):
        def call():
            spin(0.0005 if last[0] == name else 0.001)  # warm after itself, cold after the other
            last[0] = name
        return call

    a, b = time_interleaved([twin("a"), twin("b")], warmup=1, repeats=30, span_s=0.3)
    assert b.median_ms / a.median_ms == pytest.approx(1.0, abs=0.15), (a.median_ms, b.median_ms)


def test_two_calls_timed_in_turns_differ_when_their_pairs_say_so():
    from tvmharness.measure import paired_p

    rng = np.random.default_rng(5)
    host = rng.lognormal(0, 0.3, 30)  # each turn's load falls on both calls alike
    same = paired_p(list(host * rng.lognormal(0, 0.02, 30)), list(host * rng.lognormal(0, 0.02, 30)))
    faster = paired_p(list(0.9 * host * rng.lognormal(0, 0.02, 30)), list(host * rng.lognormal(0, 0.02, 30)))
    assert same > 0.05 and faster < 1e-4 and paired_p([1.0, 2.0], [1.0, 2.0]) is None


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


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


@pytest.mark.alone  # a no-op's samples stay under 4 ms only on a host no other test holds
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
    ref = [[np.array([[1.0, 5.0, 2.0]], dtype=np.float32)]]
    close = agreement(ref, [[ref[0][0] + 1e-5]], tolerance=1e-3)
    assert close.within_tolerance and close.top1_agreement == 1.0
    far = agreement(ref, [[np.array([[6.0, 5.0, 2.0]], dtype=np.float32)]], tolerance=1e-3)
    assert not far.within_tolerance
    assert far.max_abs_diff == pytest.approx(5.0)
    assert far.top1_agreement == 0.0


def test_agreement_never_passes_nan_or_an_infinity_the_baseline_does_not_have():
    logits, features = np.array([[0.1, 0.9]], dtype=np.float32), np.ones((1, 4), dtype=np.float32)
    nan = agreement([[logits, features]], [[logits, np.full((1, 4), np.nan, dtype=np.float32)]], tolerance=1e-3)
    assert not nan.within_tolerance and nan.output == 1 and nan.max_abs_diff == np.inf
    assert not agreement([[features]], [[features * np.inf]], tolerance=1e-3).within_tolerance
    same = np.array([[np.inf, np.nan, 1.0]])  # where the baseline has them too, they agree
    assert agreement([[same]], [[same.copy()]], tolerance=1e-3).within_tolerance


def test_agreement_refuses_outputs_of_another_shape_and_takes_scalars():
    ref = [[np.array([[1.0, 5.0, 2.0]], dtype=np.float32)]]
    with pytest.raises(ValueError, match=r"shape \[3\] differs from the baseline's \[1, 3\]"):
        agreement(ref, [[ref[0][0][0]]], tolerance=1e-3)  # would broadcast to a diff of 0
    scalar = agreement([[np.array(2.0)]], [[np.array(2.0 + 1e-6)]], tolerance=1e-3)
    assert scalar.within_tolerance and scalar.top1_agreement is None  # no classes to pick


def test_agreement_checks_every_output_on_its_own_scale():
    logits, boxes = np.array([[1.0, 5.0, 2.0]]), np.array([[0.0, 0.0, 300.0, 400.0]])
    ref = [[logits, boxes]]
    assert agreement(ref, [[logits + 1e-4, boxes + 0.1]], tolerance=1e-3).within_tolerance
    # 0.01 is far inside 1e-3 x 400 (the boxes' scale), but far outside 1e-3 x 5 for the logits.
    off = agreement(ref, [[logits + 0.01, boxes]], tolerance=1e-3)
    assert not off.within_tolerance and (off.output, off.outputs) == (0, 2)
    second = agreement(ref, [[logits, boxes + 1.0]], tolerance=1e-3)  # only the second output is off
    assert not second.within_tolerance and second.output == 1 and second.max_abs_diff == pytest.approx(1.0)
    assert second.top1_agreement == 1.0  # top-1 reads the first output
    # Token ids (or an argmax) are not on a scale: an id off by 25 in 29,000 is another token.
    ids = np.array([29000, 12])
    assert agreement([[logits, ids]], [[logits, ids.copy()]], tolerance=1e-3).within_tolerance
    wrong = agreement([[logits, ids]], [[logits, np.array([28975, 12])]], tolerance=1e-3)
    assert not wrong.within_tolerance and wrong.output == 1 and wrong.max_abs_diff == 25
    # a floor is a float output's rounding: no distance between two ids (int8's floor of an argmax was its class count)
    assert not agreement([[logits, ids]], [[logits, np.array([28975, 12])]], tolerance=1e-3, floors=[0, 1e6]).within_tolerance
    # a lossy variant's engines may pick another index at a near tie: a tenth of the elements may differ, however
    # far apart the ids are, and no more (none of fewer than ten: a single pick wrong is not a tie broken otherwise)
    lossy = {"tolerance": 1e-3, "exact_integers": False}
    assert not agreement([[logits, ids]], [[logits, np.array([5, 12])]], **lossy).within_tolerance
    picks = [[logits, np.arange(20) % 7] for _ in range(3)]  # 60 ids: 6 may differ
    nudged = [[logits, np.where(np.arange(20) < k, 99, np.arange(20) % 7)] for k in (2, 2, 2)]
    within = agreement(picks, nudged, **lossy)
    assert within.within_tolerance and within.output == 0  # the figure is the logits', not two ids' distance (93)
    assert not agreement(picks, [[logits, np.full(20, 99)] for _ in range(3)], **lossy).within_tolerance
    with pytest.raises(ValueError, match="1 outputs where the baseline gives 2"):
        agreement(ref, [[logits]], tolerance=1e-3)
    with pytest.raises(ValueError, match=r"output 2's shape \[4\] differs"):
        agreement(ref, [[logits, boxes[0]]], tolerance=1e-3)


def test_output_arrays_flattens_in_export_order():
    t = torch.arange(3.0)
    out = output_arrays((t, {"a": t + 1, "b": [t + 2, 7.0]}), torch.Tensor)
    assert [a.tolist() for a in out] == [[0, 1, 2], [1, 2, 3], [2, 3, 4], 7.0]


def test_top1_agreement_is_the_share_of_rows_that_pick_the_same_class():
    ref = [[np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]])], [np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])]]
    out = [[np.array([[0.1, 0.9, 0.0], [0.1, 0.8, 0.1]])], [np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])]]
    assert top1_agreement(ref, out) == pytest.approx(3 / 4)  # one row of four picks another class


def test_a_tie_in_the_reference_agrees_whichever_class_rounding_picks():
    """Two logits equal but for rounding (a 9.5e-07 difference): either pick agrees within the tolerance;
    a pick the reference scores lower than that does not."""
    ref = [[np.array([[0.7431, 0.7431 + 9.5e-7, -9.3]], dtype=np.float32)]]
    tie = agreement(ref, [[np.array([[0.7431 + 9.5e-7, 0.7431, -9.3]], dtype=np.float32)]], tolerance=1e-3)
    assert tie.within_tolerance and tie.top1_agreement == 1.0
    clear = [[np.array([[0.7431, 0.7451, -9.3]], dtype=np.float32)]]  # 2e-3 apart: class 1 is the pick
    assert top1_agreement(clear, [[np.array([[0.75, 0.7, -9.3]], dtype=np.float32)]], tie=1e-3) == 0.0


def test_top1_agreement_of_a_segmentation_map_is_per_position():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((1, 4, 8, 8))
    out = ref.copy()
    out[0, :, :4, :] = np.roll(out[0, :, :4, :], 1, axis=0)  # the top half of the map picks other classes
    assert top1_agreement([[ref]], [[out]]) == pytest.approx(0.5)
    assert agreement([[ref]], [[ref + 1e-6]], tolerance=1e-3).top1_agreement == 1.0


def test_top1_agreement_is_none_without_a_class_axis():
    for shape in [(), (4,), (4, 1), (4, 1, 8)]:  # a loss, a score per row, one class
        ref = np.zeros(shape)
        assert top1_agreement([[ref]], [[ref + 1.0]]) is None


def test_accuracy_counts_top1_hits():
    outputs = [[np.array([[0.1, 0.9]])], [np.array([[0.8, 0.2]])], [np.array([[0.3, 0.7]])]]
    assert accuracy(outputs, np.array([1, 0, 0])) == pytest.approx(2 / 3)


def test_a_quantized_output_may_differ_by_a_few_of_its_steps():
    """An int8 output whose range is wide against its values: two steps of 0.0037 are 2.2% of 0.34."""
    ref = [[np.array([[0.321, 0.336]], dtype=np.float32)]]
    out = [[np.array([[0.325, 0.343]], dtype=np.float32)]]
    assert not agreement(ref, out, tolerance=0.02).within_tolerance
    assert agreement(ref, out, tolerance=0.02, floors=[3 * 0.00365]).within_tolerance
    assert not agreement(ref, [[np.array([[0.321, 0.356]], dtype=np.float32)]], tolerance=0.02,
                         floors=[3 * 0.00365]).within_tolerance  # five steps off
