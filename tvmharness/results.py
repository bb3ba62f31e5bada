"""The history store: every measurement with its provenance and raw samples, in SQLAlchemy
(an embedded SQLite file by default, any SQLAlchemy URL such as PostgreSQL for a shared history)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shlex
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from sqlalchemy import JSON, BigInteger, DateTime, Float, ForeignKey, Integer, String, Text, create_engine, inspect, or_, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from .cache import OUTPUT_DIR, file_lock, writable_folder
from .errors import RETRY, HarnessError, one_line

SCHEMA_VERSION = 4  # schema_info.version: what a tvmharness without migrations checks before writing
MIGRATIONS = "tvmharness:migrations"  # Alembic revisions; 0001 is version 1, the schema before migrations
DEFAULT_STORE = str(OUTPUT_DIR / "history.db")  # where a recipe's rows go, and `report` reads, unless told otherwise


def _now() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(moment: datetime) -> datetime:
    """Times are stored in UTC, and SQLite keeps no offset: compare in UTC (a naive time is UTC)."""
    return moment.astimezone(timezone.utc) if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    pass


class SchemaInfo(Base):
    __tablename__ = "schema_info"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)


class Run(Base):
    """One invocation: a recipe over its jobs, on one host, at one commit."""

    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    started: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    finished: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    recipe_name: Mapped[str] = mapped_column(Text)
    recipe_hash: Mapped[str] = mapped_column(String(64))
    recipe: Mapped[dict] = mapped_column(JSON)
    hostname: Mapped[str] = mapped_column(Text)
    cpu: Mapped[str] = mapped_column(Text)
    git_commit: Mapped[str] = mapped_column(String(64))
    provenance: Mapped[dict] = mapped_column(JSON)  # host, CPU features, every version
    measurements: Mapped[list["Measurement"]] = relationship(back_populates="run")


class Measurement(Base):
    """One row of a report: model x variant x target x engine, measured once with raw samples."""

    __tablename__ = "measurements"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    model: Mapped[str] = mapped_column(Text, index=True)
    variant: Mapped[str] = mapped_column(Text)
    target: Mapped[str] = mapped_column(Text)
    engine: Mapped[str] = mapped_column(String(50))
    engine_version: Mapped[str] = mapped_column(Text)
    is_baseline: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(String(30))
    reason: Mapped[str] = mapped_column(Text, default="")
    threads: Mapped[int | None] = mapped_column(Integer, nullable=True)
    batch: Mapped[int] = mapped_column(Integer, default=1)
    median_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    p90_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    iqr_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    samples_ms: Mapped[list | None] = mapped_column(JSON, nullable=True)
    speedup_vs_baseline: Mapped[float | None] = mapped_column(Float, nullable=True)
    artifact_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    max_abs_diff: Mapped[float | None] = mapped_column(Float, nullable=True)
    top1_agreement: Mapped[float | None] = mapped_column(Float, nullable=True)
    accuracy: Mapped[float | None] = mapped_column(Float, nullable=True)
    tuned: Mapped[bool | None] = mapped_column(nullable=True)
    cache_hit: Mapped[bool | None] = mapped_column(nullable=True)
    meets_goals: Mapped[bool | None] = mapped_column(nullable=True)
    target_spec: Mapped[dict] = mapped_column(JSON, default=dict)  # the resolved TVM target and CPU features
    details: Mapped[dict] = mapped_column(JSON, default=dict)  # notes, build key, artifact path
    profile_ms: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # TVM: operator -> median ms (schema 2)
    run: Mapped[Run] = relationship(back_populates="measurements")


COLUMNS = [c.name for c in Measurement.__table__.columns]


def same_build(row: dict, other: dict) -> bool:
    """Whether two rows timed one TVM build: the same build key (model, importer, target, TVM version,
    tuning records and linker all hash into it); False where either row does not say."""
    key = (row.get("details") or {}).get("build_key")
    return bool(key) and key == (other.get("details") or {}).get("build_key")


def plain(value):
    """A value of a Store.frame() row as Python's, as the store takes it back: numpy scalars as Python's,
    NaN (pandas' missing value) as None, a whole float (an int column with a gap) as int."""
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float):
        return None if value != value else int(value) if value.is_integer() else value
    return value


