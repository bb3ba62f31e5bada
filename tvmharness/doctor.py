"""What this machine can do with tvmharness: versions, TVM's build flags, compilers, CPU, GPU."""

from __future__ import annotations

import shutil
import subprocess

from .gpu import NO_GPU_FIX, cuda_status, ort_cuda_status, torch_cuda_status
from .provenance import cpu_info, versions


def _check(name: str, ok: bool, detail: str, fix: str = "") -> dict:
    return {"check": name, "ok": ok, "detail": detail, "fix": "" if ok else fix}


def _tool_version(tool: str) -> str | None:
    path = shutil.which(tool)
    if path is None:
        return None
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20)
        lines = (out.stdout or out.stderr).strip().splitlines()
        numbered = [ln for ln in lines if any(c.isdigit() for c in ln)]  # nvcc: a copyright year, then "release 13.0"
        line = next((ln for ln in numbered if "release" in ln), numbered[0] if numbered else lines[0] if lines else "present")
        return f"{path}: {line.strip()}"
    except (OSError, subprocess.SubprocessError):
        return path


def checks() -> list[dict]:
    import tvm

    info = tvm.support.libinfo()
    cpu = cpu_info()
    result = [_check(f"{name} {ver}", True, "installed") for name, ver in versions().items() if ver]
    result.append(_check("TVM LLVM backend", info.get("USE_LLVM") == "ON",
                         f"LLVM {tvm.target.codegen.llvm_version_major()}, host CPU '{tvm.target.codegen.llvm_get_system_cpu()}'",
                         "install an apache-tvm wheel built with LLVM"))
    result.append(_check("TVM CUDA code generator", tvm.get_global_func("target.build.cuda", allow_missing=True) is not None,
                         f"USE_CUDA={info.get('USE_CUDA')}", "install an apache-tvm wheel built with CUDA"))
    status = cuda_status()
    result.append(_check("CUDA device (TVM)", status.usable, status.reason, NO_GPU_FIX))
    for name, (usable, why) in (("CUDA in PyTorch", torch_cuda_status()), ("CUDA in ONNX Runtime", ort_cuda_status())):
        result.append(_check(name, usable, why, "see README 'GPU machines' for the CUDA builds to install"))
    nvcc = _tool_version("nvcc")
    result.append(_check("nvcc", nvcc is not None, nvcc or "not found",
                         "install the CUDA toolkit where CUDA modules are loaded (TVM compiles their kernels with NVRTC then)"))
    result.append(_check("CPU", True, f"{cpu['model']} ({cpu['arch']}, {cpu['logical_cores']} logical cores)"))
    result.append(_check("CPU features", bool(cpu["features"]), " ".join(cpu["features"]) or "none detected",
                         "no SIMD features detected: TVM kernels will be slow"))
    for tool, fix in [("aarch64-linux-gnu-gcc", "apt-get install gcc-aarch64-linux-gnu (cross-compiles for arm targets)"),
                      ("qemu-aarch64-static", "apt-get install qemu-user-static (runs the emulated aarch64 dev kit)"),
                      ("g++", "apt-get install g++ (links TVM modules)")]:
        found = _tool_version(tool)
        result.append(_check(tool, found is not None, found or "not found", fix))
    return result
