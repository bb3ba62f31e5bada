"""`tvmharness report` and `tvmharness nightly` as CI meets them: formats, exit codes, the HTML page
in a real headless browser, and a real nightly run on the digits CNN judged against its history."""

import csv
import io
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, run_cli
from tests.history import night
from tvmharness.results import Store

EVIL = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> Path:
    """A history where one series took a 30% step tonight, one stayed flat, and one is named like an attack."""
    path = tmp_path_factory.mktemp("report") / "history.db"
    store = Store(str(path))
    rng = np.random.default_rng(4)
    for i in range(8):
        last = i == 7
        run_id = night(store, 1.3 if last else 1.0, rng, model="stepped", tuning_sha=("b" if last else "a") * 64)
        # the flat and the script-named series join the same runs, as one recipe's rows do
        for model, level in (("flat", 2.0), (EVIL, 0.5)):
            row = store.frame(run_id=run_id).iloc[0].to_dict()
            drift = float(np.exp(rng.normal(0, 0.01)))
            samples = (level * drift * np.exp(rng.normal(0, 0.03, 30))).round(6).tolist()
            store.add(run_id, {k: row[k] for k in ("variant", "target", "engine", "engine_version", "status", "threads",
                                                   "batch", "artifact_bytes", "accuracy", "target_spec", "details")}
                      | {"model": model, "samples_ms": samples, "median_ms": float(np.median(samples)),
                         "is_baseline": model == "flat", "speedup_vs_baseline": None if model == "flat" else 4.0})
    return path


def test_report_formats_read_the_store(seeded):
    md = run_cli("report", "--store", str(seeded), "--format", "md")
    assert md.returncode == 0, md.stderr
    assert "❌ 1 regression found" in md.stdout and "**slower**" in md.stdout and "tuning records" in md.stdout
    assert "unconfirmed: no second measurement" in md.stdout  # the history has no confirmation run
    assert EVIL not in md.stdout and "&lt;script&gt;" in md.stdout

    doc = json.loads(run_cli("report", "--store", str(seeded), "--format", "json").stdout)
    verdicts = {v["series"]["model"]: v for v in doc["verdicts"]}
    assert verdicts["stepped"]["verdict"] == "slower" and verdicts["flat"]["verdict"] == "same"
    assert doc["regressions"] == 1
    assert {c["what"] for c in verdicts["stepped"]["changed"]} >= {"tuning records"}
    assert verdicts["stepped"]["evidence"]["confirmed"] is None and "confirmed" not in verdicts["flat"]["evidence"]
    assert {r["run_id"] for r in doc["rows"]} == {doc["run"]["id"]} and len(doc["rows"]) == 3  # the judged run's rows
    assert all(r["median_ms"] == pytest.approx(np.median(r["samples_ms"])) for r in doc["rows"])

    suite = ET.fromstring(run_cli("report", "--store", str(seeded), "--format", "junit").stdout.split("?>", 1)[1])
    assert suite.get("tests") == "3" and suite.get("failures") == "1"
    failed = [c for c in suite.iter("testcase") if c.find("failure") is not None]
    assert [c.get("classname").split(".")[-1] for c in failed] == ["stepped"]
    assert "tuning records" in failed[0].find("failure").get("message")
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties["apache-tvm_version"] and properties["torch_version"] and properties["cpu"]  # what the numbers ran on

    rows = list(csv.DictReader(io.StringIO(run_cli("report", "--store", str(seeded), "--format", "csv").stdout)))
    assert len(rows) == 24 and {r["verdict"] for r in rows if r["run_id"] == "8"} == {"slower", "same"}
    assert rows[0]["apache-tvm_version"] and rows[0]["onnxruntime_version"] and rows[0]["confirms_run"] == ""
    assert rows[0]["threads"] == "2" and rows[0]["created"].endswith("+00:00")  # a count, and a time with its zone

    table = run_cli("report", "--store", str(seeded))
    assert table.returncode == 0 and "slower" in table.stdout and "stepped" in table.stdout
    gated = run_cli("report", "--store", str(seeded), "--format", "md", "--fail-on-regression")
    assert gated.returncode == 1 and gated.stdout == md.stdout and "1 regression(s)" in gated.stderr
    assert run_cli("report", "--store", str(seeded), "--run", "5", "--fail-on-regression").returncode == 0  # a flat night

    # an earlier run's report holds the history it was judged against, not the runs after it
    earlier = list(csv.DictReader(io.StringIO(run_cli("report", "--store", str(seeded), "--run", "5", "--format", "csv").stdout)))
    assert sorted({int(r["run_id"]) for r in earlier}) == [1, 2, 3, 4, 5]


def test_json_and_junit_stay_valid_with_missing_numbers_and_control_characters(tmp_path):
    store = Store(str(tmp_path / "h.db"))
    for _ in range(2):  # a broken row: no threads, no samples, and a control character in its reason
        night(store, 1.0, np.random.default_rng(0), model="broken", status="failed to build", reason="step \x07 3/3 failed",
              threads=None, samples_ms=None, median_ms=None, p90_ms=None, iqr_ms=None)
    doc = run_cli("report", "--store", str(tmp_path / "h.db"), "--format", "json").stdout

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    verdict = json.loads(doc, parse_constant=refuse)["verdicts"][0]
    assert verdict["verdict"] == "broken" and verdict["provenance"]["threads"] is None
    junit = run_cli("report", "--store", str(tmp_path / "h.db"), "--format", "junit").stdout
    case = ET.fromstring(junit.split("?>", 1)[1]).find("testcase")
    assert "step  3/3 failed" in ET.tostring(case, encoding="unicode")


