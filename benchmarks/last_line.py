"""How every benchmark ends: a table for people, then one JSON line a script reads, also when it fails."""

from __future__ import annotations

import json
import sys
import traceback
from typing import Callable

from tvmharness.errors import FAILED, INTERNAL, HarnessError


def run(main: Callable[[], None]) -> None:
    """Runs a benchmark's main. A failure still ends the output with one JSON line, {"error": ..., "exit_code": n}
    (and "fix" where there is one), so that a script reading the last line learns why there are no figures;
    its exit code stays non-zero. A usage error of the arguments (argparse's exit 2) and a line the benchmark
    printed itself before exiting (cuda.py's skip) are left as they are."""
    try:
        main()
    except SystemExit as stop:
        if not isinstance(stop.code, str):
            raise
        _failed({"error": stop.code}, FAILED)
    except HarnessError as e:
        _failed({"error": e.cause, "fix": e.fix}, e.exit_code)
    except KeyboardInterrupt:
        _failed({"error": "interrupted (Ctrl-C)"}, 130)
    except Exception as e:  # a bug: its traceback for the log, its one line for the script
        traceback.print_exc()
        _failed({"error": f"{type(e).__name__}: {e}"}, INTERNAL)


def _failed(document: dict, code: int) -> None:
    print(f"error: {document['error']}" + (f" ({document['fix']})" if document.get("fix") else ""), file=sys.stderr)
    sys.stdout.flush()
    print(json.dumps(document | {"exit_code": code}), flush=True)
    raise SystemExit(code)
