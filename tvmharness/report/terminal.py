"""The terminal report of one run (rich): one row per model x variant x target x engine, baseline
ratios, a status with its reason, and the provenance every number carries."""

from __future__ import annotations

from rich import box
from rich.cells import cell_len
from rich.console import Console, Group
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from ..data import input_text
from ..errors import counted, toml_table
from ..provenance import cores_text, threads_text
from ..results import BASELINE, BUILD_FAILED, COMPRESS_FAILED, DISAGREES, LOAD_FAILED, NOT_APPLICABLE, OK, RUN_FAILED
from . import (agreement_texts, baseline_label, busy, gpu_text, kit_text, ms_text, number_text, peak_memory, points_text,
               present, shown, size_cell, size_text, spread_text, time_text, timing_flags, unfinished)
from .compression import best_variants, compression_table, variant_notes
from .regress import (BROKEN, FASTER, LARGER, LESS_ACCURATE, MORE_ACCURATE, NEW, NOT_MEASURED, SAME, SLOWER,
                      SMALLER)

WARNINGS_SHOWN = 5  # distinct TVM build warnings printed; the rest are counted
STATUS_STYLE = {OK: "green", DISAGREES: "yellow", BUILD_FAILED: "red", RUN_FAILED: "red", COMPRESS_FAILED: "red",
                LOAD_FAILED: "red", NOT_APPLICABLE: "dim"}


def row_notes(r: dict) -> list[str]:
    """The flags a reader needs beside a row's numbers (the footnotes say what each means)."""
    notes = [] if r.get("stored", True) else ["NOT STORED"]  # a row its store refused (kept in a file): not_stored()
    if r["is_baseline"]:
        notes.append("baseline")
    if r["engine"].startswith("tvm") and r["status"] != BUILD_FAILED:
        tuning = (r["details"] or {}).get("tuning_records")
        notes.append(f"tuned {tuning['tasks_tuned']}/{tuning['tasks']} tasks, {tuning.get('trials', '?')} trials"
                     if tuning else "UNTUNED")
    details = r["details"] or {}
    if details.get("kit"):
        notes.append(f"kit {details['kit']}")
    if details.get("emulated"):
        notes.append("EMULATED")
    notes += timing_flags(r)
    if details.get("retried_after"):
        notes.append("RETRIED")
    if present(r["cache_hit"]) and r["status"] != BUILD_FAILED:
        notes.append("cached" if r["cache_hit"] else "built")
    if present(r["meets_goals"]):
        notes.append("goals met" if r["meets_goals"] else "goals missed")
    return notes


def run_table(frame, run: dict) -> Table:
    table = Table(title=shown(f"{run['recipe_name']}: run {run['id']}"), box=box.SIMPLE_HEAVY, title_justify="left")
    with_memory = any(peak_memory(d) is not None for d in frame["details"])
    for name, justify in [("model", "left"), ("variant", "left"), ("target", "left"), ("engine", "left"),
                          ("status", "left"), ("median ms", "right"), ("p90 ms", "right"), ("spread", "right"),
                          (f"speed-up vs {baseline_label(frame.to_dict('records'))}", "right"), ("size", "right"),
                          *([("peak MB", "right")] if with_memory else []),
                          ("max |diff|", "right"), ("top-1 agree", "right"), ("accuracy", "right"), ("notes", "left")]:
        table.add_column(shown(name), justify=justify, overflow="fold")  # the baseline's names are text, not markup
    rows = frame.to_dict("records")
    numbers = _footnote_numbers(rows)
    for i, r in enumerate(rows):
        status = shown(r["status"], style=STATUS_STYLE.get(r["status"], ""))
        if i in numbers:
            status.append(f" [{numbers[i]}]")
        notes = row_notes(r)
        if r["is_baseline"] and r["status"] == OK:
            speedup = "1.00x"
        else:
            speedup = number_text(r["speedup_vs_baseline"], ".2f", "x")
        table.add_row(*(shown(str(r[k])) for k in ("model", "variant", "target", "engine")), status,
                      ms_text(r["median_ms"]), ms_text(r["p90_ms"]), spread_text(r),
                      speedup,
                      size_text(r["artifact_bytes"]), *([number_text(peak_memory(r["details"]), ".1f")] if with_memory else []),
                      *agreement_texts(r), number_text(r["accuracy"], ".2%"), shown(", ".join(notes)))
    return table


