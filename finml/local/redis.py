"""A private Redis server for local mode and tests: Debian's `redis-server`, TLS only on a free loopback port, an ACL
user with a password, the `default` user disabled, its own process group.

    with PrivateRedis(Path(tmp), ca) as redis:                # start; SHUTDOWN NOSAVE and clean up on exit
        redis.client()                                         # redis-py client over TLS, verified against the CA
        redis.feast_connection_string()                        # "127.0.0.1:PORT,ssl=true,...,password=..."

The plain-TCP port is off (`port 0`), so nothing speaks to it without TLS. Clients are not asked for certificates
(`tls-auth-clients no`): they authenticate with the ACL password, as ElastiCache clients do with an auth token.
It never touches the machine's own Redis service.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

from finml.local.postgres import free_port
from finml.local.files import write_file
from finml.local.tls import LocalCA

DEFAULT_USER = "feast"
START_TIMEOUT_S = 30


class RedisError(RuntimeError):
    """redis-server could not be found or started; the message says why."""


def _server_binary() -> str:
    found = shutil.which("redis-server")
    if not found:
        raise RedisError("redis-server not found (install Debian's `redis-server` package; ./dev.sh test does)")
    return found


class PrivateRedis:
    """One private TLS-only server; a context manager. The password is generated unless given (URL-safe, so it
    can sit in Feast's comma-separated connection string)."""

    def __init__(self, base_dir: Path, ca: LocalCA, *, port: int | None = None, username: str = DEFAULT_USER,
                 password: str | None = None, maxmemory_mb: int = 512) -> None:
        self.base_dir = Path(base_dir)
        self.ca = ca
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.username = username
        self.password = password or secrets.token_urlsafe(24)
        if any(c in self.password for c in ", \n"):
            raise ValueError("the Redis password may not contain commas, spaces or newlines")
        self.maxmemory_mb = maxmemory_mb
        self.log_path = self.base_dir / "redis.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "PrivateRedis":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _write_config(self) -> Path:
        cert, key = self.ca.issue("redis", directory=self.base_dir)
        acl = self.base_dir / "users.acl"
        # `default` is the user every unauthenticated connection gets: switch it off entirely.
        write_file(acl, "user default off nopass nocommands\n"
                        f"user {self.username} on >{self.password} ~* &* +@all -@dangerous +info +ping\n")
        conf = self.base_dir / "redis.conf"
        write_file(conf, "\n".join([
            "# finml local mode: TLS only, ACL passwords, loopback",
            f"bind {self.host}",
            "port 0",
            f"tls-port {self.port}",
            f"tls-cert-file {cert}",
            f"tls-key-file {key}",
            f"tls-ca-cert-file {self.ca.bundle}",
            "tls-auth-clients no",
            'tls-protocols "TLSv1.2 TLSv1.3"',
            "protected-mode yes",
            f"aclfile {acl}",
            f"dir {self.base_dir}",
            f"logfile {self.log_path}",
            "daemonize no",
            'save ""',          # throwaway local data: no snapshots
            "appendonly no",
            f"maxmemory {self.maxmemory_mb}mb",
            "maxmemory-policy noeviction",  # refuse writes rather than silently drop features
        ]) + "\n")
        return conf

    def start(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base_dir, 0o700)
        conf = self._write_config()
        self._proc = subprocess.Popen([_server_binary(), str(conf)], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                log = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
                self._proc = None
                raise RedisError(f"redis-server exited early: {err.strip()} {log.strip()}")
            try:
                client = self.client(socket_timeout=2)
                client.ping()
                client.close()
                return
            except Exception as exc:  # noqa: BLE001 - not up yet; the last error is reported on timeout
                last_error = exc
                time.sleep(0.1)
        self.stop()
        raise RedisError(f"redis-server did not accept TLS connections within {START_TIMEOUT_S}s: {last_error}")

    def stop(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, signal.SIGTERM)  # redis-server shuts down cleanly on SIGTERM
                self._proc.wait(timeout=20)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        if self._proc.stderr:
            self._proc.stderr.close()
        self._proc = None

    # -------------------------------------------------------------------------------------------- use

    def client(self, *, username: str | None = None, password: str | None = None, **kwargs):
        import redis

        return redis.Redis(host=self.host, port=self.port, ssl=True, ssl_ca_certs=str(self.ca.bundle),
                           ssl_cert_reqs="required", username=username or self.username,
                           password=self.password if password is None else password, **kwargs)

    def feast_connection_string(self) -> str:
        """Feast's Redis connection string: TLS verified against the local CA, ACL user and password."""
        return (f"{self.host}:{self.port},ssl=true,ssl_ca_certs={self.ca.bundle},ssl_cert_reqs=required,"
                f"username={self.username},password={self.password}")
