"""Relax module -> a deployable artifact directory: model.so + manifest.json, cached by content hash."""

from __future__ import annotations

import contextlib
import errno
import json
import shutil
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from .cache import content_hash, entry_lock, file_hash, stage_dir, writer_alive, written_whole
from .errors import FAILED, FOLDER_REASONS, HarnessError, one_line
from .export import IMPORT_VERSION
from .frontend import frontend_for, to_relax
from .models import LoadedModel
from .native_log import NATIVE_LOG, RELOWERED, native_stderr_to, native_warnings
from .provenance import cpu_info, git_commit, versions
from .targets import Target, check_toolchain, host_cpu, linker
from .tune import (RECORDS, applied_records_hash, extract_tasks, lower_for_tuning, model_records_hash, model_workloads,
                   open_database, records_at_other_threads, records_dir, records_hash, tuned_task_count)

MANIFEST_FORMAT = 4  # 2: cuda_source; 3: inputs (every input's name, shape and dtype); 4: outputs, build_host
MANIFEST = "manifest.json"
LIBRARY = "model.so"
KERNELS = "kernels.cu"  # a GPU target's CUDA source, as the library carries it
SAME_AS = "same-as"  # in the entry of a build key by a records folder's hash: the key of the build those records make


@dataclass
class Artifact:
    dir: Path
    manifest: dict
    cache_hit: bool
    # An untuned build: this target's records tuned at other thread counts, which it cannot use.
    records_elsewhere: list[tuple[Path, int]] = field(default_factory=list)
    emulated_records: Path | None = None  # records tuned on an emulated kit, which a board's build never uses

    @property
    def library(self) -> Path:
        return self.dir / self.manifest["library"]["file"]

    @property
    def size_bytes(self) -> int:
        return self.manifest["library"]["bytes"]

    @property
    def tuned(self) -> bool:
        """Built with tuning records for at least one of its tasks."""
        return bool(self.manifest.get("tuning_records"))


# What the library is linked with: a deployed module carries no debug information (TVM's code generator
# emits DWARF that doubles a small model's library; symbols stay, so a crash still names its function).
LINK_OPTIONS = ("-Wl,--strip-debug",)


def build_key(model: LoadedModel, target: Target, frontend: str, records: str | None) -> str:
    import tvm

    linker = [target.preset.cross_compiler] if target.preset.cross_compiler else []  # another toolchain, another .so
    return content_hash("tvm-build", model.digest, IMPORT_VERSION, frontend, target.tvm_dict, tvm.__version__, records,
                        *LINK_OPTIONS, *linker)


def load_artifact(directory: Path) -> Artifact | None:
    """An artifact directory whose library still matches its manifest, else None."""
    manifest_path = directory / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
        name, kernels = manifest["library"]["file"], manifest.get("cuda_source")
        if not _plain_name(name) or not (kernels is None or _plain_name(kernels)):
            return None
        library = directory / name
        if manifest.get("format") == MANIFEST_FORMAT and file_hash(library) == manifest["library"]["sha256"]:
            return Artifact(directory, manifest, cache_hit=True)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _plain_name(name) -> bool:
    """A file name a manifest may give: one in its own folder (an absolute path or ../ would load, copy or
    delete a file elsewhere)."""
    return isinstance(name, str) and name not in ("", ".", "..") and Path(name).name == name


def build_tvm(model: LoadedModel, target: Target, frontend: str, cache_dir: Path,
              records_root: Path | None = None) -> Artifact:
    """Import, compile and export the model for the target, or reuse the cached artifact.

    With a records folder (results/tuning) that holds records for this target, the build applies
    them (compile_relax on the un-fused module: on a fused one records silently fail to match)."""
    artifact = _build_or_load(model, target, frontend, cache_dir, records_root)
    if not artifact.tuned and records_root is not None:  # only folders with records for this model are named
        artifact.records_elsewhere = records_at_other_threads(records_root, target, lambda: model_workloads(
            model, target, frontend_for(model, frontend), cache_dir))
        if target.preset.runs_on == "rpc" and not target.emulated:  # a board's build: said, not silently passed over
            emulated = replace(target, emulated="emulated")  # at this thread count, or at the kit's own
            found = [records_dir(records_root, emulated)] + [d for d, _ in records_at_other_threads(records_root, emulated)]
            artifact.emulated_records = next((d for d in found if (d / RECORDS).is_file()), None)
    return artifact


