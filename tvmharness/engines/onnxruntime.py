"""ONNX Runtime, CPU execution provider, on the host."""

from __future__ import annotations

import numpy as np

from ..errors import HarnessError
from ..frontend import onnx_file
from ..models import LoadedModel
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
        path, cache_hit = onnx_file(model, options.cache_dir)
        so = ort.SessionOptions()
        so.intra_op_num_threads = options.threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run(x: np.ndarray) -> np.ndarray:
            return session.run(None, {name: x})[0]

        def bind(x: np.ndarray):
            feed = {name: x}
            return lambda: session.run(None, feed)

        return Session(engine=self.name, run=run, bind=bind, artifact=path, artifact_bytes=path.stat().st_size,
                       cache_hit=cache_hit, threads=options.threads, notes=["CPUExecutionProvider"])
