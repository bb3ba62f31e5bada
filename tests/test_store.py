import logging
import os
import re
import shutil
import subprocess

import pytest

from tests.postgres import postgres_server, postgres_url  # noqa: F401 (fixtures)
from tvmharness.errors import HarnessError
from tvmharness.provenance import snapshot
from tvmharness.results import Store, StoreError


def _row(**kw):
    row = {"model": "m", "variant": "fp32", "target": "x86", "engine": "tvm", "engine_version": "0.27",
           "status": "ok", "median_ms": 2.5, "p90_ms": 3.0, "iqr_ms": 0.5, "samples_ms": [2.0, 2.5, 3.0],
           "speedup_vs_baseline": 1.5, "artifact_bytes": 1234, "max_abs_diff": 1e-6, "top1_agreement": 1.0,
           "threads": 2, "target_spec": {"tvm": {"kind": "llvm"}}, "details": {"notes": ["x"]}}
    row.update(kw)
    return row


def test_store_round_trips_rows_with_samples_and_provenance(tmp_path):
    path = tmp_path / "h.db"
    store = Store(str(path))
    run_id = store.start_run("r", "abc", {"models": ["m"]}, snapshot())
    store.add(run_id, _row())
    store.add(run_id, _row(engine="torch", status="failed to run", reason="boom", median_ms=None, samples_ms=None))
    store.finish_run(run_id)

    reopened = Store(str(path))  # a new process would see the same
    frame = reopened.frame(run_id=run_id)
    assert list(frame["engine"]) == ["tvm", "torch"]
    first = frame.iloc[0]
    assert first["samples_ms"] == [2.0, 2.5, 3.0]
    assert first["median_ms"] == 2.5 and first["artifact_bytes"] == 1234
    assert first["target_spec"] == {"tvm": {"kind": "llvm"}}
    assert frame.iloc[1]["reason"] == "boom"
    run = reopened.run(run_id)
    assert run["recipe_hash"] == "abc" and run["finished"] is not None
    assert run["provenance"]["versions"]["tvmharness"]

    def open_on_the_file() -> int:  # this process's descriptors open on the store's file
        return sum(os.path.realpath(f"/proc/self/fd/{fd}") == str(path) for fd in os.listdir("/proc/self/fd"))

    with Store(str(path)) as used:
        assert len(used.frame()) == 2 and open_on_the_file() > 0
    reopened.close()
    store.close()
    assert open_on_the_file() == 0  # closed: a loop over stores keeps none open
    assert len(store.frame()) == 2  # and one used again connects again


def test_since_honours_the_offset_it_is_given(tmp_path):
    from datetime import datetime, timedelta, timezone

    store = Store(str(tmp_path / "h.db"))
    before = datetime.now(timezone.utc) - timedelta(minutes=1)
    run_id = store.start_run("r", "abc", {}, snapshot())
    store.add(run_id, _row())
    after = before + timedelta(minutes=2)
    for zone in (timezone(timedelta(hours=5)), timezone(timedelta(hours=-5))):
        assert [r["id"] for r in store.runs(since=before.astimezone(zone))] == [run_id]
        assert store.runs(since=after.astimezone(zone)) == [] and store.frame(since=after.astimezone(zone)).empty
    assert len(store.frame(since=before.replace(tzinfo=None))) == 1  # a time without an offset is UTC
    # a run is kept or trimmed whole, by when it started, as runs() does: never half of its rows
    cut = datetime.now(timezone.utc)
    store.add(run_id, _row())
    later = store.start_run("r", "abc", {}, snapshot())
    store.add(later, _row())
    assert [r["id"] for r in store.runs(since=cut)] == [later] and set(store.frame(since=cut)["run_id"]) == {later}


def test_store_accepts_a_sqlalchemy_url(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'url.db'}")
    run_id = store.start_run("r", "h", {}, snapshot())
    store.add(run_id, _row())
    assert len(store.frame()) == 1