def fit_kit_threads(target: Target, threads: int | None, records_root: Path) -> str | None:
    """A dev-kit target built without its kit (compile) is built for `threads`, else for the one thread
    count its records were tuned at on the kits (which said theirs), so the artifact uses them; a run
    learns it from the kit itself. A note saying which, or None."""
    if target.preset.runs_on != "rpc" or target.tvm_dict.get("kind") != "llvm" or "num-cores" in target.tvm_dict:
        return None
    if threads:
        target.tvm_dict["num-cores"] = threads
        return None
    counts = sorted({cores for _, cores in records_at_other_threads(records_root, target)})
    if len(counts) != 1:
        return None
    target.tvm_dict["num-cores"] = counts[0]
    return (f"built for {counts[0]} threads, the thread count {target.name}'s records were tuned at on its kits "
            "(--threads N builds for another)")


def _build_or_load(model: LoadedModel, target: Target, frontend: str, cache_dir: Path,
                   records_root: Path | None) -> Artifact:
    frontend = frontend_for(model, frontend)
    records = records_dir(records_root, target) if records_root is not None else None
    folder = records_hash(records) if records is not None else None
    if folder is None:
        return _cached_or_built(model, target, frontend, cache_dir, None, build_key(model, target, frontend, None))
    # A build is keyed by the records of its own tasks, which takes a lowering to know; the folder's hash
    # finds it at once until the folder changes (another model tuned into it), then they find it again.
    seen = stage_dir(cache_dir, "tvm", build_key(model, target, frontend, folder)) / SAME_AS
    with contextlib.suppress(OSError):
        cached = load_artifact(stage_dir(cache_dir, "tvm", seen.read_text().strip()))
        if cached is not None:
            return cached
    own = model_records_hash(records, model_workloads(model, target, frontend, cache_dir))
    key = build_key(model, target, frontend, own)  # none of its tasks' records: the untuned build itself
    artifact = _cached_or_built(model, target, frontend, cache_dir, records if own else None, key)
    with _cache_write(model, seen.parent):
        seen.parent.mkdir(parents=True, exist_ok=True)
        with written_whole(seen) as partial:
            partial.write_text(key)
    return artifact


@contextlib.contextmanager
def _cache_write(model: LoadedModel, directory: Path):
    """A write to the build cache that fails (a full or read-only disk) as one message naming the folder."""
    try:
        yield
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        where = Path(err.filename).parent if err.filename else directory  # (the tuning records' folder, or the cache's)
        raise HarnessError(f"cannot write model '{model.name}''s build to {where}: {err.strerror or err}",
                           "free space there or make it writable, or give another --output-dir", FAILED) from None


def _cached_or_built(model: LoadedModel, target: Target, frontend: str, cache_dir: Path, records: Path | None,
                     key: str) -> Artifact:
    directory = stage_dir(cache_dir, "tvm", key)
    cached = load_artifact(directory)
    if cached is not None:
        return cached
    with entry_lock(directory):  # another process building it now: wait for it, and use its build
        cached = load_artifact(directory)
        if cached is not None:
            return cached
        with _cache_write(model, directory):
            return _build(model, target, frontend, cache_dir, records, key, directory)