def plain(cell) -> str:
    """A table cell's text without its style (a header or cell is a str of markup or a Text)."""
    return Text.from_markup(cell).plain if isinstance(cell, str) else cell.plain


def fitted(table: Table, console: Console, keys: int = 5):
    """The table with column widths that split no number (1.14e-0 / 5 reads as another) and no word
    (digits_c / nn reads as no name): text wraps between words, the widest first. Where even that
    does not fit the console, each row is a line of its first `keys` cells (model / variant / target /
    engine / status) and an indented line of every other column's name and value: rich would cut
    the columns on the right off, and break every name into strips. Sets the table's column widths."""
    def width(cell) -> int:
        return max((cell_len(line) for line in plain(cell).splitlines()), default=0)

    def longest_word(cell) -> int:
        return max((cell_len(word) for word in plain(cell).split()), default=0)

    columns = table.columns
    natural = [max(width(cell) for cell in (column.header, *column.cells)) for column in columns]
    least = [max([longest_word(column.header), *(width(c) if column.justify == "right" else longest_word(c)
                                                  for c in column.cells)]) for column in columns]
    room = console.width - (2 if table.show_edge else 0) - (len(columns) - 1) - 2 * len(columns)  # edges, gaps, padding
    if sum(least) <= room:
        widths = natural[:]
        while sum(widths) > room:  # the column with the most to give gives a character
            k = max(range(len(widths)), key=lambda i: widths[i] - least[i])
            widths[k] -= 1
        for column, chosen in zip(columns, widths):
            column.width = chosen
        return table

    def text(cell) -> Text:
        return console.render_str(cell) if isinstance(cell, str) else cell.copy()

    lines = [Text.assemble(text(table.title), style="italic")] if table.title else []
    cells = [list(column.cells) for column in columns]
    for r in range(table.row_count):
        lines.append(Text(" / ").join(text(cells[k][r]) for k in range(min(keys, len(columns)))))
        line = None
        for k in range(keys, len(columns)):  # name and value kept on one line
            if plain(cells[k][r]).strip() in ("", "—"):
                continue
            pair = Text.assemble((plain(columns[k].header) + " ", "dim"), text(cells[k][r]))
            if line is not None and line.cell_len + 3 + pair.cell_len <= console.width - 4:
                line.append(" · ").append_text(pair)
            else:
                line = pair
                lines.append(Padding(line, (0, 0, 0, 4)))
    return Group(*lines)


def _untuned_gap(frame, untuned) -> str:
    """How far this run's untuned TVM rows are from ONNX Runtime on the same model, variant and target."""
    key = ["model", "variant", "target"]
    ort = frame[(frame["engine"] == "onnxruntime") & (frame["status"] == OK)][key + ["median_ms"]]
    pairs = untuned[untuned["status"] == OK][key + ["median_ms"]].merge(ort, on=key, suffixes=("", "_ort"))
    if pairs.empty:
        return ""
    ratios = pairs["median_ms"] / pairs["median_ms_ort"]
    if ratios.max() <= 1:
        return ""
    worst = pairs.loc[ratios.idxmax()]
    return (f" (in this run up to {ratios.max():.3g}x ONNX Runtime's latency: {worst['model']} / {worst['variant']} "
            f"on {worst['target']})")


