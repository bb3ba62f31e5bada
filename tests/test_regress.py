"""Verdicts on seeded histories written through the real store: steps are flagged, noise is not,
and a verdict says what changed."""

import json
from dataclasses import replace

import numpy as np
import pytest

from tests.history import night
from tvmharness.recipe import Regression
from tvmharness.report.regress import (BROKEN, FASTER, LARGER, LESS_ACCURATE, NEW, NOT_APPLICABLE, SAME, SLOWER, SMALLER, confirm,
                                       judge, judge_run, needs_confirmation)
from tvmharness.results import Store


@pytest.fixture
def store(tmp_path):
    return Store(str(tmp_path / "history.db"))


def test_a_flat_noisy_history_is_never_flagged(store):
    rng = np.random.default_rng(7)
    runs = [night(store, 1.0, rng) for _ in range(25)]
    frame = store.frame()
    verdicts = [judge(frame, run_id)[0] for run_id in runs]
    assert verdicts[0].verdict == NEW
    assert [v.verdict for v in verdicts[1:]] == [SAME] * 24, [v.summary() for v in verdicts if v.verdict != SAME]


@pytest.mark.parametrize("step, expected", [(1.15, SLOWER), (0.85, FASTER)])
def test_a_step_in_a_noisy_history_is_flagged_with_its_evidence(store, step, expected):
    rng = np.random.default_rng(11)
    for _ in range(10):
        night(store, 1.0, rng)
    last = night(store, step, rng)
    run, verdicts = judge_run(store)
    assert run["id"] == last
    (v,) = verdicts
    assert v.verdict == expected and v.aspects["latency"] == expected
    assert v.regression == (expected == SLOWER)
    e = v.evidence
    assert e["p_value"] < e["alpha"]
    assert abs(e["latency_change"]) > e["noise_band"] >= Regression().min_effect
    assert e["reference_runs"] == Regression().window and e["history_runs"] == 10
    assert "reference: last 3 of 10 earlier runs" in v.summary()  # the level's runs, not the sigma's window
    assert e["latency_change"] == pytest.approx(step - 1, abs=0.05)


def test_an_old_step_is_not_flagged_again(store):
    rng = np.random.default_rng(3)
    for level in [1.0] * 8 + [1.2] * 6:
        night(store, level, rng)
    (v,) = judge_run(store)[1]
    assert v.verdict == SAME, v.summary()


def test_a_verdict_names_the_provenance_that_changed_and_the_operators_that_moved(store):
    rng = np.random.default_rng(5)
    for _ in range(6):
        night(store, 1.0, rng)
    night(store, 1.3, rng, tuning_sha="b" * 64, versions={"torch": "9.9.9"}, git="deadbeef",
          profile_ms={"conv2d": 0.8, "matmul": 0.3, "add": 0.01})
    (v,) = judge_run(store)[1]
    assert v.verdict == SLOWER
    changed = {c["what"]: (c["before"], c["after"]) for c in v.changed}
    assert changed["tuning records"] == ("a" * 16, "b" * 16)
    assert changed["torch"][1] == "9.9.9"
    assert changed["git commit"] == ("c0ffee", "deadbeef")
    assert "build" not in changed  # explained by the records and the commit
    assert v.operators[0]["operator"] == "conv2d" and v.operators[0]["delta_ms"] == pytest.approx(0.3)
    text = v.summary()
    assert "tuning records" in text and "conv2d" in text and "slower" in text


def test_on_a_step_s_second_night_the_operators_are_against_the_level_judged_against(store):
    """The night after a step the latency is still judged against the old level: its operators must be
    too, not against the step's own first night (which would show the step's operators as faster)."""
    rng = np.random.default_rng(17)
    for _ in range(6):
        night(store, 1.0, rng)
    night(store, 1.5, rng)
    second = night(store, 1.5, rng)
    (v,) = judge(store.frame(), second)
    assert v.aspects["latency"] == SLOWER, v.summary()
    assert v.evidence["operators_run_id"] == v.evidence["level_run_id"] < second - 1
    assert v.operators[0]["operator"] == "conv2d" and v.operators[0]["delta_ms"] == pytest.approx(0.25)
    assert f"operators vs run {v.evidence['level_run_id']}: conv2d +0.25 ms" in v.summary()


def test_a_recipe_change_is_named_by_its_settings_and_only_where_it_moves_a_figure(store):
    rng = np.random.default_rng(19)
    recipe = {"models": ["m"], "variants": ["fp32"], "frontend": "torch",
              "measure": {"warmup": 3, "repeats": 30, "threads": 2, "memory": False}, "regression": {"min_effect": 0.05}}
    for _ in range(3):
        night(store, 1.0, rng, recipe=recipe)
    more = recipe | {"measure": recipe["measure"] | {"repeats": 40}}
    run = night(store, 1.0, rng, recipe=more)
    (v,) = judge(store.frame(), run)
    assert {c["what"]: (c["before"], c["after"]) for c in v.changed} == {"recipe measure.repeats": (30, 40)}
    assert "changed: recipe measure.repeats 30 -> 40" in v.summary()
    # what only judges, names series or is measured apart changes nothing of this series' figures
    for _ in range(3):
        night(store, 1.0, rng, recipe=more)
    other = more | {"regression": {"min_effect": 0.06}, "variants": ["fp32", "int8"],
                    "measure": more["measure"] | {"memory": True}}
    run = night(store, 1.0, rng, recipe=other)
    (v,) = judge(store.frame(), run)
    assert v.changed == [], v.summary()
    run = night(store, 1.0, rng, recipe=other | {"frontend": "onnx"})
    (v,) = judge(store.frame(), run)
    assert [c["what"] for c in v.changed] == ["recipe frontend"]  # how a TVM row's model reaches TVM
    run = night(store, 1.0, rng, engine="torch", recipe=other)
    (v,) = judge(store.frame(), run)
    assert v.verdict == NEW  # (a torch series of its own; its frontend change below is none of its business)
    night(store, 1.0, rng, engine="torch", recipe=other)
    run = night(store, 1.0, rng, engine="torch", recipe=other | {"frontend": "torch"})
    (v,) = judge(store.frame(), run)
    assert v.changed == [], v.summary()


def test_records_lost_say_untuned_not_none(store):
    rng = np.random.default_rng(23)
    for _ in range(3):
        night(store, 1.0, rng)
    run = night(store, 1.0, rng, details={"build_key": "untuned"})
    (v,) = judge(store.frame(), run)
    changed = {c["what"]: (c["before"], c["after"]) for c in v.changed}
    assert changed["tuned tasks"] == ("10/10 (64 trials)", "untuned") and changed["tuning records"] == ("a" * 16, "none")
    assert "None" not in v.summary()


