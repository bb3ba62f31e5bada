"""Reports read the results store, and judge it by the regression rules of the recipe each run stored
(recipe.Regression); they run nothing. Of the modules below them they take only words: how an input is
named (data.input_text) and threads and cores are said (provenance), so a report says them as the run's
own messages did, and the error texts' helpers (errors)."""

import math

from rich.text import Text

from ..errors import printable
from ..results import as_utc

# A stored time as each reader takes it, always in UTC (SQLite gives times back without their offset).
TIME_FORMATS = {"text": "%Y-%m-%d %H:%M:%S UTC", "iso": "%Y-%m-%dT%H:%M:%S+00:00",
                "junit": "%Y-%m-%dT%H:%M:%S"}  # JUnit's XSD takes no offset


def shown(value, style: str = "") -> Text:
    """What a model, a recipe or the store said, as a terminal report prints it: text, not markup,
    and without the control sequences a terminal would obey (a window title, a hidden link)."""
    return Text(printable(str(value)), style=style)


def present(value) -> bool:
    """A stored number that is there: not None, not NaN (pandas' empty cell)."""
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def time_text(moment, style: str = "text") -> str:
    """A stored time to the second: "text" for people ('2026-11-24 21:21:50 UTC'), "iso" (8601, with
    the offset) for JSON, "junit" for JUnit's timestamp."""
    return format(as_utc(moment), TIME_FORMATS[style])


def number_text(value, fmt: str, unit: str = "") -> str:
    """A stored number in a format spec with its unit after it, or a dash where it is missing."""
    return format(value, fmt) + unit if present(value) else "—"


def ms_text(value, unit: str = "") -> str:
    """A latency to 4 significant figures, never as an exponent: a 9 us model's 5% move shows
    (0.009049, 12.35, 1234)."""
    if not present(value):
        return "—"
    decimals = 3 - math.floor(math.log10(abs(value))) if value else 3
    return f"{value:.{max(decimals, 0)}f}{unit}"


def spread_text(row: dict) -> str:
    """A row's spread: half the inter-quartile range of its samples, as a share of its median (±1.2%)."""
    iqr, median = row.get("iqr_ms"), row.get("median_ms")
    return f"±{iqr / median / 2:.1%}" if present(iqr) and present(median) and median else "—"


def agreement_texts(row: dict) -> tuple[str, str]:
    """A row's max |diff| and top-1 agreement as tables show them: a dash for the baseline, the
    reference the other rows are compared with (against itself, 0 and 100% say nothing)."""
    if row.get("is_baseline"):
        return "—", "—"
    return number_text(row.get("max_abs_diff"), ".2e"), number_text(row.get("top1_agreement"), ".0%")


def points_text(change: float) -> str:
    """An accuracy (or agreement) change in percentage points, as the tables give accuracies in percent."""
    return f"{100 * change:+.1f} pts"


def peak_memory(details: dict | None) -> float | None:
    """A row's peak memory in MB, where it was measured ([measure] memory)."""
    return ((details or {}).get("memory") or {}).get("peak_mb")


BUSY_CORES = 0.5  # other processes' work beyond the CPUs a row left free, on average, that marks it BUSY
BUSY_WAIT = 0.2  # or the seconds its threads waited for a CPU, per second timed


def busy(row: dict) -> bool:
    """Whether other processes' work shared the CPUs a row's threads ran on while it was timed
    (details.other_load, from measure.OtherLoad): their busy cores beyond the CPUs the row left free
    are BUSY_CORES or more, or its threads waited BUSY_WAIT s per second for a CPU (two processes on
    the one CPU a single-threaded row left free each get two thirds of it). Not where it was not
    measured (a kit's row, an older row)."""
    load = (row.get("details") or {}).get("other_load")
    if not load:
        return False
    threads = int(row["threads"]) if present(row.get("threads")) else load["of_cpus"]
    return load["cores"] - max(0, load["of_cpus"] - threads) >= BUSY_CORES or load.get("waited", 0.0) >= BUSY_WAIT


def timing_flags(row: dict) -> list[str]:
    """What makes a row's latency the host's rather than the model's: UNSTEADY (a quarter of its samples
    far above its fastest tenth), BUSY (other processes' work shared its CPUs)."""
    return [flag for flag, on in (("UNSTEADY", (row.get("details") or {}).get("unsteady")), ("BUSY", busy(row))) if on]


def target_text(target: str, emulated) -> str:
    """A target as reports name it, marked where an emulated dev kit measured it (a row's details'
    "emulated", which the pipeline writes on each row such a kit measured): its numbers prove the
    path, not the board's speed."""
    return f"{target} (EMULATED)" if emulated else target


def kit_text(details: dict | None) -> str:
    """The dev kit that measured a row, whose tracker handed it out and what it runs ("" for a row
    measured on this host)."""
    details = details or {}
    if not details.get("kit"):
        return ""
    rack, info = details.get("rack") or {}, details.get("kit_info") or {}
    where = f" under '{rack.get('key')}' at {rack.get('tracker')}" if rack else ""
    what = ", ".join(str(x) for x in (
        info.get("machine"), info.get("hostname"), info.get("threads") and f"{info['threads']} threads",
        info.get("tvm") and f"tvm {info['tvm']}", info.get("python") and f"python {info['python']}",
        info.get("emulated") and f"emulated by {info['emulated']}") if x)
    return details["kit"] + where + (f" ({what})" if what else "")


def baseline_label(rows: list[dict]) -> str:
    """What the rows' speed-ups are against, from their run's baseline rows: e.g. "torch fp32 on x86".
    Every row's speed-up is over its model's baseline on that target, a GPU or dev kit row's too."""
    base = [r for r in rows if r["is_baseline"]]
    if not base:
        return "the baseline"

    def each(key: str) -> str:
        return "/".join(dict.fromkeys(str(r[key]) for r in base))

    return f"{each('engine')} {each('variant')} on {each('target')}"


def unfinished(run: dict | None) -> str:
    """What a run cut short says of itself ("" for one that went through)."""
    if not run or "finished" not in run or run["finished"] is not None:
        return ""
    return (f"run {run['id']} did not finish (interrupted, or still running): it holds what it measured, and its "
            "verdicts name each series the recipe's previous run on this host has and it has not")


def gpu_text(provenance: dict | None) -> str:
    """The run's GPU as provenance names it ("" where the host had none usable)."""
    gpu = ((provenance or {}).get("host") or {}).get("gpu")
    if not gpu:
        return ""
    return (f"GPU {gpu.get('name')} ({gpu.get('arch')}, {gpu.get('memory_gb')} GB; driver for CUDA {gpu.get('driver')}"
            + (f"; PyTorch built for CUDA {gpu['torch_cuda']}" if gpu.get("torch_cuda") else "") + ")")


def size_cell(evidence: dict) -> str:
    """A verdict's artifact size change, and its peak memory change where memory was measured."""
    parts = [f"{evidence['size_change']:+.1%}" if present(evidence.get("size_change")) else "—"]
    if present(evidence.get("memory_change")):
        parts.append(f"peak memory {evidence['memory_change']:+.1%}")
    return "; ".join(parts)


def size_text(n) -> str:
    """Bytes in decimal units (kB = 1000 B, MB = 10^6 B), as the HTML report and `compile` print them."""
    if not present(n):
        return "—"
    for unit in ("B", "kB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"
