import os
import re
import time
from pathlib import Path

import pytest

from tests.conftest import USER_MODELS
from tvmharness.pipeline import BUILD_FAILED, LOAD_FAILED, OK, confirm_latency, run_recipe
from tvmharness.recipe import recipe_from_dict
from tvmharness.report.regress import judge_run
from tvmharness.results import Store


@pytest.fixture(scope="module")
def first_run(workdir):
    recipe = recipe_from_dict({
        "name": "pipeline", "models": ["digits_cnn"],
        "measure": {"warmup": 1, "repeats": 30, "threads": 2},
        "output": {"dir": str(workdir / "pipeline"), "store": str(workdir / "pipeline" / "history.db")},
    })
    return recipe, run_recipe(recipe)


def test_every_engine_is_measured_against_the_torch_baseline(first_run):
    recipe, result = first_run
    rows = {r["engine"]: r for r in result.rows}
    assert set(rows) == {"torch", "tvm", "onnxruntime"}
    assert all(r["status"] == OK for r in rows.values()), [r["reason"] for r in rows.values()]
    base = rows["torch"]
    assert base["is_baseline"] and base["variant"] == "fp32"
    for engine in ("tvm", "onnxruntime"):
        row = rows[engine]
        assert row["speedup_vs_baseline"] == pytest.approx(base["median_ms"] / row["median_ms"])
        assert row["accuracy"] == pytest.approx(base["accuracy"], abs=0.01)
        assert row["top1_agreement"] > 0.98
        assert row["artifact_bytes"] > 0
    assert base["accuracy"] > 0.9  # the digits CNN really learned the task
    assert all(len(r["samples_ms"]) == 30 and r["threads"] == 2 for r in rows.values())
    # the run's plan is the rows it measured: what a run cut short did not reach is named from it
    assert sorted(result.provenance["planned"]) == sorted([r["model"], r["variant"], r["target"], r["engine"]] for r in result.rows)
    assert rows["tvm"]["tuned"] is False and rows["tvm"]["cache_hit"] is False


def test_the_store_holds_what_was_measured(first_run):
    _, result = first_run
    frame = result.frame()
    assert len(frame) == 3
    by_engine = frame.set_index("engine")
    for row in result.rows:
        stored = by_engine.loc[row["engine"]]
        assert stored["median_ms"] == pytest.approx(row["median_ms"])
        assert stored["samples_ms"] == row["samples_ms"]
    run = result.store.run(result.run_id)
    assert run["provenance"]["threads"] == 2 and run["git_commit"]


def test_rerun_reuses_every_build(first_run):
    recipe, result = first_run
    tvm_dir = next(r["details"]["artifact_dir"] for r in result.rows if r["engine"] == "tvm")
    mtime = os.stat(os.path.join(tvm_dir, "model.so")).st_mtime_ns
    again = run_recipe(recipe)
    built = {r["engine"]: r["cache_hit"] for r in again.rows if r["cache_hit"] is not None}
    assert built == {"tvm": True, "onnxruntime": True}
    assert os.stat(os.path.join(tvm_dir, "model.so")).st_mtime_ns == mtime
    assert len(again.frame()) == 3 and again.run_id != result.run_id


def test_a_failing_row_does_not_stop_the_others(recipe_dict, tmp_path, monkeypatch):
    recipe = recipe_from_dict(recipe_dict(models=[f"{USER_MODELS}:unsupported_op", f"{USER_MODELS}:weights_gone",
                                                  str(tmp_path / "moved.pt2"), "digits_cnn"], engines=["tvm", "torch"]))
    monkeypatch.delenv("TVM_NUM_THREADS", raising=False)
    monkeypatch.delenv("TVM_BIND_THREADS", raising=False)
    result = run_recipe(recipe)
    # set for the run's TVM sessions, not for a notebook's later processes
    assert "TVM_NUM_THREADS" not in os.environ and "TVM_BIND_THREADS" not in os.environ
    rows = {(r["model"], r["engine"]): r for r in result.rows}
    failed = rows[("unsupported_op", "tvm")]
    assert failed["status"] == BUILD_FAILED and "erfinv" in failed["reason"]
    assert rows[("unsupported_op", "torch")]["status"] == OK
    assert rows[("digits_cnn", "tvm")]["status"] == OK
    # a model that cannot be made costs its own series, not the others': its baseline row says why
    gone = rows[("weights_gone", "torch")]
    assert gone["status"] == LOAD_FAILED and gone["is_baseline"] and gone["variant"] == "fp32"
    assert "FileNotFoundError: checkpoint.pt is missing" in gone["reason"] and gone in result.failed
    moved = rows[("moved", "torch")]  # a model file gone from a recipe of several: the same
    assert moved["status"] == LOAD_FAILED and "model file not found" in moved["reason"] and moved in result.failed
    assert len(result.frame()) == 6
    (broken,) = [v for v in judge_run(result.store, result.run_id)[1] if v.series["model"] == "weights_gone"]
    assert broken.verdict == "broken" and "checkpoint.pt is missing" in broken.summary()


def test_any_model_its_files_cannot_make_costs_its_rows_alone(recipe_dict, tmp_path):
    """An import of the model's file failing, its function gone, or returning no module: each a broken
    baseline row saying why, as a function that raises is; the other models are measured."""
    (tmp_path / "broken_import.py").write_text("import does_not_exist_module\n\n\ndef f():\n    pass\n")
    recipe = recipe_from_dict(recipe_dict(models=[f"{tmp_path / 'broken_import.py'}:f", f"{USER_MODELS}:no_such_function",
                                                  f"{USER_MODELS}:not_a_module", f"{USER_MODELS}:half_linear",
                                                  f"{USER_MODELS}:none_output", f"{USER_MODELS}:torch_quantized",
                                                  f"{USER_MODELS}:ready_to_quantize", f"{USER_MODELS}:tiny_mlp"],
                                          engines=["torch"]))
    result = run_recipe(recipe)
    rows = {r["model"]: r for r in result.rows}
    assert rows["tiny_mlp"]["status"] == OK and rows["ready_to_quantize"]["status"] == OK
    for name, why in (("f", "No module named 'does_not_exist_module'"),
                      ("no_such_function", "has no function 'no_such_function'"),
                      ("not_a_module", "returned a str as its first item, not an nn.Module"),
                      # fed float32, it would raise in its first layer, said as a dtype clash
                      ("half_linear", "holds float16 weights (weight); tvmharness measures a float32 model"),
                      ("none_output", "returns None as its output 2 of 2; a deployed model returns tensors only"),
                      ("torch_quantized", "is quantized by PyTorch (torch.ao.nn.quantized.dynamic.Linear)")):
        assert rows[name]["status"] == LOAD_FAILED and why in rows[name]["reason"], rows[name]["reason"]


def test_a_model_spec_naming_no_function_to_call_says_what_it_names(tmp_path):
    """A value, an empty name and a function that needs arguments: each said as what it is, with the file's
    functions tvmharness could call (it calls them with no arguments). A function that returns its model in
    training mode gets it measured in eval mode, and a note that says so."""
    from tvmharness.errors import HarnessError
    from tvmharness.models import load_model

    (tmp_path / "nets.py").write_text("import torch\n\n\ndef sized(width):\n    return torch.nn.Linear(width, 2), "
                                      "torch.randn(1, width)\n\n\ndef net():\n    return sized(4)\n\n\ng = 3\n")
    for function, cause in (("g", "nets.py' has 'g' of type int, not a function"), ("", "names no function after its colon"),
                            ("sized", "sized() needs width; tvmharness calls it with no arguments")):
        with pytest.raises(HarnessError) as err:
            load_model(f"{tmp_path / 'nets.py'}:{function}", tmp_path)
        assert cause in err.value.cause, err.value.cause
    assert err.value.fix.startswith("give its parameters defaults")
    with pytest.raises(HarnessError) as err:
        load_model(f"{tmp_path / 'nets.py'}:g", tmp_path)
    assert err.value.fix.endswith(f"{tmp_path / 'nets.py'} has net")  # not sized, which needs an argument
    trained = load_model(f"{USER_MODELS}:in_training_mode", tmp_path)  # measured as deployed, and said so
    assert not trained.torch_module.training and "is measured in eval mode (model.eval())" in trained.notes[0]
    assert "eval mode" not in load_model(f"{USER_MODELS}:tiny_mlp", tmp_path).notes[0]


