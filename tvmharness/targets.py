"""Target presets: data files in targets/ that expand to a TVM target, its host and where it runs."""

from __future__ import annotations

import functools
import os
import platform
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from .errors import HarnessError, validation_problems

# A checkout's targets/; an installed package carries them as tvmharness/presets/ (pyproject maps them there).
_INSTALLED_DIR = Path(__file__).resolve().parent / "presets"
TARGETS_DIR = _INSTALLED_DIR if _INSTALLED_DIR.is_dir() else Path(__file__).resolve().parents[1] / "targets"


class TargetPreset(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    arch: Literal["x86_64", "aarch64"]
    runs_on: Literal["local", "rpc"] = "local"
    device: Literal["cpu", "cuda"] = "cpu"  # where the model's kernels run; arch is the host CPU's
    tvm: dict
    host: dict | None = None  # the TVM host target of a GPU target (its CPU-side code)
    cross_compiler: str | None = None
    rpc_keys: list[str] = []  # tracker keys this target's kits usually register under, preferred first

    @model_validator(mode="after")
    def _device_fits_tvm_kind(self):
        kind = self.tvm.get("kind")
        if (kind == "cuda") != (self.device == "cuda"):
            raise ValueError(f'device = "{self.device}" does not fit [tvm] kind = "{kind}": a GPU target has '
                             'device = "cuda" and kind = "cuda", a CPU target neither')
        return self


@dataclass
class Target:
    """A preset resolved on this host: the TVM target dict with every "auto" filled in."""

    preset: TargetPreset
    tvm_dict: dict
    emulated: str = ""  # what emulates the kit it runs on, as the kit says (pipeline.kit_racks): records stand apart

    @property
    def name(self) -> str:
        return self.preset.name

    def tvm_target(self):
        import tvm

        return tvm.target.Target(self.tvm_dict)

    @property
    def on_gpu(self) -> bool:
        return self.preset.device == "cuda"

    @property
    def cpu_dict(self) -> dict:
        """The TVM target its CPU code is built for: the target itself, or a GPU target's host."""
        return self.tvm_dict.get("host") or self.tvm_dict

    @property
    def cpu(self) -> str:
        """LLVM's name for the CPU its code is built for (generic: the triple's baseline)."""
        return self.cpu_dict.get("mcpu") or "generic"

    @functools.cached_property
    def features(self) -> list[str]:
        """The instruction-set features its CPU code may use: LLVM's for its mtriple, mcpu and mattr."""
        return sorted(llvm_features(self.cpu_dict)) if self.cpu_dict.get("kind") == "llvm" else []

    @property
    def cpu_is_build_host(self) -> bool:
        """Built for the CPU of the host that builds it (mcpu = "auto"), not for one the preset names."""
        return (self.preset.host or self.preset.tvm).get("mcpu") == "auto"

    def missing_features(self) -> list[str]:
        """Features its CPU code may use that this host lacks: a module using one dies here with SIGILL.
        None for code of another architecture, which this host never runs."""
        if self.preset.arch != platform.machine() or self.cpu_dict.get("kind") != "llvm":
            return []
        detected = host_llvm_features()
        # A virtual machine hides some system instructions of its CPU (here znver5's movdiri, pku,
        # wbnoinvd), which compiled kernels never use: what its own CPU model has counts as present.
        present = {f for f, on in detected.items() if on} | llvm_features({"kind": "llvm", "mcpu": host_cpu()})
        return [f for f in self.features if f in detected and f not in present]

    def describe(self) -> dict:
        """What its modules need: the CPU (LLVM's name) and the features its code may use."""
        return {"name": self.name, "tvm": self.tvm_dict, "cpu": self.cpu, "features": self.features,
                "cpu_from": "the build host (mcpu = \"auto\")" if self.cpu_is_build_host else "the preset",
                "runs_on": self.preset.runs_on, "device": self.preset.device}


@functools.cache
def host_cpu() -> str:
    """LLVM's name for this host's CPU."""
    import tvm

    return tvm.target.codegen.llvm_get_system_cpu()


@functools.cache
def host_llvm_features() -> dict[str, bool]:
    """The instruction-set features LLVM checks this host for (cpuid, as clang's -march=native): each
    with whether the host has it. Tuning flags (fast-gather, prefer-256-bit) are not among them."""
    import tvm

    return {str(k): bool(v) for k, v in dict(tvm.get_global_func("tvm.codegen.llvm.GetHostCPUFeatures")()).items()}


def llvm_features(tvm_dict: dict) -> set[str]:
    """LLVM's features of an llvm target's CPU (mtriple, mcpu, mattr), less the tuning flags where this
    host's LLVM can tell them apart (a target of this host's architecture)."""
    import tvm

    features = set(tvm.target.codegen.llvm_get_cpu_features(tvm.target.Target(tvm_dict)))
    triple = tvm_dict.get("mtriple") or tvm.target.codegen.llvm_get_system_triple()
    if triple.split("-")[0] == platform.machine():
        features &= set(host_llvm_features())
    return features


def portability_note(target: Target) -> str | None:
    """A module built for the build host's own CPU runs only on CPUs with all of its features: say so,
    and name the presets that build for other CPUs of its architecture."""
    if not target.cpu_is_build_host:
        return None
    portable = [p for p in presets().values() if p.arch == target.preset.arch and p.runs_on == "local"
                and (p.host or p.tvm).get("mcpu") not in (None, "auto")]
    return (f"built for this host's CPU ({target.cpu}): it needs that CPU's features (manifest.json target.features) "
            f"and dies of SIGILL on a CPU that lacks one; "
            + ("; ".join(f"--target {p.name} builds for {p.description or p.tvm.get('mcpu')}" for p in portable)
               or f"a preset with a named mcpu builds for other {target.preset.arch} CPUs"))


def check_local_cpu(target: Target) -> None:
    """A target measured here needs this host's CPU to have its features: say so before anything runs,
    not die of SIGILL in its first call."""
    missing = target.missing_features() if target.preset.runs_on == "local" else []
    if missing:
        raise HarnessError(f"target {target.name} builds for {target.cpu}, and this host ({host_cpu()}) lacks its "
                           f"{', '.join(missing)}: its modules would crash here",
                           "measure it on a host with that CPU (`tvmharness compile` builds it here, unchecked), or "
                           "pick a target this host runs (`tvmharness targets`)")


def _search_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("TVMHARNESS_TARGETS", "").split(os.pathsep) if p]
    return [*extra, TARGETS_DIR]


