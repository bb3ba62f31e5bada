"""PyTorch on the target's device (this CPU, or the GPU of a cuda target): eager, the fp32
baseline, and `torch.compile` (TorchInductor) where it works."""

from __future__ import annotations

import io

import numpy as np

from ..data import Feed
from ..errors import HarnessError
from ..measure import output_arrays
from ..models import LoadedModel, copy_module
from ..targets import Target
from .base import Engine, EngineOptions, Session


class TorchEngine(Engine):
    name = "torch"
    compiled = False

    def version(self) -> str:
        import torch

        return torch.__version__

    def prepare(self, model: LoadedModel, target: Target, options: EngineOptions) -> Session:
        import torch

        if model.torch_module is None:
            raise HarnessError(f"'{model.name}' is an ONNX file; the {self.name} engine needs a torch model",
                               "measure it with tvm and onnxruntime, or give a .pt2 file")
        if target.preset.runs_on != "local":
            raise HarnessError(f"the {self.name} engine runs on this host, not on target {target.name}", "drop it for remote targets")
        torch.set_num_threads(options.threads)
        module, notes, sync = model.torch_module, ["eager"], None
        if target.on_gpu:
            from ..gpu import torch_cuda_status

            usable, why = torch_cuda_status()
            if not usable:
                raise HarnessError(f"the {self.name} engine cannot run on target {target.name}: {why}",
                                   "install a CUDA build of PyTorch (README: 'GPU machines'), or drop the engine")
            # fp32 means fp32: TF32 convolutions (cuDNN's default) would differ from the other engines by ~1e-3.
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
            module, sync = copy_module(module).to("cuda"), torch.cuda.synchronize
            notes = ["eager", f"GPU: {torch.cuda.get_device_name(0)}"]
        device = "cuda" if target.on_gpu else "cpu"
        if self.compiled:
            module, notes[0] = torch.compile(module), "torch.compile (inductor)"

        def forward(tensors):
            with torch.inference_mode():
                return module(*tensors)

        def on_device(feed: Feed) -> list:
            return [torch.from_numpy(a).to(device) for a in feed]

        def run(feed: Feed) -> list[np.ndarray]:
            return output_arrays(forward(on_device(feed)), torch.Tensor, lambda t: t.cpu().numpy())

        def bind(feed: Feed):
            tensors = on_device(feed)
            if sync is None:
                return lambda: forward(tensors)

            def call():  # a GPU call returns before its kernels finish: time until they have
                forward(tensors)
                sync()

            return call

        buffer = io.BytesIO()
        torch.save(model.torch_module.state_dict(), buffer)
        return Session(engine=self.name, run=run, bind=bind, artifact=None, artifact_bytes=buffer.tell(),
                       cache_hit=None, threads=torch.get_num_threads(), notes=notes)


class TorchCompileEngine(TorchEngine):
    """torch.compile's default backend (TorchInductor): compiled on the first call, which the
    agreement check makes before anything is timed."""

    name = "torch-compile"
    compiled = True
