"""A PostgreSQL server for the store tests: TVMHARNESS_TEST_POSTGRES_URL when set, else a private
throw-away server on loopback when Debian's postgresql binaries are installed, else a skip."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


@pytest.fixture(scope="session")
def postgres_server():
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed (pip install tvmharness[postgres])")
    if os.environ.get("TVMHARNESS_TEST_POSTGRES_URL"):
        yield os.environ["TVMHARNESS_TEST_POSTGRES_URL"]
        return
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("no PostgreSQL server: set TVMHARNESS_TEST_POSTGRES_URL or install Debian's postgresql")
    # PostgreSQL refuses to run as root: run it as the postgres user the Debian package creates.
    as_user = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None or subprocess.run(["id", "postgres"], capture_output=True).returncode:
            pytest.skip("running as root and there is no postgres user to start PostgreSQL as")
        as_user = ["runuser", "-u", "postgres", "--"]
    data = tempfile.mkdtemp(prefix="tvmharness-pg-")
    if as_user:
        shutil.chown(data, "postgres")
    port = _free_port()
    try:
        subprocess.run([*as_user, initdb, "-D", data, "--auth=trust", "-U", "postgres"], check=True, capture_output=True)
        subprocess.run([*as_user, pg_ctl, "-D", data, "-w", "-l", f"{data}/log", "-o",
                        f"-p {port} -h 127.0.0.1 -k {data} -c fsync=off", "start"], check=True, capture_output=True)
    except subprocess.CalledProcessError as err:
        shutil.rmtree(data, ignore_errors=True)
        pytest.skip(f"could not start a private PostgreSQL: {err.stderr.decode(errors='replace')[-300:]}")
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", data, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh, empty database on that server for one test, dropped afterwards."""
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"tvmharness_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(postgres_server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
