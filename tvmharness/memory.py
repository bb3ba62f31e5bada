"""Peak memory of running a model, the figure an edge board's RAM must hold.

A fresh process imports the engine's runtime, notes its resident memory, loads the row's artifact
(TVM's model.so, the ONNX file, the ExportedProgram), runs it, and reports its peak resident memory
(Linux's high-water mark) above that mark: weights, activations and what the runtime allocates for
the model, and nothing of the harness or the other engines. Run as a module, this file is that process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from .cache import process_temp_folder
from .errors import HarnessError, one_line
from .provenance import worker_environment
from .remote import die_with_parent
from .remote.kit_server import MEMORY_CALLS, mark_memory, memory_since  # the kit's own probe: one way to read a peak

ENGINES = ("tvm", "tvm-untuned", "onnxruntime", "torch")


def measure_memory(engine: str, artifact: Path, feed: dict[str, np.ndarray], threads: int,
                   timeout_s: float = 300) -> dict:
    """{"peak_mb", "resident_mb"} of running `artifact` on `engine` in a process of its own, over
    what the runtime holds before it loads anything. Raises HarnessError when the probe fails."""
    with process_temp_folder("tvmharness-memory-") as tmp:
        inputs = Path(tmp) / "inputs.npz"
        np.savez(inputs, **feed)  # by input name, in the model's order
        # One malloc arena: with one per thread, ONNX Runtime's peak on resnet18 took 142 or 162 MB from run to
        # run, by which thread ran which op; with one it is the same every run, and the higher of the two.
        proc = subprocess.run([sys.executable, "-m", "tvmharness.memory", engine, str(artifact), str(inputs), str(threads),
                               str(os.getpid())], capture_output=True, text=True, timeout=timeout_s,
                              env=os.environ | {"MALLOC_ARENA_MAX": "1"} | worker_environment())
    if proc.returncode != 0:
        last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
        raise HarnessError(f"measuring the memory of {artifact} on {engine} failed: {one_line(last)}",
                           f"run the probe by hand to see all it says: python -m tvmharness.memory {engine} {artifact} "
                           f"INPUTS.npz {threads}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _load(engine: str, artifact: str, threads: int):
    """The engine's runtime imported and set up first on a trivial model (not counted: what it holds
    for any model), then a loader for the artifact. TVM needs no warm-up: a first model measured the
    same as one loaded after another."""
    if engine.startswith("tvm"):
        os.environ["TVM_NUM_THREADS"] = str(threads)
        import tvm
        from tvm import relax

        def load():
            vm = relax.VirtualMachine(tvm.runtime.load_module(artifact), tvm.cpu())
            return lambda feed: vm["main"](*(tvm.runtime.tensor(a) for a in feed.values()))

        return load
    if engine == "onnxruntime":
        import onnxruntime as ort
        from onnx import TensorProto, helper

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        # A first session sets up ONNX Runtime itself (about 10 MB here): the runtime's, not the model's.
        tensor = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in "xy"]
        warm = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "warm", tensor[:1], tensor[1:]),
                                 opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
        ort.InferenceSession(warm.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(
            None, {"x": np.zeros(1, np.float32)})

        def load():
            session = ort.InferenceSession(artifact, options, providers=["CPUExecutionProvider"])
            names = [i.name for i in session.get_inputs()]  # an exporter drops inputs the model never reads
            return lambda feed: session.run(None, {name: feed[name] for name in names})

        return load
    import torch

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:  # a first load imports much of torch.export (~80 MB): the runtime's, not the model's
        warm = Path(tmp) / "warm.pt2"
        torch.export.save(torch.export.export(torch.nn.Linear(2, 2), (torch.zeros(1, 2),)), str(warm))
        torch.export.load(str(warm)).module()(torch.zeros(1, 2))

    def load():
        module = torch.export.load(artifact).module()

        def call(feed):
            with torch.inference_mode():
                return module(*(torch.from_numpy(a) for a in feed.values()))

        return call

    return load


def _probe(engine: str, artifact: str, inputs: str, threads: int) -> dict:
    with np.load(inputs) as stored:
        feed = {name: stored[name] for name in stored.files}
    load = _load(engine, artifact, threads)
    base = mark_memory()
    run = load()
    for _ in range(MEMORY_CALLS):
        run(feed)
    return memory_since(base)


if __name__ == "__main__":
    if len(sys.argv) > 5:  # the run's pid: no orphan probe of a run killed outright (set here, not between
        die_with_parent(signal.SIGTERM, int(sys.argv[5]))  # fork and exec in a process of threads)
    print(json.dumps(_probe(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))))
