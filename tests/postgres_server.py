"""A real, throwaway PostgreSQL server for the tests: `initdb` in a temporary folder (as the `postgres`
user when the tests run as root, since PostgreSQL refuses to run as root), started on a free loopback
port with password authentication, stopped and removed at the end."""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def server_binaries() -> Path | None:
    """The folder of `initdb` and `postgres`: on the PATH, or Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("initdb")
    if found and (Path(found).resolve().parent / "pg_isready").is_file():  # a link into the version's own bin/
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(versions[-1]).parent if versions else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    USER = "mnist99"

    def __init__(self, bindir: Path) -> None:
        self.bindir, self.port = bindir, free_port()
        self.password = "pw-" + secrets.token_hex(12)  # what the tests look for in every file a search writes
        self.folder = Path(tempfile.mkdtemp(prefix="mnist99-postgres-"))
        self.as_owner: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
            self.as_owner = ["runuser", "-u", "postgres", "--"]
        self.process: subprocess.Popen | None = None

    def run(self, *cmd: str) -> str:
        proc = subprocess.run([*self.as_owner, *cmd], capture_output=True, text=True, timeout=120, cwd=self.folder)
        if proc.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def start(self) -> PostgresServer:
        data = self.folder / "data"
        self.run(str(self.bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256",
                 "-E", "UTF8", "--no-sync")
        log = open(self.folder / "server.log", "wb")  # noqa: SIM115 - the server's, for as long as it runs
        self.process = subprocess.Popen([*self.as_owner, str(self.bindir / "postgres"), "-D", str(data), "-p", str(self.port),
                                         "-k", str(self.folder), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 60
        while subprocess.run([str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                             capture_output=True).returncode != 0:
            if self.process.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"PostgreSQL did not start: {(self.folder / 'server.log').read_text()[-2000:]}")
            time.sleep(0.2)
        self.sql(f"CREATE ROLE {self.USER} LOGIN PASSWORD '{self.password}'")
        return self

    def sql(self, statement: str) -> str:
        return self.run(str(self.bindir / "psql"), "-h", str(self.folder), "-p", str(self.port), "-U", "postgres", "-v",
                        "ON_ERROR_STOP=1", "-c", statement)

    def new_database(self, name: str) -> str:
        """A fresh database owned by the test user; its URL, password included."""
        self.sql(f"CREATE DATABASE {name} OWNER {self.USER}")
        return f"postgresql://{self.USER}:{self.password}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)  # PostgreSQL's fast shutdown
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        shutil.rmtree(self.folder, ignore_errors=True)