def test_report_since_and_bad_input(seeded, tmp_path):
    missing = tmp_path / "nowhere.db"
    proc = run_cli("report", "--store", str(missing))
    assert proc.returncode == 2 and "no results store at" in proc.stderr and "Traceback" not in proc.stderr
    assert not missing.exists()  # a report never creates a store
    proc = run_cli("report", "--store", str(seeded), "--since", "yesterday")
    assert proc.returncode == 2 and "is not a date" in proc.stderr
    proc = run_cli("report", "--store", str(seeded), "--format", "pdf")
    assert proc.returncode == 2 and "unknown format 'pdf'" in proc.stderr
    everything = json.loads(run_cli("report", "--store", str(seeded), "--since", "2000-01-01", "--format", "json").stdout)
    assert everything["regressions"] == 1 and len(everything["verdicts"]) == 3
    # --since trims what is shown, not the history a verdict weighs: tonight alone still reads "slower", not "new".
    tonight = Store(str(seeded)).runs()[-1]["started"].isoformat()
    recent = json.loads(run_cli("report", "--store", str(seeded), "--since", tonight, "--format", "json").stdout)
    assert recent["verdicts"] == everything["verdicts"]
    rows = [run_cli("report", "--store", str(seeded), *since, "--format", "csv").stdout.count("\n")
            for since in ([], ["--since", tonight])]
    assert rows[1] < rows[0]  # the CSV holds tonight's rows only
    # The judged run is shown whole, wherever --since falls: after its first rows, or after it.
    cut = str(Store(str(seeded)).frame(run_id=8)["created"].iloc[-1])
    for since in (cut, "2999-01-01"):
        rows = list(csv.DictReader(io.StringIO(run_cli("report", "--store", str(seeded), "--since", since, "--format", "csv").stdout)))
        assert [r["model"] for r in rows] == ["stepped", "flat", EVIL], since
    page = tmp_path / "cut.html"
    assert run_cli("report", "--store", str(seeded), "--since", cut, "--html", str(page)).returncode == 0
    assert "<h2>Model stepped</h2>" in page.read_text() and ">1 run<" in page.read_text()  # tonight's point alone
    proc = run_cli("report", "--store", str(seeded), "--run", "99")
    assert proc.returncode == 2 and "run 99 is not in the store" in proc.stderr


def test_a_pareto_chart_never_puts_accuracy_and_agreement_on_one_axis():
    from tvmharness.report.html import pareto_chart

    def row(model, engine, ms, **quality):
        return {"status": "ok", "model": model, "variant": "fp32", "engine": engine, "median_ms": ms,
                "artifact_bytes": 1000, "accuracy": None, "top1_agreement": None} | quality

    rows = [row("digits_cnn", "tvm", 0.2, accuracy=0.97), row("digits_cnn", "torch", 0.3, accuracy=0.97),
            row("resnet18", "tvm", 9.0, top1_agreement=1.0), row("resnet18", "onnxruntime", 8.0, top1_agreement=1.0)]
    html = pareto_chart(rows, "p")
    assert html.count('id="p-') == 2
    first, second = html.split('id="p-1"')
    assert "accuracy: digits_cnn" in first and "resnet18" not in first
    assert "top-1 agreement with the baseline: resnet18" in second and "digits_cnn" not in second


def test_a_pareto_front_is_one_model_s():
    """A faster, more accurate model does not push another model's variants off their own front."""
    from tvmharness.report.html import pareto_chart

    def row(model, variant, ms, accuracy):
        return {"status": "ok", "model": model, "variant": variant, "engine": "tvm", "median_ms": ms,
                "artifact_bytes": 1000, "accuracy": accuracy, "top1_agreement": None}

    html = pareto_chart([row("big", "int8", 1.0, 0.90), row("big", "fp32", 2.0, 0.95), row("small", "fp32", 0.5, 0.99)], "p")
    big, small = html.split('id="p-1"')
    assert "accuracy: big" in big and "small" not in big and "accuracy: small" in small
    assert '"name":"Pareto front","x":[1.0,2.0],"y":[0.9,0.95]' in big
    # a point timed UNSTEADY is drawn open and named so, and is no trade-off the front claims
    shaky = row("big", "prune", 0.8, 0.93) | {"details": {"unsteady": 1.9}}
    html = pareto_chart([row("big", "int8", 1.0, 0.90), row("big", "fp32", 2.0, 0.95), shaky], "p")
    assert '"name":"Pareto front","x":[1.0,2.0],"y":[0.9,0.95]' in html and "prune \\u002f tvm UNSTEADY" in html
    assert '"symbol":["circle","circle","circle-open"]' in html
    html = pareto_chart([shaky], "p")  # every point shaky: no front, and the title says why
    assert '"name":"Pareto front","x":[],"y":[]' in html and "no Pareto front: every point was timed UNSTEADY or BUSY" in html


def test_the_untuned_note_gives_the_run_s_own_gap_to_onnx_runtime(tmp_path):
    from tvmharness.provenance import snapshot
    from tvmharness.report.terminal import footnotes

    store = Store(str(tmp_path / "h.db"))
    run_id = store.start_run("r", "h" * 16, {}, snapshot())
    for engine, ms, tuned in (("tvm", 19.0, False), ("onnxruntime", 1.0, None)):
        store.add(run_id, {"model": "m", "variant": "fp32", "target": "x86", "engine": engine, "status": "ok",
                           "engine_version": "1", "median_ms": ms, "samples_ms": [ms], "tuned": tuned, "threads": 2})
    (note,) = [line for line in footnotes(store.frame(run_id=run_id)) if line.startswith("UNTUNED")]
    assert "up to 19x ONNX Runtime's latency: m / fp32 on x86" in note and "far from what MetaSchedule tuning reaches" in note
    # a tune measures the tuned build beside the untuned one: the note gives what tuning changed, not a guess
    for model, tuned_ms in (("m", 4.75), ("tiny", 1.5)):
        store.add(run_id, {"model": model, "variant": "fp32", "target": "x86", "engine": "tvm", "status": "ok",
                           "engine_version": "1", "median_ms": tuned_ms, "samples_ms": [tuned_ms], "tuned": True, "threads": 2})
    store.add(run_id, {"model": "tiny", "variant": "fp32", "target": "x86", "engine": "tvm-untuned", "status": "ok",
                       "engine_version": "1", "median_ms": 1.0, "samples_ms": [1.0], "tuned": False, "threads": 2})
    (note,) = [line for line in footnotes(store.frame(run_id=run_id)) if line.startswith("UNTUNED")]
    assert "far from" not in note, note
    assert "m / fp32 on x86: tuned 4x the untuned speed" in note and "tiny / fp32 on x86: tuned 0.667x the untuned speed" in note
    assert "a tuned build slower than the defaults found nothing better in its trials" in note
    # an untuned row with no tuned build beside it is still read as a floor
    store.add(run_id, {"model": "other", "variant": "fp32", "target": "x86", "engine": "tvm", "status": "ok",
                       "engine_version": "1", "median_ms": 3.0, "samples_ms": [3.0], "tuned": False, "threads": 2})
    (note,) = [line for line in footnotes(store.frame(run_id=run_id)) if line.startswith("UNTUNED")]
    assert "; the others are far from what MetaSchedule tuning reaches" in note and "other /" not in note, note