def test_a_model_s_digest_holds_every_tensor_its_forward_reads():
    """Buffers left out of the state dict (persistent=False) and plain tensor attributes are the model
    too: one changed is another build, never a cached one (a bfloat16 one included)."""
    import torch

    from tvmharness.data import ModelInput
    from tvmharness.models import torch_digest

    class Shifted(torch.nn.Module):
        def __init__(self, shift, offset, dtype=torch.float32):
            super().__init__()
            torch.manual_seed(0)
            self.fc = torch.nn.Linear(4, 4)
            self.register_buffer("shift", torch.full((4,), shift, dtype=dtype), persistent=False)
            self.offset = torch.full((4,), offset)

        def forward(self, x):
            return self.fc(x) + self.shift.float() + self.offset

    inputs = (ModelInput("x", (1, 4), "float32"),)
    digests = {torch_digest(m, inputs) for m in (Shifted(1.0, 10.0), Shifted(2.0, 10.0), Shifted(1.0, 20.0),
                                                 Shifted(1.0, 10.0, torch.bfloat16), Shifted(2.0, 10.0, torch.bfloat16))}
    assert len(digests) == 5
    assert torch_digest(Shifted(1.0, 10.0), inputs) == torch_digest(Shifted(1.0, 10.0), inputs)

    class Extra(torch.nn.Linear):  # a layer's own state beside its tensors (get_extra_state): no tensor
        def __init__(self, extra):
            torch.manual_seed(0)
            super().__init__(4, 4)
            self.extra = extra

        def get_extra_state(self):
            return self.extra

    assert len({torch_digest(Extra(e), inputs) for e in ({"scale": 1}, {"scale": 2}, (torch.ones(2), "a"))}) == 3


def test_a_notebook_cell_s_forward_edited_is_another_model():
    """A class defined in a notebook cell lives in no file on disk: its code is hashed instead, so a
    forward edited with no layer or weight changed is not served the build of the old one."""
    import linecache

    from tvmharness.data import ModelInput
    from tvmharness.models import torch_digest

    cell = """
import torch
class Cell(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(4, 4)
    def forward(self, x):
        return {body}
"""

    def digest(body, filename, keep_source=False, scale=2.0):
        text = cell.format(body=body)
        if keep_source:  # as IPython keeps each cell's text for tracebacks
            linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
        scope = {"SCALE": scale}  # a constant another cell set
        exec(compile(text, filename, "exec"), scope)
        return torch_digest(scope["Cell"](), (ModelInput("x", (1, 4), "float32"),))

    for keep_source in (False, True):
        relu = digest("torch.relu(self.fc(x))", f"/tmp/ipykernel_0/{keep_source}1.py", keep_source)
        assert relu == digest("torch.relu(self.fc(x))", f"/tmp/ipykernel_0/{keep_source}2.py", keep_source)
        assert relu != digest("torch.sigmoid(self.fc(x)) * 3", f"/tmp/ipykernel_0/{keep_source}3.py", keep_source)
        scaled = digest("torch.relu(self.fc(x)) * SCALE", f"/tmp/ipykernel_0/{keep_source}4.py", keep_source)
        assert scaled == digest("torch.relu(self.fc(x)) * SCALE", f"/tmp/ipykernel_0/{keep_source}5.py", keep_source)
        assert scaled != digest("torch.relu(self.fc(x)) * SCALE", f"/tmp/ipykernel_0/{keep_source}6.py", keep_source, 5.0)