RUN_RECIPE = "run_recipe"  # a Store.frame() column: each row's run's recipe (outputs give it once, with the run)
BASELINE = "fp32"  # the variant name of the model as given: the rows every other variant is judged against
# Row statuses, as the report shows them.
OK = "ok"
DISAGREES = "outputs disagree"
BUILD_FAILED = "failed to build"
RUN_FAILED = "failed to run"
COMPRESS_FAILED = "failed to compress"
LOAD_FAILED = "failed to load"  # the model itself could not be made
NOT_APPLICABLE = "not applicable"  # a technique or engine that does not fit the model; not a failure

# A variant's loss against fp32 as its row's details name it, and as people read it: accuracy where
# the data is labelled, else 1 - top-1 agreement, which is not accuracy.
DROPS = {"accuracy_drop": "accuracy drop", "top1_disagreement": "top-1 disagreement with fp32"}


def variant_drop(details: dict) -> tuple[str, float] | None:
    """Which drop against fp32 a variant row's details hold (a key of DROPS), and how much."""
    return next(((k, details[k]) for k in DROPS if details.get(k) is not None), None)


URL_START = re.compile(r"[A-Za-z][A-Za-z0-9+]*:/")  # a scheme and a slash: a URL, or one missing its '//'


def check_not_half_a_url(store: str) -> None:
    """sqlite:/abs.db is no URL and would be taken as a path, in a new folder named "sqlite:"."""
    if "://" not in store and URL_START.match(store):
        raise HarnessError(f"the results store {masked(store)} looks like a URL without its '//'",
                           f"write it as {store.split(':', 1)[0]}://... (a SQLite file: sqlite:////absolute/path.db), "
                           "or give the file's path alone")


def masked(store: str) -> str:
    """A store as it is said and kept (messages, the recipe stored with a run, a file of unsaved rows):
    a URL without its password, as a shared store's readers and a terminal's scrollback should not have it."""
    if "://" not in store and not URL_START.match(store):  # a path (a URL without its '//' has a password to hide too)
        return store
    try:
        said = make_url(store).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # not a URL SQLAlchemy reads (a port not a number): no password between ":" and "@"
        said = re.sub(r"(:/+[^/@:]*:)[^@]*@", r"\1***@", store)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", said)  # a driver's query parameter too


def masked_recipe(recipe: dict) -> dict:
    """A recipe as it is kept with its run and read back: its store URL without a password."""
    output = (recipe or {}).get("output")
    if isinstance(output, dict) and isinstance(output.get("store"), str):
        return recipe | {"output": output | {"store": masked(output["store"])}}
    return recipe


def _said(run) -> dict:
    """A run's record as it is read (runs an earlier release stored kept their store's password)."""
    run = dict(run)
    run["recipe"] = masked_recipe(run.get("recipe"))
    return run


def hides_password(label: str) -> bool:
    """Whether a store's label (masked) stood for a URL with a password: the label alone cannot open it."""
    return "://" in label and ":***@" in label


def sqlite_file(url) -> Path | None:
    """The file a SQLite URL (a string or SQLAlchemy's URL) names; None for another database, or
    SQLite in memory. An unreadable URL raises sqlalchemy.exc.ArgumentError."""
    url = make_url(url)
    return Path(url.database) if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:") else None


def store_folder_writable(store: str) -> None:
    """What a run checks of its store before it measures anything, without making it: a SQLite store's
    folder, made and written to (a store that cannot be made there is said as the store's, not as a
    folder's of no name the user gave), and a store that is no store (a folder, half a URL, a URL
    whose database driver is not installed)."""
    if "://" not in store:
        check_not_half_a_url(store)
        try:
            writable_folder(Path(store).parent)
        except HarnessError as err:
            raise HarnessError(f"the results store {store} cannot be made or written: {err.cause}",
                               "give --store PATH (or the recipe's [output] store) in a folder this user may write") from None
    _engine(store_url(store), masked(store)).dispose()  # (connects to nothing)


