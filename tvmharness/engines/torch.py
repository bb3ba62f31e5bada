"""PyTorch eager on the host CPU: the fp32 baseline."""

from __future__ import annotations

import io

import numpy as np

from ..errors import HarnessError
from ..models import LoadedModel
from ..targets import Target
from .base import Engine, EngineOptions, Session


class TorchEngine(Engine):
    name = "torch"

    def version(self) -> str:
        import torch

        return torch.__version__

    def prepare(self, model: LoadedModel, target: Target, options: EngineOptions) -> Session:
        import torch

        if model.torch_module is None:
            raise HarnessError(f"'{model.name}' is an ONNX file; the torch engine needs a torch model",
                               "measure it with tvm and onnxruntime, or give a .pt2 file")
        if target.preset.runs_on != "local":
            raise HarnessError(f"the torch engine runs on this host, not on target {target.name}", "drop it for remote targets")
        torch.set_num_threads(options.threads)
        module = model.torch_module

        def run(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return _first(module(torch.from_numpy(x))).numpy()

        def bind(x: np.ndarray):
            tensor = torch.from_numpy(x)

            def call():
                with torch.inference_mode():
                    module(tensor)

            return call

        buffer = io.BytesIO()
        torch.save(module.state_dict(), buffer)
        return Session(engine=self.name, run=run, bind=bind, artifact=None, artifact_bytes=buffer.tell(),
                       cache_hit=None, threads=torch.get_num_threads(), notes=["eager"])


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out