def test_what_a_forward_reads_outside_its_layers_is_the_model_too(tmp_path, monkeypatch):
    """A constant imported from another file (or read from the environment), a layer's private or
    dict-held setting, a hook and a forward set on one layer: each changed is another model, never the
    cached build of the old one (each was served the old build, and its rows disagreed)."""
    import functools
    import importlib

    import torch

    from tvmharness.data import ModelInput
    from tvmharness.models import torch_digest

    (tmp_path / "net_settings.py").write_text("SCALE = 1.0\n")
    (tmp_path / "net_of_settings.py").write_text(
        "import torch\nfrom net_settings import SCALE\n\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self, private=1.0, config=None):\n"
        "        super().__init__()\n"
        "        torch.manual_seed(0)\n"
        "        self.fc = torch.nn.Linear(4, 4)\n"
        "        self._private = private\n"
        "        self.config = config or {'shift': 0.0}\n\n"
        "    def forward(self, x):\n"
        "        return self.fc(x) * SCALE * self._private + self.config['shift']\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    net = importlib.import_module("net_of_settings")
    inputs = (ModelInput("x", (1, 4), "float32"),)

    def digest(*args, **kwargs) -> str:
        return torch_digest(net.Net(*args, **kwargs), inputs)

    plain = digest()
    assert plain == digest()  # the same model, the same digest
    monkeypatch.setattr(net, "SCALE", 3.0)  # its settings file edited
    assert digest() != plain
    monkeypatch.setattr(net, "SCALE", 1.0)
    assert digest() == plain and digest(4.0) != plain and digest(config={"shift": 1.0}) != plain

    def scaled(factor):
        def hook(module, args, output):
            return output * factor
        return hook

    def hooked(hook, pre=False) -> str:
        model = net.Net()
        (model.fc.register_forward_pre_hook if pre else model.fc.register_forward_hook)(hook)
        return torch_digest(model, inputs)

    twice = hooked(scaled(2.0))
    assert twice != plain and twice == hooked(scaled(2.0)) and twice != hooked(scaled(5.0))
    assert hooked(functools.partial(lambda f, m, a, o: o * f, 2.0)) != hooked(functools.partial(lambda f, m, a, o: o * f, 5.0))
    assert hooked(lambda m, args: (args[0] * 2,), pre=True) != plain
    patched = net.Net()
    patched.forward = lambda x: patched.fc(x) * 2
    assert torch_digest(patched, inputs) != plain

    def with_table(shift) -> str:  # a tensor held in a dict, and one a hook's closure captured
        model = net.Net(config={"shift": 0.0, "table": torch.full((4,), shift)})
        offset = torch.full((4,), shift)
        model.fc.register_forward_hook(lambda m, args, out: out + offset)
        return torch_digest(model, inputs)

    assert with_table(1.0) == with_table(1.0) and with_table(1.0) != with_table(2.0)


def test_a_variant_s_digest_is_not_moved_by_its_model_having_run(tmp_path, monkeypatch):
    """A forward that counts its calls (self._calls += 1), a decorated forward reading an imported
    constant, a settings object's class defaults: the count moved with every timed call, so a variant's
    digest (taken from a copy of the model after its baseline ran) changed from run to run; the
    decorated forward's constant and the class default were not read at all."""
    import importlib

    import torch

    from tvmharness.compress import apply_variant, parse_variant
    from tvmharness.models import load_model, torch_digest

    (tmp_path / "counted_settings.py").write_text("SCALE = 1.0\n\nclass Settings:\n    shift = 0.0\n")
    (tmp_path / "counted.py").write_text(
        "import torch\nfrom counted_settings import SCALE, Settings\n\n"
        "class Counted(torch.nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        torch.manual_seed(0)\n"
        "        self.fc = torch.nn.Linear(4, 4)\n        self._calls = 0\n        self.settings = Settings()\n\n"
        "    @torch.no_grad()\n"
        "    def forward(self, x):\n        self._calls += 1\n        return self.fc(x) * SCALE + self.settings.shift\n\n"
        "def counted():\n    return Counted().eval(), torch.randn(1, 4)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = f"{tmp_path / 'counted.py'}:counted"
    model = load_model(spec, tmp_path / "cache")
    variant = parse_variant("prune:0.5")
    before = apply_variant(model, variant, tmp_path / "cache").digest
    for _ in range(3):
        model.torch_module(torch.randn(1, 4))
    assert apply_variant(model, variant, tmp_path / "cache").digest == before
    net = type(model.torch_module)
    assert torch_digest(net(), model.inputs) == model.digest
    monkeypatch.setitem(net.forward.__wrapped__.__globals__, "SCALE", 3.0)  # the settings file edited
    assert torch_digest(net(), model.inputs) != model.digest
    monkeypatch.setitem(net.forward.__wrapped__.__globals__, "SCALE", 1.0)
    monkeypatch.setattr(importlib.import_module("counted_settings").Settings, "shift", 1.0)  # a class default edited
    assert torch_digest(net(), model.inputs) != model.digest


def test_terminal_report_of_a_rerun_says_nothing_was_rebuilt(first_run):
    from rich.console import Console

    from tvmharness.report.terminal import render_run

    recipe, result = first_run
    again = run_recipe(recipe)
    console = Console(record=True, width=220)
    render_run(again.frame(), again.store.run(again.run_id), console)
    text = console.export_text()
    assert "cache: 2 of 2 builds reused, 1 of 1 trained models reused (nothing rebuilt)" in text
    assert "UNTUNED" in text and "baseline" in text
    assert again.provenance["git_commit"] in text and recipe.digest() in text
    assert "avx2" in text or "features none detected" in text


def test_torch_compile_row_agrees_with_eager(recipe_dict):
    result = run_recipe(recipe_from_dict(recipe_dict(engines=["torch", "torch-compile"])))
    rows = {r["engine"]: r for r in result.rows}
    compiled = rows["torch-compile"]
    assert compiled["status"] == OK, compiled["reason"]
    assert compiled["max_abs_diff"] < 1e-4 and compiled["top1_agreement"] == 1.0
    assert compiled["details"]["engine_notes"][0] == "torch.compile (inductor)"
    assert compiled["speedup_vs_baseline"] == pytest.approx(rows["torch"]["median_ms"] / compiled["median_ms"])


def test_a_run_leaves_the_caller_s_torch_threads_as_they_were(recipe_dict):
    """Measured at one thread, torch is set back to the notebook's own count after the run."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        recipe = recipe_from_dict(recipe_dict(engines=["torch"], measure={"warmup": 1, "repeats": 30, "threads": 1}))
        (row,) = run_recipe(recipe).rows
        assert row["status"] == OK and row["threads"] == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_paced_rows_span_the_asked_time(recipe_dict):
    recipe = recipe_from_dict(recipe_dict(engines=["onnxruntime"], measure={"warmup": 1, "repeats": 30, "threads": 2,
                                                                          "span_s": 1.5}))
    row = next(r for r in run_recipe(recipe).rows if r["engine"] == "onnxruntime")
    assert row["status"] == OK and len(row["samples_ms"]) == 30
    assert row["details"]["measure_seconds"] >= 1.5 * 29 / 30  # the last sample is due 29/30 of the span in


@pytest.mark.alone
def test_a_moved_tvm_series_is_confirmed_by_an_a_b_and_the_others_are_measured_again(first_run, monkeypatch):
    """What `nightly` does when latency moved: the TVM build and the build of the run it was compared
    with timed in turns; ONNX Runtime's rows measured again. Here the two are one build in the cache,
    taken for two (a nightly measures that build again instead): the in-turns timing of one library on
    both sides must come out even."""
    from tvmharness import pipeline
    from tvmharness.report.regress import SAME, SERIES, judge

    monkeypatch.setattr(pipeline, "same_build", lambda row, other: False)
    recipe, result = first_run
    again = run_recipe(recipe)
    frame = again.frame()
    moved = [({k: r[k] for k in SERIES}, result.run_id) for r in frame.to_dict("records") if r["engine"] in ("tvm", "onnxruntime")]
    confirm_latency(recipe, again.run_id, moved)
    confirmations = [r for r in again.store.runs() if r["provenance"].get("confirms_run") == again.run_id]
    assert len(confirmations) == 2
    ab_run, second_run = (c["id"] for c in confirmations)
    everything = again.store.frame()
    (ab,) = everything[everything["run_id"] == ab_run].to_dict("records")
    tonight = frame[frame["engine"] == "tvm"].iloc[0]
    reference = ab["details"]["ab_reference"]
    assert ab["engine"] == "tvm" and reference["run_id"] == result.run_id
    assert len(ab["samples_ms"]) == len(reference["samples_ms"]) == 30
    assert reference["artifact_dir"] == ab["details"]["artifact_dir"] == tonight["details"]["artifact_dir"]
    (v,) = [v for v in judge(everything, ab_run) if v.series["engine"] == "tvm"]
    assert v.evidence["ab_reference_run"] == result.run_id and v.aspects["latency"] == SAME, v.summary()
    # The same build on both sides: a far-off ratio would mean the two sides timed different things.
    # (Not tighter: 30 sub-millisecond samples on a shared machine have moved one side's p10 by 7%.)
    assert abs(v.evidence["latency_change"]) < 0.25
    measured_again = set(everything.loc[everything["run_id"] == second_run, "engine"])
    assert measured_again == {"torch", "onnxruntime"}  # the engine, with the baseline it is measured against


def test_an_a_b_loads_only_builds_of_its_own_cache_never_a_folder_a_row_names(first_run, tmp_path, monkeypatch):
    """A stored row's artifact_dir is not what an A/B loads (a shared store's row could name any library
    on this host): the build its key names in this run's cache is, and a build not there is none. One
    build on both sides is none either: that library timed against itself confirms nothing."""
    import shutil

    from tvmharness import pipeline
    from tvmharness.pipeline import _ab_builds

    recipe, result = first_run
    tonight = next(r for r in result.frame().to_dict("records") if r["engine"] == "tvm")
    assert _ab_builds(tonight, tonight, recipe.cache_dir) is None  # a second run measures it instead
    monkeypatch.setattr(pipeline, "same_build", lambda row, other: False)  # the rows below are that build, renamed
    cached = tonight["details"]["artifact_dir"]
    foreign = tmp_path / "elsewhere"  # a whole, valid artifact, outside this cache
    shutil.copytree(cached, foreign)
    named_elsewhere = tonight | {"details": tonight["details"] | {"artifact_dir": str(foreign)}}
    builds = _ab_builds(tonight, named_elsewhere, recipe.cache_dir)
    assert builds is not None and all(str(b.dir) == cached for b in builds)
    for key in ("0" * 16, "../../../../tmp", None):  # not in this cache, or not a build key at all
        before = named_elsewhere | {"details": named_elsewhere["details"] | {"build_key": key}}
        assert _ab_builds(tonight, before, recipe.cache_dir) is None, key


@pytest.fixture
def own_data(tmp_path):
    """tiny_mlp's held-out samples, labelled so that fp32 scores exactly 30 of 40, and 64 training
    samples labelled with its own classes, as a user saves them."""
    import numpy as np
    import torch

    from tests.user_models import tiny_mlp

    module, _ = tiny_mlp()
    rng = np.random.default_rng(3)
    x, x_train = rng.standard_normal((40, 16), dtype=np.float32), rng.standard_normal((64, 16), dtype=np.float32)
    with torch.no_grad():
        labels, train_labels = (module(torch.from_numpy(a)).argmax(-1).numpy() for a in (x, x_train))
    labels[30:] = (labels[30:] + 1) % 10
    np.savez(tmp_path / "eval.npz", x=x, labels=labels)
    np.savez(tmp_path / "train.npz", x=x_train, labels=train_labels)
    np.savez(tmp_path / "unlabelled.npz", x=x_train)
    np.savez(tmp_path / "unlabelled_eval.npz", x=x)
    return tmp_path


def test_a_model_s_own_data_is_what_every_engine_is_fed_and_what_its_variants_train_on(own_data):
    from tvmharness.report.terminal import footnotes

    recipe = recipe_from_dict({"name": "own data", "models": [f"{USER_MODELS}:tiny_mlp"],
                               "variants": ["fp32", "int8", "prune:0.5+finetune:1"], "engines": ["tvm", "torch", "onnxruntime"],
                               "data": {"tiny_mlp": {"eval": str(own_data / "eval.npz"), "train": str(own_data / "train.npz")}},
                               "measure": {"repeats": 30, "threads": 2},
                               "output": {"dir": str(own_data), "store": str(own_data / "h.db")}})
    result = run_recipe(recipe)
    rows = {(r["variant"], r["engine"]): r for r in result.rows}
    for engine in ("tvm", "torch", "onnxruntime"):  # every engine scored on the file's labels, not on seeded inputs
        assert rows[("fp32", engine)]["accuracy"] == 0.75, engine
    assert rows[("int8", "tvm")]["status"] == OK and rows[("int8", "tvm")]["accuracy"] is not None
    (int8_note,) = [n for n in rows[("int8", "tvm")]["details"]["notes"] if "calibration on" in n]
    assert f"calibration on 64 calls of {own_data / 'train.npz'} (64 samples, labelled)" in int8_note
    assert (f"trained 1 epoch(s) on {own_data / 'train.npz'} (64 samples, labelled), in batches of 64"
            in rows[("prune:0.5+finetune:1", "torch")]["details"]["notes"][-1])
    data = rows[("fp32", "tvm")]["details"]["data"]
    assert data["eval"]["source"] == f"{own_data / 'eval.npz'} (40 samples, labelled)" and len(data["eval"]["content_hash"]) == 16
    # the training data is named only where a variant trained or calibrated on it: a change of it moves no fp32 figure
    assert "train" not in data and "train" not in rows[("fp32", "torch")]["details"]["data"]
    for variant in ("int8", "prune:0.5+finetune:1"):
        assert rows[(variant, "tvm")]["details"]["data"]["train"]["source"] == f"{own_data / 'train.npz'} (64 samples, labelled)"
    assert any(line.startswith(f"tiny_mlp: every engine is fed {own_data / 'eval.npz'} (40 samples, labelled), content hash ")
               for line in footnotes(result.frame()))
    # Samples without labels: every engine is fed them and variants learn to match fp32 on them; no accuracy
    unlabelled = str(own_data / "unlabelled.npz")
    rows = run_recipe(recipe_from_dict(recipe.model_dump(mode="json") | {
        "data": {"tiny_mlp": {"eval": str(own_data / "unlabelled_eval.npz"), "train": unlabelled}},
        "variants": ["fp32", "prune:0.5+finetune:1"],
        "engines": ["torch"]})).rows
    assert all(r.get("accuracy") is None and r["status"] == OK for r in rows)
    assert "to match the fp32 model on " + str(own_data / "unlabelled.npz") in rows[-1]["details"]["notes"][-1]


@pytest.mark.parametrize("arrays, data, needles", [
    ({"inputs": (40, 16)}, {}, ("eval data", "holds arrays ['inputs'], and tiny_mlp takes inputs ['x'] (no array for ['x'])",
                                "np.savez('bad.npz', x=..., labels=...)")),
    ({"x": (40, 15)}, {}, ("array 'x' is [40, 15], samples of [15], and input 'x' of tiny_mlp takes [1, 16]: samples of [16]",)),
    ({"x": (40, 16), "labels": (39,)}, {}, ("its arrays hold different numbers of samples: 'x' 40 samples, 'labels' "
                                           "39 samples", "give every array (and the labels) the same number of samples")),
    ({"x": (40, 16), "labels": (40, 10)}, {}, ("'labels' is int64 [40, 10], not one class id per sample",)),
    # a regressor's float targets: the fix is to leave them out (outputs are compared with fp32's), not integers
    ({"x": (40, 16), "labels": ((40,), "float32")}, {}, ("'labels' is float32 [40]: floats, and 'labels' are class ids",
                                                         "for a regression model (float targets), leave 'labels' out of "
                                                         "the .npz: its outputs are then compared with the fp32 model's")),
    ({"x": (40, 16)}, {"nope": {"eval": "bad.npz"}}, ("[data] names 'nope', and the models are called tiny_mlp",)),
    ({"x": ((40, 16), "uint8")}, {}, ("array 'x' is uint8, and input 'x' of tiny_mlp is float32",
                                      "save 'x' as float32, scaled as the model takes it")),
    (None, {}, ("eval data for tiny_mlp not found:",)),
])
def test_a_data_set_that_does_not_fit_its_model_is_refused_naming_what_and_how(tmp_path, arrays, data, needles):
    import numpy as np

    from tvmharness.errors import HarnessError
    from tvmharness.pipeline import load_models

    path = tmp_path / "bad.npz"
    if arrays is not None:
        np.savez(path, **{name: np.zeros(*shape) if isinstance(shape[0], tuple)  # (shape, dtype)
                          else np.zeros(shape, dtype=np.int64 if name == "labels" else np.float32)
                          for name, shape in arrays.items()})
    recipe = recipe_from_dict({"models": [f"{USER_MODELS}:tiny_mlp"],
                               "data": data or {"tiny_mlp": {"eval": str(path)}}})
    with pytest.raises(HarnessError) as err:
        load_models(recipe)
    for needle in needles:
        assert needle in str(err.value), str(err.value)


def test_a_data_set_is_fed_in_whole_batches_with_their_labels(workdir):
    import numpy as np

    from tvmharness.data import data_set
    from tvmharness.models import load_model

    # the zoo's own held-out split says what a last partial batch leaves out, as a user's data set does
    assert "(357 of its 360 images, labelled; a last partial batch of 3 left out)" in load_model(
        "digits_cnn", workdir / "cache", batch=7).eval_data.source

    data = data_set("d", (np.arange(10 * 2, dtype=np.float32).reshape(10, 2),), np.arange(10))
    feeds = data.feeds(3)  # a last partial batch is left out: TVM builds for one batch size
    assert [f[0].shape for f in feeds] == [(3, 2)] * 3 and feeds[1][0][0].tolist() == [6.0, 7.0]
    assert data.labels_fed(3).tolist() == list(range(9))
    assert data.digest != data_set("d", (np.arange(10 * 2, dtype=np.float32).reshape(10, 2),), np.arange(1, 11)).digest


def test_token_ids_past_the_vocabulary_are_refused_before_tvm_reads_past_its_table(tmp_path):
    """TVM's embedding lookup does not check bounds: an id past the table would crash the run."""
    import numpy as np

    from tvmharness.errors import HarnessError
    from tvmharness.pipeline import load_models

    ids = np.zeros((2, 128), dtype=np.int64)
    ids[1, 5] = 30522
    np.savez(tmp_path / "text.npz", input_ids=ids, attention_mask=np.ones((2, 128), dtype=np.int64))
    recipe = recipe_from_dict({"models": ["bert_tiny"], "data": {"bert_tiny": {"eval": str(tmp_path / "text.npz")}}})
    with pytest.raises(HarnessError) as err:
        load_models(recipe)
    assert "array 'input_ids' holds values in [0, 30522], and input 'input_ids' of bert_tiny takes [0, 30521] (the vocabulary)" in str(err.value)
    ids[1, 5] = 30521
    np.savez(tmp_path / "text.npz", input_ids=ids, attention_mask=np.ones((2, 128), dtype=np.int64))
    (model,) = load_models(recipe)
    assert len(model.samples(4)) == 2 and model.eval_labels is None


def test_each_engine_s_peak_memory_is_measured_in_a_process_of_its_own(tmp_path):
    """A model of 16 MiB of weights: each engine's process holds them once it has run (TVM's library,
    ONNX Runtime's session, the ExportedProgram), and its peak is at least what it holds."""
    from tvmharness.report.terminal import footnotes

    recipe = recipe_from_dict({"models": [f"{USER_MODELS}:wide_linear"], "engines": ["tvm", "torch", "onnxruntime"],
                               "measure": {"repeats": 30, "threads": 2, "memory": True},
                               "output": {"dir": str(tmp_path), "store": str(tmp_path / "h.db")}})
    result = run_recipe(recipe)
    for row in result.rows:
        memory = row["details"]["memory"]
        assert 15 <= memory["resident_mb"] <= memory["peak_mb"] < 200, (row["engine"], memory)
    assert any(line.startswith("peak MB: the peak resident memory of a process loading") for line in footnotes(result.frame()))


def test_labels_that_do_not_fit_the_first_output_fail_its_rows_saying_why(own_data):
    import numpy as np

    x = np.load(own_data / "eval.npz")["x"]
    np.savez(own_data / "twelve.npz", x=x, labels=np.arange(40) % 12)  # tiny_mlp has 10 classes
    recipe = recipe_from_dict({"models": [f"{USER_MODELS}:tiny_mlp"], "engines": ["torch", "onnxruntime"],
                               "data": {"tiny_mlp": {"eval": str(own_data / "twelve.npz")}},
                               "output": {"dir": str(own_data), "store": str(own_data / "h.db")}})
    rows = run_recipe(recipe).rows
    assert [r["status"] for r in rows] == ["failed to run"] * 2
    assert "labels (40, in [0, 11]) do not fit the first output's 40 samples of 10 classes" in rows[0]["reason"]


def test_data_that_would_mislead_every_figure_is_refused_before_anything_runs(own_data):
    """A NaN (or a float64 past float32's range) trained variants into NaN weights that agreed with
    themselves and scored the first class's share; training on the held-out samples scored what was
    learned; a model input named `labels` was fed and scored the same array."""
    import numpy as np

    from tvmharness.errors import HarnessError
    from tvmharness.pipeline import load_models

    data = np.load(own_data / "eval.npz")
    x = data["x"].copy()
    x[3, 5] = np.nan
    np.savez(own_data / "nan.npz", x=x, labels=data["labels"])
    np.savez(own_data / "huge.npz", x=np.full((40, 16), 1e300), labels=data["labels"])
    (own_data / "copy.npz").write_bytes((own_data / "eval.npz").read_bytes())
    (own_data / "scored.py").write_text(
        "import torch\n\nclass Scored(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.fc = torch.nn.Linear(16, 10)\n\n    def forward(self, x, labels):\n        return self.fc(x) + labels\n\n"
        "def scored():\n    return Scored(), (torch.zeros(1, 16), torch.zeros(1, 10))\n")
    np.savez(own_data / "with_labels.npz", x=data["x"], labels=data["labels"])
    cases = [({"eval": "nan.npz"}, "array 'x' holds NaN or infinite values in 1 sample (the first: sample 3)"),
             ({"eval": "huge.npz"}, "holds NaN or infinite values (or past float32's range) in 40 samples"),
             ({"eval": "eval.npz", "train": "copy.npz"}, "is its held-out data (" + str(own_data / "eval.npz")),
             ({"eval": "with_labels.npz"}, "scored takes an input named 'labels'")]
    for setting, needle in cases:
        model = "scored" if "with_labels" in setting["eval"] else "tiny_mlp"
        spec = str(own_data / "scored.py") + ":scored" if model == "scored" else f"{USER_MODELS}:tiny_mlp"
        recipe = recipe_from_dict({"models": [spec], "data": {model: {k: str(own_data / v) for k, v in setting.items()}}})
        with pytest.raises(HarnessError) as refused:
            load_models(recipe)
        assert needle in str(refused.value), str(refused.value)


def test_accuracy_is_not_scored_on_one_column_nor_trained_on_labels_past_the_classes(own_data):
    """argmax over one column is always 0 (every sample "right"); a label past the first output's
    classes was torch's bare "Target 12 is out of bounds"."""
    import numpy as np

    from tvmharness.errors import HarnessError
    from tvmharness.measure import accuracy

    with pytest.raises(HarnessError, match="first output has one column per sample"):
        accuracy([[np.zeros((1, 1))]] * 3, np.zeros(3, dtype=np.int64))
    data = np.load(own_data / "train.npz")
    np.savez(own_data / "twelve.npz", x=data["x"], labels=np.arange(64) % 12)  # tiny_mlp has 10 classes
    recipe = recipe_from_dict({"models": [f"{USER_MODELS}:tiny_mlp"], "engines": ["torch"], "variants": ["fp32", "finetune:1"],
                               "data": {"tiny_mlp": {"eval": str(own_data / "eval.npz"), "train": str(own_data / "twelve.npz")}},
                               "output": {"dir": str(own_data), "store": str(own_data / "h.db")}})
    tuned = next(r for r in run_recipe(recipe).rows if r["variant"] == "finetune:1")
    assert "labels hold classes in [0, 11], and tiny_mlp's first output has 10 classes (0 to 9)" in tuned["reason"], tuned


def test_an_inputs_range_past_the_vocabulary_is_refused():
    from tvmharness.errors import HarnessError
    from tvmharness.pipeline import load_models

    recipe = recipe_from_dict({"models": ["bert_tiny"], "inputs": {"input_ids": {"range": [0, 40000]}}})
    with pytest.raises(HarnessError) as err:
        load_models(recipe)
    assert "[inputs.input_ids] range [0, 40000] goes past [0, 30521] (the vocabulary)" in str(err.value)


def test_inputs_of_one_model_are_set_apart_from_another_models_of_the_same_name():
    """Two text models both take input_ids: [inputs.MODEL.NAME] sets one model's sizes and values, and
    [inputs.NAME] the others'; a table for a model or an input that is not there is refused."""
    from tvmharness.errors import HarnessError
    from tvmharness.pipeline import load_models
    from tvmharness.recipe import apply_overrides

    transformer = f"{USER_MODELS}:tiny_transformer"
    recipe = recipe_from_dict({"models": ["bert_tiny", transformer], "inputs": {
        "attention_mask": {"range": [1, 1]},
        "bert_tiny": {"input_ids": {"shape": [1, 64]}, "attention_mask": {"shape": [1, 64]}},
        "tiny_transformer": {"input_ids": {"range": [0, 49]}}}})
    bert, tiny = ({i.name: i for i in m.inputs} for m in load_models(recipe))
    assert bert["input_ids"].shape == (1, 64) and bert["input_ids"].value_range == (0, 30521)  # its vocabulary, still
    assert bert["attention_mask"].shape == (1, 64) and bert["attention_mask"].value_range == (1, 1)  # [inputs.NAME] too
    assert tiny["input_ids"].shape == (1, 8) and tiny["input_ids"].value_range == (0, 49)
    assert tiny["attention_mask"].value_range == (1, 1)

    for inputs, needle in (({"tiny_transformer": {"ids": {"range": [0, 9]}}},
                            "[inputs.tiny_transformer] names 'ids', which tiny_transformer does not take; its inputs are "
                            "attention_mask, input_ids"),
                           ({"bert_tini": {"input_ids": {"range": [0, 9]}}},
                            "[inputs.bert_tini] is a table of a model's inputs, and no model is called 'bert_tini'"),
                           ({"bert_tiny": {"input_ids": {"range": [0, 40000]}}},
                            "[inputs.bert_tiny.input_ids] range [0, 40000] goes past [0, 30521] (the vocabulary)"),
                           ({"input_ids": {"shape": [1, 2, 3]}, "bert_tiny": {"input_ids": {"range": [0, 9]}}},
                            "[inputs.input_ids] shape [1, 2, 3] has 3 sizes")):  # each field named by its own table
        with pytest.raises(HarnessError) as err:
            load_models(recipe_from_dict({"models": ["bert_tiny", transformer], "inputs": inputs}))
        assert needle in err.value.cause
    # --model narrows the recipe: a table for a model left out is not a typo; a flag sets every model's input
    narrowed = apply_overrides(recipe, models=[transformer], inputs={"input_ids": {"range": [0, 9]}})
    (tiny,) = load_models(narrowed)
    assert {i.name: i.value_range for i in tiny.inputs}["input_ids"] == (0, 9)


def test_integer_samples_an_input_cannot_hold_are_refused_not_wrapped(tmp_path):
    """A bool mask fed 2s, or int32 ids fed int64 values past its range, would change silently."""
    import numpy as np

    from tvmharness.errors import HarnessError
    from tvmharness.pipeline import load_models

    (tmp_path / "masked.py").write_text(
        "import torch\nfrom torch import nn\n\nclass Masked(nn.Module):\n    def __init__(self):\n"
        "        super().__init__()\n        self.fc = nn.Linear(4, 2)\n\n    def forward(self, x, mask, ids):\n"
        "        return self.fc(x * mask.float().unsqueeze(-1)).sum(1) + ids.sum()\n\n"
        "def masked():\n    return Masked().eval(), (torch.randn(1, 3, 4), torch.ones(1, 3, dtype=torch.bool), "
        "torch.zeros(1, 3, dtype=torch.int32))\n")
    x = np.zeros((8, 3, 4), dtype=np.float32)
    for name, mask, ids, needle in (("mask", np.full((8, 3), 2), np.zeros((8, 3), np.int64), "[2, 2], which input 'mask'"),
                                    ("ids", np.ones((8, 3), np.int64), np.full((8, 3), 2**40), "input 'ids' of masked (int32)")):
        np.savez(tmp_path / f"{name}.npz", x=x, mask=mask, ids=ids)
        recipe = recipe_from_dict({"models": [f"{tmp_path / 'masked.py'}:masked"],
                                   "data": {"masked": {"eval": str(tmp_path / f"{name}.npz")}}})
        with pytest.raises(HarnessError) as err:
            load_models(recipe)
        assert needle in err.value.cause, err.value.cause


def test_a_run_cut_short_keeps_its_rows_and_stays_unfinished(recipe_dict):
    class CtrlC:
        def step(self, text: str) -> None:
            if text.startswith("compressing"):  # the baseline row is stored; Ctrl-C before the next
                raise KeyboardInterrupt

        def repeat(self, done: int, total: int) -> None:
            pass

    recipe = recipe_from_dict(recipe_dict(engines=["torch", "onnxruntime"]))
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe, CtrlC())
    run, verdicts = judge_run(Store(recipe.output.store))
    assert run["finished"] is None and [v.series["engine"] for v in verdicts if v.run_id == run["id"]][0] == "torch"
    assert run_recipe(recipe).store.run(run["id"] + 1)["finished"] is not None  # one that goes through is finished