def store_url(store: str) -> str:
    """A path becomes a SQLite URL (its folder created); a URL is used as given. A SQLite store that is
    a folder is refused either way."""
    if "://" in store:
        with contextlib.suppress(ArgumentError, ValueError):  # (an unreadable URL: the engine says so)
            path = sqlite_file(store)
            if path is not None and path.is_dir():
                raise HarnessError(f"the results store {masked(store)} is a folder",
                                   f"give a file in it, e.g. sqlite:///{path / 'history.db'}")
        return store
    check_not_half_a_url(store)
    path = Path(store)
    if path.is_dir():
        raise HarnessError(f"the results store {store} is a folder", f"give a file in it, e.g. {path / 'history.db'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    from sqlalchemy.engine import URL

    # escaped: a folder named with ? or % (a CI's branch folder, feature%2Fx) is that folder, not a query
    return URL.create("sqlite", database=str(path)).render_as_string(hide_password=False)


def _alembic_config(connection):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    config.attributes["connection"] = connection
    return config


def migrate(engine, label: str) -> None:
    """Bring a store to the newest schema, keeping every row. Hosts that open a new (or older) store at
    the same moment would race to create its tables: one migrates while the others wait, then find
    it done."""
    with engine.connect() as conn:
        if _revision(conn) == _head(conn) and "runs" in inspect(conn).get_table_names():
            return  # the usual case: nothing to do, and no lock taken
    with _migration_lock(engine):
        _migrate(engine, label)


def _revision(conn) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def _head(conn) -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config(conn)).get_current_head()


@contextlib.contextmanager
def _migration_lock(engine):
    """One migration of a store at a time: PostgreSQL's advisory lock, or a lock file beside a SQLite file."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK})")
            try:
                yield
            finally:
                conn.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK})")
    elif (file := sqlite_file(engine.url)) is not None:
        with file_lock(Path(f"{file}.migrate-lock")):
            yield
    else:
        yield


MIGRATION_LOCK = 0x7476_6D68  # PostgreSQL advisory lock id of tvmharness migrations ("tvmh")


def _migrate(engine, label: str) -> None:
    """A store from before migrations (tables, no alembic_version) is schema version 1: it is stamped
    0001, then upgraded."""
    from alembic import command
    from alembic.script import ScriptDirectory

    with engine.begin() as conn:
        tables = set(inspect(conn).get_table_names())
        current = _revision(conn)
        config = _alembic_config(conn)
        scripts = ScriptDirectory.from_config(config)
        known = {rev.revision for rev in scripts.walk_revisions()}
        if current is not None and current not in known:  # (its schema version may be this one's: a migration of data alone)
            raise HarnessError(f"results store {label} was migrated by a newer tvmharness (revision {current}; this one "
                               f"knows up to {scripts.get_current_head()}){_newest_writer(conn)}",
                               "upgrade tvmharness, or point --store at another file")
        foreign = "runs" in tables and "measurements" not in tables  # a table of that name, in another's database
        if current is None and (foreign or ("runs" not in tables and tables and conn.dialect.name == "sqlite")):
            kind = "a SQLite database" if conn.dialect.name == "sqlite" else "a database"
            raise HarnessError(f"{label} is {kind} of something else (its tables: {', '.join(sorted(tables)[:5])}), "
                               "not a results store", "point --store at another file")
        if current is None and "runs" in tables:
            version = conn.execute(select(SchemaInfo.version)).scalar() if "schema_info" in tables else 1
            if version != 1:
                raise HarnessError(f"results store {label} has schema {version} but no migration history",
                                   "point --store at another file; this one was not written by tvmharness")
            command.stamp(config, "0001")
        command.upgrade(config, "head")
        if "runs" in tables and current != _head(conn):  # every host sharing the store must now run a tvmharness of this schema: said once, here
            logging.getLogger(__name__).warning(
                "upgraded the results store %s to schema %d (revision %s): a tvmharness of an older schema now refuses "
                "it, so upgrade every host that writes to it", label, SCHEMA_VERSION, _head(conn))


def _newest_writer(conn) -> str:
    """Which tvmharness wrote a store's newest run (its version and commit), for whoever must upgrade to read it."""
    said = []
    for column in (Run.provenance, Run.git_commit):  # each on its own: a schema this release does not know may keep one otherwise
        try:
            said.append(conn.execute(select(column).order_by(Run.id.desc()).limit(1)).scalar())
        except SQLAlchemyError:
            said.append(None)
    provenance, commit = said
    version = ((provenance or {}).get("versions") or {}).get("tvmharness")
    if not version and not commit:
        return ""
    return (f"; its newest run was written by tvmharness {version or '(version unknown)'}"
            + (f" at commit {commit}" if commit and commit != "unknown" else ""))


