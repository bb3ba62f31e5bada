"""Errors a user can cause and fix: each names the cause and the fix, and maps to an exit code."""

import re
from pathlib import Path

USAGE = 2  # bad recipe, unknown name, missing file
FAILED = 1  # the work ran but something in it failed
INTERNAL = 3  # a bug of the harness: a CI job tells it from a regression (1) and a bad recipe (2)
# Another process holds what the command needs (a store past its wait, a tune's records folder, a
# nightly's reports), or the tracker does not answer: the same command may well succeed later, so a
# CI job can retry on it (sysexits.h's EX_TEMPFAIL)
RETRY = 75


def worst(codes) -> int:
    """Of several failures' exit codes, the one a CI job must act on: a bug (3) over a usage error (2) over
    a failure (1) over a retry (75), which would not fix the others; 0 where none failed."""
    return max(codes, key=[0, RETRY, FAILED, USAGE, INTERNAL].index, default=0)

TUNE_RECORDS_KEPT = "the tuning records written so far are kept (`tvmharness tune --resume` continues)"
# What a tool says (strerror's words, in its own message) when the folder it writes to is the trouble
FOLDER_REASONS = ("No space left on device", "Disk quota exceeded", "Read-only file system")


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM), with what it leaves behind in the stage it came in."""


class HarnessError(Exception):
    """A user-facing error: rendered as one message, never as a traceback."""

    def __init__(self, cause: str, fix: str = "", exit_code: int = USAGE):
        super().__init__(cause)
        self.cause = cause
        self.fix = fix
        self.exit_code = exit_code

    def __str__(self) -> str:
        return f"{self.cause} ({self.fix})" if self.fix else self.cause


RELATIVE_PATHS = "check the path (relative paths start where you run tvmharness)"


def path_text(path) -> str:
    """A path as a message names it: a relative one with where it led, from this folder."""
    return str(path) if Path(path).is_absolute() else f"{path} (looked for at {Path(path).absolute()})"


def path_error(e: OSError) -> HarnessError:
    """An OSError about a path the user gave, as what to fix there."""
    path = Path(e.filename)
    if isinstance(e, (FileExistsError, NotADirectoryError)):  # what mkdir and open say of a file in a folder's place
        file = next((p for p in (path, *path.parents) if p.is_file()), None)
        if file is not None:
            return HarnessError(f"{file} is a file, not a folder" + (f": cannot make {path}" if file != path else ""),
                                "give a folder (one that does not exist yet is made), not a file")
    if isinstance(e, FileNotFoundError):
        return HarnessError(f"cannot use {path_text(e.filename)}: {e.strerror or e}", "check the path (a typo?), or give another")
    return HarnessError(f"cannot use {e.filename}: {e.strerror or e}",
                        "check that this user may use the path (read it, or write there), or give another")


# A terminal's control sequences (CSI colours, OSC titles and hyperlinks, other ESC sequences) and
# control characters but tab and newline: what a model's or a library's text may hold and a terminal would obey
TERMINAL_CONTROL = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|[\]PX^_][^\x07\x1b]*(?:\x07|\x1b\\)?|[ -/]*[0-~])?"
                              r"|\x9b[0-?]*[ -/]*[@-~]|[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # \x9b: CSI in one (C1) character


def printable(text: str) -> str:
    """Text as a terminal should print it: no control sequence or character (tab and newline stay)."""
    return TERMINAL_CONTROL.sub("", text)


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The first meaningful line of an exception, for a row's reason, without terminal control sequences."""
    text = printable(str(exc)).strip() or type(exc).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line = lines[0] if lines else text
    return line if len(line) <= limit else line[: limit - 3] + "..."


def toml_table(*keys: str) -> str:
    """A recipe's table as TOML reads it: a key that is not bare (ONNX's "input.1") in quotes."""
    return ".".join(k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else '"' + k.replace("\\", "\\\\").replace('"', '\\"') + '"'
                    for k in keys)


def toml_file(path: Path, what: str) -> dict:
    """A recipe's or preset's TOML (`what` names it: "recipe x.toml"), read past a BOM (some Windows
    editors write one); text that is not UTF-8, or not TOML, is said with where."""
    import tomllib

    try:
        return tomllib.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        raise HarnessError(f"{what} is not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start})",
                           "save it as UTF-8, as TOML asks") from None
    except tomllib.TOMLDecodeError as err:
        raise HarnessError(f"{what} is not valid TOML: {err}", "fix the TOML syntax at that line") from None


def counted(count: int, noun: str) -> str:
    """'1 sample', '21 samples'."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def reason(err: BaseException, fix: bool = True) -> str:
    """An error as a row or a summary says it: a user's error as it is (its cause alone without `fix`),
    anything else, a crash, with its type."""
    if isinstance(err, HarnessError):
        return str(err) if fix else err.cause
    return f"{type(err).__name__}: {one_line(err)}"


UNION_BRANCHES = {"str", "int", "float", "bool"}  # pydantic names a union's branch in the location


def validation_problems(err, names: dict[tuple, str] | None = None) -> str:
    """A pydantic ValidationError as one line, each problem naming its key, or the name `names`
    gives a key path (a command-line flag) for every problem under it. A value that fits none of a
    union's types is one problem ("a valid string or a valid list")."""
    problems: dict[str, list[str]] = {}  # what is wrong, by where (a union's branches share a place)
    inputs: dict[str, object] = {}
    said_value: set[str] = set()
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and (p in UNION_BRANCHES or "[" in p)))
        named = [name for path, name in (names or {}).items() if loc[:len(path)] == path]
        where = named[0] if named else ".".join(str(p) for p in loc) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            problems.setdefault(f"unknown key '{where}'", [])
        elif e["type"] == "missing":
            problems.setdefault(f"missing key '{where}'", [])
        elif e["type"] == "value_error" and not loc:  # a check across keys: its message names them
            problems.setdefault(msg, [])
        else:
            problems.setdefault(f"'{where}': ", []).append(msg)
            inputs[f"'{where}': "] = e.get("input")
            if e["type"] == "value_error" and repr(e.get("input")) in msg:  # a check of ours that says the value
                said_value.add(f"'{where}': ")
    texts = []
    for head, msgs in problems.items():
        what = msgs[0] + "".join(" or " + m.removeprefix("Input should be ") for m in msgs[1:]) if msgs else ""
        # pydantic's own messages never say the value (a bound's digits, "30", are not the 0 given)
        got = f" (got {inputs[head]!r})" if msgs and head not in said_value else ""
        texts.append(head + what + got)
    return "; ".join(texts)