def _build(model: LoadedModel, target: Target, frontend: str, cache_dir: Path, records: Path | None, key: str,
           directory: Path) -> Artifact:
    started = time.perf_counter()
    native_log = directory / NATIVE_LOG
    native_log.unlink(missing_ok=True)
    with native_stderr_to(native_log):
        mod = to_relax(model, frontend, cache_dir)
        executable, tuning = _compile(model, mod, target, records, native_log)
        export_kwargs = {"options": list(LINK_OPTIONS)}  # (a cross compiler appends them to its own)
        check_toolchain(target)
        if target.preset.cross_compiler:
            from tvm.support import cc

            export_kwargs["fcompile"] = cc.cross_compiler(target.preset.cross_compiler)
        try:
            with written_whole(directory / LIBRARY) as partial:
                executable.export_library(str(partial), **export_kwargs)
        except Exception as err:  # the C compiler that links the library: gone since, or failing on it
            raise link_failure(err, model.name, target, directory) from None
    warnings = native_warnings(native_log)
    if not native_log.stat().st_size:
        native_log.unlink()
    kernels = _cuda_source(executable.mod)
    if kernels is not None:
        with written_whole(directory / KERNELS) as partial:
            partial.write_text(kernels)
    manifest = {
        "format": MANIFEST_FORMAT,
        "model": model.name,
        "model_digest": model.digest,
        "model_source": model.source,
        "compression": model.compression.get("compression") or [],  # each step's kind and parameters
        "calibration": model.compression.get("calibration"),  # int8's calibration as it ran (calls, data's hash)
        "inputs": [i.signature() for i in model.inputs],  # what to feed
        "outputs": _outputs(model, mod),  # what comes back, in order
        "frontend": frontend,
        "target": target.describe(),
        "build_host": {"cpu": cpu_info()["model"], "llvm_cpu": host_cpu(), "cpuinfo_flags": cpu_info()["features"]},
        "tuning_records": tuning,
        "library": {"file": LIBRARY, "sha256": file_hash(directory / LIBRARY), "bytes": (directory / LIBRARY).stat().st_size},
        "cuda_source": KERNELS if kernels is not None else None,
        "build_key": key,
        "build_seconds": round(time.perf_counter() - started, 2),
        "tvm_warnings": warnings,  # what TVM's C++ code warned of while building (its log: NATIVE_LOG)
        "versions": versions(),
        "git_commit": git_commit(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "notes": model.notes,
    }
    with written_whole(directory / MANIFEST) as partial:  # last and whole: what makes the entry one to reuse
        partial.write_text(json.dumps(manifest, indent=2) + "\n")
    return Artifact(directory, manifest, cache_hit=False)


def link_failure(err: Exception, model: str, target: Target, folder: Path | None = None) -> HarnessError:
    """A failed link as its compiler said it: TVM's error is "Compilation error:", the compiler's
    output, then its command line; its last few error lines say why (ld says a full disk in a line
    with no "error" in it: "final link failed: No space left on device")."""
    compiler = linker(target)
    output = str(err).split("Compilation error:", 1)[-1].split("\nCommand line:")[0]
    lines = list(dict.fromkeys(ln.strip() for ln in output.splitlines() if ln.strip()))  # ld repeats a line per object
    folder_reason = next((reason for ln in lines for reason in FOLDER_REASONS if reason in ln), None)
    said = [ln for ln in lines if "error" in ln.lower() or any(reason in ln for reason in FOLDER_REASONS)] or lines
    text = "; ".join(said[-3:]) or one_line(err)
    if compiler is None or shutil.which(compiler) is None:
        fix = "install that compiler (Debian: apt-get install g++, or gcc-aarch64-linux-gnu for aarch64 targets)"
    elif folder_reason is not None:  # the toolchain is fine: the folder it writes the library to is not
        fix = (f"the linker could not write ({folder_reason}) to {folder or 'the output folder'} or to its temporary "
               "folder (TMPDIR): free space there (or make the folder writable), or point --output-dir ([output] dir) "
               "elsewhere")
    else:  # installed: what it said is the cause, not its absence
        fix = (f"{compiler} is installed and refused the objects: check that the preset's mtriple and cross_compiler "
               "are for one architecture, as its error says")
    return HarnessError(f"linking '{model}' for {target.name} with {compiler or 'no C++ compiler'} failed: {text}", fix,
                        exit_code=FAILED)


def _outputs(model: LoadedModel, mod) -> list[dict]:
    """Each output the module returns, flattened as the model's are: its name (a dict's keys and a
    tuple's positions, as torch.export flattens them, or the ONNX graph's), shape and dtype."""
    returned = mod["main"].ret_ty
    types = list(returned.fields) if hasattr(returned, "fields") else [returned]
    names = model.output_names()
    if len(names) != len(types):  # a frontend that returns them otherwise: by position
        names = [f"output.{k}" for k in range(len(types))]
    return [{"name": name, "shape": [int(v) for v in t.shape.values], "dtype": str(t.dtype)}
            for name, t in zip(names, types)]


def _cuda_source(module) -> str | None:
    """The CUDA C++ of a GPU build's kernels. TVM 0.27 keeps a CUDA module as source, and its CUDA
    runtime compiles it (NVRTC) when the library loads on the GPU; kept beside the library, it can
    be read, and compiled with nvcc to check it without a GPU."""
    if module.kind == "cuda":
        return module.inspect_source("")
    for imported in module.imports:
        found = _cuda_source(imported)
        if found is not None:
            return found
    return None


def _compile(model: LoadedModel, mod, target: Target, records: Path | None, log: Path):
    """The executable, and the tuning records it applied (None when untuned)."""
    try:
        if records is None:
            return _compile_untuned(mod, target), None
        return _compile_tuned(mod, target, records, log)
    except HarnessError:
        raise
    except Exception as err:
        raise HarnessError(f"TVM could not build '{model.name}' for {target.name}: {one_line(err)}",
                           "an operator TVM cannot build here: replace it, or measure the model through the other "
                           "frontend where it has one (a recipe's frontend, --frontend of bench, tune and compile); "
                           "`TVMHARNESS_DEBUG=1 tvmharness compile MODEL` shows TVM's traceback, which names where it "
                           f"failed (TVM's own log: {log})",
                           exit_code=FAILED) from err


def _compile_untuned(mod, target: Target):
    import tvm

    return tvm.compile(mod, target=target.tvm_target())


def _compile_tuned(mod, target: Target, records: Path, log: Path):
    from tvm.s_tir.meta_schedule.relax_integration import compile_relax

    database = open_database(records, target)
    mod_pre, mod_zero = lower_for_tuning(mod, target)
    tasks = extract_tasks(mod_zero, target)
    tuned, trials = tuned_task_count(database, tasks, target)
    if not tuned:  # records of other models only: the very build tvm-untuned measures, not another untuned one
        with open(log, "ab") as marked:  # that build lowers the model again, and warns again: counted once
            marked.write(RELOWERED)
        return _compile_untuned(mod, target), None
    executable = compile_relax(database, mod_pre, target.tvm_target(), params=None)
    # the records this build read, not the folder's: tuning another model into it changes no row of this one
    return executable, {"dir": str(records), "sha256": applied_records_hash(database, tasks), "tasks_tuned": tuned,
                        "tasks": len(tasks), "trials": trials}


def export_artifact(artifact: Artifact, out_dir: Path, model: LoadedModel, target: Target, check: dict,
                    notes: list[str]) -> dict:
    """Copy an artifact directory to where a user asked for it, and write its manifest: the build's, and
    this model's (where it came from: the build is shared by identical models; its inputs' value
    ranges), the target as named here, how the artifact was checked and what a deployer must know.
    Files an earlier artifact left there that this one does not have go (only those its manifest lists);
    a folder holding other files and no artifact of ours is refused.
    Every file is written whole beside its place first, and only then do they replace the earlier
    artifact's, the manifest last: a full disk leaves the earlier artifact as it was."""
    earlier = earlier_artifact_files(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {name for name in (artifact.manifest["library"]["file"], artifact.manifest.get("cuda_source"),
                                 NATIVE_LOG if artifact.manifest.get("tvm_warnings") else None) if name}
    manifest = artifact.manifest | {
        "model_origin": model.origin,
        "inputs": [i.describe() for i in model.inputs],  # an integer input's value_range: values within it run
        "target": target.describe(), "check": check, "notes": notes}
    manifest["load"] = load_instructions(manifest)
    try:
        with contextlib.ExitStack() as files:  # its files replace theirs as it closes: in reverse, the manifest last
            manifest_partial = files.enter_context(written_whole(out_dir / MANIFEST))
            for name in written:
                shutil.copy2(artifact.dir / name, files.enter_context(written_whole(out_dir / name)))
            manifest_partial.write_text(json.dumps(manifest, indent=2) + "\n")
    except OSError as err:  # shutil names the file it copies from, and a failed write no file at all
        raise HarnessError(f"cannot write the artifact to {out_dir}: {err.strerror or err}",
                           "free space on that disk (or make the folder writable), or give another --out; "
                           "the artifact there before is left as it was") from None
    for name in earlier - written:
        (out_dir / name).unlink(missing_ok=True)
    return manifest


def earlier_artifact_files(out_dir: Path) -> set[str]:
    """The files an earlier artifact in `out_dir` has besides its manifest: what an export there replaces or
    removes. A folder that holds anything and no manifest of ours is refused, before it is written: an
    export would overwrite or remove files that are not its own (someone's model.so, or / itself)."""
    try:  # empty, or holding only another compile's files being written (its process alive): the same export
        if not any(p for p in out_dir.iterdir() if not writer_alive(p.name)):
            return set()
    except FileNotFoundError:
        return set()
    try:
        manifest = json.loads((out_dir / MANIFEST).read_text())
        files = {manifest["library"]["file"], manifest.get("cuda_source"), NATIVE_LOG if manifest.get("tvm_warnings") else None}
        files.discard(None)
        if (isinstance(manifest.get("format"), int) and "build_key" in manifest and all(map(_plain_name, files))
                and MANIFEST not in files):
            return files
    except (OSError, ValueError, KeyError, TypeError):
        pass
    raise HarnessError(f"{out_dir} holds files and no artifact of tvmharness (a manifest.json of its own): writing the "
                       "artifact there would overwrite or remove them",
                       f"give --out an empty or new folder, or remove {out_dir} first")


def load_instructions(manifest: dict) -> list[str]:
    """Python that runs the artifact with TVM alone, given `inputs` (numpy arrays, in manifest order).
    Inputs become TVM tensors first: the VM reads a numpy array's memory in place, and one not aligned
    as TVM allocates crashes the process."""
    target = manifest["target"]
    threads = target["tvm"].get("num-cores")
    return ["# in the artifact's folder (elsewhere, give load_module the library's path)",
            f"import numpy as np, tvm  # set TVM_NUM_THREADS={threads} before: the threads it was built and measured for"
            if threads else "import numpy as np, tvm",
            "device = tvm.cuda(0)" if target.get("device") == "cuda" else "device = tvm.cpu(0)",
            f"vm = tvm.relax.VirtualMachine(tvm.runtime.load_module('{manifest['library']['file']}'), device)",
            "# inputs: numpy arrays of the names, shapes and dtypes 'inputs' lists, in that order (integers within value_range)",
            "result = vm['main'](*[tvm.runtime.tensor(np.ascontiguousarray(x), device) for x in inputs])",
            "outputs = [result.numpy()] if isinstance(result, tvm.runtime.Tensor) else [o.numpy() for o in result]  # as 'outputs' lists"]
