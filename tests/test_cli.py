"""The command line as a user meets it: exit codes, one clear message, no traceback."""

import json
import math
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import NO_CROSS_LINK, ROOT, USER_MODELS, run_cli
from tvmharness.cache import file_lock
from tvmharness.errors import HarnessError
from tvmharness.report import size_text
from tvmharness.results import Store


@pytest.fixture(scope="module")
def cli_dir(tmp_path_factory) -> Path:
    """Where the CLI runs: its results/ (store and cache) lives here for the whole module."""
    return tmp_path_factory.mktemp("cli")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def assert_usage_error(proc, *needles, code: int = 2):
    """One message naming the cause and the fix, no traceback, and the exit code: 2 for a usage error,
    1 where the user's model itself failed."""
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    message = " ".join(proc.stderr.split())  # as one line: the terminal wraps long messages
    for needle in needles:
        assert needle in message, proc.stderr


def test_unknown_target_prints_one_line_naming_it_and_the_known_ones(cli_dir):
    proc = run_cli("run", str(ROOT / "recipes/quickstart.toml"), "--target", "sparc", cwd=cli_dir)
    assert_usage_error(proc, "unknown target 'sparc'", "x86")
    assert proc.stderr.strip().splitlines()[0].startswith("error: unknown target 'sparc'; known targets:")
    assert not (cli_dir / "results" / "history.db").exists()  # nothing ran


def test_of_several_failures_the_exit_code_is_the_one_to_act_on():
    """A tune of several models: a retry (75) must not hide a usage error or a failure that will not go away."""
    from tvmharness.errors import worst

    assert worst([75, 1]) == 1 and worst([2, 75, 1]) == 2 and worst([1, 3, 2]) == 3
    assert worst([75, 75]) == 75 and worst([0, 75]) == 75 and worst([]) == 0


