"""Regression verdicts: each row of a run against the history of its series (host x target x model
x variant x engine), the runs measured the same way (setup_of), read only from the store.

Latency is noisy, so a verdict needs two things at once:
  1. the run's raw samples and the reference's (the samples of a majority of the series' last
     three runs, 2 of 3: those whose levels are nearest the reference level, so that one odd
     night or a step among them mixes no other build's samples in) differ by a two-sided
     Mann-Whitney U test at p < alpha; and
  2. the run's fast-mode latency (the 10th percentile of its samples) is off the reference level
     (the median of the last three runs' 10th percentiles: one odd night does not move it, and
     after a step the step's own runs form it from its third night, so an old step is not flagged
     again) by more than the noise band: `min_effect`, or three times the series' night-to-night
     sigma over its last `window` runs where that is larger.
  Why the 10th percentile: a shared host runs a model in load modes ~15% apart that last seconds;
  interference only adds time, so the low quantile of samples spread over seconds (`[measure]
  span_s`) tracks the build, while the median tracks how long the host was busy that night.
  A series with fewer than `min_history` earlier runs (or than SIGMA_RUNS) has not shown its spread yet: its changes
  must also exceed the wide `unknown_noise_band`. A night spent wholly in the slow mode still
  looks like a ~15% step, and a slow spell of the host can last minutes, so `tvmharness nightly`
  measures again before it calls latency slower or faster, and keeps the verdict only when the
  second measurement agrees (`confirm`). For a TVM build that second measurement is an A/B: the
  build and the one it was compared with, timed in turns in one process (`ab_latency_verdict`),
  so the host's load falls on both alike and only a change of the build remains. A build that is the
  reference level's own (same_build), timed on this host with nothing else changed but its load, has
  nothing to confirm: its move is the host's, "same" (with another change, a second run confirms it).
Size, memory and accuracy are deterministic: any change past the recipe's thresholds counts, each
against the last run that has the figure. Every verdict carries its evidence, what changed in
provenance against the reference runs, and for latency the operators that moved most (from the
stored per-operator profiles).
"""

from __future__ import annotations

import collections
import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from ..data import input_text
from ..recipe import Regression
from ..results import BASELINE, LOAD_FAILED, NOT_APPLICABLE, OK, RUN_RECIPE, plain, same_build
from . import busy, ms_text, peak_memory, points_text, present, target_text, time_text

SERIES = ("hostname", "target", "model", "variant", "engine")

# Verdicts, worst first: a row's verdict is the worst of its latency, size, memory and accuracy aspects.
BROKEN, LESS_ACCURATE, SLOWER, LARGER = "broken", "less accurate", "slower", "larger"
FASTER, SMALLER, MORE_ACCURATE, SAME, NEW = "faster", "smaller", "more accurate", "same", "new"
NOT_MEASURED = "not measured"  # a series the run before measured and this one did not: said, not judged
ORDER = (BROKEN, LESS_ACCURATE, SLOWER, LARGER, FASTER, SMALLER, MORE_ACCURATE, NEW, SAME, NOT_APPLICABLE, NOT_MEASURED)
REGRESSIONS = {BROKEN, LESS_ACCURATE, SLOWER, LARGER}
TOP_OPERATORS = 5
HOST_LOAD = "host while timing"  # quiet or busy (other_load): a why, never a step
MEMORY_FLOOR_MB = 1.0  # a peak-memory move smaller than this is the probe's own noise, whatever its share


def change_text(change: dict, arrow: str = "->") -> str:
    """A change of provenance or setup ({"what", "before", "after"}): "threads 1 -> 2"."""
    before, after = ("unset" if v is None else v for v in (change["before"], change["after"]))  # a recipe key added
    return f"{change['what']} {before} {arrow} {after}"


