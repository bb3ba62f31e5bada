"""Dev kits on loopback: a real TVM tracker, kits served by `tvmharness devkit serve`, and the
emulated aarch64 kit where qemu-user and the aarch64 cross compiler are installed."""

import contextlib
import json
import shutil
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from tvmharness.errors import HarnessError
from tvmharness.pipeline import RUN_FAILED, OK, run_recipe
from tvmharness.recipe import recipe_from_dict
from tvmharness.remote.loopback import LoopbackRack, free_port, stop
from tvmharness.remote.tracker import parse_address, summary
from tvmharness.results import Store
from tvmharness.report.terminal import footnotes

from .conftest import NO_CROSS_LINK, ROOT, USER_MODELS, run_cli

HAS_EMULATOR = shutil.which("qemu-aarch64-static") and NO_CROSS_LINK is None


@pytest.fixture(scope="module")
def rack():
    """A tracker, two x86 kits under key "x86", and the emulated aarch64 kit when it can run here."""
    with LoopbackRack() as loopback:
        loopback.serve("x86", 2)
        if HAS_EMULATOR:
            loopback.emulate()
        yield loopback


def _recipe(workdir, tracker, **extra) -> dict:
    return {"name": "kits", "models": ["digits_cnn"], "engines": ["tvm", "torch"],
            "measure": {"warmup": 1, "repeats": 30, "threads": 2},
            "devices": {"tracker": tracker, "wait": "20s", "job_timeout": "3m"},
            "output": {"dir": str(workdir), "store": str(workdir / "kits.db")}} | extra


def test_tracker_and_kits_listen_on_loopback_only(rack):
    listening = []
    for process in rack.processes:
        for p in [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]:
            listening += [c.laddr.ip for c in p.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
    assert len(listening) >= 3  # the tracker and at least two kits
    assert set(listening) == {"127.0.0.1"}


def test_devices_lists_the_kits_per_key(rack):
    """Each kit with what it said of itself when it registered: a busy one too (no session is needed),
    and TVM's own server, which says nothing, as unknown."""
    from tvmharness.remote import EMULATED_KEY
    from tvmharness.remote.tracker import request_kit

    plain, port = rack.serve_stock("stock")
    try:
        session, held = request_kit(parse_address(rack.tracker), "x86", wait_s=30, session_timeout_s=60)
        done = run_cli("devices", "--tracker", rack.tracker, "--json")
        table = run_cli("devices", "--tracker", rack.tracker)
        del session  # (the kit is free again once the session ends)
    finally:
        stop(plain)
    assert done.returncode == 0, done.stderr
    keys = {k["key"]: k for k in json.loads(done.stdout)["keys"]}
    assert len(keys["x86"]["kits"]) == 2 and keys["x86"]["busy"] >= 1
    assert all(kit.startswith("127.0.0.1:") for kit in keys["x86"]["kits"])
    x86 = {kit["address"]: kit for kit in keys["x86"]["kit_info"]}
    assert set(x86) == set(keys["x86"]["kits"]) and held in x86
    assert all(kit | {"address": ""} == {"address": "", "arch": "x86_64", "bits": 64, "emulated": False, "emulator": None,
                                         "threads": 1} for kit in x86.values()), x86
    [stock] = keys["stock"]["kit_info"]
    assert stock == {"address": f"127.0.0.1:{port}", "arch": None, "bits": None, "emulated": None, "emulator": None,
                     "threads": None}
    if HAS_EMULATOR:
        [emulated] = keys[EMULATED_KEY]["kit_info"]
        assert emulated["arch"] == "aarch64" and emulated["emulated"] is True, emulated
        assert emulated["emulator"].startswith("qemu-user"), emulated
    assert table.returncode == 0, table.stderr
    cells = [[cell.strip() for cell in line.split("│")[6:10]] for line in table.stdout.splitlines() if line.startswith("│")]
    assert [held, "x86_64", "no", "1"] in cells and [f"127.0.0.1:{port}", "?", "?", "?"] in cells, table.stdout


def test_a_tiny_model_runs_on_the_kits_and_agrees_with_the_host_baseline(rack, workdir):
    targets = ["x86-rpc", "arm"] if HAS_EMULATOR else ["x86-rpc"]
    result = run_recipe(recipe_from_dict(_recipe(workdir, rack.tracker, targets=targets)))
    rows = {r["target"]: r for r in result.rows}
    baseline = rows["x86"]  # the host runs the baseline when the recipe names only remote targets
    assert baseline["is_baseline"] and baseline["engine"] == "torch"
    for target in targets:
        row = rows[target]
        assert row["status"] == OK, row["reason"]
        assert row["details"]["kit"] in rack.kits(row["details"]["rack"]["key"])
        assert row["accuracy"] == pytest.approx(baseline["accuracy"], abs=0.01)
        assert row["max_abs_diff"] < 1e-3 and len(row["samples_ms"]) == 30
    if HAS_EMULATOR:
        assert rows["arm"]["details"]["kit_info"]["machine"] == "aarch64"
        assert rows["arm"]["details"]["kit_info"]["cuda"] is None  # kits say whether they have a GPU
        assert "qemu" in rows["arm"]["details"]["emulated"]
        assert not rows["x86-rpc"]["details"].get("emulated")
    stored = result.frame()
    assert set(stored["target"]) == {"x86", *targets}
    # the CSV names the kit that measured a row beside the host that built it
    import csv
    import io

    from tvmharness.report.summary import to_csv

    by_target = {r["target"]: r for r in csv.DictReader(io.StringIO(to_csv(stored, [])))}
    kit_row = by_target["x86-rpc"]
    assert kit_row["kit"] == rows["x86-rpc"]["details"]["kit"] and kit_row["kit_key"] == "x86"
    assert kit_row["kit_machine"] == "x86_64" and kit_row["kit_hostname"]
    assert by_target["x86"]["kit"] == "" and by_target["x86"]["kit_machine"] == ""


def test_a_variant_back_from_its_kit_before_fp32_is_still_compared_with_fp32(rack, workdir, monkeypatch):
    """Kits finish in any order: here every result is handed over in reverse (the variant first), and
    the variant's speed-up and size are still against fp32 on the same kit target, not the host's."""
    import tvmharness.pipeline as pipeline

    class ReversedRack(pipeline.Rack):
        def run_all(self, jobs, on_result, on_stage=None):
            came_back = []
            super().run_all(jobs, lambda job, outcome: came_back.append((job, outcome)), on_stage)
            for job, outcome in reversed(came_back):
                on_result(job, outcome)

    monkeypatch.setattr(pipeline, "Rack", ReversedRack)
    # two models: one's fp32 coming back must not release the other's variant
    result = run_recipe(recipe_from_dict(_recipe(workdir, rack.tracker, targets=["x86-rpc"], engines=["tvm"],
                                                 models=["digits_cnn", f"{USER_MODELS}:tiny_mlp"],
                                                 variants=["fp32", "prune:0.5"])))
    rows = {(r["model"], r["target"], r["variant"]): r for r in result.rows}
    for model in ("digits_cnn", "tiny_mlp"):
        fp32, pruned = rows[(model, "x86-rpc", "fp32")], rows[(model, "x86-rpc", "prune:0.5")]
        assert fp32["status"] == pruned["status"] == OK
        assert pruned["details"]["speedup_vs_fp32"] == pytest.approx(fp32["median_ms"] / pruned["median_ms"])
        assert pruned["details"]["size_ratio"] == pytest.approx(pruned["artifact_bytes"] / fp32["artifact_bytes"])
    assert [(r["model"], r["variant"]) for r in result.rows if r["target"] == "x86-rpc"] == [
        ("tiny_mlp", "fp32"), ("tiny_mlp", "prune:0.5"), ("digits_cnn", "fp32"), ("digits_cnn", "prune:0.5")]


@pytest.mark.skipif(not HAS_EMULATOR, reason=f"qemu-user-static is not installed, or {NO_CROSS_LINK}")
def test_the_arm_command_line_marks_rows_emulated(rack, workdir):
    done = run_cli("run", str(ROOT / "recipes" / "quickstart.toml"), "--model", "digits_cnn", "--target", "arm",
                   "--engine", "tvm", "--engine", "torch", "--tracker", rack.tracker, "--store", str(workdir / "cli-kits.db"))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if " arm " in line)
    assert " ok " in lines[at] and "EMULATED" in " ".join(lines[at:at + 3])  # the notes column may wrap
    assert "EMULATED: rows from a kit emulated on this host" in done.stdout
    text = " ".join(done.stdout.split())  # the quickstart measures peak memory: the kit measures its own
    assert "peak MB: the peak resident memory of a process loading and running the row's artifact" in text
    assert "peak MB not measured" not in text
    row = next(r for r in Store(str(workdir / "cli-kits.db")).frame().to_dict("records") if r["target"] == "arm")
    assert row["details"]["memory"]["peak_mb"] > 0


