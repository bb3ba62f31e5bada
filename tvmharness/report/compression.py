"""The compression part of a run's report: each variant against fp32 on the same target and engine
(speed-up, size, accuracy or top-1 agreement), what it is made of (parameters, FLOPs, sparsity, compressed size),
pass/fail against the recipe's goals, and the best passing variant per model and target."""

from __future__ import annotations

from rich import box
from rich.table import Table

from ..results import BASELINE, DROPS, NOT_APPLICABLE, OK, variant_drop
from . import baseline_label, ms_text, number_text, points_text, present, shown, size_text, target_text, timing_flags


def _variant_rows(frame) -> list[dict]:
    return [r for r in frame.to_dict("records") if r["variant"] != BASELINE]


def _target(row: dict) -> str:
    return target_text(row["target"], (row["details"] or {}).get("emulated"))


COLUMNS = [("model", "left"), ("variant", "left"), ("target", "left"), ("engine", "left"), ("goals", "left"),
           ("speed-up vs fp32", "right"), ("size vs fp32", "right"), ("change vs fp32", "right"), ("params", "right"),
           ("MFLOPs", "right"), ("sparsity", "right"), ("compressed", "right")]
PASS, FAIL, NO_GOALS = "pass", "fail", "no goals"  # a measured variant's goals cell; another row's holds its status
GOALS_STYLE = {PASS: "green", FAIL: "yellow", NO_GOALS: "", NOT_APPLICABLE: "dim"}  # another status: red


DROP_SHORT = {"accuracy_drop": "accuracy", "top1_disagreement": "top-1"}  # the table's cells


APART = " *"  # a speed-up over fp32 from two rows timed apart, not in turns


def _apart(details: dict) -> bool:
    """A speed-up over fp32 from the two rows' own windows (a kit's row, an older row, or timing in turns
    that failed): the host's load between them moves it."""
    return present(details.get("speedup_vs_fp32")) and not details.get("fp32_in_turns")


def compression_rows(frame) -> list[list[str]]:
    """Each variant against fp32 on the same target and engine, as the cells of COLUMNS."""
    cells = []
    for r in _variant_rows(frame):
        d = r["details"] or {}
        if r["status"] != OK:
            goals = r["status"]
        else:
            goals = (PASS if r["meets_goals"] else FAIL) if present(r["meets_goals"]) else NO_GOALS
        drop = variant_drop(d)
        speedup = number_text(d.get("speedup_vs_fp32"), ".2f", "x") + (APART if _apart(d) else "")
        cells.append([r["model"], r["variant"], _target(r), r["engine"], goals,
                      speedup, number_text(d.get("size_ratio"), ".2f", "x"),
                      # a change, signed as verdicts' are (0.0 - x: never "-0.0")
                      f"{points_text(0.0 - drop[1])} {DROP_SHORT[drop[0]]}" if drop else "—",
                      number_text(d.get("params"), ","), number_text(d["flops"] / 1e6 if present(d.get("flops")) else None, ".2f"),
                      number_text(d.get("sparsity"), ".0%"), size_text(d.get("compressed_bytes"))])
    return cells


def compression_table(frame) -> Table | None:
    rows = compression_rows(frame)
    if not rows:
        return None
    table = Table(title="compression: each variant against fp32 on the same target and engine", box=box.SIMPLE_HEAVY,
                  title_justify="left")
    for name, justify in COLUMNS:
        table.add_column(name, justify=justify, overflow="fold")
    for cells in rows:
        table.add_row(*map(shown, cells[:4]), shown(cells[4], style=GOALS_STYLE.get(cells[4], "red")), *cells[5:])  # text, not markup
    return table


GAIN = 0.05  # what a variant must gain on fp32 (on its engine) to be worth shipping: less is within noise
ALPHA = 0.01  # and, timed in turns with fp32, how surely its turns say it is faster


def _gains(row: dict) -> bool:
    """Whether the variant is faster or smaller than fp32 on its engine by GAIN (faster: in turns with
    fp32, at p < ALPHA too, where that was measured), or, where that fp32 row is missing, not known to be
    neither."""
    d = row["details"] or {}
    speedup, size = d.get("speedup_vs_fp32"), d.get("size_ratio")
    if not present(speedup) and not present(size):
        return True
    p_value = (d.get("fp32_in_turns") or {}).get("p_value", 0.0)  # (none where it was not timed in turns)
    faster = present(speedup) and speedup >= 1 + GAIN and p_value is not None and p_value < ALPHA
    return faster or (present(size) and size <= 1 - GAIN)


