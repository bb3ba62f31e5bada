"""Verdicts as CI reads them: a Markdown summary fit for a pull-request comment, JUnit XML, JSON
and CSV. Every user string (model names, recipe fields) is escaped for its format."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

from ..results import RUN_RECIPE
from . import gpu_text, present, size_cell, time_text, timing_flags, unfinished
from .regress import (BROKEN, FASTER, LARGER, LESS_ACCURATE, MORE_ACCURATE, NEW, NOT_APPLICABLE, NOT_MEASURED, SAME,
                      SLOWER, SMALLER, Verdict, counts)

SKIPPED = (NOT_APPLICABLE, NOT_MEASURED)  # JUnit cases that neither pass nor fail

ICON = {SLOWER: "🔴", BROKEN: "💥", LESS_ACCURATE: "🔴", LARGER: "🟠", FASTER: "🟢", SMALLER: "🟢", MORE_ACCURATE: "🟢",
        SAME: "⚪", NEW: "🆕", NOT_APPLICABLE: "➖", NOT_MEASURED: "⚠️"}


def md_escape(value) -> str:
    """Text that stays text in GitHub Markdown: no HTML, no table breaks, no emphasis."""
    text = str(value)
    for char, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "&#124;")):
        text = text.replace(char, entity)
    for char in "\\`*_[]":
        text = text.replace(char, "\\" + char)
    return text.replace("\n", " ")


def _latency_cell(v: Verdict) -> str:
    return md_escape(v.latency_text("→") or "—")  # it may hold a reason


def _why(v: Verdict) -> str:
    parts = [text for text in (v.reason, v.new_setup("→")) if text]
    if v.changed:
        parts.append("changed: " + ", ".join(v.changes("→")))
    if operators := v.operators_text():
        parts.append(operators)
    if v.goals_text():
        parts.append(v.goals_text())
    return md_escape("; ".join(parts)) or "—"


def headline(run: dict, verdicts: list[Verdict]) -> tuple[str, str, str]:
    """How every report of a run opens: its outcome (regressions, a run cut short, or neither) with its
    icon (for Markdown: a page may lack the emoji font), and the tally."""
    tally = ", ".join(f"{n} {k}" for k, n in counts(verdicts).items()) or "no rows"
    if missed := sum(bool(v.evidence.get("goal_misses")) for v in verdicts):
        tally += f"; {missed} series missed goals"
    if bad := sum(v.regression for v in verdicts):
        return "❌", f"{bad} regression{'s' * (bad > 1)} found", tally
    return ("⚠️", "unfinished run", tally) if unfinished(run) else ("✅", "no regressions", tally)


def markdown(run: dict, verdicts: list[Verdict]) -> str:
    """The nightly summary: regressions first with evidence and cause, then every verdict."""
    bad = [v for v in verdicts if v.regression]
    icon, head, tally = headline(run, verdicts)
    head = f"{icon} {head}"
    missed = any(v.evidence.get("goal_misses") for v in verdicts)
    prov = run.get("provenance") or {}
    versions = " · ".join(f"{k} {v}" for k, v in (prov.get("versions") or {}).items() if v)
    machine = ", ".join(filter(None, [run.get("cpu", ""), gpu_text(prov)]))
    lines = [f"## tvmharness: {head}", "",
             f"Run {run.get('id')} of recipe **{md_escape(run.get('recipe_name', ''))}** on "
             f"{md_escape(run.get('hostname', ''))} ({md_escape(machine)}), git `{md_escape(run.get('git_commit', ''))}`: "
             f"{tally}.", "", *([f"**{md_escape(unfinished(run))}**", ""] if unfinished(run) else [])]

    def table(rows: list[Verdict]) -> list[str]:
        out = ["| | series | verdict | latency | size | accuracy | why |", "|---|---|---|---|---|---|---|"]
        for v in rows:
            e = v.evidence
            acc = (f"{e['accuracy_metric']} {e['previous_accuracy']:.2%} → {e['accuracy']:.2%}"  # a model without labels: top-1 agreement
                   if "previous_accuracy" in e else f"{e['accuracy_metric']} {e['accuracy']:.2%}" if e.get("accuracy_metric")
                   else "—")  # (a new series: its own, nothing to compare with)
            out.append(f"| {ICON.get(v.verdict, '')} | {md_escape(v.name)} | **{v.verdict}** | {_latency_cell(v)} | "
                       f"{size_cell(e)} | {acc} | {_why(v)} |")
        return out

    if bad:
        lines += ["### Regressions", "", *table(bad), ""]
    if missed:  # not regressions, and a reviewer must see them
        lines += ["### Goals missed", "", "The recipe's `[thresholds]`: they do not fail the night.", "",
                  *(f"- {md_escape(v.name)}: {md_escape('; '.join(v.evidence['goal_misses']))}"
                    for v in verdicts if v.evidence.get("goal_misses")), ""]
    lines += ["<details><summary>All verdicts</summary>", "", *table(verdicts), "", "</details>", "",
              f"<sub>{md_escape(versions)} · latency verdicts need a Mann-Whitney U p below alpha, a 10th percentile "
              f"beyond the noise band (the minimum effect, or 3 sigma of the series' recent runs), and a second "
              f"measurement that agrees where the run has one (`nightly` takes one; for a TVM build, an A/B in turns "
              f"with the build it was compared with, a second run where it is that build, and none where only the "
              f"host's load moved: its move is the host's); a change without one says \"unconfirmed\"</sub>", ""]
    return "\n".join(lines)


def junit(run: dict, verdicts: list[Verdict]) -> str:
    """One test case per series; a regression is a failure whose message is the verdict's summary. A run
    cut short is one more case, an error: what it left unmeasured is no pass."""
    started, cut_short = run.get("started"), unfinished(run)
    suite = ET.Element("testsuite", name=f"tvmharness: {run.get('recipe_name', '')}", tests=str(len(verdicts) + bool(cut_short)),
                       failures=str(sum(v.regression for v in verdicts)), errors=str(int(bool(cut_short))),
                       skipped=str(sum(v.verdict in SKIPPED for v in verdicts)),
                       timestamp=time_text(started, "junit") if started else "",
                       hostname=str(run.get("hostname", "")))
    props = ET.SubElement(suite, "properties")
    prov = run.get("provenance") or {}
    for name, value in (("run", run.get("id")), ("git_commit", run.get("git_commit")), ("recipe_hash", run.get("recipe_hash")),
                        ("cpu", run.get("cpu")), ("os", (prov.get("host") or {}).get("os")),
                        *((f"{k}_version", v) for k, v in (prov.get("versions") or {}).items())):
        if value is not None:  # not known (tvmharness run from a checkout has no version): left out, not "None"
            ET.SubElement(props, "property", name=name, value=str(value))
    if cut_short:
        case = ET.SubElement(suite, "testcase", classname=f"{run.get('hostname', '')}.run", name=f"run {run.get('id')} finished")
        ET.SubElement(case, "error", message=cut_short, type="unfinished")
    for v in verdicts:
        s = v.series
        case = ET.SubElement(suite, "testcase", classname=f"{s['hostname']}.{v.target}.{s['model']}",
                             name=f"{s['variant']} / {s['engine']}", time=f"{(v.evidence.get('median_ms') or 0) / 1e3:.6f}")
        if v.regression:
            failure = ET.SubElement(case, "failure", message=v.summary(), type=v.verdict)
            failure.text = json.dumps(v.to_dict(), indent=2, default=str)
        elif v.verdict in SKIPPED:
            ET.SubElement(case, "skipped", message=v.summary())
        else:
            ET.SubElement(case, "system-out").text = v.summary()
    text = ET.tostring(ET.ElementTree(suite).getroot(), encoding="unicode", xml_declaration=True)
    return re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", "", text)  # control characters XML 1.0 forbids


def json_rows(frame) -> list[dict]:
    """Rows as JSON gives them (`run --json`, `report --format json`): as stored (raw samples, figures,
    goals), with their timing flags (UNSTEADY, BUSY) as the tables show them."""
    rows = frame.drop(columns=RUN_RECIPE, errors="ignore").to_dict("records")
    return [r | {"timing": timing_flags(r)} for r in rows]


def to_json(run: dict, verdicts: list[Verdict], frame) -> dict:
    """The run, its rows (json_rows) and their verdicts."""
    rows = json_rows(frame[frame["run_id"] == run["id"]])
    return {"run": run, "rows": rows, "regressions": sum(v.regression for v in verdicts), "counts": counts(verdicts),
            "verdicts": [v.to_dict() for v in verdicts]}


def _not_a_formula(value):
    """A text cell a spreadsheet would run as a formula (a model named "=1+2", a reason from a model's
    error), quoted with ' as spreadsheets read it; numbers as they are."""
    return "'" + value if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def to_csv(frame, verdicts: list[Verdict]) -> str:
    """Every row in the frame, flat (JSON columns as JSON text), with the verdict for the judged run's rows."""
    flat = frame.drop(columns=[c for c in ("run_provenance", RUN_RECIPE) if c in frame.columns]).copy()
    flat["emulated"] = frame["details"].map(lambda d: (d or {}).get("emulated") or "")  # its latency proves the path only
    # a kit's row: the kit measured it (its hostname, cpu and os columns are the host's that built it)
    details = frame["details"].map(lambda d: d or {})
    flat["kit"] = details.map(lambda d: d.get("kit") or "")
    flat["kit_key"] = details.map(lambda d: (d.get("rack") or {}).get("key") or "")
    flat["kit_hostname"] = details.map(lambda d: (d.get("kit_info") or {}).get("hostname") or "")
    flat["kit_machine"] = details.map(lambda d: (d.get("kit_info") or {}).get("machine") or "")
    flat["timing"] = [" ".join(timing_flags(r)) for r in frame.to_dict("records")]  # UNSTEADY, BUSY: the host's, not the model's
    if "run_provenance" in frame.columns:  # the run's versions and OS, and which run a confirmation re-measured (its CPU is a column)
        prov = frame["run_provenance"].map(lambda p: p or {})
        flat["confirms_run"] = prov.map(lambda p: p.get("confirms_run")).astype("Int64")  # blank, not NaN or 3.0
        flat["os"] = prov.map(lambda p: (p.get("host") or {}).get("os"))
        for name in sorted({k for p in prov for k in (p.get("versions") or {})}):
            flat[f"{name}_version"] = prov.map(lambda p, name=name: (p.get("versions") or {}).get(name))
    by_key = {(v.run_id, *v.series.values()): v for v in verdicts}
    keys = zip(flat["run_id"], flat["hostname"], flat["target"], flat["model"], flat["variant"], flat["engine"])
    found = [by_key.get(k) for k in keys]
    flat["verdict"] = [v.verdict if v else "" for v in found]
    flat["verdict_summary"] = [v.summary() if v else "" for v in found]
    for col in flat.columns:
        if flat[col].map(lambda x: isinstance(x, (dict, list))).any():
            flat[col] = flat[col].map(lambda x: json.dumps(x) if isinstance(x, (dict, list)) else x)
        flat[col] = flat[col].map(_not_a_formula)
    for col in ("threads", "batch"):  # counts, not 1.0 (a missing one made pandas read the column as floats)
        if col in flat.columns:
            flat[col] = flat[col].astype("Int64")
    for col in ("created", "run_started"):  # times as every report gives them: ISO 8601 with the offset
        if col in flat.columns:
            flat[col] = flat[col].map(lambda t: time_text(t, "iso") if present(t) else "")
    return flat.to_csv(index=False)

