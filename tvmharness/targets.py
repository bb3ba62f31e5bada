"""Target presets: data files in targets/ that expand to a TVM target, its host and where it runs."""

from __future__ import annotations

import difflib
import functools
import json
import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError, field_validator, model_validator

from .errors import HarnessError, toml_file, validation_problems
from .native_log import native_stderr_to

# A checkout's targets/; an installed package carries them as tvmharness/presets/ (pyproject maps them there).
_INSTALLED_DIR = Path(__file__).resolve().parent / "presets"
TARGETS_DIR = _INSTALLED_DIR if _INSTALLED_DIR.is_dir() else Path(__file__).resolve().parents[1] / "targets"

PRESET_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")  # it names folders: results/artifacts/MODEL-NAME
CUDA_ARCH = re.compile(r"sm_(\d+)[a-z]?")  # sm_86, sm_90a
OLDEST_CUDA_ARCH = 30  # the limits CUDA_LIMITS fills in are those every GPU since sm_30 shares


def _table_problem(table: str, values: dict) -> str | None:
    """What is wrong with a preset's [tvm] or [host] table that TVM would take and build wrongly, or None."""
    kind = values.get("kind")
    kinds = ("llvm", "cuda") if table == "tvm" else ("llvm",)
    if kind not in kinds:
        return (f'[{table}] kind = {json.dumps(kind)}: ' if "kind" in values else f"[{table}] has no kind: ") + \
            " or ".join(f'kind = "{k}"' for k in kinds) + " (tvmharness builds for CPUs with LLVM and NVIDIA GPUs with CUDA)"
    cores = values.get("num-cores", "auto")
    if cores != "auto" and not (type(cores) is int and cores >= 1):
        return f'[{table}] num-cores = {json.dumps(cores)}: a thread count of 1 or more, or "auto" (the recipe\'s threads)'
    mattr = values.get("mattr", [])
    if not (isinstance(mattr, list) and all(isinstance(f, str) and f[:1] in ("+", "-") for f in mattr)):
        return f'[{table}] mattr = {json.dumps(mattr)}: a list of LLVM features, each turned on or off: ["+avx2", "-avx512f"]'
    if kind == "cuda":
        arch = values.get("arch")
        number = CUDA_ARCH.fullmatch(arch) if isinstance(arch, str) else None
        if arch != "auto" and not (number and int(number[1]) >= OLDEST_CUDA_ARCH):
            return ((f"[{table}] arch = {json.dumps(arch)}: " if arch is not None else
                     f'[{table}] kind = "cuda" has no arch (TVM would build for sm_50, whatever the GPU): ') +
                    f'give arch = "sm_XY", the GPU\'s compute capability (sm_{OLDEST_CUDA_ARCH} or newer: sm_86 for an '
                    'RTX 3090, sm_87 a Jetson Orin), or arch = "auto" (read from this machine\'s GPU 0)')
    triple = values.get("mtriple")
    if triple is not None and "linux" not in str(triple).split("-")[1:]:
        return (f'[{table}] mtriple = {json.dumps(triple)} is not a Linux triple: tvmharness builds Linux shared libraries '
                '(model.so); give one such as "aarch64-linux-gnu"')
    return None


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
    _path: Path | None = PrivateAttr(None)  # the file it was read from, for messages

    @field_validator("name")
    @classmethod
    def _name_fits_a_folder(cls, name: str) -> str:
        if not PRESET_NAME.fullmatch(name):
            raise ValueError("a preset's name is letters, digits, '.', '_' and '-', not starting with '.' or '-' "
                             "(it names the folders its artifacts and records go to)")
        return name

    @model_validator(mode="after")
    def _tables_fit_tvm(self):
        for table, values in (("tvm", self.tvm), ("host", self.host)):
            problem = _table_problem(table, values) if values is not None else None
            if problem:
                raise ValueError(problem)
            triple = (values or {}).get("mtriple")
            if isinstance(triple, str) and triple.split("-")[0] != self.arch:
                raise ValueError(f'[{table}] mtriple = "{triple}" builds {triple.split("-")[0]} code, and arch = '
                                 f'"{self.arch}": give them one architecture (mtriple = "{self.arch}-linux-gnu")')
        return self

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
    for folder in extra:
        if not folder.is_dir():  # else its presets would be missing, unsaid
            raise HarnessError(f"TVMHARNESS_TARGETS names {folder}, which is {'a file' if folder.exists() else 'missing'}",
                               f"name folders of preset .toml files in it (several: separated by '{os.pathsep}'), or unset it")
    return list({d.resolve(): d for d in [*extra, TARGETS_DIR]}.values())  # a folder named twice is read once


