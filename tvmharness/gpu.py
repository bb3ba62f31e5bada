"""Whether this machine can run CUDA code, and why not: for TVM, PyTorch and ONNX Runtime alike.

TVM 0.27 builds CUDA modules anywhere (its code generator is in the compiler library and emits
CUDA C++); TVM's CUDA runtime (libtvm_runtime_cuda.so) compiles that source with NVRTC when the
module is loaded, and it loads only where the NVIDIA driver's libcuda.so.1 is installed. So a
build for a GPU (or a Jetson) can happen on a machine without one; running needs the GPU.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass

from .errors import HarnessError

NO_GPU_FIX = "run the cuda target on a machine with an NVIDIA GPU and its driver (README: 'GPU machines')"


@dataclass(frozen=True)
class CudaStatus:
    usable: bool
    reason: str  # why not, or what the GPU is
    name: str = ""
    arch: str = ""  # sm_XY


def _driver_error() -> str | None:
    try:
        ctypes.CDLL("libcuda.so.1")
        return None
    except OSError as err:
        return str(err)


@functools.lru_cache(maxsize=1)
def cuda_status() -> CudaStatus:
    """TVM's view, checked cause by cause: built with CUDA, driver library, runtime loaded, a device."""
    import tvm

    if tvm.support.libinfo().get("USE_CUDA") != "ON":
        return CudaStatus(False, "this TVM build has no CUDA support (USE_CUDA is OFF)")
    driver = _driver_error()
    if driver is not None:
        return CudaStatus(False, f"no NVIDIA driver here: libcuda.so.1 does not load ({driver})")
    if not tvm.runtime.enabled("cuda"):  # `import tvm` loads its CUDA runtime where the driver is
        return CudaStatus(False, "TVM's CUDA runtime (libtvm_runtime_cuda.so) did not load beside the driver")
    try:
        dev = tvm.cuda(0)
        if not dev.exist:
            return CudaStatus(False, "the NVIDIA driver is installed but no CUDA device is visible")
        return CudaStatus(True, f"{dev.device_name}, compute capability {dev.compute_version}", dev.device_name,
                          "sm_" + dev.compute_version.replace(".", ""))
    except Exception as err:  # the driver raises when it cannot start (no device node, version mismatch)
        return CudaStatus(False, f"the CUDA driver could not start: {err}")


def gpu_provenance() -> dict | None:
    """GPU 0 as a GPU row's numbers depend on it: name, architecture, memory, driver and the CUDA
    PyTorch was built for. None where no GPU is usable (a CPU host's provenance stays as it was)."""
    status = cuda_status()
    if not status.usable:
        return None
    import tvm

    dev = tvm.cuda(0)
    info = {"name": status.name, "arch": status.arch, "memory_gb": round(dev.total_global_memory / 2**30, 1),
            "driver": _driver_version(dev.driver_version)}
    try:
        import torch

        info["torch_cuda"] = torch.version.cuda
    except ImportError:
        pass
    return info


def _driver_version(code) -> str:
    """CUDA's driver API version, 13000 -> '13.0' (what the driver supports, as cudaDriverGetVersion says)."""
    try:
        code = int(code)
    except (TypeError, ValueError):
        return str(code)
    return f"{code // 1000}.{code % 1000 // 10}"


def require_cuda(what: str) -> CudaStatus:
    status = cuda_status()
    if not status.usable:
        raise HarnessError(f"no usable GPU for {what}: {status.reason}", NO_GPU_FIX + "; `tvmharness doctor` shows the rest")
    return status


def check_local_gpu(target) -> None:
    """A GPU target measured on this machine needs its GPU: say so before anything runs (a preset
    that names its arch resolves without one, and building for a GPU needs none)."""
    if target.on_gpu and target.preset.runs_on == "local":
        require_cuda(f"target {target.name}")


def detected_cuda_target() -> dict:
    """The TVM target dict of GPU 0: its architecture and the limits MetaSchedule schedules by."""
    status = cuda_status()
    if not status.usable:  # building needs no GPU, only an arch: say how to give one
        raise HarnessError(f"no usable GPU for the cuda target: {status.reason}; it reads its arch from this machine's GPU",
                           NO_GPU_FIX + "; to build a GPU module here (compile), name its arch: --target jetson-orin, or "
                           "a preset of your own with [tvm] kind = \"cuda\", arch = \"sm_86\" and device = \"cuda\"")
    import tvm

    dev = tvm.cuda(0)
    return {"kind": "cuda", "arch": status.arch,
            "max_threads_per_block": dev.max_threads_per_block,
            "max_shared_memory_per_block": dev.max_shared_memory_per_block,
            "thread_warp_size": dev.warp_size, "registers_per_block": 65536}


def torch_cuda_status() -> tuple[bool, str]:
    import torch

    if torch.version.cuda is None:
        return False, f"PyTorch {torch.__version__} is a CPU build (install a CUDA build: README 'GPU machines')"
    if not torch.cuda.is_available():
        return False, f"PyTorch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU"
    return True, f"PyTorch {torch.__version__} on {torch.cuda.get_device_name(0)}"


def ort_cuda_status() -> tuple[bool, str]:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False, (f"onnxruntime {ort.__version__} has no CUDA execution provider "
                       "(install onnxruntime-gpu in its place: README 'GPU machines')")
    return True, f"onnxruntime {ort.__version__} with the CUDA execution provider"