def test_a_baseline_that_fails_says_the_model_s_other_rows_went_unmeasured(recipe_dict):
    for engines in (["torch", "onnxruntime"], ["tvm"]):  # the baseline is measured whether it is asked for or not
        result = run_recipe(recipe_from_dict(recipe_dict(models=[f"{USER_MODELS}:zeros_only"], engines=engines)))
        (row,) = result.rows
        assert row["is_baseline"] and row["status"] == "failed to run" and "only zeros, please" in row["reason"]
        assert row["reason"].endswith("so zeros_only's other rows were not measured (each is judged against this one)")


def test_a_ctrl_c_in_a_memory_probe_keeps_the_row_it_measured(recipe_dict, monkeypatch):
    import tvmharness.pipeline as pipeline

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "measure_memory", ctrl_c)  # Ctrl-C while the probe's process runs
    recipe = recipe_from_dict(recipe_dict(engines=["torch", "onnxruntime"]) | {"measure": {"repeats": 30, "memory": True}})
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe)
    run_id = max(r["id"] for r in Store(recipe.output.store).runs())
    (row,) = Store(recipe.output.store).frame(run_id=run_id).to_dict("records")  # the baseline's latency, kept
    assert row["engine"] == "torch" and row["median_ms"] > 0 and row["details"]["memory_error"] == "interrupted (Ctrl-C, SIGTERM or SIGHUP)"