def test_a_kit_measures_the_peak_memory_of_loading_and_running_the_model(rack, workdir):
    """16 MiB of weights: the kit's process holds them, as the host's probe of the same library does. A
    kit served by TVM's own server has no probe: its row says so and is measured all the same."""
    plain, _ = rack.serve_stock("plain")
    try:
        rows = {}
        for key in ("x86", "plain"):
            recipe = _recipe(workdir, rack.tracker, models=[f"{USER_MODELS}:wide_linear"], engines=["tvm"],
                             targets=["x86", "x86-rpc"], devices={"tracker": rack.tracker, "key": key, "wait": "60s"})
            recipe["measure"] |= {"memory": True}
            rows[key] = {r["target"]: r for r in run_recipe(recipe_from_dict(recipe)).rows}
    finally:
        stop(plain)
    host, kit = rows["x86"]["x86"]["details"]["memory"], rows["x86"]["x86-rpc"]["details"]["memory"]
    assert kit["peak_mb"] >= 16 and host["peak_mb"] >= 16
    assert abs(kit["peak_mb"] - host["peak_mb"]) < 8  # the same library; the kit adds its RPC session's buffers
    plain_row = rows["plain"]["x86-rpc"]
    assert plain_row["status"] == OK and "memory" not in plain_row["details"]
    assert "does not measure memory: TVM's own RPC server" in plain_row["details"]["memory_error"]


def test_bench_measures_one_model_on_the_kits(rack, workdir):
    store = workdir / "bench-kits.db"
    done = run_cli("bench", "digits_cnn", "--target", "x86-rpc", "--engine", "tvm", "--engine", "torch",
                   "--tracker", rack.tracker, "--key", "x86", "--store", str(store))
    assert done.returncode == 0, done.stderr
    row = next(r for r in Store(str(store)).frame().to_dict("records") if r["target"] == "x86-rpc")
    assert row["status"] == OK and row["details"]["kit"] in rack.kits("x86")


def test_a_preset_that_fixes_its_cores_says_so_where_a_kit_runs_fewer_threads(rack, workdir, tmp_path):
    """A board preset that fixes num-cores (rpi4's 4) timed on a kit of fewer threads: the row says that it was
    built for one and timed on the other, not only its threads column."""
    preset = tmp_path / "quad.toml"
    preset.write_text((ROOT / "targets" / "x86-rpc.toml").read_text().replace('name = "x86-rpc"', 'name = "quad"')
                      + "num-cores = 4\n")
    (row,) = [r for r in run_recipe(recipe_from_dict(_recipe(workdir, rack.tracker, targets=[str(preset)],
                                                             engines=["tvm"]))).rows if r["target"] == "quad"]
    assert row["status"] == OK and row["threads"] < 4, row["reason"]
    assert f"built for 4 cores (the target's num-cores), timed on kit {row['details']['kit']}'s {row['threads']} threads" \
        in row["details"]["engine_notes"]


def test_a_model_of_several_inputs_runs_on_a_kit(rack, workdir):
    recipe = _recipe(workdir, rack.tracker, targets=["x86-rpc"], models=[f"{USER_MODELS}:token_classifier"],
                     measure={"warmup": 1, "repeats": 30, "threads": 2, "agreement_samples": 3})
    rows = {r["target"]: r for r in run_recipe(recipe_from_dict(recipe)).rows}
    assert rows["x86-rpc"]["status"] == OK, rows["x86-rpc"]["reason"]
    assert rows["x86-rpc"]["max_abs_diff"] < 1e-5 and rows["x86-rpc"]["details"]["kit"] in rack.kits("x86")


