import contextlib
import fcntl
import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# TVM's thread pool reads this once, when it starts; pin it before any test touches TVM.
os.environ.setdefault("TVM_NUM_THREADS", "2")

ROOT = Path(__file__).resolve().parents[1]
USER_MODELS = ROOT / "tests" / "user_models.py"


def _no_cross_link() -> str | None:
    """Why an aarch64 library cannot be linked here (None: it can), for the tests that build one."""
    from tvmharness.targets import lacks_c_library

    if not shutil.which("aarch64-linux-gnu-gcc"):
        return "gcc-aarch64-linux-gnu is not installed"
    return "libc6-dev-arm64-cross (the aarch64 C library) is not installed" if lacks_c_library("aarch64-linux-gnu-gcc") else None


NO_CROSS_LINK = _no_cross_link()


def pytest_configure(config):
    """test_gpu's tuning fixture makes TVM register its CUDA tensor intrinsics, which TVMScript parses
    calling inspect.getmodule, a scan of sys.modules each time: 31 s here with few modules loaded, over
    150 s once the tests have imported torch and the rest. A run that includes test_gpu.py does it first."""
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        return  # pytest-xdist's controller runs no test: its workers do this each
    paths = [Path(arg.split("::")[0]).resolve() for arg in config.args] or [Path.cwd().resolve()]
    if any(p in (ROOT, ROOT / "tests", ROOT / "tests" / "test_gpu.py") for p in paths):
        import tvm.s_tir.tensor_intrin.cuda  # noqa: F401


# The test files that take longest, longest first: pytest-xdist hands whole files to its workers in
# the order they were collected, and a long one handed out last would run while the other worker idles.
LONGEST_FIRST = ("test_remote.py", "test_cli.py", "test_tune.py", "test_report.py", "test_build.py", "test_gpu.py",
                 "test_compress.py", "test_pipeline.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # (stable: a file's tests keep their order)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """(pytest-xdist's controller, for each worker) the folder of the host's lock, shared by the workers."""
    config = node.config
    if not hasattr(config, "host_locks"):
        config.host_locks = tempfile.mkdtemp(prefix="tvmharness-tests-")
        config.add_cleanup(functools.partial(shutil.rmtree, config.host_locks, ignore_errors=True))
    node.workerinput["host_locks"] = config.host_locks


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Under pytest-xdist (`make test` runs two workers) the tests share the host, but a test marked
    `alone` (it judges real timings) has it to itself: its setup (module fixtures included), call and
    teardown hold the host's lock exclusively, every other test's hold it shared. A turnstile lets one
    waiting to be alone in before the others take the lock again."""
    if not hasattr(item.config, "workerinput"):  # not an xdist worker
        return (yield)
    folder = Path(item.config.workerinput["host_locks"])
    alone = item.get_closest_marker("alone") is not None
    with open(folder / "host.turnstile", "a") as turnstile, open(folder / "host.lock", "a") as lock:
        with contextlib.ExitStack() as held:
            fcntl.flock(turnstile, fcntl.LOCK_EX)
            fcntl.flock(lock, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
            held.callback(fcntl.flock, lock, fcntl.LOCK_UN)
            fcntl.flock(turnstile, fcntl.LOCK_UN)
            return (yield)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    """One results folder for the session, so the digits CNN trains once and builds are reused."""
    return tmp_path_factory.mktemp("results")


@pytest.fixture
def recipe_dict(workdir):
    def make(**overrides) -> dict:
        data = {
            "name": "test",
            "models": ["digits_cnn"],
            "measure": {"warmup": 1, "repeats": 30, "threads": 2},
            "output": {"dir": str(workdir), "store": str(workdir / "history.db")},
        }
        data.update(overrides)
        return data

    return make


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 600,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The real command line, in a subprocess: exit codes and stderr as a user sees them."""
    env = dict(os.environ, COLUMNS="200", **(env or {}))
    return subprocess.run([sys.executable, "-m", "tvmharness", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=timeout, env=env)
