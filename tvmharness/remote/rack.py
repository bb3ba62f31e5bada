"""The rack: measurement jobs sent to dev kits through the RPC tracker.

The tracker does the scheduling: each job asks it for a kit under its key and gets the next free
one, so jobs run in parallel on as many kits as are free. Each job runs in a worker process of its
own, because a kit that hangs never answers and TVM's client has no timeout of its own: the harness
kills the worker when the job overruns, and retries a job whose kit died or hung on another kit,
a bounded number of times. A worker whose job ended cleanly takes the next job (starting one and
importing TVM costs seconds, often more than a small job itself)."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..budgets import JOB_TIMEOUT_S, KIT_RETRIES, KIT_WAIT_S
from ..data import Feed
from ..errors import HarnessError, one_line
from ..measure import Latency, output_arrays, paced
from .kit_server import MEMORY_CALLS
from .tracker import (KITS_GONE, LOST_WORDS, TRACKER_GONE, Address, KeyStatus, KitUnreachable, NoKitError, kits_gone,
                      request_kit, start_tracker_again, summary)

# How a job failed, and whether another kit may succeed where this one did not.
KIT_LOST = "kit lost"  # the kit died, dropped the connection mid-job, or cannot be reached: retry elsewhere
KIT_HUNG = "kit hung"  # no answer within the job timeout: retry elsewhere
NO_KIT = "no free kit"
WRONG_ARCH = "wrong architecture"  # retried too: one kit of another architecture may sit among the right ones
JOB_FAILED = "job failed"  # the model itself failed on the kit: another kit would fail the same way
RETRYABLE = (KIT_LOST, KIT_HUNG, WRONG_ARCH)
STOPPED = "stopped: the run was interrupted"  # (a JOB_FAILED: no other kit is tried)


@dataclass
class KitJob:
    """One model measured on one kit: the library (built for the kit on the host) and its inputs."""

    label: str
    library: Path | None  # None: only ask the kit what it is
    inputs: list[Feed]  # each call's inputs; every output of each is compared with the baseline's
    warmup: int
    repeats: int
    arch: str  # the architecture the library was built for
    span_s: float = 0.0  # the timing protocol's spread (tvmharness.measure.paced)
    device: str = "cpu"  # or "cuda": the kit's GPU runs the kernels
    memory: bool = False  # also the peak memory of loading and running the library on the kit


@dataclass
class KitResult:
    kit: str  # HOST:PORT of the kit that measured it
    info: dict  # what the kit says of itself (machine, emulated, threads, versions)
    outputs: list[list[np.ndarray]]  # every output, per input
    latency: Latency
    upload_seconds: float
    attempts: list[str] = field(default_factory=list)  # earlier failures that were retried
    seconds: float = 0.0  # the job's time on the rack: from asking for a kit to the answer, retries included
    memory: dict | None = None  # {"peak_mb", "resident_mb"} where the job asked for it and the kit measured it
    memory_error: str | None = None  # why the kit did not

    @property
    def emulated(self) -> str:
        return self.info.get("emulated", "")


class KitFailure(Exception):
    def __init__(self, kind: str, message: str, kit: str | None = None, attempts: list[str] | None = None):
        super().__init__(message)
        self.kind, self.kit, self.attempts = kind, kit, attempts or []
        self.earlier: str | None = None  # the kind of the retried failure before this one, if any
        self.seconds = 0.0  # as KitResult.seconds


@dataclass
class Rack:
    """Kits under one key at one tracker, with the limits every job runs under."""

    tracker: Address
    key: str
    job_timeout_s: float = JOB_TIMEOUT_S
    wait_s: float = KIT_WAIT_S
    retries: int = KIT_RETRIES
    emulable: bool = True  # an emulated kit can serve the target (a CPU one: qemu has no GPU)
    _idle: list["_Worker"] = field(default_factory=list, repr=False)
    _busy: set["_Worker"] = field(default_factory=set, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _stopping: threading.Event = field(default_factory=threading.Event, repr=False)  # run_all was interrupted

    def status(self) -> KeyStatus:
        """The kits under this key now; a clear error when there are none."""
        keys = summary(self.tracker)
        if self.key not in keys or not keys[self.key].kits:
            raise HarnessError(f"the tracker at {self.tracker} has no kit under key '{self.key}' (its keys: "
                               f"{_keys_with_kits(keys)})",
                               "pass --key with one of its keys, or " + _start_a_kit(self.tracker, self.key, self.emulable))
        return keys[self.key]

    def run(self, job: KitJob, on_stage: Callable[[str], None] | None = None) -> KitResult:
        """Measure one job, retrying on another kit when its kit dies, hangs or cannot be reached."""
        kit, r, attempts = self._retrying(job, on_stage or (lambda _text: None))
        return KitResult(kit=kit, info=r["info"], outputs=r["outputs"], latency=Latency.from_samples(r["samples_ms"]),
                         upload_seconds=r["upload_seconds"], attempts=attempts, memory=r.get("memory"),
                         memory_error=r.get("memory_error"))

    def _retrying(self, job: KitJob, on_stage: Callable[[str], None]) -> tuple[str, dict, list[str]]:
        """(the kit, its answer, the earlier attempts' failures)."""
        attempts: list[str] = []
        last = None
        for _ in range(self.retries + 1):
            try:
                return *self._attempt(job, on_stage), attempts
            except KitFailure as failure:
                if failure.kind not in RETRYABLE:
                    failure.attempts, failure.kit = attempts, failure.kit or (last and last.kit)
                    failure.earlier = last.kind if last is not None else None
                    raise
                attempts.append(str(failure) if failure.kit is None or failure.kit in str(failure)
                                else f"kit {failure.kit}: {failure}")
                last = failure
        raise KitFailure(last.kind, f"gave up after {len(attempts)} attempts", last.kit, attempts)

    def check_kit(self, arch: str) -> dict:
        """Hand a kit an empty job: it answers, and it has the architecture the artifacts are built for."""
        self.status()
        try:
            return self._retrying(KitJob("check", None, [], 0, 0, arch), lambda _text: None)[1]["info"]
        except KitFailure as failure:
            raise self.error(failure, arch) from None

    def error(self, failure: KitFailure, arch: str) -> HarnessError:
        """A job's failure as a user's error: the attempts and the last failure, and the fix for its kind
        (what a kit row's reason says, and the run's check of a kit before anything is built)."""
        return HarnessError("; ".join([*failure.attempts, str(failure)]), self.fix(failure, arch))

    def fix(self, failure: KitFailure, arch: str) -> str:
        """What to do about a failed job, by its kind; `arch`: the architecture the job's library was built for."""
        text, kit, devices = str(failure), failure.kit, f"`tvmharness devices --tracker {self.tracker}` lists the kits"
        if failure.kind == NO_KIT and text.startswith(TRACKER_GONE):  # no kit can be had until it is back
            return f"{start_tracker_again(self.tracker)}, then run again"
        # no kit free, or none left, after one failed (it hung: the tracker holds it busy; it died; it was of
        # another architecture): that one is the cause to fix
        kind = (failure.earlier or failure.kind) if failure.kind == NO_KIT else failure.kind
        which = f"kit {kit}" if kit else "the kit"
        serve = _serve_a_kit(self.tracker, self.key, self.emulable)
        if kind == KIT_LOST:
            return (f"restart the server of {which} ({serve}) and check its log; if it is up, check that this host "
                    f"reaches the address the tracker lists it at ({devices})")
        if kind == KIT_HUNG:
            return (f"restart the server of {which} if it is stuck ({serve}), or raise job_timeout in the recipe's "
                    f"[devices] (now {self.job_timeout_s:.0f} s) if the job needs longer")
        if kind == WRONG_ARCH:
            return (f"pass --key with the key of {arch} kits ({devices}); a kit of another "
                    "architecture among them: serve it under a key of its own")
        if kind == NO_KIT and KITS_GONE in text:
            return _start_a_kit(self.tracker, self.key, self.emulable)
        if kind == NO_KIT:
            return (f"raise wait in the recipe's [devices] (now {self.wait_s:.0f} s), or add kits under '{self.key}' "
                    "(another run may hold them)")
        if text == STOPPED:
            return "run again to measure it"
        return (f"the model itself failed on {which}, as it would on any kit: its server's log there holds the whole "
                "error; fix the model or its build for the target")

    def run_all(self, jobs: list[KitJob], on_result: Callable[[KitJob, KitResult | KitFailure], None],
                on_stage: Callable[[KitJob, str], None] | None = None) -> None:
        """Run jobs in parallel, one per kit registered under the key, handing each to on_result as it
        finishes. When no kit is left under the key (they left during the host's builds), every job is
        handed over as a failure saying so. On Ctrl-C (or any error) the jobs not started are dropped
        and the running ones stopped at once; on Ctrl-C the results that had come back and were not
        handed over yet (an on_result that was interrupted included) are still handed over."""
        try:
            kits = len(self.status().kits)
        except HarnessError as gone:  # the kits (or the tracker) left during the host's builds
            why = gone.cause if gone.cause.startswith(TRACKER_GONE) else kits_gone(self.key, self.tracker)
            for job in jobs:
                on_result(job, KitFailure(NO_KIT, why))
            return
        workers = max(1, min(len(jobs), kits))
        self._stopping.clear()
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kit-job")
        futures = {pool.submit(self._run_caught, job, on_stage): job for job in jobs}
        handed = set()
        try:
            for future in as_completed(futures):
                on_result(futures[future], future.result())
                handed.add(future)  # only now: a Ctrl-C inside on_result hands the result over again below
        except BaseException as stop:
            # Those finished before the stop fails the others (a job that raised is a bug: leave it out).
            came_back = [f for f in futures if f.done() and f not in handed and f.exception() is None]
            self._stopping.set()
            pool.shutdown(wait=False, cancel_futures=True)
            with self._lock:
                for worker in self._busy:
                    worker.process.kill()
            if isinstance(stop, KeyboardInterrupt):  # (any other error would only repeat on the next row)
                for future in came_back:
                    on_result(futures[future], future.result())
            raise
        finally:
            pool.shutdown(wait=False)
            self.close()

    def close(self) -> None:
        """Stop the idle workers."""
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.kill()

    def _run_caught(self, job: KitJob, on_stage) -> KitResult | KitFailure:
        started = time.perf_counter()
        try:
            outcome = self.run(job, (lambda text: on_stage(job, text)) if on_stage else None)
        except KitFailure as failure:
            outcome = failure
        outcome.seconds = round(time.perf_counter() - started, 3)
        return outcome

    def _attempt(self, job: KitJob, on_stage: Callable[[str], None]) -> tuple[str, dict]:
        spec = {"tracker": self.tracker, "key": self.key, "wait_s": self.wait_s,
                "session_timeout_s": self.job_timeout_s, "library": job.library and str(job.library), "inputs": job.inputs,
                "warmup": job.warmup, "repeats": job.repeats, "span_s": job.span_s, "arch": job.arch, "device": job.device,
                "memory": job.memory}
        with self._lock:
            if self._stopping.is_set():  # checked under the lock run_all stops the busy workers under
                raise KitFailure(JOB_FAILED, STOPPED)
            worker = self._idle.pop() if self._idle else _Worker()
            self._busy.add(worker)
        on_stage(f"waiting for a free kit under '{self.key}'")
        kit, deadline = None, time.monotonic() + self.wait_s + 30  # + a new worker's start-up
        clean = False  # whether the worker may take another job
        try:
            try:
                worker.conn.send(spec)
            except OSError as err:  # an idle worker that died meanwhile
                raise KitFailure(KIT_LOST, f"the job's worker ended before the job ({err})") from None
            while True:
                if self._stopping.is_set():
                    raise KitFailure(JOB_FAILED, STOPPED, kit)
                left = deadline - time.monotonic()
                if left <= 0:
                    if kit is None:
                        raise KitFailure(NO_KIT, f"no kit under '{self.key}' at {self.tracker} was free within "
                                         f"{self.wait_s:.0f} s")
                    raise KitFailure(KIT_HUNG, f"kit {kit} did not finish the job within {self.job_timeout_s:.0f} s "
                                     "(it hangs, or the job needs a longer timeout)", kit)
                if not worker.conn.poll(min(left, 1.0)):
                    if not worker.process.is_alive() and not worker.conn.poll(0):
                        raise KitFailure(KIT_LOST, f"the job's worker ended unexpectedly (exit code {worker.process.exitcode})", kit)
                    continue
                try:
                    message = worker.conn.recv()
                except EOFError:
                    raise KitFailure(KIT_LOST, "the job's worker ended without an answer", kit) from None
                tag = message[0]
                if tag == "kit":
                    kit, deadline = message[1], time.monotonic() + self.job_timeout_s
                    on_stage(f"on kit {kit}")
                elif tag == "stage":
                    on_stage(f"{message[1]} on kit {kit}")
                elif tag == "error":  # ("error", kind, message[, the kit it names when the job never reached it])
                    clean = message[1] not in (KIT_LOST, KIT_HUNG)  # (a worker told of the wrong architecture is fine)
                    raise KitFailure(message[1], message[2], message[3] if len(message) > 3 else kit)
                elif tag == "result":
                    clean = True
                    return kit, message[1]
        finally:
            with self._lock:
                self._busy.discard(worker)
                clean = clean and not self._stopping.is_set()
                if clean:
                    self._idle.append(worker)
            if not clean:
                worker.kill()


class _Worker:
    """A process that runs jobs one after another (a fresh interpreter: nothing shared with the
    host's TVM), killed when a job overruns or its kit is lost."""

    def __init__(self):
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_loop, args=(child, os.getpid()), daemon=True, name="kit job worker")
        self.process.start()
        child.close()

    def kill(self) -> None:
        self.conn.close()
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)