def test_a_schema_1_store_upgrades_and_keeps_every_row(tmp_path, caplog):
    """A store written by the release before migrations opens in this one with every row intact."""
    import sqlite3

    from tests.legacy import results_v1
    from tvmharness.results import SCHEMA_VERSION

    path = tmp_path / "old.db"
    old = results_v1.Store(str(path))
    run_id = old.start_run("r", "abc", {"models": ["m"]}, snapshot())
    for i in range(5):
        old.add(run_id, _row(median_ms=1.0 + i, samples_ms=[1.0 + i] * 3))
    old.finish_run(run_id)
    spread = old.start_run("r", "abc", {"models": ["m"], "measure": {"span_s": 8}}, snapshot())
    old.add(spread, _row())
    old.add(spread, _row(status="failed to run", median_ms=None, samples_ms=None))
    before = old.frame()

    with caplog.at_level(logging.WARNING, logger="tvmharness.results"):
        store = Store(str(path))
    assert f"upgraded the results store {path} to schema {SCHEMA_VERSION}" in caplog.text  # every host must upgrade now
    after = store.frame()
    assert len(after) == len(before) == 7
    # how each row's samples were spread, from its run's recipe (back to back where it has none):
    # without it an old row would match a nightly of any span (schema 4)
    assert [d.get("span_s") for d in after["details"]] == [0.0] * 5 + [8, None]
    after, before = after[after["run_id"] == run_id], before[before["run_id"] == run_id]
    assert list(after["median_ms"]) == list(before["median_ms"])
    assert list(after["samples_ms"]) == list(before["samples_ms"])
    assert after["profile_ms"].isna().all()  # the new column, empty for old rows
    store.add(run_id, _row(profile_ms={"conv2d": 0.5}))  # and the upgraded store takes new rows
    assert store.frame().iloc[-1]["profile_ms"] == {"conv2d": 0.5}
    with sqlite3.connect(path) as db:
        assert db.execute("select version from schema_info").fetchone()[0] == SCHEMA_VERSION
    # The old release refuses the upgraded store instead of writing rows it cannot describe.
    with pytest.raises(HarnessError, match="newer than this tvmharness"):
        results_v1.Store(str(path))
    caplog.clear()
    Store(str(path))  # opening again is a no-op, and says nothing
    assert "upgraded" not in caplog.text


def test_a_store_from_a_newer_release_is_refused(tmp_path):
    import sqlite3

    path = tmp_path / "new.db"
    Store(str(path))
    store = Store(str(path))
    prov = snapshot()
    run_id = store.start_run("r", "h", {}, prov | {"git_commit": "unknown", "versions": prov["versions"] | {"tvmharness": "0.9.0 (code 0123456789ab)"}})
    from tvmharness.results import _head

    with store.engine.connect() as conn:
        head = _head(conn)
    with sqlite3.connect(path) as db:  # a newer migration of data alone: the schema's version is this one's
        db.execute("update alembic_version set version_num = '0099'")
    with pytest.raises(HarnessError) as newer:
        Store(str(path))
    assert newer.value.cause.startswith(f"results store {path} was migrated by a newer tvmharness (revision 0099; this "
                                        f"one knows up to {head}); its newest run")  # not "schema 4 ..., newer than ... (4)"
    with sqlite3.connect(path) as db:
        db.execute("update alembic_version set version_num = '9999'")
        db.execute("update schema_info set version = 99")
    with pytest.raises(HarnessError, match=r"migrated by a newer tvmharness \(revision 9999; .*its newest run was written by tvmharness 0\.9\.0 \(code 0123456789ab\)") as newer:
        Store(str(path))
    assert "at commit" not in newer.value.cause  # an installed writer's commit is unknown: not said
    # A process that opened it before another host upgraded it writes no more rows into it: they would
    # lack what the new schema holds of every row (kept aside, as any row the store refuses)
    with pytest.raises(StoreError, match="upgraded to schema 99 by a newer tvmharness") as refused:
        store.add(run_id, _row())
    assert refused.value.fix == "upgrade tvmharness on this host"


def test_postgresql_store_migrates_a_schema_1_history_and_judges_it(postgres_url):
    """A team's shared history on PostgreSQL: schema 1 written by the old release, upgraded, judged."""
    import numpy as np

    from tests.history import night
    from tests.legacy import results_v1
    from tvmharness.report.regress import SLOWER, judge_run

    old = results_v1.Store(postgres_url)
    run_id = old.start_run("r", "abc", {}, snapshot())
    old.add(run_id, _row(model="legacy"))
    store = Store(postgres_url)
    assert len(store.frame()) == 1 and store.frame().iloc[0]["samples_ms"] == [2.0, 2.5, 3.0]
    rng = np.random.default_rng(2)
    for _ in range(6):
        night(store, 1.0, rng)
    night(store, 1.3, rng)
    run, (verdict,) = judge_run(Store(postgres_url))
    assert verdict.verdict == SLOWER and run["id"] == verdict.run_id
    # PostgreSQL holds a bench of a file deep in a tree, and a library past 2 GB (schema 3)
    deep = store.start_run("bench " + "models/" * 40 + "big.onnx", "abc", {}, snapshot())
    store.add(deep, _row(model="big", artifact_bytes=3_000_000_000))
    assert store.frame(run_id=deep).iloc[0]["artifact_bytes"] == 3_000_000_000
    store.engine.dispose()
    old.engine.dispose()


