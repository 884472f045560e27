"""A throw-away PostgreSQL server for the tests and ``shadowline bench worker --database postgres``.

Debian's binaries (``make test`` installs the ``postgresql`` package as it installs Chromium), a
temporary data folder, 127.0.0.1 on a free port, fsync off: never a plant's database. The fixture
in ``tests/conftest.py`` starts one server per test session on first use and stops it at the end.
Each test gets a database of its own (``CREATE DATABASE``), so tests stay independent.
When run as root the server runs as the ``postgres`` user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

#: Where Debian's packages put the server's binaries (``/usr/lib/postgresql/15/bin``).
BIN_GLOB = "/usr/lib/postgresql/*/bin"
SUPERUSER = "postgres"


class PostgresUnavailable(RuntimeError):
    """The test server could not be found or started (the message says why and what to install)."""


def find_bin_dir() -> Path:
    configured = os.environ.get("SHADOWLINE_TEST_PG_BIN")
    candidates = [configured] if configured else sorted(glob.glob(BIN_GLOB), key=lambda p: int(Path(p).parent.name), reverse=True)
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").is_file() and (Path(candidate) / "pg_ctl").is_file():
            return Path(candidate)
    raise PostgresUnavailable(
        "PostgreSQL's server binaries were not found (initdb, pg_ctl under /usr/lib/postgresql/*/bin): "
        "run `make test` (it installs Debian's postgresql) or `apt-get install -y postgresql`, or set SHADOWLINE_TEST_PG_BIN"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    """One running test server; :meth:`new_database` hands out fresh, empty databases."""

    bin_dir: Path
    root: Path
    port: int
    run_as: str | None
    _names: count = field(default_factory=lambda: count(1))
    _template: str | None = None

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        command = list(args)
        if self.run_as:
            command = ["runuser", "-u", self.run_as, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=self.root)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.run_as:
            user = pwd.getpwnam(self.run_as)
            os.chown(self.root, user.pw_uid, user.pw_gid)
        if not (self.data_dir / "PG_VERSION").exists():
            result = self._run(str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--no-sync")
            if result.returncode != 0:
                raise PostgresUnavailable(f"initdb failed: {result.stderr.strip() or result.stdout.strip()}")
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.root} -c fsync=off -c max_connections=200"
        result = self._run(
            str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.root / "server.log"), "-o", options, "-w", "-t", "60", "start"
        )
        if result.returncode != 0:
            log = (self.root / "server.log").read_text(errors="replace")[-2000:] if (self.root / "server.log").exists() else ""
            raise PostgresUnavailable(f"pg_ctl start failed: {result.stderr.strip() or result.stdout.strip()} {log}".strip())

    def restart(self) -> None:
        """Restart the server (the resilience tests ride it out)."""
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.root} -c fsync=off -c max_connections=200"
        log = str(self.root / "server.log")
        result = self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l", log, "-o", options, "-m", "fast", "-w", "-t", "60", "restart")
        if result.returncode != 0:
            raise PostgresUnavailable(f"pg_ctl restart failed: {result.stderr.strip() or result.stdout.strip()}")

    def stop(self) -> None:
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "-w", "stop", timeout=60)

    def execute(self, sql: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname=database, autocommit=True) as connection:
            connection.execute(sql.encode())

    def new_database(self, *, migrated: bool = False) -> str:
        """A fresh database, empty or at the latest schema (copied from a template migrated once); returns its URL."""
        template = self._migrated_template() if migrated else "template0"
        name = f"t{os.getpid()}_{next(self._names)}"
        self.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return self.url(name)

    def _migrated_template(self) -> str:
        if self._template is None:
            from sqlalchemy import create_engine

            from db.migrate import upgrade

            name = f"template_{os.getpid()}"
            self.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
            engine = create_engine(self.url(name))
            try:
                upgrade(engine)
            finally:
                engine.dispose()
            self._template = name
        return self._template


def start_server() -> PostgresServer:
    """Start a server in a new temporary folder (as ``postgres`` when this process is root)."""
    bin_dir = find_bin_dir()
    run_as = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SUPERUSER)
        except KeyError:
            raise PostgresUnavailable("running as root, and there is no 'postgres' user to run the test server as (install Debian's postgresql)") from None
        run_as = SUPERUSER
    root = Path(tempfile.mkdtemp(prefix="shadowline-pg-"))
    server = PostgresServer(bin_dir=bin_dir, root=root, port=free_port(), run_as=run_as)
    try:
        server.start()
    except Exception:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return server


def remove(server: PostgresServer) -> None:
    server.stop()
    shutil.rmtree(server.root, ignore_errors=True)