def test_steps_the_report_named_do_not_widen_the_noise_band(store):
    """Records tuned, lost and restored: each step has a cause the verdicts named. Counted as noise
    they would make the band so wide that the series could no longer show a regression."""
    rng = np.random.default_rng(29)
    levels = [1.0] * 4 + [0.6, 1.0] * 3
    for i, level in enumerate(levels):
        night(store, level, rng, tuning_sha=("a" if level == 1.0 else "b") * 64)
    run = night(store, 1.2, rng)
    (v,) = judge(store.frame(), run)
    assert v.evidence["night_sigma"] < 0.05 and v.evidence["noise_band"] == pytest.approx(Regression().min_effect)
    assert v.verdict == SLOWER, v.summary()


def test_a_row_that_never_applied_carries_no_cause(store):
    rng = np.random.default_rng(31)
    for digest in ("1", "1", "2"):
        run = night(store, 1.0, rng, status=NOT_APPLICABLE, reason="int8 needs an ONNX model", samples_ms=None,
                    details={"model_digest": digest * 64})
    (v,) = judge(store.frame(), run)
    assert v.verdict == NOT_APPLICABLE and v.changed == [] and v.summary() == "not applicable: int8 needs an ONNX model"


def test_a_model_edited_in_place_is_named_as_the_change(store):
    rng = np.random.default_rng(6)
    details = {"build_key": "k", "model_digest": "1" * 64}  # a user's model.py, the same path every night
    for _ in range(4):
        night(store, 1.0, rng, engine="torch", details=details)
    night(store, 1.0, rng, engine="torch", details=details | {"model_digest": "2" * 64})
    (v,) = judge_run(store)[1]
    assert {c["what"]: (c["before"], c["after"]) for c in v.changed} == {"model": ("1" * 16, "2" * 16)}


def test_size_accuracy_broken_and_new(store):
    rng = np.random.default_rng(9)
    for _ in range(4):
        night(store, 1.0, rng)
        night(store, 2.0, rng, model="other")
    final = night(store, 1.0, rng, artifact_bytes=150_000, accuracy=0.90)
    frame = store.frame()
    (v,) = judge(frame, final)
    assert v.aspects["size"] == LARGER and v.aspects["accuracy"] == LESS_ACCURATE
    assert v.verdict == LESS_ACCURATE and v.regression  # the worst aspect leads
    assert v.evidence["size_change"] == pytest.approx(0.5)

    broken = night(store, 1.0, rng, model="other", status="failed to build", reason="boom", samples_ms=None)
    (b,) = judge(store.frame(), broken)
    assert b.verdict == BROKEN and "boom" in b.reason and b.regression

    fresh = night(store, 1.0, rng, model="brand_new")
    (n,) = judge(store.frame(), fresh)
    assert n.verdict == NEW and not n.regression


def test_peak_memory_that_grows_past_its_threshold_and_floor_is_larger(store):
    from tvmharness.report import size_cell

    rng = np.random.default_rng(11)
    for _ in range(4):
        night(store, 1.0, rng, details={"memory": {"peak_mb": 100.0}})
        night(store, 1.0, rng, model="tiny", details={"memory": {"peak_mb": 2.0}})
    for peak, expected in ((103.0, SAME), (115.0, LARGER), (90.0, SMALLER)):  # each against the night before
        run = night(store, 1.0, rng, details={"memory": {"peak_mb": peak}})
        (v,) = judge(store.frame(), run)
        assert v.aspects["memory"] == expected, peak
    assert v.verdict == SMALLER and "peak memory -21.7% (115.0 -> 90.0 MB)" in v.summary()
    assert size_cell(v.evidence) == "+0.0%; peak memory -21.7%"
    run = night(store, 1.0, rng, model="tiny", details={"memory": {"peak_mb": 2.6}})
    (tiny,) = judge(store.frame(), run)
    assert tiny.aspects["memory"] == SAME  # +30%, but 0.6 MB: within what the probe itself moves


def test_a_row_that_does_not_apply_is_no_regression_and_junit_skips_it(store):
    from tvmharness.report.summary import junit, markdown

    rng = np.random.default_rng(3)
    for _ in range(2):  # PyTorch never runs an int8 variant (an ONNX model): each night, not applicable
        run_id = night(store, 1.0, rng, engine="torch", variant="int8", status=NOT_APPLICABLE, samples_ms=None,
                       reason="this variant is an ONNX model")
    (v,) = judge(store.frame(), run_id)
    assert v.verdict == NOT_APPLICABLE and not v.regression and "ONNX model" in v.summary()
    run = store.run(run_id)
    assert 'failures="0"' in junit(run, [v]) and 'skipped="1"' in junit(run, [v])
    assert "✅ no regressions" in markdown(run, [v])
    # A variant that was measured before and now does not apply (the model changed under it) is lost: broken.
    night(store, 1.0, rng, engine="tvm", variant="channels:0.5")
    run_id = night(store, 1.0, rng, engine="tvm", variant="channels:0.5", status=NOT_APPLICABLE, samples_ms=None,
                   reason="a pruned layer's result is also an output")
    (lost,) = judge(store.frame(), run_id)
    assert lost.verdict == BROKEN and lost.regression
    assert f"measured until run {run_id - 1}, now not applicable: a pruned layer's" in lost.summary()


def test_a_short_history_only_flags_changes_beyond_the_unknown_noise_band(store):
    rng = np.random.default_rng(13)
    night(store, 1.0, rng)
    night(store, 1.12, rng)  # 12%: on a host whose noise is not known yet, not a verdict
    (v,) = judge_run(store)[1]
    assert v.verdict == SAME and v.evidence["night_sigma"] is None and "reference: 1 earlier run)" in v.summary()
    assert v.evidence["noise_band"] == Regression().unknown_noise_band
    night(store, 2.0, rng)  # a build twice as slow is flagged from the second night on
    (v,) = judge_run(store)[1]
    assert v.verdict == SLOWER


def _two_mode_samples(rng, level: float, slow_share: float) -> list[float]:
    """A night on a shared host: each sample in the fast mode or the slow one (~14% slower)."""
    slow = rng.random(60) < slow_share
    return (level * np.where(slow, 1.14, 1.0) * np.exp(rng.normal(0.0, 0.01, 60))).round(6).tolist()


def test_a_night_mostly_in_the_host_s_slow_mode_is_judged_by_its_fast_samples(store):
    rng = np.random.default_rng(21)
    for _ in range(10):
        night(store, 1.0, rng, samples_ms=_two_mode_samples(rng, 1.0, rng.uniform(0.0, 0.5)))
    night(store, 1.0, rng, samples_ms=_two_mode_samples(rng, 1.0, 0.8))  # the median is in the slow mode
    (v,) = judge_run(store)[1]
    assert v.evidence["median_ms"] > 1.1 and v.verdict == SAME, v.summary()
    night(store, 1.12, rng, samples_ms=_two_mode_samples(rng, 1.12, 0.3))  # another build: both modes 12% slower
    (v,) = judge_run(store)[1]
    assert v.verdict == SLOWER and v.evidence["statistic"] == "p10", v.summary()