def check_schema(session) -> None:
    """A store another host upgraded while this process writes to it: its rows would lack what the new
    schema holds of every row (and be judged as if they had it), so they are refused (and kept aside)."""
    version = session.execute(select(SchemaInfo.version)).scalar()
    if version is not None and version > SCHEMA_VERSION:
        raise StoreError(f"the results store was upgraded to schema {version} by a newer tvmharness while this one "
                         f"(schema {SCHEMA_VERSION}) was writing to it", "upgrade tvmharness on this host")


# SQLite waits this long for another process's lock (a long report, a writer) before it gives up
BUSY_TIMEOUT_S = 60
# A write waits for it a second at a time: SQLite's wait runs in C, where a Ctrl-C is not taken until
# it ends, and a run's writes come while rows are measured (the row in flight is then kept aside)
WRITE_WAIT_STEP_S = 1


class StoreError(HarnessError):
    """The store refused a read or a write (locked, read-only, full, damaged, unreachable)."""

    locked = False  # locked past BUSY_TIMEOUT_S: each write would wait that long again


def _read_only(file: Path) -> bool:
    """Whether a SQLite file, or the folder it would be made in, cannot be written: a read-only file
    system (root writes anywhere else), or a file or folder this user may not write."""
    place = file if file.exists() else file.parent
    if not place.exists():
        return False  # a folder that is not there: a path to check, not a read-only one
    return bool(os.statvfs(place).f_flag & os.ST_RDONLY) or not os.access(place, os.W_OK)


def store_problem(err: SQLAlchemyError, label: str, upgrading: bool = False, file: Path | None = None) -> StoreError:
    """A database error as what it means for the store (`file`: a SQLite store's), and what to do."""
    said = one_line(getattr(err, "orig", None) or err)
    text = said.lower()
    if "locked" in text or "busy" in text:
        locked = StoreError(f"the results store {label} stayed locked by another process for {BUSY_TIMEOUT_S} s ({said})",
                            "let the other process finish (or close a sqlite3 shell holding a transaction), then run again",
                            RETRY)
        locked.locked = True
        return locked
    if "readonly" in text or "read-only" in text or ("unable to open" in text and file is not None and _read_only(file)):
        why = " (it is of an older schema, which is upgraded when it is opened)" if upgrading and (file is None or file.exists()) else ""
        return StoreError(f"the results store {label} is read-only{why}",
                          "make it and its folder writable, or copy it somewhere writable and give that with --store")
    if "full" in text or "no space" in text:
        return StoreError(f"the results store {label} cannot grow: its disk is full ({said})",
                          "free space on that disk, or move the store to another and give it with --store")
    if "not a database" in text:  # SQLite's word for any file that is not one of its databases
        return StoreError(f"the results store {label} is not a SQLite database ({said})",
                          f"point --store at the results file ({DEFAULT_STORE}), or at a new path to start one")
    if "malformed" in text or "corrupt" in text:
        return _damaged(label, file, said)
    return StoreError(f"cannot use the results store {label}: {said}",
                      "check the path or URL and that the database is reachable")


