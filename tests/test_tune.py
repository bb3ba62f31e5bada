"""Tuning with the real MetaSchedule and XGBoost cost model, on tiny models and a handful of trials."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import USER_MODELS, run_cli
from tvmharness.engines import EngineOptions, get_engine
from tvmharness.models import load_model
from tvmharness.targets import resolve
from tvmharness.errors import HarnessError
from tvmharness.recipe import parse_duration
from tvmharness.tune import (RECORDS, STARTS, TARGET_FILE, TuneOptions, model_workloads, records_at_other_threads, records_dir,
                             records_hash, tune_model)

TINY = f"{USER_MODELS}:tiny_mlp"


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    target = resolve("x86", 2)
    model = load_model(TINY, root / "cache")
    result = tune_model(model, target, TuneOptions(trials=8), frontend="torch", cache_dir=root / "cache",
                        records_root=root / "tuning", threads=2)
    return root, target, model, result


def test_a_tiny_model_tunes_and_the_tuned_build_uses_the_records(tuned):
    root, target, model, result = tuned
    assert result.trials_run >= 8
    records = (result.records_dir / RECORDS).read_text().splitlines()
    assert len(records) >= 8
    assert any(t.best_s is not None for t in result.tasks)

    options = EngineOptions(cache_dir=root / "cache", threads=2, records_root=root / "tuning")
    session = get_engine("tvm").prepare(model, target, options)
    assert session.tuned is True
    tuning = session.details["tuning_records"]
    assert tuning["tasks_tuned"] >= 1 and tuning["sha256"] == result.records_hash
    assert 0 < tuning["trials"] <= len(records)
    untuned = get_engine("tvm-untuned").prepare(model, target, options)
    assert untuned.tuned is False
    x = np.random.default_rng(0).standard_normal((1, 16), dtype=np.float32)
    expected = model.torch_module(torch.from_numpy(x)).detach().numpy()
    (got,) = session.run((x,))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # compile finds the records under the output folder a recipe's [output] dir (or --output-dir) names
    from tests.conftest import run_cli

    proc = run_cli("compile", TINY, "--output-dir", str(root), "--threads", "2", "--json", cwd=root)
    assert proc.returncode == 0, proc.stderr
    built = json.loads(proc.stdout)
    assert built["manifest"]["tuning_records"]["sha256"] == result.records_hash and built["cache_hit"]
    assert Path(built["dir"]).parent == root / "artifacts"


def test_an_untuned_build_points_at_the_records_tuned_at_another_thread_count(tuned):
    root, target, model, result = tuned
    options = EngineOptions(cache_dir=root / "cache", threads=1, records_root=root / "tuning")
    session = get_engine("tvm").prepare(model, resolve("x86", 1), options)
    assert session.tuned is False  # records for 2 threads do not fit 1
    assert session.details["records_at_other_threads"] == {str(result.records_dir): 2}
    assert any(f"{result.records_dir} holds records for x86 tuned at thread count 2" in note for note in session.notes)
    assert "records_at_other_threads" not in get_engine("tvm").prepare(model, target, options).details

    from tvmharness.pipeline import run_recipe
    from tvmharness.recipe import recipe_from_dict
    from tvmharness.report.terminal import footnotes

    recipe = recipe_from_dict({"name": "one-thread", "models": [TINY], "engines": ["tvm"], "targets": ["x86"],
                               "measure": {"warmup": 1, "repeats": 30, "threads": 1},
                               "output": {"dir": str(root), "store": str(root / "one-thread.db")}})
    lines = footnotes(run_recipe(recipe).frame())
    assert (f"UNTUNED: {result.records_dir} holds records for x86 tuned at thread count 2, which builds for another "
            "thread count cannot use: measure at --threads 2 (or [measure] threads = 2 in the recipe)") in "\n".join(lines), lines
    # A folder is named only to a model it holds records for: none of one_linear's workloads is tuned.
    one_thread, other = resolve("x86", 1), load_model(f"{USER_MODELS}:one_linear", root / "cache")
    assert records_at_other_threads(root / "tuning", one_thread, lambda: model_workloads(
        model, one_thread, "torch", root / "cache")) == [(result.records_dir, 2)]
    assert records_at_other_threads(root / "tuning", one_thread, lambda: model_workloads(
        other, one_thread, "torch", root / "cache")) == []


def test_a_model_none_of_whose_tasks_were_tuned_gets_the_untuned_build(tuned):
    root, target, _, _ = tuned
    other = load_model(f"{USER_MODELS}:one_linear", root / "cache")  # shares no workload with tiny_mlp
    options = EngineOptions(cache_dir=root / "cache", threads=2, records_root=root / "tuning")
    with_records = get_engine("tvm").build(other, target, options)
    untuned = get_engine("tvm-untuned").build(other, target, options)
    assert not with_records.tuned and with_records.dir == untuned.dir  # the untuned build itself, built once


def test_a_row_names_the_records_its_build_read_not_the_whole_folder(tuned, tmp_path):
    """Tuning another model into the folder changes the folder, not what tiny_mlp's build reads: its
    rows keep naming the same records (a nightly would blame the other model's tune on it)."""
    import shutil

    root, target, model, result = tuned
    shutil.copytree(root / "tuning", tmp_path / "tuning")
    options = EngineOptions(cache_dir=root / "cache", threads=2, records_root=tmp_path / "tuning")
    before = get_engine("tvm").prepare(model, target, options).details["tuning_records"]["sha256"]
    folder_before = records_hash(tmp_path / "tuning" / result.records_dir.name)
    other = load_model(f"{USER_MODELS}:one_linear", root / "cache")  # shares no workload with tiny_mlp
    tuned_other = tune_model(other, target, TuneOptions(trials=2), frontend="torch", cache_dir=root / "cache",
                             records_root=tmp_path / "tuning", threads=2)
    assert tuned_other.trials_run >= 1 and records_hash(tmp_path / "tuning" / result.records_dir.name) != folder_before
    session = get_engine("tvm").prepare(model, target, options)
    assert session.details["tuning_records"]["sha256"] == before == result.records_hash
    assert session.cache_hit  # nor is the build redone: it is keyed by the records it reads


def test_a_workload_line_cut_short_leaves_the_build_tuned(tuned, tmp_path):
    """A tune killed while appending a workload leaves half a line: the records of the others still
    count, and the build still reads them (not an untuned build with nothing said)."""
    import shutil

    from tvmharness.tune import WORKLOADS, model_records_hash

    root, target, model, result = tuned
    directory = tmp_path / "tuning" / result.records_dir.name
    shutil.copytree(result.records_dir, directory)
    workloads = model_workloads(model, target, "torch", root / "cache")
    whole = model_records_hash(directory, workloads)
    with (directory / WORKLOADS).open("a") as file:
        file.write('["0x1234", "eyJ')
    assert whole is not None and model_records_hash(directory, workloads) == whole
    options = EngineOptions(cache_dir=root / "cache", threads=2, records_root=tmp_path / "tuning")
    session = get_engine("tvm").prepare(model, target, options)
    assert session.tuned is True and session.details["tuning_records"]["sha256"] == result.records_hash


def test_a_second_model_reuses_shared_workloads(tuned):
    root, target, _, first = tuned
    known_before = {t.name for t in first.tasks if t.best_s is not None}
    other = load_model(f"{USER_MODELS}:mlp_other_head", root / "cache")
    result = tune_model(other, target, TuneOptions(trials=4), frontend="torch", cache_dir=root / "cache",
                        records_root=root / "tuning", threads=2)
    assert result.skipped_known, "the shared first layer should have been known"
    shared = [t for t in result.tasks if t.name in result.skipped_known]
    assert all(t.known_records > 0 and t.trials == 0 for t in shared)
    assert set(result.skipped_known) <= known_before | {t.name for t in first.tasks}
    new = [t for t in result.tasks if t.name not in result.skipped_known]
    assert new and sum(t.trials for t in new) == result.trials_run > 0


def test_compression_variants_are_tuned_as_what_they_compile_to(tmp_path):
    """A user compresses, then tunes: int8 compiles to integer kernels that fp32's records do not
    cover, so the variant is tuned itself and its build uses those records. A technique that does not
    fit the model is skipped with its reason, and TVM's native warnings stay out of the terminal."""
    from tvmharness.compress import apply_variant, parse_variant

    proc = run_cli("tune", "--model", TINY, "--variant", "int8", "--variant", "distill", "--trials", "8",
                   "--no-measure", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (summary,) = json.loads(proc.stdout)["tune"]
    assert summary["variant"] == "int8" and summary["trials_run"] >= 8
    assert "tiny_mlp / distill: not tuned: distillation trains a smaller digits CNN as the student, which only digits_cnn's task fits" in " ".join(proc.stderr.split())
    assert "Warning" not in proc.stderr and "IndexError" not in proc.stderr
    target = resolve("x86", 2)
    int8 = apply_variant(load_model(TINY, tmp_path / "results/cache"), parse_variant("int8"), tmp_path / "results/cache")
    options = EngineOptions(cache_dir=tmp_path / "results/cache", threads=2, records_root=tmp_path / "results/tuning")
    tuning = get_engine("tvm").prepare(int8, target, options).details["tuning_records"]
    assert tuning["tasks_tuned"] >= 1
    # The records hold kernels, not calibrations: int8 calibrated on the user's own samples (other
    # scales and zero points in every layer) reuses each of them.
    from tvmharness.pipeline import load_models
    from tvmharness.recipe import recipe_from_dict

    rng = np.random.default_rng(1)
    np.savez(tmp_path / "train.npz", x=(4 * rng.normal(size=(32, 16)) + 1).astype(np.float32))
    (own,) = load_models(recipe_from_dict({"name": "own", "models": [TINY], "data": {"tiny_mlp": {"train": str(tmp_path / "train.npz")}}}))
    recalibrated = apply_variant(own, parse_variant("int8"), tmp_path / "results/cache")
    assert recalibrated.digest != int8.digest
    again = get_engine("tvm").prepare(recalibrated, target, options).details["tuning_records"]
    assert (again["tasks_tuned"], again["tasks"]) == (tuning["tasks_tuned"], tuning["tasks"])


def test_a_preset_file_is_tuned_and_then_measured_as_that_file(tmp_path):
    """`tune --target my.toml` measures what it tuned: the file's preset, not a built-in looked up by its name."""
    from tvmharness.targets import TARGETS_DIR

    preset = tmp_path / "my.toml"
    preset.write_text((TARGETS_DIR / "x86-generic.toml").read_text().replace('name = "x86-generic"', 'name = "my-generic"'))
    proc = run_cli("tune", "--model", TINY, "--target", str(preset), "--trials", "4", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = {r["engine"]: r for r in json.loads(proc.stdout)["rows"] if r["target"] == "my-generic"}
    assert rows["tvm"]["status"] == rows["tvm-untuned"]["status"] == "ok", rows
    assert rows["tvm"]["target_spec"]["cpu"] == "haswell" and rows["tvm"]["tuned"]


def _wait_for_records(path: Path, proc, timeout: float = 240) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if path.is_file() and len(path.read_text().splitlines()) >= 1:
            return len(path.read_text().splitlines())
        time.sleep(0.5)
    raise AssertionError("the tune wrote no record in time")


def test_a_killed_tune_resumes_without_losing_records(tmp_path):
    target = resolve("x86", 2)
    record_file = records_dir(tmp_path / "results" / "tuning", target) / RECORDS
    # --resume with nothing to resume starts a new tune, and says so.
    args = [sys.executable, "-m", "tvmharness", "tune", "--model", TINY, "--trials", "16", "--resume", "--no-measure"]
    log = tmp_path / "first.log"
    scratch = tmp_path / "tmp"  # the tunes' temporary folder
    scratch.mkdir()
    with open(log, "w") as stderr:
        proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
                                env=dict(os.environ, TMPDIR=str(scratch)))
        try:
            _wait_for_records(record_file, proc)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # kill -9, the builder and runner workers with it
            proc.wait()
    assert "nothing to resume: no interrupted tune of tiny_mlp" in log.read_text(), log.read_text()
    before = record_file.read_text().splitlines()
    assert before
    [left] = scratch.glob(f"tvmharness-candidates-{proc.pid}-*")  # the killed tune could not remove it

    resumed = run_cli("tune", "--model", TINY, "--resume", "--no-measure", "--json", cwd=tmp_path,
                      env={"TMPDIR": str(scratch)})
    assert resumed.returncode == 0, resumed.stderr
    assert not left.exists()  # the next tune did
    after = record_file.read_text().splitlines()
    assert after[: len(before)] == before  # nothing lost, nothing rewritten
    summary = json.loads(resumed.stdout)["tune"][0]
    assert summary["trials_run"] + len(before) >= 16 or summary["stopped"]
    assert summary["notes"][0].startswith("resumed the tune started") and "of its 16 trials were done" in summary["notes"][0]

    again = run_cli("tune", "--model", TINY, "--resume", "--no-measure", "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["tune"][0]["trials_run"] == 0
    assert record_file.read_text().splitlines() == after

    more = run_cli("tune", "--model", TINY, "--resume", "--trials", "20", "--no-measure", "--json", cwd=tmp_path)
    assert more.returncode == 0, more.stderr
    assert json.loads(more.stdout)["tune"][0]["trials_run"] >= 4  # --trials gives the session a new total
    assert record_file.read_text().splitlines()[: len(after)] == after


def test_a_resume_counts_the_trials_its_records_show_though_the_kill_came_before_its_progress_was_saved(tuned, tmp_path):
    """MetaSchedule writes a batch's records, then the callback that saves the session's progress runs
    (after the cost model's update: seconds): a kill -9 in between leaves records the session does not count."""
    import shutil

    root, target, model, result = tuned
    copy = records_dir(tmp_path / "tuning", target)
    shutil.copytree(result.records_dir, copy)
    (session_file,) = (copy / "sessions").glob("tiny_mlp-*.json")
    session = json.loads(session_file.read_text())
    done = session["trials_done"]  # each trial is a record, of its task's workload (the file may hold other models')
    assert done >= 8
    # as saved before its first batch was counted, with the records of that tune written
    session_file.write_text(json.dumps(session | {"trials_done": 0, "records_bytes_at_save": 0}))
    again = tune_model(model, target, TuneOptions(trials=8, resume=True), frontend="torch", cache_dir=root / "cache",
                       records_root=tmp_path / "tuning", threads=2)
    assert again.trials_run == 0 and again.stopped == "nothing to do: the budget of 8 trials is spent", again.stopped
    assert f"its {done} trials reach the 8 asked, so none are left" in again.notes[0], again.notes
    # Saved after its third record, then another tune (a variant, a model sharing layers) began
    # appending at that very byte: the records from there on are its trials, not this session's.
    third = sum(len(line) for line in (copy / RECORDS).read_bytes().splitlines(keepends=True)[:3])
    (copy / STARTS).write_text(f"0\n{third}\n")
    session_file.write_text(json.dumps(session | {"trials": 3, "trials_done": 3, "records_bytes_at_save": third,
                                                  "start_mark": 0}))
    counted = tune_model(model, target, TuneOptions(trials=3, resume=True), frontend="torch", cache_dir=root / "cache",
                         records_root=tmp_path / "tuning", threads=2)
    assert counted.trials_run == 0 and "its 3 trials reach the 3 asked, so none are left" in counted.notes[0], counted.notes
    # an offset saved before records were set aside (the file then shorter) reads from the next whole line, or nothing
    from tvmharness.tune import _record_workloads

    whole = _record_workloads(copy)
    assert _record_workloads(copy, third - 5) == whole[3:] and _record_workloads(copy, 10**9) == []


def test_a_ctrl_c_is_only_noted_and_ends_the_search_where_raising_unwinds_tvm_cleanly():
    """Raising KeyboardInterrupt wherever the signal lands can unwind through TVM's C++ frames into
    std::terminate (a segfault); the handler notes it, and MetaSchedule's next call into Python raises."""
    from tvm.s_tir import meta_schedule as ms

    from tvmharness.tune import _noting_interrupts, _stopping_on

    before = signal.getsignal(signal.SIGINT)
    with _noting_interrupts() as interrupted:
        runner = _stopping_on(interrupted, ms.runner.LocalRunner(), "run")
        assert list(runner.run([])) == []  # called as MetaSchedule calls it: through its C++ half
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)  # the handler runs, and raises nothing
        assert interrupted()
        with pytest.raises(RuntimeError, match="interrupted"):  # a Python exception, back through the C++ call
            runner.run([])
    assert signal.getsignal(signal.SIGINT) is before


def test_an_output_folder_that_is_a_file_or_not_writable_is_refused_before_any_import(tmp_path):
    (tmp_path / "afile").write_text("")
    unwritable = Path("/sys/kernel")  # not even root may write there
    for folder, needle in ((tmp_path / "afile", f"{tmp_path / 'afile'} is a file, not a folder"),
                           (tmp_path / "afile" / "sub", f"{tmp_path / 'afile'} is a file, not a folder"),
                           *([(unwritable, f"cannot use {unwritable / 'tuning'}")] if not os.access(unwritable, os.W_OK) else [])):
        started = time.perf_counter()
        proc = run_cli("tune", "--model", "digits_cnn", "--trials", "4", "--no-measure", "--output-dir", str(folder), cwd=tmp_path)
        assert proc.returncode == 2 and needle in " ".join(proc.stderr.split()), proc.stderr
        assert "fix:" in proc.stderr and "not tuned" not in proc.stderr and time.perf_counter() - started < 30


def test_a_file_in_the_records_folder_s_place_is_named_and_more_threads_than_cores_are_said(tmp_path):
    """A file where the target's records folder goes: the usage error of a folder given as a file (it was
    "FileExistsError: [Errno 17]", exit 1). And threads past this host's cores: said before the tune (its
    candidates would be timed oversubscribed, under records kept for that thread count)."""
    from tvmharness.provenance import usable_cores

    threads = usable_cores() + 7
    folder = records_dir(tmp_path / "results" / "tuning", resolve("x86", threads))
    folder.parent.mkdir(parents=True)
    folder.write_text("")
    proc = run_cli("tune", "--model", "digits_cnn", "--trials", "4", "--threads", str(threads), "--no-measure", "--json",
                   cwd=tmp_path)
    said = " ".join(proc.stderr.split())
    assert proc.returncode == 2 and f"{folder.relative_to(tmp_path)} is a file, not a folder" in said and "Errno" not in said, proc.stderr
    assert json.loads(proc.stdout)["failed"][0]["exit_code"] == 2
    assert f"note: {threads} threads, more than the {usable_cores()} usable cores here" in said


def test_a_time_budget_or_a_ctrl_c_ends_a_tune_cleanly_and_keeps_its_records(tmp_path):
    record_file = records_dir(tmp_path / "results" / "tuning", resolve("x86", 2)) / RECORDS
    scratch = tmp_path / "tmp"  # the tunes' temporary folder: the candidates of a batch cut short are removed too
    scratch.mkdir()
    # The budget runs out while MetaSchedule is joining a task's batch (it crashed there).
    budget = run_cli("tune", "--model", TINY, "--trials", "200", "--time-budget", "5s", "--no-measure", "--json",
                     cwd=tmp_path, env={"TMPDIR": str(scratch)})
    assert budget.returncode == 0, budget.stderr
    summary = json.loads(budget.stdout)["tune"][0]
    assert summary["stopped"] == "time budget of 5 s reached" and 0 < summary["trials_run"] < 200
    kept = len(record_file.read_text().splitlines())
    assert kept > 0

    args = [sys.executable, "-m", "tvmharness", "tune", "--model", TINY, "--trials", "400", "--no-measure"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=dict(os.environ, TMPDIR=str(scratch)))
    deadline = time.time() + 240
    while time.time() < deadline and len(record_file.read_text().splitlines()) <= kept:
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
    _, stderr = proc.communicate(timeout=120)
    # 130, or ended by the SIGINT itself when one reaches it again on the way out (a shell says 130 too)
    assert proc.returncode in (130, -signal.SIGINT), (proc.returncode, stderr)
    assert "interrupted" in stderr and "internal error" not in stderr, stderr
    assert "nothing was measured" in stderr and " stored" not in stderr  # --no-measure: it measured nothing, and says so
    assert "the tuning records written so far are kept" in " ".join(stderr.split())  # (trials were: else it says none)
    assert len(record_file.read_text().splitlines()) > kept  # what it tuned before the Ctrl-C is kept
    assert not [p.name for p in scratch.iterdir() if p.name.startswith("tvmharness")]  # (torch keeps a cache there)


def test_bad_tune_inputs_give_clear_errors_and_leave_the_records_intact(tmp_path):
    for args, needle in [(("--trials", "0"), "'--trials'"), (("--target", "sparc"), "unknown target 'sparc'")]:
        proc = run_cli("tune", "--model", TINY, *args, "--no-measure", cwd=tmp_path)
        assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr

    target = resolve("x86", 2)
    directory = records_dir(tmp_path / "results" / "tuning", target)
    directory.mkdir(parents=True)
    corrupt = b'{"this is": "not a MetaSchedule record"}\n'
    (directory / RECORDS).write_bytes(corrupt)
    proc = run_cli("tune", "--model", TINY, "--trials", "4", "--no-measure", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "corrupt or foreign at line 1" in proc.stderr and "Traceback" not in proc.stderr
    assert (directory / RECORDS).read_bytes() == corrupt

    (directory / TARGET_FILE).write_text("not json")
    proc = run_cli("tune", "--model", TINY, "--trials", "4", "--no-measure", cwd=tmp_path)
    assert proc.returncode == 2 and "target.json is corrupt" in proc.stderr and "internal error" not in proc.stderr, proc.stderr



def test_a_trial_count_below_one_asks_for_one_or_more():
    with pytest.raises(HarnessError) as refused:  # a library caller's: the command line's is refused as --trials
        TuneOptions(trials=0)
    assert refused.value.fix == "give 1 or more trials"


def test_durations_read_as_people_write_them():
    assert parse_duration("90s") == 90 and parse_duration("30m") == 1800
    assert parse_duration("1h30m") == 5400 and parse_duration("45") == 45 and parse_duration(None) is None
    assert parse_duration("14d") == 14 * 86400
    with pytest.raises(HarnessError, match="leaves no time"):
        parse_duration("0m")
    with pytest.raises(HarnessError, match="cannot read the duration"):
        parse_duration("soon")
    # A recipe's durations are read when it loads, not hours later when a tune or a kit job needs them.
    from tvmharness.recipe import recipe_from_dict

    for section, key in (("tune", "time_budget"), ("devices", "wait"), ("devices", "job_timeout")):
        with pytest.raises(HarnessError, match=f"'{section}.{key}': cannot read the duration '30 minutes'"):
            recipe_from_dict({"models": ["digits_cnn"], section: {key: "30 minutes"}}, "(test)")
    proc = run_cli("tune", "--model", TINY, "--time-budget", "soon", "--no-measure")
    assert proc.returncode == 2 and "'--time-budget': cannot read the duration 'soon'" in proc.stderr, proc.stderr



def test_the_library_s_defaults_are_a_recipe_s():
    """A notebook that makes its own TuneOptions or Rack tunes and times kit jobs out as a recipe does."""
    from tvmharness.recipe import Devices, Tune
    from tvmharness.remote.rack import Rack
    from tvmharness.remote.tracker import Address

    tune, devices, options = Tune(), Devices(), TuneOptions()
    assert ((options.trials, options.patience, options.builder_timeout_s, options.population)
            == (tune.trials, tune.patience, tune.builder_timeout, tune.population))
    rack = Rack(Address("127.0.0.1", 9190), "x86")
    assert ((rack.job_timeout_s, rack.wait_s, rack.retries)
            == (parse_duration(devices.job_timeout), parse_duration(devices.wait), devices.retries))
    # a candidate's run on a kit (an upload, an emulated kit) is given longer than one here, as the command line's is
    assert (options.runner_timeout_s, TuneOptions(tracker=rack.tracker, key="x86").runner_timeout_s) == (30.0, 120.0)


def test_a_tune_that_fails_does_not_stop_the_others(tmp_path):
    """An overnight list of tunes: the model that cannot be made and the one that cannot be imported
    into TVM are reported, the other is tuned."""
    proc = run_cli("tune", "--model", f"{USER_MODELS}:weights_gone", "--model", f"{USER_MODELS}:does_not_export",
                   "--model", TINY, "--trials", "4", "--no-measure", "--json", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr  # the failed ones' own exit code: models that cannot be made or exported
    doc = json.loads(proc.stdout)
    assert [s["model"] for s in doc["tune"]] == ["tiny_mlp"] and doc["tune"][0]["trials_run"] >= 4
    gone, failure = doc["failed"]
    assert gone["model"] == "weights_gone" and gone["target"] is None and "checkpoint.pt is missing" in gone["error"]
    assert failure["model"] == "does_not_export" and failure["target"] == "x86" and "export" in failure["error"]
    assert "2 tune(s) failed" in " ".join(proc.stderr.split()) and "Traceback" not in proc.stderr


def test_a_tune_of_which_nothing_was_tuned_measures_nothing(tmp_path):
    """Tuned vs untuned TVM when no tune succeeded would be two untuned rows: not measured, and said."""
    proc = run_cli("tune", "--model", f"{USER_MODELS}:does_not_export", "--trials", "4", "--output-dir", str(tmp_path / "r"),
                   "--store", str(tmp_path / "h.db"), cwd=tmp_path)
    assert proc.returncode == 1 and "not measured: no tune succeeded" in proc.stderr, proc.stderr
    from tvmharness.results import Store

    assert not (tmp_path / "h.db").exists() or Store(str(tmp_path / "h.db")).runs() == []


def test_a_cut_short_last_record_is_set_aside_only_when_no_tune_is_writing(tmp_path):
    """A line cut short by a kill is moved aside; one a running tune is still writing is left alone."""
    from tvmharness.tune import WORKLOADS, _exclusive, check_records

    directory = tmp_path / "records"
    directory.mkdir()
    (directory / WORKLOADS).write_text('["h", "x"]\n')
    cut = '[0, [1, 2, 3, 4]]\n[0, [1, 2'
    (directory / RECORDS).write_text(cut)
    with _exclusive(directory):  # a tune holds the folder: its append may be under way
        check_records(directory)
        with pytest.raises(HarnessError, match="another tune is writing") as caught:  # a second tune of it waits its turn
            with _exclusive(directory):
                pass
        assert caught.value.exit_code == 75  # (later, the same command may well work: CI can retry on it)
    assert (directory / RECORDS).read_text() == cut and not list(directory.glob("*.interrupted-*"))
    check_records(directory)  # no tune: the kill's leftover goes aside, every complete record stays
    assert (directory / RECORDS).read_text() == "[0, [1, 2, 3, 4]]\n"
    assert [p.read_text() for p in directory.glob(f"{RECORDS}.interrupted-*")] == ["[0, [1, 2"]
    # a blank line (an earlier repair's) goes; a whole last record without its newline stays
    (directory / RECORDS).write_text("[0, [1, 2, 3, 4]]\n\n[0, [5, 6, 7, 8]]")
    check_records(directory)
    assert (directory / RECORDS).read_text() == "[0, [1, 2, 3, 4]]\n[0, [5, 6, 7, 8]]\n"


def test_a_records_file_cut_in_its_first_line_is_emptied_and_read_and_one_being_appended_is_waited_for(tuned, tmp_path):
    """A disk full during a tune's first append left a first line cut short: set aside, the file was
    left a lone newline, on which MetaSchedule's loader dies (a segfault, every later build). It is
    left empty now, and a folder of that damage is repaired. A reader while a tune appends waits for
    the record to be whole, then says so if it stays cut short (not "an operator TVM cannot build")."""
    import shutil

    from tvmharness.tune import WORKLOADS, _exclusive, open_database

    root, target, model, result = tuned
    directory = tmp_path / "tuning" / result.records_dir.name
    shutil.copytree(result.records_dir, directory)
    if shutil.which("git"):  # records shared through a project's git: only they are changes to commit, not a tune's own files
        subprocess.run(["git", "init", "-q", str(directory)], check=True)
        listed = subprocess.run(["git", "-C", str(directory), "status", "--porcelain", "--untracked-files=all"],
                                capture_output=True, text=True, check=True).stdout
        assert {line[3:] for line in listed.splitlines()} == {".gitignore", RECORDS, WORKLOADS, TARGET_FILE}, listed
        shutil.rmtree(directory / ".git")
    good = (directory / RECORDS).read_text()
    for damaged in (good[:700], "\n"):
        (directory / RECORDS).write_text(damaged)
        open_database(directory, target)  # MetaSchedule reads it: no crash
        assert (directory / RECORDS).read_text() == ""
    assert [p.read_text() for p in directory.glob(f"{RECORDS}.interrupted-*")] == [good[:700]]
    (directory / RECORDS).write_text(good + good.splitlines()[0][:500])
    with _exclusive(directory), pytest.raises(HarnessError, match="a tune is writing .* its last record stayed cut short"):
        open_database(directory, target)
    assert (directory / RECORDS).read_text().startswith(good)  # the tune's line is not cut by a reader


def test_records_that_do_not_replay_are_set_aside_and_the_others_used(tuned, tmp_path):
    """MetaSchedule files a task's records under the first structurally equal workload, names aside: a
    second model's trace naming its own block cannot be replayed there, and the loader would refuse the
    whole folder (every later build of the target failing). Such records are moved to a side file."""
    import re
    import shutil

    from tvmharness.tune import UNREPLAYABLE, open_database

    root, target, model, result = tuned
    directory = tmp_path / "tuning" / result.records_dir.name
    shutil.copytree(result.records_dir, directory)
    good = (directory / RECORDS).read_text()
    first = good.splitlines()[0]
    renamed = re.sub(r'"GetSBlock",\[\],\["[^"]+"', '"GetSBlock",[],["lv5_red"', first, count=1)
    assert renamed != first
    with open(directory / RECORDS, "a") as records:
        records.write(renamed + "\n")
    open_database(directory, target)
    assert (directory / RECORDS).read_text() == good and (directory / UNREPLAYABLE).read_text() == renamed + "\n"
    options = EngineOptions(cache_dir=tmp_path / "cache", threads=2, records_root=tmp_path / "tuning")
    assert get_engine("tvm").prepare(model, target, options).tuned is True


def test_an_unreadable_progress_file_is_named_and_resume_says_what_to_do(tmp_path):
    target = resolve("x86", 2)
    model = load_model(TINY, tmp_path / "cache")
    result = tune_model(model, target, TuneOptions(trials=200, time_budget_s=3), frontend="torch",
                        cache_dir=tmp_path / "cache", records_root=tmp_path / "tuning", threads=2)
    assert result.stopped and result.trials_run < 200
    (session,) = (result.records_dir / "sessions").glob("tiny_mlp-*.json")  # what --resume continues
    assert not list(session.parent.glob("*.partial*"))  # written whole, then put in place
    session.write_text('{"trials": 20, "tri')  # as a disk-full or a copy cut short leaves it
    with pytest.raises(HarnessError, match="progress file .* is unreadable") as err:
        tune_model(model, target, TuneOptions(trials=20, resume=True), frontend="torch", cache_dir=tmp_path / "cache",
                   records_root=tmp_path / "tuning", threads=2)
    assert "tune without --resume" in err.value.fix


def test_records_copied_without_their_target_file_are_checked_by_the_target_each_record_names(tuned, tmp_path):
    """x86 records copied into an arm folder without target.json were taken as arm's, and the arm
    build called tuned; each record names the target it was tuned for."""
    import shutil

    from tvmharness.tune import check_records

    _, target, _, result = tuned
    for other, refused in ((target, False), (resolve("arm", 2), True)):
        copy = records_dir(tmp_path / other.name, other)
        copy.mkdir(parents=True)
        for name in (RECORDS, "database_workload.json"):
            shutil.copy(result.records_dir / name, copy / name)
        if refused:
            with pytest.raises(HarnessError, match="which has no target.json\\) were tuned for target .*'mcpu'"):
                check_records(copy, other)
            assert not (copy / TARGET_FILE).exists()
        else:
            check_records(copy, other)  # its own target's records: used


def test_a_tune_keeps_the_logs_of_the_newest_tunes_only(tmp_path):
    """A nightly tune adds a logs folder under runs/ each night: the oldest go, the records stay."""
    from tvmharness.tune import RUN_LOGS_KEPT, _forget_old_runs

    runs = tmp_path / "runs"
    names = [f"202611{day:02d}-020000" for day in range(1, RUN_LOGS_KEPT + 6)]
    for name in names:
        (runs / name / "logs").mkdir(parents=True)
    _forget_old_runs(runs)
    assert sorted(p.name for p in runs.iterdir()) == names[-(RUN_LOGS_KEPT - 1):]  # with tonight's: RUN_LOGS_KEPT