def resolve_key(tracker: Address, key: str | None, preferred: list[str], emulable: bool = True) -> str:
    """The key given, or the first of the target's usual keys that the tracker has kits under."""
    if key:
        return key
    keys = summary(tracker)
    for candidate in preferred:
        if candidate in keys and keys[candidate].kits:
            return candidate
    raise HarnessError(f"the tracker at {tracker} has no kit under this target's keys ({', '.join(preferred) or 'none'}); "
                       f"its keys: {_keys_with_kits(keys)}",
                       "pass --key KEY, or " + _start_a_kit(tracker, preferred[0] if preferred else "KEY", emulable))


def _keys_with_kits(keys: dict[str, KeyStatus]) -> str:
    """A key with requests waiting and no kit (left by clients that gave up: TVM's tracker keeps them) has none to offer."""
    return ", ".join(f"{k} ({len(s.kits)} kits)" for k, s in keys.items() if s.kits) or "none"


def _start_a_kit(tracker: Address, key: str, emulable: bool = True) -> str:
    return "start a kit: " + _serve_a_kit(tracker, key, emulable)


def _serve_a_kit(tracker: Address, key: str, emulable: bool = True) -> str:
    """The commands that put a kit under `key` (an emulated one says so in its rows; none serves a GPU)."""
    return (f"`tvmharness devkit serve --tracker {tracker} --key {key}` on the board"
            + (f" (or `tvmharness devkit emulate aarch64 --tracker {tracker} --key {key}` here)" if emulable else ""))