def test_a_data_set_says_how_many_of_its_samples_are_fed(tmp_path):
    import numpy as np

    from tvmharness.data import ModelInput, load_data_set
    from tvmharness.errors import HarnessError

    inputs = (ModelInput("x", (4, 16)),)
    np.savez(tmp_path / "val21.npz", x=np.zeros((21, 16), dtype=np.float32), labels=np.zeros(21, dtype=np.int64))
    path = str(tmp_path / "val21.npz")
    assert load_data_set(path, inputs, 4, "m", "eval").source == (
        f"{path} (20 of its 21 samples, labelled; a last partial batch of 1 left out)")
    assert load_data_set(path, inputs, 4, "m", "train").source == f"{path} (21 samples, labelled)"  # training takes all
    np.savez(tmp_path / "one.npz", x=np.zeros((1, 16), dtype=np.float32))
    assert load_data_set(str(tmp_path / "one.npz"), (ModelInput("x", (1, 16)),), 1, "m", "eval").source.endswith("(1 sample)")
    with pytest.raises(HarnessError, match="holds 1 sample, fewer than one batch of 4"):
        load_data_set(str(tmp_path / "one.npz"), inputs, 4, "m", "eval")


def test_data_of_the_input_s_kind_is_converted_to_its_dtype_and_must_fit_it(tmp_path):
    import numpy as np

    from tvmharness.data import ModelInput, load_data_set
    from tvmharness.errors import HarnessError

    inputs = (ModelInput("x", (1, 4)), ModelInput("ids", (1, 4), "int64"), ModelInput("mask", (1, 4), "bool"))
    arrays = {"x": np.ones((2, 4)), "ids": np.ones((2, 4), dtype=np.int32), "mask": np.array([[0, 1, 1, 0]] * 2)}
    np.savez(tmp_path / "ok.npz", **arrays)
    data = load_data_set(str(tmp_path / "ok.npz"), inputs, 1, "m", "eval")
    assert [a.dtype for a in data.arrays] == [np.float32, np.int64, np.bool_]
    assert data.arrays[2][0].tolist() == [False, True, True, False]
    np.savez(tmp_path / "two.npz", **arrays | {"mask": np.array([[0, 2, 1, 0]] * 2)})  # 2 would be True unsaid
    with pytest.raises(HarnessError, match=r"'mask' holds values in \[0, 2\], which input 'mask' of m \(bool\) cannot hold"):
        load_data_set(str(tmp_path / "two.npz"), inputs, 1, "m", "eval")
    np.savez(tmp_path / "pixels.npz", **arrays | {"x": np.ones((2, 4), dtype=np.uint8)})  # another kind: refused
    with pytest.raises(HarnessError, match="'x' is uint8, and input 'x' of m is float32"):
        load_data_set(str(tmp_path / "pixels.npz"), inputs, 1, "m", "eval")