def _read_preset(path: Path) -> TargetPreset:
    try:
        preset = TargetPreset.model_validate(toml_file(path, f"target preset {path}"))
    except ValidationError as err:
        raise HarnessError(f"target preset {path} is invalid: {validation_problems(err)}",
                           f"fix the preset file; the presets in {TARGETS_DIR} show the schema") from None
    preset._path = path
    return preset


def presets() -> dict[str, TargetPreset]:
    """Every preset by name: a name is one file's, the built-in presets' included."""
    found: dict[str, TargetPreset] = {}
    for d in _search_dirs():
        for path in sorted(d.glob("*.toml")):
            preset = _read_preset(path)
            if preset.name in found:  # one would replace the other, unsaid
                raise HarnessError(f"target presets {found[preset.name]._path} and {path} are both named '{preset.name}'",
                                   "rename one of them (name = \"...\" in it): a target's rows and folders go by its "
                                   "name, so a name means one preset")
            found[preset.name] = preset
    return found


def linker(target: Target) -> str | None:
    """The compiler that links a target's library: its cross compiler, else TVM's for this host ($CXX, $CC, g++...)."""
    from tvm.support.cc import get_cc

    return target.preset.cross_compiler or get_cc()


def check_toolchain(target: Target) -> None:
    """The compiler that links a target's library must be on this host: say so before anything is built."""
    import shutil

    compiler = linker(target)
    if compiler is None:
        raise HarnessError(f"no C++ compiler on this host to link target {target.name}'s library (TVM looks for "
                           "$CXX, $CC, g++, gcc, clang++, clang, c++ and cc)", "install one (Debian: apt-get install g++)")
    if shutil.which(compiler) is None:
        cross = f"gcc-{target.preset.arch.replace('_', '-')}-linux-gnu"
        raise HarnessError(f"{'cross ' if target.preset.cross_compiler else ''}compiler '{compiler}' for target "
                           f"{target.name} is not installed",
                           f"install it (Debian: apt-get install {cross if target.preset.cross_compiler else 'g++'})"
                           + ("" if target.preset.cross_compiler else ", or set CXX to one that is"))
    if target.preset.cross_compiler and lacks_c_library(compiler):
        raise HarnessError(f"cross compiler '{compiler}' for target {target.name} has no C library for its target "
                           "(it cannot find crti.o), so it cannot link the library", f"install it ({c_library_package(target.preset.arch)})")