def test_paced_rows_run_on_a_kit_one_request_per_sample(rack, workdir):
    recipe = _recipe(workdir, rack.tracker, targets=["x86-rpc"], engines=["tvm"])
    recipe["measure"] |= {"span_s": 3.0}
    started = time.perf_counter()
    row = next(r for r in run_recipe(recipe_from_dict(recipe)).rows if r["target"] == "x86-rpc")
    assert row["status"] == OK, row["reason"]
    assert len(row["samples_ms"]) == 30 and row["max_abs_diff"] < 1e-3
    assert time.perf_counter() - started >= 3.0 * 29 / 30  # the kit's samples were spread over the span


def test_a_kit_that_dies_mid_job_gets_a_failure_row_and_earlier_rows_stay(rack, workdir):
    [doomed] = rack.serve("doomed")

    class KillTheKitWhileTiming:
        def step(self, text: str) -> None:
            if "slow_conv" in text and "timing" in text:
                stop(doomed)

        def repeat(self, done: int, total: int) -> None:
            pass

    recipe = recipe_from_dict(_recipe(workdir, rack.tracker, targets=["x86-rpc"],
                                      models=["digits_cnn", f"{USER_MODELS}:slow_conv"],
                                      devices={"tracker": rack.tracker, "key": "doomed", "wait": "10m",
                                               "job_timeout": "3m"}))
    started = time.monotonic()
    result = run_recipe(recipe, KillTheKitWhileTiming())
    assert time.monotonic() - started < 300  # the retry saw that no kit was left; it did not wait the 10 minutes
    kit_rows = {r["model"]: r for r in result.rows if r["target"] == "x86-rpc"}
    assert kit_rows["digits_cnn"]["status"] == OK
    failed = kit_rows["slow_conv"]
    assert failed["status"] == RUN_FAILED, failed["reason"]
    assert failed["details"]["kit"] and failed["details"]["kit"] in failed["reason"], failed["reason"]
    assert f"no kit under 'doomed' at {rack.tracker} is registered any more" in failed["reason"], failed["reason"]
    # the fix is for the kit that died (the cause), not for the key it left empty
    assert failed["reason"].endswith(f"(restart the server of kit {failed['details']['kit']} (`tvmharness devkit serve "
                                     f"--tracker {rack.tracker} --key doomed` on the board) and check its log; if it is "
                                     "up, check that this host reaches the address the tracker lists it at (`tvmharness "
                                     f"devices --tracker {rack.tracker}` lists the kits))"), failed["reason"]
    stored = result.frame()
    assert len(stored) == 4 and set(stored["status"]) == {OK, RUN_FAILED}
    # The run's time: the kit jobs' own, the failed one's included, apart from what the host measured
    on_kits = [r["details"]["kit_seconds"] for r in kit_rows.values()]
    assert all(seconds > 0 for seconds in on_kits), on_kits
    here = sum(r["details"].get("measure_seconds", 0) for r in result.rows if r["target"] != "x86-rpc")
    (time_line,) = [line for line in footnotes(stored) if line.startswith("time: ")]
    assert time_line.endswith(f", {here:.1f} s measuring on this host, {sum(on_kits):.1f} s in 2 dev kit jobs (added up: "
                              "they ran in parallel on the kits)"), time_line


def test_kits_that_leave_during_the_builds_fail_their_rows_and_the_rows_are_stored(rack, workdir):
    [leaving] = rack.serve("leaving")

    class KitLeavesDuringTheBuild:
        def step(self, text: str) -> None:
            if "(on this host)" in text and rack.kits("leaving"):  # building for the kit, after it was checked
                stop(leaving)
                rack.wait_for(lambda: not rack.kits("leaving"), 30, "the kit to leave the tracker")

        def repeat(self, done: int, total: int) -> None:
            pass

    store = workdir / "leaving.db"
    recipe = _recipe(workdir, rack.tracker, targets=["x86-rpc"], engines=["tvm"],
                     devices={"tracker": rack.tracker, "key": "leaving", "wait": "20s"})
    recipe["output"]["store"] = str(store)
    result = run_recipe(recipe_from_dict(recipe), KitLeavesDuringTheBuild())
    row = next(r for r in Store(str(store)).frame().to_dict("records") if r["target"] == "x86-rpc")
    assert row["status"] == RUN_FAILED and row["details"]["kit_failure"] == "no free kit"
    assert f"no kit under 'leaving' at {rack.tracker} is registered any more" in row["reason"], row["reason"]
    assert row["reason"].endswith(f"(start a kit: `tvmharness devkit serve --tracker {rack.tracker} --key leaving` on the "
                                  "board)"), row["reason"]
    assert row["artifact_bytes"]  # built: what the build says is kept
    assert len(result.rows) == len(Store(str(store)).frame())


def test_ctrl_c_during_kit_jobs_stops_them_at_once_and_keeps_what_came_back(rack, workdir):
    """A Ctrl-C while a row is stored: the running job is stopped, the queued ones dropped, and the
    row being stored and a job that finished meanwhile are still handed over."""
    from tvmharness.engines import EngineOptions, get_engine
    from tvmharness.models import load_model
    from tvmharness.remote.rack import KitJob, KitResult, Rack
    from tvmharness.targets import resolve

    model = load_model("digits_cnn", workdir / "cache")
    target = resolve("x86-rpc", 1)
    library = get_engine("tvm").build(model, target, EngineOptions(cache_dir=workdir / "cache")).library
    inputs = model.samples(1)

    def job(label: str, span_s: float = 0.0) -> KitJob:
        return KitJob(label, library, inputs, warmup=1, repeats=30, arch=target.preset.arch, span_s=span_s)

    # Two kits: "first" and "long" start at once; "second" runs after "first", then "third"; "queued" waits.
    jobs = [job("first"), job("long", span_s=120.0), job("second"), job("third", span_s=120.0), job("queued")]
    stages, handed = [], []

    def on_stage(kit_job: KitJob, text: str) -> None:
        stages.append((kit_job.label, text))

    interrupted = []

    def on_result(kit_job: KitJob, outcome) -> None:
        if kit_job.label == "first" and not interrupted:  # storing it is slow; Ctrl-C comes after "second" finished
            interrupted.append(kit_job.label)
            deadline = time.monotonic() + 60
            while not any(label == "third" for label, _ in stages) and time.monotonic() < deadline:
                time.sleep(0.1)
            raise KeyboardInterrupt
        handed.append((kit_job.label, outcome))

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        Rack(parse_address(rack.tracker), "x86", wait_s=60).run_all(jobs, on_result, on_stage)
    assert time.monotonic() - started < 90  # "long" alone spreads its samples over 120 s
    assert [label for label, _ in handed] == ["first", "second"]
    assert all(isinstance(outcome, KitResult) for _, outcome in handed)
    assert any(label == "third" for label, _ in stages) and not any(label == "queued" for label, _ in stages)
    # The stopped job's session ends, and both kits serve the next run.
    rack.wait_for(lambda: summary(parse_address(rack.tracker))["x86"].free == 2, 60, "both kits to be free again")