def _tuned_beside(frame, untuned) -> tuple[str, bool]:
    """What tuning changed where this run measured a tuned build beside the untuned one (a tune
    measures both): on a tiny model a tune of few trials may find nothing faster than the defaults.
    Also whether an untuned row has no tuned build beside it."""
    key = ["model", "variant", "target"]
    ok = frame["status"] == OK
    tuned = frame[ok & frame["engine"].str.startswith("tvm") & (frame["tuned"] == True)][key + ["median_ms"]]  # noqa: E712
    pairs = untuned[untuned["status"] == OK][key + ["median_ms"]].merge(tuned, on=key, how="left", suffixes=("", "_tuned"))
    unpaired = bool(pairs["median_ms_tuned"].isna().any())
    pairs = pairs.dropna(subset=["median_ms_tuned"])
    if pairs.empty:
        return "", unpaired
    said = [f"{p.model} / {p.variant} on {p.target}: tuned {p.median_ms / p.median_ms_tuned:.3g}x the untuned speed"
            for p in pairs.itertuples()]
    slower = (pairs["median_ms_tuned"] > 1.05 * pairs["median_ms"]).any()  # past noise
    return ("; this run measured both builds (" + ", ".join(said) + ")"
            + ("; a tuned build slower than the defaults found nothing better in its trials: tune it further "
               "(more trials), or keep the untuned build" if slower else ""), unpaired)


def input_line(inputs: list[dict], seeded: bool = True) -> str:
    """A model's inputs as the rows measured them, and where seeded integer values came from (when
    the rows were fed seeded inputs, not the model's own data)."""
    parts = []
    for i in inputs:
        part = input_text(i["name"], i["dtype"], i["shape"])
        if seeded and i["dtype"] == "bool":
            part += " (seeded False or True)"
        elif seeded and not i["dtype"].startswith("float"):
            low, high = i.get("value_range") or (0, 1)
            part += (f" (seeded in [{low}, {high}], from {i.get('range_from') or 'the example'})" if i.get("value_range") else
                     f" (seeded in [{low}, {high}]: nothing gave its range; set [{toml_table('inputs', i['name'])}] range, or "
                     f"--input-range {i['name']}=LOW..HIGH)")
        parts.append(part)
    return "; ".join(parts)


def data_line(data: dict) -> str:
    """Which real samples a model's rows were fed (eval) and its variants trained on (train)."""
    parts = []
    for role, text in (("eval", "every engine is fed"), ("train", "its variants train and calibrate on")):
        if data.get(role):
            parts.append(f"{text} {data[role]['source']}, content hash {data[role]['content_hash']}")
    return "; ".join(parts)


def _footnote_numbers(rows: list[dict]) -> dict[int, int]:
    """Row index -> its reason's footnote number, counted 1, 2, 3 over the rows that have one."""
    with_reason = [i for i, r in enumerate(rows) if r["reason"]]
    return {i: n for n, i in enumerate(with_reason, start=1)}


