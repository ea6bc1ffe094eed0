"""A private PostgreSQL server for one cluster or one test session, from the installed binaries.

`PostgresServer(directory).start()` runs `initdb` into directory/data the first time (trust
authentication for the one role `ltrr`; the server listens on `host` only, 127.0.0.1 by default,
and its unix socket is in `directory`), starts `postgres` on a free port with pg_ctl (which waits until it accepts
connections), creates the database `ltrr` if missing, and gives its URL; `stop()` shuts it down
(fast mode: open sessions are ended, everything committed is on disk); `start()` again restarts it
on the same port with the same data. Used by `ltrr up` (`[store] url = "postgres"`) and the
tests' session fixture.

initdb and postgres refuse to run as root: as root, both run as the `postgres` system user
(`runuser -u postgres --`), and `directory` is handed to that user; a parent directory that shuts
others out (a 0700 temporary directory) is given search permission only (o+x: others may pass
through it to a name they know, not list it), with a warning naming it.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import socket
import stat
import subprocess
from pathlib import Path

import psycopg
from psycopg import sql

log = logging.getLogger("ltrr.postgres")
# Debian's postgresql package; a newer major version is taken when several are installed.
PG_ROOT = Path("/usr/lib/postgresql")
DATABASE = "ltrr"
ROLE = "ltrr"
SYSTEM_USER = "postgres"  # the user the server runs as when we are root
START_TIMEOUT_S = 60


def find_binaries(root: Path = PG_ROOT) -> Path | None:
    """The bin directory of the newest PostgreSQL under `root` holding initdb, pg_ctl and postgres;
    None when there is none (install Debian's `postgresql` package)."""
    if not root.is_dir():
        return None
    for version in sorted((p for p in root.iterdir() if p.name.isdigit()), key=lambda p: int(p.name), reverse=True):
        bin_dir = version / "bin"
        if all((bin_dir / name).exists() for name in ("initdb", "pg_ctl", "postgres")):
            return bin_dir
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """A PostgreSQL server of our own in `directory` (module docstring), listening on `host` (a
    loopback or local address) at `port` (0: a free one)."""

    def __init__(self, directory: str | os.PathLike[str], *, host: str = "127.0.0.1", port: int = 0,
                 bin_dir: Path | None = None) -> None:
        found = bin_dir or find_binaries()
        if found is None:
            raise FileNotFoundError(f"no PostgreSQL server binaries (initdb, pg_ctl, postgres) under {PG_ROOT}: "
                                    "install the `postgresql` package (apt-get install postgresql)")
        self.bin_dir = found
        self.directory = Path(directory).resolve()
        self.data = self.directory / "data"
        self.host = host
        self.port = port or free_port(host)
        self.as_root = os.geteuid() == 0

    @property
    def url(self) -> str:
        """The libpq URL of the database (TCP on `host`)."""
        return self.database_url(DATABASE)

    def database_url(self, name: str) -> str:
        """The libpq URL of the database `name` on this server (TCP on `host`)."""
        return f"postgresql://{ROLE}@{self.host}:{self.port}/{name}"

    def create_database(self, name: str) -> str:
        """Create the database `name` (it must not exist yet) on the running server; its URL."""
        with psycopg.connect(self.database_url("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.database_url(name)

    @property
    def pid(self) -> int:
        """The postmaster's process id (0 when it is not running)."""
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return 0

    def _run(self, *args: str) -> None:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.as_root:
            command = ["runuser", "-u", SYSTEM_USER, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=START_TIMEOUT_S + 30)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip() or done.stdout}")

    def _own_directory(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.as_root:
            return
        user = pwd.getpwnam(SYSTEM_USER)
        opened = [p for p in self.directory.parents if not p.stat().st_mode & stat.S_IXOTH]
        for path in opened:
            os.chmod(path, path.stat().st_mode | stat.S_IXOTH)
        if opened:
            log.warning("let the %s user pass through %s (search permission only) to reach %s", SYSTEM_USER,
                        ", ".join(map(str, opened)), self.directory)
        for path in (self.directory, *self.directory.rglob("*")):
            os.chown(path, user.pw_uid, user.pw_gid)
        probe = subprocess.run(["runuser", "-u", SYSTEM_USER, "--", "test", "-w", str(self.directory)], check=False)
        if probe.returncode != 0:
            raise PermissionError(f"{self.directory}: the `{SYSTEM_USER}` user cannot write there; use a "
                                  "directory on a local file system that root can hand over")

    def start(self) -> str:
        """initdb (first time), start, create the database; its URL."""
        self._own_directory()
        if not (self.data / "PG_VERSION").exists():
            self._run("initdb", "-D", str(self.data), "-U", ROLE, "-A", "trust", "-E", "UTF8", "--no-instructions")
        options = (f"-p {self.port} -k {self.directory} -c listen_addresses={self.host} -c fsync=on "
                   "-c synchronous_commit=on")
        self._run("pg_ctl", "start", "-D", str(self.data), "-w", "-t", str(START_TIMEOUT_S), "-l",
                  str(self.directory / "server.log"), "-o", options)
        with psycopg.connect(self.database_url("postgres"), autocommit=True) as conn:
            missing = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone() is None
        return self.create_database(DATABASE) if missing else self.url

    def stop(self) -> None:
        """Shut the server down (fast: sessions are ended, committed data stays). No-op if stopped."""
        if self.pid and (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", str(START_TIMEOUT_S))

    def remove(self) -> None:
        """Stop, then delete the directory with its data."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
