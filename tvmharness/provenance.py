"""Where a number came from: host, CPU, versions, git commit."""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import math
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

from .cache import content_hash

# CPU features that decide what kernels a compiler can use on this host.
NOTABLE_X86_FEATURES = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni",
    "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",
    "amx_tile", "amx_int8", "amx_bf16",
)
NOTABLE_ARM_FEATURES = ("asimd", "asimddp", "i8mm", "bf16", "sve", "sve2", "fphp", "asimdhp")

PACKAGES = ("apache-tvm", "apache-tvm-ffi", "torch", "torchvision", "onnx", "onnxruntime", "numpy", "xgboost-cpu",
            "scikit-learn", "torch-pruning")  # the last two: the digits data, k-means clustering, structured pruning


def threads_text(threads: list[int], cpu: dict) -> str:
    """The thread counts rows ran at on this host, and where one is more than the cores it could use:
    the engines' threads then take turns on them, and every latency reads slower than at fewer."""
    cores = cpu.get("usable_cores") or cpu.get("logical_cores")
    text = "/".join(map(str, threads))
    over = cores and max((t for t in threads if t), default=0) > cores
    return text + (f" (oversubscribed: more threads than the {cores} usable cores, so latencies read slow)" if over else "")


@functools.cache
def cpu_info() -> dict:
    """Model name and the notable features of this host's CPU, from /proc/cpuinfo."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model name") and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    notable = NOTABLE_X86_FEATURES if platform.machine() == "x86_64" else NOTABLE_ARM_FEATURES
    return {
        "model": model,
        "arch": platform.machine(),
        "logical_cores": os.cpu_count() or 1,
        "usable_cores": usable_cores(),
        "features": [f for f in notable if f in flags],
    }


def usable_cores() -> int:
    """The CPUs this process may run on: its affinity (taskset, a CI runner's cpuset), cut to its
    cgroup's CPU quota (docker --cpus) where it has one."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def cores_text(cpu: dict) -> str:
    """A host's cores as reports say them: "8 logical cores", and how many this process could use where fewer."""
    usable = cpu.get("usable_cores")
    return f"{cpu.get('logical_cores')} logical cores" + (f", {usable} usable" if usable and usable != cpu.get("logical_cores") else "")


# Distributions that install the same modules in another build: a GPU machine's onnxruntime-gpu (README:
# GPU machines), a project's full xgboost
STAND_INS = {"onnxruntime": ("onnxruntime-gpu",), "xgboost-cpu": ("xgboost",)}


def installed(name: str) -> tuple[str, str] | None:
    """(distribution, version) of a package tvmharness depends on, or of what stands in for it; None
    where neither is installed."""
    return next(((d, v) for d in (name, *STAND_INS.get(name, ())) if (v := installed_version(d)) is not None), None)


@functools.cache
def versions() -> dict:
    out = {"python": platform.python_version(), "tvmharness": harness_version()}
    for name in PACKAGES:
        found = installed(name)
        if found is not None:
            out[name.removesuffix("-cpu")] = found[1] + (f" ({found[0]})" if found[0] != name else "")
    return out


def installed_version(dist: str) -> str | None:
    """The installed version of a distribution, None where it is not installed."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def harness_version() -> str:
    """The harness's version; where no checkout gives its commit (an installed package), with a hash
    of its code as well: two builds of one version (a wheel of each commit) are then told apart."""
    version = installed_version("tvmharness") or "unknown"
    if git_commit() != "unknown":
        return version
    package = Path(__file__).resolve().parent
    files = sorted(p for p in package.rglob("*") if p.is_file() and p.suffix in (".py", ".toml", ".mako"))
    code = content_hash(*(part for p in files for part in (str(p.relative_to(package)), p.read_bytes())))
    return f"{version} (code {code[:12]})"


@functools.cache
def git_commit() -> str:
    """The commit of the harness code that produced a number ('+dirty' when it has local edits); 'unknown'
    for an installed package, though it lies inside another project's checkout."""
    repo = Path(__file__).resolve().parents[1]
    try:
        top, sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "--show-toplevel", "--short=12", "HEAD"],
                                  capture_output=True, text=True, timeout=10, check=True).stdout.splitlines()
        if Path(top).resolve() != repo:
            return "unknown"
        # a package installed into a project's own top folder (pip install --target .): not its files
        subprocess.run(["git", "-C", str(repo), "ls-files", "--error-unmatch", "tvmharness/__init__.py"],
                       capture_output=True, timeout=10, check=True)
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, ValueError, subprocess.SubprocessError):
        return "unknown"


# Set for worker processes (MetaSchedule's builders and runners, the memory probe), which `python -m`
# starts from the user's folder: with it, that folder is not first on their sys.path, so a random.py
# or logging.py of the user's project does not take the standard library's place there.
SAFE_PATH = "PYTHONSAFEPATH"


def worker_environment() -> dict[str, str]:
    """What a worker process's environment adds: SAFE_PATH, and, where this harness is imported only
    because `python -m tvmharness` started from its uninstalled checkout (the first entry of sys.path),
    that checkout on PYTHONPATH: without the first entry, a worker could not import it."""
    added = {SAFE_PATH: "1"}
    root = Path(__file__).resolve().parent.parent
    entries = [Path(e or ".").resolve() for e in sys.path]
    if entries and entries[0] == root and root not in entries[1:]:
        added["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p)
    return added


@contextlib.contextmanager
def worker_environment_kept():
    """TVM_NUM_THREADS, TVM_BIND_THREADS and worker_environment's as they were once a run or tune ends:
    each sets them for its own TVM sessions and worker processes, and a notebook's later processes (an
    artifact's `load` lines) should not inherit them."""
    before = {name: os.environ.get(name) for name in ("TVM_NUM_THREADS", "TVM_BIND_THREADS", SAFE_PATH, "PYTHONPATH")}
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


HOST_LABEL = "TVMHARNESS_HOST"  # the name a host's series go under, where its hostname changes (a CI runner, a container)


def host() -> dict:
    return {"hostname": os.environ.get(HOST_LABEL) or socket.gethostname(), "os": platform.platform(), "cpu": cpu_info()}


def snapshot() -> dict:
    """Everything a run's numbers depend on outside the recipe (and the GPU, where this host has one)."""
    from .gpu import gpu_provenance

    gpu = gpu_provenance()
    return {"host": host() | ({"gpu": gpu} if gpu else {}), "versions": versions(), "git_commit": git_commit()}