def _why_unchanged(row: dict) -> str | None:
    """Why a variant is the fp32 model under another name (no step changed it: an int8 that quantized
    no operator, a fine-tune with nothing to learn), or None."""
    d = row["details"] or {}
    if not d.get("same_as_fp32"):
        return None
    return "int8 quantized no operator" if "quantized_ops" in d else "no step changed the model"


def best_variants(frame) -> list[str]:
    """Per model and target: of the variants that pass the goals, gain on fp32 and changed the model,
    the one with the lowest latency, on whichever engine."""
    lines = []
    rows, every = _variant_rows(frame), frame.to_dict("records")
    for model, target in sorted({(r["model"], _target(r)) for r in rows}):
        passing = [r for r in rows if r["model"] == model and _target(r) == target and r["status"] == OK
                   and r["meets_goals"] is True]
        if not passing:
            lines.append(f"best variant of {model} on {target}: none passes the goals")
            continue
        # A variant that changed nothing is no compression, whatever its timing's noise gives it
        unchanged = {r["variant"]: why for r in passing if (why := _why_unchanged(r))}
        left_out = ("; left out, being the fp32 model under another name: "
                    + ", ".join(f"{v} ({why})" for v, why in unchanged.items())) if unchanged else ""
        if not (passing := [r for r in passing if r["variant"] not in unchanged]):
            lines.append(f"best variant of {model} on {target}: none that passes the goals compresses it{left_out}")
            continue
        if not (passing := [r for r in passing if _gains(r)]):
            lines.append(f"best variant of {model} on {target}: none that passes the goals is {GAIN:.0%} faster or smaller "
                         f"than fp32 on its own engine (fp32 does as well){left_out}")
            continue
        best = min(passing, key=lambda r: r["median_ms"])
        d = best["details"] or {}
        baseline = baseline_label([r for r in every if r["model"] == model])
        figures = [ms_text(best['median_ms'], " ms"), f"{best['speedup_vs_baseline']:.2f}x {baseline}"]
        if present(d.get("speedup_vs_fp32")):
            figures.append(f"{d['speedup_vs_fp32']:.2f}x fp32 {best['engine']}")
        if present(d.get("size_ratio")):
            figures.append(f"size {d['size_ratio']:.2f}x")
        if not present(d.get("speedup_vs_fp32")) and not present(d.get("size_ratio")):  # what it gains is not known
            fp32 = any(r["model"] == model and _target(r) == target and r["engine"] == best["engine"]
                       and r["variant"] == BASELINE for r in every)
            figures.append(f"not compared with fp32 on {best['engine']}" + ("" if fp32 else ": no such row (list fp32 "
                                                                                          "among the variants)"))
        if drop := variant_drop(d):
            figures.append(f"{DROPS[drop[0]]} {points_text(drop[1])}")
        shaky = timing_flags(best)
        lines.append(f"best variant of {model} on {target}: {best['variant']} on {best['engine']} ({', '.join(figures)})"
                     + (f"; it was timed {' and '.join(shaky)}: measure again before choosing it" if shaky else "")
                     + left_out)
    return lines


def variant_notes(frame) -> list[str]:
    """What each variant did (the notes its techniques left), once per model and variant."""
    lines, seen = [], set()
    own = {r["model"]: len((r["details"] or {}).get("notes", [])) for r in frame.to_dict("records") if r["is_baseline"]}
    for r in _variant_rows(frame):
        key = (r["model"], r["variant"])
        notes = (r["details"] or {}).get("notes", [])[own.get(r["model"], 1):]  # after the model's own notes
        if key in seen or not notes:
            continue
        seen.add(key)
        lines.append(f"{r['model']} / {r['variant']}: " + "; ".join(notes))
    variants = _variant_rows(frame)
    if variants:  # (its ratio may disagree with the rows' medians, each timed in a window of its own, under other load)
        apart = any(_apart(r["details"] or {}) for r in variants)
        lines.append("speed-up vs fp32: each variant is timed again in turns with fp32 on its engine, so that the host's "
                     "load falls on both alike, not from the two rows' medians in the tables above, each timed on its own"
                     + (f";{APART} marks one from the two rows' own windows (a dev kit's row, an older release's, or one "
                        "whose timing in turns failed: its details.fp32_in_turns_error), which a change of the host's load "
                        "between them moves" if apart else ""))
    return lines