def _damaged(label: str, file: Path | None, said: str) -> StoreError:
    # .dump, not .recover (which Debian 12's sqlite3 lacks): it ends in a ROLLBACK at the first bad page, made a COMMIT
    salvage = (f"`sqlite3 {shlex.quote(str(file))} .dump | sed 's/^ROLLBACK; -- due to errors$/COMMIT;/' | sqlite3 "
               "salvaged.db`, then --store salvaged.db") if file else "its database's tools"
    return StoreError(f"the results store {label} is damaged ({said})",
                      f"restore it from a backup, or salvage what can be read: {salvage}")


def _engine(url: str, label: str, **options):
    """SQLAlchemy's engine for a store's URL (it connects to nothing yet), or what is wrong with the URL."""
    try:
        return create_engine(url, **options)
    except (ArgumentError, NoSuchModuleError, ValueError):  # not a URL (a port not a number), or of a database SQLAlchemy does not know
        raise HarnessError(f"the results store {label} is neither a file path nor a database URL SQLAlchemy knows",
                           f"give a SQLite file's path ({DEFAULT_STORE}) or a URL such as "
                           "postgresql+psycopg2://user@host/db") from None
    except ImportError as err:  # the URL names (or defaults to) a database driver that is not installed
        raise HarnessError(f"the results store {label} needs the Python module '{err.name}', which is not installed",
                           "install it; for PostgreSQL, `pip install 'tvmharness[postgres]'` (in a checkout: "
                           "`.venv/bin/pip install -e '.[postgres]'`) and a postgresql+psycopg2:// URL") from None


