import json
import platform
from pathlib import Path

import numpy as np
import pytest
import torch

from tvmharness.build import build_tvm, load_artifact
from tvmharness.cache import file_hash
from tvmharness.engines import EngineOptions, get_engine
from tvmharness.errors import HarnessError
from tvmharness.models import load_model
from tvmharness.targets import resolve


@pytest.fixture(scope="module")
def digits(workdir):
    return load_model("digits_cnn", workdir / "cache")


@pytest.mark.parametrize("frontend", ["torch", "onnx"])
def test_both_frontends_build_and_agree_with_torch(digits, workdir, frontend):
    target = resolve("x86", 2)
    session = get_engine("tvm").prepare(digits, target, EngineOptions(frontend=frontend, cache_dir=workdir / "cache", threads=2))
    images = digits.eval_set[0][:32]
    with torch.no_grad():
        expected = [digits.torch_module(torch.from_numpy(x)).numpy() for x in images]
    got = [session.run(x)[0] for x in images]
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
    # A library edited after the build no longer matches its manifest: it is not reused.
    with open(artifact.library, "ab") as f:
        f.write(b"tampered")
    assert load_artifact(artifact.dir) is None
    rebuilt = build_tvm(digits, target, "torch", workdir / "cache")
    assert rebuilt.cache_hit is False and load_artifact(rebuilt.dir) is not None


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the x86 preset needs an x86-64 host")
def test_x86_preset_detects_the_host_cpu():
    import tvm

    target = resolve("x86", 3)
    assert target.tvm_dict["mcpu"] == tvm.target.codegen.llvm_get_system_cpu() != "auto"
    assert target.tvm_dict["num-cores"] == 3
    flags = open("/proc/cpuinfo").read()
    assert ("avx2" in target.features) == (" avx2" in flags)
    assert ("avx512_vnni" in target.features) == (" avx512_vnni" in flags)
    assert str(target.tvm_target().kind) == "llvm"


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
            got = get_engine(engine).prepare(model, target, options).run(example.numpy())
            assert [g.shape for g in got] == [(1, 4), (1, 8)], (spec, engine)
            for g, e in zip(got, expected):
                np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)
    assert "outputs" not in load_model(f"{USER_MODELS}:tiny_mlp", workdir / "cache").notes[0]


def test_unknown_target_names_the_known_ones():
    with pytest.raises(HarnessError) as err:
        resolve("nope", 2)
    assert "unknown target 'nope'" in err.value.cause and "x86" in err.value.cause


def test_user_pt2_and_onnx_files_load(tmp_path, workdir):
    from tests.user_models import tiny_mlp

    module, example = tiny_mlp()
    pt2, onnx_path = _as_pt2_and_onnx(module, example, tmp_path / "mlp")

    from_pt2 = load_model(str(pt2), workdir / "cache")
    assert from_pt2.input_shape == (1, 16) and from_pt2.baseline_engine == "torch"
    from_onnx = load_model(str(onnx_path), workdir / "cache")
    assert from_onnx.input_shape == (1, 16) and from_onnx.baseline_engine == "onnxruntime"

    target = resolve("x86", 2)
    options = EngineOptions(cache_dir=workdir / "cache", threads=2)
    x = example.numpy()
    expected = module(example).detach().numpy()
    for model in (from_pt2, from_onnx):
        (got,) = get_engine("tvm").prepare(model, target, options).run(x)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