@dataclass
class Verdict:
    series: dict
    verdict: str
    aspects: dict  # latency / size / memory / accuracy -> verdict of that aspect
    run_id: int
    previous_run_id: int | None
    evidence: dict  # effect, noise band, p-value, history size, medians, size and accuracy changes
    changed: list[dict] = field(default_factory=list)  # provenance that differs from the reference runs
    operators: list[dict] = field(default_factory=list)  # per-operator profile diff, largest moves first
    reason: str = ""  # why a row is broken or not applicable
    provenance: dict = field(default_factory=dict)  # this run's: git, versions, host, target, tuning records
    setup: dict = field(default_factory=dict)  # how it was measured (setup_of): another setup, another history

    @property
    def regression(self) -> bool:
        return self.verdict in REGRESSIONS

    @property
    def name(self) -> str:
        s = self.series
        return f"{s['model']} / {s['variant']} / {self.target} / {s['engine']} @ {s['hostname']}"

    @property
    def target(self) -> str:
        """The series' target, marked where an emulated kit measured the row (its setup says so, from the row's details)."""
        return target_text(self.series["target"], self.setup.get("dev kit") == "emulated")

    def new_setup(self, arrow: str = "->") -> str:
        """Why a series measured before is new: the setup that changed, or the host's name ("" where neither)."""
        e = self.evidence
        if e.get("other_hosts"):  # a CI runner's hostname changes from run to run
            return (f"new on host {self.series['hostname']}: this store has it from {', '.join(e['other_hosts'])} "
                    "(TVMHARNESS_HOST gives a host a lasting name)")
        if not e.get("setup_changed"):
            return ""
        moved = "; ".join(change_text(c, arrow) for c in e["setup_changed"])
        return f"new setup ({moved}; run {e['setup_run_id']} was the last measured the old way)"

    def changes(self, arrow: str = "->") -> list[str]:
        """What changed against the reference runs, and since which run where it came before tonight."""
        return [change_text(c, arrow) + (f" (since run {c['run']})" if c.get("run") else "") for c in self.changed]

    def summary(self) -> str:
        """One line a person reads first: what, by how much, with what confidence, and why."""
        e = self.evidence
        if self.verdict in (BROKEN, NOT_APPLICABLE, NOT_MEASURED):  # a broken row's changes may be why (a tolerance)
            return f"{self.verdict}: {self.reason}" + ("; changed: " + "; ".join(self.changes()) if self.changed else "")
        missed = f"; {self.goals_text()}" if self.goals_text() else ""
        if self.verdict == NEW and not set(self.aspects) - {"status", "latency"}:  # nothing of it judged
            scored = f"; {e['accuracy_metric']} {e['accuracy']:.2%}" if e.get("accuracy_metric") else ""
            if self.new_setup():
                return f"{self.new_setup()}: nothing measured this way to compare with{scored}{missed}"
            return f"new series: nothing earlier to compare with{scored}{missed}"
        parts = []
        if latency := self.latency_text():
            parts.append(f"latency {latency}")
        elif self.aspects.get("latency") == NEW:  # timed another way: its size, memory and accuracy are judged
            parts.append(f"latency: {self.new_setup()}: nothing timed this way to compare with")
        if e.get("size_change"):
            parts.append(f"size {e['size_change']:+.1%}")
        if e.get("memory_change"):
            parts.append(f"peak memory {e['memory_change']:+.1%} ({e['previous_peak_mb']:.1f} -> {e['peak_mb']:.1f} MB)")
        if e.get("accuracy_change"):  # a top-1 agreement of seeded inputs: of how few (one of 4 is 25 points)
            inputs = f" of {e['accuracy_inputs']} inputs" if e.get("accuracy_inputs") and e["accuracy_metric"] != "accuracy" else ""
            parts.append(f"{e['accuracy_metric']}{inputs} {points_text(e['accuracy_change'])}")
        elif e.get("accuracy_data_changed"):  # (True from an older release)
            measured = e["accuracy_data_changed"]
            measured = measured if isinstance(measured, str) else "accuracy on other held-out samples than before"
            parts.append(f"{measured}, nothing scored on these to compare with")
        if self.changed:
            parts.append("changed: " + "; ".join(self.changes()))
        if operators := self.operators_text():
            parts.append(operators)
        if self.goals_text():
            parts.append(self.goals_text())
        return f"{self.verdict}: " + "; ".join(parts)

    def goals_text(self) -> str:
        """The recipe's goals ([thresholds]) its row missed, as every report says them ("" where none)."""
        misses = self.evidence.get("goal_misses")
        return f"goals missed: {'; '.join(misses)}" if misses else ""

    def latency_text(self, arrow: str = "->", band: bool = True) -> str | None:
        """The latency move with its evidence (`band`: its noise band and p, which a table may show in
        columns of their own), what it was compared with and whether a second measurement agreed."""
        e = self.evidence
        if e.get("latency_ratio") is None:
            return None
        figures = [f"{e['latency_change']:+.1%}"]
        if band:
            figures += [f"noise band ±{e['noise_band']:.1%}", f"p={e['p_value']:.2g}"]
        figures.append(reference_runs(e))
        return (f"{e['statistic']} {ms_text(e['reference_ms'])} {arrow} {ms_text(e['latency_ms'])} ms "
                f"({', '.join(figures)}{confirmation(e)})")

    def operators_text(self) -> str | None:
        """The operators whose time moved most, where latency moved, against the run at the reference level."""
        if not self.operators or self.aspects.get("latency") not in (SLOWER, FASTER):
            return None
        against = f" vs run {self.evidence['operators_run_id']}" if self.evidence.get("operators_run_id") is not None else ""
        return f"operators{against}: " + ", ".join(f"{o['operator']} {o['delta_ms']:+.3g} ms" for o in self.operators[:3])

    def to_dict(self) -> dict:
        return asdict(self) | {"name": self.name, "regression": self.regression, "summary": self.summary()}


SIGMA_RUNS = 4  # the runs a series' night-to-night sigma needs: three differences


def night_sigma(medians: list[float], steps: list[bool] | None = None) -> float | None:
    """Night-to-night relative noise of a series (evidence for the reader): the robust sigma (MAD) of
    successive differences of its log medians, over sqrt 2; a step in the history moves one difference.
    `steps[i]`: night i was measured of another build or model than night i - 1 (provenance_steps):
    the difference into it is a change the report named, not noise, and is left out (a few such steps
    in a window would widen the band until the series could not show a regression)."""
    diffs = np.diff(np.log(np.asarray(medians, dtype=np.float64)))
    calm = ~np.asarray(steps[1:], dtype=bool) if steps is not None else np.ones(len(diffs), dtype=bool)
    if np.count_nonzero(calm) >= 3:  # else nearly every night is a step (a new build each night): that is its noise
        diffs = diffs[calm]
    if len(diffs) < SIGMA_RUNS - 1:  # from two differences a step cannot be told from noise
        return None
    from scipy.stats import median_abs_deviation

    return float(median_abs_deviation(diffs, scale="normal") / math.sqrt(2))


LOW_QUANTILE = 10  # percent: the latency the verdicts compare (see the module's docstring)
RECENT_RUNS = 3  # the runs whose median level is the reference


def fast_latency(samples: list[float]) -> float:
    return float(np.percentile(np.asarray(samples, dtype=np.float64), LOW_QUANTILE))


