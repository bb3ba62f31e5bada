"""Target presets: data files in targets/ that expand to a TVM target, its host and where it runs."""

from __future__ import annotations

import os
import platform
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from .errors import HarnessError, validation_problems
from .provenance import cpu_info

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
    features: list[str] = field(default_factory=list)
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

    def describe(self) -> dict:
        return {"name": self.name, "tvm": self.tvm_dict, "features": self.features, "runs_on": self.preset.runs_on,
                "device": self.preset.device}


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
        raise HarnessError(f"target '{preset.name}' runs on {preset.arch} but this host is {platform.machine()}",
                           "pick a target for this host (see `tvmharness targets`)")
    tvm_dict = _detect(dict(preset.tvm), threads)
    if preset.host is not None:
        tvm_dict["host"] = _detect(dict(preset.host), threads)
    if preset.runs_on == "local":
        features = cpu_info()["features"]
    else:
        features = list((tvm_dict.get("host") or tvm_dict).get("mattr", []))
    return Target(preset=preset, tvm_dict=tvm_dict, features=features)


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
        import tvm

        tvm_dict["mcpu"] = tvm.target.codegen.llvm_get_system_cpu()
    if tvm_dict.get("num-cores") == "auto":
        tvm_dict["num-cores"] = threads
    return tvm_dict