def test_a_change_stands_only_when_a_second_measurement_agrees(store):
    """A night wholly in the slow mode looks like a step; `nightly` measures again before it says so."""
    rng = np.random.default_rng(23)
    for _ in range(10):
        night(store, 1.0, rng)
    first = night(store, 1.14, rng)  # the whole night in the slow mode
    second = night(store, 1.0, rng)  # measured again: the fast mode
    (v1,) = judge(store.frame(), first)
    (v2,) = judge(store.frame(), second)
    assert v1.verdict == SLOWER and needs_confirmation(v1) and v2.verdict == SAME
    kept = confirm(v1, v2)
    assert kept.verdict == SAME and kept.aspects["latency"] == SAME and kept.evidence["confirmed"] is False
    assert "not confirmed by a second run" in kept.summary()
    # as large a move the second time, yet within chance: the summary says why it does not confirm
    chance = replace(v2, evidence=v2.evidence | {"latency_change": 0.13, "p_value": 0.02})
    alpha = v1.evidence["alpha"]
    assert f"not confirmed by a second run (+13.0%, p 0.02, not under {alpha:.2g})" in confirm(v1, chance).summary()
    third = night(store, 1.14, rng)  # a real step: measured again, still slower
    (v3,) = judge(store.frame()[store.frame()["run_id"] != second], third)
    assert confirm(v1, v3).verdict == SLOWER and confirm(v1, v3).evidence["confirmed"] is True
    # The series was not measured again (its second measurement failed): the change is said, unconfirmed.
    unmeasured = confirm(v1, None)
    assert unmeasured.verdict == SLOWER and unmeasured.evidence["confirmed"] is None
    assert "unconfirmed: it was not measured again" in unmeasured.summary()


@pytest.mark.parametrize("again, expected", [(1.0, SAME), (1.3, SLOWER)])
def test_the_store_s_confirmation_run_decides_the_night_s_verdict(store, again, expected):
    rng = np.random.default_rng(29)
    for _ in range(8):
        night(store, 1.0, rng)
    first = night(store, 1.3, rng)
    night(store, again, rng, confirms=first)
    run, (v,) = judge_run(store)  # the newest run that is not a confirmation
    assert run["id"] == first
    assert v.verdict == expected and v.evidence["confirmed"] is (expected == SLOWER)


def _ab_pairs(rng, change: float) -> tuple[list[float], list[float]]:
    """An A/B window on a shared host: each pair of samples in one load mode, the modes ~30% apart
    and changing from pair to pair; the night's build `change` off the earlier one."""
    host = np.where(rng.random(60) < 0.5, 1.3, 1.0)
    earlier = host * np.exp(rng.normal(0.0, 0.01, 60))
    tonight = host * (1 + change) * np.exp(rng.normal(0.0, 0.01, 60))
    return tonight.round(6).tolist(), earlier.round(6).tolist()


@pytest.mark.parametrize("change, expected", [(0.10, SLOWER), (0.01, SAME), (-0.15, FASTER)])
def test_an_a_b_in_turns_is_judged_within_its_window(store, change, expected):
    """A confirmation that timed tonight's build and the earlier one in turns: the host's modes fall
    on both alike, so only the build's own change counts, against min_effect alone."""
    rng = np.random.default_rng(31)
    earlier = [night(store, 1.0, rng) for _ in range(6)][-1]
    first = night(store, 1.0 + change, rng)
    samples, reference = _ab_pairs(rng, change)
    again = night(store, 1.0, rng, confirms=first, samples_ms=samples,
                  details={"ab_reference": {"run_id": earlier, "samples_ms": reference}})
    (v,) = judge(store.frame(), again)
    assert v.aspects["latency"] == expected and v.evidence["ab_reference_run"] == earlier
    assert v.evidence["latency_change"] == pytest.approx(change, abs=0.02)
    assert v.evidence["noise_band"] == Regression().min_effect
    assert f"A/B in turns with run {earlier}'s build" in v.summary()  # `report --run` on the confirmation


@pytest.mark.parametrize("change, expected", [(0.0, SAME), (0.3, SLOWER)])
def test_an_a_b_confirmation_outranks_a_second_run(store, change, expected):
    rng = np.random.default_rng(37)
    earlier = [night(store, 1.0, rng) for _ in range(8)][-1]
    first = night(store, 1.3, rng)
    night(store, 1.3 - change, rng, confirms=first)  # a second run, in the same spell as the first
    samples, reference = _ab_pairs(rng, change)
    night(store, 1.0, rng, confirms=first, samples_ms=samples,
          details={"ab_reference": {"run_id": earlier, "samples_ms": reference}})
    run, (v,) = judge_run(store)
    assert run["id"] == first and v.verdict == expected
    assert v.evidence["confirmed"] is (expected == SLOWER)
    said = "; confirmed" if expected == SLOWER else "; not confirmed"
    assert f"{said} by an A/B in turns with run {earlier}'s build (" in v.summary()


def test_a_move_of_the_very_build_it_was_compared_with_is_the_host_s_not_a_change(store):
    """Nothing in the TVM build changed (the reference run's build key, a cache hit) and the host was
    busy: the night looks like a step, and an A/B of that library against itself under load swings as
    far (+43% here), so nothing can confirm the move as the build's. "same", saying why; not measured again."""
    from tvmharness.report.summary import junit, markdown

    rng = np.random.default_rng(89)
    build, quiet, busy = {"build_key": "0123456789abcdef"}, {"cores": 0.0, "of_cpus": 2}, {"cores": 2.0, "of_cpus": 2}
    for _ in range(6):
        night(store, 1.0, rng, details=build | {"other_load": quiet})
    first = night(store, 2.4, rng, details=build | {"other_load": busy})
    level = judge(store.frame(), first)[0].evidence["level_run_id"]
    samples, reference = _ab_pairs(rng, 0.43)  # as an A/B of that .so against itself came out, stored anyway
    night(store, 1.0, rng, confirms=first, samples_ms=samples,
          details=build | {"ab_reference": {"run_id": level, "samples_ms": reference}})
    run, (v,) = judge_run(store)
    assert v.verdict == SAME and not v.regression and not needs_confirmation(v), v.summary()
    assert v.evidence["confirmed"] is False and v.evidence["same_build_run_id"] == level
    said = f"not confirmed: the same build as run {level}'s, so the move is the host's, not the model's"
    assert said in v.summary() and "host while timing quiet -> busy" in v.summary() and "operators" not in v.summary()
    assert said in markdown(run, [v]) and "<failure" not in junit(run, [v])
    # another build (its key, tonight) is a change an A/B can confirm, as before
    other = night(store, 2.4, rng, details={"build_key": "fedcba9876543210", "other_load": busy})
    assert judge(store.frame(), other)[0].verdict == SLOWER
    # the same build timed by another commit of the harness (how it binds and times a call) is a change a
    # second run confirms: not the host's for being the same library
    for _ in range(6):
        night(store, 1.0, rng, model="h", details=build | {"other_load": quiet})
    harness = night(store, 2.4, rng, model="h", git="beef", details=build | {"other_load": quiet})
    (v,) = judge(store.frame(), harness)
    assert v.verdict == SLOWER and needs_confirmation(v) and "same_build_run_id" not in v.evidence, v.summary()