def footnotes(frame) -> list[str]:
    """Reasons for failed rows, the notes every reader needs, and the cache summary."""
    lines = []
    rows = frame.to_dict("records")
    numbers = _footnote_numbers(rows)
    for i, r in enumerate(rows):
        if i in numbers:
            lines.append(f"[{numbers[i]}] {r['model']} / {r['engine']}: {r['reason']}")
        misses = (r["details"] or {}).get("goal_misses")
        if misses:
            lines.append(f"    {r['model']} / {r['variant']} / {r['engine']} misses goals: {'; '.join(misses)}")
    model_notes = {}
    for r in rows:
        for note in (r["details"] or {}).get("notes", []):
            model_notes.setdefault(r["model"], note)
    lines += [f"{model}: {note}" for model, note in model_notes.items()]
    model_inputs = {r["model"]: (r["details"] or {}).get("inputs") for r in rows}
    model_data: dict[str, dict] = {}  # each role from any of a model's rows (only the training variants' name train)
    for r in rows:
        model_data.setdefault(r["model"], {}).update({k: v for k, v in ((r["details"] or {}).get("data") or {}).items() if v})
    lines += [f"{model} takes {input_line(inputs, seeded=not model_data[model].get('eval'))}"
              for model, inputs in model_inputs.items() if inputs]
    lines += [f"{model}: {data_line(data)}" for model, data in model_data.items() if any(data.values())]
    references = sorted({d["max_abs_diff_reference"] for d in frame["details"] if d and d.get("max_abs_diff_reference")})
    if references:  # a variant's two columns are against two references
        lines.append(f"compression variants: max |diff| is against {' / '.join(references)} (do the engines agree?); "
                     "top-1 agree against fp32 (what did compression change?)")
    records: dict[str, dict[str, str]] = {}  # folder -> model (and variant) -> the hash of the records its build read
    for r in rows:
        if tuning := (r["details"] or {}).get("tuning_records"):
            name = r["model"] if r["variant"] == BASELINE else f"{r['model']} {r['variant']}"
            records.setdefault(tuning["dir"], {})[name] = tuning["sha256"][:16]
    lines += [f"tuning records: {path} (sha256 of those each build read: "
              + ", ".join(f"{model} {sha}" for model, sha in read.items()) + ")" for path, read in sorted(records.items())]
    untuned = frame[frame["engine"].str.startswith("tvm") & (frame["tuned"] == False)]  # noqa: E712 (pandas mask)
    if len(untuned):
        beside, unpaired = _tuned_beside(frame, untuned)
        floor = ("; the others are" if beside else ",") + (" far from what MetaSchedule tuning reaches on most models; read "
                                                          "them as a floor, not as TVM's speed")
        lines.append("UNTUNED: TVM built without tuning records uses its default kernels (on a CPU, single-threaded)"
                     + _untuned_gap(frame, untuned) + beside + (floor if unpaired or not beside else ""))
        elsewhere = {(directory, cores, r["target"]) for r in untuned.to_dict("records")
                     for directory, cores in ((r["details"] or {}).get("records_at_other_threads") or {}).items()}
        lines += [f"UNTUNED: {directory} holds records for {target} tuned at thread count {cores}, which builds for "
                  f"another thread count cannot use: measure at --threads {cores} (or [measure] threads = {cores} in the "
                  "recipe), or tune at this run's thread count"
                  for directory, cores, target in sorted(elsewhere)]
    warned = {}
    for r in rows:
        for w in (r["details"] or {}).get("tvm_warnings") or []:
            warned.setdefault((r["model"], r["variant"], r["target"], w["message"]), (w["count"], r["details"]["tvm_log"]))
    lines += [f"TVM WARNED building {model} / {variant} for {target} ({count}x): {message} (its log: {log})"
              for (model, variant, target, message), (count, log) in list(warned.items())[:WARNINGS_SHOWN]]
    if len(warned) > WARNINGS_SHOWN:
        lines.append(f"TVM WARNED {len(warned) - WARNINGS_SHOWN} more times (other messages or builds): each row's "
                     "details.tvm_warnings and tvm_log hold them")
    if any(peak_memory(r["details"]) is not None for r in rows):
        lines.append("peak MB: the peak resident memory of a process loading and running the row's artifact (TVM's "
                     "model.so, the ONNX file, PyTorch's ExportedProgram), above what its runtime holds before loading "
                     "it: weights, activations and the runtime's buffers for the model; on this host's CPU a fresh "
                     "process, on a dev kit its RPC session's (which adds that session's buffers for inputs and outputs)")
    missing: dict[str, list[str]] = {}
    for r in rows:
        reason = (r["details"] or {}).get("memory_error")
        if reason:
            missing.setdefault(reason, []).append(f"{r['model']} / {r['variant']} / {r['engine']}")
    lines += [f"peak MB not measured for {', '.join(labels)}: {reason}" for reason, labels in missing.items()]
    unsteady = [f"{r['model']} / {r['variant']} / {r['engine']} {r['details']['unsteady']:.3g}x"
                for r in rows if (r["details"] or {}).get("unsteady")]
    if unsteady:
        lines.append(f"UNSTEADY: a quarter of the samples or more are far above the fastest tenth ({', '.join(unsteady)}): "
                     "something else had the host while they ran; measure them again before reading their latency")
    for r, flag in [(r, flag) for r in rows if r["is_baseline"] for flag in timing_flags(r)]:
        lines.append(f"{flag} BASELINE: {r['model']} / {r['variant']} / {r['engine']} was timed {flag}, and every "
                     f"speed-up of {r['model']} against it moves with that: measure it again before reading them")
    crowded = [f"{r['model']} / {r['variant']} / {r['engine']} {load['cores']:.1f} of {load['of_cpus']} CPUs"
               + (f", its threads waiting {load['waited']:.2f} s a second for one" if load.get("waited") else "")
               for r in rows if busy(r) for load in [r["details"]["other_load"]]]
    if crowded:
        lines.append(f"BUSY: other processes kept the CPUs busy while rows were timed ({'; '.join(crowded)}, on average): "
                     "their threads shared cores with that work, so their latency is the shared host's, not the model's "
                     "alone; measure them again with the host quiet")
    for r in rows:
        if (r["details"] or {}).get("retried_after"):
            lines.append(f"RETRIED: {r['model']} / {r['variant']} / {r['engine']} was measured on kit {r['details']['kit']} "
                         f"after {'; '.join(r['details']['retried_after'])}")
    emulated = sorted({d["emulated"] for d in frame["details"] if d and d.get("emulated")})
    if emulated:
        lines.append(f"EMULATED: rows from a kit emulated on this host ({'; '.join(emulated)}) prove the path (cross-compile, "
                     "upload, run, outputs checked against the baseline), not the speed of real ARM hardware")
    hits = [bool(h) for h in frame["cache_hit"].dropna()]
    trained = [d["trained_model_from_cache"] for d in frame["details"] if d and "trained_model_from_cache" in d]
    if hits or trained:
        parts = [f"{sum(hits)} of {len(hits)} builds reused"] + ([f"{sum(trained)} of {len(trained)} trained models reused"] if trained else [])
        done = sum(hits) + sum(trained) == len(hits) + len(trained)
        lines.append("cache: " + ", ".join(parts) + (" (nothing rebuilt)" if done else ""))
    if any(spread_text(r) != "—" for r in rows):
        lines.append("spread: ± half the interquartile range of a row's samples, as a share of its median")
    details = [d for d in frame["details"] if d]
    prepare, measure, on_kits = (sum(d.get(k, 0) for d in details) for k in ("prepare_seconds", "measure_seconds", "kit_seconds"))
    # A kit row's job: from asking the tracker for a kit to the kit's answer (upload, load, runs, retries);
    # several run at once, one a kit, so their sum is more than the wall time they took.
    jobs = len([d for d in details if "kit_seconds" in d])
    kits = (f" on this host, {on_kits:.1f} s in {counted(jobs, 'dev kit job')}"
            + (" (added up: they ran in parallel on the kits)" if jobs > 1 else "")) if jobs else ""
    lines.append(f"time: {prepare:.1f} s preparing (import, build, load), {measure:.1f} s measuring{kits}")
    return lines


