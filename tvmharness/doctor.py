"""What this machine can do with tvmharness: versions, TVM's build flags, compilers, CPU, GPU."""

from __future__ import annotations

import os
import shutil
import subprocess

from .gpu import NO_GPU_FIX, cuda_status, ort_cuda_status, torch_cuda_status
from .provenance import cores_text, cpu_info, installed
from .targets import c_library_package, lacks_c_library

TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"  # the Makefile's TORCH_INDEX default


def _check(name: str, ok: bool, detail: str, fix: str = "", required: bool = False) -> dict:
    """A row; a `required` one that is not ok makes `doctor` exit 1 (the rest: features this host may lack)."""
    return {"check": name, "ok": ok, "detail": detail, "fix": "" if ok else fix, "required": required}


def package_checks() -> list[dict]:
    """Each package tvmharness depends on, installed at a version its pins allow (TVM's FFI must be the
    one the wheel was built against: a newer one crashes MetaSchedule). onnxruntime-gpu stands in for
    onnxruntime, as the README's GPU install has it, and xgboost for xgboost-cpu (provenance.STAND_INS)."""
    import importlib.metadata

    from packaging.requirements import Requirement

    rows = []
    for text in importlib.metadata.requires("tvmharness") or []:
        req = Requirement(text)
        if req.marker is not None:  # an extra's (postgres, test)
            continue
        found = installed(req.name)
        # PyPI's torch for Linux is the CUDA build (several GB): the CPU build comes from PyTorch's own index
        install = f"pip install '{req}'" + (f" --extra-index-url {TORCH_CPU_INDEX}" if req.name in ("torch", "torchvision") else "")
        if found is None:
            rows.append(_check(req.name, False, "not installed", f"{install} (in a checkout: make setup)", required=True))
            continue
        name, version = found
        ok = req.specifier.contains(version, prereleases=True)
        rows.append(_check(f"{name} {version}", ok, "installed" if ok else f"tvmharness needs {req}",
                           f"{install} (in a checkout, make setup installs the pinned set)", required=True))
    return rows


def tvm_checks() -> list[dict]:
    """TVM imports, with LLVM (CPU targets) and the CUDA code generator; each probe's failure is a row."""
    try:
        import tvm

        info = tvm.support.libinfo()
    except Exception as err:  # a wheel that does not load (a mismatched apache-tvm-ffi, a missing library)
        return [_check("TVM imports", False, f"{type(err).__name__}: {err}", "pip install the pinned apache-tvm and "
                       "apache-tvm-ffi (`tvmharness doctor` lists their pins; in a checkout: make setup)", required=True)]
    try:
        llvm = (f"LLVM {tvm.target.codegen.llvm_version_major()}, host CPU "
                f"'{tvm.target.codegen.llvm_get_system_cpu()}'")
    except Exception as err:
        llvm = f"LLVM does not answer: {type(err).__name__}: {err}"
    rows = [_check("TVM LLVM backend", info.get("USE_LLVM") == "ON" and llvm.startswith("LLVM "), llvm,
                   "install an apache-tvm wheel built with LLVM", required=True),
            _check("TVM CUDA code generator", tvm.get_global_func("target.build.cuda", allow_missing=True) is not None,
                   f"USE_CUDA={info.get('USE_CUDA')}", "install an apache-tvm wheel built with CUDA")]
    status = cuda_status()
    rows.append(_check("CUDA device (TVM)", status.usable, status.reason, NO_GPU_FIX))
    return rows


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
    cpu = cpu_info()
    result = [*package_checks(), *tvm_checks()]
    for name, probe in (("CUDA in PyTorch", torch_cuda_status), ("CUDA in ONNX Runtime", ort_cuda_status)):
        try:
            usable, why = probe()
        except Exception as err:  # the package itself does not import: its row above says so
            usable, why = False, f"{type(err).__name__}: {err}"
        result.append(_check(name, usable, why, "see README 'GPU machines' for the CUDA builds to install"))
    nvcc = _tool_version("nvcc")
    result.append(_check("nvcc", nvcc is not None, nvcc or "not found",
                         "install the CUDA toolkit where CUDA modules are loaded (TVM compiles their kernels with NVRTC then)"))
    result.append(_check("CPU", True, f"{cpu['model']} ({cpu['arch']}, {cores_text(cpu)})"))
    result.append(_check("CPU features", bool(cpu["features"]), " ".join(cpu["features"]) or "none detected",
                         "no SIMD features detected: TVM kernels will be slow"))
    for tool, fix in [("aarch64-linux-gnu-gcc", "apt-get install gcc-aarch64-linux-gnu (cross-compiles for arm targets)"),
                      ("qemu-aarch64-static", "apt-get install qemu-user-static (runs the emulated aarch64 dev kit)")]:
        found = _tool_version(tool)
        result.append(_check(tool, found is not None, found or "not found", fix))
        if found is not None and tool == "aarch64-linux-gnu-gcc" and lacks_c_library(tool):
            result.append(_check(f"{tool} C library", False, "not found: it cannot link an arm target's library",
                                 c_library_package("aarch64")))
    try:
        from tvm.support.cc import get_cc  # the compiler a build links this host's modules with

        compiler = get_cc()
    except Exception:  # TVM does not import (its row says so): the compiler it would look for first
        compiler = os.environ.get("CXX") or os.environ.get("CC") or "g++"
    found = _tool_version(compiler) if compiler else None
    if not compiler:
        missing = "none of $CXX, $CC, g++, gcc, clang++, clang, c++, cc"
    elif compiler in (os.environ.get("CXX"), os.environ.get("CC")):
        missing = f"{compiler} (from $CXX or $CC) not found"
    else:
        missing = f"{compiler} not found"
    result.append(_check("C++ compiler", found is not None, found or missing,
                         "apt-get install g++ (it links every TVM module), or set CXX to a compiler that is installed", True))
    return result