def test_a_return_to_an_old_level_is_flagged_though_the_window_holds_both(store):
    """Records lost after a tuning: the window holds untuned and tuned nights, the reference is the
    tuned level, and the night's samples are told from the tuned runs' (not from a pool of both)."""
    rng = np.random.default_rng(43)
    for level in (1.0, 1.0, 1.0, 1.0, 0.1, 0.1, 0.1):
        night(store, level, rng)
    (v,) = judge_run(store)[1]
    assert v.verdict == SAME
    night(store, 0.97, rng)  # a little faster than the untuned nights were
    (v,) = judge_run(store)[1]
    assert v.verdict == SLOWER and v.evidence["reference_samples"] == 2 * 30, v.summary()  # two tuned runs nearest their level
    assert v.evidence["night_sigma"] is not None and v.evidence["noise_band"] < 0.2  # one step, not noise


def test_a_confirmation_is_not_a_night_of_history(store):
    rng = np.random.default_rng(41)
    nights = [night(store, 1.0, rng) for _ in range(5)]
    night(store, 1.0, rng, confirms=nights[-1])
    last = night(store, 1.0, rng)
    (v,) = judge(store.frame(), last)
    assert v.evidence["history_runs"] == 5 and v.previous_run_id == nights[-1]


def test_rules_come_from_the_run_s_stored_recipe_and_unknown_ones_are_ignored(store):
    from tvmharness.report.regress import rules_of

    rng = np.random.default_rng(17)
    recipe = {"regression": {"min_effect": 0.5, "a_rule_from_another_release": 4}}
    for _ in range(6):
        night(store, 1.0, rng, recipe=recipe)
    night(store, 1.3, rng, recipe=recipe)  # 30%: slower under the default rules, not under min_effect 0.5
    run, (v,) = judge_run(store)
    assert rules_of(run).min_effect == 0.5
    assert v.verdict == SAME


def test_a_confirmation_is_judged_against_the_history_of_the_run_it_confirms(store):
    """A real step on a short history, measured again at the same level: judged against the night it
    confirms as well, the second run's reference would be half the step, and the step would vanish."""
    rng = np.random.default_rng(47)
    night(store, 1.0, rng)
    first = night(store, 1.45, rng)
    night(store, 1.45, rng, confirms=first)
    run, (v,) = judge_run(store)
    assert run["id"] == first and v.verdict == SLOWER and v.evidence["confirmed"] is True, v.summary()
    assert v.evidence["confirmation_change"] == pytest.approx(0.45, abs=0.05)


def test_another_setup_is_another_history(store):
    """Nightly runs at 1 thread, a bench at 2 between them, an emulated kit standing in for the board:
    none is judged against the others, and the report says why a row has no history."""
    rng = np.random.default_rng(53)
    for _ in range(6):
        night(store, 1.0, rng, threads=1)
    bench = night(store, 0.6, rng, threads=2)
    (v,) = judge(store.frame(), bench)
    assert v.verdict == NEW and v.evidence["setup_changed"] == [{"what": "threads", "before": 1, "after": 2}]
    assert "new setup (threads 1 -> 2; run 6 was the last measured the old way)" in v.summary()
    from tvmharness.report.summary import markdown

    assert "new setup (threads 1 → 2; run 6 was the last measured the old way)" in markdown(store.run(bench), [v])
    run = night(store, 1.0, rng, threads=1)
    (v,) = judge(store.frame(), run)
    assert v.verdict == SAME and v.evidence["history_runs"] == 6, v.summary()

    board = {"kit": "10.0.0.5:9090", "kit_info": {"machine": "aarch64", "emulated": ""}}
    emulated = {"kit": "127.0.0.1:9091", "kit_info": {"machine": "aarch64", "emulated": "qemu-aarch64-static"},
                "emulated": "qemu-aarch64-static"}
    for _ in range(3):
        night(store, 5.0, rng, model="kit", details=board)
    run = night(store, 60.0, rng, model="kit", details=emulated)
    (v,) = judge(store.frame(), run)
    assert v.verdict == NEW and v.evidence["setup_changed"][0]["after"] == "emulated"
    assert v.target == "x86 (EMULATED)" and "x86 (EMULATED)" in v.name
    # The board slows down; the second measurement lands on the emulated kit: no answer, so the change stays.
    for _ in range(3):
        night(store, 5.0, rng, model="kit", details=board)
    first = night(store, 6.5, rng, model="kit", details=board)
    night(store, 60.0, rng, model="kit", details=emulated, confirms=first)
    (kept,) = judge_run(store, first)[1]
    assert kept.verdict == SLOWER and kept.evidence["confirmed"] is None, kept.summary()
    assert "unconfirmed: its second measurement was taken another way (dev kit native -> emulated)" in kept.summary()


def test_each_figure_is_compared_with_the_last_run_that_has_it(store):
    """A night whose memory probe failed (or a run without eval data) skips nothing: the next night
    is compared with the last run that measured it; accuracy only with the same measure."""
    rng = np.random.default_rng(59)
    for _ in range(2):
        night(store, 1.0, rng, details={"memory": {"peak_mb": 100.0}})
    gap = night(store, 1.0, rng, details={"memory_error": "the probe failed"}, top1_agreement=1.0, accuracy=None)
    run = night(store, 1.0, rng, details={"memory": {"peak_mb": 160.0}})
    (v,) = judge(store.frame(), run)
    assert v.aspects["memory"] == LARGER and v.evidence["memory_run_id"] == gap - 1
    assert v.aspects["accuracy"] == SAME and v.evidence["accuracy_run_id"] == gap - 1  # not the top-1 night
    # Labelled data arrives: accuracy 0.90 is not "less accurate" than a top-1 agreement of 1.0.
    for _ in range(2):  # a row without threads (a kit that did not say): NaN in the frame, matching any
        night(store, 1.0, rng, model="text", accuracy=None, top1_agreement=1.0, threads=None,
              details={"data": {"eval": None, "train": None}})
    run = night(store, 1.0, rng, model="text", accuracy=0.90, top1_agreement=1.0, threads=None,
                details={"data": {"eval": {"source": "val.npz", "content_hash": "ab12"}, "train": None}})
    (v,) = judge(store.frame(), run)
    assert "accuracy" not in v.aspects and v.verdict == SAME, v.summary()
    changed = {c["what"]: (c["before"], c["after"]) for c in v.changed}
    assert changed["eval data"] == ("seeded", "val.npz (ab12)")
    assert "threads" not in changed and v.previous_run_id is not None  # not a change, nor another setup