def lacks_c_library(compiler: str) -> bool:
    """Whether a cross gcc has no C library for its target to link against: Debian's gcc-aarch64-linux-gnu
    recommends libc6-dev-arm64-cross but does not need it, and without it every link fails ("cannot find crti.o")."""
    import subprocess

    try:
        said = subprocess.run([compiler, "-print-file-name=crti.o"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return False  # not a gcc that answers: its link will say what it lacks
    return said == "crti.o"  # gcc gives the name back alone when it has no such file


def c_library_package(arch: str) -> str:
    """Where a cross compiler's C library comes from (Debian's name, by Debian's name of the architecture)."""
    debian = {"aarch64": "arm64", "armv7l": "armhf", "x86_64": "amd64"}.get(arch, arch)
    return f"Debian: apt-get install libc6-dev-{debian}-cross"


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


def find_preset(name: str) -> TargetPreset:
    """A preset by name, or the preset a .toml path names, as given (nothing detected)."""
    known = presets()
    if name.endswith(".toml"):
        if not Path(name).is_file():
            raise HarnessError(f"target file not found: {name}", "give a preset name from `tvmharness targets` or an existing .toml")
        preset = _read_preset(Path(name))
        same = known.get(preset.name)
        if same is not None and same._path.resolve() != Path(name).resolve():  # two targets no row could tell apart
            raise HarnessError(f"target file {name} is named '{preset.name}', as preset {same._path} is",
                               f"give it a name of its own (name = \"...\"), or use --target {preset.name}")
    else:
        if name not in known:
            raise HarnessError(f"unknown target '{name}'; known targets: {', '.join(sorted(known))}",
                               "use one of those, give a preset file (--target path/to/board.toml), or put preset files "
                               "in a folder named by TVMHARNESS_TARGETS")
        preset = known[name]
    return preset


def resolve(name: str, threads: int) -> Target:
    """A preset name (or a path to a preset file) -> Target, detecting "auto" values on this host."""
    preset = find_preset(name)
    if preset.runs_on == "local" and preset.arch != platform.machine():
        boards = sorted(p.name for p in presets().values() if p.arch == preset.arch and p.runs_on == "rpc")
        raise HarnessError(f"target '{preset.name}' runs on {preset.arch} but this host is {platform.machine()}",
                           "pick a target for this host (see `tvmharness targets`)"
                           + (f", or one built here for {preset.arch} boards: {', '.join(boards)}" if boards else ""))
    _check_cross(preset)
    tvm = dict(preset.tvm)
    if preset.runs_on == "local" and tvm["kind"] == "llvm":
        tvm.setdefault("num-cores", "auto")  # MetaSchedule needs it, and a local CPU runs the recipe's threads
    tvm_dict = _detect(tvm, threads)
    if preset.host is not None:
        tvm_dict["host"] = _detect(dict(preset.host), threads)
    _check_with_tvm(preset, tvm_dict)
    return Target(preset=preset, tvm_dict=tvm_dict)


def resolve_all(names: list[str], threads: int) -> list[Target]:
    """A command's targets, resolved: two of one name (a preset file named as another) are refused, as
    their rows could not be told apart."""
    targets = [resolve(name, threads) for name in names]
    given: dict[str, str] = {}
    for name, target in zip(names, targets):
        if target.name in given:
            raise HarnessError(f"targets {given[target.name]} and {name} are both named '{target.name}'",
                               "give each preset file a name of its own (name = \"...\")")
        given[target.name] = name
    return targets


def _where(preset: TargetPreset) -> str:
    return f"target preset {preset._path or preset.name}"


def _check_cross(preset: TargetPreset) -> None:
    """Code for another architecture than this host's needs its triple and a compiler that links it:
    else this host's g++ fails on its objects, or builds it for this host."""
    if preset.arch == platform.machine():
        return
    table = "host" if preset.device == "cuda" else "tvm"
    if not (getattr(preset, table) or {}).get("mtriple"):
        raise HarnessError(f"{_where(preset)} builds {preset.arch} code on this {platform.machine()} host, and its "
                           f"[{table}] names no mtriple: LLVM would build it for this host",
                           f'add mtriple = "{preset.arch}-linux-gnu" to its [{table}]'
                           + (' (a [host] table: kind = "llvm")' if preset.host is None and table == "host" else ""))
    if not preset.cross_compiler:
        raise HarnessError(f"{_where(preset)} builds {preset.arch} code on this {platform.machine()} host, and names "
                           "no cross_compiler to link it with",
                           f'add cross_compiler = "{preset.arch}-linux-gnu-gcc" (Debian: apt-get install '
                           f'gcc-{preset.arch.replace("_", "-")}-linux-gnu)')


def _check_with_tvm(preset: TargetPreset, tvm_dict: dict) -> None:
    """What TVM and LLVM would take and build wrongly (a key TVM does not know, a value of the wrong
    type, a CPU or feature LLVM does not know: it builds for its generic CPU) is refused here."""
    import tvm

    for table, values in (("tvm", {k: v for k, v in tvm_dict.items() if k != "host"}), ("host", tvm_dict.get("host"))):
        if values is None:
            continue
        options = set(tvm.target.TargetKind.options_from_name(values["kind"]))
        for key in values.keys() - options:
            near = difflib.get_close_matches(key, options, n=1)
            raise HarnessError(f"{_where(preset)}: [{table}] {key} is not an option of TVM's {values['kind']} targets"
                               + (f" (did you mean {near[0]}?)" if near else ""),
                               f"fix or drop it; they take {', '.join(sorted(options))}")
        try:
            with native_stderr_to(Path(os.devnull)):  # LLVM's line for an mcpu it does not know: said below, with the fix
                tvm.target.Target(values)
        except Exception as err:  # TVM's own check: its message names the key
            text = str(err).strip().splitlines()[-1].split(". Target creation from config dict failed")[0]
            key = re.match(r"Option '([^']+)': expected type '[^']+'", text)  # "but got 'ffi.SmallStr'": say the value
            text = f"{key[0]}, not {json.dumps(values[key[1]])}" if key and key[1] in values else text
            raise HarnessError(f"{_where(preset)}: [{table}] is not a TVM target: {text}", "fix that key's value") from None
        if values["kind"] == "llvm":
            _check_llvm_names(preset, table, values.get("mtriple"))


def _check_llvm_names(preset: TargetPreset, table: str, triple: str | None) -> None:
    """The CPU and features the preset names (not those detected: "auto") must be LLVM's for its triple."""
    from tvm.target import Target as TvmTarget, codegen

    values = getattr(preset, table)
    triple = triple or codegen.llvm_get_system_triple()
    cpu = values.get("mcpu")
    if cpu and cpu != "auto" and not codegen.llvm_is_valid_cpu(cpu, triple):
        near = difflib.get_close_matches(cpu, list(codegen.llvm_get_cpu_archlist(TvmTarget({"kind": "llvm", "mtriple": triple}))))
        raise HarnessError(f'{_where(preset)}: [{table}] mcpu = "{cpu}" is not a CPU LLVM knows for {triple}'
                           + (f" (did you mean {', '.join(near)}?)" if near else ""),
                           "name one of LLVM's; they print with python -c \"import tvm; print(*tvm.target.codegen."
                           f"llvm_get_cpu_archlist(tvm.target.Target({{'kind': 'llvm', 'mtriple': '{triple}'}})))\"")
    unknown = _unknown_features(triple, [f[1:] for f in values.get("mattr", [])])
    if unknown:
        known = set().union(*(codegen.llvm_get_cpu_features(TvmTarget({"kind": "llvm", "mtriple": triple, "mcpu": c}))
                              for c in codegen.llvm_get_cpu_archlist(TvmTarget({"kind": "llvm", "mtriple": triple}))))
        near = difflib.get_close_matches(unknown[0], known)
        raise HarnessError(f"{_where(preset)}: [{table}] mattr names {', '.join(unknown)}, not a feature LLVM knows "
                           f"for {triple}" + (f" (did you mean {', '.join(near)}?)" if near else ""),
                           "name LLVM's features; a CPU's print with python -c \"import tvm; print(*sorted(tvm.target."
                           f"codegen.llvm_get_cpu_features(tvm.target.Target({{'kind': 'llvm', 'mtriple': '{triple}', "
                           "'mcpu': 'CPU'}))))\"")


def _unknown_features(triple: str, names: list[str]) -> list[str]:
    """Those of the feature names LLVM does not know for the triple: a feature it knows is among the
    CPU's features once turned on."""
    if not names:
        return []
    from tvm.target import Target as TvmTarget, codegen

    with native_stderr_to(Path(os.devnull)):  # LLVM prints a line for each it does not know: the message says it
        enabled = codegen.llvm_get_cpu_features(TvmTarget({"kind": "llvm", "mtriple": triple, "mattr": [f"+{n}" for n in names]}))
    return [n for n in names if n not in enabled]


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
