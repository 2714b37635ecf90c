"""A private PostgreSQL server for local mode and tests: its own data directory, a free loopback port, TLS only
(plain connections are rejected by pg_hba), SCRAM passwords, no trust authentication anywhere.

    with PrivatePostgres(Path(tmp), ca) as pg:                 # initdb + start; stop and clean up on exit
        pg.create_database("mlflow", owner="mlflow", password=secret)
        pg.url("mlflow", "mlflow", secret)                     # postgresql://…?sslmode=verify-full&sslrootcert=…

It never touches the machine's own PostgreSQL service. Running as root, the server runs as the `postgres` user
(PostgreSQL refuses root); its files live in a directory owned by that user.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

from finml.local.files import write_file
from finml.local.tls import LocalCA

ADMIN_USER = "finml_admin"
START_TIMEOUT_S = 60


class PostgresError(RuntimeError):
    """PostgreSQL could not be found, initialised or started; the message says which and why."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _bin_dir() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if candidates:
        return candidates[-1].parent
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise PostgresError("PostgreSQL server binaries not found (install Debian's `postgresql` package; "
                        "./dev.sh test does)")


class PrivatePostgres:
    """One private cluster; a context manager. `admin_password` is generated unless given."""

    def __init__(self, base_dir: Path, ca: LocalCA, *, port: int | None = None,
                 admin_password: str | None = None) -> None:
        self.base_dir = Path(base_dir)
        self.ca = ca
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.admin_password = admin_password or secrets.token_urlsafe(24)
        self.data_dir = self.base_dir / "data"
        self.log_path = self.base_dir / "postgres.log"
        self._bin = _bin_dir()
        self._proc: subprocess.Popen[bytes] | None = None
        self._as_user: list[str] = []
        self._uid = self._gid = None
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresError("running as root needs the `postgres` system user (Debian's postgresql "
                                    "package creates it)") from None
            self._uid, self._gid = entry.pw_uid, entry.pw_gid
            self._as_user = ["runuser", "-u", "postgres", "--"]

    # -------------------------------------------------------------------------------------------- lifecycle

    def __enter__(self) -> "PrivatePostgres":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _own(self, path: Path) -> None:
        if self._uid is not None:
            os.chown(path, self._uid, self._gid)

    def _run(self, *argv: str, input_text: str | None = None) -> None:
        proc = subprocess.run([*self._as_user, *argv], input=input_text, capture_output=True, text=True)
        if proc.returncode != 0:
            raise PostgresError(f"{Path(argv[0]).name} failed (exit {proc.returncode}): "
                                f"{(proc.stderr or proc.stdout).strip()[-2000:]}")

    def start(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base_dir, 0o700)
        self._own(self.base_dir)
        for parent in self.base_dir.resolve().parents:  # the server user must be able to reach its directory
            if parent.stat().st_mode & 0o001 == 0 and self._uid is not None:
                os.chmod(parent, parent.stat().st_mode | 0o001)
        cert, key = self.ca.issue("postgres", directory=self.base_dir)
        shutil.copy(self.ca.bundle, self.base_dir / "ca.pem")
        for path in (cert, key, self.base_dir / "ca.pem"):
            self._own(path)
        pwfile = self.base_dir / "admin.pw"
        write_file(pwfile, self.admin_password + "\n")
        self._own(pwfile)
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(str(self._bin / "initdb"), "-D", str(self.data_dir), "-U", ADMIN_USER,
                      "--auth=scram-sha-256", f"--pwfile={pwfile}", "--encoding=UTF8", "--no-instructions")
        pwfile.unlink()
        conf = self.data_dir / "postgresql.conf"
        conf.write_text(conf.read_text() + "\n# finml local mode\n" + "\n".join([
            f"listen_addresses = '{self.host}'",
            f"port = {self.port}",
            f"unix_socket_directories = '{self.base_dir}'",
            "ssl = on",
            f"ssl_cert_file = '{cert}'",
            f"ssl_key_file = '{key}'",
            "ssl_min_protocol_version = 'TLSv1.2'",
            "password_encryption = 'scram-sha-256'",
            "fsync = off",            # throwaway local data: durability buys nothing here, speed does
            "max_connections = 200",
        ]) + "\n")
        (self.data_dir / "pg_hba.conf").write_text(
            "# TLS and SCRAM only: plain TCP connections are rejected outright\n"
            "local   all all                  scram-sha-256\n"
            f"hostssl all all {self.host}/32 scram-sha-256\n"
            "hostnossl all all 0.0.0.0/0    reject\n"
            "hostnossl all all ::/0         reject\n")
        log = open(self.log_path, "ab")
        self._proc = subprocess.Popen([*self._as_user, str(self._bin / "postgres"), "-D", str(self.data_dir)],
                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise PostgresError(f"postgres exited with {self._proc.returncode}; log: {self.log_path}\n"
                                    + self.log_path.read_text(errors="replace")[-2000:])
            ready = subprocess.run([str(self._bin / "pg_isready"), "-h", self.host, "-p", str(self.port), "-q"])
            if ready.returncode == 0:
                return
            time.sleep(0.2)
        self.stop()
        raise PostgresError(f"postgres did not accept connections within {START_TIMEOUT_S}s; log: {self.log_path}")

    def stop(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, signal.SIGINT)  # fast shutdown: roll back, close connections, exit
                self._proc.wait(timeout=30)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        self._proc = None

    # -------------------------------------------------------------------------------------------- use

    def url(self, database: str, user: str, password: str, driver: str = "postgresql") -> str:
        """A SQLAlchemy/libpq URL that verifies the server against the local CA."""
        return (f"{driver}://{quote(user, safe='')}:{quote(password, safe='')}@{self.host}:{self.port}/"
                f"{quote(database, safe='')}?sslmode=verify-full&sslrootcert={quote(str(self.ca.bundle))}")

    def admin_connect(self, database: str = "postgres"):
        import psycopg

        return psycopg.connect(host=self.host, port=self.port, user=ADMIN_USER, password=self.admin_password,
                               dbname=database, sslmode="verify-full", sslrootcert=str(self.ca.bundle),
                               autocommit=True)

    def create_database(self, name: str, *, owner: str, password: str) -> str:
        """Create role `owner` (login, SCRAM password) and database `name` owned by it; idempotent. Returns the URL."""
        from psycopg import sql

        with self.admin_connect() as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (owner,)).fetchone()
            stmt = "ALTER ROLE {} WITH LOGIN PASSWORD {}" if exists else "CREATE ROLE {} WITH LOGIN PASSWORD {}"
            conn.execute(sql.SQL(stmt).format(sql.Identifier(owner), sql.Literal(password)))
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name),
                                                                           sql.Identifier(owner)))
            conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name)))
        return self.url(name, owner, password)