def test_a_row_timed_while_the_host_was_busy_is_marked_unsteady(tmp_path):
    from types import SimpleNamespace

    from tvmharness.measure import Latency
    from tvmharness.pipeline import _record_outputs
    from tvmharness.provenance import snapshot
    from tvmharness.recipe import recipe_from_dict
    from tvmharness.report.terminal import footnotes

    recipe, model = recipe_from_dict({"models": ["m"]}), SimpleNamespace(eval_labels=None, compression={})
    store = Store(str(tmp_path / "h.db"))
    run_id = store.start_run("r", "h" * 16, {}, snapshot())
    # steady: a few slow calls; busy: most calls waited, only the fastest few show the model's own time;
    # a burst: the median reads well, and 12 calls of 30 took 80x as long
    # a quarter of the samples is counted: 8 of 30 (or 10 of 40) at 1.6x is one, 7 of 30 at 3x is not
    for name, engine, samples in (("m", "tvm", [1.0] * 25 + [3.0] * 5), ("m", "torch", [1.0] * 5 + [3.0] * 25),
                                  ("m", "onnxruntime", [1.0] * 18 + [80.0] * 12), ("a", "tvm", [1.0] * 22 + [1.6] * 8),
                                  ("b", "tvm", [1.0] * 30 + [1.6] * 10), ("c", "tvm", [1.0] * 23 + [3.0] * 7)):
        row = {"model": name, "variant": "fp32", "target": "x86", "engine": engine, "status": "ok",
               "engine_version": "1", "threads": 2, "details": {}}
        _record_outputs(row, model, Latency.from_samples(samples), [], None, recipe)
        row.pop("_outputs")
        store.add(run_id, row)
    (note,) = [line for line in footnotes(store.frame(run_id=run_id)) if line.startswith("UNSTEADY")]
    assert "m / fp32 / torch 3x" in note and "m / fp32 / onnxruntime 80x" in note and "m / fp32 / tvm" not in note
    assert "a / fp32 / tvm 1.6x" in note and "b / fp32 / tvm 1.6x" in note and "c / fp32" not in note


def test_a_row_whose_cpus_other_work_shared_is_marked_busy_and_its_verdict_says_so(tmp_path):
    """BUSY: other processes' work beyond the CPUs a row left free (details.other_load, measured while it was timed)."""
    from tvmharness.report.regress import provenance_changes, row_provenance
    from tvmharness.report.terminal import footnotes, row_notes

    store = _one_run(tmp_path / "h.db", [
        {"engine": "torch", "is_baseline": True, "details": {"other_load": {"cores": 1.4, "of_cpus": 2}}},  # 2 threads of 2 CPUs
        {"engine": "onnxruntime", "details": {"other_load": {"cores": 0.2, "of_cpus": 2}}},  # the host's own murmur
        {"engine": "tvm", "threads": 4, "details": {"other_load": {"cores": 9.0, "of_cpus": 16}}},  # 12 CPUs were free
        {"engine": "tvm", "model": "n", "threads": 4, "details": {"other_load": {"cores": 13.0, "of_cpus": 16}}},
        {"engine": "tvm", "model": "kit"},  # a kit's row: not measured, not marked
        # one thread, a CPU left free: one other process there is no crowd; two take a third of the row's CPU
        {"engine": "tvm", "model": "one", "threads": 1, "details": {"other_load": {"cores": 1.0, "of_cpus": 2, "waited": 0.01}}},
        {"engine": "tvm", "model": "two", "threads": 1, "details": {"other_load": {"cores": 1.3, "of_cpus": 2, "waited": 0.35}}}])
    rows = store.frame().to_dict("records")
    assert ["BUSY" in row_notes(r) for r in rows] == [True, False, False, True, False, False, True]
    (note,) = [line for line in footnotes(store.frame()) if line.startswith("BUSY:")]
    assert "m / fp32 / torch 1.4 of 2 CPUs" in note and "n / fp32 / tvm 13.0 of 16 CPUs" in note
    assert "two / fp32 / tvm 1.3 of 2 CPUs, its threads waiting 0.35 s a second for one" in note
    assert "onnxruntime" not in note and "9.0" not in note and "one /" not in note
    quiet, crowded = row_provenance(rows[1]), row_provenance(rows[0])
    assert (quiet["host while timing"], crowded["host while timing"]) == ("quiet", "busy")
    assert "host while timing" not in row_provenance(rows[4])
    assert {"what": "host while timing", "before": "quiet", "after": "busy"} in provenance_changes([(1, quiet)], crowded)
    # a row timed too briefly to be read (under 50 ms) before: tonight's busy host is still named
    unread = row_provenance(rows[4])
    assert {"what": "host while timing", "before": "not read", "after": "busy"} in provenance_changes([(1, unread)], crowded)
    assert not any(c["what"] == "host while timing" for c in provenance_changes([(1, unread)], quiet))


