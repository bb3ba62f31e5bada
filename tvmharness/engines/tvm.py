"""Apache TVM: the model compiled for the target and run on the Relax VM."""

from __future__ import annotations

import os
import time

import numpy as np

from ..build import build_tvm
from ..data import Feed
from ..errors import HarnessError
from ..measure import output_arrays
from ..models import LoadedModel
from ..native_log import NATIVE_LOG
from ..targets import Target
from .base import Engine, EngineOptions, Session

PROFILE_RUNS = 10  # calls the operator profile takes its median over (fewer for slow models, see below)
PROFILE_BUDGET_S = 2.0
UNTUNED_NOTE = "untuned: TVM's default CPU kernels (single-threaded, far from what tuning reaches)"
UNTUNED_GPU_NOTE = "untuned: TVM's default GPU schedules (dlight rules, far from what tuning reaches)"


def pin_threads(threads: int) -> int:
    """TVM reads TVM_NUM_THREADS when its thread pool starts (its default here is 1 thread). Unless told
    otherwise (TVM_BIND_THREADS), it also binds the calling thread to one core then, and every engine
    timed after it in the process would run there: a nightly's torch row measured again after TVM ran
    came out 46% slower, on one of the host's two cores."""
    os.environ["TVM_NUM_THREADS"] = str(threads)
    os.environ.setdefault("TVM_BIND_THREADS", "0")
    import tvm

    return tvm.runtime.num_threads()


class TVMEngine(Engine):
    """Built with the target's tuning records where they match the model's tasks."""

    name = "tvm"
    use_records = True

    def version(self) -> str:
        import tvm

        return tvm.__version__

    def build(self, model: LoadedModel, target: Target, options: EngineOptions):
        """The artifact for the target, built on this host (cross-compiled for a dev kit)."""
        records_root = options.records_root if self.use_records else None
        return build_tvm(model, target, options.frontend, options.cache_dir, records_root)

    def prepare(self, model: LoadedModel, target: Target, options: EngineOptions) -> Session:
        self._ready(target, options.threads)  # before the build: a missing GPU is the cause to report
        return self.open(self.build(model, target, options), target, options.threads)

    def _ready(self, target: Target, threads: int) -> int:
        if target.preset.runs_on != "local":
            raise HarnessError(f"target {target.name} runs on a dev kit", "measure it through a tracker: --tracker HOST:PORT")
        running = pin_threads(threads)
        if target.on_gpu:
            from ..gpu import require_cuda

            require_cuda(f"target {target.name}")
        return running

    def open(self, artifact, target: Target, threads: int) -> Session:
        """A session on a built artifact: this build, or an earlier one still in the cache."""
        running = self._ready(target, threads)
        import tvm
        from tvm import relax

        dev = tvm.cuda(0) if target.on_gpu else tvm.cpu()
        sync = dev.sync if target.on_gpu else None  # a GPU call returns before its kernels finish
        # On a GPU the CUDA kernels are compiled (NVRTC) here, when the module loads.
        vm = relax.VirtualMachine(tvm.runtime.load_module(str(artifact.library)), dev)

        def run(feed: Feed) -> list[np.ndarray]:
            out = vm["main"](*(tvm.runtime.tensor(a, dev) for a in feed))
            return output_arrays(out, tvm.runtime.Tensor)

        def bind(feed: Feed):
            # set_input/invoke_stateful is the same call sequence the RPC path uses.
            vm.set_input("main", *(tvm.runtime.tensor(a, dev) for a in feed))
            if sync is None:
                return lambda: vm.invoke_stateful("main")

            def call():
                vm.invoke_stateful("main")
                sync()

            return call

        def profile() -> dict[str, float]:
            return profile_operators(vm, "main", PROFILE_RUNS, sync=sync)

        notes, details = describe_artifact(artifact)
        if running != threads:
            notes.append(f"TVM runs {running} threads (TVM_NUM_THREADS was set after its pool started)")
        return Session(engine=self.name, run=run, bind=bind, artifact=artifact.library,
                       artifact_bytes=artifact.size_bytes, cache_hit=artifact.cache_hit, threads=running,
                       tuned=artifact.tuned, notes=notes, profile=profile, details=details)


def describe_artifact(artifact) -> tuple[list[str], dict]:
    """What a row says of the build it measured: tuned or not, and its provenance."""
    tuning = artifact.manifest.get("tuning_records")
    notes = ([f"tuned: records for {tuning['tasks_tuned']} of {tuning['tasks']} tasks, {tuning['trials']} trials "
              f"(records sha256 {str(tuning['sha256'])[:16]})"]
             if tuning else [UNTUNED_GPU_NOTE if artifact.manifest["target"].get("device") == "cuda" else UNTUNED_NOTE])
    elsewhere = {str(directory): cores for directory, cores in artifact.records_elsewhere}
    built_for = artifact.manifest["target"]
    notes += [f"{directory} holds records for {built_for['name']} tuned at thread count {cores}, which this build for "
              f"thread count {built_for['tvm'].get('num-cores')} cannot use" for directory, cores in elsewhere.items()]
    if artifact.emulated_records is not None:
        notes.append(f"{artifact.emulated_records} holds records tuned on an emulated kit, which a board's build never "
                     "uses (its timings say nothing of a board's speed): tune with --tracker on the board's kits")
    details = {"build_key": artifact.manifest["build_key"][:16], "artifact_dir": str(artifact.dir),
               "build_seconds": artifact.manifest["build_seconds"], "tuning_records": tuning}
    if elsewhere:
        details["records_at_other_threads"] = elsewhere
    if artifact.manifest.get("tvm_warnings"):  # builds cached before the manifest kept them have none
        details["tvm_warnings"] = artifact.manifest["tvm_warnings"]
        details["tvm_log"] = str(artifact.dir / NATIVE_LOG)
    return notes, details


class TVMUntunedEngine(TVMEngine):
    """TVM's default kernels, ignoring any records: the reference tuning is measured against."""

    name = "tvm-untuned"
    use_records = False


def profile_operators(vm, func: str, runs: int, budget_s: float = PROFILE_BUDGET_S, sync=None) -> dict[str, float]:
    """Milliseconds per operator (compiled kernel) of one call of `func` on its bound input, median
    over `runs` calls (at least 3; fewer than `runs` once `budget_s` is spent). TVM 0.27's Relax VM has no profiler (`profile=True` and `vm.profile` are gone),
    so this times each call instruction through the VM's instrument hook; the VM's own builtins
    (allocation, shape checks) are left out. Times include the hook's few microseconds per call:
    compare profiles with each other, not with the end-to-end latency. On a GPU (`sync` given) the
    device is synchronized around each kernel, so a kernel's time is its own, not its launch's."""
    per_run: list[dict[str, float]] = []
    started: dict[str, int] = {}

    def instrument(_func, symbol, before_run, _ret, *_args):
        if symbol.startswith("vm.builtin."):
            return 0
        if sync is not None:
            sync()
        now = time.perf_counter_ns()
        if before_run:
            started[symbol] = now
        elif symbol in started:
            totals = per_run[-1]
            totals[symbol] = totals.get(symbol, 0.0) + (now - started.pop(symbol)) / 1e6
        return 0

    vm.set_instrument(instrument)
    deadline = time.perf_counter() + budget_s
    try:
        for i in range(runs):
            if i >= 3 and time.perf_counter() > deadline:
                break
            per_run.append({})
            vm.invoke_stateful(func)
    finally:
        vm.set_instrument(None)
    ops = sorted(set().union(*per_run))
    return {op: round(float(np.median([r.get(op, 0.0) for r in per_run])), 6) for op in ops}