def test_a_command_asked_for_json_that_fails_prints_a_json_document_of_its_error(cli_dir):
    """A script parsing stdout gets JSON either way: the error's message, its fix and the exit code."""
    proc = run_cli("run", str(ROOT / "recipes/quickstart.toml"), "--target", "sparc", "--json", cwd=cli_dir)
    assert_usage_error(proc, "unknown target 'sparc'")
    error = json.loads(proc.stdout)["error"]
    assert error["message"].startswith("unknown target 'sparc'") and error["exit_code"] == 2 and error["fix"]
    # the parser's own refusals too (a flag's value of the wrong type, an argument missing), before any command runs
    proc = run_cli("run", "--json", "--repeats", "many", cwd=cli_dir)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert json.loads(proc.stdout)["error"]["message"].startswith("Invalid value for '--repeats'"), proc.stdout
    # and a reader gone from the help (`| head -c1`) is a broken pipe's 141, as from a command's output
    helped = subprocess.Popen([sys.executable, "-m", "tvmharness", "run", "--help"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, cwd=cli_dir)
    helped.stdout.close()  # gone before the help is written (Python takes a second to start)
    assert helped.wait(60) == 141, helped.stderr.read()
    proc = run_cli("report", "--store", str(cli_dir / "none.db"), "--format", "json", cwd=cli_dir)
    assert_usage_error(proc, "none.db")
    assert json.loads(proc.stdout)["error"]["message"] in " ".join(proc.stderr.split())
    # a report written to a file, or a table asked for: stdout stays as it was, empty
    proc = run_cli("report", "--store", str(cli_dir / "none.db"), "--format", "json", "-o", str(cli_dir / "r.json"), cwd=cli_dir)
    assert proc.returncode == 2 and proc.stdout == ""
    assert run_cli("run", str(ROOT / "recipes/quickstart.toml"), "--target", "sparc", cwd=cli_dir).stdout == ""


def test_a_preset_whose_device_does_not_fit_its_tvm_kind_is_refused_by_name(cli_dir):
    preset = write(cli_dir / "gpu-on-cpu.toml", 'name = "gpu-on-cpu"\narch = "x86_64"\n[tvm]\nkind = "cuda"\narch = "sm_86"\n')
    proc = run_cli("compile", "digits_cnn", "--target", str(preset), cwd=cli_dir)
    # the section's brackets survive the terminal
    assert_usage_error(proc, "gpu-on-cpu.toml is invalid", 'device = "cpu" does not fit [tvm] kind = "cuda"')


def test_unknown_model(cli_dir):
    assert_usage_error(run_cli("bench", "resnet9000", cwd=cli_dir), "unknown model 'resnet9000'", "digits_cnn")


def test_a_python_file_without_its_function_is_told_to_add_it(cli_dir):
    assert_usage_error(run_cli("bench", "mymodels/misc.py", cwd=cli_dir), "'mymodels/misc.py' names a Python file",
                       "add :FUNCTION, the function returning (nn.Module, example): mymodels/misc.py:FUNCTION")


@pytest.mark.parametrize("body, needle", [
    ('models = ["digits_cnn"]\nbogus = 1\n', "unknown key 'bogus'"),
    ('models = ["digits_cnn"]\n[measure]\nrepeats = "many"\n', "'measure.repeats'"),
    ('models = ["digits_cnn"]\n[measure]\nrepeats = 5\n', "greater than or equal to 30"),
    ('targets = ["x86"]\n', "missing key 'models'"),
    ('models = ["digits_cnn"\n', "not valid TOML"),
    ('models = ["digits_cnn"]\nengines = ["tensorrt"]\n', "'engines.0'"),
    ('models = ["digits_cnn", "digits_cnn"]\n', 'models lists "digits_cnn" more than once'),
    ('models = ["digits_cnn"]\n[inputs.ids]\nsize = [1, 128]\n', "unknown key 'inputs.ids.size'"),
    ('models = ["digits_cnn"]\n[inputs.ids]\nrange = [0]\n', "'inputs.ids.range'"),
])
def test_malformed_recipes(cli_dir, body, needle):
    recipe = write(cli_dir / "bad.toml", body)
    assert_usage_error(run_cli("run", str(recipe), cwd=cli_dir), "invalid recipe" if "TOML" not in needle else "", needle)


@pytest.mark.parametrize("section, needle", [
    ("[regression]\nwindow = true", "'regression.window': Input should be a valid integer (got True)"),
    ("[measure]\nmemory = \"yes\"", "'measure.memory': Input should be a valid boolean (got 'yes')"),
    ("[regression]\nalpha = \"0.002\"", "'regression.alpha': Input should be a valid number (got '0.002')"),
    ("[measure]\nrepeats = \"30\"", "'measure.repeats': Input should be a valid integer (got '30')"),
    ("[measure]\nthreads = 1.0", "'measure.threads': Input should be a valid integer (got 1.0)"),
    # a percentage written as a share: 5 for 5% would let every row through
    ("[thresholds]\nmax_accuracy_drop = 5", "'thresholds.max_accuracy_drop': 5.0 is more than the whole: a share is written 0.05 for 5%"),
    ("[regression]\nmax_accuracy_drop = 5", "'regression.max_accuracy_drop': 5.0 is more than the whole"),
    # the value given is said, though the bound's digits hold it ("30" holds "0")
    ("[measure]\nrepeats = 0", "'measure.repeats': Input should be greater than or equal to 30 (got 0)"),
    # past any use: a typo that would crash deep in an engine, or run for days
    ("[measure]\nthreads = 100000", "'measure.threads': Input should be less than or equal to 1024 (got 100000)"),
    ("[measure]\nrepeats = 100000000000", "'measure.repeats': Input should be less than or equal to 100000"),
    # "" is no path: the working folder filled with a cache, or the digits split fed for the user's file
    ("[output]\ndir = \"\"", "'output.dir': is empty: give a folder"),
    ("[data.digits_cnn]\neval = \"\"", "'data.digits_cnn.eval': String should have at least 1 character"),
])
def test_a_value_of_the_wrong_type_or_past_what_it_can_mean_is_refused_not_coerced(tmp_path, section, needle):
    from tvmharness.recipe import load_recipe

    with pytest.raises(HarnessError) as err:
        load_recipe(write(tmp_path / "typed.toml", f'models = ["digits_cnn"]\n{section}\n'))
    assert needle in err.value.cause


def test_a_recipe_saved_with_a_bom_loads_and_one_not_in_utf8_or_a_folder_is_named(tmp_path):
    from tvmharness.recipe import load_recipe

    (tmp_path / "bom.toml").write_bytes(b'\xef\xbb\xbfname = "bom"\nmodels = ["digits_cnn"]\n')
    assert load_recipe(tmp_path / "bom.toml").name == "bom"
    (tmp_path / "latin.toml").write_bytes('name = "café"\nmodels = ["digits_cnn"]\n'.encode("latin-1"))
    (tmp_path / "folder.toml").mkdir()
    for path, needle in ((tmp_path / "latin.toml", "is not UTF-8 text (byte 0xe9 at offset 11)"),
                         (tmp_path / "folder.toml", "is a folder")):
        with pytest.raises(HarnessError, match=re.escape(needle)):
            load_recipe(path)


def test_a_model_that_is_no_model_and_data_for_none_are_refused_before_any_model_is_made(tmp_path):
    """The zoo's digits CNN trains first in a new folder (seconds to minutes): a typo is said before it."""
    for body, needle in (('models = ["digits_cnn", "digitscnn"]', "unknown model 'digitscnn'"),
                         ('models = ["digits_cnn"]\n[data.digitscnn]\neval = "x.npz"', "[data] names 'digitscnn'")):
        proc = run_cli("run", str(write(tmp_path / "typo.toml", body)), cwd=tmp_path)
        assert_usage_error(proc, needle)
        assert not (tmp_path / "results" / "cache" / "models").exists()  # nothing trained


def test_values_of_their_own_type_still_load(tmp_path):
    """An int where a float is asked, and the strings that validators read (durations, paths, variants)."""
    from tvmharness.recipe import load_recipe

    recipe = load_recipe(write(tmp_path / "typed.toml", 'models = ["digits_cnn"]\nvariants = ["fp32", ["int8"]]\n'
                               '[measure]\ntolerance = 1\n[tune]\ntime_budget = "30m"\nbuilder_timeout = 60\n'
                               '[output]\ndir = "out"\n'), repeats=40, threads=2, store="flags.db", output_dir=Path("o"))
    assert recipe.measure.tolerance == 1.0 and recipe.tune.builder_timeout == 60.0 and recipe.tune.time_budget == "30m"
    assert (recipe.measure.repeats, recipe.measure.threads, recipe.output.store, recipe.output.dir) == (40, 2, "flags.db", Path("o"))


def test_a_value_of_no_allowed_type_is_one_problem():
    from tvmharness.recipe import recipe_from_dict

    with pytest.raises(HarnessError) as err:
        recipe_from_dict({"models": ["digits_cnn"], "variants": [3]})
    # pydantic reports each branch of `str | list[str]` at a place of its own ('variants.0.list[str]')
    assert "'variants.0': Input should be a valid string or a valid list (got 3)" == err.value.cause.split(": ", 1)[1]


def test_input_settings_for_models_a_run_leaves_out_are_not_typos():
    """--model narrows a recipe: its [inputs] may be for the models left out, and only names given on
    the command line must then match a model measured."""
    from tvmharness.recipe import apply_overrides, recipe_from_dict

    recipe = recipe_from_dict({"models": ["tokens.onnx", "digits_cnn"], "inputs": {"ids": {"shape": [1, 128]}}})
    assert recipe.names_to_match("inputs") == {"ids"}
    narrowed = apply_overrides(recipe, models=["digits_cnn"])
    assert narrowed.names_to_match("inputs") == set() and narrowed.input_settings("tokens")["ids"]["shape"] == [1, 128]
    typed = apply_overrides(narrowed, inputs={"mask": {"range": [0, 1]}}, repeats=40)
    assert typed.names_to_match("inputs") == {"mask"} and set(typed.inputs) == {"ids", "mask"}
    with_data = recipe_from_dict({"models": ["tokens.onnx", "digits_cnn"], "data": {"tokens": {"eval": "val.npz"}}})
    assert with_data.names_to_match("data") == {"tokens"}
    narrowed = apply_overrides(with_data, models=["digits_cnn"], data={"digits_cnn": {"train": "mine.npz"}})
    assert narrowed.names_to_match("data") == {"digits_cnn"} and narrowed.data["tokens"].eval == "val.npz"


def test_data_flags_name_the_model_a_command_takes(cli_dir):
    proc = run_cli("bench", f"{USER_MODELS}:tiny_mlp", "--eval-data", "missing.npz", cwd=cli_dir)
    assert_usage_error(proc, "eval data for tiny_mlp not found: missing.npz", "relative paths start where you run")


@pytest.mark.parametrize("command, needle", [
    (("run", str(ROOT / "recipes/quickstart.toml"), "--repeats", "5"), "'--repeats': Input should be greater than or equal to 30"),
    (("bench", "digits_cnn", "--engine", "tvm", "--engine", "tensorrt"), "'--engine': Input should be 'tvm'"),
    # MetaSchedule's 32-bit count would wrap it to no trials at all, exit 0
    (("tune", "--model", "digits_cnn", "--trials", str(2**31), "--no-measure"), "'--trials': Input should be less than or equal to 2147483647"),
])
def test_a_bad_flag_value_is_named_by_its_flag(cli_dir, command, needle):
    proc = run_cli(*command, "--store", str(cli_dir / "flags.db"), cwd=cli_dir)
    assert_usage_error(proc, "invalid value", needle)
    assert not (cli_dir / "flags.db").exists()  # nothing ran


@pytest.mark.parametrize("flag, where", [("--out", "afile"), ("--out", "afile/sub"), ("--output-dir", "afile")])
def test_a_file_where_a_folder_goes_is_named_as_one(cli_dir, flag, where):
    write(cli_dir / "afile", "")
    command = ("bench", "digits_cnn", "--engine", "torch") if flag == "--output-dir" else ("nightly", str(ROOT / "recipes/quickstart.toml"))
    proc = run_cli(*command, flag, str(cli_dir / where), "--store", str(cli_dir / "afile.db"), cwd=cli_dir)
    assert_usage_error(proc, f"{cli_dir / 'afile'} is a file, not a folder", "give a folder")
    assert not (cli_dir / "afile.db").exists()  # refused before anything was measured


@pytest.mark.parametrize("command", [("bench", f"{USER_MODELS}:tiny_mlp", "--engine", "torch", "--engine", "tvm"),
                                     ("run", str(ROOT / "recipes/quickstart.toml")), ("compile", f"{USER_MODELS}:tiny_mlp")])
def test_an_output_dir_that_is_a_file_is_refused_before_anything_is_measured(cli_dir, command):
    """Not a failed build per row, stored: the folder is named, with the fix, and nothing runs."""
    write(cli_dir / "afile", "")
    proc = run_cli(*command, "--output-dir", str(cli_dir / "afile"),
                   *(["--store", str(cli_dir / "afile.db")] if command[0] != "compile" else []), cwd=cli_dir)
    assert_usage_error(proc, f"{cli_dir / 'afile'} is a file, not a folder", "give a folder")
    assert not (cli_dir / "afile.db").exists()


def test_a_report_file_that_cannot_be_written_fails_before_the_report(cli_dir, tmp_path):
    import numpy as np

    from tests.history import night

    night(Store(str(tmp_path / "h.db")), 1.0, np.random.default_rng(0))
    write(cli_dir / "afile", "")
    history = (tmp_path / "h.db").read_bytes()
    for fmt, flag, path, needle in (("table", "--html", tmp_path, f"{tmp_path} is a folder"),
                                    ("md", "--html", tmp_path, f"e.g. {tmp_path / 'report.html'}"),  # as the option says
                                    ("csv", "--output", tmp_path, f"e.g. {tmp_path / 'report.csv'}"),
                                    ("junit", "--output", tmp_path, f"e.g. {tmp_path / 'report.xml'}"),
                                    ("md", "--output", cli_dir / "afile" / "x.md", "is a file, not a folder"),
                                    ("csv", "--output", tmp_path / "h.db", f"--output {tmp_path / 'h.db'} is the results store itself"),
                                    ("table", "--html", tmp_path / ".." / tmp_path.name / "h.db", "is the results store itself")):
        proc = run_cli("report", "--store", str(tmp_path / "h.db"), "--format", fmt, flag, str(path), cwd=cli_dir)
        assert_usage_error(proc, needle)
        assert proc.stdout == ""  # not the table first, then the error
    from tvmharness.report.html import write_html

    with pytest.raises(HarnessError, match="write_html's path .* is the results store itself"):  # from Python too
        write_html(Store(str(tmp_path / "h.db")), str(tmp_path / "h.db"))
    assert (tmp_path / "h.db").read_bytes() == history


def test_one_variant_or_model_name_given_twice_is_refused(cli_dir):
    recipe = write(cli_dir / "twice.toml", 'models = ["digits_cnn"]\nvariants = ["fp32", "prune:0.5", ["prune:0.50"]]\n')
    assert_usage_error(run_cli("run", str(recipe), cwd=cli_dir), '"prune:0.5" and ["prune:0.50"] are the same variant (prune:0.5)')
    write(cli_dir / "other.py", "import torch\n\ndef tiny_mlp():\n    return torch.nn.Linear(16, 4).eval(), torch.randn(1, 16)\n")
    recipe = write(cli_dir / "twice.toml", f'models = ["{USER_MODELS}:tiny_mlp", "{cli_dir / "other.py"}:tiny_mlp"]\n')
    proc = run_cli("run", str(recipe), "--store", str(cli_dir / "twice.db"), cwd=cli_dir)
    assert_usage_error(proc, "are both named 'tiny_mlp'", "rename one")
    assert not (cli_dir / "twice.db").exists()  # refused before anything was measured


def test_a_user_model_whose_example_is_not_tensors_is_refused(cli_dir):
    proc = run_cli("bench", f"{USER_MODELS}:keyword_example", cwd=cli_dir)
    assert_usage_error(proc, "gave dict as its example", "a tuple of tensors in forward's order")


def test_dynamic_sizes_are_named_until_given_and_then_measured_at_them(cli_dir):
    """A sequence length left dynamic in an .onnx or .pt2 file: refused with the input, the dimension
    and the flag that fixes it; given with --input-shape (and token ids' range with --input-range),
    every engine runs the model at those sizes."""
    import torch

    from tests.user_models import token_classifier
    from tvmharness.pipeline import load_models
    from tvmharness.recipe import apply_overrides, parse_input_flags, recipe_from_dict

    module, example = token_classifier()
    onnx_path = cli_dir / "dynamic_seq.onnx"
    torch.onnx.export(module, example, str(onnx_path), input_names=["ids", "mask"], dynamo=False,
                      dynamic_axes={"ids": {0: "batch", 1: "seq"}, "mask": {0: "batch", 1: "seq"}})
    pt2 = cli_dir / "dynamic_seq.pt2"
    seq = torch.export.Dim("seq")
    torch.export.save(torch.export.export(module, example, dynamic_shapes=({1: seq}, {1: seq})), str(pt2))
    for path in (onnx_path, pt2):
        proc = run_cli("bench", str(path), cwd=cli_dir)
        # every input left dynamic in one message, each with its flag
        assert_usage_error(proc, "dimension 1 of input 'ids' of", "dimension 1 of input 'mask' of", "is dynamic",
                           "--input-shape ids=1xN --input-shape mask=1xN")
    store = cli_dir / "dynamic.db"
    for path in (onnx_path, pt2):
        proc = run_cli("bench", str(path), "--input-shape", "ids=1x20", "--input-shape", "mask=1x20", "--input-range",
                       "ids=0..49", "--store", str(store), cwd=cli_dir)
        assert proc.returncode == 0, proc.stderr
        assert "takes ids int64 1x20 (seeded in [0, 49], from --input-range or [inputs]); mask float32 1x20" in " ".join(proc.stdout.split())
        # TVM's warnings while building go to the build's log, and the report names them once
        assert "Fast mode segfaults" not in proc.stderr
        assert "TVM WARNED building dynamic_seq / fp32 for x86 (" in " ".join(proc.stdout.split())
    rows = Store(str(store)).frame()
    assert set(rows["status"]) == {"ok", "not applicable"} and (rows["status"] == "ok").sum() == 5  # no torch for an .onnx
    assert all(r["details"]["inputs"][0]["shape"] == [1, 20] for r in rows.to_dict("records"))
    proc = run_cli("compile", str(pt2), "--input-shape", "ids=1x20", "--input-shape", "mask=1x20", cwd=cli_dir)
    assert proc.returncode == 0 and "reused cached build" in proc.stdout, proc.stderr
    manifest = json.loads((cli_dir / "results/artifacts/dynamic_seq-x86-ids1x20-mask1x20/manifest.json").read_text())
    assert [i["shape"] for i in manifest["inputs"]] == [[1, 20], [1, 20]]
    for flags, needles in ((("--input-shape", "ids=1x20x2"), ("[inputs.ids] shape [1, 20, 2] has 3 sizes", "give 2 sizes")),
                           (("--input-shape", "ids=3x20", "--input-shape", "mask=3x20"), ("changes sizes", "export it at the sizes wanted")),
                           (("--input-range", "mask=0..1"), ("range is for integer and bool inputs", "drop the range of 'mask'")),
                           (("--input-shape", "idz=1x20"), ("names 'idz', which no model takes", "ids, mask")),
                           # a model's name where its input's goes: [inputs.MODEL] shape = ..., one table too few
                           (("--input-shape", "dynamic_seq=1x20"), ("names 'dynamic_seq', which no model takes",
                                                                    "name one of dynamic_seq's inputs (ids, mask): --input-shape ids=...",
                                                                    "its own table, [inputs.dynamic_seq.ids]")),
                           (("--input-range", "ids=9..1"), ("'--input-range ids': [9, 1] is empty",)),
                           (("--input-range", "ids=0..9223372036854775808"), ("does not fit input 'ids'", "int64")),
                           (("--input-shape", "ids=1by20"), ("cannot read --input-shape 'ids=1by20'", "ids=1x128")),
                           # the mask's length is the ids': one symbol in the file, not an engine's shape error later
                           (("--input-shape", "mask=1x12"), ("dimension 1 of input 'ids' and dimension 1 of input 'mask'",
                                                             "are one size ('s", "given as 20 and 12", "give them the same size"))):
        # as bench reads its flags (in this process: a command line's start is a second or more each)
        shapes = [value for flag, value in zip(flags[::2], flags[1::2]) if flag == "--input-shape"]
        shapes += [f"{name}=1x20" for name in ("ids", "mask") if name not in {s.split("=")[0] for s in shapes}]
        ranges = [value for flag, value in zip(flags[::2], flags[1::2]) if flag == "--input-range"]
        with pytest.raises(HarnessError) as refused:
            load_models(apply_overrides(recipe_from_dict({"models": [str(pt2)]}), inputs=parse_input_flags(shapes, ranges)))
        said = " ".join(f"{refused.value.cause} fix: {refused.value.fix}".split())
        assert all(needle in said for needle in needles), (said, needles)


def test_an_input_s_shape_or_range_given_twice_is_refused_by_name():
    """A repeated flag would keep the last unsaid (and name the artifact's folder after both)."""
    from tvmharness.recipe import parse_input_flags

    assert parse_input_flags(["x=1x3", "y=2"], ["ids=0..9"]) == {"x": {"shape": [1, 3]}, "y": {"shape": [2]},
                                                                 "ids": {"range": [0, 9]}}
    with pytest.raises(HarnessError, match=r"--input-shape was given twice for input 'x' \(2x3x16x16 and 4x3x16x16\)"):
        parse_input_flags(["x=2x3x16x16", "x=4x3x16x16"], None)
    with pytest.raises(HarnessError, match=r"--input-range was given twice for input 'ids' \(0..9 and 0..99\)"):
        parse_input_flags(["ids=1x8"], ["ids=0..9", "ids=0..99"])
    with pytest.raises(HarnessError) as comma:  # NAME=VALUE it is: what is wrong is the commas
        parse_input_flags(["x=1,3,16,16"], None)
    assert "write it as NAME=SIZES, the sizes joined by x" in comma.value.fix


def test_sizes_a_model_refuses_are_blamed_on_the_flag_that_gave_them(cli_dir):
    """A model that runs at its own sizes and not at the user's: a usage error naming those sizes (exit 2),
    not a model to fix (exit 1). A .pt2's exported bounds are read before anything is measured or built."""
    import torch

    from tests.user_models import tiny_mlp

    module, _ = tiny_mlp()
    batch = torch.export.Dim("batch", min=1, max=16)
    pt2 = cli_dir / "mlp_upto16.pt2"
    torch.export.save(torch.export.export(module, (torch.randn(2, 16),), dynamic_shapes={"x": {0: batch}}), str(pt2))
    store = cli_dir / "never-sized.db"
    for command in ("compile", "bench"):
        proc = run_cli(command, str(pt2), "--input-shape", "x=32x16", "--out" if command == "compile" else "--store",
                       str(cli_dir / "never-sized") if command == "compile" else str(store), cwd=cli_dir)
        assert_usage_error(proc, "was exported for sizes 1 to 16 in dimension 0 of input 'x'",
                           "the sizes given for it (--input-shape or [inputs]: x=32x16) put 32 there",
                           "give sizes within the bounds it was exported with")
    recipe = write(cli_dir / "batch32.toml", f'models = ["{pt2}"]\nengines = ["torch"]\n[measure]\nbatch = 32\n')
    assert_usage_error(run_cli("run", str(recipe), "--store", str(store), cwd=cli_dir),
                       "the sizes given for it ([measure] batch: x=32x16) put 32 there")
    assert not store.exists()
    for command in ("compile", "bench"):
        proc = run_cli(command, f"{USER_MODELS}:tiny_mlp", "--input-shape", "x=1x17", "--out" if command == "compile" else "--store",
                       str(cli_dir / "never-sized") if command == "compile" else str(store), cwd=cli_dir)
        assert_usage_error(proc, "raised at the sizes given for it (--input-shape or [inputs]: x=1x17)",
                           "give sizes the model takes")
    assert not (cli_dir / "never-sized").exists() and not store.exists()


@pytest.mark.parametrize("command, option", [(("tracker", "start", "--port", "70000"), "--port"),
                                             (("compile", "digits_cnn", "--threads", "0"), "--threads"),
                                             (("devkit", "serve", "--tracker", "127.0.0.1:9190", "--key", "k", "--threads", "-2"),
                                              "--threads")])
def test_out_of_range_numbers_are_refused_before_anything_starts(cli_dir, command, option):
    assert_usage_error(run_cli(*command, cwd=cli_dir), f"Invalid value for '{option}'")


def test_compile_refuses_more_than_one_variant(cli_dir):
    proc = run_cli("compile", "digits_cnn", "--variant", "int8", "--variant", "fp16", "--out", "two", cwd=cli_dir)
    assert_usage_error(proc, "compile builds one artifact, and --variant was given 2 times (int8, fp16)",
                       "run compile once per variant")
    assert not (cli_dir / "two").exists()


def test_a_bad_frontend_flag_is_named_by_its_flag(cli_dir):
    for command in ("bench", "compile"):
        assert_usage_error(run_cli(command, "digits_cnn", "--frontend", "tf", cwd=cli_dir),
                           "invalid value: '--frontend'")


def test_a_file_that_is_not_an_exported_program_is_one_message(cli_dir):
    proc = run_cli("bench", str(write(cli_dir / "junk.pt2", "junk")), cwd=cli_dir)
    assert_usage_error(proc, "junk.pt2 is not a loadable ExportedProgram", "torch.export.save")  # and no traceback
    # PyTorch's other saves, which torch.export.load calls "corrupted": said as what they are
    import torch

    from tests.user_models import tiny_mlp

    module, example = tiny_mlp()
    torch.save(module.state_dict(), cli_dir / "weights.pt2")
    torch.jit.save(torch.jit.trace(module, example), str(cli_dir / "scripted.pt2"))
    for name, kind in (("weights", "is a torch.save file (a state dict or a pickled module), not an ExportedProgram"),
                       ("scripted", "is a TorchScript file (torch.jit.save), not an ExportedProgram")):
        proc = run_cli("bench", f"{name}.pt2", cwd=cli_dir)
        assert_usage_error(proc, f"{name}.pt2 {kind}", "torch.export.save")
        assert "corrupted" not in proc.stderr


def test_a_module_beside_the_user_is_found_by_the_installed_command(cli_dir):
    """`tvmharness compile mymodels:build` in the folder of mymodels.py, as `python -m` would find it."""
    import subprocess
    import sys

    write(cli_dir / "mymodels.py", "import torch\n\ndef build():\n    return torch.nn.Linear(4, 2).eval(), torch.randn(1, 4)\n")
    command = Path(sys.executable).with_name("tvmharness")  # the console script: its folder, not cwd, is on sys.path
    proc = subprocess.run([str(command), "compile", "mymodels:build", "--out", "mine"], capture_output=True, text=True,
                          cwd=cli_dir, timeout=300)
    assert proc.returncode == 0 and (cli_dir / "mine" / "model.so").is_file(), proc.stderr
    assert_usage_error(run_cli("compile", "theirmodels:build", cwd=cli_dir), "no module 'theirmodels' here",
                       "path/to/theirmodels.py:build")


def test_a_file_beside_a_model_named_as_a_package_does_not_replace_it(cli_dir):
    """An onnx.py beside the user's model file: the model's own imports find files beside it while it
    is imported, but the harness's onnx (and ONNX Runtime's export after it) stays the installed one."""
    import subprocess
    import sys

    folder = cli_dir / "shadow"
    folder.mkdir()
    write(folder / "helpers.py", "WIDTH = 4\n")
    write(folder / "net.py", "import torch\nfrom helpers import WIDTH\n\n"
          "def tiny():\n    from helpers import WIDTH as again  # an import inside the function still finds it\n"
          "    return torch.nn.Linear(WIDTH, again).eval(), torch.randn(1, WIDTH)\n")
    write(folder / "onnx.py", "def export():\n    pass\n")
    code = ("from tvmharness.models import load_model; load_model('shadow/net.py:tiny', 'cache'); "
            "import onnx; print(onnx.__file__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cli_dir, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "site-packages" in proc.stdout and "shadow" not in proc.stdout, proc.stdout


def test_missing_recipe_and_model_files(cli_dir, monkeypatch):
    assert_usage_error(run_cli("run", "nowhere.toml", cwd=cli_dir),
                       f"no recipe file nowhere.toml (looked for at {cli_dir / 'nowhere.toml'})",
                       "or the name of one tvmharness comes with: edge-compression, nightly, quickstart")
    # a shipped recipe by its bare name, where no file of that name is here; a file of that name is the file
    from tvmharness.errors import HarnessError
    from tvmharness.recipe import RECIPES_DIR, load_recipe

    monkeypatch.chdir(cli_dir)  # (the name is the working folder's, as a command line's)
    assert load_recipe("nightly").name == "nightly"
    with pytest.raises(HarnessError, match="no recipe file quickstart.toml") as refused:
        load_recipe("quickstart.toml")  # a path, not a name: never the shipped one in its place
    assert "its name alone, quickstart, is the one of that name tvmharness comes with" in refused.value.fix
    (cli_dir / "nightly.toml").write_text('name = "mine"\nmodels = ["digits_cnn"]\n')
    assert load_recipe("nightly.toml").name == "mine" and load_recipe("nightly").name == "nightly"
    (cli_dir / "nightly.toml").unlink()
    assert_usage_error(run_cli("run", "recipes/nightly.toml", cwd=cli_dir), "no recipe file recipes/nightly.toml",
                       "`tvmharness run nightly` runs the one of that name tvmharness comes with")
    # the shipped one, by its name, says so; with a file of that name here, how to take that instead
    (cli_dir / "quickstart.toml").write_text('name = "mine"\nmodels = ["digits_cnn"]\n')
    shipped = run_cli("run", "quickstart", "--target", "sparc", cwd=cli_dir)
    (cli_dir / "quickstart.toml").unlink()
    assert_usage_error(shipped, f"recipe: quickstart (shipped, {RECIPES_DIR / 'quickstart.toml'}); give quickstart.toml "
                       "for the one here", "unknown target 'sparc'")
    assert_usage_error(run_cli("bench", "missing.onnx", cwd=cli_dir),
                       f"model file not found: missing.onnx (looked for at {cli_dir / 'missing.onnx'})",
                       "relative paths start where you run tvmharness")


def test_a_missing_recipe_path_is_refused_not_swapped_for_the_shipped_one(tmp_path):
    """`tvmharness nightly nightly.toml` where there is none: refused before anything runs or is written,
    naming the shipped recipe's own command line."""
    for command, arg in (("nightly", "nightly.toml"), ("tune", "ci/nightly.toml"), ("run", "ci/quickstart")):
        proc = run_cli(command, arg, cwd=tmp_path)
        assert_usage_error(proc, f"no recipe file {arg} (looked for at {tmp_path / arg})",
                           f"`tvmharness {command} {Path(arg).stem}` runs the one of that name tvmharness comes with")
        assert "shipped" not in proc.stderr
    assert list(tmp_path.iterdir()) == []  # no results/ made for a night that did not run


@pytest.mark.parametrize("command", [("bench", "digits_cnn", "--store", "/proc/none/h.db"),
                                     ("compile", "digits_cnn", "--out", "/proc/none/artifact"),
                                     ("nightly", str(ROOT / "recipes/nightly.toml"), "--out", "/proc/none/nightly")])
def test_a_path_that_cannot_be_written_is_named(cli_dir, command):
    assert_usage_error(run_cli(*command, cwd=cli_dir), "cannot use /proc/none", "fix:")
    assert not (cli_dir / "results" / "history.db").exists()  # refused before anything was measured


@pytest.mark.parametrize("command", [("run", str(ROOT / "recipes/quickstart.toml")), ("tune", "--model", "digits_cnn")])
def test_a_store_that_is_a_folder_is_refused_before_any_work(cli_dir, command):
    folder = cli_dir / "a-folder"
    folder.mkdir(exist_ok=True)
    proc = run_cli(*command, "--store", str(folder), cwd=cli_dir)
    assert_usage_error(proc, "is a folder", "history.db")
    assert "trials" not in proc.stderr  # refused before any tuning


def test_a_report_never_creates_or_changes_a_store(cli_dir):
    missing, empty = cli_dir / "missing.db", cli_dir / "empty.db"
    empty.touch()
    for store in (f"sqlite:///{missing}", str(empty)):
        assert_usage_error(run_cli("report", "--store", store, cwd=cli_dir), "no results store at")
        with pytest.raises(HarnessError, match="no results store at"):  # from Python, as a report reads it
            Store.existing(store)
    assert not missing.exists() and empty.stat().st_size == 0


def test_a_store_url_whose_driver_is_missing_names_the_module(cli_dir):
    proc = run_cli("report", "--store", "postgresql+pg8000://u@127.0.0.1:1/db", cwd=cli_dir)
    assert_usage_error(proc, "needs the Python module 'pg8000'")


def test_a_store_that_is_not_one_says_what_to_give_instead(cli_dir, tmp_path):
    import sqlite3

    other = tmp_path / "other.db"  # another tool's database that happens to have a table named runs
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE runs (x)")
    assert_usage_error(run_cli("report", "--store", str(other), cwd=cli_dir), "a SQLite database of something else")
    assert_usage_error(run_cli("report", "--store", "bogus://x", cwd=cli_dir),
                       "neither a file path nor a database URL SQLAlchemy knows", "postgresql+psycopg2://")
    assert_usage_error(run_cli("report", "--store", str(tmp_path), cwd=cli_dir), "is a folder", "history.db")


def test_a_full_disk_is_said_as_such_not_as_an_internal_error(cli_dir, tmp_path):
    import numpy as np

    from tests.history import night

    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    night(Store(str(tmp_path / "h.db")), 1.0, np.random.default_rng(0))
    proc = run_cli("report", "--store", str(tmp_path / "h.db"), "--format", "md", "--output", "/dev/full", cwd=cli_dir)
    assert_usage_error(proc, "cannot write /dev/full: No space left on device", "give another path")
    assert not Path("/dev/full").is_file()  # written through, never replaced by a file
    proc = run_cli("report", "--store", str(tmp_path / "h.db"), "--format", "md", "--output", "-", cwd=cli_dir)
    assert proc.returncode == 0 and proc.stdout.startswith("## tvmharness") and not (cli_dir / "-").exists(), proc.stdout


def test_a_model_that_does_not_export_fails_its_rows_and_keeps_the_baseline(cli_dir):
    store = cli_dir / "noexport.db"
    proc = run_cli("bench", f"{USER_MODELS}:does_not_export", "--store", str(store), cwd=cli_dir)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "def forward" not in proc.stderr  # torch's dump of the graph it stopped in
    assert "does not export with torch.export" in proc.stdout
    frame = Store(str(store)).frame()
    statuses = dict(zip(frame["engine"], frame["status"]))
    assert statuses == {"torch": "ok", "tvm": "failed to build", "onnxruntime": "failed to build"}
    # compile could not build it: exit 1, as bench's rows fail, not a usage error
    proc = run_cli("compile", f"{USER_MODELS}:does_not_export", "--out", str(cli_dir / "never-exported"), cwd=cli_dir)
    assert_usage_error(proc, "model 'does_not_export' does not export with torch.export", "make the forward pass traceable",
                       code=1)


def test_a_project_s_module_named_as_the_standard_library_s_breaks_no_worker(tmp_path, monkeypatch):
    """MetaSchedule's workers and the memory probe are started with `python -m` from the user's folder:
    a random.py there was imported in place of the standard library's (a tune failed, a peak went
    unmeasured). The command runs as the installed `tvmharness` does, without the folder on its own
    path (`python -P`; `python -m tvmharness` puts it first in its own process too)."""
    (tmp_path / "random.py").write_text('raise ImportError("the project\'s random.py")\n')
    tuned = subprocess.run([sys.executable, "-P", "-m", "tvmharness", "tune", "--model", f"{USER_MODELS}:tiny_mlp",
                            "--trials", "4", "--no-measure", "--json"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=600)
    assert tuned.returncode == 0, tuned.stderr
    assert json.loads(tuned.stdout)["tune"][0]["trials_run"] > 0
    import torch

    from tests.user_models import tiny_mlp
    from tvmharness.memory import measure_memory

    module, example = tiny_mlp()
    torch.export.save(torch.export.export(module, (example,)), str(tmp_path / "mlp.pt2"))
    monkeypatch.chdir(tmp_path)
    assert measure_memory("torch", tmp_path / "mlp.pt2", {"x": example.numpy()}, 1)["peak_mb"] is not None


def test_a_worker_imports_the_harness_the_command_runs_from_an_uninstalled_checkout(tmp_path):
    """`python -m tvmharness` from a checkout that is not installed imports the harness from the first
    entry of its path, which a worker started with PYTHONSAFEPATH has not: the worker must be told
    where it is (it failed to import, or imported another install's)."""

    import tvmharness

    checkout = tmp_path / "checkout"
    shutil.copytree(Path(tvmharness.__file__).parent, checkout / "tvmharness",
                    ignore=shutil.ignore_patterns("__pycache__"))
    code = ("import os, subprocess, sys; from tvmharness.provenance import worker_environment; "
            "print(subprocess.run([sys.executable, '-m', 'tvmharness', '--version'], cwd='/', capture_output=True, "
            "env=os.environ | worker_environment()).returncode, end=' '); "
            "print(subprocess.run([sys.executable, '-c', 'import tvmharness; print(tvmharness.__file__)'], cwd='/', "
            "capture_output=True, text=True, env=os.environ | worker_environment()).stdout)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=checkout, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    status, imported = proc.stdout.split()
    assert status == "0" and Path(imported).is_relative_to(checkout), proc.stdout


def test_a_layer_named_as_torch_fx_names_an_attribute_is_named_as_the_cause(cli_dir):
    """A branch called `meta` exports, but PyTorch cannot rebuild a module from the export (it was an
    internal error from a .pt2, and an "unsupported operator" for TVM and ONNX from a .py): one message."""
    import torch

    from tests.user_models import meta_branch

    cause = "has a top-level layer, parameter or buffer named 'meta', a name torch.fx keeps for itself"
    proc = run_cli("compile", f"{USER_MODELS}:meta_branch", "--out", str(cli_dir / "never-meta"), cwd=cli_dir)
    assert_usage_error(proc, f"'meta_branch' {cause}", "rename it in the model (self.meta = ...", code=1)
    module, example = meta_branch()
    torch.export.save(torch.export.export(module, example), str(cli_dir / "meta.pt2"))
    proc = run_cli("bench", str(cli_dir / "meta.pt2"), "--store", str(cli_dir / "meta.db"), cwd=cli_dir)
    assert_usage_error(proc, cause, "and export it again", code=1)


@pytest.mark.parametrize("function, cause", [("raises_on_its_example", "ValueError: no head configured"),
                                             ("example_of_the_wrong_shape", "RuntimeError: mat1 and mat2 shapes")])
def test_a_model_that_raises_on_its_example_is_told_so_not_to_make_it_traceable(cli_dir, function, cause):
    proc = run_cli("compile", f"{USER_MODELS}:{function}", cwd=cli_dir)
    assert_usage_error(proc, f"model '{function}' raised on its example", "in PyTorch itself", cause,
                       "fix: fix the model, or its example", code=1)
    assert "traceable" not in proc.stderr


def test_a_model_function_or_module_that_raises_is_one_plain_reason(cli_dir):
    """What a row's reason says of a user's function that raised: cause, then its fix in one pair of parentheses."""
    from tvmharness.errors import reason
    from tvmharness.models import load_model

    write(cli_dir / "raising.py", "def boom():\n    raise ValueError('no weights')\n")
    write(cli_dir / "raising_import.py", "raise ImportError('half installed')\n\ndef net():\n    pass\n")
    for spec, cause in ((f"{cli_dir / 'raising.py'}:boom", "boom() raised ValueError: no weights"),
                        (f"{cli_dir / 'raising_import.py'}:net", "ImportError: half installed")):
        with pytest.raises(HarnessError) as made:
            load_model(spec, cli_dir / "cache")
        said = reason(made.value)
        assert cause in said and said.endswith("(fix what it raised; TVMHARNESS_DEBUG=1 shows the traceback)"), said
        assert "(" not in made.value.fix, said  # no parentheses inside the fix's own


def test_a_model_with_a_scalar_output_is_measured_on_every_engine(cli_dir):
    store = cli_dir / "[v2]" / "scalar.db"
    proc = run_cli("bench", f"{USER_MODELS}:sum_output", "--store", str(store), cwd=cli_dir)
    assert proc.returncode == 0, proc.stderr
    assert f"in {store} (run 1)" in " ".join(proc.stderr.split())  # brackets in a path are not terminal markup
    frame = Store(str(store)).frame()
    assert dict(zip(frame["engine"], frame["status"])) == {"torch": "ok", "tvm": "ok", "onnxruntime": "ok"}
    assert (frame["max_abs_diff"] < 1e-4).all()


def test_an_unsupported_operator_names_it(cli_dir):
    proc = run_cli("bench", f"{USER_MODELS}:unsupported_op", "--engine", "tvm", "--engine", "onnxruntime",
                   "--store", str(cli_dir / "op.db"), cwd=cli_dir)
    assert proc.returncode == 1
    assert "erfinv" in proc.stdout and "does not support" in proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
    reasons = dict(zip(*Store(str(cli_dir / "op.db")).frame()[["engine", "reason"]].T.values))
    # ONNX Runtime's row names the operator the exporter lacks, not the exporter's own next steps.
    assert "does not export to ONNX: No ONNX function found for" in reasons["onnxruntime"], reasons["onnxruntime"]
    assert "erf_inv" in reasons["onnxruntime"]


def test_compile_of_a_model_tvm_cannot_import_is_a_failed_build_not_a_usage_error(cli_dir):
    proc = run_cli("compile", f"{USER_MODELS}:unsupported_op", "--out", "erfinv", cwd=cli_dir)
    assert proc.returncode == 1, proc.stderr
    assert "does not support: 'erfinv.default'" in " ".join(proc.stderr.split()) and not (cli_dir / "erfinv").exists()
    assert "try the onnx frontend (--frontend onnx" in " ".join(proc.stderr.split())  # the other one, by name


def test_bench_json_and_compile(cli_dir):
    proc = run_cli("bench", "digits_cnn", "--json", "--store", str(cli_dir / "bench.db"), cwd=cli_dir)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert {r["engine"] for r in doc["rows"]} == {"torch", "tvm", "onnxruntime"}
    # the cache, in a project's repository, is none of its changes
    assert (cli_dir / "results" / "cache" / ".gitignore").read_text().splitlines()[-1] == "*"
    assert all(r["status"] == "ok" and r["median_ms"] > 0 and r["stored"] is True for r in doc["rows"])
    assert doc["run"]["provenance"]["host"]["cpu"]["arch"]
    # piped, each step is a line with its time, not padded with blanks to a terminal's width
    steps = [line for line in proc.stderr.splitlines() if re.match(r"\[\d\d:\d\d:\d\d\] measuring digits_cnn", line)]
    assert len(steps) == 3 and not any(line.endswith(" ") for line in steps), proc.stderr

    out = cli_dir / "artifact"
    proc = run_cli("compile", "digits_cnn", "--target", "x86", "--out", str(out), "--json", cwd=cli_dir)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["cache_hit"] is True  # the bench above built the same thing
    manifest = json.loads((out / "manifest.json").read_text())
    assert (out / "model.so").stat().st_size == manifest["library"]["bytes"]
    assert doc["manifest"] == manifest and manifest["load"] and manifest["model_origin"] == "digits_cnn"
    # built for this host's own CPU: it says so, and which preset builds for others
    assert manifest["target"]["cpu_from"].startswith("the build host") and "avx2" in manifest["target"]["features"]
    assert any(n.startswith("built for this host's CPU (") and "--target x86-generic" in n for n in doc["notes"])
    assert manifest["build_host"]["llvm_cpu"] == manifest["target"]["cpu"]
    assert "untuned: TVM's default CPU kernels" in " ".join(manifest["notes"])  # the deployer reads it there too
    proc = run_cli("compile", "digits_cnn", "--target", "x86", "--out", str(out), cwd=cli_dir)
    assert f"model.so ({size_text(manifest['library']['bytes'])}, sha256" in " ".join(proc.stdout.split()), proc.stdout


def test_compile_out_refuses_a_folder_of_other_files_and_leaves_them_as_they_were(cli_dir):
    """--out naming someone's folder (files, a manifest.json not of ours, or / itself) is refused before
    anything is built: the export would overwrite their model.so and remove their kernels.cu."""
    theirs = cli_dir / "theirs"
    theirs.mkdir()
    files = {"manifest.json": '{"name": "their model"}', "model.so": "theirs", "kernels.cu": "theirs", "tvm-native.log": "theirs"}
    for name, text in files.items():
        (theirs / name).write_text(text)
    for out in (theirs, Path("/")):
        assert_usage_error(run_cli("compile", "digits_cnn", "--out", str(out), cwd=cli_dir),
                           f"{out} holds files and no artifact of tvmharness", "give --out an empty or new folder")
    assert {p.name: p.read_text() for p in theirs.iterdir()} == files
    assert not Path("/manifest.json").exists()


def test_a_model_of_a_long_name_compiles(cli_dir):
    """A 240-character name: its partial files and its artifact folder (the name and the target) keep
    within the file system's 255, rather than failing as a full or read-only disk."""
    import torch

    from tests.user_models import tiny_mlp

    module, example = tiny_mlp()
    name = "m" * 240
    torch.export.save(torch.export.export(module, (example,)), str(cli_dir / f"{name}.pt2"))
    proc = run_cli("compile", f"{name}.pt2", "--frontend", "onnx", "--no-check", cwd=cli_dir)
    assert proc.returncode == 0, proc.stderr
    (folder,) = [p for p in (cli_dir / "results" / "artifacts").iterdir() if p.name.startswith(name[:100])]
    assert len(folder.name) <= 200 and json.loads((folder / "manifest.json").read_text())["model"] == name


def test_compile_with_a_linker_that_fails_says_which_and_keeps_nothing(cli_dir):
    """TVM compiles, then a C compiler links the library: its failure is one message naming it."""
    linker = cli_dir / "broken-cc"
    linker.write_text("#!/bin/sh\necho 'ld: cannot find -lmissing' >&2\nexit 1\n")
    linker.chmod(0o755)
    preset = write(cli_dir / "x86-broken-cc.toml", f'name = "x86-broken-cc"\narch = "x86_64"\ncross_compiler = "{linker}"\n'
                                                   '[tvm]\nkind = "llvm"\n')
    out = cli_dir / "never"
    proc = run_cli("compile", "digits_cnn", "--target", str(preset), "--out", str(out), cwd=cli_dir)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    message = " ".join(proc.stderr.split())
    assert f"linking 'digits_cnn' for x86-broken-cc with {linker} failed" in message and "fix:" in message
    assert not out.exists() and not list((cli_dir / "results" / "cache").rglob("*.partial*"))  # no half a library


def test_bench_and_compile_refuse_training_data_without_a_variant_to_train(cli_dir):
    for command in ("bench", "compile"):  # no variant, or one that trains on nothing (a one-shot prune)
        for variant in ([], ["--variant", "prune:0.5"]):
            assert_usage_error(run_cli(command, "digits_cnn", *variant, "--train-data", "train.npz", cwd=cli_dir),
                               "--train-data is what variants train and calibrate on", "add such a --variant")


def test_bench_measures_a_variant_at_the_threads_asked(cli_dir):
    proc = run_cli("bench", "digits_cnn", "--variant", "int8", "--engine", "onnxruntime", "--threads", "1", "--json",
                   "--store", str(cli_dir / "variant.db"), cwd=cli_dir)
    assert proc.returncode == 0, proc.stderr
    rows = {(r["variant"], r["engine"]): r for r in json.loads(proc.stdout)["rows"]}
    assert set(rows) == {("fp32", "torch"), ("fp32", "onnxruntime"), ("int8", "onnxruntime")}  # fp32: what int8 is judged by
    assert all(r["status"] == "ok" and r["threads"] == 1 for r in rows.values())
    assert rows[("int8", "onnxruntime")]["details"]["accuracy_drop"] < 0.05


def test_compile_ships_a_compressed_variant_that_loads_and_runs(cli_dir):
    import numpy as np
    import tvm
    from tvm import relax

    from tvmharness.measure import output_arrays

    for variant, folder, frontend in (("prune:0.5", "digits_cnn-prune_0.5-x86", "torch"),
                                      ("int8", "digits_cnn-int8-onnx-x86", "onnx")):
        proc = run_cli("compile", "digits_cnn", "--variant", variant, cwd=cli_dir)
        assert proc.returncode == 0, proc.stderr
        assert f"digits_cnn / {variant} for x86" in proc.stdout.splitlines()[0], proc.stdout
        out = cli_dir / "results" / "artifacts" / folder  # each variant in a folder of its own
        manifest = json.loads((out / "manifest.json").read_text())
        assert [step["kind"] for step in manifest["compression"]] == [variant.split(":")[0]]
        if variant == "int8":  # the config asks 64 calls; digits' training split gives them all
            assert manifest["calibration"]["calls"] == 64 and len(manifest["calibration"]["content_hash"]) == 16
        assert manifest["frontend"] == frontend  # int8 is an ONNX model: it has only that way into TVM
        vm = relax.VirtualMachine(tvm.runtime.load_module(str(out / "model.so")), tvm.cpu())
        x = np.random.default_rng(0).standard_normal(manifest["inputs"][0]["shape"]).astype(np.float32)
        expected = output_arrays(vm["main"](tvm.runtime.tensor(x)), tvm.runtime.Tensor)
        assert [o.shape for o in expected] == [(1, 10)]
        # A deployer runs the manifest's lines as they are, with TVM alone, on an array that is not
        # aligned as TVM allocates (one handed to the VM in place crashed the process)
        np.save(out / "x.npy", x)
        script = ("import numpy as np\nx = np.load('x.npy')\nraw = np.empty(x.nbytes + 4, np.uint8)\n"
                  "inputs = [np.frombuffer(raw[4:4 + x.nbytes].data, np.float32).reshape(x.shape)]\ninputs[0][...] = x\n"
                  + "\n".join(manifest["load"]) + "\nnp.save('y.npy', outputs[0])\n")
        ran = subprocess.run([sys.executable, "-c", script], cwd=out, capture_output=True, text=True, timeout=120)
        assert ran.returncode == 0, ran.stderr[-2000:]
        np.testing.assert_allclose(np.load(out / "y.npy"), expected[0], rtol=1e-5, atol=1e-6)
    assert_usage_error(run_cli("compile", "digits_cnn", "--variant", "prune:2", cwd=cli_dir), "bad parameters in variant 'prune:2'")


def test_compile_keeps_two_functions_of_one_file_and_two_thread_counts_apart(cli_dir):
    from tvmharness.recipe import Measure

    other = Measure().threads + 1  # not the default thread count
    for spec, threads in ((f"{USER_MODELS}:tiny_mlp", []), (f"{USER_MODELS}:mlp_other_head", []),
                          (f"{USER_MODELS}:tiny_mlp", ["--threads", str(other)])):
        proc = run_cli("compile", spec, *threads, "--json", cwd=cli_dir)
        assert proc.returncode == 0, proc.stderr
    folders = {p.name: json.loads((p / "manifest.json").read_text()) for p in (cli_dir / "results" / "artifacts").glob("*mlp*")}
    assert folders["tiny_mlp-x86"]["model"] == "tiny_mlp" and folders["mlp_other_head-x86"]["model"] == "mlp_other_head"
    assert folders[f"tiny_mlp-x86-{other}threads"]["target"]["tvm"]["num-cores"] == other
    assert folders["tiny_mlp-x86"]["model_origin"] == f"{Path(USER_MODELS).resolve()}:tiny_mlp"  # where it came from
    # a .pt2 of the same name would land in the python model's folder: it is refused, not swapped in
    import torch

    from tests.user_models import tiny_mlp

    module, example = tiny_mlp()
    torch.export.save(torch.export.export(module, (example,)), str(cli_dir / "tiny_mlp.pt2"))
    builds = set((cli_dir / "results" / "cache" / "tvm").iterdir())
    assert_usage_error(run_cli("compile", "tiny_mlp.pt2", cwd=cli_dir),
                       f"{Path('results/artifacts/tiny_mlp-x86')} holds tiny_mlp from {Path(USER_MODELS).resolve()}:tiny_mlp, "
                       f"and this tiny_mlp is from {(cli_dir / 'tiny_mlp.pt2').resolve()}", "--out DIR")
    assert set((cli_dir / "results" / "cache" / "tvm").iterdir()) == builds  # said before building, not after
    # so is a function of the same name in another file, and the same model compiled again is not
    (cli_dir / "other.py").write_text(Path(USER_MODELS).read_text())
    assert_usage_error(run_cli("compile", "other.py:tiny_mlp", cwd=cli_dir), "holds tiny_mlp from")
    assert run_cli("compile", f"{USER_MODELS}:tiny_mlp", cwd=cli_dir).returncode == 0
    assert folders["tiny_mlp-x86"] == json.loads((cli_dir / "results/artifacts/tiny_mlp-x86/manifest.json").read_text())
    # one file named as a module here, then as a path: one model, not "a model of the same name"
    (cli_dir / "mine.py").write_text(Path(USER_MODELS).read_text() + "\n\ndef mine_mlp():\n    return tiny_mlp()\n")
    for spec in ("mine:mine_mlp", "mine.py:mine_mlp"):
        assert run_cli("compile", spec, cwd=cli_dir).returncode == 0, spec
    # a board's preset fixes its cores: --threads cannot apply, and says so rather than name a folder for it
    assert_usage_error(run_cli("compile", "tiny_mlp.pt2", "--target", "rpi4", "--threads", "2", cwd=cli_dir),
                       "target rpi4 builds for the 4 threads its preset fixes (num-cores = 4), not --threads 2",
                       "num-cores = 2")


def test_listing_commands_speak_json(cli_dir):
    targets = json.loads(run_cli("targets", "--json", cwd=cli_dir).stdout)
    assert any(t["name"] == "x86" and t["tvm_target"]["mcpu"] != "auto" for t in targets)
    models = json.loads(run_cli("models", "--json", cwd=cli_dir).stdout)
    assert {"digits_cnn", "resnet18", "mobilenet_v2"} <= {m["name"] for m in models}
    bert = next(m for m in models if m["name"] == "bert_tiny")
    assert [(i["name"], i["dtype"], i["shape"]) for i in bert["inputs"]] == [("input_ids", "int64", [1, 128]),
                                                                           ("attention_mask", "int64", [1, 128])]
    checks = json.loads(run_cli("doctor", "--json", cwd=cli_dir).stdout)
    names = {c["check"] for c in checks}
    assert {"TVM LLVM backend", "CUDA device (TVM)", "CPU features", "aarch64-linux-gnu-gcc"} <= names
    cuda = next(c for c in checks if c["check"] == "CUDA device (TVM)")
    assert cuda["ok"] or cuda["detail"]  # no GPU here: the reason is given
    assert run_cli("--version").stdout.startswith("tvmharness ")


def test_a_reader_that_leaves_early_ends_the_command_with_141_and_no_traceback():
    """`tvmharness report | head -1`: the pipe breaks; the exit is a shell's for it (128 + SIGPIPE),
    not 1, which says a row failed, and nothing is printed about it."""
    import subprocess
    import sys

    for args in (["models"], ["models", "--json"]):  # rich's table, and JSON written as it is
        env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"} | {"COLUMNS": "200"}  # stdout buffered, as most have it
        proc = subprocess.Popen([sys.executable, "-m", "tvmharness", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, cwd=ROOT, env=env)
        proc.stdout.close()  # before it writes a line: every write of it finds no reader
        assert proc.wait(timeout=120) == 141, proc.stderr.read()
        assert proc.stderr.read() == b""


def test_doctor_checks_the_pins_and_exits_1_when_something_required_is_missing(cli_dir):
    import os
    import subprocess
    import sys

    rows = {r["check"]: r for r in json.loads(run_cli("doctor", "--json", cwd=cli_dir).stdout)}
    tvm = next(r for name, r in rows.items() if name.startswith("apache-tvm-ffi "))
    assert tvm["ok"] and tvm["required"] and rows["TVM LLVM backend"]["ok"]
    # Without a C++ compiler on the PATH (one links every TVM module) this host cannot build: exit 1, saying so;
    # the compiler is the one a build links with, so a CXX that names one that is not there is named
    env = {k: v for k, v in os.environ.items() if k not in ("CXX", "CC")} | {"PATH": str(Path(sys.executable).parent), "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "tvmharness", "doctor"], env=env, capture_output=True, text=True, cwd=cli_dir)
    assert proc.returncode == 1 and "tvmharness cannot work here without: C++ compiler" in " ".join(proc.stderr.split()), proc.stderr
    rows = {r["check"]: r for r in json.loads(run_cli("doctor", "--json", cwd=cli_dir, env={"CXX": "g++-9000"}).stdout)}
    assert not rows["C++ compiler"]["ok"] and "g++-9000 (from $CXX or $CC) not found" in rows["C++ compiler"]["detail"]


def test_an_error_s_terminal_colours_do_not_reach_a_reason():
    from tvmharness.errors import one_line

    # torch.onnx.export colours its step lines; a row's reason goes into JUnit XML and Markdown.
    assert one_line(RuntimeError("\x1b[96mThis is step 3/3\x1b[0m: export failed\nmore")) == "This is step 3/3: export failed"


def test_an_installed_wheel_holds_every_package_and_the_target_presets(tmp_path):
    """A pip install (not a checkout) has no targets/ beside it: the presets must travel in the wheel."""
    # from the files git tracks, as a clean clone has them: a checkout's build/ would lend the wheel stale files
    source = tmp_path / "source"
    for name in subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q",
                            "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    site = tmp_path / "site"
    with zipfile.ZipFile(next((tmp_path / "dist").glob("tvmharness-*.whl"))) as wheel:
        wheel.extractall(site)
    packages = {p.parent.relative_to(ROOT).as_posix() for p in (ROOT / "tvmharness").rglob("__init__.py")}
    assert {p for p in packages if not (site / p / "__init__.py").is_file()} == set()
    # run from the unpacked wheel alone, away from the checkout
    listed = subprocess.run([sys.executable, "-c", "import json, tvmharness.targets as t, tvmharness.recipe as r; "
                             "print(json.dumps([t.TARGETS_DIR.as_posix(), sorted(t.presets()), r.RECIPES_DIR.as_posix(), "
                             "r.shipped_recipes(), r.load_recipe('quickstart').name]))"],
                            capture_output=True, text=True, cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(site)))
    assert listed.returncode == 0, listed.stderr
    where, names, recipes_where, recipes, quickstart = json.loads(listed.stdout)
    assert where == (site / "tvmharness" / "presets").as_posix()
    assert names == sorted(p.stem for p in (ROOT / "targets").glob("*.toml"))
    # the recipes too, by name: an installed package has no checkout's recipes/ to give the path of
    assert recipes_where == (site / "tvmharness" / "recipes").as_posix() and quickstart == "quickstart"
    assert recipes == sorted(p.stem for p in (ROOT / "recipes").glob("*.toml"))
    assert (site / "tvmharness" / "py.typed").is_file()  # its annotations are for a type checker of the caller's code


def test_a_nightly_that_ends_before_its_reports_leaves_none_of_last_night_s(tmp_path):
    """CI publishes junit.xml whatever the exit code: a night that stops early must not leave yesterday's."""
    out = tmp_path / "nightly"
    out.mkdir()
    for name in ("summary.md", "junit.xml", "report.html"):
        (out / name).write_text("last night")
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'name = "n"\nmodels = ["resnet81"]\n[output]\ndir = "{tmp_path}"\nstore = "{tmp_path / "h.db"}"\n')
    assert_usage_error(run_cli("nightly", str(recipe), "--out", str(out), cwd=tmp_path), "unknown model 'resnet81'")
    # (the lock file stays, taking it again needs no write; git is told it is no report)
    assert sorted(p.name for p in out.iterdir()) == [".gitignore", ".lock"]
    # a model that cannot be made is that night's news: the night is stored, and its reports say so
    recipe.write_text(recipe.read_text().replace("resnet81", f"{USER_MODELS}:weights_gone"))
    # but while another nightly writes there (cron started tonight's before last night's ended), not here
    (out / "junit.xml").write_text("the other night's")
    with file_lock(out / ".lock"):
        assert_usage_error(run_cli("nightly", str(recipe), "--out", str(out), cwd=tmp_path),
                           f"another nightly is writing its reports to {out}", code=75)
    assert (out / "junit.xml").read_text() == "the other night's"
    proc = run_cli("nightly", str(recipe), "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 1 and "broken: failed to load" in " ".join(proc.stderr.split()), proc.stderr
    assert "checkpoint.pt is missing" in (out / "summary.md").read_text() and (out / "junit.xml").is_file()


def test_a_recipe_s_hash_is_what_it_measures_not_its_words_or_store():
    from tvmharness.recipe import recipe_from_dict

    base = {"name": "n", "models": ["digits_cnn"], "measure": {"threads": 1}}
    digest = recipe_from_dict(base).digest()
    assert recipe_from_dict(base | {"description": "reworded", "output": {"store": "elsewhere.db"}}).digest() == digest
    assert recipe_from_dict(base | {"measure": {"threads": 1, "repeats": 60}}).digest() != digest


def test_a_recipe_changed_in_code_is_checked_like_a_file():
    """A notebook's `recipe.measure.repeats = 3` is refused as the file's would be, not measured."""
    from pydantic import ValidationError

    from tvmharness.recipe import recipe_from_dict

    recipe = recipe_from_dict({"name": "n", "models": ["digits_cnn"]})
    for section, key, bad in ((recipe.measure, "repeats", 3), (recipe, "engines", ["torch", "bogus"]), (recipe, "models", [42])):
        with pytest.raises(ValidationError, match=key):
            setattr(section, key, bad)
    recipe.measure.repeats = 40
    assert recipe.measure.repeats == 40
    from tvmharness.errors import HarnessError
    from tvmharness.pipeline import run_recipe
    from tvmharness.recipe import apply_overrides

    recipe.engines.append("bogus")  # changed in place, past the assignment's check: the run checks it first
    with pytest.raises(HarnessError, match="'engines.3'.*got 'bogus'"):
        run_recipe(recipe)
    with pytest.raises(HarnessError, match="no recipe value is set by model") as err:
        apply_overrides(recipe_from_dict({"name": "n", "models": ["digits_cnn"]}), model=["resnet18"])
    assert err.value.fix.startswith("did you mean models (not model)? give some of")
    # a keyword is named as such (no flag was given), and one name where a list goes is that one
    with pytest.raises(HarnessError, match=r"'--repeats': Input should be greater") as err:
        apply_overrides(recipe_from_dict({"name": "n", "models": ["digits_cnn"]}), repeats=5, frontend="torch")
    assert err.value.fix.endswith("(called from Python: the keyword repeats=)")  # not frontend=, a good value
    assert apply_overrides(recipe_from_dict({"name": "n", "models": ["digits_cnn"]}), variants="int8").variants == ["int8"]


def test_compile_writes_no_artifact_that_disagrees_with_its_model(cli_dir):
    """An artifact is run here against its model before it is written: one that computes something
    else (TVM's importer gets nn.LSTM wrong) is refused, unless --no-check asks for it all the same."""
    out = cli_dir / "lstm-artifact"
    proc = run_cli("compile", f"{USER_MODELS}:lstm_last_step", "--out", str(out), cwd=cli_dir)
    message = " ".join(proc.stderr.split())
    assert proc.returncode == 1 and "Traceback" not in message, proc.stderr
    assert "the artifact of lstm_last_step for x86 disagrees with torch (" in message and "--no-check" in message
    assert ("fix: this model has LSTM: TVM 0.27's torch frontend computes nn.LSTM and nn.GRU wrongly, and its onnx "
            "frontend has neither; measure this model on torch and onnxruntime; --no-check") in message
    from tvmharness.frontend import known_faults  # a GRU's too, through the torch frontend only
    from tvmharness.models import load_model

    gru = load_model(f"{USER_MODELS}:conv_gru", cli_dir / "cache")
    assert known_faults(gru, "torch").startswith("this model has GRU") and not known_faults(gru, "onnx")
    assert not out.exists()
    proc = run_cli("compile", f"{USER_MODELS}:lstm_last_step", "--out", str(out), "--no-check", cwd=cli_dir)
    assert proc.returncode == 0 and "not checked (--no-check)" in proc.stdout and (out / "model.so").is_file()
    assert json.loads((out / "manifest.json").read_text())["check"] == {"checked": False, "summary": "not checked (--no-check)"}
    proc = run_cli("compile", f"{USER_MODELS}:tiny_mlp", "--out", str(cli_dir / "mlp-artifact"), cwd=cli_dir)
    assert proc.returncode == 0 and "checked: agrees with torch on 4 inputs" in proc.stdout, proc.stderr
    check = json.loads((cli_dir / "mlp-artifact" / "manifest.json").read_text())["check"]
    assert check | {"max_abs_diff": 0} == {"checked": True, "summary": "checked: agrees with torch on 4 inputs",
                                           "reference": "torch", "inputs": 4, "inputs_from": "seeded", "tolerance": 1e-3,
                                           "tolerance_of": "each output's largest absolute value in the reference",
                                           "max_abs_diff": 0}
    assert 0 <= check["max_abs_diff"] < 1e-3
    if NO_CROSS_LINK is None:  # built here, run on a kit: the manifest says it was not checked
        proc = run_cli("compile", f"{USER_MODELS}:tiny_mlp", "--target", "arm", "--out", str(cli_dir / "arm-mlp"), cwd=cli_dir)
        assert proc.returncode == 0, proc.stderr
        check = json.loads((cli_dir / "arm-mlp" / "manifest.json").read_text())["check"]
        assert check["checked"] is False and check["summary"].startswith("not checked here: arm runs on a dev kit")


def test_a_range_the_model_itself_refuses_is_blamed_on_the_range_given(cli_dir):
    """Token ids past an embedding's 50 rows make PyTorch, the reference of compile's check, raise: a
    usage error naming the input and its range, not an internal error."""
    proc = run_cli("compile", f"{USER_MODELS}:token_classifier", "--input-range", "ids=0..500", "--out",
                   str(cli_dir / "never-checked"), cwd=cli_dir)
    assert_usage_error(proc, "the reference engine (torch)", "raised on its seeded inputs: IndexError: index out of range",
                       "input 'ids' seeded in [0, 500]: the range given by --input-range or [inputs]",
                       "fix: keep the range within what the model accepts")
    assert "report it" not in proc.stderr and not (cli_dir / "never-checked").exists()
    # bench's baseline row says it too (and the others are not measured against it)
    proc = run_cli("bench", f"{USER_MODELS}:token_classifier", "--input-range", "ids=0..500", "--engine", "torch",
                   "--engine", "tvm", "--store", str(cli_dir / "ranges.db"), cwd=cli_dir)
    assert proc.returncode == 1, proc.stderr
    said = " ".join(proc.stdout.split())
    assert ("token_classifier / torch: IndexError: index out of range in self (input 'ids' seeded in [0, 500]: the range "
            "given by --input-range or [inputs]) (keep the range within what the model accepts") in said, said
    # so are ids the user's own held-out data feeds: -1 for padding, past the 50 rows
    import numpy as np

    ids = np.random.default_rng(0).integers(0, 50, (6, 12))
    ids[2, 3], ids[4, 0] = -1, 200
    np.savez(cli_dir / "ids.npz", ids=ids, mask=np.ones((6, 12), np.float32))
    proc = run_cli("bench", f"{USER_MODELS}:token_classifier", "--eval-data", "ids.npz", "--engine", "torch",
                   "--store", str(cli_dir / "ranges.db"), cwd=cli_dir)
    assert proc.returncode == 1, proc.stderr
    said = " ".join(proc.stdout.split())
    assert ("IndexError: index out of range in self (the likely cause, the ids the held-out data feeds: input 'ids' "
            "of ids.npz holds [-1, 200])") in said, said
    assert "keep the data's ids within what the model accepts" in said, said


def test_a_target_whose_cpu_this_host_lacks_features_of_is_built_not_run(cli_dir):
    """Its code would die of SIGILL here: compile writes it unchecked and says why, run and bench refuse it
    before anything is measured, and its manifest lists the target CPU's features, not this host's."""
    from tvmharness import targets

    host = targets.host_llvm_features()
    if all(host.get(f) for f in ("avx512fp16", "amx-tile")) or "avx512fp16" not in host:
        pytest.skip("needs an x86-64 host without Sapphire Rapids' AVX512-FP16 and AMX")
    preset = write(cli_dir / "spr.toml", 'name = "spr"\narch = "x86_64"\n[tvm]\nkind = "llvm"\nmcpu = "sapphirerapids"\n'
                                         'num-cores = 2\n')
    out = cli_dir / "spr-artifact"
    proc = run_cli("compile", f"{USER_MODELS}:tiny_mlp", "--target", str(preset), "--out", str(out), cwd=cli_dir)
    assert proc.returncode == 0, proc.stderr
    assert "not checked here: this host lacks " in proc.stdout and "which spr's CPU (sapphirerapids) has" in proc.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["check"]["checked"] is False and "avx512fp16" in manifest["check"]["summary"]
    assert manifest["target"]["cpu"] == "sapphirerapids" and {"avx512fp16", "amx-tile"} <= set(manifest["target"]["features"])
    for command in (("bench", f"{USER_MODELS}:tiny_mlp"), ("run", str(ROOT / "recipes/quickstart.toml"))):
        proc = run_cli(*command, "--target", str(preset), "--store", str(cli_dir / "spr.db"), cwd=cli_dir)
        assert_usage_error(proc, "target spr builds for sapphirerapids, and this host (", "avx512fp16",
                           "its modules would crash here", "measure it on a host with that CPU")
    assert not (cli_dir / "spr.db").exists()


def test_sigterm_stops_a_run_started_in_the_background_and_keeps_its_rows(tmp_path):
    """A script's `tvmharness run ... &` starts with SIGINT ignored; its SIGTERM (a cancelled CI job,
    `kill`) still ends the run as Ctrl-C does: rows kept, the run marked unfinished, exit 143 (128 + SIGTERM)."""
    import signal
    import time

    store = tmp_path / "h.db"
    recipe = write(tmp_path / "r.toml", f'name = "t"\nmodels = ["{USER_MODELS}:tiny_mlp"]\nengines = ["torch", "onnxruntime"]\n'
                   # the baseline's samples spread over a minute: SIGTERM comes while they are taken
                   f'[measure]\nrepeats = 30\nspan_s = 60\n[output]\ndir = "{tmp_path}"\nstore = "{store}"\n')
    proc = subprocess.Popen([sys.executable, "-m", "tvmharness", "run", str(recipe)], cwd=tmp_path, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        deadline = time.monotonic() + 120
        while not (store.exists() and Store(str(store)).runs()) and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(3)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, stderr
    said = re.search(r"interrupted: (\d+) rows? measured in run (\d+) (?:is|are) stored, and the run is marked unfinished", stderr)
    assert said and "Traceback" not in stderr, stderr
    (run,) = Store(str(store)).runs()
    assert run["finished"] is None and int(said[2]) == run["id"] and int(said[1]) == len(Store(str(store)).frame())


def test_infinite_and_nan_recipe_values_are_refused():
    """span_s = inf would never end a run; tolerance = inf would pass every row."""
    from tvmharness.recipe import recipe_from_dict

    for measure in ({"span_s": math.inf}, {"tolerance": math.inf}, {"tolerance": math.nan}):
        with pytest.raises(HarnessError) as err:
            recipe_from_dict({"models": ["digits_cnn"], "measure": measure})
        assert f"'measure.{next(iter(measure))}'" in err.value.cause and "finite" in err.value.cause


def test_kit_flags_without_a_kit_target_are_refused_and_targets_names_each_kit_key(tmp_path):
    """--tracker or --key with only targets that run on this host would change nothing, silently."""
    for command in (("bench", "digits_cnn", "--engine", "torch", "--tracker", "127.0.0.1:1"),
                    ("tune", "--model", "digits_cnn", "--key", "rpi4", "--no-measure"),
                    ("run", str(ROOT / "recipes/quickstart.toml"), "--target", "x86", "--tracker", "127.0.0.1:1")):
        flag = command[-3] if command[0] == "tune" else command[-2]
        assert_usage_error(run_cli(*command, cwd=tmp_path), f"{flag} chooses dev kits, and target x86 runs on this host",
                           f"or leave out {flag}")
    assert not (tmp_path / "results").exists()  # refused before anything ran
    presets = {p["name"]: p for p in json.loads(run_cli("targets", "--json", cwd=tmp_path).stdout)}
    assert presets["rpi4"]["rpc_keys"] == ["rpi4"] and presets["x86"]["rpc_keys"] == []


def test_the_readme_recipe_shows_every_key_at_its_default():
    """A recipe's unknown key is refused with "README's 'Recipes' shows every key with its default": it does."""
    import re
    import tomllib

    from pydantic import BaseModel

    from tvmharness.recipe import Recipe

    block = (ROOT / "README.md").read_text().split("## Recipes", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    shown, unset = tomllib.loads(block), set(re.findall(r"^# (\w+) = ", block, re.M))
    Recipe.model_validate(shown)  # a key the schema lacks (misspelt) is refused
    defaults = Recipe(models=["m"]).model_dump(mode="json")
    assert "[inputs.NAME]" in block and "[data.MODEL]" in block  # tables of the user's own names: described
    for name, field in Recipe.model_fields.items():
        section = field.annotation if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel) else None
        for key in (section.model_fields if section else [] if name in ("inputs", "data") else [name]):
            value, default = (shown.get(name, {}).get(key), defaults[name][key]) if section else (shown.get(key), defaults[key])
            if default is None:
                assert key in unset and value is None, f"{name}.{key}: unset by default, so shown commented out"
            elif (name, key) not in (("measure", "threads"), ("models", "models")):  # the host's; an example
                assert value == default, f"{name}.{key}: README says {value!r}, the default is {default!r}"


def test_a_bug_of_the_harness_exits_3_so_that_ci_tells_it_from_a_regression(monkeypatch):
    """An internal error is said as one, briefly, with exit 3: not 1 (a regression, a failed row), nor 2 (a bad recipe)."""
    from typer.testing import CliRunner

    import tvmharness.targets
    from tvmharness.cli import app

    def boom():
        raise RuntimeError("boom")

    monkeypatch.setattr(tvmharness.targets, "presets", boom)
    result = CliRunner().invoke(app, ["targets"])
    assert result.exit_code == 3, result.output
    assert "internal error: RuntimeError: boom" in result.output and "Traceback" not in result.output


def test_a_tune_s_resume_hint_is_the_command_that_was_run(monkeypatch):
    """A bare `tvmharness tune --resume` names no recipe nor model: run as the hint says, it found nothing to tune."""
    from tvmharness.cli import _own_resume
    from tvmharness.errors import TUNE_RECORDS_KEPT

    monkeypatch.setattr(sys, "argv", ["tvmharness", "tune", "my recipe.toml", "--trials", "64"])
    assert "(`tvmharness tune 'my recipe.toml' --trials 64 --resume` continues)" in _own_resume(TUNE_RECORDS_KEPT)
    monkeypatch.setattr(sys, "argv", ["tvmharness", "tune", "--model", "m.py:f", "--resume"])
    assert "`tvmharness tune --model m.py:f --resume`" in _own_resume(TUNE_RECORDS_KEPT)
    monkeypatch.setattr(sys, "argv", ["tvmharness", "run", "r.toml"])
    assert _own_resume(TUNE_RECORDS_KEPT) == TUNE_RECORDS_KEPT


def test_a_failing_benchmark_still_ends_with_its_json_line(tmp_path):
    """A script reads a benchmark's last line: a benchmark refused its arguments by the recipe's own
    checks says why there, with the exit code, rather than leaving a table's last line to parse."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "baseline_x86.py"), "--repeats", "2",
                           "--store", str(tmp_path / "b.db")], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 2 == last["exit_code"], proc.stderr
    assert "measure.repeats" in last["error"] and "Recipes" in last["fix"]
    assert "Traceback" not in proc.stderr and "measure.repeats" in proc.stderr
    assert not (tmp_path / "b.db").exists()  # refused before anything was measured