# ---------------------------------------------------------------------------------------------
# The worker process: a job at a time, each on the kit the tracker hands out. Everything it says
# goes through the pipe.

def _worker_loop(conn, host: int) -> None:
    import gc

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the whole process group: the host stops us

    def watch_host():  # a host killed with -9: end with it, so that the session ends and the kit is free again
        while os.getppid() == host:  # (not the kernel's parent-death signal: it comes when the thread that
            time.sleep(1)            # started us ends, and a job thread ends while its worker waits for more)
        os._exit(0)

    threading.Thread(target=watch_host, daemon=True).start()
    while True:
        try:
            spec = conn.recv()
            _job(spec, conn)
        except (EOFError, OSError):  # the host is gone (its end of the pipe closed): nobody to report to
            return
        gc.collect()  # the Relax VM holds its RPC session in a reference cycle: free the kit now


def _job(spec: dict, conn) -> None:
    stage = "connecting to the tracker"
    try:
        import tvm

        session, kit = request_kit(spec["tracker"], spec["key"], spec["wait_s"], spec["session_timeout_s"])
        conn.send(("kit", kit))
        stage = "asking the kit what it is"
        info = _kit_info(session)  # (TVM's own server says nothing: then loading the library is the check)
        machine, bits = info.get("machine"), info.get("bits")
        if machine and machine != spec["arch"]:
            conn.send(("error", WRONG_ARCH, f"kit {kit} under key '{spec['key']}' is {machine}, "
                                            f"but the artifact was built for {spec['arch']}"))
            return
        width = 64 if spec["arch"].endswith("64") else 32
        if bits and bits != width:  # e.g. a 32-bit userland on a 64-bit kernel, which says aarch64 all the same
            conn.send(("error", WRONG_ARCH, f"kit {kit} under key '{spec['key']}' runs a {bits}-bit Python on its "
                                            f"{machine} kernel, but the artifact was built for {spec['arch']} ({width}-bit)"))
            return
        if spec["library"] is None:
            conn.send(("result", {"info": info}))
            return
        stage = "uploading the model"
        conn.send(("stage", stage))
        started = time.perf_counter()
        session.upload(spec["library"], "model.so")
        memory = _memory_mark(session, kit) if spec["memory"] else {}
        stage = "loading the model"
        try:
            module = session.load_module("model.so")
        except Exception as err:
            text = one_line(err)
            if "ELF" in text or "wrong" in text.lower() and "class" in text.lower():
                conn.send(("error", WRONG_ARCH, f"kit {kit} cannot load a library built for {spec['arch']}: {text}"))
            else:
                conn.send(("error", _kind(err), f"kit {kit} could not load the model: {text}"))
            return
        upload_seconds = time.perf_counter() - started
        dev = session.cuda(0) if spec["device"] == "cuda" else session.cpu()
        vm = tvm.relax.VirtualMachine(module, dev)  # on a GPU kit its TVM compiles the kernels now (NVRTC)
        stage = "running the model"
        conn.send(("stage", stage))
        outputs = []
        for feed in spec["inputs"]:
            vm.set_input("main", *(tvm.runtime.tensor(a, dev) for a in feed))
            vm.invoke_stateful("main")
            outputs.append(output_arrays(vm.get_outputs("main"), tvm.runtime.Tensor))
        if "base_kb" in memory:  # the peak of loading the model and its first calls, as the host's probe reads it
            for _ in range(MEMORY_CALLS - len(spec["inputs"])):
                vm.invoke_stateful("main")
            try:
                memory = {"memory": json.loads(session.get_function("tvmharness.memory_since")(memory["base_kb"]))}
            except Exception as err:
                memory = {"memory_error": f"kit {kit} could not read its peak memory: {one_line(err)}"}
        stage = "timing the model"
        conn.send(("stage", f"timing ({spec['repeats']} repeats)"))
        vm.set_input("main", *(tvm.runtime.tensor(a, dev) for a in spec["inputs"][0]))
        for _ in range(spec["warmup"]):
            vm.invoke_stateful("main")
        # Timed on the kit: one call per sample, like every other engine's protocol; all in one
        # request unless paced (then one request per sample, the model kept running in between).
        if spec["span_s"]:
            timer = vm.time_evaluator("invoke_stateful", dev, number=1, repeat=1)
            samples = [timer("main").results[0] * 1e3
                       for _ in paced(spec["repeats"], spec["span_s"], lambda: vm.invoke_stateful("main"))]
        else:
            timer = vm.time_evaluator("invoke_stateful", dev, number=1, repeat=spec["repeats"])
            samples = [s * 1e3 for s in timer("main").results]
        conn.send(("result", {"info": info, "outputs": outputs, "samples_ms": samples,
                              "upload_seconds": round(upload_seconds, 3), **memory}))
    except NoKitError as err:
        conn.send(("error", NO_KIT, str(err)))
    except KitUnreachable as err:
        conn.send(("error", KIT_LOST, str(err), err.kit))
    except Exception as err:  # report any failure as the job's, with the stage it happened in
        conn.send(("error", _kind(err), f"{stage}: {type(err).__name__}: {one_line(err)}"))


def _kit_info(session) -> dict:
    """What a kit started by this harness says of itself; a plain TVM server says nothing."""
    try:
        return json.loads(session.get_function("tvmharness.kit_info")())
    except Exception:
        return {}


def _memory_mark(session, kit: str) -> dict:
    """{"base_kb"}: the kit's resident memory before the model is loaded, its peak reset to it; or
    {"memory_error"} saying why the kit cannot (the row goes on without the figure)."""
    try:
        mark = session.get_function("tvmharness.memory_mark")
    except Exception:
        return {"memory_error": f"kit {kit} does not measure memory: TVM's own RPC server, or a `tvmharness devkit "
                                "serve` older than this harness (serve it again with this one)"}
    try:
        return {"base_kb": mark()}
    except Exception as err:  # e.g. /proc/self/clear_refs not writable on the board's kernel
        return {"memory_error": f"kit {kit} could not mark its memory: {one_line(err)}"}


def _kind(err: Exception) -> str:
    text = str(err)
    if "RPCSessionTimeoutError" in text:  # the kit's server ended a session that overran
        return KIT_HUNG
    return KIT_LOST if isinstance(err, OSError) or any(w in text for w in LOST_WORDS) else JOB_FAILED