def test_a_session_killed_on_one_kit_is_retried_and_the_kit_comes_back(rack, workdir):
    killed = []

    def kill_session_worker():
        for process in rack.processes[1:3]:  # `devkit serve` -> the kit's server -> a worker per session
            for server in psutil.Process(process.pid).children():
                for worker in server.children():
                    worker.kill()
                    killed.append(worker.pid)
                    return

    class KillOneSession:
        def step(self, text: str) -> None:
            if "slow_conv" in text and "timing" in text and not killed:
                kill_session_worker()

        def repeat(self, done: int, total: int) -> None:
            pass

    recipe = recipe_from_dict(_recipe(workdir, rack.tracker, targets=["x86-rpc"], engines=["tvm"],
                                      models=[f"{USER_MODELS}:slow_conv"]))
    result = run_recipe(recipe, KillOneSession())
    row = next(r for r in result.rows if r["target"] == "x86-rpc")
    assert killed, "no session worker was found to kill"
    assert row["status"] == OK, row["reason"]
    assert row["details"]["retried_after"]
    (note,) = [line for line in footnotes(result.frame()) if line.startswith("RETRIED")]
    assert f"slow_conv / fp32 / tvm was measured on kit {row['details']['kit']} after " in note
    rack.wait_for(lambda: len(rack.kits("x86")) == 2, 30, "the kit to register again")


def test_a_kit_the_host_cannot_reach_is_a_lost_kit_named_by_its_address(rack, workdir):
    """The tracker hands out the address a kit registered (here TVM's own server saying 127.0.0.2, where
    nothing listens): the job fails within seconds, retryable, naming the kit, and the next kit serves it."""
    from tvmharness.engines import EngineOptions, get_engine
    from tvmharness.models import load_model
    from tvmharness.remote.rack import KIT_LOST, KitFailure, KitJob, Rack
    from tvmharness.targets import resolve

    model = load_model("digits_cnn", workdir / "cache")
    library = get_engine("tvm").build(model, resolve("x86-rpc", 1), EngineOptions(cache_dir=workdir / "cache")).library
    job = KitJob("astray", library, model.samples(1), warmup=1, repeats=5, arch="x86_64")
    address = parse_address(rack.tracker)

    def only_it_is_free():  # a kit handed out and never reached registers again after some seconds
        status = summary(address).get("astray")
        return status and status.kits == [unreachable] and status.free == 1

    astray, port = rack.serve_stock("astray", "--custom-addr", "127.0.0.2")
    kits = Rack(address, "astray", wait_s=30)
    try:
        [unreachable] = rack.kits("astray")
        assert unreachable == f"127.0.0.2:{port}"
        unreached = f"kit {unreachable} under 'astray' cannot be reached from this host (Connection refused)"
        # Each good kit registers after it: the tracker hands out the unreachable one first.
        [good] = rack.serve("astray")
        assert kits.check_kit("x86_64")["machine"] == "x86_64"  # the run's check goes on to the next kit
        stop(good)
        rack.wait_for(only_it_is_free, 30, "the unreachable kit alone")
        [good] = rack.serve("astray")
        result = kits.run(job)
        assert result.kit != unreachable and result.kit in rack.kits("astray") and result.attempts == [unreached]
        stop(good)
        rack.wait_for(only_it_is_free, 30, "the unreachable kit alone")
        kits.retries = 0
        started = time.monotonic()
        with pytest.raises(KitFailure) as caught:
            kits.run(job)
        assert time.monotonic() - started < 30
        assert caught.value.kind == KIT_LOST and caught.value.kit == unreachable and caught.value.attempts == [unreached]
        fix = kits.error(caught.value, "x86_64").fix  # what its row would say
        assert fix.startswith(f"restart the server of kit {unreachable} (") and "this host reaches the address" in fix, fix
    finally:
        kits.close()
        stop(astray)


def test_devkit_serve_stops_its_kit_on_sigterm_and_sighup(rack):
    import os
    import signal

    def folder(server):  # its sessions' folder
        [workdir] = Path(tempfile.gettempdir()).glob(f"tvmharness-kit-{server.pid}-*")
        return workdir

    for signum in (signal.SIGTERM, signal.SIGHUP):
        [serving] = rack.serve("signalled")
        [server] = psutil.Process(serving.pid).children()
        workdir = folder(server)
        os.kill(serving.pid, signum)  # to `devkit serve` alone, as a service manager's stop or a closed terminal
        if signum == signal.SIGTERM:  # and again while it stops, as `timeout` does (to the process, then its group)
            time.sleep(0.1)
            os.kill(serving.pid, signum)
        assert serving.wait(30) == 0
        server.wait(30)  # (psutil.TimeoutExpired if the kit's server outlived it)
        rack.wait_for(lambda: not rack.kits("signalled"), 30, "the kit to leave the tracker")
        assert not workdir.exists()
    # A kit's server killed with -9 leaves its folder, and the next kit to start removes it.
    [serving] = rack.serve("orphan")
    [server] = psutil.Process(serving.pid).children()
    left = folder(server)
    os.kill(server.pid, signal.SIGKILL)
    assert serving.wait(30) == 1  # `devkit serve` says how its server ended (not exit 247: -9 as a byte)
    rack.wait_for(lambda: not rack.kits("orphan"), 30, "the killed kit to leave the tracker")
    assert left.exists()
    [serving] = rack.serve("orphan")
    assert not left.exists()
    # Stopped as a group (a terminal's Ctrl-C, a service manager's stop of the unit): both processes
    # get the signal, and the kit's server one more from `devkit serve`; its folder goes all the same.
    [server] = psutil.Process(serving.pid).children()
    workdir = folder(server)
    stop(serving, gently=True)
    assert not workdir.exists()
    # killed with -9, it cannot stop its kit: the kernel does (a kit left serving would be taken for two)
    [serving] = rack.serve("killed")
    [server] = psutil.Process(serving.pid).children()
    os.kill(serving.pid, signal.SIGKILL)
    server.wait(30)
    rack.wait_for(lambda: not rack.kits("killed"), 30, "the kit to leave the tracker")