def test_a_speed_up_over_fp32_not_timed_in_turns_and_a_shaky_best_variant_or_baseline_are_said(tmp_path):
    from tvmharness.report import agreement_texts
    from tvmharness.report.compression import best_variants, compression_rows, variant_notes
    from tvmharness.report.terminal import footnotes

    busy = {"cores": 1.5, "of_cpus": 2}
    store = _one_run(tmp_path / "h.db", [
        {"engine": "torch", "is_baseline": True, "details": {"other_load": busy}},
        {"variant": "int8", "engine": "tvm", "median_ms": 0.5, "speedup_vs_baseline": 2.0, "meets_goals": True,
         "details": {"speedup_vs_fp32": 1.8, "fp32_in_turns": {"median_ms": 0.5, "fp32_median_ms": 0.9}, "unsteady": 1.7}},
        {"variant": "cluster", "engine": "tvm", "median_ms": 0.9, "speedup_vs_baseline": 1.1, "meets_goals": True,
         "details": {"speedup_vs_fp32": 1.2, "kit": "k"}}])  # a kit's row: timed apart from fp32's
    cells = {r[1]: r[5] for r in compression_rows(store.frame())}
    assert cells == {"int8": "1.80x", "cluster": "1.20x *"}
    (said,) = [line for line in variant_notes(store.frame()) if line.startswith("speed-up vs fp32: each variant is timed")]
    assert "not from the two rows' medians in the tables above" in said and " * marks one from the two rows' own" in said
    (best,) = best_variants(store.frame())
    assert best.startswith("best variant of m on x86: int8 on tvm") and best.endswith(
        "; it was timed UNSTEADY: measure again before choosing it"), best
    (baseline,) = [line for line in footnotes(store.frame()) if line.startswith("BUSY BASELINE")]
    assert "m / fp32 / torch was timed BUSY, and every speed-up of m against it moves with that" in baseline
    # the baseline is the reference of max |diff| and top-1 agreement: against itself, its 0 and 100% say nothing
    rows = store.frame().to_dict("records")
    assert agreement_texts(rows[0] | {"max_abs_diff": 0.0, "top1_agreement": 1.0}) == ("—", "—")
    assert agreement_texts(rows[1] | {"max_abs_diff": 2e-6, "top1_agreement": 0.99}) == ("2.00e-06", "99%")
    from tvmharness.report.summary import json_rows, to_csv  # a spreadsheet's reader sees the flags in a column

    assert [r["timing"] for r in csv.DictReader(io.StringIO(to_csv(store.frame(), [])))] == ["BUSY", "UNSTEADY", ""]
    assert [r["timing"] for r in json_rows(store.frame())] == [["BUSY"], ["UNSTEADY"], []]  # and JSON, as a list


def test_sizes_are_printed_in_decimal_units_everywhere():
    from tvmharness.report import size_text

    assert [size_text(n) for n in (None, 48, 303_376, 45_000_000)] == ["—", "48 B", "303.4 kB", "45.0 MB"]


def test_latencies_keep_four_significant_figures_in_the_terminal_table(tmp_path):
    """A 9 us model's 5% move must show: 0.009049 -> 0.009500, not 0.009 -> 0.010 (nor 0.009 -> 0.009)."""
    from rich.console import Console

    from tvmharness.report import ms_text
    from tvmharness.report.terminal import fitted, run_table

    assert [ms_text(v) for v in (0.009049, 12.345, 1234.4, 12345.6, None)] == ["0.009049", "12.35", "1234", "12346", "—"]
    store = _one_run(tmp_path / "h.db", [{"is_baseline": True, "median_ms": 0.009049, "p90_ms": 0.0095}])
    console = Console(record=True, width=400)
    console.print(run_table(store.frame(), store.runs()[-1]))
    assert re.search(r"0\.009049 +0\.009500 ", console.export_text())
    narrow = _one_run(tmp_path / "n.db", [{"model": "a_model_with_a_long_name_of_its_own", "variant": "prune:0.5+finetune",
                                            "median_ms": 0.009213, "p90_ms": 0.07462, "max_abs_diff": 1.14e-05}])
    texts = {}
    for width in (150, 100, 60):  # narrower and narrower: text wraps between words, then each row stacks
        console = Console(record=True, width=width)
        console.print(fitted(run_table(narrow.frame(), narrow.runs()[-1]), console))
        text = texts[width] = console.export_text()
        assert all(number in text for number in ("0.009213", "0.07462", "1.14e-05")), text  # never split
        assert "a_model_with_a_long_name_of_its_own" in text and "prune:0.5+finetune" in text, text
        assert max(map(len, text.splitlines())) <= width and "UNTUNED" in text, text  # the last column is not cut off
    assert "\na_model_with_a_long_name_of_its_own / prune:0.5+finetune / x86 / tvm / ok\n" in texts[100]
    from tvmharness.report.terminal import verdict_table

    Console(record=True, width=60).print(fitted(verdict_table([]), console))  # no rows: the header alone
    wide = Console(record=True, width=400)
    wide.print(fitted(run_table(narrow.frame(), narrow.runs()[-1]), wide))
    assert any("a_model_with_a_long_name_of_its_own   prune:0.5+finetune" in line and "UNTUNED" in line
               for line in wide.export_text().splitlines())  # a table, its row on one line


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_html_report_draws_its_charts_in_headless_chromium(seeded, tmp_path):
    page = tmp_path / "report.html"
    proc = run_cli("report", "--store", str(seeded), "--format", "md", "--html", str(page))
    assert proc.returncode == 0, proc.stderr
    text = page.read_text()
    assert "<script src=" not in text  # self-contained: plotly is inlined
    assert EVIL not in text and "&lt;script&gt;alert(1)" in text  # escaped wherever it appears
    # The terminal's flags and notes are on the page too, and a past run's history ends with that run.
    assert "<h2>Notes</h2>" in text and "<li>tuning records: " in text and "tuned 10/10 tasks" in text
    first = tmp_path / "first.html"
    assert run_cli("report", "--store", str(seeded), "--run", "1", "--html", str(first)).returncode == 0
    assert "8 runs" in text and "8 runs" not in first.read_text() and ">1 run<" in first.read_text()
    # the night's outcome opens the page, with the regressed series and why, before any table
    head = text.split("<h2>")[0]
    assert '<p class="headline regression" id="headline">1 regression found</p>' in head and "1 slower" in head
    assert re.search(r'<ul class="regression"><li>stepped / fp32 / x86 / tvm @ \S+: slower: latency', head), head[-1500:]
    assert '<p class="headline fine" id="headline">no regressions</p>' in first.read_text()
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium); the page was written but not opened")
    shown = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                            "--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri()],
                           capture_output=True, text=True, timeout=120)
    dom = shown.stdout
    charts = int(re.search(r'data-charts="(\d+)"', dom).group(1))
    drawn = int(re.search(r'data-charts-drawn="(\d+)"', dom).group(1))
    # per target a Pareto chart for each of its 3 models and baseline bars, and one sparkline per series
    assert charts == drawn == 3 + 1 + 3, dom[-2000:]
    console = [ln for ln in shown.stderr.splitlines() if ":CONSOLE" in ln]
    assert not console, console
    assert re.search(r'<pre id="js-errors" hidden=""></pre>', dom)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;</h2>" in dom  # the name is text, in its model heading
    assert "<script>alert(1)</script>" not in dom


