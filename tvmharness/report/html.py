"""The HTML report: one self-contained file (plotly's JavaScript inlined), read only from the store.

Per target: a Pareto chart of latency against accuracy per model (marker size: artifact size; an open
marker: timed UNSTEADY or BUSY, and left off the front) and
bars of every row relative to the baseline; per model: a table with full provenance and a sparkline
of each series' history; on top, the verdicts of the run. Every string from a user goes through jinja2's
autoescaping (tables) or html.escape (chart text, which plotly decodes back into SVG text)."""

from __future__ import annotations

import html
import math
from pathlib import Path

import jinja2
from markupsafe import Markup
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from ..cache import write_whole
from ..provenance import cores_text, threads_text
from ..results import OK
from . import (agreement_texts, baseline_label, gpu_text, kit_text, ms_text, number_text, peak_memory, present,
               size_text, spread_text, target_text, time_text, timing_flags, unfinished)
from .regress import (REGRESSIONS, accuracy_metric, fast_latency, history_as_of, is_confirmation, judge_run,
                      row_provenance, setup_changes, setup_of)
from .compression import COLUMNS as COMPRESSION_COLUMNS, best_variants, compression_rows, variant_notes
from .summary import headline
from .terminal import footnotes, row_notes

SPARK = {"displayModeBar": False, "staticPlot": True, "responsive": True}
CHART = {"displayModeBar": False, "responsive": True}


def _t(value) -> str:
    """Chart text: plotly reads its strings as a small HTML subset, so entities keep them plain text."""
    return html.escape(str(value), quote=False)


def _quality(row: dict) -> tuple[str, float | None]:
    """The chart's quality axis: accuracy where the model has data, else agreement with the baseline."""
    metric, value = accuracy_metric(row)
    return (metric if metric == "accuracy" else f"{metric} with the baseline"), value