def test_a_dead_tracker_address_fails_in_seconds_and_touches_no_store(workdir):
    store = workdir / "never.db"
    started = time.monotonic()
    done = run_cli("run", str(ROOT / "recipes" / "quickstart.toml"), "--target", "arm", "--tracker",
                   f"127.0.0.1:{free_port()}", "--store", str(store))
    assert done.returncode == 75  # a tracker that may come back: the same command may well work later
    assert time.monotonic() - started < 30  # most of it is starting Python and importing TVM
    assert "no RPC tracker answers at 127.0.0.1" in done.stderr and "tvmharness tracker start" in done.stderr
    assert "Traceback" not in done.stderr
    assert not store.exists()
    # a host name that does not resolve is the address to fix (2), not a tracker to wait for (75)
    done = run_cli("devices", "--tracker", "no-such-host.invalid:9190")
    assert done.returncode == 2 and "no-such-host.invalid is no host name this machine knows" in done.stderr, done.stderr


def test_a_remote_target_without_a_tracker_says_how_to_start_one(workdir):
    done = run_cli("run", str(ROOT / "recipes" / "quickstart.toml"), "--target", "arm", "--store", str(workdir / "n.db"))
    assert done.returncode == 2
    assert "no tracker was given" in done.stderr and "devkit emulate aarch64" in done.stderr


def test_an_unknown_key_names_the_keys_the_tracker_has(rack, workdir):
    done = run_cli("run", str(ROOT / "recipes" / "quickstart.toml"), "--target", "x86-rpc", "--tracker", rack.tracker,
                   "--key", "no-such-kit", "--store", str(workdir / "n.db"))
    assert done.returncode == 2
    assert "no kit under key 'no-such-kit'" in done.stderr and "x86 (2 kits)" in done.stderr
    text = " ".join(done.stderr.split())  # the kit it says to start is one under that key, of the target's kind
    assert f"`tvmharness devkit serve --tracker {rack.tracker} --key no-such-kit` on the board" in text
    assert "devkit emulate" not in text  # an emulated kit is aarch64: never one for an x86 target


@pytest.mark.skipif(NO_CROSS_LINK is not None, reason=NO_CROSS_LINK or "")
def test_a_kit_of_the_wrong_architecture_is_refused_before_anything_runs(rack, workdir):
    store = workdir / "wrong.db"
    done = run_cli("run", str(ROOT / "recipes" / "quickstart.toml"), "--target", "arm", "--tracker", rack.tracker,
                   "--key", "x86", "--store", str(store))
    assert done.returncode == 2
    assert "is x86_64, but the artifact was built for aarch64" in done.stderr
    assert not store.exists()


