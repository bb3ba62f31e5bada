"""Recipes: what to measure, as TOML validated by pydantic, with CLI overrides."""

from __future__ import annotations

import difflib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import (AfterValidator, BaseModel, ConfigDict, Discriminator, Field, PrivateAttr, Tag, ValidationError, field_validator,
                      model_validator)

from . import budgets
from .cache import OUTPUT_DIR, content_hash
from .engines import ENGINE_NAMES
from .errors import HarnessError, path_text, toml_file, toml_table, validation_problems
from .provenance import usable_cores
from .results import BASELINE, DEFAULT_STORE

DEFAULT_ENGINES = ("tvm", "torch", "onnxruntime")  # of ENGINE_NAMES; "tvm-untuned" compares tuning, "torch-compile" TorchInductor


def parse_duration(text: str | None, unit_required_by: str | None = None) -> float | None:
    """'90s', '30m', '2h', '1h30m', '14d' or plain seconds -> seconds. `unit_required_by`: the flag the
    text came from, where plain seconds would surprise (`--prune-unused-for 14` would empty the cache)."""
    if text is None or text == "":
        return None
    given, text = text, str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        if unit_required_by:
            raise HarnessError(f"{unit_required_by} {given} gives no unit", "write it with one, e.g. 14d or 36h")
        seconds = float(text)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*([dhms])", text)
        if not parts or "".join(f"{n}{u}" for n, u in parts) != text.replace(" ", ""):
            raise HarnessError(f"cannot read the duration '{text}'", "write it like 90s, 30m, 2h, 1h30m or 14d")
        seconds = sum(float(n) * {"d": 86400, "h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
    if seconds <= 0:
        raise HarnessError(f"a duration of '{text}' leaves no time", "give a positive duration, e.g. 30m")
    return seconds


def _duration_text(seconds: float) -> str:
    """Seconds as a recipe writes them: 2h, 20m, 90s."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


class _Strict(BaseModel):
    # TOML gives native types: a quoted number or a 1 for true is a mistake to name, not to coerce
    # (strict still takes an int where a float is asked). TOML's inf and nan are no measure of anything
    # (a span_s of inf never ends, a tolerance of inf passes every row).
    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True,  # a recipe changed in code is checked too
                              allow_inf_nan=False)


def _default_threads() -> int:
    # Physical cores where we can count them (hyper-threads only add noise to latency), no more than
    # this process may use (taskset, a container's CPU quota).
    import psutil

    return min(psutil.cpu_count(logical=False) or os.cpu_count() or 1, usable_cores())


def _share(value: float) -> float:
    if value > 1:  # 5 for 5%: a share over all of it is a percentage written as one
        raise ValueError(f"{value!r} is more than the whole: a share is written 0.05 for 5%")
    return value


# Of a whole (accuracy, an output's largest value): 0.05 = 5%. A change (min_effect, max_size_growth)
# may be more than 1: 1.0 flags only a doubling.
Share = Annotated[float, Field(ge=0), AfterValidator(_share)]
Given = Annotated[str, Field(min_length=1)]  # a path, URL, address or duration: "" is no value (nor "here")


class Measure(_Strict):
    """The one timing protocol, shared by every engine. The upper bounds are far past any use: a
    value past them is a typo, which would run for days or fail deep in an engine (a thread count
    of 100000 crashes the process)."""

    warmup: int = Field(5, ge=1, le=100_000, description="untimed runs before the repeats")
    repeats: int = Field(30, ge=30, le=100_000, description="timed runs; the median and p90 come from these")
    span_s: float = Field(0.0, ge=0, le=3600, description="the repeats are spread over this many seconds of running "
                          "(untimed runs between them), so a row sees the host's load modes rather than one")
    threads: int = Field(default_factory=_default_threads, ge=1, le=1024, description="threads every engine is pinned to")
    batch: int = Field(1, ge=1, le=65_536)
    agreement_samples: int = Field(4, ge=1, le=10_000, description="seeded inputs compared with the baseline (models without [data] eval)")
    memory: bool = Field(False, description="also measure each row's peak memory, in a process of its own (seconds a row)")
    tolerance: Share = Field(1e-3, gt=0, description="max abs diff allowed, relative to the baseline's largest output")


class Thresholds(_Strict):
    """Goals relative to the baseline measured in the same run."""

    max_accuracy_drop: Share | None = Field(0.01, description="absolute drop in accuracy (0.01 = 1 point)")
    min_speedup: float | None = Field(None, gt=0, description="baseline latency / row latency")
    max_size_ratio: float | None = Field(None, gt=0, description="row size / the fp32 row's on the same target and engine")


def _duration(value: str | None) -> str | None:
    """A recipe's duration, read when the recipe loads rather than when a tune or a kit job needs it."""
    try:
        parse_duration(value)
    except HarnessError as err:
        raise ValueError(f"{err.cause}: {err.fix}") from None
    return value


class Tune(_Strict):
    """MetaSchedule budgets: sized for a 2-core machine; nightly runs accumulate records. The defaults
    are the library's too (tvmharness.budgets)."""

    # MetaSchedule counts trials in a 32-bit int: past it a budget wraps (to none, silently)
    trials: int = Field(budgets.TRIALS, gt=0, le=2**31 - 1,
                        description="trials per model, variant and target, spread over its tasks")
    time_budget: Given | None = Field(None, description="a cap such as 30m or 2h; unset: no cap")
    patience: int | None = Field(budgets.PATIENCE, gt=0,
                                 description="stop after this many trials without a 1% better model estimate")
    builder_timeout: float = Field(budgets.BUILDER_TIMEOUT_S, gt=0, description="seconds per candidate build")
    population: int = Field(budgets.POPULATION, ge=8, le=2**31 - 1, description="evolutionary search population")

    @field_validator("time_budget")
    @classmethod
    def _readable(cls, value: str | None) -> str | None:
        return _duration(value)


class Devices(_Strict):
    """Dev kits behind an RPC tracker, for the targets that run on kits (see `tvmharness targets`). The
    defaults are the library's too (tvmharness.budgets)."""

    tracker: Given | None = Field(None, description="HOST:PORT of the RPC tracker")
    key: Given | None = Field(None, description="the kits' key at the tracker; unset: the target's usual keys")
    job_timeout: Given = Field(_duration_text(budgets.JOB_TIMEOUT_S),
                             description="per job once a kit has it: upload, warm-up and repeats")
    wait: Given = Field(_duration_text(budgets.KIT_WAIT_S), description="how long a job waits for a free kit")
    retries: int = Field(budgets.KIT_RETRIES, ge=0, description="further kits tried when a kit dies or hangs mid-job")

    @field_validator("job_timeout", "wait")
    @classmethod
    def _readable(cls, value: str) -> str:
        return _duration(value)


class Regression(_Strict):
    """When `tvmharness nightly` calls a change in a series a regression (see report/regress.py)."""

    min_effect: float = Field(0.05, ge=0, description="the least latency change called slower or faster (0.05 = 5%)")
    alpha: float = Field(0.002, gt=0, lt=1, description="Mann-Whitney U p-value both runs' samples must reach")
    window: int = Field(10, ge=1, description="earlier runs the night-to-night sigma is taken over")
    min_history: int = Field(5, ge=2, description="earlier runs a series needs before its own noise is trusted")
    unknown_noise_band: float = Field(0.20, ge=0, description="the change a series with fewer runs must also exceed")
    max_size_growth: float = Field(0.01, ge=0, description="artifact growth flagged as larger (0.01 = 1%)")
    max_memory_growth: float = Field(0.05, ge=0, description="peak memory growth flagged as larger (0.05 = 5%, and at "
                                                             "least 1 MB), where [measure] memory is on")
    max_accuracy_drop: Share = Field(0.005, description="accuracy (or top-1 agreement) drop flagged as less accurate")


class InputSetting(_Strict):
    """One model input's sizes and seeded values, by the input's name (README: 'Models')."""

    shape: list[Annotated[int, Field(ge=1)]] | None = Field(None, min_length=1, description="every size, the batch "
                                                            "first: fills a file's dynamic sizes, or reshapes a zoo or "
                                                            "file.py:function model's input")
    range: list[int] | None = Field(None, min_length=2, max_length=2,
                                    description="[low, high] that an integer input's seeded values come from")

    @field_validator("range")
    @classmethod
    def _ordered(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and value[0] > value[1]:
            raise ValueError(f"[{value[0]}, {value[1]}] is empty: give [low, high] with low <= high")
        return value


def _inputs_entry_kind(value) -> str:
    """[inputs.NAME] is one input's setting; [inputs.MODEL.NAME] tables are one model's. The tags
    hold '[' so that error messages leave them out of the key's place (errors.validation_problems)."""
    if isinstance(value, dict) and value and all(isinstance(v, (dict, InputSetting)) for v in value.values()):
        return "[a model's inputs]"
    return "[an input]"


InputsEntry = Annotated[Union[Annotated[InputSetting, Tag("[an input]")],
                              Annotated[dict[str, InputSetting], Tag("[a model's inputs]")]],
                        Discriminator(_inputs_entry_kind)]


def parse_input_flags(shapes: list[str] | None, ranges: list[str] | None) -> dict[str, dict]:
    """--input-shape NAME=1x128 and --input-range NAME=0..30521 as [inputs] settings."""
    settings: dict[str, dict] = {}
    for key, texts, pattern, separator, form, example in (
            ("shape", shapes, r"\d+(x\d+)*", "x", "NAME=SIZES, the sizes joined by x", "ids=1x128"),
            ("range", ranges, r"-?\d+\.\.-?\d+", "..", "NAME=LOW..HIGH", "ids=0..30521")):
        for text in texts or []:
            name, _, value = text.partition("=")
            if not name or not re.fullmatch(pattern, value):
                raise HarnessError(f"cannot read --input-{key} '{text}'", f"write it as {form}, e.g. --input-{key} {example}")
            if key in settings.get(name, {}):  # else the last would win, unsaid
                earlier = separator.join(map(str, settings[name][key]))
                raise HarnessError(f"--input-{key} was given twice for input '{name}' ({earlier} and {value})",
                                   f"give each input's {key} once")
            settings.setdefault(name, {})[key] = [int(n) for n in value.split(separator)]
    return settings


class DataSetting(_Strict):
    """A model's own samples, by the model's name (README: 'Your data')."""

    eval: Given | None = Field(None, description=".npz of held-out samples, labelled or not: what every engine is fed, "
                                               "and accuracy where labelled")
    train: Given | None = Field(None, description=".npz of training samples: fine-tuning and int8 calibration")


class Output(_Strict):
    dir: Path = Field(OUTPUT_DIR, strict=False)  # TOML and JSON give a path as a string
    store: Given = Field(DEFAULT_STORE, description="a path to a SQLite file or any SQLAlchemy URL")

    @field_validator("dir", mode="before")
    @classmethod
    def _given(cls, value):
        if value == "":  # else Path("") is the working folder, filled with a cache unasked
            raise ValueError("is empty: give a folder (results, or . for the working folder)")
        return value


class Recipe(_Strict):
    """What a run measures (models x variants x targets x engines) and how: a recipe file's tables,
    checked as they are set; README "Recipes" says what each holds."""

    name: str = "recipe"
    description: str = ""
    models: list[str] = Field(min_length=1)
    # An alias ("int8"), a chain joined by "+" or a list of aliases applied in order; see tvmharness.compress.
    variants: list[str | list[str]] = Field(default_factory=lambda: [BASELINE], min_length=1)
    targets: list[str] = Field(default_factory=list)  # none: this host's own preset (target_names)
    engines: list[Literal[ENGINE_NAMES]] = Field(default_factory=lambda: list(DEFAULT_ENGINES), min_length=1)
    frontend: Literal["torch", "onnx"] = Field("torch", description="how torch models reach TVM")
    inputs: dict[str, InputsEntry] = Field(default_factory=dict, description="model inputs' sizes and values, by input "
                                           "name ([inputs.NAME]) or for one model ([inputs.MODEL.NAME])")
    data: dict[str, DataSetting] = Field(default_factory=dict, description="models' own samples, by model name")
    measure: Measure = Field(default_factory=Measure)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    tune: Tune = Field(default_factory=Tune)
    devices: Devices = Field(default_factory=Devices)
    regression: Regression = Field(default_factory=Regression)
    output: Output = Field(default_factory=Output)
    # [inputs] and [data] names given on the command line when --model narrowed the recipe: the only
    # ones that must match a model measured (the recipe's own may be for the models left out). None: all.
    _names_to_match: dict[str, set[str]] | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _each_once(self):
        for key in ("models", "variants", "targets", "engines"):
            values = [json.dumps(v) for v in getattr(self, key)]
            twice = sorted({v for v in values if values.count(v) > 1})
            if twice:  # each would be measured and judged twice, as two series of one name
                raise ValueError(f"{key} lists {', '.join(twice)} more than once: give each once")
        return self

    def digest(self) -> str:
        """What is measured and how, hashed: not its words nor where its results go (a reworded
        description or another --store is the same recipe to the verdicts that name it)."""
        data = self.model_dump(mode="json", exclude={"description", "output"}) | {"targets": self.target_names()}  # as measured
        for section in ("inputs", "data"):  # recipes without them keep the hash they had before they existed
            if not data[section]:
                del data[section]
        return content_hash(data)[:16]

    def target_names(self) -> list[str]:
        """The recipe's targets, or this host's own preset (x86, or aarch64 on a board) where it names none."""
        if self.targets:
            return list(self.targets)
        from .targets import own_preset

        return [own_preset()]

    def names_to_match(self, section: str) -> set[str]:
        """The [inputs] names some model measured must take, or the [data] names one must have (a name
        none has is a typo)."""
        return set(getattr(self, section)) if self._names_to_match is None else self._names_to_match[section]

    def input_settings(self, model: str) -> dict[str, dict]:
        """[inputs] for the model of that name, as load_model takes them: {input name: {"shape", "range",
        "tables": {field: the recipe's table that gave it, for messages}}}. A field of [inputs.MODEL.NAME]
        wins over [inputs.NAME]'s."""
        settings = {name: setting.model_dump() | {"tables": {"shape": toml_table("inputs", name), "range": toml_table("inputs", name)}}
                    for name, setting in self.inputs.items() if isinstance(setting, InputSetting)}
        own = self.inputs.get(model)
        for name, setting in (own.items() if isinstance(own, dict) else ()):
            fields = {k: v for k, v in setting.model_dump().items() if v is not None}
            merged = settings.setdefault(name, {"shape": None, "range": None, "tables": {}})
            merged.update(fields)
            merged["tables"] = merged["tables"] | {k: toml_table("inputs", model, name) for k in fields}
        return settings

    @property
    def cache_dir(self) -> Path:
        return self.output.dir / "cache"

    @property
    def records_root(self) -> Path:
        return self.output.dir / "tuning"


def _format_validation(source: str, err: ValidationError) -> HarnessError:
    return HarnessError(f"invalid recipe {source}: {validation_problems(err)}",
                        "fix those keys; README's 'Recipes' shows every key with its default")


def recipe_from_dict(data: dict, source: str = "(inline)") -> Recipe:
    """A recipe from a recipe file's tables as dicts; a bad value is a HarnessError naming `source` and its key."""
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise _format_validation(source, err) from None


# A checkout's recipes/; an installed package carries them as tvmharness/recipes/ (pyproject maps them there).
_INSTALLED_RECIPES = Path(__file__).resolve().parent / "recipes"
RECIPES_DIR = _INSTALLED_RECIPES if _INSTALLED_RECIPES.is_dir() else Path(__file__).resolve().parents[1] / "recipes"


def shipped_recipes() -> list[str]:
    """The names of the recipes tvmharness comes with (quickstart, nightly, edge-compression)."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.toml"))


def recipe_file(path: str | Path, command: str | None = None) -> Path:
    """A recipe's file: the path given, or, where it is a bare name (`quickstart`: no `.toml`, no folder)
    and no file of that name is here, the recipe of that name tvmharness comes with: an installed package has
    no checkout's recipes/ beside it. What is clearly a path (`nightly.toml`, `ci/nightly`) is that file
    alone: one missing is refused, never swapped for a shipped recipe. Its relative paths ([output] dir) are
    the working folder's all the same. `command` (`nightly`) words the fix as that command's line."""
    path = Path(path)
    bare = len(path.parts) == 1 and path.suffix != ".toml"
    shipped = RECIPES_DIR / f"{path.name.removesuffix('.toml')}.toml"
    if bare and not path.is_file() and shipped.is_file():
        return shipped
    if path.is_dir():
        raise HarnessError(f"recipe {path} is a folder", "give the path of a .toml recipe file in it")
    if not path.is_file():
        if shipped.is_file():  # `nightly.toml` meant as the shipped `nightly`, or a path that is wrong
            fix = ("give the path of your recipe file; " + (f"`tvmharness {command} {shipped.stem}` runs" if command else
                   f"its name alone, {shipped.stem}, is") + " the one of that name tvmharness comes with")
        else:
            fix = (f"give the path of a .toml recipe (README: Recipes), or the name of one tvmharness comes with: "
                   f"{', '.join(shipped_recipes())}")
        raise HarnessError(f"no recipe file {path_text(path)}", fix)
    return path


def load_recipe(path: str | Path, **overrides) -> Recipe:
    """Read and validate a recipe file (or a shipped recipe by its name, see recipe_file); non-empty
    overrides (see apply_overrides) replace its values."""
    path = recipe_file(path)
    return apply_overrides(recipe_from_dict(toml_file(path, f"recipe {path}"), str(path)), **overrides)


# What each command-line override sets in a recipe, and the flag that gives it.
OVERRIDES = {"models": (("models",), "--model"), "variants": (("variants",), "--variant"), "targets": (("targets",), "--target"),
             "engines": (("engines",), "--engine"), "repeats": (("measure", "repeats"), "--repeats"),
             "threads": (("measure", "threads"), "--threads"),
             "store": (("output", "store"), "--store"), "output_dir": (("output", "dir"), "--output-dir"),
             "trials": (("tune", "trials"), "--trials"),
             "time_budget": (("tune", "time_budget"), "--time-budget"),
             "tracker": (("devices", "tracker"), "--tracker"), "key": (("devices", "key"), "--key"),
             "frontend": (("frontend",), "--frontend"), "memory": (("measure", "memory"), "--memory"), "inputs": (("inputs",), "--input-{field} {name}"),
             "data": (("data",), "--{field}-data")}  # a table's flags name one field of one entry


def apply_overrides(recipe: Recipe, **overrides) -> Recipe:
    """Command-line values (the keys of OVERRIDES; None or empty: not given) replace the recipe's.
    The result is validated like a recipe file; a bad value is named by its flag."""
    data, flags = recipe.model_dump(), {}
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:  # a library caller's keyword: the recipe's names, not the flags' (models=, not model=)
        near = [f"{name} (not {typo})" for typo in unknown for name in difflib.get_close_matches(typo, OVERRIDES, 1)]
        raise HarnessError(f"no recipe value is set by {', '.join(unknown)}",
                           (f"did you mean {', '.join(near)}? " if near else "") + f"give some of {', '.join(OVERRIDES)}")
    given = []  # the keywords that set something: a Python caller's bad value is one of them
    for name, value in overrides.items():
        if value is None or (isinstance(value, (str, list, tuple, dict)) and not value):
            continue
        given.append(name)
        (*parents, key), flag = OVERRIDES[name]
        section = data
        for parent in parents:
            section = section[parent]
        if isinstance(value, dict):  # [inputs], [data]: a flag sets one field of one entry; the recipe's others stay
            for entry, fields in value.items():
                section[key].setdefault(entry, {}).update(fields)
                if name == "inputs":  # a flag gives an input its value in every model, [inputs.MODEL.NAME] too
                    for table in section[key].values():
                        if _inputs_entry_kind(table) != "[an input]" and entry in table:
                            table[entry].update(fields)
                flags.update({(*parents, key, entry, f): flag.format(field=f, name=entry) for f in fields})
        else:
            if isinstance(value, str) and isinstance(section[key], list):  # models="resnet18" from Python: one of them
                value = [value]
            section[key] = list(value) if isinstance(value, (list, tuple)) else value
            flags[(*parents, key)] = flag
    try:
        result = Recipe.model_validate(data)
    except ValidationError as err:  # named by its flag, and for a caller from Python by the keyword that set it
        failing = [tuple(e["loc"]) for e in err.errors()]
        keywords = [f"{name}=" for name in given if any(loc[:len(OVERRIDES[name][0])] == tuple(OVERRIDES[name][0])
                                                      for loc in failing)] or [f"{name}=" for name in given]  # (a check across keys has no place)
        raise HarnessError(f"invalid value: {validation_problems(err, flags)}",
                           "fix that value; the command's --help lists what each flag takes"
                           + (f" (called from Python: the keyword {', '.join(keywords)})" if keywords else "")) from None
    if recipe._names_to_match is not None or overrides.get("models"):
        before = recipe._names_to_match or {"inputs": set(), "data": set()}
        result._names_to_match = {section: before[section] | set(overrides.get(section) or {}) for section in before}
    return result