@pytest.fixture(scope="module")
def nightly_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("nightly")
    recipe = (ROOT / "recipes" / "nightly.toml").read_text()
    recipe = recipe.replace("repeats = 60", "repeats = 30").replace("span_s = 8", "span_s = 1").replace(
        'engines = ["tvm", "torch", "onnxruntime"]', 'engines = ["tvm", "torch"]')
    assert "span_s = 1" in recipe
    (folder / "nightly.toml").write_text(recipe)
    return folder


@pytest.mark.alone
def test_two_real_nightly_runs_give_verdicts_and_the_exit_code_follows_them(nightly_dir):
    first = run_cli("nightly", "nightly.toml", "--format", "json", cwd=nightly_dir)
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert {v["verdict"] for v in doc["verdicts"]} == {"new"}
    assert "held no runs before this one: a new history" in " ".join(first.stderr.split())  # a mistyped --store?
    second = run_cli("nightly", "nightly.toml", "--format", "json", cwd=nightly_dir)
    assert "a new history" not in " ".join(second.stderr.split())
    doc = json.loads(second.stdout)
    assert len(doc["verdicts"]) == 2 and "new" not in {v["verdict"] for v in doc["verdicts"]}
    assert second.returncode == (1 if doc["regressions"] else 0), second.stderr
    tvm = next(v for v in doc["verdicts"] if v["series"]["engine"] == "tvm")
    assert tvm["evidence"]["samples"] == 30 and tvm["evidence"]["reference_runs"] == 1
    assert tvm["operators"], "the TVM rows carry per-operator profiles"
    out = nightly_dir / "results" / "nightly"
    assert (out / "summary.md").read_text().startswith("## tvmharness: ")
    assert ET.parse(out / "junit.xml").getroot().get("tests") == "2"
    assert (out / "report.html").stat().st_size > 1_000_000


@pytest.mark.alone
def test_tuning_then_losing_the_records_is_confirmed_by_a_b_against_the_earlier_build(tmp_path):
    """The done-when of the nightly, for real: tuning makes the TVM row faster and losing the records
    makes it slower; each change is confirmed by an A/B of the night's build and the earlier one
    (both in the cache), and the second exits 1 naming the tuning records."""
    recipe = (ROOT / "recipes" / "nightly.toml").read_text()
    recipe = recipe.replace("repeats = 60", "repeats = 30").replace("span_s = 8", "span_s = 1").replace(
        'engines = ["tvm", "torch", "onnxruntime"]', 'engines = ["tvm"]').replace(
        "min_history = 5", "min_history = 3").replace("unknown_noise_band = 0.20", "unknown_noise_band = 0.10").replace(
        "memory = true", "memory = false")
    assert "min_history = 3" in recipe and "unknown_noise_band = 0.10" in recipe and "memory = false" in recipe
    (tmp_path / "nightly.toml").write_text(recipe)

    def tvm_verdict(proc) -> dict:
        """The TVM series' verdict, the exit code following the night's verdicts: the torch baseline's series, timed
        with it, is at a shared host's mercy (a spell of load over both its runs is a confirmed regression)."""
        verdicts = json.loads(proc.stdout)["verdicts"]
        assert proc.returncode == (1 if any(v["regression"] for v in verdicts) else 0), proc.stderr
        return next(v for v in verdicts if v["series"]["engine"] == "tvm")

    assert run_cli("nightly", "nightly.toml", "--format", "json", cwd=tmp_path).returncode == 0
    tuned = run_cli("tune", "nightly.toml", "--trials", "16", "--no-measure", cwd=tmp_path)
    assert tuned.returncode == 0, tuned.stderr
    faster = run_cli("nightly", "nightly.toml", "--format", "json", cwd=tmp_path)
    v = tvm_verdict(faster)
    assert v["verdict"] == "faster", v["summary"]
    runs = Store(str(tmp_path / "results" / "history.db")).runs()
    assert f"; confirmed by an A/B in turns with run {runs[0]['id']}'s build" in v["summary"]
    assert v["evidence"]["confirmation_change"] < -0.05
    # The tuned build again: whatever the first look says, the A/B finds no change.
    again = run_cli("nightly", "nightly.toml", "--format", "json", cwd=tmp_path)
    assert tvm_verdict(again)["verdict"] == "same", tvm_verdict(again)["summary"]
    shutil.rmtree(tmp_path / "results" / "tuning")
    slower = run_cli("nightly", "nightly.toml", "--format", "json", cwd=tmp_path)
    v = tvm_verdict(slower)
    assert slower.returncode == 1 and v["verdict"] == "slower", v["summary"]  # (a regression: exit 1, whatever torch did)
    nights = [r["id"] for r in Store(str(tmp_path / "results" / "history.db")).runs() if "confirms_run" not in r["provenance"]]
    ab = re.search(r"; confirmed by an A/B in turns with run (\d+)'s build", v["summary"])
    assert ab and int(ab[1]) in nights[1:-1], v["summary"]  # a tuned night's build: one at the reference level
    assert any(c["what"] == "tuning records" and c["after"] == "none" for c in v["changed"])


@pytest.mark.alone
def test_nightly_exits_1_on_a_regression_and_names_the_tuning_records(nightly_dir):
    """A real run judged against a history whose builds were twice as fast with other tuning records."""
    measured = Store(str(nightly_dir / "results" / "history.db")).frame()
    # The build's own speed: the fastest tenth of its samples (a busy host inflates a median, and a
    # history at half an inflated median would be no faster than tonight's unloaded runs).
    tvm_ms = float(np.percentile(np.concatenate(measured.loc[measured["engine"] == "tvm", "samples_ms"].tolist()), 10))
    store = nightly_dir / "faster-history.db"
    rng = np.random.default_rng(8)
    threads = int(measured.loc[measured["engine"] == "tvm", "threads"].iloc[0])  # measured like tonight: one history
    for _ in range(5):  # its samples spread as tonight's are (nightly_dir's span_s): one setup
        night(Store(str(store)), tvm_ms / 2, rng, model="digits_cnn", engine="tvm", tuning_sha="f" * 64, threads=threads,
              recipe={"measure": {"span_s": 1.0}})
    proc = run_cli("nightly", "nightly.toml", "--store", str(store), "--format", "md", cwd=nightly_dir)
    assert proc.returncode == 1, proc.stderr
    assert "regression digits_cnn / fp32 / x86 / tvm" in proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if "x86 / tvm" in ln)
    assert "**slower**" in line and "tuning records ffffffffffffffff → none" in line, (line, proc.stderr[-3000:])
    assert "measuring again to confirm" in proc.stderr and "confirmed by a second run" in line
    runs = Store(str(store)).runs()
    assert runs[-1]["provenance"]["confirms_run"] == runs[-2]["id"]  # the second measurement is kept too