class Store:
    """Writes each row as soon as it is measured, so a later failure loses nothing."""

    def __init__(self, store: str):
        self.url, self.label, self.file = store_url(store), masked(store), None
        sqlite = self.url.startswith("sqlite")
        self.engine = _engine(self.url, self.label, connect_args={"timeout": BUSY_TIMEOUT_S} if sqlite else {})
        self.file = sqlite_file(self.engine.url)
        # (a SQLite store in memory is one engine's own: a second would write to another, empty one)
        self._writer = _engine(self.url, self.label, connect_args={"timeout": WRITE_WAIT_STEP_S}) if self.file else self.engine
        self.on_wait: Callable[[str], None] | None = None  # told once a write waits for another process's lock
        try:
            migrate(self.engine, self.label)
        except SQLAlchemyError as err:
            raise store_problem(err, self.label, upgrading=True, file=self.file) from None

    def check_intact(self) -> None:
        """A SQLite store's every page read once (its quick_check, a second or so for a year of nights): a damaged
        one is said before a night is measured into it, not when its report reads it."""
        if self.file is None:
            return
        with self._connection() as conn:
            problems = conn.exec_driver_sql("PRAGMA quick_check").scalars().all()
        if problems != ["ok"]:
            raise _damaged(self.label, self.file, "; ".join(problems[:3]))

    def close(self) -> None:
        """Closes its connections (a notebook's loop over stores keeps none open, nor a server's slots);
        a file's or a server's store used after this connects again (one in memory is gone with them)."""
        for engine in {self.engine, self._writer}:
            engine.dispose()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    @classmethod
    def holding(cls, run: dict, rows: list[dict]) -> "Store":
        """A SQLite store in memory holding a run's record and rows as given (run() and the rows' dicts as a run
        wrote them): its frame() reads them back as any store's does (what a run shows of rows its store refused)."""
        copy = cls("sqlite://")
        with copy._session() as s:
            s.add(Run(**run))
            s.add_all(_measurement(run["id"], row) for row in rows)
            s.commit()
        return copy

    @classmethod
    def existing(cls, store: str) -> "Store":
        """A store to read (a report's): one that is not there is an error, not a new empty one made."""
        check_not_half_a_url(store)
        path = Path(store)
        if "://" in store:
            try:
                path = sqlite_file(store)
            except ArgumentError:
                path = None  # Store names what is wrong with the URL
        if path is not None and path.is_dir():
            store_url(str(path))  # says what to give instead
        if path is not None and not (path.is_file() and path.stat().st_size):
            raise HarnessError(f"no results store at {masked(store)}", "run `tvmharness run RECIPE` or `tvmharness "
                               "nightly RECIPE` first, or pass --store PATH_OR_URL")
        return cls(store)

    def refuse_as_output(self, path: Path | str | None, what: str) -> None:
        """A report written over the store's own file would lose the history: refused, naming what gave the path."""
        if path is not None and self.file is not None and Path(path).resolve() == self.file.resolve():
            raise HarnessError(f"{what} {path} is the results store itself: the report would overwrite the history",
                               f"give {what} another file")

    @contextlib.contextmanager
    def _session(self, engine=None):
        """A session whose failure is said as the store's problem; what it wrote is rolled back (SQLite
        keeps a transaction open after a COMMIT it could not make: a later commit would take it along)."""
        engine = engine or self.engine
        with Session(engine) as s:
            try:
                yield s
            except SQLAlchemyError as err:
                with contextlib.suppress(SQLAlchemyError):
                    s.rollback()
                engine.dispose()  # no pooled connection keeps the failed transaction
                raise store_problem(err, self.label, file=self.file) from None

    def _write(self, work):
        """`work(session)`, which commits what it writes and reads nothing after (a read that waits for a
        lock and fails would have the committed write tried again), waiting for another process's lock
        for up to BUSY_TIMEOUT_S a step at a time (a Ctrl-C is taken between two steps)."""
        deadline, told = time.monotonic() + BUSY_TIMEOUT_S, False
        while True:
            try:
                with self._session(self._writer) as s:
                    check_schema(s)
                    return work(s)
            except StoreError as err:
                if err.locked and self.on_wait is not None and not told:  # a log that stops for a minute says why
                    self.on_wait(f"the results store {self.label} is locked by another process: waiting up to "
                                 f"{BUSY_TIMEOUT_S} s for it")
                    told = True
                if not err.locked or time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)  # (a lock SQLite refuses to wait for, to break a deadlock, fails at once)

    @contextlib.contextmanager
    def _connection(self):
        try:
            with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as err:
            raise store_problem(err, self.label, file=self.file) from None

    def start_run(self, recipe_name: str, recipe_hash: str, recipe: dict, provenance: dict) -> int:
        recipe = masked_recipe(recipe)  # every reader of the store sees it

        def write(s: Session) -> int:
            run = Run(recipe_name=recipe_name, recipe_hash=recipe_hash, recipe=recipe,
                      hostname=provenance["host"]["hostname"], cpu=provenance["host"]["cpu"]["model"],
                      git_commit=provenance["git_commit"], provenance=provenance)
            s.add(run)
            s.flush()
            run_id = run.id  # read before the commit, which expires it (a read after it is a query)
            s.commit()
            return run_id

        return self._write(write)

    def add(self, run_id: int, row: dict) -> int:
        def write(s: Session) -> int:
            m = _measurement(run_id, row)
            s.add(m)
            s.flush()
            row_id = m.id  # (as start_run's)
            s.commit()
            return row_id

        return self._write(write)

    def finish_run(self, run_id: int) -> datetime:
        """Records the run's end; returns the time it recorded."""
        def write(s: Session) -> datetime:
            finished = s.get(Run, run_id).finished = _now()
            s.commit()
            return finished

        return self._write(write)

    def load_unsaved(self, kept: "UnsavedRows") -> tuple[int, bool, int]:
        """Put rows the store refused in, in one transaction: into their run when this store holds it
        (the same id, started at the same moment), else into the copy of its record an earlier load
        made, else into a new one. A row already there (a copy of the file loaded before) is not put in
        twice. Returns the run's id, whether it is that run, and how many rows were already there."""
        head = kept.run

        def is_it(run: Run | None) -> bool:
            return run is not None and as_utc(run.started) == as_utc(head["started"]) and run.recipe_hash == head["recipe_hash"]

        def key(model, variant, target, engine, created) -> tuple:
            return model, variant, target, engine, as_utc(created)

        with self._session() as s:
            run = s.get(Run, head["id"])
            same = is_it(run)
            if not same:
                run = next((r for r in s.scalars(select(Run).where(Run.recipe_hash == head["recipe_hash"])) if is_it(r)), None)
            if run is None:
                run = Run(**{k: v for k, v in head.items() if k not in ("id", "finished")})
                s.add(run)
                s.flush()
            there = {key(m.model, m.variant, m.target, m.engine, m.created) for m in run.measurements}
            new = [(created, row) for created, row in kept.rows
                   if key(row["model"], row["variant"], row["target"], row["engine"], created) not in there]
            for created, row in new:
                s.add(_measurement(run.id, row, created=created))
            if run.finished is None:
                run.finished = kept.finished
            s.commit()
            return run.id, same, len(kept.rows) - len(new)

    def run(self, run_id: int) -> dict:
        with self._session() as s:
            r = s.get(Run, run_id)
            if r is None:
                raise HarnessError(f"run {run_id} is not in {self.label}", "pick one of the runs its runs() lists")
            return _said({c.name: getattr(r, c.name) for c in Run.__table__.columns})

    def runs(self, since: datetime | None = None) -> list[dict]:
        """Every run (newest last), without its measurements."""
        query = select(Run.__table__).order_by(Run.id)
        if since is not None:
            query = query.where(Run.started >= as_utc(since))
        with self._connection() as conn:
            return [_said(r._mapping) for r in conn.execute(query)]

    def frame(self, run_id: int | None = None, since: datetime | None = None, whole_run: int | None = None):
        """The measurements (joined with their run's provenance) as a pandas DataFrame: those of run
        `run_id`, or those measured since `since` and every row of run `whole_run` (a report's
        judged run, which --since never cuts)."""
        import pandas as pd

        query = select(Measurement.__table__, Run.hostname, Run.cpu, Run.git_commit, Run.recipe_name,
                       Run.recipe_hash, Run.started.label("run_started")).join(Run, Measurement.run_id == Run.id)
        runs = select(Run.id, Run.provenance, Run.recipe)
        if run_id is not None:
            query, runs = query.where(Measurement.run_id == run_id), runs.where(Run.id == run_id)
        if since is not None:
            # whole runs, by when they started (as runs() trims them): never half of one
            kept = or_(Run.started >= as_utc(since), Run.id == whole_run)
            query, runs = query.where(kept), runs.where(kept)
        with self._connection() as conn:
            try:
                frame = pd.read_sql(query.order_by(Measurement.id), conn)
            except pd.errors.DatabaseError as err:  # pandas' wrapping of the database's error
                raise err.__cause__ if isinstance(err.__cause__, SQLAlchemyError) else err
            # each run's provenance decoded once, not once per row: most of the time of a long history's report
            provenance, recipes = {}, {}
            for run, prov, recipe in conn.execute(runs):
                provenance[run], recipes[run] = prov, recipe
        frame["run_provenance"] = frame["run_id"].map(provenance)
        frame[RUN_RECIPE] = frame["run_id"].map(recipes)  # what verdicts name of a recipe's change (row_provenance)
        return frame