def test_a_kit_whose_python_is_32_bit_on_a_64_bit_kernel_is_refused(rack):
    """A 32-bit userland on a 64-bit kernel: platform.machine() still says the kernel's architecture.
    The kit says its Python's pointer width too; here a kit's Python is made to say 4-byte pointers."""
    import subprocess
    import sys

    from tvmharness.errors import HarnessError
    from tvmharness.remote.devkit import KIT_SERVER
    from tvmharness.remote.rack import Rack

    narrow = ("import ctypes, runpy, struct, sys; size = struct.calcsize; "  # (ctypes checks its own sizes on import)
              "struct.calcsize = lambda f: 4 if f == 'P' else size(f); "
              "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")
    kit = subprocess.Popen([sys.executable, "-c", narrow, str(KIT_SERVER), "--tracker", rack.tracker, "--key", "narrow",
                            "--port", str(free_port())], start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        rack.wait_for(lambda: rack.kits("narrow"), 60, "the kit")
        with pytest.raises(HarnessError) as caught:
            Rack(parse_address(rack.tracker), "narrow", wait_s=30).check_kit("x86_64")
    finally:
        stop(kit)
    assert "runs a 32-bit Python on its x86_64 kernel, but the artifact was built for x86_64 (64-bit)" in caught.value.cause
    assert "pass --key with the key of x86_64 kits" in caught.value.fix
    info = Rack(parse_address(rack.tracker), "x86", wait_s=30).check_kit("x86_64")
    assert info["machine"] == "x86_64" and info["bits"] == 64


def test_tuning_measures_candidates_on_the_kits(rack, tmp_path):
    import json

    done = run_cli("tune", "--model", f"{USER_MODELS}:tiny_mlp", "--target", "x86-rpc", "--tracker", rack.tracker,
                   "--trials", "4", "--no-measure", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)["tune"][0]
    assert summary["trials_run"] >= 4
    measured = [t for t in summary["tasks"] if t["best_ms"] is not None]
    assert measured and all(t["errors"] == 0 for t in summary["tasks"])
    records = list((tmp_path / "results" / "tuning").glob("x86-rpc-*/database_tuning_record.json"))
    assert records and records[0].read_text().count("\n") >= len(measured)
    # The deployable artifact, built without a kit, is built for the kits' thread count and uses the records.
    built = run_cli("compile", f"{USER_MODELS}:tiny_mlp", "--target", "x86-rpc", "--json", cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    artifact = json.loads(built.stdout)
    assert artifact["manifest"]["tuning_records"]["tasks_tuned"] >= 1
    assert any(n.startswith("built for 1 threads, the thread count x86-rpc's records were tuned at") for n in artifact["notes"])


def test_records_tuned_on_an_emulated_kit_stand_apart_from_a_real_boards(tmp_path):
    from tvmharness.targets import resolve
    from tvmharness.tune import records_dir

    real, emulated = resolve("arm", 2), resolve("arm", 2)
    emulated.emulated = "qemu-user (qemu-aarch64-static) on x86_64"
    assert records_dir(tmp_path, real).name.startswith("arm-") and "emulated" not in records_dir(tmp_path, real).name
    assert records_dir(tmp_path, emulated).name.startswith("arm-emulated-")


@pytest.mark.skipif(not HAS_EMULATOR, reason=f"qemu-user-static is not installed, or {NO_CROSS_LINK}")
def test_a_tune_on_the_emulated_kit_says_so_and_a_boards_build_never_uses_its_records(rack, tmp_path):
    import json

    done = run_cli("tune", "--model", f"{USER_MODELS}:tiny_mlp", "--target", "arm", "--tracker", rack.tracker,
                   "--trials", "4", "--no-measure", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)["tune"][0]
    records = tmp_path / summary["records_dir"]  # (relative to where tune ran)
    assert "qemu" in summary["emulated"] and records.name.startswith("arm-emulated-")
    assert any(t["best_ms"] is not None for t in summary["tasks"])
    # Built for a board at the kit's thread count: the same TVM target, and none of the emulated records.
    threads = json.loads((records / "target.json").read_text())["tvm"]["num-cores"]
    built = run_cli("compile", f"{USER_MODELS}:tiny_mlp", "--target", "arm", "--threads", str(threads), "--json", cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    assert json.loads(built.stdout)["manifest"]["tuning_records"] is None
    notes = json.loads(built.stdout)["notes"]  # and it says where they are, and why they are not used
    assert any(f"{records.name} holds records tuned on an emulated kit, which a board's build never uses" in n
               for n in notes), notes
    # built without --threads (no board's records give a thread count): said all the same
    plain = run_cli("compile", f"{USER_MODELS}:tiny_mlp", "--target", "arm", "--json", cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert any(f"{records.name} holds records tuned on an emulated kit" in n for n in json.loads(plain.stdout)["notes"])


@pytest.mark.alone  # requests timed to the second
def test_requests_for_a_key_whose_kits_are_gone_fail_within_seconds(rack):
    from tvmharness.remote.tracker import GONE_AFTER_S, NoKitError, request_kit

    stop(rack.serve("gone")[0])
    rack.wait_for(lambda: not rack.kits("gone"), 30, "the kit to leave the tracker")
    took = []
    for _ in range(3):
        started = time.monotonic()
        with pytest.raises(NoKitError, match=f"no kit under 'gone' at {rack.tracker} is registered any more"):
            request_kit(parse_address(rack.tracker), "gone", wait_s=600, session_timeout_s=60)
        took.append(time.monotonic() - started)
    # The first waits out a kit that may be registering again; the requests queued behind it need not.
    assert GONE_AFTER_S <= took[0] < 30 and max(took[1:]) < 2, took


def test_a_tune_whose_kits_are_gone_stops_with_a_clear_error(rack, tmp_path):
    from tvmharness.errors import HarnessError
    from tvmharness.models import load_model
    from tvmharness.targets import resolve
    from tvmharness.tune import RECORDS, TuneOptions, records_dir, tune_model

    stop(rack.serve("fleeting")[0])
    rack.wait_for(lambda: not rack.kits("fleeting"), 30, "the kit to leave the tracker")
    model = load_model(f"{USER_MODELS}:tiny_mlp", tmp_path / "cache")
    options = TuneOptions(trials=4, tracker=parse_address(rack.tracker), key="fleeting", kit_wait_s=600)
    target = resolve("x86-rpc", 2)
    target.tvm_dict["num-cores"] = 1  # what the kit would say it has (pipeline.kit_racks asks it)
    started = time.monotonic()
    with pytest.raises(HarnessError, match=f"no kit under 'fleeting' at {rack.tracker} is registered any more") as caught:
        tune_model(model, target, options, frontend="torch", cache_dir=tmp_path / "cache",
                   records_root=tmp_path / "tuning", threads=2)
    assert time.monotonic() - started < 300  # MetaSchedule's own runner would wait for a kit for ever
    assert "tvmharness tune --resume" in caught.value.fix and "Traceback" not in caught.value.cause
    assert caught.value.fix.startswith("start a kit under 'fleeting'")  # not 'free a kit': none is left
    # no candidate reached a kit: none stands in the database as a schedule that failed
    records = records_dir(tmp_path / "tuning", target) / RECORDS
    assert not records.is_file() or records.read_text() == ""


def test_a_kit_that_stops_answering_mid_tune_costs_a_candidate_not_the_night(rack, tmp_path):
    """A board that loses power or its network never closes its connections: here the kit's processes
    are stopped (SIGSTOP), so the candidate sent to it waits for an answer that never comes."""
    import os
    import signal
    import threading

    from tvmharness.errors import HarnessError
    from tvmharness.models import load_model
    from tvmharness.targets import resolve
    from tvmharness.tune import TuneOptions, tune_model

    model = load_model(f"{USER_MODELS}:tiny_mlp", tmp_path / "cache")
    options = TuneOptions(trials=4, tracker=parse_address(rack.tracker), key="stalled", kit_wait_s=5, runner_timeout_s=5)
    target = resolve("x86-rpc", 2)
    target.tvm_dict["num-cores"] = 1
    outcome = []

    def tune():
        try:
            tune_model(model, target, options, frontend="torch", cache_dir=tmp_path / "cache",
                       records_root=tmp_path / "tuning", threads=2)
        except Exception as err:
            outcome.append(err)

    [stalled] = rack.serve("stalled")
    [address] = rack.kits("stalled")
    os.killpg(stalled.pid, signal.SIGSTOP)
    thread = threading.Thread(target=tune, daemon=True)
    try:
        thread.start()
        thread.join(300)
    finally:
        stop(stalled)  # a killed kit closes its connections: a tune still waiting on it ends now
    assert not thread.is_alive(), "the tune still waited on the kit that stopped answering"
    (error,) = outcome
    assert isinstance(error, HarnessError), error
    # the kit named: the tracker still lists it (as busy), so its address is where to look
    assert (f"the kit {address} (key stalled) stopped answering; no kit under 'stalled' at {rack.tracker} was free "
            "within 5 s") in error.cause, error.cause
    assert error.fix.startswith(f"restart the server of the kit {address}, or free a kit under 'stalled'"), error.fix
    assert "tvmharness tune --resume" in error.fix


def test_a_kit_lost_while_it_measures_a_candidate_is_named(rack, tmp_path):
    """A kit killed while a candidate runs on it (TVM's kShutdown) or hung (the pool kills the candidate's
    worker, in another process) leaves an error that names no kit: the candidate's runner noted it. The
    runner's own steps are taken here one by one, on a real kit: killing a kit inside a real tune's candidate
    would race the candidate's milliseconds."""
    import tvm
    from tvm import te
    from tvm.s_tir.meta_schedule.runner import RPCConfig

    from tvmharness._ms_build import export_shared_library
    from tvmharness.tune import POOL_KILLED, _kit_session, _upload_noting_kit, lost_kit

    a = te.placeholder((4,), name="a")
    library = tvm.compile(tvm.IRModule({"main": te.create_prim_func([a, te.compute((4,), lambda i: a[i] + 1.0)])}),
                          target=tvm.target.Target({"kind": "llvm"}))
    candidate = export_shared_library(library, folder=str(tmp_path))  # as the tune's builder exports one
    [doomed] = rack.serve("candidate")
    [address] = rack.kits("candidate")
    tracker = parse_address(rack.tracker)
    config = RPCConfig(tracker_host=tracker.host, tracker_port=tracker.port, tracker_key="candidate", session_timeout_sec=60)
    try:
        session = _kit_session(config, wait_s=30, emulated="")
        _upload_noting_kit(session, candidate, "candidate.so")
    finally:
        stop(doomed)
    shutil.rmtree(Path(candidate).parent)  # MetaSchedule's measure callbacks remove it before ours reads the results
    with pytest.raises(Exception) as killed:  # the runner's next call on the kit (its cleanup at least)
        session.remove("candidate.so")
    assert lost_kit(candidate, "RPCRunner: An exception occurred\n" + str(killed.value)) == address, killed.value
    assert lost_kit(candidate, f"{POOL_KILLED} 155.0 seconds") == address
    # the candidate's own failure (a kernel that does not load, a wrong result) is no lost kit
    assert lost_kit(candidate, "RPCRunner: An exception occurred\nInternalError: cannot find function") is None
    assert lost_kit(str(tmp_path / "candidate-never-ran" / "candidate.so"), POOL_KILLED) is None


def test_a_tune_for_a_board_never_times_a_candidate_on_an_emulated_kit_under_its_key(rack, tmp_path):
    """One key serving an emulated kit and boards: a board's records must hold no emulated timing
    (which kit the tune's first check got decided what its records were). Here the key's only kit
    says it is emulated, and the board's tune measures nothing on it and says why."""
    import subprocess
    import sys

    from tvmharness.models import load_model
    from tvmharness.remote.devkit import KIT_SERVER
    from tvmharness.targets import resolve
    from tvmharness.tune import TuneOptions, tune_model

    kit = subprocess.Popen([sys.executable, str(KIT_SERVER), "--tracker", rack.tracker, "--key", "mixed", "--host",
                            "127.0.0.1", "--port", str(free_port()), "--threads", "1", "--emulated", "a test's stand-in"],
                           start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        rack.wait_for(lambda: rack.kits("mixed"), 60, "the stand-in kit")
        model = load_model(f"{USER_MODELS}:tiny_mlp", tmp_path / "cache")
        target = resolve("x86-rpc", 2)  # a board's: target.emulated unset
        target.tvm_dict["num-cores"] = 1
        options = TuneOptions(trials=4, tracker=parse_address(rack.tracker), key="mixed", kit_wait_s=3)
        with pytest.raises(HarnessError) as refused:
            tune_model(model, target, options, frontend="torch", cache_dir=tmp_path / "cache",
                       records_root=tmp_path / "tuning", threads=2)
    finally:
        stop(kit)
    assert "no kit under 'mixed' fits this tune: kit 127.0.0.1:" in refused.value.cause
    assert "is emulated by a test's stand-in, and this tune's records are a board's" in refused.value.cause
    assert not list((tmp_path / "tuning").glob("*/database_tuning_record.json")) or not any(
        f.read_text().strip() for f in (tmp_path / "tuning").glob("*/database_tuning_record.json"))


def test_a_tracker_outage_stops_a_tune_and_spends_none_of_its_budget(tmp_path):
    import json

    from tvmharness.errors import HarnessError
    from tvmharness.models import load_model
    from tvmharness.targets import resolve
    from tvmharness.tune import TuneOptions, tune_model

    class TrackerDiesAtTheStart:
        def step(self, text: str) -> None:
            stop(own.processes[0])  # each candidate asks the tracker for a kit: it is gone for all of them

        def update(self, state, task) -> None:
            pass

    model = load_model(f"{USER_MODELS}:tiny_mlp", tmp_path / "cache")
    target = resolve("x86-rpc", 2)
    target.tvm_dict["num-cores"] = 1
    with LoopbackRack() as own:
        own.serve("x86")
        options = TuneOptions(trials=4, tracker=parse_address(own.tracker), key="x86", kit_wait_s=60)
        with pytest.raises(HarnessError, match=f"no RPC tracker answers at {own.tracker}") as caught:
            tune_model(model, target, options, frontend="torch", cache_dir=tmp_path / "cache",
                       records_root=tmp_path / "tuning", threads=2, progress=TrackerDiesAtTheStart())
    assert caught.value.fix.startswith("start the tracker again") and "tvmharness tune --resume" in caught.value.fix
    [session] = (tmp_path / "tuning").glob("x86-rpc-*/sessions/*.json")
    assert json.loads(session.read_text())["trials_done"] == 0  # --resume has the whole budget left


def test_a_job_waiting_while_the_tracker_restarts_gets_a_kit_once_it_is_back(tmp_path):
    """A tracker restarted (a deploy) answers again within seconds and its kits register again: the
    jobs waiting meanwhile failed at once, every queued row of the night with them."""
    import threading

    from tvmharness.remote.tracker import request_kit

    with LoopbackRack() as own:
        own.serve("x86")
        address = parse_address(own.tracker)
        stop(own.processes[0])  # the tracker
        got = []
        waiting = threading.Thread(target=lambda: got.append(request_kit(address, "x86", 60, 30)[1]), daemon=True)
        waiting.start()
        time.sleep(3)
        own.start("tracker", "start", "--port", str(address.port))
        waiting.join(60)
        assert got and got[0] in own.kits("x86"), got


def test_binding_beyond_loopback_warns_and_addresses_are_checked():
    from tvmharness.errors import HarnessError
    from tvmharness.remote.tracker import parse_address, warn_if_wide

    assert warn_if_wide("127.0.0.1") is None and warn_if_wide("localhost") is None
    assert "no authentication" in warn_if_wide("0.0.0.0")
    # A kit on loopback that registers with a tracker across the network could never be reached.
    done = run_cli("devkit", "serve", "--tracker", "192.0.2.1:9190", "--key", "rpi4")
    assert done.returncode == 2 and "pass --host 0.0.0.0" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert str(parse_address("10.0.0.5:9190")) == "10.0.0.5:9190" and parse_address("kits").port == 9190
    for bad in ("host:port", ":9190", "host:70000"):
        with pytest.raises(HarnessError, match="not a tracker address"):
            parse_address(bad)


def test_a_kit_job_worker_outlives_the_thread_that_started_it_and_ends_with_its_host(tmp_path):
    """Workers are kept for the next jobs after their job threads end; a host killed with -9 takes its
    workers along (a worker left timing would hold its kit for up to job_timeout)."""
    import signal
    import subprocess
    import sys

    script = ("import threading, time\n"
              "from tvmharness.remote.rack import _Worker\n"
              "if __name__ == '__main__':\n"
              "    workers = []\n"
              "    thread = threading.Thread(target=lambda: workers.append(_Worker()))\n"
              "    thread.start(); thread.join()\n"
              "    time.sleep(3)\n"
              "    print(workers[0].process.pid, workers[0].process.is_alive(), flush=True)\n"
              "    time.sleep(600)\n")
    (tmp_path / "host.py").write_text(script)
    host = subprocess.Popen([sys.executable, str(tmp_path / "host.py")], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        pid, alive = host.stdout.readline().split()
        assert alive == "True"  # its thread ended, and it waits for the next job
        worker = psutil.Process(int(pid))
        host.send_signal(signal.SIGKILL)
        worker.wait(10)  # (psutil.TimeoutExpired if it outlived its host)
    finally:
        host.kill()


@contextlib.contextmanager
def fake_tracker(reply: bytes):
    """A server on loopback that answers TVM's tracker handshake, then `reply` (raw bytes, framed as
    TVM frames JSON: a little-endian int32 length first) to every request: a tracker, or something
    that passes for one until it speaks."""
    import socket
    import struct
    import threading

    from tvm.rpc import base

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stopping = threading.Event()

    def serve():
        while not stopping.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    base.recvall(conn, 4)
                    conn.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
                    size = struct.unpack("<i", base.recvall(conn, 4))[0]
                    base.recvall(conn, size)
                    conn.sendall(struct.pack("<i", len(reply)) + reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stopping.set()
        thread.join()
        listener.close()


def _summary_reply(server_info: list, queue_info: dict) -> bytes:
    return json.dumps([0, {"server_info": server_info, "queue_info": queue_info}]).encode()  # 0: TrackerCode.SUCCESS


def test_devices_shows_kit_keys_and_addresses_as_text_not_markup():
    evil = "[red]EVIL[/red][link=https://evil.example]click[/link]"
    said = {"machine": "[b]arm[/b]", "emulated": "[red]qemu[/red]"}
    reply = _summary_reply([{"key": f"server:{evil}", "addr": ["[b]10.0.0.9[/b]", 9091], "kit_info": said}],
                           {evil: {"free": 1, "pending": 0}})
    with fake_tracker(reply) as tracker:
        done = run_cli("devices", "--tracker", tracker)
    assert done.returncode == 0, done.stderr
    assert evil in done.stdout and "[b]10.0.0.9[/b]:9091" in done.stdout
    assert "[b]arm[/b]" in done.stdout and "[red]qemu[/red]" in done.stdout


def test_emoji_codes_in_what_a_user_gives_are_printed_as_written():
    done = run_cli("devices", "--tracker", "a:b:c")
    assert done.returncode == 2 and "'a:b:c' is not a tracker address" in done.stderr, done.stderr
    done = run_cli("bench", "x:fire:y.onnx")
    assert done.returncode == 2 and "x:fire:y.onnx" in done.stderr and "\N{FIRE}" not in done.stderr, done.stderr


def test_a_tracker_s_unreadable_entries_are_left_out_and_a_reply_not_a_tracker_s_is_said():
    from tvmharness.remote.tracker import KitInfo

    kit = {"key": "server:x86", "addr": ["10.0.0.9", 9091]}
    odd = [{"key": "server"}, {"key": 7, "addr": ["h", 1]}, {"addr": ["h", 1]}, {"key": "server:y", "addr": "h:1"},
           {"key": "server:y", "addr": ["h"]}, "server:y", None]
    # what a kit says of itself, unreadable: the kit is listed, what it said unknown
    garbled = [kit | {"kit_info": {"machine": 7, "bits": True, "emulated": ["qemu"], "threads": "2"}},
               kit | {"addr": ["10.0.0.9", 9092], "kit_info": "aarch64"}]
    reply = _summary_reply([*odd, *garbled], {"x86": {"free": 1, "pending": 0}, "z": {"free": "1"}, "w": None})
    with fake_tracker(reply) as tracker:
        keys = summary(parse_address(tracker))
        assert list(keys) == ["x86"] and keys["x86"].kits == ["10.0.0.9:9091", "10.0.0.9:9092"] and keys["x86"].free == 1
        assert keys["x86"].kit_info == [KitInfo("10.0.0.9:9091"), KitInfo("10.0.0.9:9092")]
        done = run_cli("devices", "--tracker", tracker, "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["keys"][0]["key"] == "x86", done.stderr
    for garbage in (b"{not json", b'[0, {"server_info": "x"}]', b"[0]", b"7", b'[0, "x"]', b"\xff\xfe"):
        with fake_tracker(garbage) as tracker:
            done = run_cli("devices", "--tracker", tracker)
        assert done.returncode == 2 and "did not answer a summary request" in done.stderr, (garbage, done.stderr)
        assert "internal error" not in done.stderr


def test_ipv6_addresses_are_read_and_its_loopback_needs_no_warning():
    from tvmharness.remote.tracker import Address, is_loopback, warn_if_wide

    assert parse_address("[::1]:9191") == Address("::1", 9191) and str(parse_address("[::1]:9191")) == "[::1]:9191"
    assert parse_address("::1") == Address("::1", 9190) and parse_address("[fe80::1]") == Address("fe80::1", 9190)
    assert parse_address("127.0.0.1:9190") == Address("127.0.0.1", 9190) and parse_address("kits") == Address("kits", 9190)
    assert is_loopback("::1") and is_loopback("127.0.0.1") and not is_loopback("8.8.8.8")
    assert warn_if_wide("::1") is None and "no authentication" in warn_if_wide("0.0.0.0")
    with pytest.raises(HarnessError, match="not a tracker address"):
        parse_address("[::1]:port")


def test_a_tracker_on_a_taken_port_says_so_and_never_that_it_listens(rack):
    done = run_cli("tracker", "start", "--port", rack.tracker.rsplit(":", 1)[1], timeout=60)
    assert done.returncode == 2 and "cannot listen on 127.0.0.1" in done.stderr, done.stderr
    assert "tracker listening" not in done.stderr