def provenance_lines(run: dict, frame) -> list[str]:
    prov = run["provenance"]
    cpu = prov["host"]["cpu"]
    versions = prov["versions"]
    local = frame[[not (d or {}).get("kit") for d in frame["details"]]]  # a kit's rows ran on its own cores
    threads = sorted({int(t) for t in local["threads"].dropna()}) or [prov.get("threads")]
    targets = {r["target"]: r["target_spec"].get("tvm") for r in frame.to_dict("records")}
    kits = {d["kit"]: kit_text(d) for d in frame["details"] if (d or {}).get("kit_info")}
    return [
        f"host {prov['host']['hostname']} · {cpu['model']} ({cpu['arch']}, {cores_text(cpu)}; "
        f"features {' '.join(cpu['features']) or 'none detected'}) · threads {threads_text(threads, cpu)} · batch "
        f"{'/'.join(map(str, sorted(set(frame['batch']))))}" + (f" · {gpu_text(prov)}" if gpu_text(prov) else ""),
        "targets " + "; ".join(f"{name} = {spec}" for name, spec in targets.items()),
        *(f"kit {line}" for line in kits.values()),
        "versions " + " · ".join(f"{k} {v}" for k, v in versions.items() if v),
        f"git {prov['git_commit']} · recipe {run['recipe_name']} ({run['recipe_hash']}) · run {run['id']} "
        f"at {time_text(run['started'])} · latencies are medians of the raw samples kept in the store",
    ]


