"""The command line: one command per verb, each a thin layer over the library."""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import math
import os
import re
import select
import shlex
import signal
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from typer.exceptions import TyperException

from . import __version__
from .engines import ENGINE_NAMES
from .cache import file_lock, folder_can_be_made, ignored_by_git, writable_folder, write_whole
from .errors import (FAILED, INTERNAL, RETRY, TUNE_RECORDS_KEPT, HarnessError, Interrupted, counted, one_line, path_error,
                     reason, worst)
from .remote import EMULATED_KEY

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Compile, tune and benchmark PyTorch models through Apache TVM, against PyTorch and ONNX Runtime.")
class _Console(Console):
    def on_broken_pipe(self) -> None:
        """The reader left (`| head`): exit as a shell reports a process a broken pipe ended (141), not
        with rich's 1, which says a row failed."""
        self.quiet = True  # what a `finally` prints on the way out goes nowhere
        os.dup2(os.open(os.devnull, os.O_WRONLY), self.file.fileno())  # nor can the exit's flush fail
        raise SystemExit(128 + signal.SIGPIPE)


# Piped output (CI logs, files) gets a wide page so the report table stays one line per row, unless
# COLUMNS says how wide; piped messages are not wrapped at all (a command in a fix stays whole to copy).
# emoji=False: ":fire:" in a path or an address is text, not an emoji
out = _Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 200, emoji=False,
               soft_wrap=not sys.stdout.isatty())
err = _Console(stderr=True, log_path=False, emoji=False, soft_wrap=not sys.stderr.isatty())

JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
TargetOpt = Annotated[Optional[list[str]], typer.Option("--target", "-t", metavar="T", help="target preset (repeatable); see `tvmharness targets`")]
ModelOpt = Annotated[Optional[list[str]], typer.Option("--model", "-m", metavar="M", help="model (repeatable): zoo name, .pt2, .onnx or module:function")]
EngineOpt = Annotated[Optional[list[str]], typer.Option("--engine", "-e", metavar="E", help=f"engine (repeatable): {', '.join(ENGINE_NAMES)}")]
RepeatsOpt = Annotated[Optional[int], typer.Option("--repeats", metavar="N", help="timed repeats per row (at least 30)")]
MemoryOpt = Annotated[Optional[bool], typer.Option("--memory/--no-memory", help="also measure each row's peak memory, "
                                                   "in a process of its own (default: a recipe's \\[measure] memory, where one is given, else off)")]
PinnedThreadsOpt = Annotated[Optional[int], typer.Option("--threads", metavar="N", min=1, help="threads every engine is pinned to (default: "
                                                   "a recipe's \\[measure] threads, where one is given, else this host's physical cores)")]
VariantsOpt = Annotated[Optional[list[str]], typer.Option("--variant", metavar="V", help="compression variant (repeatable), e.g. int8 "
                                                          "or prune:0.5+finetune, measured beside fp32")]
TrackerOpt = Annotated[Optional[str], typer.Option(metavar="HOST:PORT", help="HOST:PORT of the RPC tracker whose dev kits run remote targets")]
KeyOpt = Annotated[Optional[str], typer.Option(metavar="KEY", help="the dev kits' key at the tracker (default: the target's usual keys)")]
StoreOpt = Annotated[Optional[str], typer.Option("--store", metavar="URL", help="results store: a SQLite path or SQLAlchemy URL")]
OutputDirOpt = Annotated[Optional[Path], typer.Option("--output-dir", metavar="DIR", help="where builds, tuning records and artifacts "
                                                     "go (cache/, tuning/, artifacts/); default: the \\[output] dir of the "
                                                     "recipe, where one is given, else results (the results store is not moved by it)")]
InputShapeOpt = Annotated[Optional[list[str]], typer.Option("--input-shape", metavar="NAME=1x128", help="NAME=1x128 (repeatable): a model "
                                                            "input's sizes, the batch first, e.g. a dynamic sequence length")]
InputRangeOpt = Annotated[Optional[list[str]], typer.Option("--input-range", metavar="NAME=0..99", help="NAME=0..30521 (repeatable): the "
                                                            "values an integer input is seeded from, e.g. token ids")]
EvalDataOpt = Annotated[Optional[str], typer.Option("--eval-data", metavar="FILE.npz", help=".npz of held-out samples, one array per input "
                                                    "(and 'labels'): fed to every engine, accuracy where labelled")]
TrainDataOpt = Annotated[Optional[str], typer.Option("--train-data", metavar="FILE.npz", help=".npz of training samples (and 'labels'): "
                                                     "fine-tuning and int8 calibration of variants")]


def _data_flags(model: str, eval_data: str | None, train_data: str | None) -> dict:
    """--eval-data and --train-data as the recipe's [data.NAME] of the one model a command takes."""
    from .models import model_name

    fields = {k: v for k, v in (("eval", eval_data), ("train", train_data)) if v}
    return {model_name(model): fields} if fields else {}


# (a run's own stages say what they stored: this is said where none did, before a run began or after it ended)
_ROWS_KEPT = "what was measured before it is stored (a run cut short is marked unfinished, and every report says so)"
INTERRUPTED = {"tune": f"interrupted while tuning: {TUNE_RECORDS_KEPT}; nothing was measured",
               **{name: "interrupted: " + _ROWS_KEPT for name in ("run", "bench", "nightly")}}


def _own_resume(text: str) -> str:
    """A tune's "`tvmharness tune --resume`" as the command that was run, with --resume: a bare one
    names no recipe nor model, and says "nothing to tune"."""
    given = sys.argv[1:]
    command = shlex.join(["tvmharness", *given, *([] if "--resume" in given else ["--resume"])])
    return text.replace("`tvmharness tune --resume`", f"`{command}`") if given[:1] == ["tune"] else text


