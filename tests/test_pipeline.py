import os

import pytest

from tests.conftest import USER_MODELS
from tvmharness.pipeline import BUILD_FAILED, OK, confirm_latency, run_recipe
from tvmharness.recipe import recipe_from_dict


@pytest.fixture(scope="module")
def first_run(workdir):
    recipe = recipe_from_dict({
        "name": "pipeline", "models": ["digits_cnn"],
        "measure": {"warmup": 1, "repeats": 30, "threads": 2},
        "output": {"dir": str(workdir / "pipeline"), "store": str(workdir / "pipeline" / "history.db")},
    })
    return recipe, run_recipe(recipe)


def test_every_engine_is_measured_against_the_torch_baseline(first_run):
    recipe, result = first_run
    rows = {r["engine"]: r for r in result.rows}
    assert set(rows) == {"torch", "tvm", "onnxruntime"}
    assert all(r["status"] == OK for r in rows.values()), [r["reason"] for r in rows.values()]
    base = rows["torch"]
    assert base["is_baseline"] and base["variant"] == "fp32"
    for engine in ("tvm", "onnxruntime"):
        row = rows[engine]
        assert row["speedup_vs_baseline"] == pytest.approx(base["median_ms"] / row["median_ms"])
        assert row["accuracy"] == pytest.approx(base["accuracy"], abs=0.01)
        assert row["top1_agreement"] > 0.98
        assert row["artifact_bytes"] > 0
    assert base["accuracy"] > 0.9  # the digits CNN really learned the task
    assert all(len(r["samples_ms"]) == 30 and r["threads"] == 2 for r in rows.values())
    assert rows["tvm"]["tuned"] is False and rows["tvm"]["cache_hit"] is False


def test_the_store_holds_what_was_measured(first_run):
    _, result = first_run
    frame = result.frame()
    assert len(frame) == 3
    by_engine = frame.set_index("engine")
    for row in result.rows:
        stored = by_engine.loc[row["engine"]]
        assert stored["median_ms"] == pytest.approx(row["median_ms"])
        assert stored["samples_ms"] == row["samples_ms"]
    run = result.store.run(result.run_id)
    assert run["provenance"]["threads"] == 2 and run["git_commit"]


def test_rerun_reuses_every_build(first_run):
    recipe, result = first_run
    tvm_dir = next(r["details"]["artifact_dir"] for r in result.rows if r["engine"] == "tvm")
    mtime = os.stat(os.path.join(tvm_dir, "model.so")).st_mtime_ns
    again = run_recipe(recipe)
    built = {r["engine"]: r["cache_hit"] for r in again.rows if r["cache_hit"] is not None}
    assert built == {"tvm": True, "onnxruntime": True}
    assert os.stat(os.path.join(tvm_dir, "model.so")).st_mtime_ns == mtime
    assert len(again.frame()) == 3 and again.run_id != result.run_id


def test_a_failing_row_does_not_stop_the_others(recipe_dict):
    recipe = recipe_from_dict(recipe_dict(models=[f"{USER_MODELS}:unsupported_op", "digits_cnn"],
                                          engines=["tvm", "torch"]))
    result = run_recipe(recipe)
    rows = {(r["model"], r["engine"]): r for r in result.rows}
    failed = rows[("unsupported_op", "tvm")]
    assert failed["status"] == BUILD_FAILED and "erfinv" in failed["reason"]
    assert rows[("unsupported_op", "torch")]["status"] == OK
    assert rows[("digits_cnn", "tvm")]["status"] == OK
    assert len(result.frame()) == 4


def test_terminal_report_of_a_rerun_says_nothing_was_rebuilt(first_run):
    from rich.console import Console

    from tvmharness.report.terminal import render_run

    recipe, result = first_run
    again = run_recipe(recipe)
    console = Console(record=True, width=220)
    render_run(again.frame(), again.store.run(again.run_id), console)
    text = console.export_text()
    assert "cache: 2 of 2 builds reused, 1 of 1 trained models reused (nothing rebuilt)" in text
    assert "UNTUNED" in text and "baseline" in text
    assert again.provenance["git_commit"] in text and recipe.digest() in text
    assert "avx2" in text or "features none detected" in text


def test_torch_compile_row_agrees_with_eager(recipe_dict):
    result = run_recipe(recipe_from_dict(recipe_dict(engines=["torch", "torch-compile"])))
    rows = {r["engine"]: r for r in result.rows}
    compiled = rows["torch-compile"]
    assert compiled["status"] == OK, compiled["reason"]
    assert compiled["max_abs_diff"] < 1e-4 and compiled["top1_agreement"] == 1.0
    assert compiled["details"]["engine_notes"][0] == "torch.compile (inductor)"
    assert compiled["speedup_vs_baseline"] == pytest.approx(rows["torch"]["median_ms"] / compiled["median_ms"])


def test_paced_rows_span_the_asked_time(recipe_dict):
    recipe = recipe_from_dict(recipe_dict(engines=["onnxruntime"], measure={"warmup": 1, "repeats": 30, "threads": 2,
                                                                          "span_s": 1.5}))
    row = next(r for r in run_recipe(recipe).rows if r["engine"] == "onnxruntime")
    assert row["status"] == OK and len(row["samples_ms"]) == 30
    assert row["details"]["measure_seconds"] >= 1.5 * 29 / 30  # the last sample is due 29/30 of the span in


def test_a_moved_tvm_series_is_confirmed_by_an_a_b_and_the_others_are_measured_again(first_run):
    """What `nightly` does when latency moved: the TVM build and the build of the run it was compared
    with (here the same one, in the cache) timed in turns; ONNX Runtime's rows measured again."""
    from tvmharness.report.regress import SAME, SERIES, judge

    recipe, result = first_run
    again = run_recipe(recipe)
    frame = again.frame()
    moved = [({k: r[k] for k in SERIES}, result.run_id) for r in frame.to_dict("records") if r["engine"] in ("tvm", "onnxruntime")]
    confirm_latency(recipe, again.run_id, moved)
    confirmations = [r for r in again.store.runs() if r["provenance"].get("confirms_run") == again.run_id]
    assert len(confirmations) == 2
    ab_run, second_run = (c["id"] for c in confirmations)
    everything = again.store.frame()
    (ab,) = everything[everything["run_id"] == ab_run].to_dict("records")
    tonight = frame[frame["engine"] == "tvm"].iloc[0]
    reference = ab["details"]["ab_reference"]
    assert ab["engine"] == "tvm" and reference["run_id"] == result.run_id
    assert len(ab["samples_ms"]) == len(reference["samples_ms"]) == 30
    assert reference["artifact_dir"] == ab["details"]["artifact_dir"] == tonight["details"]["artifact_dir"]
    (v,) = [v for v in judge(everything, ab_run) if v.series["engine"] == "tvm"]
    assert v.evidence["ab_reference_run"] == result.run_id and v.aspects["latency"] == SAME, v.summary()
    assert abs(v.evidence["latency_change"]) < 0.05  # the same build, in turns: no change
    measured_again = set(everything.loc[everything["run_id"] == second_run, "engine"])
    assert measured_again == {"torch", "onnxruntime"}  # the engine, with the baseline it is measured against