def _read_preset(path: Path) -> TargetPreset:
    try:
        return TargetPreset.model_validate(tomllib.loads(path.read_text()))
    except tomllib.TOMLDecodeError as err:
        raise HarnessError(f"target preset {path} is not valid TOML: {err}", "fix the TOML syntax at that line") from None
    except ValidationError as err:
        raise HarnessError(f"target preset {path} is invalid: {validation_problems(err)}",
                           f"fix the preset file; the presets in {TARGETS_DIR} show the schema") from None


def presets() -> dict[str, TargetPreset]:
    """Every preset by name; earlier search directories win."""
    found: dict[str, TargetPreset] = {}
    for d in reversed(_search_dirs()):
        for path in sorted(d.glob("*.toml")) if d.is_dir() else []:
            preset = _read_preset(path)
            found[preset.name] = preset
    return found


def check_toolchain(target: Target) -> None:
    """A cross target needs its compiler on this host: say so before anything is built."""
    import shutil

    compiler = target.preset.cross_compiler
    if compiler and shutil.which(compiler) is None:
        raise HarnessError(f"cross compiler '{compiler}' for target {target.name} is not installed",
                           "install it (Debian: apt-get install gcc-aarch64-linux-gnu)")


def host_target(targets: list[Target], threads: int) -> Target:
    """Where host engines (PyTorch, ONNX Runtime) run: the recipe's first local target, or this
    host's own preset when the recipe names only remote ones (say, --target arm)."""
    local = [t for t in targets if t.preset.runs_on == "local"]
    if local:
        return local[0]
    return resolve(own_preset(), threads)


def own_preset() -> str:
    """The name of this host's own preset (one that runs here and detects its CPU): x86, or aarch64
    on a board. What a recipe or command that names no target measures on."""
    own = [p for p in presets().values() if p.runs_on == "local" and p.arch == platform.machine()]
    if not own:
        raise HarnessError(f"no local target preset for this host ({platform.machine()})",
                           f"add one (see x86.toml and aarch64.toml in {TARGETS_DIR}) in a folder TVMHARNESS_TARGETS names")
    detected = [p for p in own if p.tvm.get("mcpu") == "auto"]
    return (detected or own)[0].name


def resolve(name: str, threads: int) -> Target:
    """A preset name (or a path to a preset file) -> Target, detecting "auto" values on this host."""
    if name.endswith(".toml"):
        if not Path(name).is_file():
            raise HarnessError(f"target file not found: {name}", "give a preset name from `tvmharness targets` or an existing .toml")
        preset = _read_preset(Path(name))
    else:
        known = presets()
        if name not in known:
            raise HarnessError(f"unknown target '{name}'; known targets: {', '.join(sorted(known))}",
                               "use one of those, give a preset file (--target path/to/board.toml), or put preset files "
                               "in a folder named by TVMHARNESS_TARGETS")
        preset = known[name]

    if preset.runs_on == "local" and preset.arch != platform.machine():
        boards = sorted(p.name for p in presets().values() if p.arch == preset.arch and p.runs_on == "rpc")
        raise HarnessError(f"target '{preset.name}' runs on {preset.arch} but this host is {platform.machine()}",
                           "pick a target for this host (see `tvmharness targets`)"
                           + (f", or one built here for {preset.arch} boards: {', '.join(boards)}" if boards else ""))
    tvm_dict = _detect(dict(preset.tvm), threads)
    if preset.host is not None:
        tvm_dict["host"] = _detect(dict(preset.host), threads)
    return Target(preset=preset, tvm_dict=tvm_dict)


# Limits every NVIDIA GPU since sm_30 shares. MetaSchedule schedules by them and stops without them
# ("missing attribute max_threads_per_block"), so a preset that names only an arch gets these.
CUDA_LIMITS = {"max_threads_per_block": 1024, "max_shared_memory_per_block": 49152, "thread_warp_size": 32}


def _detect(tvm_dict: dict, threads: int) -> dict:
    """Fill a TVM target dict's "auto" values in from this machine (a GPU's from GPU 0)."""
    if tvm_dict.get("kind") == "cuda" and tvm_dict.get("arch") == "auto":
        from .gpu import detected_cuda_target

        tvm_dict = detected_cuda_target() | {k: v for k, v in tvm_dict.items() if k not in ("kind", "arch")}
    elif tvm_dict.get("kind") == "cuda":
        tvm_dict = tvm_dict | {k: v for k, v in CUDA_LIMITS.items() if k not in tvm_dict}
    if tvm_dict.get("mcpu") == "auto":
        tvm_dict["mcpu"] = host_cpu()
    if tvm_dict.get("num-cores") == "auto":
        tvm_dict["num-cores"] = threads
    return tvm_dict