def _one_run(path: Path, rows: list[dict]) -> Store:
    """A store holding one run of the given rows (each a model's rows on x86 unless it says otherwise)."""
    from tvmharness.provenance import snapshot

    store = Store(str(path))
    run_id = store.start_run("r", "h" * 16, {}, snapshot())
    for row in rows:
        store.add(run_id, {"model": "m", "variant": "fp32", "target": "x86", "engine": "tvm", "engine_version": "1",
                           "status": "ok", "threads": 2, "median_ms": 1.0, "samples_ms": [1.0], "details": {}} | row)
    return store


def test_a_terminal_that_is_not_utf8_gets_the_report_with_what_it_cannot_show_replaced(tmp_path):
    """A log or terminal in ASCII or latin-1 (PYTHONIOENCODING, an old locale): '?' for → and ±, not an error."""
    _one_run(tmp_path / "h.db", [{"is_baseline": True, "engine": "torch", "samples_ms": [1.0, 1.2, 0.9] * 10}])
    proc = run_cli("report", "--store", str(tmp_path / "h.db"), env={"PYTHONIOENCODING": "ascii"})
    assert proc.returncode == 0 and "internal error" not in proc.stderr, proc.stderr
    assert "baseline" in proc.stdout and "?" in proc.stdout


def test_every_report_names_the_baseline_its_speed_ups_are_against(tmp_path):
    """A GPU row's speed-up is over the host's fp32 baseline, not over fp32 on the GPU: the header says which."""
    from rich.console import Console

    from tvmharness.report.html import render_html
    from tvmharness.report.terminal import run_table

    store = _one_run(tmp_path / "h.db", [
        {"engine": "torch", "is_baseline": True, "median_ms": 2.0},
        {"target": "cuda", "median_ms": 0.5, "speedup_vs_baseline": 4.0},
        {"target": "cuda", "variant": "int8", "median_ms": 0.25, "speedup_vs_baseline": 8.0, "meets_goals": True}])
    console = Console(record=True, width=400)
    console.print(run_table(store.frame(), store.runs()[-1]))
    assert "speed-up vs torch fp32 on x86" in console.export_text()
    page = render_html(store)
    assert "<th>speed-up vs torch fp32 on x86</th>" in page
    assert "<h3>Relative to torch fp32 on x86</h3>" in page and "speed-up over torch fp32 on x86" in page
    assert "best variant of m on cuda: int8 on tvm (0.2500 ms, 8.00x torch fp32 on x86" in page


def test_a_run_on_a_gpu_host_names_its_gpu_in_every_report(tmp_path):
    from tvmharness.provenance import snapshot
    from tvmharness.report.html import render_html
    from tvmharness.report.regress import judge_run
    from tvmharness.report.summary import markdown
    from tvmharness.report.terminal import provenance_lines

    store = Store(str(tmp_path / "h.db"))
    prov = snapshot()
    prov["host"]["gpu"] = {"name": "NVIDIA H100 80GB HBM3", "arch": "sm_90", "memory_gb": 79.1, "driver": "13.0",
                           "torch_cuda": "13.0"}
    run_id = store.start_run("r", "h" * 16, {}, prov)
    store.add(run_id, {"model": "m", "variant": "fp32", "target": "cuda", "engine": "tvm", "engine_version": "1",
                       "status": "ok", "threads": 2, "batch": 1, "median_ms": 1.0, "samples_ms": [1.0], "details": {},
                       "target_spec": {"tvm": {"kind": "cuda", "arch": "sm_90"}}})
    named = "GPU NVIDIA H100 80GB HBM3 (sm_90, 79.1 GB; driver for CUDA 13.0; PyTorch built for CUDA 13.0)"
    run = store.runs()[-1]
    assert named in provenance_lines(run, store.frame())[0]
    assert named in render_html(store)
    assert named.replace("_", "\\_") in markdown(*judge_run(store, run_id))  # markdown escapes sm_90


def test_every_report_gives_the_run_s_start_in_utc_to_the_second(tmp_path):
    """Stored times are UTC and SQLite gives them back without an offset: each report says UTC."""
    from datetime import datetime

    from sqlalchemy import update

    from tvmharness.report.html import render_html
    from tvmharness.report.terminal import provenance_lines
    from tvmharness.results import Run

    store = _one_run(tmp_path / "h.db", [{"is_baseline": True}])
    with store.engine.begin() as conn:
        conn.execute(update(Run).values(started=datetime(2026, 11, 24, 21, 21, 50, 716701)))
    assert "run 1 at 2026-11-24 21:21:50 UTC ·" in provenance_lines(store.runs()[-1], store.frame())[-1]
    assert "started 2026-11-24 21:21:50 UTC" in render_html(store)
    report = ("report", "--store", str(tmp_path / "h.db"), "--format")
    assert json.loads(run_cli(*report, "json").stdout)["run"]["started"] == "2026-11-24T21:21:50+00:00"
    suite = ET.fromstring(run_cli(*report, "junit").stdout.split("?>", 1)[1])
    assert suite.get("timestamp") == "2026-11-24T21:21:50"  # JUnit's XSD takes no offset


def test_report_passes_over_a_run_stopped_before_its_first_row(tmp_path):
    from tvmharness.provenance import snapshot

    store = _one_run(tmp_path / "h.db", [{"is_baseline": True}])
    store.start_run("r", "h" * 16, {}, snapshot())  # Ctrl-C before the first row
    doc = json.loads(run_cli("report", "--store", str(tmp_path / "h.db"), "--format", "json").stdout)
    assert doc["run"]["id"] == 1 and len(doc["verdicts"]) == 1
    proc = run_cli("report", "--store", str(tmp_path / "h.db"), "--run", "2")
    assert proc.returncode == 2 and "run 2 has no measurements" in proc.stderr and "--run 1" in proc.stderr


