"""ONNX Runtime on the target's device: the CPU execution provider, or the CUDA one for a cuda target."""

from __future__ import annotations

import numpy as np

from ..data import Feed, feed_dict
from ..errors import HarnessError
from ..export import onnx_file
from ..models import LoadedModel, onnx_weights_files
from ..targets import Target
from .base import Engine, EngineOptions, Session


class OnnxRuntimeEngine(Engine):
    name = "onnxruntime"

    def version(self) -> str:
        import onnxruntime

        return onnxruntime.__version__

    def prepare(self, model: LoadedModel, target: Target, options: EngineOptions) -> Session:
        import onnxruntime as ort

        if target.preset.runs_on != "local":
            raise HarnessError(f"the onnxruntime engine runs on this host, not on target {target.name}", "drop it for remote targets")
        if target.on_gpu:
            from ..gpu import ort_cuda_status

            usable, why = ort_cuda_status()
            if not usable:
                raise HarnessError(f"the onnxruntime engine cannot run on target {target.name}: {why}",
                                   "install onnxruntime-gpu (README: 'GPU machines'), or drop the engine")
        path, cache_hit = onnx_file(model, options.cache_dir)
        so = ort.SessionOptions()
        so.intra_op_num_threads = options.threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        provider = "CUDAExecutionProvider" if target.on_gpu else "CPUExecutionProvider"
        # TF32 off on the GPU, as for PyTorch: fp32 means fp32 (ORT's CUDA provider has it on by default)
        session = ort.InferenceSession(str(path), so, providers=[(provider, {"use_tf32": "0"}) if target.on_gpu else provider])
        if session.get_providers()[0] != provider:  # ORT falls back to the CPU silently; never a fake GPU row
            raise HarnessError(f"onnxruntime could not start its {provider} (it offered {session.get_providers()})",
                               "check the CUDA and cuDNN versions onnxruntime-gpu needs against the driver's")
        names = [i.name for i in session.get_inputs()]

        def run(feed: Feed) -> list[np.ndarray]:
            return session.run(None, feed_dict(model.inputs, feed, names))

        def bind(feed: Feed):
            # The inputs are bound once and the outputs left in the engine's memory, as TVM's and PyTorch's
            # are (session.run would time its feed and its copies to numpy too: ~28% of a small model's
            # call); run_with_iobinding returns once the outputs are computed.
            device = "cuda" if target.on_gpu else "cpu"
            binding = session.io_binding()
            for name, array in feed_dict(model.inputs, feed, names).items():
                binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, device, 0))
            for output in session.get_outputs():
                binding.bind_output(output.name, device)
            return lambda: session.run_with_iobinding(binding)

        size = sum(f.stat().st_size for f in [path, *onnx_weights_files(path)])  # weights kept beside it count too
        return Session(engine=self.name, run=run, bind=bind, artifact=path, artifact_bytes=size,
                       cache_hit=cache_hit, threads=options.threads, notes=[provider])