def test_accuracy_is_compared_only_on_the_same_held_out_samples(store):
    """Half the held-out file one night and the other half the next gave "less accurate" (82% -> 80.67%)
    of an unchanged model: scores on other samples are not compared."""
    rng = np.random.default_rng(62)

    def fed(content_hash):
        return {"data": {"eval": {"source": "val.npz", "content_hash": content_hash}, "train": None}}

    for _ in range(3):
        night(store, 1.0, rng, model="own", accuracy=0.82, details=fed("a1"))
    run = night(store, 1.0, rng, model="own", accuracy=0.60, details=fed("b2"))
    (v,) = judge(store.frame(), run)
    assert "accuracy" not in v.aspects and v.verdict != LESS_ACCURATE, v.summary()
    assert "accuracy on other held-out samples than before, nothing scored" in v.summary()
    run = night(store, 1.0, rng, model="own", accuracy=0.50, details=fed("b2"))  # on those samples, now lower
    (v,) = judge(store.frame(), run)
    assert v.aspects["accuracy"] == LESS_ACCURATE and v.evidence["previous_accuracy"] == 0.60


def test_top1_agreement_is_compared_only_on_as_many_seeded_inputs(store):
    """`agreement_samples = 16` one night and the default 4 the next gave "less accurate: top-1 agreement
    -6.2 pts" of an unchanged model (9 of 16, then 2 of 4): a share of other inputs is not compared."""
    rng = np.random.default_rng(63)
    seeded = {"data": {"eval": None, "train": None}}
    for _ in range(3):
        night(store, 1.0, rng, model="text", accuracy=None, top1_agreement=0.5625, details=seeded | {"inputs_checked": 16})
    run = night(store, 1.0, rng, model="text", accuracy=None, top1_agreement=0.5, details=seeded | {"inputs_checked": 4})
    (v,) = judge(store.frame(), run)
    assert "accuracy" not in v.aspects and v.verdict == SAME, v.summary()
    assert "top-1 agreement on 4 inputs where it was on 16, nothing scored on these to compare with" in v.summary()
    run = night(store, 1.0, rng, model="text", accuracy=None, top1_agreement=0.25, details=seeded | {"inputs_checked": 4})
    (v,) = judge(store.frame(), run)
    assert v.aspects["accuracy"] == LESS_ACCURATE and v.evidence["previous_accuracy"] == 0.5  # on those 4, now lower
    assert "top-1 agreement of 4 inputs -25.0 pts" in v.summary()


def test_a_cause_that_came_a_night_before_the_step_is_still_named(store):
    rng = np.random.default_rng(61)
    for _ in range(6):
        night(store, 1.0, rng, versions={"torch": "2.9"})
    night(store, 1.0, rng, versions={"torch": "2.10"})  # the new torch, its effect not seen yet
    run = night(store, 1.0, rng, versions={"torch": "2.10"})
    (v,) = judge(store.frame(), run)
    changed = {c["what"]: c for c in v.changed}
    assert changed["torch"]["before"] == "2.9" and changed["torch"]["run"] == v.previous_run_id
    assert f"torch 2.9 -> 2.10 (since run {v.previous_run_id})" in v.summary()
    assert "git commit" not in changed
    night(store, 1.0, rng, versions={"torch": "2.9"})  # back, a night before this one
    run = night(store, 1.0, rng, versions={"torch": "2.9"})
    (v,) = judge(store.frame(), run)
    (torch,) = [c for c in v.changed if c["what"] == "torch"]
    assert (torch["before"], torch["after"], torch["run"]) == ("2.10", "2.9", v.previous_run_id)


def test_a_host_label_keeps_a_runner_s_series_whatever_its_hostname(store, monkeypatch):
    rng = np.random.default_rng(67)
    monkeypatch.setenv("TVMHARNESS_HOST", "nightly-runner")
    for _ in range(2):
        night(store, 1.0, rng)
    (v,) = judge_run(store)[1]
    assert v.series["hostname"] == "nightly-runner" and v.verdict == SAME
    # a runner whose name changed (no label): new, and the verdict says where the series' history is
    monkeypatch.setenv("TVMHARNESS_HOST", "runner-7f3a")
    night(store, 1.0, rng)
    (v,) = judge_run(store)[1]
    assert v.verdict == NEW and v.summary() == ("new on host runner-7f3a: this store has it from nightly-runner "
                                                "(TVMHARNESS_HOST gives a host a lasting name): nothing measured this "
                                                "way to compare with; accuracy 97.00%")
    monkeypatch.setenv("TVMHARNESS_HOST", "runner-9")
    night(store, 1.0, rng, status="failed to run")  # a host's own failed rows are no other host's history
    night(store, 1.0, rng)
    (v,) = judge_run(store)[1]
    assert v.verdict == NEW and "this store has it from nightly-runner, runner-7f3a (" in v.summary()


def test_a_nightly_whose_second_measurement_failed_says_so(store):
    rng = np.random.default_rng(71)
    for _ in range(6):
        night(store, 1.0, rng)
    night(store, 1.3, rng)
    (v,) = judge_run(store, unconfirmed_why="measuring again failed: no kit under 'aarch64' is registered any more")[1]
    assert v.verdict == SLOWER and v.evidence["confirmed"] is None
    assert "unconfirmed: measuring again failed: no kit under 'aarch64'" in v.summary()


def test_a_second_measurement_cut_short_confirms_what_it_reached_and_says_why_not_the_rest(store):
    rng = np.random.default_rng(73)

    def with_b(run_id: int, level: float) -> None:  # a second series in the same run, as one recipe's rows are
        row = store.frame(run_id=run_id).iloc[0].to_dict()
        samples = (level * np.exp(rng.normal(0.0, 0.03, 30))).round(6).tolist()
        store.add(run_id, {k: row[k] for k in ("variant", "target", "engine", "engine_version", "status", "threads")}
                  | {"model": "b", "samples_ms": samples})

    for _ in range(6):
        with_b(night(store, 1.0, rng, model="a"), 1.0)
    step = night(store, 1.3, rng, model="a")
    with_b(step, 1.3)
    night(store, 1.3, rng, model="a", confirms=step)  # Ctrl-C before it reached b
    verdicts = {v.series["model"]: v for v in judge_run(store, step, unconfirmed_why="measuring again was interrupted (Ctrl-C)")[1]}
    assert verdicts["a"].verdict == SLOWER and verdicts["a"].evidence["confirmed"] is True, verdicts["a"].summary()
    assert verdicts["b"].verdict == SLOWER and verdicts["b"].evidence["confirmed"] is None
    assert "unconfirmed: measuring again was interrupted (Ctrl-C)" in verdicts["b"].summary()


def test_a_run_stopped_before_its_first_row_is_not_the_report_s_default(store):
    from tvmharness.errors import HarnessError
    from tvmharness.provenance import snapshot

    rng = np.random.default_rng(73)
    last = [night(store, 1.0, rng) for _ in range(2)][-1]
    empty = store.start_run("nightly", "h" * 16, {}, snapshot())  # Ctrl-C before the first row
    run, (v,) = judge_run(store)
    assert run["id"] == last and v.verdict == SAME
    with pytest.raises(HarnessError) as err:
        judge_run(store, empty)
    assert f"run {empty} has no measurements" in str(err.value) and f"--run {last}" in err.value.fix


