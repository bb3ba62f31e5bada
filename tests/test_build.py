import errno
import json
import os
from dataclasses import replace
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import ROOT, USER_MODELS, run_cli
from tvmharness.build import build_tvm, load_artifact
from tvmharness.cache import file_hash
from tvmharness.engines import EngineOptions, get_engine
from tvmharness.errors import HarnessError
from tvmharness.tune import RECORDS, WORKLOADS, records_dir
from tvmharness.models import load_model
from tvmharness.targets import resolve


@pytest.fixture(scope="module")
def digits(workdir):
    return load_model("digits_cnn", workdir / "cache")


def test_a_tvm_session_leaves_the_process_on_every_core_it_had(tmp_path):
    """TVM binds the thread that starts its pool to one core unless told not to: an engine timed after
    it in the same process (a nightly's torch row measured again) would run on that core alone."""
    script = (f"import os, json\nfrom tvmharness.engines import EngineOptions, get_engine\n"
              f"from tvmharness.models import load_model\nfrom tvmharness.targets import resolve\n"
              f"model = load_model({str(ROOT / 'tests' / 'user_models.py') + ':tiny_mlp'!r}, {str(tmp_path)!r})\n"
              f"before = sorted(os.sched_getaffinity(0))\n"
              f"session = get_engine('tvm').prepare(model, resolve('x86', 1), EngineOptions(cache_dir={str(tmp_path)!r}, threads=1))\n"
              f"session.run(model.samples(1)[0])\nprint(json.dumps([before, sorted(os.sched_getaffinity(0))]))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("TVM_BIND_THREADS", "TVM_NUM_THREADS")}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    before, after = json.loads(proc.stdout.splitlines()[-1])
    assert after == before, (before, after)


@pytest.mark.parametrize("frontend", ["torch", "onnx"])
def test_both_frontends_build_and_agree_with_torch(digits, workdir, frontend):
    target = resolve("x86", 2)
    session = get_engine("tvm").prepare(digits, target, EngineOptions(frontend=frontend, cache_dir=workdir / "cache", threads=2))
    images = digits.eval_data.arrays[0][:32, None]  # batch-1 calls
    with torch.no_grad():
        expected = [digits.torch_module(torch.from_numpy(x)).numpy() for x in images]
    got = [session.run((x,))[0] for x in images]
    assert max(float(np.abs(e - g).max()) for e, g in zip(expected, got)) < 1e-4
    assert [int(e.argmax()) for e in expected] == [int(g.argmax()) for g in got]
    assert session.tuned is False and session.threads == 2


def test_artifact_directory_has_library_and_manifest(digits, workdir):
    target = resolve("x86", 2)
    artifact = build_tvm(digits, target, "torch", workdir / "cache")
    manifest = json.loads((artifact.dir / "manifest.json").read_text())
    assert manifest["library"]["sha256"] == file_hash(artifact.library)
    assert manifest["library"]["bytes"] == artifact.library.stat().st_size > 0
    assert manifest["target"]["tvm"]["kind"] == "llvm"
    assert manifest["versions"]["apache-tvm"].startswith("0.27")
    assert manifest["model_digest"] == digits.digest
    assert {"git_commit", "created", "build_key", "frontend"} <= set(manifest)
    assert manifest["tvm_warnings"] == [] and not (artifact.dir / "tvm-native.log").exists()  # a clean build keeps no log
    # A library edited after the build no longer matches its manifest: it is not reused.
    with open(artifact.library, "ab") as f:
        f.write(b"tampered")
    assert load_artifact(artifact.dir) is None
    rebuilt = build_tvm(digits, target, "torch", workdir / "cache")
    assert rebuilt.cache_hit is False and load_artifact(rebuilt.dir) is not None


def test_a_manifest_naming_a_file_outside_its_folder_is_no_artifact(digits, workdir, tmp_path):
    """A manifest's file names are plain names in its folder: one naming a library elsewhere (absolute,
    or ../) is never loaded, even where that library matches its hash."""
    artifact = build_tvm(digits, resolve("x86", 2), "torch", workdir / "cache")
    folder = tmp_path / "art"
    shutil.copytree(artifact.dir, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    for name in (str(artifact.library), f"../{artifact.dir.name}/{artifact.library.name}"):
        shutil.copytree(artifact.dir, tmp_path / artifact.dir.name, dirs_exist_ok=True)  # what ../ reaches
        (folder / "manifest.json").write_text(json.dumps(manifest | {"library": manifest["library"] | {"file": name}}))
        assert load_artifact(folder) is None, name
    (folder / "manifest.json").write_text(json.dumps(manifest | {"cuda_source": "/etc/passwd"}))
    assert load_artifact(folder) is None
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert load_artifact(folder) is not None


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the x86 preset needs an x86-64 host")
def test_x86_preset_detects_the_host_cpu():
    import tvm

    target = resolve("x86", 3)
    assert target.tvm_dict["mcpu"] == tvm.target.codegen.llvm_get_system_cpu() != "auto"
    assert target.tvm_dict["num-cores"] == 3
    flags = open("/proc/cpuinfo").read()  # LLVM's names for the features of the CPU it builds for
    assert ("avx2" in target.features) == (" avx2" in flags)
    assert ("avx512vnni" in target.features) == (" avx512_vnni" in flags)
    assert str(target.tvm_target().kind) == "llvm" and target.missing_features() == []


@pytest.mark.skipif(platform.machine() != "x86_64", reason="x86 CPUs")
def test_a_target_lists_what_its_cpu_needs_and_what_this_host_lacks_of_it(monkeypatch):
    """A preset's features are its CPU's, as LLVM knows them (not the build host's, nor tuning flags);
    those a host lacks are named before anything of it runs there (its code would die of SIGILL)."""
    from tvmharness import targets

    generic = resolve("x86-generic", 2)
    assert generic.cpu == "haswell" and generic.describe()["features"] == generic.features
    assert {"avx2", "fma"} <= set(generic.features) and not {"avx512f", "fast-gather", "macrofusion"} & set(generic.features)
    # a host of the baseline x86-64 CPU, without AVX2 (LLVM's own detection, faked)
    monkeypatch.setattr(targets, "host_cpu", lambda: "x86-64")
    monkeypatch.setattr(targets, "host_llvm_features", lambda: {"sse2": True, "avx": True, "avx2": False, "fma": False,
                                                                "avx512f": False})
    assert generic.missing_features() == ["avx2", "fma"]
    with pytest.raises(HarnessError, match=r"target x86-generic builds for haswell, and this host \(x86-64\) lacks its "
                                           r"avx2, fma: its modules would crash here"):
        targets.check_local_cpu(generic)
    assert resolve("x86-rpc", 2).missing_features() == ["avx2", "fma"]  # its kits run it, not this host
    targets.check_local_cpu(resolve("x86-rpc", 2))
    assert resolve("arm", 2).missing_features() == []  # another architecture: never run here


def test_a_command_that_names_no_target_measures_on_this_host_s_own_preset(monkeypatch):
    """On the board itself (a Jetson's or a Pi's Linux), the default is its aarch64 CPU, not x86."""
    from tvmharness.recipe import recipe_from_dict
    from tvmharness.targets import own_preset

    if platform.machine() == "x86_64":
        assert own_preset() == "x86" and recipe_from_dict({"models": ["digits_cnn"]}).target_names() == ["x86"]
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert own_preset() == "aarch64" and recipe_from_dict({"models": ["digits_cnn"]}).target_names() == ["aarch64"]
    target = resolve("aarch64", 4)
    assert target.preset.runs_on == "local" and target.tvm_dict["mtriple"] == "aarch64-linux-gnu"
    assert target.tvm_dict["num-cores"] == 4 and target.tvm_dict["mcpu"] != "auto"
    monkeypatch.setattr(platform, "machine", lambda: "riscv64")
    named = recipe_from_dict({"models": ["digits_cnn"], "targets": ["rpi4"]})  # a host without its own preset
    assert named.target_names() == ["rpi4"] and named.digest()  # may still build for a named target
    with pytest.raises(HarnessError, match=r"no local target preset for this host \(riscv64\)"):
        recipe_from_dict({"models": ["digits_cnn"]}).target_names()
    with pytest.raises(HarnessError) as err:  # another architecture's CPU preset: the boards' presets build for it here
        resolve("aarch64", 2)
    assert "runs on aarch64 but this host is riscv64" in err.value.cause and "boards: arm, jetson-orin, rpi4" in err.value.fix


def _as_pt2_and_onnx(module, example, stem: Path) -> tuple[Path, Path]:
    """The module saved as a user would: an ExportedProgram and an ONNX file."""
    pt2, onnx_path = stem.with_suffix(".pt2"), stem.with_suffix(".onnx")
    torch.export.save(torch.export.export(module, (example,)), str(pt2))
    torch.onnx.export(module, (example,), str(onnx_path), dynamo=True, external_data=False)
    return pt2, onnx_path


def test_every_output_of_a_user_model_reaches_every_engine(tmp_path, workdir):
    from tests.conftest import USER_MODELS
    from tests.user_models import two_heads

    module, example = two_heads()
    pt2, onnx_path = _as_pt2_and_onnx(module, example, tmp_path / "two")
    expected = [t.detach().numpy() for t in module(example)]
    target, options = resolve("x86", 2), EngineOptions(cache_dir=workdir / "cache", threads=2)
    for spec, engines in ((f"{USER_MODELS}:two_heads", ["torch", "onnxruntime", "tvm"]), (str(pt2), ["torch", "tvm"]),
                          (str(onnx_path), ["onnxruntime", "tvm"])):
        model = load_model(spec, workdir / "cache")
        assert "returns 2 outputs: every one is checked against the baseline" in model.notes[0]
        for engine in engines:
            got = get_engine(engine).prepare(model, target, options).run((example.numpy(),))
            assert [g.shape for g in got] == [(1, 4), (1, 8)], (spec, engine)
            for g, e in zip(got, expected):
                np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)
    assert "outputs" not in load_model(f"{USER_MODELS}:tiny_mlp", workdir / "cache").notes[0]


def test_a_model_that_returns_its_input_reaches_onnxruntime(workdir):
    """The exporter's Identity for a returned input defined the input's name again: ONNX Runtime refused the model."""
    from tests.conftest import USER_MODELS
    from tests.user_models import input_passed_on

    module, example = input_passed_on()
    model = load_model(f"{USER_MODELS}:input_passed_on", workdir / "cache")
    got = get_engine("onnxruntime").prepare(model, resolve("x86", 2), EngineOptions(cache_dir=workdir / "cache", threads=2)).run((example.numpy(),))
    for g, e in zip(got, module(example), strict=True):
        np.testing.assert_allclose(g, e.detach().numpy(), rtol=1e-5, atol=1e-5)


def test_a_pt2_of_quantize_ops_loads_and_one_of_an_unknown_op_says_which(tmp_path, workdir):
    """PT2E's quantized_decomposed ops are registered before a .pt2 loads; an operator nothing here
    registers is named (torch.export.load itself only says "check the warnings above")."""
    import torch.ao.quantization.fx._decomposed  # noqa: F401  (as a PT2E user's process has them)

    qd = torch.ops.quantized_decomposed

    class FakeQuantized(torch.nn.Module):
        def forward(self, x):
            return qd.dequantize_per_tensor(qd.quantize_per_tensor(x, 0.05, 0, -128, 127, torch.int8), 0.05, 0, -128, 127, torch.int8)

    torch.export.save(torch.export.export(FakeQuantized(), (torch.randn(1, 4),)), str(tmp_path / "fq.pt2"))
    assert load_model(str(tmp_path / "fq.pt2"), workdir / "cache").inputs[0].shape == (1, 4)
    # A program saved with a custom op, loaded where its library is not: the .pt2 is edited to name
    # an op no library defines, as a process without the user's op library would find it.
    import zipfile

    with zipfile.ZipFile(tmp_path / "fq.pt2") as src, zipfile.ZipFile(tmp_path / "custom.pt2", "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item, data.replace(b"quantized_decomposed.quantize_per_tensor", b"nowhere_lib.quantize_per_tensor"))
    with pytest.raises(HarnessError) as err:
        load_model(str(tmp_path / "custom.pt2"), workdir / "cache")
    assert "holds the operator torch.ops.nowhere_lib.quantize_per_tensor.default, which no library loaded here" in str(err.value)
    assert "file.py:function" in err.value.fix


def test_a_full_cache_folder_is_said_as_such_not_as_a_model_that_does_not_export(tmp_path, monkeypatch):
    import errno

    from tvmharness.export import onnx_file

    def disk_full(*args, **kwargs):  # what the exporter raises writing its file on a full disk
        raise OSError(errno.ENOSPC, "No space left on device", str(args[2]))

    monkeypatch.setattr(torch.onnx, "export", disk_full)
    from tests.conftest import USER_MODELS

    with pytest.raises(HarnessError) as err:  # a cache of its own: no export there yet
        onnx_file(load_model(f"{USER_MODELS}:tiny_mlp", tmp_path / "cache"), tmp_path / "cache")
    assert "ONNX export to" in err.value.cause and "No space left on device" in err.value.cause
    assert "does not export" not in err.value.cause and "free space" in err.value.fix


def test_a_model_of_several_inputs_and_dtypes_reaches_every_engine(tmp_path, workdir, capfd):
    """Token ids (int64, an embedding lookup) and a float mask, from each kind of model file."""
    from tests.conftest import USER_MODELS
    from tests.user_models import token_classifier

    module, example = token_classifier()
    pt2 = tmp_path / "tokens.pt2"
    torch.export.save(torch.export.export(module, example), str(pt2))
    onnx_path = tmp_path / "tokens.onnx"
    torch.onnx.export(module, example, str(onnx_path), input_names=["ids", "mask"], dynamo=False,
                      dynamic_axes={"ids": {0: "batch"}, "mask": {0: "batch"}})
    target, options = resolve("x86", 2), EngineOptions(cache_dir=workdir / "cache", threads=2)
    low, high = int(example[0].min()), int(example[0].max())
    for spec, engines, value_range in ((f"{USER_MODELS}:token_classifier", ["torch", "onnxruntime", "tvm"], (low, high)),
                                       (str(pt2), ["torch", "tvm"], (low, high)),  # a .pt2 keeps its example
                                       (str(onnx_path), ["onnxruntime", "tvm"], (0, 49))):  # an .onnx: its embedding's rows
        model = load_model(spec, workdir / "cache", batch=3)
        ids, mask = model.inputs
        assert (ids.name, ids.dtype, ids.value_range, mask.name, mask.dtype) == ("ids", "int64", value_range, "mask", "float32")
        assert ids.range_from == ("embed.weight's 50 rows" if spec.endswith(".onnx") else "the example")
        assert ids.shape == mask.shape == ((3, 12) if spec.endswith(".onnx") else (1, 12))  # a dynamic batch takes the recipe's
        feeds = model.samples(3)
        seeded = np.stack([f[0] for f in feeds])
        assert seeded.dtype == np.int64 and seeded.min() >= value_range[0] and seeded.max() <= value_range[1]
        assert len(np.unique(seeded)) > 1
        for engine in engines:
            session = get_engine(engine).prepare(model, target, options)
            for feed in feeds:
                (got,) = session.run(feed)
                expected = module(*(torch.from_numpy(a) for a in feed)).detach().numpy()
                np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, err_msg=f"{spec} on {engine}")
    # A dynamic batch is part of what is built: the same file at two batch sizes is two builds, and rows say which.
    at_one, at_three = (load_model(str(onnx_path), workdir / "cache", batch=b) for b in (1, 3))
    assert (at_one.batch, at_three.batch) == (1, 3) and at_one.digest != at_three.digest
    artifact = get_engine("tvm").build(load_model(f"{USER_MODELS}:token_classifier", workdir / "cache"), target, options)
    assert artifact.manifest["inputs"] == [{"name": "ids", "shape": [1, 12], "dtype": "int64"},
                                           {"name": "mask", "shape": [1, 12], "dtype": "float32"}]
    # TVM's C++ code warns on stderr that its embedding lookup does not check bounds: kept with the build, counted
    (warning,) = artifact.manifest["tvm_warnings"]
    assert warning["message"].startswith("Fast mode segfaults when there are out-of-bounds indices") and warning["count"] >= 1
    assert warning["message"] in (artifact.dir / "tvm-native.log").read_text()
    # a build beside records of other models only is the untuned build itself, found again, not built anew
    records = records_dir(workdir / "other-tuning", target)
    records.mkdir(parents=True)
    for name in (WORKLOADS, RECORDS):
        (records / name).write_text("")
    capfd.readouterr()
    beside = get_engine("tvm").build(load_model(f"{USER_MODELS}:token_classifier", workdir / "cache"), target,
                                     replace(options, records_root=workdir / "other-tuning"))
    assert beside.manifest == artifact.manifest and beside.cache_hit  # no record of its tasks: the untuned build itself
    assert "Fast mode segfaults" not in capfd.readouterr().err  # its tasks' lowering warned again, not under the progress


def test_unknown_target_names_the_known_ones():
    with pytest.raises(HarnessError) as err:
        resolve("nope", 2)
    assert "unknown target 'nope'" in err.value.cause and "x86" in err.value.cause


def test_user_pt2_and_onnx_files_load(tmp_path, workdir):
    from tests.user_models import tiny_mlp

    module, example = tiny_mlp()
    pt2, onnx_path = _as_pt2_and_onnx(module, example, tmp_path / "mlp")

    from_pt2 = load_model(str(pt2), workdir / "cache")
    assert [i.shape for i in from_pt2.inputs] == [(1, 16)] and from_pt2.baseline_engine == "torch"
    from_onnx = load_model(str(onnx_path), workdir / "cache")
    assert [i.shape for i in from_onnx.inputs] == [(1, 16)] and from_onnx.baseline_engine == "onnxruntime"
    assert not [n for n in from_pt2.notes + from_onnx.notes if "dynamic batch" in n]  # exported at a fixed batch
    dynamic = tmp_path / "mlp_any_batch.pt2"
    torch.export.save(torch.export.export(module, (example.repeat(2, 1),), dynamic_shapes=({0: torch.export.Dim("b")},)),
                      str(dynamic))
    (note,) = [n for n in load_model(str(dynamic), workdir / "cache", batch=4).notes if "dynamic batch" in n]
    assert note == ("input 'x' has a dynamic batch: built for batch 4 ([measure] batch; --input-shape x=8x16 "
                    "builds for 8)")
    sized = load_model(str(dynamic), workdir / "cache", settings={"x": {"shape": [3, 16]}})
    assert [i.shape for i in sized.inputs] == [(3, 16)] and not [n for n in sized.notes if "dynamic batch" in n]

    target = resolve("x86", 2)
    options = EngineOptions(cache_dir=workdir / "cache", threads=2)
    x = example.numpy()
    expected = module(example).detach().numpy()
    for model in (from_pt2, from_onnx):
        (got,) = get_engine("tvm").prepare(model, target, options).run((x,))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_a_model_of_a_package_the_user_installed_is_named_by_its_code(tmp_path, monkeypatch):
    """A package the user installed from a folder of theirs (pip install ., not editable) is their code:
    its version need not change with an edit, so its files are hashed (they were taken for a library's
    and an edited model reused its old builds). One an index installed is named by its version; the
    packages whose versions every row records (torch, torchvision) are not named at all."""
    import importlib

    from tvmharness import models

    site = tmp_path / "site-packages"  # where pip puts it: this environment's library folder
    (site / "mynets").mkdir(parents=True)
    (site / "mynets" / "__init__.py").write_text("")
    info = site / "mynets-0.1.dist-info"
    info.mkdir()
    monkeypatch.syspath_prepend(str(site))
    source = ("import torch\nfrom torch import nn\n\nclass Net(nn.Module):\n    def __init__(self):\n"
              "        super().__init__()\n        self.fc = nn.Linear(4, 2)\n\n    def forward(self, x):\n"
              "        return torch.relu(self.fc(x))\n\ndef net():\n    torch.manual_seed(0)\n"
              "    return Net().eval(), torch.randn(1, 4)\n")

    def digest(code: str, version: str = "0.1", origin: str | None = None) -> str:
        (site / "mynets" / "nets.py").write_text(code)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: mynets\nVersion: {version}\n")
        (info / "RECORD").write_text("mynets/__init__.py,,\nmynets/nets.py,,\n")
        (info / "direct_url.json").unlink(missing_ok=True)
        if origin:
            (info / "direct_url.json").write_text(json.dumps({"url": origin, "dir_info": {}}))
        for name in [m for m in sys.modules if m.startswith("mynets")]:
            monkeypatch.delitem(sys.modules, name)  # a new process imports it afresh
        importlib.invalidate_caches()
        models._distributions_of.cache_clear()
        models._installed_library.cache_clear()
        return load_model("mynets.nets:net", tmp_path).digest

    edited = source.replace("torch.relu", "torch.sigmoid")
    mine = f"file://{tmp_path / 'mynets-project'}"  # pip install . from the user's own folder
    assert digest(source, origin=mine) != digest(edited, origin=mine)
    assert digest(source) == digest(edited) != digest(edited, version="0.2")  # an index's: by its version
    # a zoo model, torchvision's code, is named by torchvision's version: none of its files is hashed
    assert models._own_code(load_model("resnet18", tmp_path).torch_module) == []


def test_a_forward_edited_with_the_same_layers_and_weights_is_another_model(tmp_path):
    """The user's own code is part of a model's digest, so its caches (ONNX export, int8, TVM build)
    are not reused for a model that now computes something else; a zoo model's digest is its weights'."""
    source = ("import torch\nfrom torch import nn\n\nclass Net(nn.Module):\n    def __init__(self):\n"
              "        super().__init__()\n        self.fc = nn.Linear(4, 2)\n\n    def forward(self, x):\n"
              "        return torch.relu(self.fc(x))\n\ndef net():\n    torch.manual_seed(0)\n"
              "    return Net().eval(), torch.randn(1, 4)\n")
    file = tmp_path / "mine.py"
    file.write_text(source)
    before = load_model(f"{file}:net", tmp_path)
    assert load_model(f"{file}:net", tmp_path).digest == before.digest
    file.write_text(source.replace("torch.relu", "torch.sigmoid"))
    assert load_model(f"{file}:net", tmp_path).digest != before.digest
    # a torchvision model whose own step is overridden: forward is torchvision's, the edit the user's
    resnet = ("import torch\nfrom torchvision.models.resnet import BasicBlock, ResNet\n\nclass Net(ResNet):\n"
              "    def _forward_impl(self, x):\n        return super()._forward_impl(x) * 2\n\ndef net():\n"
              "    torch.manual_seed(0)\n    return Net(BasicBlock, [1, 1, 1, 1], num_classes=4).eval(), "
              "torch.randn(1, 3, 32, 32)\n")
    file.write_text(resnet)
    before = load_model(f"{file}:net", tmp_path)
    file.write_text(resnet.replace("* 2", "* 3"))
    assert load_model(f"{file}:net", tmp_path).digest != before.digest
    # the same weights and code, a setting apart (a layer's plain attribute, as nn.MultiheadAttention's
    # num_heads is): two functions of one file, each another model
    (tmp_path / "heads.py").write_text(
        "import torch\nfrom torch import nn\n\nclass Head(nn.Module):\n    def __init__(self, temperature):\n"
        "        super().__init__()\n        self.fc, self.temperature = nn.Linear(4, 2), temperature\n\n"
        "    def forward(self, x):\n        return torch.softmax(self.fc(x) / self.temperature, -1)\n\n"
        "def sharp():\n    torch.manual_seed(0)\n    return Head(0.1).eval(), torch.randn(1, 4)\n\n"
        "def smooth():\n    torch.manual_seed(0)\n    return Head(10.0).eval(), torch.randn(1, 4)\n")
    assert (load_model(f"{tmp_path / 'heads.py'}:sharp", tmp_path).digest
            != load_model(f"{tmp_path / 'heads.py'}:smooth", tmp_path).digest)
    # forward calls the user's helper in another file, through a name or its module: an edit there counts,
    # and in one process (a notebook loading it again) the edited helper is what runs, as its digest says
    x = torch.full((1, 4), -3.0)
    for call, helper in (("from helpers import act", "act(self.fc(x))"), ("import helpers", "helpers.act(self.fc(x))")):
        (tmp_path / "helpers.py").write_text("import torch\n\ndef act(x):\n    return torch.relu(x)\n")
        file.write_text(f"{call}\n" + source.replace("torch.relu(self.fc(x))", helper))
        before = load_model(f"{file}:net", tmp_path)
        (tmp_path / "helpers.py").write_text("import torch\n\ndef act(x):\n    return torch.tanh(x)\n")
        after = load_model(f"{file}:net", tmp_path)
        assert after.digest != before.digest, call
        assert bool((before.torch_module(x) >= 0).all()) and bool((after.torch_module(x) < 0).any()), call
    # two model files in two folders, each with its own helpers.py: each runs its own
    for folder, act in (("a", "relu"), ("b", "tanh")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "helpers.py").write_text(f"import torch\n\ndef act(x):\n    return torch.{act}(x)\n")
        (tmp_path / folder / "mine.py").write_text("from helpers import act\n" + source.replace("torch.relu(self.fc(x))", "act(self.fc(x))"))
    a, b = (load_model(f"{tmp_path / folder / 'mine.py'}:net", tmp_path).torch_module for folder in "ab")
    assert bool((a(x) >= 0).all()) and bool((b(x) < 0).any())  # relu's and tanh's, not relu's twice
    # a script's own folder, first on sys.path, stays first after loading a model from it
    folder = str(tmp_path / "a")
    sys.path[:] = [folder] + [p for p in sys.path if p != folder]
    try:
        load_model(f"{folder}/mine.py:net", tmp_path)
        assert sys.path[0] == folder and sys.path.count(folder) == 1
    finally:
        sys.path.remove(folder)


def test_an_onnx_model_with_its_weights_beside_it_is_another_model_when_they_change(tmp_path):
    """Weights saved as ONNX external data change in the file beside the .onnx, not in it."""
    import onnx

    from tests.user_models import tiny_mlp
    from tvmharness.errors import HarnessError

    module, example = tiny_mlp()
    plain = tmp_path / "plain.onnx"
    torch.onnx.export(module, (example,), str(plain), dynamo=False)
    proto = onnx.load(str(plain))
    path = tmp_path / "mlp.onnx"
    onnx.save_model(proto, str(path), save_as_external_data=True, location="mlp.onnx.data", size_threshold=0)
    from tvmharness.compress import apply_variant

    before = load_model(str(path), tmp_path)
    assert (tmp_path / "mlp.onnx.data").is_file() and load_model(str(path), tmp_path).digest == before.digest
    int8 = apply_variant(before, "int8:samples=4", tmp_path / "cache")
    weights = bytearray((tmp_path / "mlp.onnx.data").read_bytes())
    weights[:4] = np.float32(1.5).tobytes()  # retrained: the graph file stays byte for byte the same
    (tmp_path / "mlp.onnx.data").write_bytes(bytes(weights))
    retrained = load_model(str(path), tmp_path)
    assert retrained.digest != before.digest
    assert apply_variant(retrained, "int8:samples=4", tmp_path / "cache").onnx_path != int8.onnx_path  # quantized anew
    from tvmharness.engines import EngineOptions, get_engine
    from tvmharness.targets import resolve

    session = get_engine("onnxruntime").prepare(before, resolve("x86", 1), EngineOptions(cache_dir=tmp_path))
    assert session.artifact_bytes == path.stat().st_size + len(weights)  # the weights beside it are its size too
    (tmp_path / "mlp.onnx.data").unlink()
    with pytest.raises(HarnessError, match=r"keeps its weights in mlp.onnx.data \(ONNX external data\)"):
        load_model(str(path), tmp_path)


def test_an_exported_manifest_names_outputs_and_value_ranges_and_no_stale_file_stays(workdir, tmp_path):
    """What a deployer feeds and gets back: a dict's outputs flattened and named by their keys, and the
    integer values an input was checked with. An export onto an earlier one's folder leaves none of
    the files only the earlier had (its TVM log), and the user's own files alone."""
    from tests.conftest import USER_MODELS
    from tvmharness.build import export_artifact

    target, options = resolve("x86", 2), EngineOptions(cache_dir=workdir / "cache", threads=2)
    named = load_model(f"{USER_MODELS}:named_outputs", workdir / "cache")
    built = get_engine("tvm").build(named, target, options)
    assert built.manifest["outputs"] == [{"name": "logits", "shape": [1, 4], "dtype": "float32"},
                                         {"name": "aux.0", "shape": [1], "dtype": "float32"},
                                         {"name": "aux.1", "shape": [1, 8], "dtype": "float32"}]
    # names that would define a value twice in ONNX (the input's, a flattened one's) get names of their own
    import onnxruntime

    from tvmharness.export import onnx_file

    keyed = load_model(f"{USER_MODELS}:keyed_like_its_input", workdir / "cache")
    session = onnxruntime.InferenceSession(str(onnx_file(keyed, workdir / "cache")[0]))
    assert [o.name for o in session.get_outputs()] == keyed.output_names() == ["x_out", "output.0", "output.1", "output.0_out"]
    assert [o["name"] for o in get_engine("tvm").build(keyed, target, options).manifest["outputs"]] == keyed.output_names()
    tokens = load_model(f"{USER_MODELS}:token_classifier", workdir / "cache", settings={"ids": {"range": [0, 49]}})
    warned = get_engine("tvm").build(tokens, target, options)
    assert warned.manifest["tvm_warnings"] and warned.manifest["outputs"] == [{"name": "output", "shape": [1, 4], "dtype": "float32"}]
    out = tmp_path / "artifact"
    manifest = export_artifact(warned, out, tokens, target, {"checked": False, "summary": "not checked (--no-check)"}, [])
    assert manifest["inputs"][0] == {"name": "ids", "shape": [1, 12], "dtype": "int64", "value_range": [0, 49],
                                     "range_from": "--input-range or [inputs]"}
    assert manifest == json.loads((out / "manifest.json").read_text()) and (out / "tvm-native.log").is_file()
    (out / "notes.txt").write_text("mine")
    (out / "kernels.cu").write_text("mine")  # a name exports write, and not the earlier artifact's: the user's
    manifest = export_artifact(built, out, named, target, {"checked": False, "summary": "not checked (--no-check)"}, [])
    assert sorted(p.name for p in out.iterdir()) == ["kernels.cu", "manifest.json", "model.so", "notes.txt"]
    assert manifest["tvm_warnings"] == [] and manifest["check"]["summary"] == "not checked (--no-check)"


@pytest.mark.parametrize("failing", ["library", "manifest"])
def test_an_export_onto_a_full_disk_leaves_the_earlier_artifact_as_it_was(digits, workdir, tmp_path, monkeypatch, failing):
    """A full disk mid-export: the earlier artifact there stays whole (its library, manifest and TVM
    log, no partial file beside them), and the error names the folder that was full, not the cache."""
    from tests.conftest import USER_MODELS
    from tvmharness.build import export_artifact

    target, unchecked = resolve("x86", 2), {"checked": False, "summary": "not checked (--no-check)"}
    tokens = load_model(f"{USER_MODELS}:token_classifier", workdir / "cache", settings={"ids": {"range": [0, 49]}})
    out = tmp_path / "artifact"
    export_artifact(build_tvm(tokens, target, "torch", workdir / "cache"), out, tokens, target, unchecked, [])
    earlier = {p.name: p.read_bytes() for p in out.iterdir()}
    assert {"model.so", "manifest.json", "tvm-native.log"} <= set(earlier)
    full = (errno.ENOSPC, os.strerror(errno.ENOSPC))
    if failing == "library":
        def copy2(src, dst):  # as shutil's on a full disk: part of the file written, the error naming the source
            Path(dst).write_bytes(Path(src).read_bytes()[:4096])
            raise OSError(*full, str(src))

        monkeypatch.setattr(shutil, "copy2", copy2)
    else:
        write_text = Path.write_text

        def cut_short(path, text, *args, **kwargs):  # a write into the artifact's folder: 4096 bytes, then full
            if path.parent != out:
                return write_text(path, text, *args, **kwargs)
            write_text(path, text[:4096], *args, **kwargs)
            raise OSError(*full)

        monkeypatch.setattr(Path, "write_text", cut_short)
    built = build_tvm(digits, target, "torch", workdir / "cache")
    with pytest.raises(HarnessError) as failed:
        export_artifact(built, out, digits, target, unchecked, [])
    assert f"cannot write the artifact to {out}: No space left on device" in failed.value.cause
    assert str(workdir / "cache") not in failed.value.cause and "free space" in failed.value.fix
    assert {p.name: p.read_bytes() for p in out.iterdir()} == earlier
    assert load_artifact(out) is not None


def test_two_processes_building_one_model_at_once_both_succeed(tmp_path):
    """The second waits for the first's build and reuses it: neither fails on the other's files."""
    results = tmp_path / "results"
    runs = [subprocess.Popen([sys.executable, "-m", "tvmharness", "compile", "digits_cnn", "--output-dir", str(results),
                              "--out", str(tmp_path / f"art{k}")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, cwd=ROOT, env=dict(os.environ, COLUMNS="200")) for k in (1, 2)]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    entries = list((results / "cache" / "tvm").iterdir())
    assert len(entries) == 1 and load_artifact(entries[0]) is not None
    assert not [p for p in (results / "cache").rglob("*") if ".partial" in p.name]  # each writer's own, all replaced
    shas = {json.loads((tmp_path / f"art{k}" / "manifest.json").read_text())["library"]["sha256"] for k in (1, 2)}
    assert shas == {load_artifact(entries[0]).manifest["library"]["sha256"]}
    assert sum("reused cached build" in output for output in outputs) == 1  # the second waited and used the first's

    # What the cache holds, and trimming what no command used for a while: an entry a lookup found stays.
    def cache(*args: str) -> dict:
        proc = run_cli("cache", "--output-dir", str(results), "--json", *args)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def age_all(days: float) -> None:
        then = time.time() - days * 86400
        for entry in (results / "cache").glob("*/*"):
            os.utime(entry, (then, then))

    bare = run_cli("cache", "--output-dir", str(results), "--prune-unused-for", "14")  # 14 seconds would empty it: a unit is asked for
    assert bare.returncode == 2 and "gives no unit" in bare.stderr and "14d" in bare.stderr, bare.stderr
    held = {s["stage"]: s for s in cache()["stages"]}
    assert held["tvm"]["entries"] == 1 and held["tvm"]["bytes"] >= (entries[0] / "model.so").stat().st_size
    age_all(40)
    again = run_cli("compile", "digits_cnn", "--output-dir", str(results), "--out", str(tmp_path / "art1"))
    assert again.returncode == 0 and "reused cached build" in again.stdout, again.stderr
    trimmed = cache("--prune-unused-for", "30d")
    assert {s["stage"]: s["entries"] for s in trimmed["stages"]}.get("tvm") == 1 and load_artifact(entries[0]) is not None
    age_all(40)
    emptied = cache("--prune-unused-for", "30d")
    assert emptied["stages"] == [] and emptied["removed"]["entries"] == sum(s["entries"] for s in trimmed["stages"])
    assert not list((results / "cache").glob("*/*"))


def test_a_killed_writer_s_partial_file_goes_and_a_running_one_s_stays(tmp_path):
    """Each writer has its own partial file: one a killed process left is removed by the next writer of
    that file, one a live process is writing is not."""
    import os

    from tvmharness.cache import written_whole

    for name, text in (("model.partial.so", "older name"), ("model.partial-999999999-dead.so", "killed"),
                       (f"model.partial-{os.getppid()}-live.so", "running")):
        (tmp_path / name).write_text(text)
    with written_whole(tmp_path / "model.so") as partial:
        partial.write_text("whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"model.partial-{os.getppid()}-live.so", "model.so"]


def test_a_damaged_cached_export_is_made_again_not_reused(tmp_path):
    """A cached ONNX or .pt2 export cut short (a disk that failed, a crash before the file reached it)
    failed every later run that took it from the cache: its hash, kept beside it, tells, and it is
    exported again."""
    import onnx

    from tvmharness.export import onnx_file, pt2_file

    model = load_model(f"{USER_MODELS}:tiny_mlp", tmp_path / "cache")
    path, hit = onnx_file(model, tmp_path / "cache")
    assert hit is False and onnx_file(model, tmp_path / "cache") == (path, True)
    whole = path.read_bytes()
    path.write_bytes(whole[:200])
    assert onnx_file(model, tmp_path / "cache") == (path, False)  # exported again
    onnx.checker.check_model(str(path))
    exported = pt2_file(model, tmp_path / "cache")
    exported.write_bytes(exported.read_bytes()[:500])
    assert torch.export.load(str(pt2_file(model, tmp_path / "cache"))) is not None


def test_a_full_disk_while_a_build_is_written_is_one_message_naming_the_folder(tmp_path, monkeypatch):
    """It was a bare "OSError: [Errno 28] No space left on device" on the row; the half-made entry is
    not reused: the next build makes it whole."""
    import tvmharness.build as build

    model = load_model(f"{USER_MODELS}:tiny_mlp", tmp_path / "cache")
    target = resolve("x86", 1)
    real = build.written_whole

    def full_at_the_manifest(path, *args, **kwargs):
        if path.name == "manifest.json":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(build, "written_whole", full_at_the_manifest)
    with pytest.raises(HarnessError, match=r"cannot write model 'tiny_mlp''s build to .*/tvm/\w+: No space left on device"):
        build_tvm(model, target, "torch", tmp_path / "cache")
    monkeypatch.undo()
    artifact = build_tvm(model, target, "torch", tmp_path / "cache")
    assert not artifact.cache_hit and (artifact.dir / "manifest.json").is_file()


def test_pruning_a_cache_it_cannot_write_says_so(tmp_path):
    """A read-only cache's unused entries stayed, and the prune said nothing and exited 0."""
    cache = tmp_path / "results" / "cache"
    entry = cache / "onnx" / "0123456789abcdef"
    entry.mkdir(parents=True)
    (entry / "m.onnx").write_bytes(b"x" * 10)
    then = time.time() - 40 * 86400
    os.utime(entry, (then, then))
    if subprocess.run(["mount", "--bind", str(cache), str(cache)], capture_output=True).returncode:
        pytest.skip("cannot bind-mount here (needs root and mount)")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(cache)], check=True, capture_output=True)
        proc = run_cli("cache", "--output-dir", str(tmp_path / "results"), "--prune-unused-for", "30d")
    finally:
        subprocess.run(["umount", str(cache)], check=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    said = " ".join(proc.stderr.split())
    assert f"could not remove 1 unused entry (the first: {entry}: Read-only file system)" in said, said
    assert "make the cache writable" in said and entry.is_dir()


def test_a_folder_another_compile_is_writing_is_no_stranger_s(tmp_path):
    """Two compiles of one model at once: the second saw the first's partial files, no manifest yet, and
    refused the folder as someone else's; a dead writer's partial file is still a stranger's."""
    from tvmharness.build import earlier_artifact_files

    out = tmp_path / "art"
    out.mkdir()
    (out / f"model.partial-{os.getpid()}-0a1b2c3d.so").write_bytes(b"being written")
    assert earlier_artifact_files(out) == set()
    (out / "model.partial-999999999-0a1b2c3d.so").write_bytes(b"left by a killed writer")
    with pytest.raises(HarnessError, match="holds files and no artifact of tvmharness"):
        earlier_artifact_files(out)
