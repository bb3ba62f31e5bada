"""Apache TVM: the model compiled for the target and run on the Relax VM."""

from __future__ import annotations

import os

import numpy as np

from ..build import build_tvm
from ..errors import HarnessError
from ..models import LoadedModel
from ..targets import Target
from .base import Engine, EngineOptions, Session

UNTUNED_NOTE = "untuned: TVM's default CPU kernels (single-threaded, far from what tuning reaches)"


def pin_threads(threads: int) -> int:
    """TVM reads TVM_NUM_THREADS when its thread pool starts (its default here is 1 thread)."""
    os.environ["TVM_NUM_THREADS"] = str(threads)
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
        if target.preset.runs_on != "local":
            raise HarnessError(f"target {target.name} runs on a dev kit", "measure it through a tracker: --tracker HOST:PORT")
        threads = pin_threads(options.threads)
        artifact = self.build(model, target, options)
        import tvm
        from tvm import relax

        dev = tvm.cpu()
        vm = relax.VirtualMachine(tvm.runtime.load_module(str(artifact.library)), dev)

        def run(x: np.ndarray) -> np.ndarray:
            out = vm["main"](tvm.runtime.tensor(x, dev))
            return _first(out).numpy()

        def bind(x: np.ndarray):
            # set_input/invoke_stateful is the same call sequence the RPC path uses.
            vm.set_input("main", tvm.runtime.tensor(x, dev))
            return lambda: vm.invoke_stateful("main")

        notes, details = describe_artifact(artifact)
        if threads != options.threads:
            notes.append(f"TVM runs {threads} threads (TVM_NUM_THREADS was set after its pool started)")
        return Session(engine=self.name, run=run, bind=bind, artifact=artifact.library,
                       artifact_bytes=artifact.size_bytes, cache_hit=artifact.cache_hit, threads=threads,
                       tuned=artifact.tuned, notes=notes, details=details)


def describe_artifact(artifact) -> tuple[list[str], dict]:
    """What a row says of the build it measured: tuned or not, and its provenance."""
    tuning = artifact.manifest.get("tuning_records")
    notes = ([f"tuned: records for {tuning['tasks_tuned']} of {tuning['tasks']} tasks, {tuning['trials']} trials"]
             if tuning else [UNTUNED_NOTE])
    details = {"build_key": artifact.manifest["build_key"][:16], "artifact_dir": str(artifact.dir),
               "build_seconds": artifact.manifest["build_seconds"], "tuning_records": tuning}
    return notes, details


class TVMUntunedEngine(TVMEngine):
    """TVM's default kernels, ignoring any records: the reference tuning is measured against."""

    name = "tvm-untuned"
    use_records = False


def _first(out):
    """A Relax function returns a tuple for torch models (the frontend keeps it) and a tensor for ONNX."""
    import tvm

    while not isinstance(out, tvm.runtime.Tensor):
        out = out[0]
    return out