def test_hosts_opening_a_new_store_at_once_all_get_it(tmp_path):
    """Four processes open one new store at the same moment: they race to create its tables, and each
    that loses finds the store made (it failed with "table schema_info already exists")."""
    import subprocess
    import sys
    import time

    for trial in range(3):
        path = tmp_path / f"race{trial}.db"
        start = time.time() + 4  # past every process's imports: they open the store together
        code = (f"import time\nfrom tvmharness.results import Store\ntime.sleep(max(0, {start} - time.time()))\n"
                f"Store({str(path)!r})\n")
        procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True) for _ in range(4)]
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0] * 4, errors
        assert Store(str(path)).runs() == []


def test_a_sqlite_database_of_something_else_is_refused_and_left_as_it_was(tmp_path):
    import sqlite3

    path = tmp_path / "inventory.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE parts (id INTEGER PRIMARY KEY, name TEXT)")
    with pytest.raises(HarnessError, match="a SQLite database of something else \\(its tables: parts\\)"):
        Store(str(path))
    with sqlite3.connect(path) as db:
        assert [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == ["parts"]


def test_a_locked_store_is_said_as_such_and_the_row_it_refused_is_not_written_later(tmp_path, monkeypatch):
    import sqlite3

    import tvmharness.results as results

    monkeypatch.setattr(results, "BUSY_TIMEOUT_S", 1)  # not a minute
    path = tmp_path / "h.db"
    store = Store(str(path))
    run_id = store.start_run("r", "abc", {}, snapshot())
    store.add(run_id, _row())
    reader = sqlite3.connect(path, isolation_level=None)  # a sqlite3 shell in the middle of a read transaction
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM runs").fetchone()
    with pytest.raises(HarnessError) as caught:
        store.add(run_id, _row(engine="onnxruntime"))
    reader.execute("COMMIT")
    reader.close()
    assert f"the results store {path} stayed locked by another process for 1 s" in caught.value.cause
    assert caught.value.exit_code == 75  # the same command may well work later: CI can retry on it
    assert "let the other process finish" in caught.value.fix
    store.add(run_id, _row(engine="torch"))  # the refused row does not ride along with the next commit
    assert list(Store(str(path)).frame()["engine"]) == ["tvm", "torch"]


def test_a_damaged_store_and_half_a_url_are_said_as_such(tmp_path):
    import os

    from tests.history import night

    path = tmp_path / "h.db"
    store = Store(str(path))
    rng = __import__("numpy").random.default_rng(0)
    for _ in range(5):
        night(store, 1.0, rng)
    store.check_intact()  # (every page read: a nightly's check before it measures)
    with open(path, "r+b") as f:  # a page of garbage in the middle of the file
        f.seek(os.path.getsize(path) // 2)
        f.write(b"\xff" * 8192)
    with pytest.raises(HarnessError) as caught:
        Store(str(path)).frame()
    assert caught.value.cause == f"the results store {path} is damaged (database disk image is malformed)"
    with pytest.raises(HarnessError, match=f"the results store {path} is damaged") as checked:
        Store(str(path)).check_intact()
    assert checked.value.fix == caught.value.fix
    (tmp_path / "recipe.toml").write_text("x = 1\n" * 100)
    with pytest.raises(HarnessError, match="recipe.toml is not a SQLite database"):
        Store(str(tmp_path / "recipe.toml"))
    with pytest.raises(HarnessError, match="looks like a URL without its '//'"):
        Store(f"sqlite:{tmp_path / 'other.db'}")
    assert not list(tmp_path.glob("sqlite:*"))
    if not shutil.which("sqlite3"):
        pytest.skip("the sqlite3 command is not installed: the salvage line it is given is not tried")
    salvage = re.search(r"`(.*)`", caught.value.fix).group(1)  # the fix works: what could be read is a store again
    subprocess.run(["bash", "-c", salvage], cwd=tmp_path, check=True, capture_output=True)
    salvaged = Store(str(tmp_path / "salvaged.db"))
    assert salvaged.runs() or len(salvaged.frame())  # (which, depends on the pages the damage hit)


def test_a_store_in_a_folder_named_with_a_question_mark_or_a_percent_sign_is_there(tmp_path):
    """A path is no URL: `q?x=1/h.db` made a store at `q` (the rest read as a query), and `pc%41t`
    was decoded to `pcAt` (a CI's branch folder, feature%2Fx)."""
    for folder in ("q?x=1", "pc%41t"):
        (tmp_path / folder).mkdir()
        store = Store(str(tmp_path / folder / "h.db"))
        assert store.file == tmp_path / folder / "h.db" and store.file.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pc%41t", "q?x=1"]


def test_a_store_url_is_said_and_kept_without_its_password():
    from tvmharness.results import hides_password, masked

    said = masked("postgresql+psycopg2://alice:S3cretPW@db.example:5432/th")
    assert said == "postgresql+psycopg2://alice:***@db.example:5432/th" and hides_password(said)
    assert masked("results/history.db") == "results/history.db" and not hides_password("results/history.db")
    assert masked("postgresql+psycopg2://alice@db.example/th") == "postgresql+psycopg2://alice@db.example/th"
    assert "S3cret" not in masked("notadialect!://alice:S3cret/PW@host/db")  # not a URL SQLAlchemy reads
    assert "S3cret" not in masked("postgresql://alice:S3cret@host:port/db")  # a port SQLAlchemy cannot read
    assert masked("postgresql://alice@host/db?password=S3cret&sslmode=require") == \
        "postgresql://alice@host/db?password=***&sslmode=require"  # the driver's parameter


def test_a_run_an_earlier_release_stored_with_its_store_s_password_is_read_without_it(tmp_path):
    import sqlite3

    path = tmp_path / "h.db"
    store = Store(str(path))
    run_id = store.start_run("r", "h", {"output": {"store": "x.db"}}, snapshot())
    with sqlite3.connect(path) as db:  # as releases before masking kept it
        db.execute("update runs set recipe = ?", ('{"output": {"store": "postgresql://alice:S3cret@db/th"}}',))
    assert store.run(run_id)["recipe"]["output"]["store"] == "postgresql://alice:***@db/th"
    assert store.runs()[0]["recipe"]["output"]["store"] == "postgresql://alice:***@db/th"


def test_an_unreachable_store_is_named_without_its_password(tmp_path):
    from tests.conftest import run_cli

    proc = run_cli("report", "--store", "postgresql+psycopg2://alice:S3cretPW@127.0.0.1:1/th", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "S3cretPW" not in proc.stderr and "alice:***@127.0.0.1:1/th" in " ".join(proc.stderr.split())


def test_a_postgresql_password_is_neither_stored_with_the_run_nor_kept_with_unsaved_rows(postgres_url, tmp_path):
    """The recipe stored with a run and a file of refused rows name the store without its password;
    `store load` of such a file asks for the URL with it, and takes it with --store."""
    from sqlalchemy.engine import make_url

    from tests.conftest import run_cli
    from tvmharness.results import StoreError, UnsavedRows

    with_password = make_url(postgres_url).set(password="pgpw").render_as_string(hide_password=False)  # trust: any works
    store = Store(with_password)
    assert "pgpw" not in store.label
    run_id = store.start_run("r", "abc", {"name": "r", "output": {"dir": "results", "store": with_password}}, snapshot())
    assert store.run(run_id)["recipe"]["output"]["store"] == store.label
    kept = UnsavedRows(store.run(run_id), store.label, store.file)
    kept.keep(_row(), StoreError("the results store is gone", "bring it back"), tmp_path)
    assert "pgpw" not in kept.path.read_text()
    proc = run_cli("store", "load", str(kept.path))
    assert proc.returncode == 2 and "needs its password" in proc.stderr and "pgpw" not in proc.stderr
    proc = run_cli("store", "load", str(kept.path), "--store", with_password)
    assert proc.returncode == 0, proc.stderr
    assert "pgpw" not in proc.stderr and f"stored 1 row in {store.label} (run {run_id})" in " ".join(proc.stderr.split())
    assert len(store.frame(run_id=run_id)) == 1
    store.engine.dispose()


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder on a read-only file system (a tmpfs mounted so): root may write anywhere else."""
    import subprocess

    folder = tmp_path / "ro"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("cannot mount a read-only tmpfs here (needs root and mount)")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_a_store_that_cannot_be_written_is_said_before_anything_is_measured(read_only_folder, tmp_path):
    """The store has its own place (results/ here, whatever --output-dir says): a read-only one was
    found only when the run began storing, after models were loaded and built, as a folder's error."""
    from tests.conftest import USER_MODELS, run_cli

    store = read_only_folder / "h.db"
    proc = run_cli("bench", f"{USER_MODELS}:tiny_mlp", "--store", str(store), "--output-dir", str(tmp_path / "out"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    said = " ".join(proc.stderr.split())
    assert f"the results store {store} cannot be made or written" in said and "give --store PATH" in said, said
    assert not (tmp_path / "out" / "cache").exists()  # nothing exported nor built


def test_a_new_store_on_a_read_only_file_system_is_said_to_be_read_only(read_only_folder):
    """SQLite says 'unable to open database file': the message says why, not 'check the path'."""
    with pytest.raises(StoreError) as refused:
        Store(str(read_only_folder / "h.db"))
    assert refused.value.cause == f"the results store {read_only_folder / 'h.db'} is read-only", refused.value.cause
    assert "make it and its folder writable" in refused.value.fix
    with pytest.raises(StoreError) as missing:  # a URL's folder that is not there: a path to check, not read-only
        Store(f"sqlite:///{read_only_folder.parent / 'no-such-folder' / 'h.db'}")
    assert "read-only" not in missing.value.cause and "check the path" in missing.value.fix, missing.value