def _measurement(run_id: int, row: dict, **stored) -> Measurement:
    """A row as the store keeps it: its columns (not its id, which the store gives), `stored` over the row's own
    (a kept row's time, as its file's line gives it)."""
    return Measurement(run_id=run_id, **({k: v for k, v in row.items() if k in COLUMNS and k != "id"} | stored))


class UnsavedRows:
    """Rows a run's store refused (locked past its wait, read-only, full, unreachable), kept in a JSON
    Lines file until `tvmharness store load FILE` puts them in: a store failing mid-run costs no
    measurement. The file holds the run's record, then a row a line, then when the run finished."""

    def __init__(self, run: dict, store_label: str, store_file: Path | None = None, path: Path | None = None):
        # a SQLite store by its absolute path: a load from another folder finds it
        self.run, self.store_label, self.path = run, store_label, path
        self.store_file = store_file.resolve() if store_file is not None else None
        self.rows: list[tuple[datetime, dict]] = []
        self._lines: list[str] = []  # what keep() wrote, the run's record first: written again elsewhere if need be
        self.finished: datetime | None = None
        self.problem: StoreError | None = None  # the first refusal, said when the run ends
        # read(): what its last line held, where it was cut short (the disk that refused the store filled) and left out
        self.cut_short: str | None = None  # "row", or "end" (when the run finished)

    def keep(self, row: dict, problem: StoreError, folder: Path) -> None:
        self.problem = self.problem or problem
        self.rows.append((row.get("created") or _now(), row))  # the time a run gave it, which its table showed
        self._write({"row": row, "created": self.rows[-1][0]}, folder)

    def keep_finished(self, problem: StoreError, folder: Path) -> None:
        self.problem, self.finished = problem, _now()  # the store as the run ends it: what to fix, or wait for
        self._write({"finished": self.finished}, folder)

    def _write(self, line: dict, folder: Path) -> None:
        """Appends a line; where that fails (the disk filled), the whole file again in the next place:
        the run's outputs folder, else the system's temporary one. A row once kept is never dropped."""
        if not self._lines:
            self._lines.append(_json_line({"run": self.run, "store": self.store_label,
                                           "store_file": str(self.store_file) if self.store_file else None}))
        self._lines.append(_json_line(line))
        if self.path is not None:
            try:
                with self.path.open("a") as f:
                    f.write(self._lines[-1])
                return
            except OSError:
                pass
        stamp = as_utc(self.run["started"]).strftime("%Y%m%dT%H%M%S")
        for place in (folder, Path(tempfile.gettempdir())):
            path = place / f"unsaved-rows-run-{self.run['id']}-{stamp}.jsonl"
            if self.path is not None and path.parent.resolve() == self.path.parent.resolve():
                continue  # the place that just refused
            try:
                place.mkdir(parents=True, exist_ok=True)
                path.write_text("".join(self._lines))
            except OSError:
                with contextlib.suppress(OSError):
                    path.unlink()  # no empty or cut-off file left where the disk is full
                continue
            if self.path is not None:  # its rows are all in the new file: a load of both would repeat them
                with contextlib.suppress(OSError):
                    self.path.unlink()
            self.path = path
            return
        raise StoreError(f"{self.problem.cause}, and its rows cannot be kept in {folder} nor in "
                         f"{tempfile.gettempdir()}", self.problem.fix)

    @classmethod
    @contextlib.contextmanager
    def loading(cls, path: Path):
        """The file read while this process alone loads it (a second `store load` of it waits); None
        where a load that held it first has removed it."""
        with open(path, "rb") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            try:
                gone = os.fstat(held.fileno()).st_ino != path.stat().st_ino
            except FileNotFoundError:
                gone = True
            yield None if gone else cls.read(path)

    @classmethod
    def read(cls, path: Path) -> "UnsavedRows":
        """A file written by keep(); anything else is refused with what it is. A last line cut short
        (written as a disk filled) is left out, and the rows before it are read."""
        bad = HarnessError(f"{path} is not a file of rows a results store refused",
                           "give the unsaved-rows-run-*.jsonl file a run named when its store refused rows")
        try:
            text = path.read_text()
            lines = [line for line in text.splitlines() if line.strip()]
            cut = lines[-1] if lines and not text.endswith("\n") and not _parses_as_json(lines[-1]) else None
            lines = [json.loads(line) for line in (lines[:-1] if cut else lines)]
            head = lines[0]["run"]
            file = lines[0].get("store_file")
            kept = cls({**head, "started": _time(head["started"]), "finished": None}, lines[0]["store"],
                       Path(file) if file else None, path)
            for line in lines[1:]:
                if "row" in line:
                    kept.rows.append((_time(line["created"]), line["row"]))
                else:
                    kept.finished = _time(line["finished"])
        except (ValueError, LookupError, TypeError, UnicodeDecodeError):
            raise bad from None
        kept.cut_short = None if cut is None else "end" if cut.startswith('{"finished"') else "row"
        return kept


def _parses_as_json(line: str) -> bool:
    try:
        json.loads(line)
        return True
    except ValueError:
        return False


def _json_line(doc: dict) -> str:
    return json.dumps(doc, default=lambda v: v.isoformat() if isinstance(v, datetime) else plain(v)
                      if hasattr(v, "item") else str(v)) + "\n"


def _time(text: str) -> datetime:
    return as_utc(datetime.fromisoformat(text))