def test_a_store_without_measurements_is_an_error_not_a_clean_night(tmp_path):
    """A mistyped store path makes an empty store: judging it is an error, never "no regressions"."""
    from tvmharness.errors import HarnessError
    from tvmharness.provenance import snapshot
    from tvmharness.report.html import render_html

    typo = Store(str(tmp_path / "histroy.db"))
    for judging in (lambda: judge_run(typo), lambda: render_html(typo)):
        with pytest.raises(HarnessError, match="no measurements in .*histroy.db"):
            judging()
    with pytest.raises(HarnessError, match="run 7 is not in .*histroy.db"):
        typo.run(7)
    # a run under way that has stored no row yet is said as that, not as an empty store
    started = typo.start_run("nightly", "h" * 16, {}, snapshot())
    with pytest.raises(HarnessError, match=f"no measurements in .*histroy.db yet: run {started}, started .* UTC, has stored "
                                           "no row \\(it is still running, or it stopped before its first row\\)"):
        judge_run(typo)


def test_the_verdict_tables_name_the_accuracy_measure(store):
    """A model without labels is judged on top-1 agreement with fp32: the tables say so, not "accuracy"."""
    from rich.console import Console

    from tvmharness.report.summary import markdown
    from tvmharness.report.terminal import verdict_table

    rng = np.random.default_rng(79)
    for agreement in (1.0, 1.0, 0.9):
        run = night(store, 1.0, rng, accuracy=None, top1_agreement=agreement)
    (v,) = judge(store.frame(), run)
    assert v.aspects["accuracy"] == LESS_ACCURATE
    assert "| top-1 agreement 100.00% → 90.00% |" in markdown(store.run(run), [v])
    console = Console(record=True, width=400)
    console.print(verdict_table([v]))
    assert "top-1 agreement -10.0 pts" in console.export_text()


def test_junit_gives_an_iso_timestamp_and_no_property_without_a_value(store):
    import re
    import xml.etree.ElementTree as ET

    from tvmharness.report.summary import junit

    rng = np.random.default_rng(89)
    for _ in range(2):
        run_id = night(store, 1.0, rng, versions={"tvmharness": None})  # run from a checkout: no version
    suite = ET.fromstring(junit(store.run(run_id), judge(store.frame(), run_id)).split("?>", 1)[1])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", suite.get("timestamp")), suite.get("timestamp")
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert "tvmharness_version" not in properties and "None" not in properties.values() and properties["git_commit"]


def test_a_run_cut_short_says_so_and_names_each_series_it_did_not_measure(store):
    """A Ctrl-C'd nightly is not a green night: the run stays unfinished, and each series the last run
    of its recipe measured and it did not is said (not judged: a recipe may drop one on purpose)."""
    import xml.etree.ElementTree as ET

    from tvmharness.errors import HarnessError
    from tvmharness.report.regress import NOT_MEASURED
    from tvmharness.report.summary import junit, markdown

    rng = np.random.default_rng(81)
    for _ in range(2):
        full = night(store, 1.0, rng, model="a")
        row = store.frame(run_id=full).iloc[0].to_dict()
        store.add(full, {k: row[k] for k in ("variant", "target", "engine", "engine_version", "status", "samples_ms")}
                  | {"model": "b"})
    cut = night(store, 1.0, rng, model="a")
    store.engine.dispose()
    with store.engine.begin() as conn:  # as a run cut short leaves it: never finished
        conn.exec_driver_sql("UPDATE runs SET finished = NULL WHERE id = ?", (cut,))
    run, verdicts = judge_run(store)
    assert run["id"] == cut and {v.series["model"]: v.verdict for v in verdicts} == {"a": SAME, "b": NOT_MEASURED}
    missing = next(v for v in verdicts if v.verdict == NOT_MEASURED)
    assert not missing.regression and missing.previous_run_id == full
    assert f"run {cut} did not finish" in missing.summary() and f"run {full} has it" in missing.summary()
    md = markdown(run, verdicts)
    assert "⚠️ unfinished run" in md and "✅" not in md and f"run {cut} did not finish" in md
    suite = ET.fromstring(junit(run, verdicts))
    assert suite.get("skipped") == "1" and suite.get("failures") == "0" and suite.get("errors") == "1"
    (error,) = suite.iter("error")  # CI publishing it shows red
    assert f"run {cut} did not finish" in error.get("message")
    from tests.conftest import run_cli

    gated = run_cli("report", "--store", str(store.file), "--fail-on-regression")  # and a gate does not pass it
    assert gated.returncode == 1 and f"run {cut} did not finish" in gated.stderr, gated.stderr
    # a first run cut short names what its own plan did not reach, though no earlier run had it
    first = store.start_run("first-night", "f" * 16, {}, store.run(cut)["provenance"] | {
        "planned": [["a", "fp32", "x86", "tvm"], ["c", "fp32", "x86", "tvm"], ["c", "int8", "x86", "tvm"]]})
    row = store.frame(run_id=cut).iloc[0].to_dict()
    store.add(first, {k: row[k] for k in ("model", "variant", "target", "engine", "engine_version", "status", "samples_ms")})
    store.add(first, {"model": "c", "variant": "int8", "target": "x86", "engine": "—", "engine_version": "", "status": "failed to compress"})
    run, verdicts = judge_run(store, first)
    assert {(v.series["model"], v.series["variant"]): v.verdict for v in verdicts} == {
        ("a", "fp32"): SAME, ("c", "fp32"): NOT_MEASURED, ("c", "int8"): BROKEN}  # the failed variant's row says why
    (unreached,) = [v for v in verdicts if v.verdict == NOT_MEASURED]
    assert f"run {first} did not finish" in unreached.summary() and unreached.previous_run_id is None
    # a confirmation run is judged with the run it confirms, not as a night of its own
    again = night(store, 1.0, rng, model="a", confirms=full)
    with pytest.raises(HarnessError) as err:
        judge_run(store, again)
    assert f"run {again} is the second measurement of run {full}" in str(err.value) and err.value.fix == f"pass --run {full}"


@pytest.mark.parametrize("engine, named", [("tvm", True), ("torch", False), ("onnxruntime", False)])
def test_a_tvm_target_change_is_named_only_for_the_tvm_builds_it_shaped(store, engine, named):
    rng = np.random.default_rng(91)
    for _ in range(3):
        night(store, 1.0, rng, engine=engine)
    last = night(store, 1.0, rng, engine=engine, target_spec={"tvm": {"kind": "llvm", "mcpu": "x86-64"}})
    (v,) = judge(store.frame(), last)
    assert any(c["what"] == "target" for c in v.changed) == named, v.changed
    if named:  # a structure is JSON text, which a reader of `report --format json` parses
        (change,) = [c for c in v.changed if c["what"] == "target"]
        assert json.loads(change["after"]) == {"kind": "llvm", "mcpu": "x86-64"}