def not_stored(frame) -> str:
    """What a table of a run whose store refused rows says first ("" where the store holds them all: a frame
    of a run's rows as measured has `stored`, RunResult.frame())."""
    if "stored" not in frame or frame["stored"].all():
        return ""
    refused = int((~frame["stored"]).sum())
    return (f"NOT STORED: {refused} of the {len(frame)} rows below {'is' if refused == 1 else 'are'} not in the results "
            "store, which refused them; the error after the table names the file that keeps them, and how to put them in")


def render_run(frame, run: dict, console: Console) -> None:
    for warning in (unfinished(run), not_stored(frame)):
        if warning:
            console.print(shown(warning, style="bold yellow"))
    console.print(fitted(run_table(frame, run), console))
    console.print(Group(*[shown(line, style="dim" if not line.startswith("[") else "") for line in footnotes(frame)]))
    compressed = compression_table(frame)
    if compressed is not None:
        console.print(fitted(compressed, console))
        console.print(Group(*[shown(line, style="bold") for line in best_variants(frame)],
                            *[shown(line, style="dim") for line in variant_notes(frame)]))
    console.print(shown("provenance", style="bold"))
    for line in provenance_lines(run, frame):
        console.print(shown("  " + line, style="dim"))


VERDICT_STYLE = {SLOWER: "bold red", BROKEN: "bold red", LESS_ACCURATE: "bold red", LARGER: "yellow", FASTER: "green",
                 SMALLER: "green", MORE_ACCURATE: "green", SAME: "dim", NEW: "cyan", NOT_APPLICABLE: "dim",
                 NOT_MEASURED: "yellow"}


def verdict_table(verdicts) -> Table:
    """One line per series: the verdict, its evidence, and what changed since the series' previous run."""
    table = Table(title="verdicts against each series' history", box=box.SIMPLE_HEAVY, title_justify="left")
    for name in ("model", "variant", "target", "engine", "verdict", "latency", "noise band", "p", "size", "accuracy", "why"):
        table.add_column(name, overflow="fold")
    for v in verdicts:
        e = v.evidence
        latency = v.latency_text("→", band=False) or "—"  # the band and p have columns here
        why = [text for text in (v.reason, v.new_setup("→"), *v.changes("→"), v.operators_text(), v.goals_text()) if text]
        table.add_row(*(shown(str(x)) for x in (v.series["model"], v.series["variant"], v.target, v.series["engine"])),
                      shown(v.verdict, style=VERDICT_STYLE.get(v.verdict, "")), shown(latency),  # it may hold a reason
                      f"±{e['noise_band']:.1%}" if "noise_band" in e else "—",
                      f"{e['p_value']:.2g}" if "p_value" in e else "—",
                      size_cell(e),
                      f"{e['accuracy_metric']} {points_text(e['accuracy_change'])}" if e.get("accuracy_change") is not None
                      else f"{e['accuracy_metric']} {e['accuracy']:.2%}" if e.get("accuracy_metric") else "—",  # a new series' own
                      shown("; ".join(map(str, why)) or "—"))
    return table