def test_user_text_stays_text_in_the_terminal_and_markdown_tables(tmp_path):
    """Model, variant and target names and a failure's reason are a user's text: never rich markup
    (`net[v2]` would print "net", `[/tmp/x]` would raise) nor markdown that breaks a table's row."""
    from rich.console import Console

    from tvmharness.report.regress import judge_run
    from tvmharness.report.summary import markdown
    from tvmharness.report.terminal import render_run, verdict_table

    rng = np.random.default_rng(83)
    store = Store(str(tmp_path / "h.db"))
    for level in (1.0,) * 6 + (1.3,):
        run_id = night(store, level, rng, model="net[v2]", variant="[/tmp/x]", target="[bold]kit")
    store.add(run_id, {"model": "net[v2]", "variant": "fp32", "target": "[bold]kit", "engine": "torch",
                       "engine_version": "1", "status": "ok", "is_baseline": True, "median_ms": 1.0})
    failure = "measuring again failed: [/tmp/x] | no kit"
    run, verdicts = judge_run(store, unconfirmed_why=failure)
    console = Console(record=True, width=400)
    render_run(store.frame(run_id=run_id), run, console)
    console.print(verdict_table(verdicts))
    text = console.export_text()
    assert "net[v2]" in text and "[bold]kit" in text and "speed-up vs torch fp32 on [bold]kit" in text
    assert "compression" in text and text.count("[/tmp/x]") >= 2 and failure in text
    row = next(line for line in markdown(run, verdicts).splitlines() if "**slower**" in line)
    assert row.count("|") == 8 and "\\[/tmp/x\\] &#124; no kit" in row


def test_a_sparkline_draws_the_level_verdicts_compare():
    """The 10th percentile of each run's samples, not its median, which holds how busy the host was."""
    from tvmharness.report.html import sparkline

    samples = [float(x) for x in range(1, 11)]  # p10 1.9, median 5.5
    history = [{"run_started": f"2026-01-0{i}", "median_ms": 5.5, "status": "ok", "run_id": i, "samples_ms": samples}
               for i in (1, 2)]
    assert '"y":[1.9,1.9]' in sparkline(history, "spark")


def test_a_run_s_reasons_are_footnotes_numbered_one_two_three(tmp_path):
    from rich.console import Console

    from tvmharness.report.terminal import footnotes, run_table

    store = _one_run(tmp_path / "h.db", [{"engine": "torch", "is_baseline": True},
                                         {"status": "failed to build", "reason": "no kernel"}, {},
                                         {"engine": "onnxruntime", "status": "outputs disagree", "reason": "max abs diff"}])
    frame, console = store.frame(), Console(record=True, width=250)
    console.print(run_table(frame, store.runs()[0]))
    table = console.export_text()
    assert "failed to build [1]" in table and "outputs disagree [2]" in table
    assert [line for line in footnotes(frame) if line.startswith("[")] == ["[1] m / tvm: no kernel",
                                                                          "[2] m / onnxruntime: max abs diff"]


def test_a_model_without_labels_has_its_top1_disagreement_named_not_an_accuracy_drop():
    import pandas as pd

    from tvmharness.pipeline import _compare_with_baseline
    from tvmharness.recipe import recipe_from_dict
    from tvmharness.report.compression import best_variants, compression_rows

    recipe = recipe_from_dict({"models": ["m"], "thresholds": {"max_accuracy_drop": 0.01}})
    base = {"model": "m", "variant": "fp32", "target": "x86", "engine": "tvm", "status": "ok", "median_ms": 2.0,
            "accuracy": None, "top1_agreement": 1.0, "is_baseline": True, "meets_goals": None, "details": {}}
    row = base | {"variant": "int8", "median_ms": 1.0, "top1_agreement": 0.75, "is_baseline": False, "details": {}}
    _compare_with_baseline(row, base, recipe)
    assert row["details"]["top1_disagreement"] == pytest.approx(0.25) and "accuracy_drop" not in row["details"]
    assert row["details"]["goal_misses"] == ["top-1 disagreement with fp32 0.250 > 0.01"]
    (cells,) = compression_rows(pd.DataFrame([base, row]))
    assert "-25.0 pts top-1" in cells and not any("accuracy" in c for c in cells)
    row["meets_goals"], row["speedup_vs_baseline"] = True, 2.0
    (line,) = best_variants(pd.DataFrame([base, row]))
    assert "top-1 disagreement with fp32 +25.0 pts" in line and "accuracy" not in line
    # what the variant gains on fp32 is not known, and said: and why, where fp32 was left out of the variants
    assert "not compared with fp32 on tvm, " in line
    (line,) = best_variants(pd.DataFrame([base | {"engine": "torch"}, row]))
    assert "not compared with fp32 on tvm: no such row (list fp32 among the variants)" in line
    # a variant that passes and yet is no faster nor smaller than fp32 on its engine is no best variant
    same = row | {"details": row["details"] | {"speedup_vs_fp32": 0.97, "size_ratio": 1.0}}
    (line,) = best_variants(pd.DataFrame([base, same]))
    assert line == "best variant of m on x86: none that passes the goals is 5% faster or smaller than fp32 on its own engine (fp32 does as well)"
    smaller = row | {"details": row["details"] | {"speedup_vs_fp32": 0.97, "size_ratio": 0.3}}
    assert best_variants(pd.DataFrame([base, smaller]))[0].startswith("best variant of m on x86: int8 on tvm")
    # 7% faster in turns with fp32, where the turns do not say so surely, is within noise; surely, a gain
    for p_value, best in ((0.3, False), (0.001, True)):
        turns = row | {"details": row["details"] | {"speedup_vs_fp32": 1.07, "size_ratio": 1.0,
                                                     "fp32_in_turns": {"p_value": p_value}}}
        assert best_variants(pd.DataFrame([base, turns]))[0].startswith("best variant of m on x86: int8 on tvm") is best
    # a variant that changed nothing (a fine-tune with nothing to learn) is no compression, however fast it was timed
    unchanged = row | {"variant": "finetune:1", "details": row["details"] | {
        "speedup_vs_fp32": 1.3, "fp32_in_turns": {"p_value": 0.001}, "same_as_fp32": True}}
    (line,) = best_variants(pd.DataFrame([base, unchanged]))
    assert line == ("best variant of m on x86: none that passes the goals compresses it; left out, being the fp32 model "
                    "under another name: finetune:1 (no step changed the model)")