def test_a_data_file_that_is_not_an_npz_says_what_it_is_and_how_to_make_one(tmp_path):
    import numpy as np

    from tvmharness.data import ModelInput, load_data_set
    from tvmharness.errors import HarnessError

    inputs = (ModelInput("x", (1, 16)),)
    np.save(tmp_path / "plain.npy", np.zeros((2, 16), dtype=np.float32))
    (tmp_path / "notes.npz").write_text("x,labels\n0.1,1\n")
    for name, cause in (("plain.npy", "is a .npy file, one array (np.save), not an .npz of one array per input"),
                        ("notes.npz", "is not an .npz file numpy can read (an .npz is a zip archive of arrays)")):
        with pytest.raises(HarnessError) as err:
            load_data_set(str(tmp_path / name), inputs, 1, "m", "eval")
        assert cause in err.value.cause and "pickle" not in err.value.cause
        assert f"np.savez('{name.split('.')[0]}.npz', x=..., labels=...)" in err.value.fix


def test_a_model_that_cannot_be_made_spares_the_others_but_not_their_usage_errors(recipe_dict, tmp_path):
    """A model whose own code fails becomes a row; a mistyped spec or setting stays one message before
    anything runs, whatever else fails to load."""
    from tvmharness.errors import HarnessError

    gone = f"{USER_MODELS}:weights_gone"
    (tmp_path / "other.py").write_text("def weights_gone():\n    raise OSError('elsewhere')\n")
    for models, inputs, needle in (
            ([gone, "resnet81"], {}, "unknown model 'resnet81'"),
            (["missing.pt2"], {}, "model file not found: missing.pt2"),  # a file gone costs a row, but here no model is left
            ([gone, f"{USER_MODELS}:tiny_mlp"], {"tiny_mlp": {"nope": {"shape": [1, 16]}}},
             "[inputs.tiny_mlp] names 'nope', which tiny_mlp does not take"),
            ([gone, f"{tmp_path / 'other.py'}:weights_gone"], {}, "are both named 'weights_gone'")):
        with pytest.raises(HarnessError) as err:
            run_recipe(recipe_from_dict(recipe_dict(models=models, inputs=inputs, engines=["torch"])))
        assert needle in str(err.value) and err.value.exit_code == 2


def test_an_output_folder_that_cannot_be_written_is_refused_before_any_row(recipe_dict, tmp_path):
    """From Python as on the command line: a file where the output folder goes is one error, not a failed row per build."""
    from tvmharness.errors import HarnessError

    (tmp_path / "afile").write_text("")
    data = recipe_dict(engines=["tvm"])
    for folder in ("afile", "afile/sub"):
        with pytest.raises(HarnessError, match=f"{tmp_path / 'afile'} is a file, not a folder"):
            run_recipe(recipe_from_dict(data | {"output": {"dir": str(tmp_path / folder), "store": str(tmp_path / "h.db")}}))
    assert not (tmp_path / "h.db").exists()


def test_a_night_of_which_no_model_can_be_made_is_stored_as_broken(recipe_dict, tmp_path):
    """A nightly's one model gone is that night's news: a run of its broken row, which the morning's
    report judges, not the night before shown as newest."""
    recipe = recipe_from_dict(recipe_dict(models=[str(tmp_path / "gone.pt2")], engines=["torch"],
                                          output={"dir": str(tmp_path), "store": str(tmp_path / "h.db")}))
    result = run_recipe(recipe, every_night=True)
    (row,) = result.rows
    assert row["status"] == LOAD_FAILED and "model file not found" in row["reason"] and result.failed == [row]
    run, verdicts = judge_run(result.store)
    assert run["id"] == result.run_id and [v.verdict for v in verdicts] == ["broken"]


def test_a_store_that_takes_writes_again_by_the_run_s_end_gets_the_rows_it_refused(workdir, monkeypatch):
    """A lock held for a while mid-run: the first refused row waits out the lock once, the rows after
    it go straight to the file (no minute's wait each), and at the run's end, the store free again,
    they all go in: no file left, no command to run."""
    import sqlite3

    import tvmharness.results as results

    monkeypatch.setattr(results, "BUSY_TIMEOUT_S", 1)
    out = workdir / "relocked"
    recipe = recipe_from_dict({"name": "relocked", "models": ["digits_cnn"], "engines": ["torch", "onnxruntime", "tvm-untuned"],
                               "measure": {"warmup": 1, "repeats": 30, "threads": 2},
                               "output": {"dir": str(out), "store": str(out / "history.db")}})
    reader, tries = [], []
    monkeypatch.setattr(results.Store, "add", lambda self, *a, _add=results.Store.add: tries.append(a[1]["engine"]) or _add(self, *a))

    said = []

    class LockedWhileOnnxRuntimeIsMeasured:
        def step(self, text):
            said.append(text)
            if text.startswith("measuring ") and text.endswith("onnxruntime"):  # torch's row is stored by now
                reader.append(sqlite3.connect(out / "history.db", isolation_level=None))
                reader[0].execute("BEGIN")
                reader[0].execute("SELECT count(*) FROM runs").fetchone()
            elif reader and text.startswith("preparing "):  # onnxruntime's row was refused
                reader[0].execute("COMMIT")
                reader[0].close()

        def repeat(self, done, total):
            pass

    result = run_recipe(recipe, LockedWhileOnnxRuntimeIsMeasured())
    assert tries == ["torch", "onnxruntime"]  # tvm-untuned's row went to the file without a try
    assert result.unsaved.path is None and not list(out.glob("unsaved-rows-run-*.jsonl"))
    # the log says why it stopped for a while, and where the rows went
    assert f"the results store {out / 'history.db'} is locked by another process: waiting up to 1 s for it" in said, said
    assert said[-1] == "stored the 2 rows the results store refused while it was locked: it takes writes again"
    store = Store(str(out / "history.db"))
    assert list(store.frame()["engine"]) == ["torch", "onnxruntime", "tvm-untuned"] and store.run(1)["finished"] is not None


def _lock_at_second_measurement(store: Path, reader: list):
    """A progress step that locks the store (a sqlite3 shell in a read transaction, appended to `reader`) as the
    second engine is timed, the baseline's row stored by then: every write after it is refused."""
    import sqlite3

    timed = []

    def step(text: str) -> None:
        if not text.startswith("measuring ") or text.startswith("measuring the memory"):
            return
        if not reader and len(timed) == 1:
            reader.append(sqlite3.connect(store, isolation_level=None))
            reader[0].execute("BEGIN")
            reader[0].execute("SELECT count(*) FROM runs").fetchone()
        timed.append(text)

    return step


def test_rows_a_store_refuses_mid_run_are_kept_and_load_into_their_run_later(workdir, monkeypatch):
    """A store locked mid-run (a sqlite3 shell in a read transaction) costs no measurement: the run goes
    on, the refused rows and its end wait in a file, and `tvmharness store load` puts them in."""
    import tvmharness.results as results
    from tests.conftest import run_cli
    from tvmharness.results import StoreError

    monkeypatch.setattr(results, "BUSY_TIMEOUT_S", 1)  # not a minute per refused write
    out = workdir / "refused"
    recipe = recipe_from_dict({"name": "refused", "models": ["digits_cnn"], "engines": ["torch", "onnxruntime"],
                               "measure": {"warmup": 1, "repeats": 30, "threads": 2},
                               "output": {"dir": str(out), "store": str(out / "history.db")}})
    reader = []

    class LockAtSecondMeasurement:
        step = staticmethod(_lock_at_second_measurement(out / "history.db", reader))

        def repeat(self, done, total):
            pass

    with pytest.raises(StoreError) as caught:
        run_recipe(recipe, LockAtSecondMeasurement())
    reader[0].execute("COMMIT")
    reader[0].close()
    kept = list(out.glob("unsaved-rows-run-*.jsonl"))
    assert len(kept) == 1
    message = str(caught.value)
    assert "stayed locked by another process" in message
    assert f"1 row of 2 measured in run 1 could not be stored in {out / 'history.db'}, and is kept in {kept[0]}" in message
    assert f"`tvmharness store load {kept[0]}`" in caught.value.fix
    shown = caught.value.result.frame()  # every row measured, for a table beside the error: the store's and the refused
    assert list(zip(shown["engine"], shown["stored"], shown["run_id"])) == [("torch", True, 1), ("onnxruntime", False, 1)]
    assert shown.iloc[1]["recipe_name"] == "refused" and shown.iloc[1]["run_provenance"]["host"]
    store = Store(str(out / "history.db"))
    assert list(store.frame()["engine"]) == ["torch"] and store.run(1)["finished"] is None

    proc = run_cli("store", "load", str(kept[0]))
    assert proc.returncode == 0, proc.stderr
    assert f"stored 1 row in {out / 'history.db'} (run 1)" in " ".join(proc.stderr.split())
    assert f"`tvmharness report --run 1 --store {out / 'history.db'}` shows the run" in " ".join(proc.stderr.split())
    rows = store.frame()
    assert list(rows["engine"]) == ["torch", "onnxruntime"] and set(rows["run_id"]) == {1}
    onnx = rows[rows["engine"] == "onnxruntime"].iloc[0]
    assert onnx["status"] == OK and len(onnx["samples_ms"]) == 30 and onnx["speedup_vs_baseline"] > 0
    assert store.run(1)["finished"] is not None  # its end, refused too, is recorded now
    assert not kept[0].exists()  # loaded once: a second load would put them in twice