def _friendly(command):
    """User errors become one message and an exit code, never a traceback; a command's int is its exit code."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        _said.clear()
        _STOPPED_BY.clear()
        _STOPPED_BY["signal"] = signal.SIGINT
        try:
            code = command(*args, **kwargs)
        except HarnessError as e:
            e.cause, e.fix = _own_resume(e.cause), _own_resume(e.fix)
            code = _user_error(e)
        except KeyboardInterrupt as e:  # an Interrupted says what its stage left behind
            _said["error"] = _own_resume(str(e) or INTERRUPTED.get(command.__name__, "interrupted"))
            with contextlib.suppress(OSError):  # a closed terminal (SIGHUP) takes no message
                err.print(_said["error"], markup=False, highlight=False)
            code = _interrupted_code()
            if command.__name__ == "tune":  # freeing an interrupted MetaSchedule search can corrupt the heap
                _error_document(kwargs, code)
                sys.stdout.flush()          # ("corrupted double-linked list", once in many Ctrl-Cs); its records
                sys.stderr.flush()          # are on disk, so the process ends here, before anything is freed
                os._exit(code)
        except BrokenPipeError as e:
            if not _reader_left():  # another pipe (a subprocess's, a socket's): not the user's reader
                code = _internal_error(e)
            else:  # a write of ours to stdout, not through rich
                out.on_broken_pipe()
        except OSError as e:
            if e.filename is not None:  # most often a path the user gave; TVMHARNESS_DEBUG=1 shows where it came from
                error = path_error(e)
                error.__cause__ = e
                code = _user_error(error)
            elif e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):  # a write of ours to a full or read-only disk
                code = _user_error(HarnessError(f"cannot write: {e.strerror}",
                                                "free space there (or make it writable), or give another path"))
            else:  # not about a path the user gave
                code = _internal_error(e)
        except MemoryError as e:  # sizes past this host's memory (a batch, an input's shape), not a bug
            error = HarnessError(f"out of memory: {one_line(e)}", "give smaller sizes ([measure] batch, --input-shape), "
                                 "fewer models at once, or a host with more memory", FAILED)
            error.__cause__ = e
            code = _user_error(error)
        except Exception as e:
            code = _internal_error(e)
        if code:
            _error_document(kwargs, code)
            raise typer.Exit(code)

    return wrapper


_said: dict = {}  # this command's JSON document, once printed (or to print with its error); its error and fix, once said


def _error_document(options: dict, code: int) -> None:
    """Where JSON was asked for on stdout (--json, --format json) and the command ended before printing
    its document, a document of the error (with what the command had of its own: a run's rows the store
    refused): a script reading stdout gets JSON either way."""
    asked = options.get("json_out") or (options.get("fmt") == "json" and options.get("output") in (None, Path("-")))
    if asked and "error" in _said and "printed" not in _said:
        with contextlib.suppress(OSError):  # the reader gone: nothing to tell it
            _print_json(_said.get("document", {}) | {"error": {"message": _said["error"], "fix": _said.get("fix") or None,
                                                               "exit_code": code}})


def _reader_left() -> bool:
    """Whether stdout is a pipe whose reader has gone (poll says so of its write end)."""
    poller = select.poll()
    poller.register(sys.stdout.fileno(), select.POLLOUT)
    return any(event & select.POLLERR for _, event in poller.poll(0))


def _user_error(e: HarnessError) -> int:
    if os.environ.get("TVMHARNESS_DEBUG") and e.__cause__ is not None:  # the user's code raised: where
        traceback.print_exception(e.__cause__)
    _said.update(error=e.cause, fix=e.fix)
    err.print(f"[bold red]error:[/bold red] {escape(e.cause)}", highlight=False)
    if e.fix:
        err.print(f"  [bold]fix:[/bold] {escape(e.fix)}", highlight=False)
    return e.exit_code


def _internal_error(e: Exception) -> int:
    """A bug, not a user error: say so briefly, the full trace on request."""
    if os.environ.get("TVMHARNESS_DEBUG"):
        traceback.print_exc()
    _said.update(error=f"internal error: {type(e).__name__}: {e}", fix="rerun with TVMHARNESS_DEBUG=1 for the traceback, and report it")
    err.print(f"[bold red]internal error:[/bold red] {type(e).__name__}: {escape(str(e))}", highlight=False)
    err.print(f"  {_said['fix']}")
    return INTERNAL


def _print_json(doc) -> None:
    """Plain JSON on stdout: no colour, no wrapping of long strings, one document."""
    _said["printed"] = True
    sys.stdout.write(_json_text(doc))
    sys.stdout.flush()  # a reader gone is found here, in the command, not at the interpreter's exit


def _json_text(doc) -> str:
    """JSON that strict parsers read: a missing number (NaN, as pandas reads it back) is null, a
    stored time ISO 8601 with its offset."""
    from datetime import datetime

    def plain(value):
        if hasattr(value, "item") and getattr(value, "shape", None) == ():  # a numpy scalar, as pandas gives them
            value = value.item()
        if isinstance(value, float) and value != value:
            return None
        if isinstance(value, datetime):
            from .report import time_text

            return time_text(value, "iso")
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return [plain(v) for v in value] if isinstance(value, (list, tuple)) else value

    return json.dumps(plain(doc), default=str, indent=2, allow_nan=False) + "\n"


def _version(value: bool) -> None:
    if value:
        out.print(f"tvmharness {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version")] = False):
    pass


def _log_when_piped(console: Console, text: str) -> None:
    """A bar or spinner does not render in a log file, CI or a dumb terminal: there, each step becomes a line."""
    if not console.is_interactive:
        _log_line(console, text)


def _log_line(console: Console, text: str) -> None:
    """A line with the time, as rich's log gives it, without the padding to the console's width that
    log adds (trailing blanks on every line of a CI log)."""
    from datetime import datetime

    console.print(f"[{datetime.now():%H:%M:%S}] {text}", markup=False, highlight=False, soft_wrap=True)


@contextlib.contextmanager
def _status(text: str):
    """A spinner while a step runs; where a spinner does not render, a line saying the step."""
    _log_when_piped(err, text)
    with err.status(text) if err.is_interactive else contextlib.nullcontext():
        yield


class _RichProgress:
    """Shows the current step and, while timing, the repeats done (on stderr, so --json stays clean)."""

    step_resets = {"total": None, "completed": 0}  # a new step's bar starts empty

    def __init__(self, progress: Progress):
        self.progress = progress
        self.task = progress.add_task("starting", total=None)

    def step(self, text: str) -> None:
        self.progress.update(self.task, description=text, **self.step_resets)
        _log_when_piped(self.progress.console, text)

    def repeat(self, done: int, total: int) -> None:
        self.progress.update(self.task, total=total, completed=done)


def _progress() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=err, transient=True)


def _load_recipe(recipe: Path, command: str, **overrides):
    """The recipe a command's RECIPE names; a shipped one, found by its name, is said once on stderr (where it
    came from, and a file of that name here that was not taken)."""
    from .recipe import RECIPES_DIR, load_recipe, recipe_file

    path = recipe_file(recipe, command)
    if path != Path(recipe) and path.parent == RECIPES_DIR:
        mine = Path(f"{recipe}.toml")
        err.print(f"recipe: {path.stem} (shipped, {path})" + (f"; give {mine} for the one here" if mine.is_file() else ""),
                  markup=False, highlight=False)
    return load_recipe(path, **overrides)


def _measure(recipe, json_out: bool, extra: dict | None = None) -> int:
    from .pipeline import RowsNotStored, run_recipe
    from .report.summary import json_rows
    from .report.terminal import render_run

    refused = None
    with _progress() as progress:
        try:
            result = run_recipe(recipe, _RichProgress(progress))
        except RowsNotStored as error:  # every row measured: shown, then the error naming the file that keeps them
            result, refused = error.result, error
    frame, run = result.frame(), result.record()
    if json_out:
        document = (extra or {}) | {"run": run, "rows": json_rows(frame)}
        if refused:
            _said["document"] = document  # printed with the error: one document
        else:
            _print_json(document)
    else:
        render_run(frame, run, out)
    if refused:
        raise refused
    if not json_out:
        err.print(f"stored {counted(len(frame), 'row')} in {result.store.label} (run {result.run_id}) in {result.seconds:.0f} s", markup=False)
    if result.failed:
        where = "each row's reason in the JSON (rows[].reason)" if json_out else "the reasons above"
        err.print(f"[red]{len(result.failed)} row(s) failed or disagree with the baseline; see {where}[/red]")
        return FAILED
    return 0


@app.command()
@_friendly
def run(recipe: Annotated[Path, typer.Argument(metavar="RECIPE", help="recipe TOML file, or the name of one tvmharness comes with: quickstart, nightly, edge-compression")],
        target: TargetOpt = None, model: ModelOpt = None, engine: EngineOpt = None,
        repeats: RepeatsOpt = None, threads: PinnedThreadsOpt = None, memory: MemoryOpt = None, tracker: TrackerOpt = None,
        key: KeyOpt = None, store: StoreOpt = None, output_dir: OutputDirOpt = None, input_shape: InputShapeOpt = None,
        input_range: InputRangeOpt = None, json_out: JsonOpt = False) -> int:
    """Run a recipe: every model x variant x target x engine, against the fp32 PyTorch baseline."""
    from .recipe import parse_input_flags

    chosen = _load_recipe(recipe, "run", models=model, targets=target, engines=engine, repeats=repeats, threads=threads,
                         memory=memory, store=store, output_dir=output_dir, tracker=tracker, key=key,
                         inputs=parse_input_flags(input_shape, input_range))
    _kit_flags_need_a_kit_target(chosen, tracker, key)
    return _measure(chosen, json_out)


@app.command()
@_friendly
def bench(model: Annotated[str, typer.Argument(metavar="MODEL", help="zoo name, .pt2, .onnx or module:function")],
          target: TargetOpt = None, engine: EngineOpt = None, variant: VariantsOpt = None, repeats: RepeatsOpt = None,
          threads: PinnedThreadsOpt = None, memory: MemoryOpt = None,
          frontend: Annotated[str, typer.Option(metavar="torch|onnx", help="torch or onnx: how a torch model reaches TVM")] = "torch",
          tracker: TrackerOpt = None, key: KeyOpt = None, store: StoreOpt = None, output_dir: OutputDirOpt = None,
          input_shape: InputShapeOpt = None, input_range: InputRangeOpt = None, eval_data: EvalDataOpt = None,
          train_data: TrainDataOpt = None, json_out: JsonOpt = False) -> int:
    """Measure one model without a recipe (the defaults of a recipe apply)."""
    from .recipe import apply_overrides, parse_input_flags, recipe_from_dict
    from .results import BASELINE

    if train_data and not _trains(variant or []):  # it would change nothing measured
        raise _train_data_without_variant("bench measures")
    base = recipe_from_dict({"name": f"bench {model}", "models": [model]}, "(bench)")
    variants = [BASELINE, *(v for v in variant if v != BASELINE)] if variant else None  # what variants are judged against
    chosen = apply_overrides(base, targets=target, engines=engine, variants=variants, repeats=repeats, threads=threads,
                             memory=memory, store=store, output_dir=output_dir, frontend=frontend, tracker=tracker,
                             key=key, inputs=parse_input_flags(input_shape, input_range),
                             data=_data_flags(model, eval_data, train_data))
    _kit_flags_need_a_kit_target(chosen, tracker, key)
    return _measure(chosen, json_out)


class _TuneProgress(_RichProgress):
    """A bar of trials, a line per measured batch: task, its trials, its best, the model estimate."""

    step_resets = {}  # the bar of trials stays through the steps of a search

    def update(self, state, task) -> None:
        estimate = state.model_estimate_ms
        remaining = state.remaining_s
        self.progress.update(self.task, total=state.trials_total, completed=min(state.trials_done, state.trials_total),
                             description=f"{state.model}/{state.target}: trials"
                                         + (f", model ≈ {estimate:.3f} ms" if estimate else "")
                                         + (f", ~{remaining / 60:.1f} min left" if remaining else ""))
        if task is not None:
            best = "no valid candidate yet" if task.best_s is None else f"best {task.best_s * 1e3:.4g} ms"
            if task.best_s and task.flop:
                best += f" ({task.flop / task.best_s / 1e9:.1f} GFLOP/s)"
            errors = f", {task.errors} failed" if task.errors else ""
            tasks_done = sum(t.best_s is not None for t in state.tasks)
            _log_line(self.progress.console, f"{task.name}: {task.trials} trials, {best}{errors} · tasks with a record "
                      f"{tasks_done}/{len(state.tasks)} · {state.trials_done}/{state.trials_total} trials · {state.elapsed_s:.0f} s")


@app.command()
@_friendly
def tune(recipe: Annotated[Optional[Path], typer.Argument(metavar="RECIPE", help="recipe TOML file or a shipped recipe's name (its models, targets and \\[tune] budget)")] = None,
         model: ModelOpt = None, target: TargetOpt = None,
         variant: Annotated[Optional[list[str]], typer.Option("--variant", metavar="V", help="compression variant to tune (repeatable, "
                                                              "e.g. int8); default: the recipe's variants, or fp32")] = None,
         trials: Annotated[Optional[int], typer.Option(metavar="N", help="trials per model, variant and target (with --resume: the "
                                                       "interrupted tune's new total)")] = None,
         time_budget: Annotated[Optional[str], typer.Option("--time-budget", metavar="30m", help="cap per model, variant and target, e.g. 30m")] = None,
         resume: Annotated[bool, typer.Option(help="finish the budget of an interrupted tune")] = False,
         threads: PinnedThreadsOpt = None, tracker: TrackerOpt = None, key: KeyOpt = None,
         frontend: Annotated[Optional[str], typer.Option(metavar="torch|onnx", help="torch or onnx: the import whose workloads are tuned "
                                                         "(default: the recipe's, else torch)")] = None,
         measure: Annotated[bool, typer.Option(help="afterwards, measure tuned vs untuned TVM vs ONNX Runtime vs PyTorch")] = True,
         store: StoreOpt = None, output_dir: OutputDirOpt = None, input_shape: InputShapeOpt = None,
         input_range: InputRangeOpt = None, json_out: JsonOpt = False) -> int:
    """Tune models and their variants with MetaSchedule (XGBoost cost model); run, compile, bench use the records."""
    from .compress import NotApplicable, apply_variant, check_variants, parse_variant
    from .gpu import check_local_gpu
    from .models import model_name
    from .pipeline import load_models
    from .provenance import usable_cores
    from .recipe import apply_overrides, parse_duration, parse_input_flags, recipe_from_dict
    from .results import Store
    from .targets import check_local_cpu, resolve_all
    from .tune import TuneOptions, tune_model

    if recipe is None and not model:
        raise HarnessError("nothing to tune", "give a recipe or --model M (and --target T)")
    overrides = dict(models=model, variants=variant, targets=target, store=store, output_dir=output_dir, trials=trials,
                     time_budget=time_budget,
                     threads=threads, tracker=tracker, key=key, frontend=frontend,
                     inputs=parse_input_flags(input_shape, input_range))
    if recipe is None:
        chosen = apply_overrides(recipe_from_dict({"name": "tune", "models": model}, "(tune)"), **overrides)
    else:
        chosen = _load_recipe(recipe, "tune", **overrides)
    _kit_flags_need_a_kit_target(chosen, tracker, key)
    for folder in (chosen.records_root, chosen.cache_dir):  # before minutes of importing, not after
        writable_folder(folder)
    budget = chosen.tune
    threads = chosen.measure.threads
    targets_ = resolve_all(chosen.target_names(), threads)
    cores = usable_cores()
    if threads > cores and any(t.preset.runs_on == "local" and not t.on_gpu for t in targets_):
        err.print(f"note: {threads} threads, more than the {cores} usable cores here: candidates are timed "
                  "oversubscribed (they read slow, and the host's scheduling steers the search), and the records are "
                  f"kept for {threads} threads; tune at the thread count the model is deployed with",
                  markup=False, highlight=False)
    for resolved in targets_:  # one this host cannot run is refused before minutes of importing, as `run` does
        check_local_gpu(resolved)
        check_local_cpu(resolved)
    check_variants(chosen.variants)
    racks = _kit_racks(chosen, targets_)
    summaries, failures = [], []  # one tune that fails does not stop the others (an overnight list of them)

    def failed(label: str, error: Exception, target: str | None = None) -> None:
        failures.append({"model": label, "target": target, "error": reason(error, fix=False),
                         "exit_code": error.exit_code if isinstance(error, HarnessError) else FAILED})
        err.print(f"[red]{escape(label)}{escape(f' on {target}') if target else ''}: not tuned:[/red] {escape(str(error))}",
                  highlight=False)

    unloadable: list[tuple[str, HarnessError]] = []  # a model that cannot be made is one failed tune, as in `run`
    with _progress() as progress:
        models_ = load_models(chosen, _RichProgress(progress), unloadable=unloadable)
    for spec, error in unloadable:
        failed(model_name(spec), error)
    if measure:  # a store that cannot be opened is found now, not after the tune
        Store(chosen.output.store)
    for loaded, spec in ((m, v) for m in models_ for v in chosen.variants):
        chosen_variant = parse_variant(spec)
        label = loaded.name if chosen_variant.is_baseline else f"{loaded.name} / {chosen_variant.name}"
        try:  # a variant is tuned as what it compiles to: its own shapes, and int8's integer kernels
            with _status(f"compressing {label}"):
                compressed = apply_variant(loaded, chosen_variant, chosen.cache_dir)
        except NotApplicable as why:
            err.print(f"{label}: not tuned: {why.cause}", markup=False, highlight=False)
            continue
        except Exception as error:
            failed(label, error)
            continue
        for resolved in targets_:
            rack = racks.get(resolved.name)
            try:  # (the kits may have left since the last tune: then this one fails, and the next is tried)
                kits = {"tracker": rack.tracker, "key": rack.key, "kits": len(rack.status().kits),
                        "kit_wait_s": rack.wait_s} if rack is not None else {}  # candidates measured on the kits
                options = TuneOptions(trials=budget.trials, time_budget_s=parse_duration(budget.time_budget),
                                      patience=budget.patience, resume=resume, resume_trials=trials,
                                      builder_timeout_s=budget.builder_timeout, population=budget.population, **kits)
                with _progress() as progress:
                    result = tune_model(compressed, resolved, options, frontend=chosen.frontend, cache_dir=chosen.cache_dir,
                                        records_root=chosen.records_root, threads=threads, progress=_TuneProgress(progress))
            except Exception as error:  # its records so far are kept; the next model, variant or target goes on
                failed(label, error, resolved.name)
                continue
            summaries.append(result.summary() | {"variant": chosen_variant.name})
            if not json_out:
                tuned = sum(t.best_s is not None for t in result.tasks)
                emulated = f" (EMULATED kit, {result.emulated}: its timings prove the path, not the board's speed)"
                out.print(f"{label} on {resolved.name}{emulated if result.emulated else ''}: "  # the tune's result: stdout
                          f"{result.trials_run} trials in {result.seconds:.0f} s; "
                          f"{tuned} of {len(result.tasks)} tasks have records"
                          + (f" ({len(result.skipped_known)} reused from earlier tunes)" if result.skipped_known else "")
                          + (f"; {result.stopped}" if result.stopped else "") + "".join(f"; {n}" for n in result.notes)
                          + f"; records {result.records_dir}"
                          + (f" (sha256 of those its builds read: {result.records_hash[:16]})" if result.records_hash else ""),
                          markup=False, highlight=False, soft_wrap=True)
    code = worst((f["exit_code"] for f in failures))
    if failures:
        err.print(f"[red]{len(failures)} tune(s) failed[/red]: " + escape("; ".join(
            f"{f['model']}{' on ' + f['target'] if f['target'] else ''}: {f['error']}" for f in failures)), highlight=False)
    # A dev-kit target whose kits left (or whose tracker stopped) during its tune is not measured: that
    # would fail the same way, as a second error; the others are.
    lost = {name for name, rack in racks.items() if any(f["target"] == name for f in failures) and not _kits_left(rack)}
    still = [spec for spec, t in zip(chosen.target_names(), targets_) if t.name not in lost]  # a preset file by its path
    if measure and failures and not summaries:  # nothing tuned (another tune holds the folder, the model failed): nothing to compare
        err.print("not measured: no tune succeeded", markup=False, highlight=False)
        measure = False
    if not measure or not still:
        if json_out:
            _print_json({"tune": summaries, "failed": failures})
        return code
    if lost:
        err.print(f"not measured: {', '.join(sorted(lost))} (its kits left during its tune: `tvmharness tune "
                  "--resume` once one is back)", markup=False, highlight=False)
    engines = ["tvm", "tvm-untuned", "torch", "onnxruntime"]
    try:
        _said["document"] = {"tune": summaries, "failed": failures}  # the tunes, where measuring them fails
        return worst([code, _measure(apply_overrides(chosen, engines=engines, targets=still), json_out,
                                     extra={"tune": summaries, "failed": failures})])
    except KeyboardInterrupt as stop:  # (a run's own message says what it stored)
        raise Interrupted("interrupted while measuring the tuned builds: the tuning is done and its records kept; "
                          + (str(stop).removeprefix("interrupted: ") if isinstance(stop, Interrupted) and str(stop)
                             else _ROWS_KEPT)) from None


def _kits_left(rack) -> bool:
    try:
        return bool(rack.status().kits)
    except HarnessError:  # none under the key, or no tracker answers
        return False


def _kit_flags_need_a_kit_target(recipe, tracker: str | None, key: str | None) -> None:
    """--tracker and --key choose the kits of targets that run on dev kits: with none of those among
    the targets, they would change nothing, unsaid (a recipe's [devices] may well outlive its targets)."""
    from .targets import find_preset

    if not (tracker or key):
        return
    names = recipe.target_names()
    if any(find_preset(name).runs_on == "rpc" for name in names):
        return
    flag = "--tracker" if tracker else "--key"
    raise HarnessError(f"{flag} chooses dev kits, and target{'s' if len(names) > 1 else ''} {', '.join(names)} "
                       f"run{'' if len(names) > 1 else 's'} on this host",
                       f"give a target that runs on dev kits (--target arm, x86-rpc, ...: `tvmharness targets` says "
                       f"where each runs), or leave out {flag}")


def _kit_racks(recipe, targets) -> dict:
    """The kits that measure candidates for remote targets, checked before any tuning starts."""
    from .pipeline import kit_racks

    with _progress() as progress:
        return kit_racks(recipe, targets, _RichProgress(progress))


@app.command()
@_friendly
def compile(model: Annotated[str, typer.Argument(metavar="MODEL", help="zoo name, .pt2, .onnx or module:function")],
            target: Annotated[Optional[str], typer.Option("--target", "-t", metavar="T", help="target preset (default: this host's, "
                                                          "x86 or aarch64)")] = None,
            variant: Annotated[Optional[list[str]], typer.Option(metavar="V", help="compression variant, e.g. int8 or prune:0.5+finetune "
                                                               "(one: compile builds one artifact)")] = None,
            out_dir: Annotated[Optional[Path], typer.Option("--out", metavar="DIR", help="artifact directory (default: a folder under artifacts/ in the output dir, named by model, variant, "
                                                             "frontend, target, threads and input sizes, e.g. digits_cnn-int8-onnx-x86)")] = None,
            frontend: Annotated[str, typer.Option(metavar="torch|onnx", help="torch or onnx")] = "torch",
            threads: Annotated[Optional[int], typer.Option(metavar="N", min=1, help="threads the module is built for")] = None,
            output_dir: OutputDirOpt = None, input_shape: InputShapeOpt = None, input_range: InputRangeOpt = None,
            train_data: TrainDataOpt = None,
            check: Annotated[bool, typer.Option("--check/--no-check", help="run the artifact here against its model's "
                                                "reference engine first, and write it only if they agree")] = True,
            json_out: JsonOpt = False) -> int:
    """Build a deployable artifact: model.so and manifest.json (hashes, target, compression, versions, git commit)."""
    from .build import build_tvm, earlier_artifact_files, export_artifact, fit_kit_threads, load_artifact
    from .cache import short_name
    from .compress import apply_variant, parse_variant
    from .engines.tvm import describe_artifact
    from .engines import EngineOptions
    from .frontend import frontend_for
    from .models import same_origin
    from .native_log import NATIVE_LOG
    from .pipeline import check_artifact, load_models
    from .recipe import apply_overrides, parse_input_flags, recipe_from_dict
    from .report import size_text
    from .results import BASELINE
    from .targets import check_toolchain, portability_note, resolve

    if len(variant or []) > 1:  # a list option only to say so: a plain one keeps the last and drops the rest unsaid
        raise HarnessError(f"compile builds one artifact, and --variant was given {len(variant)} times ({', '.join(variant)})",
                           "run compile once per variant (`tvmharness bench MODEL --variant A --variant B` measures several)")
    defaults = apply_overrides(recipe_from_dict({"models": [model]}, "(compile)"), frontend=frontend, output_dir=output_dir,
                               inputs=parse_input_flags(input_shape, input_range), data=_data_flags(model, None, train_data))
    writable_folder(defaults.output.dir)  # its cache: before anything is imported
    if out_dir is not None:  # someone's folder, or one that cannot be made, is refused before minutes of building
        earlier_artifact_files(out_dir)
        folder_can_be_made(out_dir)
    chosen = parse_variant(variant[0] if variant else BASELINE)
    target = target or defaults.target_names()[0]
    resolved = resolve(target, threads or defaults.measure.threads)
    fixed = resolved.tvm_dict.get("num-cores")
    if threads and isinstance(fixed, int) and fixed != threads:  # a board's preset names its cores
        raise HarnessError(f"target {resolved.name} builds for the {fixed} threads its preset fixes (num-cores = {fixed}), "
                           f"not --threads {threads}", f"drop --threads, or use a preset of your own with num-cores = "
                           f"{threads} (--target path.toml)")
    check_toolchain(resolved)  # before minutes of TVM compiling, not after
    threads_note = fit_kit_threads(resolved, threads, defaults.records_root)
    if train_data and not _trains([chosen]):  # else it would be ignored, unsaid
        raise _train_data_without_variant("compile builds")
    (loaded,) = load_models(defaults)
    name = loaded.name
    if not chosen.is_baseline:
        with _status(f"compressing {model}: {chosen.name}"):
            loaded = apply_variant(loaded, chosen, defaults.cache_dir)
    if out_dir is None:  # one folder per model, variant, frontend, target, thread count and input sizes asked
        built_through = frontend_for(loaded, frontend)  # (before building: a folder another model holds is said at once)
        parts = [name, *([] if chosen.is_baseline else [re.sub(r"[^\w.-]+", "_", chosen.name)]),
                 *([] if built_through == "torch" else [built_through]), resolved.name,
                 *([f"{threads}threads"] if threads and threads != defaults.measure.threads else []),
                 *(re.sub(r"[^\w.-]+", "_", text.replace("=", "")) for text in input_shape or [])]
        out_dir = defaults.output.dir / "artifacts" / short_name("-".join(parts))
        before = load_artifact(out_dir)
        there = before.manifest.get("model_origin") if before is not None else None
        if there and not same_origin(there, loaded.origin):
            raise HarnessError(f"{out_dir} holds {name} from {there}, and this {name} is from {loaded.origin}: a model "
                               "of the same name, not this one", "give this one a folder of its own with --out DIR")
    with _status(f"building {model} for {target}"):
        artifact = build_tvm(loaded, resolved, frontend, defaults.cache_dir, defaults.records_root)
    check_record = {"checked": False, "summary": "not checked (--no-check)"}
    if check:  # a build that computes something else is not shipped
        with _status(f"checking {model} for {target} against its model"):
            check_record = check_artifact(loaded, artifact, resolved, defaults, EngineOptions(
                frontend=frontend, cache_dir=defaults.cache_dir, threads=resolved.tvm_dict.get("num-cores") or defaults.measure.threads,
                records_root=defaults.records_root))
    # What a deployer must know: which CPUs it runs on, how it was tuned (or where records it missed are),
    # what the compression did (int8's calibration data), and what TVM warned of.
    build_notes, _ = describe_artifact(artifact)
    cpu_note = portability_note(resolved)
    deploy_notes = [*([cpu_note] if cpu_note else []), *([threads_note] if threads_note else []), *build_notes, *loaded.notes]
    manifest = export_artifact(artifact, out_dir, loaded, resolved, check_record, deploy_notes)
    notes = [check_record["summary"], *deploy_notes,
             *(f"TVM warned ({w['count']}x): {w['message']} (its log: {out_dir / NATIVE_LOG})" for w in manifest["tvm_warnings"])]
    if json_out:
        _print_json({"dir": str(out_dir), "cache_hit": artifact.cache_hit, "notes": notes, "manifest": manifest})
    else:
        m = manifest
        variant_text = "" if chosen.is_baseline else f" / {chosen.name}"
        out.print(f"{'reused cached build' if artifact.cache_hit else 'built'} {m['model']}{variant_text} for {target} "
                  f"({m['target']['tvm']}) -> {out_dir}/{m['library']['file']} ({size_text(m['library']['bytes'])}, "
                  f"sha256 {m['library']['sha256'][:16]}, {'tuned' if artifact.tuned else 'untuned'})", markup=False,
                  soft_wrap=True)
        for note in notes:  # a line each, however long (a log or a grep reads it whole)
            out.print(f"  {note}", markup=False, highlight=False, soft_wrap=True)
    return 0


FORMATS = ("table", "md", "json", "csv", "junit")


def _since(value: Optional[str]):
    from datetime import datetime, timezone

    if value is None:
        return None
    try:
        since = datetime.fromisoformat(value)
    except ValueError:
        raise HarnessError(f"--since {value!r} is not a date", "use an ISO date such as 2026-11-01 or 2026-11-01T06:00") from None
    return since if since.tzinfo else since.replace(tzinfo=timezone.utc)


def _render_verdicts(run: dict, verdicts, frame, fmt: str, output: Optional[Path]) -> None:
    from .report import summary
    from .report.terminal import fitted, render_run, verdict_table

    if fmt == "table":
        if output is not None:
            raise HarnessError("--format table prints to the terminal", "pick --format md, json, csv or junit to write a file")
        render_run(frame[frame["run_id"] == run["id"]].reset_index(drop=True), run, out)
        out.print(fitted(verdict_table(verdicts), out))
        return
    text = {"md": lambda: summary.markdown(run, verdicts),
            "json": lambda: _json_text(summary.to_json(run, verdicts, frame)),
            "csv": lambda: summary.to_csv(frame, verdicts),
            "junit": lambda: summary.junit(run, verdicts)}[fmt]()
    if output is None:
        _said["printed"] = True
        sys.stdout.write(text)
    else:
        write_whole(output, text)


def _writable(path: Optional[Path], example: str) -> None:
    """A file a report goes to, tried before the report is made: a bad path fails first, not after a table.
    `example` is a file name the fix offers in a folder given in its place (report.html for --html)."""
    if path is None:
        return
    if path.is_dir():
        raise HarnessError(f"{path} is a folder", "give a file's path (one in that folder, e.g. "
                           f"{path / example})")
    if path.exists() and not path.is_file():  # a device or a pipe: opening a pipe to try it would wait for a reader
        if not os.access(path, os.W_OK):
            raise HarnessError(f"cannot write {path}: permission denied", "give a path this user may write")
        return
    # written beside, then renamed over it (write_whole): its folder must take a new file
    writable_folder((path.resolve() if path.is_symlink() else path).parent)


def _trains(variants: list[str]) -> bool:
    """Whether any of the variants trains or calibrates on training data."""
    from .compress import parse_variant

    return any(step.uses_train_data() for v in variants for step in parse_variant(v).steps)


def _train_data_without_variant(what: str) -> HarnessError:
    return HarnessError(f"--train-data is what variants train and calibrate on (finetune, distill, static int8, a "
                        f"gradual prune), and this {what} no variant that does", "add such a --variant (e.g. --variant "
                        "int8), or leave --train-data out")


def _format(value: str) -> str:
    if value not in FORMATS:
        raise HarnessError(f"unknown format '{value}'", f"use one of {', '.join(FORMATS)}")
    return value


@app.command()
@_friendly
def report(store: Annotated[Optional[str], typer.Option("--store", metavar="URL", help="results store: a SQLite path or SQLAlchemy URL "
                                                        "(default: a recipe's default \\[output] store)")] = None,
           fmt: Annotated[str, typer.Option("--format", "-f", metavar="FORMAT", help="table, md, json, csv or junit")] = "table",
           html: Annotated[Optional[Path], typer.Option("--html", metavar="FILE.html", help="also write a self-contained HTML report here")] = None,
           since: Annotated[Optional[str], typer.Option(metavar="DATE", help="show the history only from this date (UTC, as reports give "
                                                        "times; or with its offset, e.g. 2026-11-01T06:00+09:00): the "
                                                        "HTML's sparklines and the CSV's rows of other runs (the judged run "
                                                        "is shown whole, and verdicts still weigh the whole history)")] = None,
           run_id: Annotated[Optional[int], typer.Option("--run", metavar="ID", help="the run to judge (default: the newest with measurements)")] = None,
           output: Annotated[Optional[Path], typer.Option("--output", "-o", metavar="FILE", help="write the md/json/csv/junit text here (- : stdout)")] = None,
           fail_on_regression: Annotated[bool, typer.Option("--fail-on-regression", help="exit 1 when the run has a regression (as "
                                                            "`nightly` does) or did not finish, so a CI job that runs, then "
                                                            "reports, can gate on it")] = False) -> int:
    """Report from the store alone: the newest run with measurements (or --run) with a verdict per series against its history."""
    from .report import unfinished
    from .report.regress import history_as_of, judge_run, regressions
    from .results import DEFAULT_STORE, Store

    store = DEFAULT_STORE if store is None else store  # imported here: the store's module slows every command's start
    fmt = _format(fmt)
    output = None if output == Path("-") else output  # the usual "-": stdout
    suffix = {"table": "md", "junit": "xml"}.get(fmt, fmt)  # what --output holds: the --format's text (table's: none)
    for path, example in ((output, f"report.{suffix}"), (html, "report.html")):
        _writable(path, example)  # (it writes nothing: the store itself passes, and is refused below)
    history = Store.existing(store)
    for flag, path in (("--output", output), ("--html", html)):
        history.refuse_as_output(path, flag)
    when = _since(since)
    frame = history.frame()
    run, verdicts = judge_run(history, run_id, frame=frame)
    if when is not None:
        frame = history.frame(since=when, whole_run=run["id"])
    frame = history_as_of(frame, run)
    _render_verdicts(run, verdicts, frame, fmt, output)
    if html is not None:
        from .report.html import write_html

        write_html(history, html, since=when, judged=(run, verdicts, frame))
        err.print(f"wrote {html}", markup=False)
    if fail_on_regression and (bad := regressions(verdicts)):
        err.print(f"run {run['id']}: {len(bad)} regression(s)", highlight=False)
        return FAILED
    if fail_on_regression and unfinished(run):  # what it did not reach is no pass (JUnit says it as an error)
        err.print(unfinished(run), highlight=False, markup=False)
        return FAILED
    return 0


store_app = typer.Typer(no_args_is_help=True, help="The results store: `store load` puts in the rows it refused mid-run.")
app.add_typer(store_app, name="store")


@store_app.command("load")
@_friendly
def store_load(file: Annotated[Path, typer.Argument(metavar="FILE", help="an unsaved-rows-run-*.jsonl file a run named when its store refused rows")],
               store: Annotated[Optional[str], typer.Option("--store", metavar="URL", help="the store to put them in (default: the one that refused them)")] = None) -> int:
    """Put rows a run's store refused (locked, read-only, full, unreachable) into it, or into another store."""
    from .results import Store, UnsavedRows, hides_password

    with UnsavedRows.loading(file) as kept:  # a second load of the file at once waits, then finds it loaded
        if kept is None:
            err.print(f"{file} was loaded by another `tvmharness store load` meanwhile, which removed it: nothing to do",
                      markup=False, highlight=False)
            return 0
        if store is None and kept.store_file is not None and not kept.store_file.is_file():
            raise HarnessError(f"the results store that refused these rows, {kept.store_file}, is not there",
                               "give the store to put them in with --store (a new path starts one)")
        if store is None and kept.store_file is None and hides_password(kept.store_label):  # the file never keeps a password
            raise HarnessError(f"the results store that refused these rows, {kept.store_label}, needs its password, "
                               "which the file of rows does not keep", f"give its URL with --store: tvmharness store load {file} "
                               "--store 'postgresql+psycopg2://USER:PASSWORD@HOST/DB'")
        into = Store(store or str(kept.store_file or kept.store_label))
        run_id, same, there = into.load_unsaved(kept)
        file.unlink()  # in the store now
    where = f"run {run_id}" if same else f"run {run_id}, a copy of run {kept.run['id']}'s record (that store does not hold it)"
    already = f"; {counted(there, 'row')} of them {'was' if there == 1 else 'were'} there already (a copy of the file loaded before)" if there else ""
    report_run = f"`tvmharness report --run {run_id} --store {'URL' if hides_password(into.label) else into.label}`"
    err.print(f"stored {counted(len(kept.rows) - there, 'row')} in {into.label} ({where}){already}; removed {file}; "
              f"{report_run} shows the run", markup=False, highlight=False)
    if kept.cut_short == "row":
        err.print(f"warning: its last line was cut short (its disk filled as it was written) and is not stored: measure "
                  f"that row again ({report_run} shows which are there)", markup=False, highlight=False)
    elif kept.cut_short == "end":
        err.print(f"warning: its last line, when run {run_id} finished, was cut short: the run stays unfinished, its rows "
                  "all stored", markup=False, highlight=False)
    return 0


@app.command()
@_friendly
def nightly(recipe: Annotated[Path, typer.Argument(metavar="RECIPE", help="recipe TOML file, or the name of one tvmharness comes with: nightly, quickstart, edge-compression")],
            store: StoreOpt = None, repeats: RepeatsOpt = None, output_dir: OutputDirOpt = None,
            out_dir: Annotated[Optional[Path], typer.Option("--out", metavar="DIR", help="where summary.md, junit.xml and report.html go (default: nightly/ in the output dir)")] = None,
            fmt: Annotated[str, typer.Option("--format", "-f", metavar="FORMAT", help="what to print: table, md, json, csv or junit")] = "table") -> int:
    """Run a recipe, then judge each series against its history; exit 1 when something regressed."""
    fmt = _format(fmt)
    chosen = _load_recipe(recipe, "nightly", repeats=repeats, store=store, output_dir=output_dir)
    dest = out_dir or chosen.output.dir / "nightly"
    writable_folder(chosen.output.dir)
    writable_folder(dest)  # before measuring: a bad --out or --store must not cost a night, nor last night's reports
    ignored_by_git(dest, [".lock"], "the lock a nightly holds while it writes here")
    with file_lock(dest / ".lock", wait=False) as alone:  # cron starting tonight's before last night's ended
        if not alone:
            raise HarnessError(f"another nightly is writing its reports to {dest}",
                               "wait for it to finish, or give this one another --out (two at once on one host "
                               "also time each other's load)", RETRY)
        return _nightly(chosen, dest, fmt)


def _nightly(chosen, dest: Path, fmt: str) -> int:
    """The night, its verdicts and its reports, while it alone holds the reports folder."""
    from .pipeline import confirm_latency, run_recipe
    from .report import summary
    from .report.html import write_html
    from .report.regress import judge_run, needs_confirmation, regressions
    from .results import Store

    Store(chosen.output.store).check_intact()  # a night measured into a damaged store would not be reported
    for name in ("summary.md", "junit.xml", "report.html"):  # a night that ends before its reports leaves none, not last night's
        (dest / name).unlink(missing_ok=True)
    interrupted = False
    with _progress() as progress:
        result = run_recipe(chosen, _RichProgress(progress), every_night=True)
        frame = result.store.frame()  # read once for the verdicts and the reports (a long history takes seconds)
        run, verdicts = judge_run(result.store, result.run_id, frame=frame)
        suspects = [v for v in verdicts if needs_confirmation(v)]
        if suspects:  # a spell of host load looks like a step: measure those series again
            err.print(f"latency moved in {len(suspects)} series; measuring again to confirm", highlight=False)
            failure = None
            try:  # against a build at the reference level: last night's may be the step itself
                confirm_latency(chosen, result.run_id, [(v.series, v.evidence.get("level_run_id", v.previous_run_id))
                                                        for v in suspects], _RichProgress(progress))
            except KeyboardInterrupt:  # the night itself is measured: its reports still go out
                interrupted, failure = True, "measuring again was interrupted (Ctrl-C, SIGTERM or SIGHUP)"
                err.print(f"{failure}; those changes stay unconfirmed", markup=False, highlight=False)
            except Exception as e:  # the night's rows are stored: its reports still go out, those changes unconfirmed
                failure = f"measuring again failed: {reason(e, fix=False)}"
                err.print(f"{failure}; those changes stay unconfirmed", markup=False, highlight=False)
            frame = result.store.frame()  # now with the confirmation
            run, verdicts = judge_run(result.store, result.run_id, unconfirmed_why=failure, frame=frame)
    _render_verdicts(run, verdicts, frame, fmt, None)
    if not any(r["id"] < result.run_id for r in result.store.runs()):  # every series "new", every night green: say why
        err.print(f"note: {result.store.label} held no runs before this one: a new history, nothing to judge against "
                  "(if a history was meant, check --store or the recipe's [output] store)", markup=False, highlight=False)
    write_whole(dest / "summary.md", summary.markdown(run, verdicts))
    write_whole(dest / "junit.xml", summary.junit(run, verdicts))
    write_html(result.store, dest / "report.html", judged=(run, verdicts, frame))
    bad = regressions(verdicts)
    err.print(f"run {run['id']}: {len(verdicts)} verdicts, {len(bad)} regression(s); wrote {dest}/summary.md, "
              f"junit.xml, report.html", markup=False, highlight=False)
    for v in bad:
        err.print(f"[red]regression[/red] {escape(v.name)}: {escape(v.summary())}", highlight=False)
    return _interrupted_code() if interrupted else FAILED if bad else 0


@app.command()
@_friendly
def cache(output_dir: OutputDirOpt = None,
          prune_unused_for: Annotated[Optional[str], typer.Option(
              "--prune-unused-for", metavar="14d", help="remove the entries no command has used for this long, e.g. 14d (a run "
              "that needs one again makes it again); while no run uses the output folder")] = None,
          json_out: JsonOpt = False) -> int:
    """What the cache holds (builds, exports, int8 models, trained weights), by stage; --prune-unused-for trims it.

    Each stage's entries, size and when each was last used. A nightly's cache grows by a build of each
    model whenever its tuning records change."""
    from datetime import datetime, timezone

    from .cache import cache_entries, prune_cache
    from .recipe import Output, parse_duration
    from .report import size_text

    root = (output_dir or Output().dir) / "cache"
    removed, refused = prune_cache(root, parse_duration(prune_unused_for, "--prune-unused-for")) if prune_unused_for else ([], [])
    stages: dict[str, dict] = {}
    for entry in cache_entries(root):
        stage = stages.setdefault(entry.stage, {"stage": entry.stage, "entries": 0, "bytes": 0, "oldest_use": entry.last_used})
        stage["entries"] += 1
        stage["bytes"] += entry.bytes
        stage["newest_use"] = entry.last_used

    def utc(seconds: float) -> str:
        return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")

    kept = [s | {"oldest_use": utc(s["oldest_use"]), "newest_use": utc(s["newest_use"])} for s in stages.values()]
    if json_out:
        _print_json({"cache": str(root), "stages": kept, "removed": {"entries": len(removed),
                                                                     "bytes": sum(e.bytes for e in removed)}})
        return _not_pruned(refused)
    if removed:
        out.print(f"removed {len(removed)} entries unused for {prune_unused_for} "
                  f"({size_text(sum(e.bytes for e in removed))})", markup=False, highlight=False)
    if not kept:
        out.print(f"nothing cached under {root}", markup=False, highlight=False)
        return _not_pruned(refused)
    table = Table("stage", "entries", "size", "least recently used (UTC)", "most recently used (UTC)",
                  title=Text(f"cache: {root}"))
    for s in kept:
        table.add_row(s["stage"], str(s["entries"]), size_text(s["bytes"]), s["oldest_use"][:16].replace("T", " "),
                      s["newest_use"][:16].replace("T", " "))
    out.print(table)
    return _not_pruned(refused)


def _not_pruned(refused: list[str]) -> int:
    if refused:  # a read-only cache: said, not passed over as if nothing were unused
        raise HarnessError(f"could not remove {len(refused)} unused {'entry' if len(refused) == 1 else 'entries'} (the first: "
                           f"{refused[0]})", "make the cache writable for this user, then prune again")
    return 0


@app.command()
@_friendly
def targets(json_out: JsonOpt = False) -> int:
    """List the target presets and what they expand to on this host."""
    from .targets import presets, resolve

    rows = []
    for name, preset in sorted(presets().items()):
        try:
            expanded, note = resolve(name, _threads_default()).tvm_dict, ""
        except HarnessError as e:
            expanded, note = preset.tvm, e.cause
        rows.append({"name": name, "arch": preset.arch, "runs_on": preset.runs_on, "device": preset.device,
                     "rpc_keys": list(preset.rpc_keys), "description": preset.description, "tvm_target": expanded,
                     "note": note})
    if json_out:
        _print_json(rows)
        return 0
    table = Table("target", "host arch", "runs on", "TVM target on this host", "description", title="target presets")
    for r in rows:
        # text, not markup: a preset file is the user's (TVMHARNESS_TARGETS)
        runs_on = r["runs_on"] + (", GPU" if r["device"] == "cuda" else "")
        if r["rpc_keys"]:  # what `devkit serve --key` a board of it is served under
            runs_on += f" (kit keys: {', '.join(r['rpc_keys'])})"
        table.add_row(Text(r["name"]), Text(r["arch"]), Text(runs_on),
                      Text(json.dumps(r["tvm_target"])), Text(r["description"] + (f" ({r['note']})" if r["note"] else "")))
    out.print(table)
    return 0


@app.command()
@_friendly
def models(json_out: JsonOpt = False) -> int:
    """List the model zoo (user files: .pt2, .onnx, module:function)."""
    from .models import ZOO
    from .report.terminal import input_line

    rows = [{"name": n, "inputs": [i.with_batch(1).describe() for i in e.inputs], "description": e.description}
            for n, e in ZOO.items()]
    if json_out:
        _print_json(rows)
        return 0
    table = Table("model", "inputs (batch 1)", "description", title="model zoo (also: path.pt2, path.onnx, module:function)")
    for r in rows:
        table.add_row(r["name"], input_line(r["inputs"]), r["description"])
    out.print(table)
    return 0


@app.command()
@_friendly
def doctor(json_out: JsonOpt = False) -> int:
    """Versions, TVM build flags (LLVM, CUDA), cross compilers, CPU features, GPU."""
    from .doctor import checks

    rows = checks()
    missing = [r["check"] for r in rows if r["required"] and not r["ok"]]
    if json_out:
        _print_json(rows)
    else:
        table = Table("check", "", "detail", "fix", title="tvmharness doctor")
        for r in rows:
            state = "[green]ok[/green]" if r["ok"] else "[red]NO[/red]" if r["required"] else "[yellow]no[/yellow]"
            table.add_row(r["check"], state, Text(r["detail"]), Text(r["fix"]))
        out.print(table)
        if missing:
            err.print(f"[red]tvmharness cannot work here without: {escape(', '.join(missing))}[/red] (their fixes are above)")
    return FAILED if missing else 0  # a script can gate on it; GPU, cross compilers and the emulator are optional


tracker_app = typer.Typer(no_args_is_help=True, help="TVM's RPC tracker: it hands free dev kits to jobs.")
devkit_app = typer.Typer(no_args_is_help=True, help="Dev kits: TVM's RPC server registered with a tracker.")
app.add_typer(tracker_app, name="tracker")
app.add_typer(devkit_app, name="devkit")
HostOpt = Annotated[str, typer.Option(metavar="ADDRESS", help="address to listen on; anything but loopback exposes an unauthenticated server")]


def _warn(text: str) -> None:
    err.print(f"[bold yellow]warning:[/bold yellow] {escape(text)}", highlight=False)


@tracker_app.command("start")
@_friendly
def tracker_start(host: HostOpt = "127.0.0.1",
                  port: Annotated[int, typer.Option(metavar="PORT", min=1, max=65535, help="port to listen on")] = 9190) -> int:
    """Run TVM's RPC tracker in the foreground until Ctrl-C."""
    from .remote.tracker import run_tracker, warn_if_wide

    warning = warn_if_wide(host)
    if warning:
        _warn(warning)
    reach = socket.gethostname() if host in ("0.0.0.0", "::") else host  # what a board dials, not "any address"

    def listening() -> None:  # said once it is: a port another holds is an error instead
        err.print(f"tracker listening on {host}:{port}; start kits with `tvmharness devkit serve --tracker {reach}:{port} "
                  f"--key KEY` (or `tvmharness devkit emulate aarch64 --tracker {reach}:{port}`); Ctrl-C stops it",
                  highlight=False)

    try:
        run_tracker(host, port, listening)
    except KeyboardInterrupt:
        err.print("tracker stopped")
    return 0


def _threads_default() -> int:
    from .recipe import Measure

    return Measure().threads


KitThreadsOpt = Annotated[Optional[int], typer.Option(metavar="N", min=1, help="TVM threads on the kit (default: this machine's physical cores)")]
PortOpt = Annotated[int, typer.Option(metavar="PORT", min=1, max=65535, help="first port to try for the kit's server")]


@devkit_app.command("serve")
@_friendly
def devkit_serve(tracker: Annotated[str, typer.Option(metavar="HOST:PORT", help="HOST:PORT of the RPC tracker")],
                 key: Annotated[str, typer.Option(metavar="KEY", help="the key jobs ask the tracker for, e.g. rpi4 or aarch64")],
                 host: HostOpt = "127.0.0.1", port: PortOpt = 9090, threads: KitThreadsOpt = None) -> int:
    """Serve this machine as a dev kit (run it on the board) until Ctrl-C."""
    from .remote.devkit import host_python, serve
    from .remote.tracker import parse_address

    serve(parse_address(tracker), key, host_python(), host, port, threads or _threads_default(), _warn)
    return _kit_stopped(key)


def _kit_stopped(key: str) -> int:
    with contextlib.suppress(OSError):  # a closed terminal (SIGHUP) takes no message
        err.print(f"kit {key} stopped; it is off the tracker", markup=False, highlight=False)
    return 0


@devkit_app.command("emulate")
@_friendly
def devkit_emulate(arch: Annotated[str, typer.Argument(metavar="ARCH", help="the architecture to emulate: aarch64")],
                   tracker: Annotated[str, typer.Option(metavar="HOST:PORT", help="HOST:PORT of the RPC tracker")],
                   key: Annotated[str, typer.Option(metavar="KEY", help="the key jobs ask the tracker for")] = EMULATED_KEY,
                   host: HostOpt = "127.0.0.1", port: PortOpt = 9090, threads: KitThreadsOpt = None,
                   setup_only: Annotated[bool, typer.Option("--setup-only", help="set the kit up (cached), then exit")] = False) -> int:
    """An aarch64 dev kit emulated here (qemu-user): proves the ARM path end to end, not ARM speed."""
    from .remote.devkit import emulated_aarch64, serve
    from .remote.tracker import parse_address

    if arch != "aarch64":
        raise HarnessError(f"cannot emulate '{arch}'", "emulate aarch64")
    address = parse_address(tracker)
    with _progress() as progress:
        kit = emulated_aarch64(_RichProgress(progress).step)
    if setup_only:
        err.print(f"emulated aarch64 kit ready in {kit.root}", markup=False, highlight=False)
        return 0
    err.print(f"emulated aarch64 kit ({kit.emulated}); its rows are marked emulated", highlight=False)
    serve(address, key, kit, host, port, threads or _threads_default(), _warn)
    return _kit_stopped(key)


@app.command()
@_friendly
def devices(tracker: Annotated[str, typer.Option(metavar="HOST:PORT", help="HOST:PORT of the RPC tracker")] = "127.0.0.1:9190",
            json_out: JsonOpt = False) -> int:
    """The tracker's dev kits: keys, kits free and busy, requests pending (waiting for a free kit), and
    each kit's address, architecture and whether it is emulated ("?": a kit that does not say, such as
    TVM's own server)."""
    from dataclasses import asdict

    from .remote.tracker import parse_address, summary

    address = parse_address(tracker)
    keys = summary(address)
    if json_out:
        _print_json({"tracker": str(address), "keys": [asdict(k) | {"busy": k.busy, "kit_info": [_kit_json(kit) for kit in k.kit_info]}
                                                       for k in keys.values()]})
        return 0
    table = Table("key", "kits", "free", "busy", "pending", "address", "arch", "emulated", "threads",
                  title=Text(f"dev kits at {address}"))
    for k in keys.values():  # text, not markup: keys, addresses and what kits say are whatever the tracker's clients said
        counts = [Text(k.key), str(len(k.kits)), str(k.free), str(k.busy), str(k.pending)]
        for kit in k.kit_info or [None]:  # (a key with requests pending and no kit: its row alone)
            table.add_row(*counts, *(_kit_cells(kit) if kit else []))
            counts = [""] * len(counts)  # the key's figures once, on its first kit's row
    out.print(table if keys else Text(f"no kits at {address}: start one with `tvmharness devkit serve --tracker {address} --key KEY`"))
    return 0


def _kit_json(kit) -> dict:
    """A kit as `devices --json` gives it: the table's names, `emulated` a yes or no a script can test
    (and what emulates it, apart); null for what the kit did not say."""
    return {"address": kit.address, "arch": kit.machine, "bits": kit.bits,
            "emulated": None if kit.emulated is None else bool(kit.emulated), "emulator": kit.emulated or None,
            "threads": kit.threads}


def _kit_cells(kit) -> list[Text]:
    """A kit's address, architecture, emulated or not and threads; "?" for what it did not say."""
    arch = kit.machine or "?"
    if kit.bits == 32 and "64" in arch:  # a 32-bit userland on a 64-bit kernel: the libraries it loads are 32-bit
        arch += " (32-bit Python)"
    emulated = "?" if kit.emulated is None else kit.emulated or "no"
    return [Text(kit.address), Text(arch), Text(emulated), Text("?" if kit.threads is None else str(kit.threads))]


_STOPPED_BY: dict = {"signal": signal.SIGINT}  # what interrupted the command: Ctrl-C unless SIGTERM or SIGHUP came
REPEATED_SIGNAL_S = 2.0  # a SIGTERM or SIGHUP this soon after the last is the same stop, sent twice


def _interrupted_code() -> int:
    """An interrupted command's exit code as a shell gives a process that signal ended: 130 for Ctrl-C, 143 for
    SIGTERM, 129 for SIGHUP."""
    return 128 + _STOPPED_BY["signal"]


def _terminated(signum, frame) -> None:
    """SIGTERM (a cancelled CI job, `kill`) and SIGHUP (the terminal closed) take Ctrl-C's way out: rows
    kept, run marked unfinished, one message, exit 143 (129). The SIGINT handler of the moment is called
    with it (a tune's notes it and stops at its next call into Python); not re-raised as SIGINT, which a
    job started with `&` from a script ignores."""
    now = time.monotonic()
    if now - _STOPPED_BY.get("terminated_at", -math.inf) < REPEATED_SIGNAL_S:  # `timeout` signals the process, then
        return                                                                 # its group: one stop, under way
    _STOPPED_BY.update(signal=signum, terminated_at=now)
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signum, frame)  # (Python's own Ctrl-C handler raises KeyboardInterrupt whatever the signal)
    else:  # SIG_IGN or SIG_DFL: Python's own Ctrl-C
        raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, _terminated)
    if signal.getsignal(signal.SIGHUP) is signal.SIG_DFL:  # nohup's SIG_IGN stays
        signal.signal(signal.SIGHUP, _terminated)
    for stream in (sys.stdout, sys.stderr):  # a terminal or file that is not UTF-8 gets '?' for ±, →, ×
        if hasattr(stream, "reconfigure"):  # (none where the descriptor was closed: `>&-`)
            stream.reconfigure(errors="replace")
    logging.raiseExceptions = False  # a log file on a full disk: not a traceback per line (MetaSchedule logs much)
    sys.unraisablehook = _unraisable
    try:
        code = app(standalone_mode=False)  # (the parser's own errors come here: standalone, typer would exit with them)
    except TyperException as e:  # a flag or argument the parser refused, before any command ran
        from typer import rich_utils

        rich_utils.rich_format_error(e)  # as typer shows them
        if _json_asked(sys.argv[1:]):
            _said.clear()
            _said.update(error=e.format_message(), fix="the command's --help lists what it takes")
            _error_document({"json_out": True}, e.exit_code)
        code = e.exit_code
    except SystemExit as e:  # rich's or typer's for a reader gone outside a command (`--help | head -c1`): 1, which
        if e.code != 1 or not isinstance(e.__context__, BrokenPipeError):  # says a row failed
            raise
        code = 128 + signal.SIGPIPE
    except typer.Abort:  # end of input at a prompt
        from typer import rich_utils

        rich_utils.rich_abort_error()
        code = 1
    if code == 130 and "terminated_at" in _STOPPED_BY:  # typer's Ctrl-C outside a command, which a SIGTERM took the way of
        code = _interrupted_code()
    sys.exit(code or 0)


def _json_asked(args: list[str]) -> bool:
    """Whether a command line asks for JSON on stdout: --json, or --format json without --output FILE."""
    text = " ".join(args)
    to_file = re.search(r"(?:^| )(?:--output|-o)(?:=| )(?!- |-$)", text)
    return "--json" in args or bool(re.search(r"(?:^| )(?:--format|-f)(?:=| )?json(?: |$)", text)) and not to_file


def _unraisable(unraisable) -> None:
    """A second Ctrl-C that lands in a finalizer (SQLAlchemy's, run by the garbage collector) is the
    stop already said, not a traceback to print."""
    if not isinstance(unraisable.exc_value, KeyboardInterrupt):
        sys.__unraisablehook__(unraisable)