def test_every_row_status_and_verdict_has_its_colour(tmp_path):
    """A model that could not be made fails like a build that failed: red in the terminal table, not plain."""
    from tvmharness.report import summary, terminal
    from tvmharness.report.regress import ORDER
    from tvmharness.results import LOAD_FAILED

    store = _one_run(tmp_path / "h.db", [{"engine": "—", "status": LOAD_FAILED, "reason": "no such model", "is_baseline": True,
                                          "median_ms": None, "samples_ms": None}])
    table = terminal.run_table(store.frame(), store.runs()[-1])
    (status,) = [c for c in table.columns if str(c.header) == "status"]
    assert [cell.style for cell in status.cells] == ["red"]
    assert set(terminal.VERDICT_STYLE) == set(summary.ICON) == set(ORDER)  # a verdict added or renamed is styled everywhere


def test_a_model_s_control_sequences_do_not_reach_the_terminal(tmp_path):
    """A model's exception may hold OSC sequences (a window title, a hidden hyperlink): its reason, as a
    row keeps it and as the terminal report prints one an older store kept, is text alone."""
    import io

    from rich.console import Console

    from tvmharness.errors import one_line
    from tvmharness.report.terminal import render_run

    said = "before\x1b]0;PWNED-TITLE\x1b\\ \x1b]8;;https://evil.example\x07click\x1b]8;;\x07\r\x9b2J after"
    assert one_line(RuntimeError(said)) == "before click after"
    store = _one_run(tmp_path / "h.db", [{"engine": "torch", "is_baseline": True},
                                         {"model": "m\x1b]0;T\x07", "status": "failed to run", "reason": said}])
    screen = io.StringIO()
    render_run(store.frame(), store.run(1), Console(file=screen, force_terminal=True, width=250))
    printed = screen.getvalue()
    assert "before click" in printed and "after" in printed
    assert "\x1b]" not in printed and "PWNED" not in printed and "evil.example" not in printed and "\x9b" not in printed


def test_a_csv_cell_a_spreadsheet_would_run_as_a_formula_is_quoted(tmp_path):
    from tests.history import night
    from tvmharness.report.summary import to_csv
    from tvmharness.results import Store

    store = Store(str(tmp_path / "h.db"))
    night(store, 1.0, np.random.default_rng(0), model="=1+2", reason="@SUM(A1)")
    (row,) = csv.DictReader(io.StringIO(to_csv(store.frame(), [])))
    assert row["model"] == "'=1+2" and row["reason"] == "'@SUM(A1)"
    assert float(row["median_ms"]) > 0 and row["variant"] == "fp32"  # numbers and plain text as they were


def test_a_report_file_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """A disk that fills as a page or junit.xml is written leaves the file that was there, not half a
    page a CI job would publish; the message names the file."""
    import errno

    from tvmharness.cache import write_whole
    from tvmharness.errors import HarnessError

    page = tmp_path / "report.html"
    write_whole(page, "last night's page")
    written = Path.write_text

    def filling(self, text, *args, **kwargs):
        written(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", filling)
    with pytest.raises(HarnessError, match=f"cannot write {page}: No space left on device"):
        write_whole(page, "tonight's page, longer than the space left")
    monkeypatch.undo()
    assert page.read_text() == "last night's page" and [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_a_report_written_to_a_link_a_pipe_or_a_device_goes_through_it(tmp_path):
    """-o /dev/stdout replaced the machine's /dev/stdout link with a file (and -o /dev/null, as root,
    /dev/null itself); a link to the latest report became a file, its target left as it was."""
    import os
    import stat
    import threading

    from tvmharness.cache import write_whole

    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "target.json").write_text("old")
    link = tmp_path / "latest.json"
    link.symlink_to(Path("reports") / "target.json")
    write_whole(link, "new")
    assert link.is_symlink() and (tmp_path / "reports" / "target.json").read_text() == "new"
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    read = []
    reader = threading.Thread(target=lambda: read.append(pipe.read_text()))
    reader.start()
    write_whole(pipe, "through the pipe")
    reader.join(10)
    assert read == ["through the pipe"] and stat.S_ISFIFO(pipe.stat().st_mode)
    try:
        os.mknod(tmp_path / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        return  # (not root: no device to make)
    write_whole(tmp_path / "null", "gone")
    assert stat.S_ISCHR((tmp_path / "null").stat().st_mode)


def test_a_new_variant_that_collapses_says_its_accuracy_and_missed_goals_in_every_report(tmp_path):
    """A variant renamed prune:0.3 -> prune:0.8 is a new series: nothing to judge it against, and the night
    passes. Its accuracy (98.9% -> 11.7% of fp32's) and the goals it missed must still reach the PR comment,
    JUnit and the terminal, not "new | — | —"."""
    path = tmp_path / "h.db"
    store = Store(str(path))
    rng = np.random.default_rng(8)
    for _ in range(3):
        night(store, 1.0, rng, model="digits", variant="prune:0.3", accuracy=0.9889)
    run = night(store, 1.0, rng, model="digits", variant="prune:0.8", accuracy=0.1167,
                meets_goals=False, details={"goal_misses": ["accuracy drop 0.872 > 0.01"]})
    md = run_cli("report", "--store", str(path), "--format", "md", "--fail-on-regression")
    assert md.returncode == 0, md.stderr  # a new series is no regression
    assert "### Goals missed" in md.stdout and "digits / prune:0.8 / x86 / tvm" in md.stdout.split("### Goals missed")[1]
    assert "accuracy 11.67%" in md.stdout and "accuracy drop 0.872 &gt; 0.01" in md.stdout  # (Markdown's escape)
    assert "1 new, 1 not measured; 1 series missed goals" in md.stdout
    suite = ET.fromstring(run_cli("report", "--store", str(path), "--format", "junit").stdout.split("?>", 1)[1])
    [case] = [c for c in suite.iter("testcase") if c.get("name").startswith("prune:0.8")]
    assert "accuracy 11.67%; goals missed: accuracy drop 0.872 > 0.01" in case.find("system-out").text
    table = run_cli("report", "--store", str(path), "--run", str(run))
    assert "11.67%" in table.stdout and "goals missed" in " ".join(table.stdout.split())