def test_run_shows_every_row_measured_when_its_store_refused_some_then_the_error(workdir, monkeypatch):
    """`tvmharness run` whose store is locked mid-run: the table (or the JSON document) holds the rows the store
    took and those it refused, each refused one marked as not stored, and then the error names the file
    that keeps them, with its exit code."""
    import json

    from typer.testing import CliRunner

    import tvmharness.cli as cli
    import tvmharness.results as results

    monkeypatch.setattr(results, "BUSY_TIMEOUT_S", 1)  # not a minute per refused write
    out = workdir / "refused-shown"
    store = out / "history.db"
    args = ["run", "quickstart", "--model", "digits_cnn", "--engine", "torch", "--engine", "onnxruntime", "--repeats", "30",
            "--threads", "2", "--no-memory", "--store", str(store), "--output-dir", str(out)]
    step = cli._RichProgress.step
    for run_id, json_out in ((1, False), (2, True)):
        reader = []
        lock = _lock_at_second_measurement(store, reader)
        monkeypatch.setattr(cli._RichProgress, "step", lambda self, text, lock=lock: lock(text) or step(self, text))
        try:
            said = CliRunner().invoke(cli.app, args + ["--json"] * json_out)
        finally:
            for held in reader:
                held.execute("COMMIT")
                held.close()
        (kept,) = out.glob(f"unsaved-rows-run-{run_id}-*.jsonl")
        error = " ".join(said.stderr.split())
        assert said.exit_code == 75, said.stderr
        assert f"1 row of 2 measured in run {run_id} could not be stored in {store}, and is kept in {kept}" in error
        assert f"`tvmharness store load {kept}`" in error
        if json_out:
            document = json.loads(said.stdout)
            assert document["run"]["id"] == run_id and document["error"]["exit_code"] == 75
            assert str(kept) in document["error"]["message"]
            torch_row, onnx_row = document["rows"]
            assert (torch_row["engine"], torch_row["stored"]) == ("torch", True) and torch_row["id"] is not None
            assert (onnx_row["engine"], onnx_row["stored"], onnx_row["id"]) == ("onnxruntime", False, None)
            assert onnx_row["status"] == OK and len(onnx_row["samples_ms"]) == 30 and onnx_row["speedup_vs_baseline"] > 0
            kept_at = json.loads(kept.read_text().splitlines()[1])["created"]  # the time `store load` will store it with
            assert onnx_row["created"][:19] == kept_at[:19]  # (JSON gives whole seconds)
        else:
            table = said.stdout
            assert "NOT STORED: 1 of the 2 rows below is not in the results store" in " ".join(table.split())
            # the heading and the one refused row's notes (a table too wide for the console, its notes on a line of
            # their own under each row's, when a busy host's flags lengthen them: counted, not looked for on a line)
            assert " ".join(table.split()).count("NOT STORED") == 2, table
    assert list(Store(str(store)).frame()["engine"]) == ["torch", "torch"]  # what the store took, no more


def test_a_ctrl_c_while_a_row_waits_for_a_locked_store_is_taken_at_once_and_keeps_the_row(workdir):
    """SQLite's wait for a lock runs in C, where a Ctrl-C waits until it ends (a minute): a write waits a
    second at a time, and the row measured goes to the file, not away with the interrupt."""
    import signal
    import sqlite3
    import threading

    from tvmharness.errors import Interrupted
    from tvmharness.results import UnsavedRows

    out = workdir / "interrupted-locked"
    recipe = recipe_from_dict({"name": "interrupted", "models": [f"{USER_MODELS}:tiny_mlp"], "engines": ["torch"],
                               "measure": {"warmup": 1, "repeats": 30, "threads": 2},
                               "output": {"dir": str(out), "store": str(out / "history.db")}})
    reader, locked_at = [], []
    ctrl_c = threading.Timer(2, os.kill, (os.getpid(), signal.SIGINT))  # a Ctrl-C while the row waits

    class LockedWhileMeasuring:
        def step(self, text):
            if text.startswith("measuring ") and not reader:
                reader.append(sqlite3.connect(out / "history.db", isolation_level=None))
                reader[0].execute("BEGIN")
                reader[0].execute("SELECT count(*) FROM runs").fetchone()
                locked_at.append(time.monotonic())
                ctrl_c.start()

        def repeat(self, done, total):
            pass

    as_it_was = signal.signal(signal.SIGINT, signal.default_int_handler)  # (a pytest-xdist worker ignores SIGINT)
    try:
        with pytest.raises(Interrupted) as caught:
            run_recipe(recipe, LockedWhileMeasuring())
        waited = time.monotonic() - locked_at[0]
    finally:
        ctrl_c.cancel()  # (a run that failed first: no SIGINT into a later test)
        signal.signal(signal.SIGINT, as_it_was)
        for held in reader:
            held.execute("COMMIT")
            held.close()
    assert waited < 10, waited  # not the lock's minute
    (kept,) = out.glob("unsaved-rows-run-*.jsonl")
    assert f"1 row of 1 measured in run 1 could not be stored in {out / 'history.db'}, and is kept in {kept}" in str(caught.value)
    rows = [row for _, row in UnsavedRows.read(kept).rows]
    assert [(r["engine"], r["status"], len(r["samples_ms"])) for r in rows] == [("torch", OK, 30)]