def latency_verdict(samples: list[float], history: list[list[float]], rules: Regression,
                    run_ids: list[int] | None = None, steps: list[bool] | None = None) -> tuple[str, dict]:
    """Compare a run's samples with the series' earlier runs (oldest first; `run_ids`, theirs; `steps`,
    which were measured of another build than the one before: see night_sigma): the verdict and its
    evidence, which names the earlier run at the reference level (`level_run_id`)."""
    from scipy.stats import mannwhitneyu

    window = history[-rules.window:]
    levels = [fast_latency(h) for h in window]
    reference_ms, latency_ms = float(np.median(levels[-RECENT_RUNS:])), fast_latency(samples)
    # The samples of the recent runs nearest the reference level, a majority of them: a window reaching
    # back past an earlier step would mix two builds' samples, and so would last night's step among
    # tonight's reference runs, which would hide the step from the test the night after it came.
    recent = range(len(window))[-RECENT_RUNS:]
    # nearest first; of two as near (the reference of two runs is their midpoint), the later
    nearest = sorted(recent, key=lambda i: (round(abs(levels[i] - reference_ms) / reference_ms, 9), -i))[:len(recent) // 2 + 1]
    reference = np.concatenate([np.asarray(window[i], dtype=np.float64) for i in sorted(nearest)])
    current = np.asarray(samples, dtype=np.float64)
    ratio = latency_ms / reference_ms
    sigma = night_sigma(levels, steps[-len(window):] if steps is not None else None)
    band = max(rules.min_effect, 3 * sigma if sigma is not None else 0.0)
    short = len(history) < max(rules.min_history, SIGMA_RUNS)  # its noise not shown yet (a min_history of 2 or 3 too)
    if short:
        band = max(band, rules.unknown_noise_band)
    p_value = float(mannwhitneyu(current, reference, alternative="two-sided").pvalue)
    evidence = {"statistic": f"p{LOW_QUANTILE}", "latency_ms": latency_ms, "reference_ms": reference_ms,
                "median_ms": float(np.median(current)), "latency_ratio": ratio, "latency_change": ratio - 1,
                "noise_band": band, "night_sigma": sigma, "p_value": p_value, "alpha": rules.alpha,
                "reference_runs": len(window), "history_runs": len(history), "samples": len(current),
                "reference_samples": len(reference)}
    if run_ids:
        evidence["level_run_id"] = run_ids[-len(window):][nearest[0]]
    if p_value < rules.alpha and ratio > 1 + band:
        return SLOWER, evidence
    if p_value < rules.alpha and ratio * (1 + band) < 1:
        return FASTER, evidence
    return SAME, evidence


def ab_latency_verdict(samples: list[float], reference: list[float], rules: Regression, reference_run: int) -> tuple[str, dict]:
    """A build against the build of run `reference_run`, their samples taken in turns in one
    window (measure.time_interleaved): the 10th percentiles compared, the pairs by a Wilcoxon
    signed-rank test. No night-to-night noise enters such a comparison, so its band is min_effect."""
    from scipy.stats import wilcoxon

    current, before = np.asarray(samples, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    latency_ms, reference_ms = fast_latency(samples), fast_latency(reference)
    ratio = latency_ms / reference_ms
    paired = np.log(current) - np.log(before)
    p_value = float(wilcoxon(paired).pvalue) if np.any(paired) else 1.0
    evidence = {"statistic": f"p{LOW_QUANTILE}", "latency_ms": latency_ms, "reference_ms": reference_ms,
                "median_ms": float(np.median(current)), "latency_ratio": ratio, "latency_change": ratio - 1,
                "noise_band": rules.min_effect, "p_value": p_value, "alpha": rules.alpha, "samples": len(current),
                "reference_samples": len(before), "ab_reference_run": reference_run}
    if p_value < rules.alpha and ratio > 1 + rules.min_effect:
        return SLOWER, evidence
    if p_value < rules.alpha and ratio * (1 + rules.min_effect) < 1:
        return FASTER, evidence
    return SAME, evidence


def reference_runs(evidence: dict) -> str:
    """What a latency was compared with: the runs whose level is the reference, out of the series'
    earlier runs (the noise band's sigma reaches further back), or the build of an A/B."""
    if "ab_reference_run" in evidence:
        return f"A/B in turns with run {evidence['ab_reference_run']}'s build"
    n, level = evidence["history_runs"], min(RECENT_RUNS, evidence["reference_runs"])
    return f"reference: last {level} of {n} earlier runs" if level < n else f"reference: {n} earlier run{'s' if n > 1 else ''}"


def confirmation(evidence: dict) -> str:
    """What the second measurement of a latency change said, or that none was taken."""
    if "confirmed" not in evidence:
        return ""
    if evidence.get("same_build_run_id") is not None:
        return f"; not confirmed: {evidence['confirmation']}, so the move is the host's, not the model's"
    if evidence["confirmed"] is None:
        return f"; unconfirmed: {evidence.get('unconfirmed_why') or 'no second measurement (`nightly` takes one)'}"
    change, p, band = (evidence.get(k) for k in ("confirmation_change", "confirmation_p_value", "confirmation_noise_band"))
    figures = [f"{change:+.1%}"] if change is not None else []
    if not evidence["confirmed"]:  # why not: a change as large may still be within chance, or within its band
        if p is not None and evidence.get("alpha") is not None and p >= evidence["alpha"]:
            figures.append(f"p {p:.2g}, not under {evidence['alpha']:.2g}")
        elif change is not None and band is not None and abs(change) <= band:
            figures.append(f"within ±{band:.1%}")
    return (f"; {'confirmed' if evidence['confirmed'] else 'not confirmed'} by {evidence['confirmation']}"
            + (f" ({', '.join(figures)})" if figures else ""))


def _only_load_moved(level: dict, row: dict, verdict: Verdict) -> bool:
    """Whether nothing but the host's load differs between the reference level's row and tonight's (the harness's
    commit, the recipe's timing, the OS or a library could move the time of one build), on this host's CPU (a
    dev kit's runtime and board are not in its build key)."""
    if (row.get("target_spec") or {}).get("runs_on") != "local":
        return False
    before, after = row_provenance(level), verdict.provenance
    return all(before.get(k) == after.get(k) for k in {*before, *after} - {HOST_LOAD})


def needs_confirmation(verdict: Verdict) -> bool:
    return verdict.aspects.get("latency") in (SLOWER, FASTER)


def confirm(first: Verdict, second: Verdict | None, missing_why: str | None = None) -> Verdict:
    """A latency change stands only when a second measurement of the series moves the same way
    (judged against the same history, or an A/B against the build it was compared with);
    otherwise that aspect is "same" and the evidence says why. Where there is no second measurement
    taken as the first was (none, a failed one, another setup), the change stands, "unconfirmed"
    (`missing_why`: why there is none, where the caller knows: the second measurement was interrupted)."""
    if not needs_confirmation(first):
        return first
    other_way = setup_changes(first.setup, second.setup) if second is not None else []
    if second is None or other_way or "latency" not in second.aspects:
        why = ((missing_why or "it was not measured again (see the nightly's log)") if second is None
               else "its second measurement was taken another way ("
               + "; ".join(map(change_text, other_way)) + ")" if other_way
               else "its second measurement failed" if second.verdict == BROKEN
               else "its second measurement has no latency")
        return replace(first, evidence=first.evidence | {"confirmed": None, "unconfirmed_why": why})
    agreed = second.aspects["latency"] == first.aspects["latency"]
    ab_run = second.evidence.get("ab_reference_run")
    evidence = first.evidence | {"confirmed": agreed, "confirmation_run_id": second.run_id,
                                 "confirmation": (f"an A/B in turns with run {ab_run}'s build" if ab_run is not None
                                                  else "a second run"),
                                 "confirmation_change": second.evidence.get("latency_change"),
                                 "confirmation_p_value": second.evidence.get("p_value"),
                                 "confirmation_noise_band": second.evidence.get("noise_band")}
    aspects = first.aspects if agreed else first.aspects | {"latency": SAME}
    return replace(first, aspects=aspects, evidence=evidence, verdict=min(aspects.values(), key=ORDER.index))


_UNNAMED = object()


def _eval_data_hash(row: dict):
    """The content hash of the held-out samples a row was fed (None: seeded inputs); _UNNAMED for a row
    of an older release, which does not say."""
    data = (row.get("details") or {}).get("data")
    if not isinstance(data, dict) or "eval" not in data:
        return _UNNAMED
    return (data["eval"] or {}).get("content_hash")


def _inputs_checked(row: dict):
    """How many inputs a row's outputs were checked on (`[measure] agreement_samples` of seeded ones):
    a top-1 agreement of 2 in 4 is no less than one of 9 in 16; _UNNAMED for a row of an older release."""
    count = (row.get("details") or {}).get("inputs_checked")
    return count if isinstance(count, int) else _UNNAMED


def _same_samples(row: dict, other: dict) -> bool:
    """Whether two rows' accuracy figures are scores on the same samples (what a row of an older release
    does not say is taken as the same)."""
    return all(_UNNAMED in (f(row), f(other)) or f(row) == f(other) for f in (_eval_data_hash, _inputs_checked))


def accuracy_metric(row: dict) -> tuple[str, float | None]:
    if present(row.get("accuracy")):
        return "accuracy", float(row["accuracy"])
    if present(row.get("top1_agreement")):
        return "top-1 agreement", float(row["top1_agreement"])
    return "accuracy", None


def _flatten(prefix: str, value, out: dict) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def setup_of(row: dict) -> dict:
    """How a row was measured beyond its series key. Runs of another setup are another history (a
    quickstart's 2 threads against a nightly's 1, a resnet at 160x160, an emulated kit standing in for
    the board, another CPU under one host label, samples spread over 8 s of running against samples
    back to back): never compared, so never a false step. None: not recorded (an older row), matches any."""
    details = row.get("details") or {}
    inputs = details.get("inputs")
    span = details.get("span_s")
    if span is None and present(row.get("median_ms")):  # added by an older writer after the store's upgrade: its
        span = ((row.get(RUN_RECIPE) or {}).get("measure") or {}).get("span_s", 0.0)  # run's recipe says, as 0004 does
    return {"cpu": row.get("cpu") or None, "threads": plain(row.get("threads")),
            "inputs": ", ".join(input_text(i["name"], i["dtype"], i["shape"]) for i in inputs) if inputs else None,
            "dev kit": ("emulated" if details.get("emulated") else "native") if details.get("kit") else None,
            "samples spread over": f"{span:g} s" if span is not None else None}


LATENCY_ONLY = ("samples spread over",)  # setup keys that move latency alone: size, memory, accuracy keep their history


def setup_changes(before: dict, after: dict) -> list[dict]:
    return [{"what": k, "before": before[k], "after": after[k]} for k in after
            if before.get(k) is not None and after[k] is not None and before[k] != after[k]]


RECIPE_CAUSES = ("measure",)  # the recipe's tables a row's provenance names by their settings ([thresholds] only sets goals)
NOT_RECIPE_CAUSES = {("measure", "threads"), ("measure", "batch"),  # keys of their own
                     ("measure", "memory")}  # measured in a process of its own: the latency is the same


def row_provenance(row: dict) -> dict:
    """What a number depends on outside its series key, flattened: what verdicts diff between runs."""
    prov = row.get("run_provenance") or {}
    details = row.get("details") or {}
    tuning = details.get("tuning_records") or {}
    tvm = str(row.get("engine", "")).startswith("tvm")
    out = {
        "git commit": row.get("git_commit"),
        "engine version": row.get("engine_version"),
        "tuning records": (tuning.get("sha256") or "")[:16] or "none",
        "threads": plain(row.get("threads")),
        "batch": plain(row.get("batch")) if row.get("status") != LOAD_FAILED else None,  # a model never loaded: unknown
        # the TVM target a build was made for: PyTorch and ONNX Runtime rows do not depend on it
        "target": (row.get("target_spec") or {}).get("tvm") if tvm else None,
        "cpu": row.get("cpu"),  # the run's CPU model (Store.frame() has it from the run)
        "usable cores": ((prov.get("host") or {}).get("cpu") or {}).get("usable_cores"),
        "os": (prov.get("host") or {}).get("os"),
    }
    if details.get("model_digest"):  # the model's weights and graph (a user's file edited in place)
        out["model"] = details["model_digest"][:16]
    if tvm and details.get("build_key"):  # a row that never built knows nothing of its tuning
        out["tuned tasks"] = (f"{tuning.get('tasks_tuned')}/{tuning.get('tasks')} ({tuning.get('trials')} trials)"
                              if tuning else "untuned")
    for role, data in (details.get("data") or {}).items():  # the samples fed and trained on, by content
        out[f"{role} data"] = f"{data['source']} ({data['content_hash']})" if data else "seeded"
    # What of the recipe moves a row's figures beyond its series, its setup and the keys above: how it
    # is timed and checked, and how a TVM build imports the model. Its lists (models, variants...)
    # name series, [tune] shows in the tuning records, [regression] only judges.
    recipe = row.get(RUN_RECIPE) or {}
    for section in RECIPE_CAUSES:
        for key, value in (recipe.get(section) or {}).items():
            if (section, key) not in NOT_RECIPE_CAUSES:
                out[f"recipe {section}.{key}"] = value
    if tvm and recipe.get("frontend"):
        out["recipe frontend"] = recipe["frontend"]
    ranges = [f"{i['name']} {i['value_range'][0]}..{i['value_range'][1]}" for i in details.get("inputs") or [] if i.get("value_range")]
    if ranges:  # integer inputs' values (token ids): their sizes are the setup's
        out["input ranges"] = ", ".join(ranges)
    for key in ("compression", "variant_config"):
        if details.get(key) is not None:
            _flatten(key, details[key], out)
    if details.get("other_load"):  # whether other work shared its CPUs: a why, not a change of build
        out[HOST_LOAD] = "busy" if busy(row) else "quiet"
    if details.get("kit"):  # measured on a dev kit: which one, and what it runs
        out["dev kit"] = details["kit"]
        _flatten("dev kit", details.get("kit_info") or {}, out)
    for name, version in (prov.get("versions") or {}).items():
        out[name] = version
    # Flat values, compared and printed as they are: a structure (a TVM target) as JSON text, which any reader parses.
    return {k: (v if isinstance(v, (str, int, float, bool)) or v is None else json.dumps(v, sort_keys=True, default=str))
            for k, v in out.items()}


# Keys a row may lack by design, so that their absence tonight is no change: a recipe's hash (named by its
# settings since) and the training data (named only where a variant trains on it)
NOT_SAID_WHEN_GONE = ("recipe", "train data")


def provenance_changes(references: list[tuple[int, dict]], after: dict, known_only: bool = False) -> list[dict]:
    """What differs from the reference runs ((run id, row_provenance), oldest first): each key whose
    value tonight is not that of every reference run, with the value before the latest stretch of
    tonight's value and, where that stretch began before tonight, its first run ("run"). A key no
    reference run has is one an older release did not record (the model's digest, the data fed):
    unknown then, not changed; a key tonight's row lacks is "none" tonight, unless it is one a row
    lacks by design (NOT_SAID_WHEN_GONE).
    `known_only`: only the keys tonight's row knows (a row that failed before measuring has no engine
    version nor tuning records: unknown, not changed)."""
    changed = []
    keys = dict.fromkeys(k for _, prov in references for k in prov if k in after or k not in NOT_SAID_WHEN_GONE)
    for what in (k for k in keys if not known_only or after.get(k) not in (None, "", "none")):
        recorded = [(run, prov[what]) for run, prov in references if what in prov]  # the runs that knew it
        now = after.get(what, "none")
        start = len(recorded)
        while start and recorded[start - 1][1] == now:
            start -= 1
        if start:
            change = {"what": what, "before": recorded[start - 1][1], "after": now}
            if start < len(recorded):
                change["run"] = recorded[start][0]
            changed.append(change)
    if after.get(HOST_LOAD) == "busy" and not any(HOST_LOAD in prov for _, prov in references):
        # rows timed too briefly to tell (under 50 ms) have no reading: tonight's busy host is still a why
        changed.append({"what": HOST_LOAD, "before": "not read", "after": "busy"})
    return changed


# keys (or prefixes) that change no build nor model; the harness's own code (its commit, an installed
# one's version) is named among a verdict's whys, not taken for a step
NOT_STEPS = ("git commit", "tvmharness", "os", "recipe ", "eval data", "usable cores", HOST_LOAD)


def provenance_steps(provenances: list[dict]) -> list[bool]:
    """For each of a series' runs (row_provenance, oldest first), whether it measured another model,
    build or engine than the run before it did (a step with a cause the report names, see night_sigma)."""
    return [False] + [any(before.get(k) != after.get(k) for k in {*before, *after} if not k.startswith(NOT_STEPS))
                      for before, after in zip(provenances, provenances[1:])]


def operator_diff(before: dict | None, after: dict | None) -> list[dict]:
    """Per-operator time before and after, largest absolute move first."""
    if not before or not after:
        return []
    rows = []
    for op in dict.fromkeys([*before, *after]):
        b, a = before.get(op), after.get(op)
        delta = (a or 0.0) - (b or 0.0)
        rows.append({"operator": op, "before_ms": b, "after_ms": a, "delta_ms": delta,
                     "change": (a / b - 1) if a is not None and b else None})
    rows.sort(key=lambda r: abs(r["delta_ms"]), reverse=True)
    return rows[:TOP_OPERATORS]


def rules_of(run: dict) -> Regression:
    """The regression rules a run was made with (its stored recipe), defaults where it has none."""
    stored = (run.get("recipe") or {}).get("regression") or {}
    # A run stored by another release may name rules this one does not know: those are left out.
    known = {k: v for k, v in stored.items() if k in Regression.model_fields}
    try:
        return Regression.model_validate(known)
    except ValidationError:  # a value that release took and this one refuses: the run was judged by it
        return Regression.model_construct(**(Regression().model_dump() | known))


def judge_run(store, run_id: int | None = None, unconfirmed_why: str | None = None, frame=None) -> tuple[dict, list[Verdict]]:
    """The run (default: the newest with rows that is not a confirmation) and a verdict for each of its
    rows against the series' whole history, from the store alone; latency changes are kept only where
    the run's confirmation, if the store holds one, agrees (see confirm). `unconfirmed_why`: why a run
    has none (a nightly whose second measurement failed), said in each change it leaves unconfirmed.
    `frame`: the store's whole frame where the caller has read it already (a long history takes
    seconds to read). A store without a run that has rows (an empty or mistyped one) is an error:
    nothing judged is not "no regressions"."""
    from ..errors import HarnessError

    runs, frame = store.runs(), store.frame() if frame is None else frame
    ids = set(frame["run_id"])  # a run stopped before its first row (Ctrl-C) has none
    measured = [r for r in runs if r["id"] in ids]
    if not measured and runs:  # a run under way that has not stored its first row yet
        newest = runs[-1]
        raise HarnessError(f"no measurements in {store.label} yet: run {newest['id']}, started {time_text(newest['started'])}, "
                           "has stored no row (it is still running, or it stopped before its first row)",
                           "report once it has stored rows, or run a recipe into the store (`tvmharness run RECIPE`)")
    if not measured:
        raise HarnessError(f"no measurements in {store.label}", "run a recipe into it first (`tvmharness run RECIPE`), "
                           "or check the store's path or URL")
    nights = [r for r in measured if _confirms(r) is None]  # a confirmation counts with the run it confirms
    newest = (nights or measured)[-1]
    run = next((r for r in runs if r["id"] == run_id), None) if run_id is not None else newest
    if run is None:
        raise HarnessError(f"run {run_id} is not in the store", f"pick one of runs {_spans([r['id'] for r in nights or measured])}")
    if _confirms(run) is not None:
        raise HarnessError(f"run {run_id} is the second measurement of run {_confirms(run)}, judged with it",
                           f"pass --run {_confirms(run)}")
    if run["id"] not in ids:
        raise HarnessError(f"run {run_id} has no measurements (it stopped before its first row)",
                           f"the newest run with measurements is run {newest['id']}; pass --run {newest['id']} or leave --run out")
    rules = rules_of(run)
    verdicts = judge(frame, run["id"], rules) + _not_measured(frame, nights, run)
    second: dict[tuple, Verdict] = {}
    for again in (r for r in runs if _confirms(r) == run["id"]):
        for v in judge(frame, again["id"], rules, history_before=run["id"]):
            key = tuple(v.series.values())
            if key not in second or "ab_reference_run" in v.evidence:  # an A/B outranks a second run
                second[key] = v
    if second:
        verdicts = [confirm(v, second.get(tuple(v.series.values())), unconfirmed_why) for v in verdicts]
    else:  # nobody measured this run again (a `run`, a `bench`): its latency changes stand, marked so
        unconfirmed = {"confirmed": None} | ({"unconfirmed_why": unconfirmed_why} if unconfirmed_why else {})
        verdicts = [replace(v, evidence=v.evidence | unconfirmed) if needs_confirmation(v) else v for v in verdicts]
    return run, verdicts


def _not_measured(frame, runs: list[dict], run: dict) -> list[Verdict]:
    """The series the last earlier run of the same recipe on this host measured and this run did not
    (a run cut short, a model or variant dropped), and those a run cut short meant to measure and did
    not reach (its provenance's plan). Said, so that nothing goes quiet; not judged."""
    before = [r for r in runs if r["id"] < run["id"] and (r["recipe_name"], r["hostname"]) == (run["recipe_name"], run["hostname"])]
    last = before[-1] if before else None
    tonight = frame[frame["run_id"] == run["id"]]
    measured = {tuple(r) for r in tonight[list(SERIES)].itertuples(index=False)}
    missing: dict[tuple, int | None] = {}  # series -> the run that has it
    if last is not None:
        earlier = frame[frame["run_id"] == last["id"]]
        missing |= {tuple(r): last["id"] for r in earlier[list(SERIES)].itertuples(index=False) if tuple(r) not in measured}
    if run.get("finished") is None:
        # A model whose baseline failed, or a variant that could not be made, has the one row that says why
        said = {(r["model"], r["variant"]) for r in tonight.to_dict("records") if r["engine"] == "—" or
                (r["variant"] == BASELINE and r["status"] != OK and r["is_baseline"])}
        said_models = {m for m, v in said if v == BASELINE}
        for model, variant, target, engine in (run.get("provenance") or {}).get("planned") or []:
            key = (run["hostname"], target, model, variant, engine)
            if key not in measured and (model, variant) not in said and model not in said_models:
                missing.setdefault(key, None)
    if not missing:
        return []
    lost = set(tonight.loc[tonight["status"] == LOAD_FAILED, "model"])  # a model that could not be made has one row

    def why(series: dict) -> str:
        if series["model"] in lost:
            return f"model {series['model']} could not be made in run {run['id']} (see its broken {BASELINE} row)"
        if run.get("finished") is None:
            return f"run {run['id']} did not finish (interrupted, or still running)"
        return _lists_changed(run, last, series) or f"run {run['id']} did not measure it"

    verdicts = []
    for key, has in sorted(missing.items()):
        series = dict(zip(SERIES, key))
        verdicts.append(Verdict(series=series, verdict=NOT_MEASURED, aspects={"status": NOT_MEASURED}, run_id=run["id"],
                                previous_run_id=has, evidence={},
                                reason=why(series) + (f"; run {has} has it" if has is not None else "")))
    return verdicts


def _lists_changed(run: dict, last: dict, series: dict) -> str:
    """What the run's recipe no longer lists of a series the run before measured: its model, variant, target
    or engine, as rows name them; else every entry it dropped ("" where it lists them all)."""
    now, before = ({key: (r.get("recipe") or {}).get(key) or [] for key in ("models", "variants", "targets", "engines")}
                   for r in (run, last))
    mine = [f"{key[:-1]} {series[key[:-1]]}" for key in before
            if series[key[:-1]] in map(_as_rows_name(key), before[key]) and series[key[:-1]] not in map(_as_rows_name(key), now[key])]
    if mine:
        return f"run {run['id']}'s recipe no longer lists its {' and '.join(mine)} (run {last['id']}'s did)"
    dropped = [f"{key} {', '.join(gone)}" for key in before if (gone := [str(x) for x in before[key] if x not in now[key]])]
    if dropped:
        return f"run {run['id']}'s recipe no longer lists {'; '.join(dropped)} (run {last['id']}'s did)"
    return f"run {run['id']}'s recipe lists other series than run {last['id']}'s" if now != before else ""


def _as_rows_name(key: str):
    """How rows name a recipe's entry of `key`: a model spec by its model's name (nets.py:small is small), a
    variant by its canonical alias, a preset file by its stem; as written where it cannot be read."""
    from ..compress import parse_variant
    from ..models import model_name

    def name(entry) -> str:
        try:
            if key == "models":
                return model_name(str(entry))
            if key == "variants":
                return parse_variant(entry).name
        except Exception:  # an entry this release cannot read: compared as written
            return str(entry)
        return Path(entry).stem if key == "targets" and str(entry).endswith(".toml") else str(entry)

    return name


def _spans(ids: list[int], most: int = 8) -> str:
    """Run ids as runs of consecutive ones: 1..6, 9, 12..15; of a long history the first and the
    newest few spans, the number left out between them said."""
    spans: list[list[int]] = []
    for i in sorted(ids):
        if spans and i == spans[-1][-1] + 1:
            spans[-1].append(i)
        else:
            spans.append([i])
    texts = [f"{s[0]}..{s[-1]}" if len(s) > 2 else ", ".join(map(str, s)) for s in spans]
    if len(texts) > most:
        texts = texts[:2] + [f"({len(texts) - most} more spans)"] + texts[2 - most:]
    return ", ".join(texts)


def _confirms(run: dict) -> int | None:
    return (run.get("provenance") or {}).get("confirms_run")


def is_confirmation(row: dict) -> bool:
    """A row of a run that confirms another (a Store.frame() row carries its run's provenance)."""
    return (row.get("run_provenance") or {}).get("confirms_run") is not None


def history_as_of(frame, run: dict):
    """A Store.frame() as the judged `run` saw it: the runs after it are not its history, though its own
    second measurement (a confirmation stored after it) is part of it."""
    after = (frame["run_id"] > run["id"]) & frame["run_provenance"].map(lambda p: (p or {}).get("confirms_run") != run["id"])
    return frame[~after].reset_index(drop=True)


def judge(frame, run_id: int, rules: Regression | None = None, history_before: int | None = None) -> list[Verdict]:
    """A verdict for every row of run `run_id`, against the earlier rows of its series in `frame`
    (a Store.frame(): rows of every run, with their run's provenance): those of runs before
    `history_before` when given (a confirmation is judged against the history of the run it confirms,
    not against that run's own first measurement)."""
    rules = rules or Regression()
    rows = frame.to_dict("records")
    earlier: dict[tuple, list[dict]] = {}
    cutoff = run_id if history_before is None else history_before
    for r in rows:
        if r["run_id"] < cutoff and not is_confirmation(r):  # one night, one point of history
            earlier.setdefault(tuple(r[k] for k in SERIES), []).append(r)
    tonight = [r for r in rows if r["run_id"] == run_id]
    verdicts = [judge_row(r, sorted(earlier.get(tuple(r[k] for k in SERIES), []), key=lambda x: x["id"]), rules)
                for r in tonight]
    for v, r in zip(verdicts, tonight):  # the recipe's goals it missed ([thresholds]): said with the verdict, judged by none
        if misses := (r.get("details") or {}).get("goal_misses"):
            v.evidence["goal_misses"] = list(misses)
    for v in verdicts:
        if v.verdict == NEW and not v.evidence.get("setup_changed"):  # a host renamed (a CI runner's hostname)?
            same = [key[0] for key, history in earlier.items() if key[1:] == tuple(v.series[k] for k in SERIES[1:])
                    and key[0] != v.series["hostname"] and any(h["status"] == OK for h in history)]
            if same:
                v.evidence["other_hosts"] = sorted(set(same))
    return verdicts


def judge_row(row: dict, history: list[dict], rules: Regression) -> Verdict:
    """One row against its series' earlier rows (oldest first) measured the same way (setup_of)."""
    series = {k: row[k] for k in SERIES}
    setup = setup_of(row)
    ok_anyhow = [h for h in history if h["status"] == OK]
    # Size, memory and accuracy: against the runs measured this way, however their samples were spread
    # (LATENCY_ONLY); latency: against those timed this way too.
    moved = [(h, setup_changes(setup_of(h), setup)) for h in history]  # each earlier row's setup against tonight's
    history = [h for h, changes in moved if all(c["what"] in LATENCY_ONLY for c in changes)]
    ok_history = [h for h in history if h["status"] == OK]
    timed = [h for h, changes in moved if not changes and h["status"] == OK and h.get("samples_ms")]
    previous = ok_history[-1] if ok_history else (history[-1] if history else None)
    verdict = Verdict(series=series, verdict=SAME, aspects={}, run_id=int(row["run_id"]),
                      previous_run_id=int(previous["run_id"]) if previous is not None else None, evidence={},
                      provenance=row_provenance(row), setup=setup)
    # against every reference run, not only the last: a cause may come a night early (and none for a
    # row that does not apply tonight nor did before: nothing of it was measured to change)
    if previous is not None and not (row["status"] == NOT_APPLICABLE and not ok_history):
        references = [(int(r["run_id"]), row_provenance(r)) for r in ok_history[-RECENT_RUNS:] or [previous]]
        verdict.changed = provenance_changes(references, verdict.provenance, known_only=row["status"] != OK)
    if row["status"] == NOT_APPLICABLE and ok_history:  # it ran before: a variant or engine lost is a regression
        verdict.verdict, verdict.aspects = BROKEN, {"status": BROKEN}
        verdict.reason = f"measured until run {int(ok_history[-1]['run_id'])}, now not applicable: {row.get('reason') or ''}"
        return verdict
    if row["status"] == NOT_APPLICABLE:
        verdict.verdict, verdict.reason, verdict.aspects = NOT_APPLICABLE, row.get("reason") or "", {"status": NOT_APPLICABLE}
        return verdict
    if row["status"] != OK:
        verdict.verdict, verdict.reason = BROKEN, f"{row['status']}: {row.get('reason') or ''}".rstrip(": ")
        verdict.aspects = {"status": BROKEN}
        return verdict
    if not ok_history:
        verdict.verdict, verdict.aspects, verdict.evidence = NEW, {"status": NEW}, {"median_ms": row.get("median_ms")}
        metric, value = accuracy_metric(row)
        if value is not None:  # nothing to compare it with, but a reader of a new variant wants it (a collapse shows)
            verdict.evidence.update(accuracy_metric=metric, accuracy=value)
        if ok_anyhow:  # measured before, but not this way: no history to judge against, and the report says why
            verdict.evidence["setup_changed"] = setup_changes(setup_of(ok_anyhow[-1]), setup)
            verdict.evidence["setup_run_id"] = int(ok_anyhow[-1]["run_id"])
        return verdict

    aspects, evidence = {}, {}
    ab = (row.get("details") or {}).get("ab_reference")
    if row.get("samples_ms") and ab:  # a confirmation's A/B: judged within its own window
        aspects["latency"], latency = ab_latency_verdict(row["samples_ms"], ab["samples_ms"], rules, ab["run_id"])
        evidence.update(latency)
    elif row.get("samples_ms") and timed:
        window = timed[-rules.window:]  # the runs the sigma reads: their provenance alone is worked out
        aspects["latency"], latency = latency_verdict(row["samples_ms"], [h["samples_ms"] for h in timed], rules,
                                                      [int(h["run_id"]) for h in timed],
                                                      provenance_steps([row_provenance(h) for h in window]))
        evidence.update(latency)
        # the operators against the run at the level the latency was judged against, not the last run
        # (on a step's second night that is the step itself)
        level = next(h for h in timed if int(h["run_id"]) == latency["level_run_id"])
        verdict.operators = operator_diff(level.get("profile_ms"), row.get("profile_ms"))
        evidence["operators_run_id"] = latency["level_run_id"]
        if aspects["latency"] in (SLOWER, FASTER) and same_build(row, level) and _only_load_moved(level, row, verdict):
            # the library the reference level was timed of (a cache hit), timed by the same harness and recipe
            # on the same host: the move is not the build's, and no second measurement could make it so (an
            # A/B would time that library against itself)
            aspects["latency"] = SAME
            evidence.update(confirmed=False, same_build_run_id=latency["level_run_id"],
                            confirmation=f"the same build as run {latency['level_run_id']}'s")
    elif row.get("samples_ms"):  # timed another way than before: a new latency history, its other figures judged
        aspects["latency"] = NEW
        evidence.update(median_ms=row.get("median_ms"), setup_changed=setup_changes(setup_of(ok_history[-1]), setup),
                        setup_run_id=int(ok_history[-1]["run_id"]))

    def last_with(figure):  # each figure against the latest earlier run that has it (a run without it skips nothing)
        return next(((h, figure(h)) for h in reversed(ok_history) if figure(h) is not None), (None, None))

    def size(r):
        return r["artifact_bytes"] if present(r.get("artifact_bytes")) and r["artifact_bytes"] else None

    before_row, before = last_with(size)
    if size(row) is not None and before is not None:
        change = row["artifact_bytes"] / before - 1
        evidence.update(size_bytes=int(row["artifact_bytes"]), previous_size_bytes=int(before), size_change=change,
                        size_run_id=int(before_row["run_id"]))
        aspects["size"] = LARGER if change > rules.max_size_growth else SMALLER if change < -rules.max_size_growth else SAME
    memory = peak_memory(row.get("details"))
    before_row, before = last_with(lambda r: peak_memory(r.get("details")) or None)
    if memory is not None and before is not None:
        change = memory / before - 1
        evidence.update(peak_mb=memory, previous_peak_mb=before, memory_change=change, memory_run_id=int(before_row["run_id"]))
        moved = abs(memory - before) > MEMORY_FLOOR_MB and abs(change) > rules.max_memory_growth
        aspects["memory"] = SAME if not moved else LARGER if change > 0 else SMALLER
    # compared only with the same measure (accuracy is not top-1 agreement) on the same held-out samples
    # (a row of an older release names none: taken as the same)
    metric, value = accuracy_metric(row)
    before_row, before = last_with(lambda r: accuracy_metric(r)[1] if accuracy_metric(r)[0] == metric
                                   and _same_samples(row, r) else None)
    scored_row, scored = last_with(lambda r: accuracy_metric(r)[1] if accuracy_metric(r)[0] == metric else None)
    if value is not None and before is None and scored is not None:  # scored before, on other samples: nothing to compare with
        counts = [_inputs_checked(r) for r in (scored_row, row)]
        evidence["accuracy_data_changed"] = (f"{metric} on {counts[1]} inputs where it was on {counts[0]}"
                                             if _UNNAMED not in counts and counts[0] != counts[1]
                                             else f"{metric} on other held-out samples than before")
    if value is not None and before is not None:
        change = value - before
        evidence.update(accuracy_metric=metric, accuracy=value, previous_accuracy=before, accuracy_change=change,
                        accuracy_run_id=int(before_row["run_id"]),
                        **({"accuracy_inputs": _inputs_checked(row)} if _inputs_checked(row) is not _UNNAMED else {}))
        aspects["accuracy"] = (LESS_ACCURATE if change < -rules.max_accuracy_drop
                               else MORE_ACCURATE if change > rules.max_accuracy_drop else SAME)
    verdict.aspects, verdict.evidence = aspects, evidence
    verdict.verdict = min(aspects.values(), key=ORDER.index, default=SAME)
    return verdict


def regressions(verdicts: list[Verdict]) -> list[Verdict]:
    return [v for v in verdicts if v.regression]


def counts(verdicts: list[Verdict]) -> dict[str, int]:
    return dict(sorted(collections.Counter(v.verdict for v in verdicts).items(), key=lambda kv: ORDER.index(kv[0])))