def _figure_html(fig: go.Figure, div_id: str, config: dict) -> str:
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id, config=config)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both latency (lower) and quality (higher)."""
    front = []
    for i, (lat, q) in enumerate(points):
        if not any((l2 <= lat and q2 >= q) and (l2 < lat or q2 > q) for j, (l2, q2) in enumerate(points) if j != i):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def pareto_chart(rows: list[dict], div_id: str) -> str | None:
    """Latency against quality, with the Pareto front: one chart per model and quality metric, since
    the choice is among one model's variants and engines, and accuracy and agreement with the
    baseline are not one scale."""
    ok = [r for r in rows if r["status"] == OK and present(r.get("median_ms")) and _quality(r)[1] is not None]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in ok:
        groups.setdefault((r["model"], _quality(r)[0]), []).append(r)
    charts = [_pareto_figure(group, model, metric, f"{div_id}-{i}") for i, ((model, metric), group) in enumerate(groups.items())]
    return "\n".join(charts) or None


def _pareto_figure(ok: list[dict], model: str, metric: str, div_id: str) -> str:
    sizes = [r["artifact_bytes"] for r in ok if present(r.get("artifact_bytes"))]
    biggest = max(sizes) if sizes else 1
    fig = go.Figure()
    for engine in sorted({r["engine"] for r in ok}):
        mine = [r for r in ok if r["engine"] == engine]
        fig.add_trace(go.Scatter(
            x=[r["median_ms"] for r in mine], y=[_quality(r)[1] for r in mine], mode="markers", name=_t(engine),
            marker={"size": [10 + 30 * math.sqrt((r.get("artifact_bytes") or 0) / biggest) if present(r.get("artifact_bytes")) else 10
                             for r in mine], "sizemode": "diameter", "opacity": 0.75, "line": {"width": 1},
                    "symbol": ["circle-open" if timing_flags(r) else "circle" for r in mine]},  # the host's latency
            text=[_t(f"{r['model']} / {r['variant']} / {r['engine']}" + "".join(f" {f}" for f in timing_flags(r)))
                  for r in mine],
            customdata=[_t(size_text(r["artifact_bytes"]) if present(r.get("artifact_bytes")) else "no artifact") for r in mine],
            hovertemplate="%{text}<br>%{x:.4g} ms · " + _t(metric) + " %{y:.3f}<br>%{customdata}<extra></extra>"))
    # The front claims the best trade-offs: a point timed UNSTEADY or BUSY (open) is the host's, not on it
    points = [(r["median_ms"], _quality(r)[1]) for r in ok if not timing_flags(r)]
    front = pareto_front(points)
    fig.add_trace(go.Scatter(x=[points[i][0] for i in front], y=[points[i][1] for i in front], mode="lines",
                             name="Pareto front", line={"dash": "dot", "color": "grey"}, hoverinfo="skip"))
    title = f"{metric}: {model}" + ("" if points else " (no Pareto front: every point was timed UNSTEADY or BUSY)")
    fig.update_layout(template="plotly_white", height=380, margin={"l": 60, "r": 20, "t": 40, "b": 50},
                      title={"text": _t(title), "font": {"size": 13}},
                      xaxis={"title": {"text": "median latency, ms (log)"}, "type": "log"},
                      yaxis={"title": {"text": _t(metric)}}, legend={"title": {"text": "engine (marker size: artifact)"}})
    return _figure_html(fig, div_id, CHART)


def baseline_bars(rows: list[dict], div_id: str, baseline: str) -> str | None:
    ok = [r for r in rows if r["status"] == OK and present(r.get("median_ms"))]
    if not ok:
        return None
    bars = []
    for r in ok:
        speedup = 1.0 if r["is_baseline"] else r.get("speedup_vs_baseline")
        if present(speedup):
            bars.append((_t(f"{r['model']} / {r['variant']} / {r['engine']}" + "".join(f" {f}" for f in timing_flags(r))),
                         float(speedup), bool(r["is_baseline"])))
    if not bars:
        return None
    fig = go.Figure(go.Bar(x=[b[1] for b in bars], y=[b[0] for b in bars], orientation="h",
                           marker={"color": ["#888" if b[2] else ("#2a9d8f" if b[1] >= 1 else "#e76f51") for b in bars]},
                           text=[f"{b[1]:.2f}x" for b in bars], textposition="auto",
                           hovertemplate="%{y}: %{x:.3f}x the baseline's speed<extra></extra>"))
    fig.add_vline(x=1.0, line_dash="dash", line_color="grey")
    fig.update_layout(template="plotly_white", height=120 + 28 * len(bars), margin={"l": 20, "r": 20, "t": 30, "b": 40},
                      xaxis={"title": {"text": _t(f"speed-up over {baseline} (baseline latency / row latency)")}},
                      yaxis={"automargin": True})
    return _figure_html(fig, div_id, CHART)


def sparkline(history: list[dict], div_id: str) -> str | None:
    """The series' latency level run by run: the 10th percentile of each run's samples, what verdicts
    compare (a night's median also holds how busy the host was); the median on hover."""
    points = [(r["run_started"], fast_latency(r["samples_ms"]), r["median_ms"], r["run_id"]) for r in history
              if r["status"] == OK and present(r.get("median_ms")) and r.get("samples_ms")]
    if not points:
        return None
    fig = go.Figure(go.Scatter(x=[str(p[0]) for p in points], y=[p[1] for p in points], mode="lines+markers",
                               marker={"size": 4}, line={"width": 1.5}, customdata=[[p[3], p[2]] for p in points],
                               hovertemplate="run %{customdata[0]}: p10 %{y:.4g} ms, median %{customdata[1]:.4g} ms"
                                             "<extra></extra>"))
    fig.update_layout(template="none", height=40, width=180, margin={"l": 0, "r": 0, "t": 2, "b": 2},
                      xaxis={"visible": False}, yaxis={"visible": False}, showlegend=False)
    return _figure_html(fig, div_id, SPARK)


def render_html(store, since=None, judged: tuple | None = None) -> str:
    """The page of the newest run with measurements, or of the run in `judged`: (run, verdicts, frame) where
    the caller has judged it already, the frame holding the history as --since trims it."""
    if judged is None:
        run, verdicts = judge_run(store)
        frame = store.frame(since=since, whole_run=run["id"])  # --since trims the history, never the run
    else:
        run, verdicts, frame = judged
    frame = history_as_of(frame, run)  # no later run in its sparklines, whatever frame a caller passed
    rows = frame.to_dict("records")
    tonight = frame[frame["run_id"] == run["id"]]  # the judged run's rows, for the tables and the notes alike
    current = tonight.to_dict("records")
    by_series = {}
    for r in rows:
        if not is_confirmation(r):  # one night, one point
            by_series.setdefault((r["hostname"], r["target"], r["model"], r["variant"], r["engine"]), []).append(r)
    verdict_of = {tuple(v.series.values()): v for v in verdicts}

    targets = []
    for i, target in enumerate(dict.fromkeys(r["target"] for r in current)):
        mine = [r for r in current if r["target"] == target]
        # its models' baseline rows, which sit on the host's target (this one or another)
        baseline = baseline_label([r for r in current if r["model"] in {m["model"] for m in mine}])
        emulated = any((r.get("details") or {}).get("emulated") for r in mine)
        targets.append({"name": target_text(target, emulated), "spec": (mine[0].get("target_spec") or {}).get("tvm"),
                        "pareto": pareto_chart(mine, f"pareto-{i}"), "bars": baseline_bars(mine, f"bars-{i}", baseline),
                        "baseline": baseline})
    models = []
    for i, model in enumerate(dict.fromkeys(r["model"] for r in current)):
        table = []
        for j, r in enumerate(r for r in current if r["model"] == model):
            key = (r["hostname"], r["target"], r["model"], r["variant"], r["engine"])
            history = [h for h in by_series.get(key, []) if not setup_changes(setup_of(h), setup_of(r))]  # as verdicts see it
            tuning = (r.get("details") or {}).get("tuning_records") or {}
            v = verdict_of.get(key)
            table.append({
                "variant": r["variant"], "target": r["target"], "engine": r["engine"],
                "engine_version": r["engine_version"], "status": r["status"], "reason": r["reason"],
                "median": ms_text(r.get("median_ms"), " ms"), "p90": ms_text(r.get("p90_ms"), " ms"),
                "spread": spread_text(r), "notes": ", ".join(row_notes(r)),
                "speedup": "baseline" if r["is_baseline"] else number_text(r.get("speedup_vs_baseline"), ".2f", "x"),
                "size": size_text(r.get("artifact_bytes")),
                "memory": number_text(peak_memory(r.get("details")), ".1f", " MB"),
                "accuracy": number_text(r.get("accuracy"), ".2%"), "agreement": agreement_texts(r)[1],
                "max_diff": agreement_texts(r)[0], "batch": r.get("batch"),
                "threads": int(r["threads"]) if present(r.get("threads")) else "—",
                "tuning": (f"{tuning.get('tasks_tuned')}/{tuning.get('tasks')} tasks, {tuning.get('trials')} trials, "
                           f"sha256 {str(tuning.get('sha256', ''))[:16]}") if tuning else ("untuned" if r["engine"].startswith("tvm") else "—"),
                "build": (r.get("details") or {}).get("build_key") or "—",
                "kit": kit_text(r.get("details")),
                "target_spec": row_provenance(r)["target"],  # a TVM build's alone: no other engine's row depends on it
                "verdict": v.verdict if v else "", "verdict_summary": v.summary() if v else "",
                "regression": bool(v and v.regression),
                "spark": sparkline(history, f"spark-{i}-{j}"), "runs": len(history),
            })
        models.append({"name": model, "rows": table, "baseline": baseline_label([r for r in current if r["model"] == model])})

    prov = run.get("provenance") or {}
    cpu = (prov.get("host") or {}).get("cpu") or {}
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(TEMPLATE).render(
        run=run, prov=prov, cpu=cpu, cores=cores_text(cpu), gpu=gpu_text(prov),
        threads=threads_text([prov["threads"]], cpu) if prov.get("threads") else "?", versions=prov.get("versions") or {},
        verdicts=verdicts, regressions=REGRESSIONS, targets=targets, models=models, started=time_text(run["started"]),
        headline=headline(run, verdicts), regressed=[v for v in verdicts if v.regression],
        missed=[v for v in verdicts if v.evidence.get("goal_misses")],
        since=time_text(since) if since else None, unfinished=unfinished(run),
        notes=[line for line in footnotes(tonight) if not line.startswith("[")],  # reasons sit in the status cells
        compression={"columns": [name for name, _ in COMPRESSION_COLUMNS], "rows": compression_rows(tonight),
                     "best": best_variants(tonight), "notes": variant_notes(tonight)},
        plotly_js=Markup(get_plotlyjs()),
        charts=lambda fragment: Markup(fragment) if fragment else "")


def write_html(store, path: Path | str, since=None, judged: tuple | None = None) -> Path:
    """Write the report page of a Store (render_html: `since`, `judged`) to `path`; returns the path."""
    store.refuse_as_output(path, "write_html's path")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_whole(path, render_html(store, since, judged))
    return path


TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>tvmharness report: {{ run.recipe_name }} run {{ run.id }}</title>
<script>
  // Script errors land in the page itself, where a reader (or a test) sees them.
  window.addEventListener("error", function (e) {
    var sink = document.getElementById("js-errors");
    if (sink) { sink.textContent += (e.message || String(e)) + "\\n"; sink.hidden = false; }
  });
</script>
<script>{{ plotly_js }}</script>
<style>
 body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
 table { border-collapse: collapse; margin: .5em 0 1.5em; }
 th, td { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: middle; }
 th { background: #f4f4f4; }
 .regression { color: #b00020; font-weight: bold; } .num { text-align: right; }
 .prov { color: #555; font-size: 12px; } .chart { max-width: 1000px; } #js-errors { color: #b00020; }
 .wide { overflow-x: auto; } .headline { font-size: 18px; font-weight: bold; margin: .3em 0; } .fine { color: #1b7a2b; }
 td.evidence { min-width: 24em; }
</style></head>
<body>
<h1>tvmharness: {{ run.recipe_name }} (run {{ run.id }})</h1>
<pre id="js-errors" hidden></pre>
<p class="headline {{ 'regression' if regressed else 'fine' if headline[0] == '✅' else '' }}" id="headline">{{ headline[1] }}</p>
<p>{{ headline[2] }}</p>
{% if regressed %}<ul class="regression">{% for v in regressed %}<li>{{ v.name }}: {{ v.summary() }}</li>{% endfor %}</ul>{% endif %}
{% if missed %}<p>Goals missed (the recipe's [thresholds]; they do not fail the night):</p>
<ul>{% for v in missed %}<li>{{ v.name }}: {{ v.evidence.goal_misses | join("; ") }}</li>{% endfor %}</ul>{% endif %}
{% if unfinished %}<p class="regression">{{ unfinished }}</p>{% endif %}
<p class="prov">host {{ run.hostname }} · {{ cpu.get("model") }} ({{ cpu.get("arch") }}, {{ cores }}; features
 {{ (cpu.get("features") or []) | join(" ") }}){% if gpu %} · {{ gpu }}{% endif %} · threads {{ threads }} · git {{ run.git_commit }} · recipe {{ run.recipe_name }}
 ({{ run.recipe_hash }}) · started {{ started }}{% if since %} · history since {{ since }}{% endif %}<br>
 versions: {% for k, v in versions.items() if v %}{{ k }} {{ v }}{% if not loop.last %} · {% endif %}{% endfor %}</p>

<h2>Verdicts against each series' history</h2>
<div class="wide"><table><tr><th>verdict</th><th>model</th><th>variant</th><th>target</th><th>engine</th><th>evidence and cause</th></tr>
{% for v in verdicts %}<tr><td class="{{ 'regression' if v.verdict in regressions else '' }}">{{ v.verdict }}</td>
<td>{{ v.series.model }}</td><td>{{ v.series.variant }}</td><td>{{ v.target }}</td><td>{{ v.series.engine }}</td>
<td class="evidence">{{ v.summary() }}</td></tr>
{% endfor %}</table></div>

{% for t in targets %}<h2>Target {{ t.name }}</h2>
<p class="prov">{{ t.spec }}</p>
<h3>Latency vs accuracy</h3><div class="chart">{{ charts(t.pareto) or "no row with both latency and accuracy" }}</div>
<h3>Relative to {{ t.baseline }}</h3><div class="chart">{{ charts(t.bars) or "no measured rows" }}</div>
{% endfor %}

{% if notes %}<h2>Notes</h2>
<ul>{% for line in notes %}<li>{{ line }}</li>{% endfor %}</ul>{% endif %}
{% if compression.rows %}<h2>Compression: each variant against fp32 on the same target and engine</h2>
<div class="wide"><table><tr>{% for name in compression.columns %}<th>{{ name }}</th>{% endfor %}</tr>
{% for cells in compression.rows %}<tr>{% for cell in cells %}<td>{{ cell }}</td>{% endfor %}</tr>{% endfor %}</table></div>
<ul>{% for line in compression.best %}<li><b>{{ line }}</b></li>{% endfor %}
{% for line in compression.notes %}<li>{{ line }}</li>{% endfor %}</ul>{% endif %}
{% for m in models %}<h2>Model {{ m.name }}</h2>
<div class="wide"><table><tr><th>variant</th><th>target</th><th>engine</th><th>status</th><th>median</th><th>p90</th><th>spread</th>
<th>speed-up vs {{ m.baseline }}</th><th>size</th><th>peak memory</th><th>accuracy</th><th>top-1 agree</th><th>max |diff|</th><th>verdict</th><th>history (p10 ms)</th>
<th>provenance</th></tr>
{% for r in m.rows %}<tr><td>{{ r.variant }}</td><td>{{ r.target }}</td><td>{{ r.engine }}</td>
<td>{{ r.status }}{% if r.reason %}: {{ r.reason }}{% endif %}{% if r.notes %}<br><span class="prov">{{ r.notes }}</span>{% endif %}</td><td class="num">{{ r.median }}</td><td class="num">{{ r.p90 }}</td>
<td class="num">{{ r.spread }}</td><td class="num">{{ r.speedup }}</td><td class="num">{{ r.size }}</td><td class="num">{{ r.memory }}</td>
<td class="num">{{ r.accuracy }}</td><td class="num">{{ r.agreement }}</td><td class="num">{{ r.max_diff }}</td>
<td class="{{ 'regression' if r.regression else '' }}" title="{{ r.verdict_summary }}">{{ r.verdict }}</td>
<td>{{ charts(r.spark) }}<span class="prov">{{ r.runs }} run{{ "s" if r.runs != 1 }}</span></td>
<td class="prov">{{ r.engine }} {{ r.engine_version }} · threads {{ r.threads }} · batch {{ r.batch }} · tuning {{ r.tuning }}
 · build {{ r.build }}{% if r.target_spec %} · target {{ r.target_spec }}{% endif %}{% if r.kit %} · dev kit {{ r.kit }}{% endif %}</td></tr>
{% endfor %}</table></div>
{% endfor %}
<script>
  // How many charts plotly drew: a reader's check, and a headless browser's.
  window.addEventListener("load", function () {
    var plots = Array.from(document.querySelectorAll(".js-plotly-plot"));
    document.body.dataset.charts = plots.length;
    document.body.dataset.chartsDrawn = plots.filter(function (p) { return p.querySelector(".main-svg"); }).length;
  });
</script>
</body></html>
"""