def test_kept_rows_load_into_another_store_as_a_copy_of_their_run_and_a_wrong_file_is_refused(tmp_path):
    import contextlib
    import fcntl
    import shutil
    import subprocess
    import sys
    import time

    import tempfile
    from unittest import mock

    from tests.conftest import ROOT, run_cli
    from tvmharness.provenance import snapshot
    from tvmharness.results import UnsavedRows, StoreError

    first = Store(str(tmp_path / "a.db"))
    run_id = first.start_run("r", "abc", {"name": "r"}, snapshot())
    kept = UnsavedRows(first.run(run_id), str(tmp_path / "a.db"))
    row = {"model": "m", "variant": "fp32", "target": "x86", "engine": "tvm", "engine_version": "0.27", "status": OK,
           "median_ms": 2.5, "samples_ms": [2.0, 2.5], "details": {"notes": ["x"]}}
    kept.keep(row, StoreError("the results store is read-only", "make it writable"), tmp_path / "out")
    other = tmp_path / "b.db"
    Store(str(other)).start_run("another", "def", {}, snapshot())  # run 1 there is some other run
    copy = tmp_path / "copy.jsonl"
    shutil.copy(kept.path, copy)
    proc = run_cli("store", "load", str(kept.path), "--store", str(other))
    assert proc.returncode == 0, proc.stderr
    assert "(run 2, a copy of run 1's record (that store does not hold it))" in " ".join(proc.stderr.split())
    assert f"`tvmharness report --run 2 --store {other}` shows the run" in " ".join(proc.stderr.split())
    frame = Store(str(other)).frame()
    assert list(frame["run_id"]) == [2] and frame.iloc[0]["samples_ms"] == [2.0, 2.5]
    assert frame.iloc[0]["recipe_name"] == "r" and frame.iloc[0]["run_provenance"]["git_commit"] == snapshot()["git_commit"]
    assert frame.iloc[0]["details"] == {"notes": ["x"]}
    # a copy of the file loaded too (a teammate's): its row is there already, in the copy of the run made before
    proc = run_cli("store", "load", str(copy), "--store", str(other))
    assert proc.returncode == 0 and "stored 0 rows" in proc.stderr and "1 row of them was there already" in proc.stderr, proc.stderr
    assert list(Store(str(other)).frame()["run_id"]) == [2] and len(Store(str(other)).runs()) == 2
    # two loads of one file at once: one stores its rows, the other waits and finds them stored
    both = UnsavedRows(first.run(run_id), str(tmp_path / "d.db"), tmp_path / "d.db")
    both.keep(row, StoreError("the results store is read-only", "make it writable"), tmp_path / "out")
    Store(str(tmp_path / "d.db"))
    with open(both.path, "rb") as held:  # held until both have the file open: they load it at once
        fcntl.flock(held, fcntl.LOCK_EX)
        loads = [subprocess.Popen([sys.executable, "-m", "tvmharness", "store", "load", str(both.path)], stderr=subprocess.PIPE,
                                  text=True, cwd=ROOT, env=dict(os.environ, COLUMNS="200")) for _ in range(2)]
        def has_it_open(pid: int) -> bool:
            with contextlib.suppress(OSError):
                return any(os.path.realpath(f"/proc/{pid}/fd/{fd}") == str(both.path.resolve()) for fd in os.listdir(f"/proc/{pid}/fd"))
            return True  # it ended: nothing to wait for

        deadline = time.monotonic() + 120
        while not all(has_it_open(load.pid) for load in loads) and time.monotonic() < deadline:
            time.sleep(0.1)
    said = [load.communicate(timeout=120)[1] for load in loads]
    assert [load.returncode for load in loads] == [0, 0], said
    assert sorted("nothing to do" in text for text in said) == [False, True] and any("stored 1 row" in text for text in said), said
    assert len(Store(str(tmp_path / "d.db")).frame()) == 1

    # from another folder, a relative store would be a new one there: the file names the store's absolute path
    gone = UnsavedRows(first.run(run_id), "results/history.db", tmp_path / "moved.db")
    gone.keep(row, StoreError("the results store is read-only", "make it writable"), tmp_path / "out")
    proc = run_cli("store", "load", str(gone.path), cwd=tmp_path)
    assert proc.returncode == 2 and f"refused these rows, {tmp_path / 'moved.db'}, is not there" in " ".join(proc.stderr.split())
    assert gone.path.exists() and not (tmp_path / "results").exists()

    # its disk filled as a row was written: the rows before the cut load, and the cut one is said
    two = UnsavedRows(first.run(run_id), str(tmp_path / "c.db"), tmp_path / "c.db")
    for median in (1.0, 2.0):
        two.keep(row | {"median_ms": median}, StoreError("the disk is full", "free space"), tmp_path / "out")
    two.path.write_text(two.path.read_text()[:-40])
    Store(str(tmp_path / "c.db"))
    proc = run_cli("store", "load", str(two.path))
    assert proc.returncode == 0, proc.stderr
    assert "its last line was cut short" in " ".join(proc.stderr.split())
    assert list(Store(str(tmp_path / "c.db")).frame()["median_ms"]) == [1.0]

    # its outputs folder refused a later row (the disk filled between two): every row goes on elsewhere
    moving = UnsavedRows(first.run(run_id), str(tmp_path / "c.db"), tmp_path / "c.db")
    moving.keep(row | {"median_ms": 1.0}, StoreError("the disk is full", "free space"), tmp_path / "full")
    moving.path.unlink()
    moving.path.mkdir()  # appending to it fails as a full disk's would
    (tmp_path / "spare").mkdir()
    with mock.patch.object(tempfile, "tempdir", str(tmp_path / "spare")):
        moving.keep(row | {"median_ms": 2.0}, StoreError("the disk is full", "free space"), tmp_path / "full")
    assert moving.path.parent == tmp_path / "spare"
    assert [r["median_ms"] for _, r in UnsavedRows.read(moving.path).rows] == [1.0, 2.0]

    (tmp_path / "notes.jsonl").write_text('{"hello": 1}\n')
    proc = run_cli("store", "load", str(tmp_path / "notes.jsonl"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "is not a file of rows a results store refused" in proc.stderr


def test_the_fix_for_a_dynamic_size_of_a_dotted_input_name_is_a_recipe_table_that_works(tmp_path):
    """ONNX names inputs "input.1": the fix quotes it, as TOML needs (unquoted it names input "1" of a
    model "input"), and the table it gives sizes the model."""
    import tomllib

    import torch

    from tvmharness.errors import HarnessError
    from tvmharness.models import load_model

    path = tmp_path / "dotted.onnx"
    torch.onnx.export(torch.nn.Conv1d(1, 2, 3), torch.randn(1, 1, 16), str(path), input_names=["input.1"],
                      dynamic_axes={"input.1": {2: "length"}}, dynamo=False)
    with pytest.raises(HarnessError) as caught:
        load_model(str(path), tmp_path / "cache")
    table, sizes = re.search(r"give its sizes: (\[.*?\]) shape = \[(.*?)\]", caught.value.fix).groups()
    assert table == '[inputs."input.1"]'
    recipe = recipe_from_dict(tomllib.loads(f'models = ["{path}"]\n{table}\nshape = [{sizes.replace("N", "16")}]\n'))
    model = load_model(str(path), tmp_path / "cache", settings=recipe.input_settings("dotted"))
    assert [(i.name, i.shape) for i in model.inputs] == [("input.1", (1, 1, 16))]


def test_the_readme_s_python_example_runs_as_written(tmp_path):
    """README's "From Python" example, run as a user's script: a model of the script's own
    (`__main__:FUNCTION`) measured on three engines, rows agreeing, a DataFrame back."""
    import json
    import subprocess
    import sys

    from tests.conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    section = readme.split("## From Python", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    script = tmp_path / "notebook.py"
    script.write_text(code + 'print(table.to_json(orient="records"))\n')
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout.splitlines()[-1])
    assert {(r["model"], r["engine"], r["status"]) for r in rows} == {("tiny_mlp", e, OK) for e in ("torch", "tvm", "onnxruntime")}
    assert (tmp_path / "results" / "notebook.db").is_file()


def test_the_git_commit_is_the_harness_s_own_not_that_of_a_checkout_it_is_installed_in(tmp_path):
    """A wheel installed into a virtual env inside the user's project, or into its top folder, is no
    checkout of the harness: its rows say 'unknown', not the user's project's commit, and its version
    carries a hash of its code, so that two builds of one version are told apart."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from tvmharness import provenance

    if subprocess.run(["git", "-C", str(Path(provenance.__file__).parent), "rev-parse"], capture_output=True).returncode:
        pytest.skip("the harness is not a git checkout here (a copy, an sdist)")
    assert re.fullmatch(r"[0-9a-f]{12}(\+dirty)?", provenance.git_commit())  # this checkout's
    release = provenance.installed_version("tvmharness")
    assert provenance.versions()["tvmharness"] == release  # the commit says which code

    def installed(site: Path) -> tuple[str, str]:
        probe = "from tvmharness import provenance as p; print(p.git_commit()); print(p.versions()['tvmharness'])"
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, check=True,
                              env=dict(os.environ, PYTHONPATH=str(site)))
        commit, version = done.stdout.strip().splitlines()
        return commit, version

    git = ["git", "-C", str(tmp_path / "project"), "-c", "user.name=u", "-c", "user.email=u@example.com"]
    (tmp_path / "project").mkdir()
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "the user's project"], check=True)
    versions = set()
    for site in (tmp_path / "project" / ".venv" / "site-packages", tmp_path / "project"):  # pip install --target .
        shutil.copytree(Path(provenance.__file__).parent, site / "tvmharness", ignore=shutil.ignore_patterns("__pycache__"))
        commit, version = installed(site)
        assert commit == "unknown" and re.fullmatch(re.escape(release) + r" \(code [0-9a-f]{12}\)", version), (commit, version)
        versions.add(version)
    assert len(versions) == 1  # the same code
    (tmp_path / "project" / "tvmharness" / "pipeline.py").write_text("# another build of the same release\n", "utf-8")
    assert installed(tmp_path / "project")[1] not in versions


def test_a_ctrl_c_before_the_run_starts_says_nothing_was_stored(tmp_path):
    """Ctrl-C while the models load: no run is in the store to be marked unfinished, and none is made."""
    from tvmharness.errors import Interrupted

    recipe = recipe_from_dict({"name": "early", "models": ["digits_cnn"], "engines": ["torch"],
                               "output": {"dir": str(tmp_path), "store": str(tmp_path / "h.db")}})

    class CtrlCWhileLoading:
        def step(self, text):
            if text.startswith("loading model"):
                raise KeyboardInterrupt

        def repeat(self, done, total):
            pass

    with pytest.raises(Interrupted, match="interrupted before anything was measured: nothing was stored"):
        run_recipe(recipe, CtrlCWhileLoading())
    assert not (tmp_path / "h.db").exists()


def test_a_gpu_build_standing_in_for_a_package_is_recorded_and_accepted(monkeypatch):
    """A GPU machine's onnxruntime-gpu (README: GPU machines) is ONNX Runtime: its rows record its version
    (they recorded none) and doctor accepts it."""
    from tvmharness import doctor, provenance

    real = provenance.installed_version
    fake = {"onnxruntime": None, "onnxruntime-gpu": "1.31.1"}
    monkeypatch.setattr(provenance, "installed_version", lambda dist: fake[dist] if dist in fake else real(dist))
    provenance.versions.cache_clear()
    try:
        assert provenance.versions()["onnxruntime"] == "1.31.1 (onnxruntime-gpu)"
        [row] = [r for r in doctor.package_checks() if r["check"].startswith("onnxruntime")]
        assert row["check"] == "onnxruntime-gpu 1.31.1" and row["ok"]
    finally:
        provenance.versions.cache_clear()


def test_an_example_of_no_sample_is_refused(tmp_path):
    """A batch of 0 ran: every row "ok", its figures of no sample (and numpy warned of an empty mean)."""
    from tvmharness.models import ModelNotMade, load_model

    (tmp_path / "empty.py").write_text("import torch\n\ndef empty():\n    return torch.nn.Linear(4, 2), torch.randn(0, 4)\n")
    with pytest.raises(ModelNotMade, match=r"input 'input' of the example is \[0, 4\]: a size of 0 holds no value"):
        load_model(f"{tmp_path / 'empty.py'}:empty", tmp_path / "cache")