def test_the_night_after_a_step_is_judged_against_the_old_level_and_a_b_d_with_an_old_build(store):
    """Last night's step sits among tonight's reference runs: the test weighs the runs at the reference
    level, not last night's, and the A/B that confirms it loads a build of that level, not last night's
    (which is the step itself: "same" against it)."""
    rng = np.random.default_rng(61)
    old = [night(store, 1.0, rng, git=f"old{i}") for i in range(6)]
    step = night(store, 1.6, rng, git="new")
    tonight = night(store, 1.6, rng, git="new")
    (v,) = judge(store.frame(), tonight)
    assert v.verdict == SLOWER, v.summary()
    assert v.evidence["reference_samples"] == 2 * 30  # the two runs at the old level
    assert v.evidence["level_run_id"] in old[-2:] and v.evidence["level_run_id"] != step
    assert v.previous_run_id == step  # what changed is still named against the runs before


def test_samples_spread_over_another_span_are_another_setup(store):
    """Samples back to back and samples spread over seconds of running time the same code apart: a
    recipe's span changed is a new history, not a step."""
    rng = np.random.default_rng(63)
    for _ in range(5):
        night(store, 1.0, rng, details={"span_s": 0.0})
    spread = night(store, 1.2, rng, details={"span_s": 4.0})
    (v,) = judge(store.frame(), spread)
    assert v.verdict == NEW and v.evidence["setup_changed"] == [{"what": "samples spread over", "before": "0 s", "after": "4 s"}]


def test_a_model_that_could_not_be_made_names_that_as_why_its_other_rows_are_missing(store):
    """Its one broken row lists no provenance it lacks as a change (a row that failed before measuring has
    no engine version), and its other engines' series are not measured because of it, which they say."""
    from tvmharness.report.regress import NOT_MEASURED
    from tvmharness.results import LOAD_FAILED

    rng = np.random.default_rng(67)
    for _ in range(3):
        full = night(store, 1.0, rng, engine="torch", is_baseline=True)
        night_row = store.frame(run_id=full).iloc[0].to_dict()
        store.add(full, {k: night_row[k] for k in ("model", "variant", "target", "engine_version", "status", "samples_ms")}
                  | {"engine": "tvm"})
    failed = store.start_run("nightly", "h" * 16, {}, store.run(full)["provenance"])
    store.add(failed, {"model": "m", "variant": "fp32", "target": "x86", "engine": "torch", "engine_version": "",
                       "is_baseline": True, "status": LOAD_FAILED, "reason": "m.py raised ValueError",
                       "batch": 2, "details": {"model_spec": "m.py:m"}})  # the recipe's batch: the model's own is unknown
    store.finish_run(failed)
    run, verdicts = judge_run(store)
    by_engine = {v.series["engine"]: v for v in verdicts}
    assert by_engine["torch"].verdict == BROKEN and by_engine["torch"].changed == [], by_engine["torch"].summary()
    assert by_engine["tvm"].verdict == NOT_MEASURED
    assert f"model m could not be made in run {failed} (see its broken fp32 row)" in by_engine["tvm"].summary()


def test_of_two_reference_runs_the_later_is_the_build_to_a_b_with(store):
    """The reference of two runs is their midpoint, no nearer one than the other: the night after a step
    on a two-run history is A/B'd with the later build (the step, still there: no change), not the older."""
    rng = np.random.default_rng(83)
    night(store, 1.0, rng, git="untuned")
    tuned = night(store, 0.1, rng, git="tuned")
    tonight = night(store, 0.1, rng, git="tuned")
    (v,) = judge(store.frame(), tonight)
    assert v.evidence["level_run_id"] == tuned, v.summary()


def test_what_an_older_release_did_not_record_is_unknown_not_changed():
    """After an upgrade tonight's row records the model's digest and the data fed, which no earlier
    run did: not "model None -> ab12..." in every verdict's why."""
    from tvmharness.report.regress import provenance_changes

    old = {"git commit": "c0ffee", "torch": "2.9"}
    tonight = old | {"model": "ab12", "eval data": "seeded"}
    assert provenance_changes([(1, old), (2, old)], tonight) == []
    assert provenance_changes([(1, old), (2, old), (3, tonight)], tonight) == []  # the nights after the upgrade
    changes = provenance_changes([(1, old), (2, old | {"model": "ab12"})], tonight | {"model": "cd34", "torch": "3.0"})
    assert {c["what"]: (c["before"], c["after"]) for c in changes} == {"model": ("ab12", "cd34"), "torch": ("2.9", "3.0")}
    # nor is a key tonight's row does not record (a recipe hash this release names by its settings instead)
    assert provenance_changes([(1, old | {"recipe": "3f9c990b2b1a312c"})], tonight) == []


def test_run_ids_are_named_as_spans_and_a_long_history_s_in_a_few():
    from tvmharness.report.regress import _spans

    assert _spans([9, 1, 2, 3, 5, 10, 11, 12, 14, 15]) == "1..3, 5, 9..12, 14, 15"
    assert _spans(list(range(0, 200, 3))) == "0, 3, (59 more spans), 183, 186, 189, 192, 195, 198"


def test_a_run_is_judged_by_its_own_cpu_where_its_provenance_has_none(store):
    """The CPU a run measured on is a column of its run: a provenance whose host.cpu is null (an older or
    another writer's) costs no verdict, and JUnit still names the CPU."""
    import xml.etree.ElementTree as ET

    from sqlalchemy import update

    from tvmharness.report.summary import junit
    from tvmharness.results import Run

    rng = np.random.default_rng(61)
    for _ in range(4):
        night(store, 1.0, rng)
    with store.engine.begin() as conn:
        for run in store.runs():
            prov = run["provenance"] | {"host": run["provenance"]["host"] | {"cpu": None}}
            conn.execute(update(Run).where(Run.id == run["id"]).values(provenance=prov))
    run, (v,) = judge_run(store)
    assert run["cpu"] and v.provenance["cpu"] == v.setup["cpu"] == run["cpu"] and v.verdict == SAME, v.summary()
    suite = ET.fromstring(junit(run, [v]).split("?>", 1)[1])
    assert {p.get("name"): p.get("value") for p in suite.iter("property")}["cpu"] == run["cpu"]


def test_a_night_that_changes_the_span_and_the_model_is_still_judged_on_its_size(store):
    """A span changed the same night as the model: latency starts a new history, and the artifact
    that grew is still a regression, with the model named as what changed."""
    rng = np.random.default_rng(65)
    for _ in range(5):
        night(store, 1.0, rng, details={"span_s": 1.0, "model_digest": "a" * 64})
    grown = night(store, 1.3, rng, artifact_bytes=186_000, details={"span_s": 2.0, "model_digest": "b" * 64})
    (v,) = judge(store.frame(), grown)
    assert v.verdict == LARGER and v.aspects["latency"] == NEW and v.evidence["size_change"] == pytest.approx(0.86)
    assert {"what": "model", "before": "a" * 16, "after": "b" * 16} in v.changed
    assert "latency: new setup (samples spread over 1 s -> 2 s; run 5 was the last measured the old way): nothing timed" \
           " this way to compare with" in v.summary() and "size +86.0%" in v.summary(), v.summary()
    # threads changed: another setup altogether (a build for another thread count), nothing of it judged
    other = night(store, 1.0, rng, threads=1, artifact_bytes=100_000, details={"span_s": 2.0, "model_digest": "b" * 64})
    (v,) = judge(store.frame(), other)
    assert v.verdict == NEW and set(v.aspects) == {"status"}, v.summary()


