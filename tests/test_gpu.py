"""CUDA: what works without a GPU (building for one, saying clearly why nothing runs), and on a
machine with one, the quickstart and a tiny tune on it. GPU tests skip with the reason doctor gives."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import NO_CROSS_LINK, ROOT, run_cli
from tvmharness.build import build_tvm
from tvmharness.engines import get_engine
from tvmharness.engines.base import EngineOptions
from tvmharness.errors import HarnessError
from tvmharness.frontend import to_relax
from tvmharness.gpu import cuda_status
from tvmharness.models import load_model
from tvmharness.pipeline import run_recipe
from tvmharness.recipe import recipe_from_dict
from tvmharness.targets import resolve
from tvmharness.tune import (TuneOptions, candidate_builder, extract_tasks, lower_for_tuning, open_database, records_dir,
                             tune_contexts)

GPU = cuda_status()
needs_gpu = pytest.mark.skipif(not GPU.usable, reason=f"no usable GPU: {GPU.reason}")
needs_no_gpu = pytest.mark.skipif(GPU.usable, reason=f"a GPU is here ({GPU.reason}): the no-GPU messages cannot show")
ELF_MACHINE_AARCH64 = 183
ELF_MACHINE_X86_64 = 62


@needs_no_gpu
def test_cuda_target_without_a_gpu_says_why_and_measures_nothing(tmp_path):
    for command in (["run", str(ROOT / "recipes/quickstart.toml")], ["tune", "--model", "digits_cnn"]):
        proc = run_cli(*command, "--target", "cuda", "--store", str(tmp_path / "h.db"), cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr + proc.stdout
        assert proc.stderr.strip().startswith("error: no usable GPU for the cuda target: "), proc.stderr
        assert GPU.reason.split(":")[0] in " ".join(proc.stderr.split())  # the cause, as doctor names it
        assert "fix:" in proc.stderr
        assert not (tmp_path / "h.db").exists()


@needs_no_gpu
def test_doctor_says_why_cuda_is_unusable():
    proc = run_cli("doctor", "--json")
    assert proc.returncode == 0, proc.stderr
    checks = {c["check"]: c for c in json.loads(proc.stdout)}
    device = checks["CUDA device (TVM)"]
    assert device["ok"] is False and device["detail"] == GPU.reason and "GPU" in device["fix"]
    assert checks["TVM CUDA code generator"]["ok"] is True  # the wheel can build for a GPU it cannot run
    assert {"CUDA in PyTorch", "CUDA in ONNX Runtime"} <= set(checks)


@pytest.fixture(scope="module")
def gpu_preset(tmp_path_factory):
    """A GPU target that needs no detection, so it resolves on any machine."""
    path = tmp_path_factory.mktemp("targets") / "cuda-sm90.toml"
    path.write_text('name = "cuda-sm90"\narch = "x86_64"\ndevice = "cuda"\n[tvm]\nkind = "cuda"\narch = "sm_90"\n'
                    '[host]\nkind = "llvm"\n')
    return path


@needs_no_gpu
@pytest.mark.parametrize("engine, cause", [("tvm", "no usable GPU"), ("torch", "PyTorch"),
                                           ("torch-compile", "PyTorch"), ("onnxruntime", "onnxruntime")])
def test_an_engine_asked_for_the_gpu_refuses_rather_than_run_on_the_cpu(workdir, gpu_preset, engine, cause):
    model = load_model("digits_cnn", workdir / "cache")
    with pytest.raises(HarnessError) as err:
        get_engine(engine).prepare(model, resolve(str(gpu_preset), 1), EngineOptions(cache_dir=workdir / "cache"))
    assert cause in err.value.cause and "cuda-sm90" in err.value.cause


@needs_no_gpu
def test_a_gpu_preset_that_names_its_arch_refuses_before_measuring_without_a_gpu(recipe_dict, workdir, gpu_preset, tmp_path):
    """It resolves without a GPU (building for one needs none), but measuring on it does: no stored
    row, no CPU stand-in, the cause doctor names."""
    with pytest.raises(HarnessError, match=re.escape(f"no usable GPU for target cuda-sm90: {GPU.reason.split(':')[0]}")):
        run_recipe(recipe_from_dict(recipe_dict(targets=[str(gpu_preset)]) | {
            "output": {"dir": str(workdir), "store": str(tmp_path / "h.db")}}))
    assert not (tmp_path / "h.db").exists()
    from tvmharness.tune import tune_model

    with pytest.raises(HarnessError, match="no usable GPU for target cuda-sm90"):
        tune_model(load_model("digits_cnn", workdir / "cache"), resolve(str(gpu_preset), 1), TuneOptions(trials=4),
                   frontend="torch", cache_dir=workdir / "cache", records_root=tmp_path / "tuning", threads=1)


@pytest.mark.skipif(NO_CROSS_LINK is not None, reason=f"its host code is aarch64: {NO_CROSS_LINK}")
def test_jetson_orin_artifact_is_built_here_without_a_gpu(tmp_path):
    out = tmp_path / "orin"
    proc = run_cli("compile", "digits_cnn", "--target", "jetson-orin", "--out", str(out), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["target"]["device"] == "cuda" and manifest["target"]["tvm"]["arch"] == "sm_87"
    assert manifest["target"]["tvm"]["host"]["mtriple"] == "aarch64-linux-gnu"
    header = (out / "model.so").read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == ELF_MACHINE_AARCH64
    kernels = (out / manifest["cuda_source"]).read_text()
    assert kernels.count("__global__") >= 4  # two convolutions and two dense layers, fused with their activations


@pytest.fixture(scope="module", params=["arch-only", "jetson-orin"])
def gpu_search(request, workdir, tmp_path_factory):
    """The half of a CUDA tune that needs no GPU, for a preset that names only an arch and for the
    Jetson (aarch64 host code): the tune's own search contexts pick candidates for every task (what a
    tune would measure next), and its builder builds them."""
    from tvm.s_tir.meta_schedule.builder import BuilderInput

    name = "jetson-orin"
    if name == request.param and NO_CROSS_LINK is not None:
        pytest.skip(f"its host code is aarch64: {NO_CROSS_LINK}")
    if request.param == "arch-only":
        name = str(tmp_path_factory.mktemp("targets") / "cuda-sm86.toml")
        Path(name).write_text('name = "cuda-sm86"\narch = "x86_64"\ndevice = "cuda"\n[tvm]\nkind = "cuda"\narch = "sm_86"\n'
                              '[host]\nkind = "llvm"\n')
    target = resolve(name, 1)
    model = load_model("digits_cnn", workdir / "cache")
    _, mod_zero = lower_for_tuning(to_relax(model, "torch", workdir / "cache"), target)
    tasks = extract_tasks(mod_zero, target)
    options = TuneOptions(trials=8, population=48)
    contexts, _ = tune_contexts(tasks, target, options, tmp_path_factory.mktemp("ms"), 1)
    candidates = []
    for context in contexts:
        context.pre_tuning(max_trials=2, num_trials_per_iter=2)
        candidates.append(context.generate_measure_candidates()[0])
    built = candidate_builder(target, options, 2, str(tmp_path_factory.mktemp("candidates"))).build(
        [BuilderInput(c.sch.mod, target.tvm_target()) for c in candidates])
    return target, model, tasks, candidates, built


def test_gpu_tuning_candidates_are_searched_and_built_without_a_gpu(gpu_search):
    target, _, tasks, _, built = gpu_search
    assert target.tvm_dict["max_threads_per_block"] == 1024  # filled in where the preset names only an arch
    assert [b.error_msg for b in built] == [None] * len(tasks)
    machine = ELF_MACHINE_AARCH64 if target.preset.cross_compiler else ELF_MACHINE_X86_64
    for task, b in zip(tasks, built):
        library = Path(b.artifact_path).read_bytes()
        assert library[:4] == b"\x7fELF" and int.from_bytes(library[18:20], "little") == machine
        if "conv2d" in task.task_name:
            assert b"__global__" in library and b"threadIdx" in library  # a kernel bound to GPU threads


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (the CUDA toolkit) is not installed here")
def test_a_tuned_gpu_build_applies_the_records_and_its_kernels_compile_with_nvcc(gpu_search, workdir, tmp_path):
    """Records as a tune writes them, from the searched candidates; their times are placeholders, as
    nothing ran here. What is checked is the build: every task's record applied, kernels that compile."""
    from tvm.s_tir import meta_schedule as ms

    target, model, tasks, candidates, _ = gpu_search
    database = open_database(records_dir(tmp_path / "tuning", target), target)
    for task, candidate in zip(tasks, candidates):
        workload = database.commit_workload(task.dispatched[0])
        database.commit_tuning_record(ms.database.TuningRecord(candidate.sch.trace, workload, [1e-5], target.tvm_target(),
                                                               candidate.args_info))
    artifact = build_tvm(model, target, "torch", workdir / "cache", records_root=tmp_path / "tuning")
    assert artifact.manifest["tuning_records"]["tasks_tuned"] == len(tasks)
    untuned = build_tvm(model, target, "torch", workdir / "cache")
    kernels = artifact.dir / artifact.manifest["cuda_source"]
    assert kernels.read_text() != (untuned.dir / untuned.manifest["cuda_source"]).read_text()
    proc = subprocess.run(["nvcc", f"-arch={target.tvm_dict['arch']}", "-cubin", "-w", "-o", str(tmp_path / "k.cubin"),
                           str(kernels)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (the CUDA toolkit) is not installed here")
@pytest.mark.skipif(NO_CROSS_LINK is not None, reason=f"its host code is aarch64: {NO_CROSS_LINK}")
def test_jetson_orin_kernels_compile_for_sm87_with_nvcc(tmp_path):
    out = tmp_path / "orin"
    assert run_cli("compile", "digits_cnn", "--target", "jetson-orin", "--out", str(out), cwd=tmp_path).returncode == 0
    proc = subprocess.run(["nvcc", "-arch=sm_87", "-cubin", "-w", "-o", str(tmp_path / "k.cubin"), str(out / "kernels.cu")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "k.cubin").read_bytes()[:4] == b"\x7fELF"


@needs_gpu
def test_quickstart_digits_on_the_gpu_agrees_with_the_gpu_baselines(tmp_path):
    store = tmp_path / "h.db"
    proc = run_cli("run", str(ROOT / "recipes/quickstart.toml"), "--target", "cuda", "--model", "digits_cnn",
                   "--store", str(store), "--json", cwd=tmp_path, timeout=1200)
    rows = {r["engine"]: r for r in json.loads(proc.stdout)["rows"]}
    assert set(rows) == {"tvm", "torch", "onnxruntime"}
    for engine in ("tvm", "torch"):
        assert rows[engine]["status"] == "ok", rows[engine]
        assert rows[engine]["max_abs_diff"] < 1e-3 and rows[engine]["median_ms"] > 0
    assert any("GPU" in n for n in rows["torch"]["details"]["engine_notes"])
    # ONNX Runtime's CUDA provider is optional (onnxruntime-gpu): ok on the GPU, or a row that says why
    ort = rows["onnxruntime"]
    assert ort["status"] == "ok" and ort["details"]["engine_notes"] == ["CUDAExecutionProvider"] or "CUDA" in ort["reason"]


@needs_gpu
def test_tiny_tune_on_the_gpu_builds_with_its_records(tmp_path):
    recipe = recipe_from_dict({"name": "gpu-tune", "models": ["digits_cnn"], "targets": ["cuda"], "engines": ["tvm", "torch"],
                               "measure": {"warmup": 2, "repeats": 30}, "tune": {"trials": 16},
                               "output": {"dir": str(tmp_path), "store": str(tmp_path / "h.db")}})
    from tvmharness.tune import TuneOptions, tune_model

    model = load_model("digits_cnn", recipe.cache_dir)
    tuned = tune_model(model, resolve("cuda", 1), TuneOptions(trials=16), frontend="torch", cache_dir=recipe.cache_dir,
                       records_root=recipe.records_root, threads=4)
    assert tuned.trials_run > 0
    rows = {r["engine"]: r for r in run_recipe(recipe).rows}
    assert rows["tvm"]["status"] == "ok" and rows["tvm"]["tuned"], rows["tvm"]
    assert np.isfinite(rows["tvm"]["median_ms"]) and rows["tvm"]["max_abs_diff"] < 1e-3


def test_a_run_names_the_gpu_its_numbers_depend_on_where_there_is_one():
    from tvmharness.provenance import snapshot

    host = snapshot()["host"]
    if not GPU.usable:  # a CPU host's provenance is what it was: nothing to name
        assert "gpu" not in host
        return
    gpu = host["gpu"]
    assert gpu["name"] == GPU.name and gpu["arch"] == GPU.arch and gpu["memory_gb"] > 1
    assert re.fullmatch(r"\d+\.\d", gpu["driver"])