def test_a_series_the_recipe_no_longer_lists_says_what_was_dropped(store):
    from tvmharness.report.regress import NOT_MEASURED, _lists_changed

    rng = np.random.default_rng(71)
    both = {"models": ["m", "k"], "engines": ["tvm", "onnxruntime"]}
    for _ in range(2):
        full = night(store, 1.0, rng, recipe=both)
        row = store.frame(run_id=full).iloc[0].to_dict()
        kept = {k: row[k] for k in ("model", "variant", "target", "engine", "engine_version", "status", "samples_ms")}
        store.add(full, kept | {"engine": "onnxruntime"})
        store.add(full, kept | {"model": "k"})
    tonight = night(store, 1.0, rng, recipe={"models": ["m"], "engines": ["tvm"]})
    run, verdicts = judge_run(store)
    dropped = {(v.series["model"], v.series["engine"]): v for v in verdicts if v.verdict == NOT_MEASURED}
    assert set(dropped) == {("m", "onnxruntime"), ("k", "tvm")}
    # each says what of it was dropped, not all that the recipe dropped
    assert (f"run {tonight}'s recipe no longer lists its engine onnxruntime (run {full}'s did)"
            in dropped[("m", "onnxruntime")].summary())
    assert f"no longer lists its model k (run {full}'s did)" in dropped[("k", "tvm")].summary()
    # entries as a recipe writes them: a model's file:function, a variant's chain, a preset's file
    for key, entry, name in (("models", "nets.py:small", "small"), ("variants", ["prune:0.5", "finetune"], "prune:0.5+finetune"),
                             ("targets", "boards/pi.toml", "pi")):
        field = key[:-1]
        said = _lists_changed({"id": 9, "recipe": {key: []}}, {"id": 8, "recipe": {key: [entry]}}, {field: name} | {
            k: "-" for k in ("model", "variant", "target", "engine") if k != field})
        assert said == f"run 9's recipe no longer lists its {field} {name} (run 8's did)", said


def test_a_broken_row_names_what_changed_as_its_verdicts_line_says(store):
    rng = np.random.default_rng(73)
    for _ in range(2):
        night(store, 1.0, rng, recipe={"measure": {"tolerance": 0.01}})
    tonight = night(store, 1.0, rng, recipe={"measure": {"tolerance": 0.0001}}, status="disagrees",
                    reason="max abs diff 0.002 exceeds the tolerance")
    (v,) = judge(store.frame(), tonight)
    assert v.verdict == BROKEN and v.summary() == ("broken: disagrees: max abs diff 0.002 exceeds the tolerance; "
                                                   "changed: recipe measure.tolerance 0.01 -> 0.0001"), v.summary()


def test_a_goal_set_in_the_recipe_is_no_cause_and_a_key_added_was_unset_before(store):
    rng = np.random.default_rng(69)
    from tvmharness.report.regress import change_text

    for _ in range(3):
        night(store, 1.0, rng, recipe={"measure": {"repeats": 30}, "thresholds": {"min_speedup": None}})
    tonight = night(store, 1.0, rng, recipe={"measure": {"repeats": 60}, "thresholds": {"min_speedup": 1.5}})
    (v,) = judge(store.frame(), tonight)
    assert v.changes() == ["recipe measure.repeats 30 -> 60"], v.summary()
    assert change_text({"what": "recipe measure.warmup", "before": None, "after": 3}) == "recipe measure.warmup unset -> 3"


def test_a_min_history_shorter_than_a_sigma_needs_keeps_the_unknown_noise_band(store):
    """With two or three nights no night-to-night sigma exists: the band is the unknown one, not min_effect."""
    rng = np.random.default_rng(67)
    for level in (1.0, 1.35, 1.0):  # nights far apart: a noise the series has not shown enough of to measure
        night(store, level, rng)
    run = night(store, 0.85, rng)
    (v,) = judge(store.frame(), run, Regression(min_history=2))
    assert v.evidence["night_sigma"] is None and v.evidence["noise_band"] == pytest.approx(0.20), v.summary()
    assert v.verdict == SAME, v.summary()


def test_a_row_an_older_writer_added_after_the_upgrade_takes_its_span_from_its_run_s_recipe(store):
    """A host not yet upgraded kept writing rows without `span_s` into a store another host had upgraded:
    they were spread as their run's recipe says (as migration 0004 reads it), not "any setup"."""
    rng = np.random.default_rng(37)
    for _ in range(3):
        night(store, 1.0, rng, recipe={"measure": {"span_s": 3.0}}, details={"build_key": "k"})
    run = night(store, 0.8, rng, details={"build_key": "k", "span_s": 0.0})
    (v,) = judge(store.frame(), run)
    assert v.verdict == NEW and v.evidence["setup_changed"] == [{"what": "samples spread over", "before": "3 s", "after": "0 s"}]


def test_a_window_shorter_than_min_history_still_lets_a_long_series_show_its_steps(store):
    rng = np.random.default_rng(41)
    rules = Regression(window=3, min_history=5)
    for _ in range(8):
        night(store, 1.0, rng)
    run = night(store, 1.15, rng)
    (v,) = judge(store.frame(), run, rules)
    assert v.verdict == SLOWER and v.evidence["history_runs"] == 8, v.summary()


def test_where_every_night_is_a_step_those_nights_are_the_noise():
    from tvmharness.report.regress import night_sigma

    levels = list(np.exp(np.random.default_rng(43).normal(0, 0.05, 10)))
    assert night_sigma(levels, [False] + [True] * 9) == night_sigma(levels) > 0.02  # a nightly wheel's series
    assert night_sigma(levels, [False] * 10) == night_sigma(levels)


def test_a_row_that_never_built_blames_nothing_on_tuning_and_a_setting_gone_is_said(store):
    rng = np.random.default_rng(47)
    ranged = {"build_key": "k", "inputs": [{"name": "ids", "dtype": "int64", "shape": [1, 8], "value_range": [0, 100]}]}
    for _ in range(3):
        night(store, 1.0, rng, details=ranged)
    run = night(store, 1.0, rng, status="failed to build", reason="no", samples_ms=None, median_ms=None, details={})
    (v,) = judge(store.frame(), run)
    assert v.verdict == BROKEN and not any(c["what"] == "tuned tasks" for c in v.changed), v.changed
    run = night(store, 1.0, rng, details={"build_key": "k", "inputs": [{"name": "ids", "dtype": "int64", "shape": [1, 8]}]})
    (v,) = judge(store.frame(), run)
    assert {"what": "input ranges", "before": "ids 0..100", "after": "none"} in v.changed  # seeded from {0, 1} now
