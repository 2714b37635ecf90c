#!/usr/bin/env python3
"""SSH test hosts for the on-prem Ansible roles: debootstrap'd Debian chroots, each with its own sshd.

Design (nothing on this machine changes outside ``.testhosts/``):

* ``build_rootfs()`` debootstraps Debian (minbase + the packages the roles need) once into
  ``.testhosts/cache/rootfs-<suite>-<hash>``; the hash covers suite, architecture and package list, so a changed list
  builds a new cache. The mirror is read at runtime from this machine's apt configuration
  (``/etc/apt/sources.list.d/*.sources`` / ``sources.list``) or ``FINML_DEBOOTSTRAP_MIRROR``.
* ``TestHost.create()`` copies the cached rootfs to ``.testhosts/run/<name>/root`` and installs a per-run client key
  as root's only authorized key; the chroot's own sshd listens on ``127.0.10.<n>:<port>`` (key only).
* ``TestHost.start()`` runs ``unshare --pid --mount --fork --kill-child chroot <root> /usr/sbin/sshd -D``: a private
  mount namespace (``/proc`` and a fresh ``devpts`` are mounted *inside* it, so they vanish with it — nothing to unmount
  on the host), a private UTS namespace (its own hostname) and a private PID namespace (sshd is its init; when it dies the kernel ends every session it spawned).
  The ``unshare`` PID goes into ``.testhosts/run/<name>/sshd.pid``; ``stop()`` signals only that PID.

Teardown removes the per-run copies (``FINML_TESTHOSTS_KEEP=1`` keeps them for debugging); the cache stays.

CLI: ``python tests/ansible/hosts.py build|up|down [--count N]`` for manual debugging.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TESTHOSTS_DIR = Path(os.environ.get("FINML_TESTHOSTS_DIR", REPO_ROOT / ".testhosts"))
ADDRESS_PREFIX = os.environ.get("FINML_TESTHOSTS_PREFIX", "127.0.10.")

# What the roles need to find already installed on a test host (a real node gets them from apt during converge;
# test hosts have no reachable repositories at converge time, so they are baked into the cached rootfs).
ROOTFS_PACKAGES = (
    "openssh-server",
    "python3",
    "python3-apt",
    "nftables",
    "chrony",
    "auditd",
    "cryptsetup-bin",
    "kmod",
    "procps",
    "iproute2",
    "ca-certificates",
    "containerd",
)

MINIMAL_DEVICES = {  # name: (major, minor); mknod inside the test host only
    "null": (1, 3),
    "zero": (1, 5),
    "full": (1, 7),
    "random": (1, 8),
    "urandom": (1, 9),
    "tty": (5, 0),
}


def _log(msg: str) -> None:
    print(f"[testhosts] {msg}", file=sys.stderr, flush=True)


def debian_suite() -> str:
    if os.environ.get("FINML_DEBOOTSTRAP_SUITE"):
        return os.environ["FINML_DEBOOTSTRAP_SUITE"]
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return "bookworm"


def apt_mirror() -> str:
    """The Debian archive this machine's apt already uses (never hard-coded)."""
    if os.environ.get("FINML_DEBOOTSTRAP_MIRROR"):
        return os.environ["FINML_DEBOOTSTRAP_MIRROR"]
    candidates: list[str] = []
    sources_d = Path("/etc/apt/sources.list.d")
    for path in sorted(sources_d.glob("*.sources")) if sources_d.is_dir() else []:
        for stanza in path.read_text().split("\n\n"):
            fields = {}
            for line in stanza.splitlines():
                if ":" in line and not line.lstrip().startswith("#"):
                    key, value = line.split(":", 1)
                    fields[key.strip().lower()] = value.strip()
            if fields.get("enabled", "yes").lower() == "no" or "deb" not in fields.get("types", "").split():
                continue
            if "main" in fields.get("components", "").split():
                candidates += fields.get("uris", "").split()
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        for line in legacy.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 4 and parts[0] == "deb" and "main" in parts[3:]:
                uri = next((p for p in parts[1:] if not p.startswith("[")), "")
                candidates.append(uri)
    archives = [u for u in candidates if u.rstrip("/").endswith("/debian")]
    if not archives:
        raise RuntimeError("no Debian archive found in /etc/apt sources; set FINML_DEBOOTSTRAP_MIRROR")
    return archives[0]


def _arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def rootfs_cache_dir() -> Path:
    key = hashlib.sha256(f"{debian_suite()}|{_arch()}|{','.join(ROOTFS_PACKAGES)}|v1".encode()).hexdigest()[:12]
    return TESTHOSTS_DIR / "cache" / f"rootfs-{debian_suite()}-{key}"


def build_rootfs() -> Path:
    """Debootstrap once into the cache (under a lock, so parallel sessions build it once)."""
    target = rootfs_cache_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".finml-complete").exists():
            return target
        staging = target.with_name(target.name + ".building")
        shutil.rmtree(staging, ignore_errors=True)
        mirror = apt_mirror()
        cmd = [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(ROOTFS_PACKAGES)}",
            f"--arch={_arch()}",
            debian_suite(),
            str(staging),
            mirror,
        ]
        _log(f"debootstrap {debian_suite()} into {staging} (first run only)")
        started = time.monotonic()
        log_path = target.parent / "debootstrap.log"
        with open(log_path, "w") as log:
            result = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"debootstrap failed ({result.returncode}); see {log_path}")
        # Trim what test hosts never need, to keep per-host copies fast.
        for junk in ("var/cache/apt/archives", "usr/share/doc", "usr/share/man", "usr/share/locale"):
            path = staging / junk
            if path.is_dir():
                for child in path.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    elif child.name not in ("lock", "partial"):
                        child.unlink()
        # Host keys once per cache; sshd in each host uses them (the tests do not pin host keys).
        subprocess.run(["chroot", str(staging), "ssh-keygen", "-A"], check=True, capture_output=True)
        (staging / ".finml-complete").write_text(" ".join(cmd[:-1]) + "\n")
        staging.rename(target)
        _log(f"debootstrap done in {time.monotonic() - started:.0f}s")
        return target


def free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


@dataclass
class TestHost:
    name: str
    address: str
    port: int
    run_dir: Path
    client_key: Path
    pid: int | None = field(default=None)

    __test__ = False  # not a pytest test class

    @property
    def root(self) -> Path:
        return self.run_dir / "root"

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "sshd.pid"

    def create(self, rootfs: Path) -> None:
        self.stop()
        if self.run_dir.exists():
            subprocess.run(["rm", "-rf", "--one-file-system", str(self.run_dir)], check=False)
        self.run_dir.mkdir(parents=True)
        subprocess.run(["cp", "-a", "--reflink=auto", str(rootfs), str(self.root)], check=True)
        dev = self.root / "dev"
        for name, (major, minor) in MINIMAL_DEVICES.items():
            node = dev / name
            if not node.exists():
                os.mknod(node, 0o666 | 0o020000, os.makedev(major, minor))
                os.chmod(node, 0o666)
        (dev / "pts").mkdir(exist_ok=True)
        (dev / "ptmx").unlink(missing_ok=True)
        (dev / "ptmx").symlink_to("pts/ptmx")
        (self.root / "run/sshd").mkdir(parents=True, exist_ok=True)
        ssh_dir = self.root / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text(Path(f"{self.client_key}.pub").read_text())
        os.chmod(ssh_dir / "authorized_keys", 0o600)
        # The harness's own sshd config lives outside /etc/ssh so node_baseline's hardening drop-in is what is
        # tested; it only adds where to listen and where to keep the pid.
        (self.root / "etc/finml-test-sshd.conf").write_text(
            f"Include /etc/ssh/sshd_config\nListenAddress {self.address}:{self.port}\n"
            "PidFile /run/sshd-test.pid\nUsePAM no\n"
        )
        # sshd reads Include-d settings first-wins; the test listen/pid lines above only matter because the stock
        # config sets neither.
        (self.root / "etc/hostname").write_text(self.name + "\n")

    def start(self, timeout: float = 15.0) -> None:
        script = (
            'set -e; r="$1"; mount -t proc proc "$r/proc"; '
            'mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$r/dev/pts"; '
            'chroot "$r" /bin/hostname -F /etc/hostname; '
            'exec chroot "$r" /usr/sbin/sshd -D -e -f /etc/finml-test-sshd.conf'
        )
        log = open(self.run_dir / "sshd.log", "ab")
        proc = subprocess.Popen(
            ["unshare", "--pid", "--mount", "--uts", "--fork", "--kill-child=SIGTERM", "sh", "-c", script, "sh", str(self.root)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.pid = proc.pid
        self.pidfile.write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{self.name}: sshd exited: {(self.run_dir / 'sshd.log').read_text()[-2000:]}")
            try:
                with socket.create_connection((self.address, self.port), timeout=1) as sock:
                    if sock.recv(64).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{self.name}: sshd did not listen on {self.address}:{self.port}")

    def stop(self) -> None:
        """Stop only what this harness started: the sshd under the ``unshare`` whose PID is in our pidfile.

        sshd is the init of its PID namespace, so ending it ends every session it spawned; ``unshare`` then reaps it
        and exits (no zombies are left to the container's init).
        """
        if not self.pidfile.exists():
            return
        pid = int(self.pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline")
        if cmdline.exists() and str(self.root).encode() in cmdline.read_bytes():
            children = Path(f"/proc/{pid}/task/{pid}/children")
            child_pids = [int(c) for c in children.read_text().split()] if children.exists() else []
            for child in child_pids or [pid]:
                os.kill(child, signal.SIGTERM)
            for _ in range(100):
                try:
                    if os.waitpid(pid, os.WNOHANG)[0] == pid:
                        break
                except ChildProcessError:  # started by another process (CLI ``down``): just wait for it to go
                    if not Path(f"/proc/{pid}").exists() or b"unshare" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                        break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
        self.pidfile.unlink(missing_ok=True)

    def ssh(self, command: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ssh", *ssh_options(self.client_key), "-p", str(self.port), f"root@{self.address}", command],
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )


def ssh_options(key: Path) -> list[str]:
    return [
        "-i", str(key),
        "-o", "IdentitiesOnly=yes",
        "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null",
        "-o", "LogLevel=ERROR",
    ]  # fmt: skip


def generate_client_key(run_dir: Path) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    key = run_dir / "id_ed25519"
    for path in (key, Path(f"{key}.pub")):
        path.unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "finml-testhosts", "-f", str(key)], check=True)
    return key


def bring_up(count: int = 2, run_dir: Path | None = None) -> list[TestHost]:
    run_dir = run_dir or TESTHOSTS_DIR / "run"
    timings: dict[str, float] = {}
    started = time.monotonic()
    rootfs = build_rootfs()
    timings["rootfs"] = time.monotonic() - started
    key = generate_client_key(run_dir)
    hosts = []
    for index in range(1, count + 1):
        address = f"{ADDRESS_PREFIX}{index}"
        host = TestHost(f"gpu-node-{index}", address, free_port(address), run_dir / f"gpu-node-{index}", key)
        mark = time.monotonic()
        host.create(rootfs)
        timings[f"copy {host.name}"] = time.monotonic() - mark
        mark = time.monotonic()
        host.start()
        timings[f"start {host.name}"] = time.monotonic() - mark
        hosts.append(host)
    _log("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    return hosts


def tear_down(hosts: list[TestHost]) -> None:
    """Stop our sshds; remove the per-run root copies (keep them, and the logs, with FINML_TESTHOSTS_KEEP=1)."""
    for host in hosts:
        host.stop()
    if os.environ.get("FINML_TESTHOSTS_KEEP") == "1":
        return
    for host in hosts:
        if host.root.is_dir() and not host.pidfile.exists():
            subprocess.run(["rm", "-rf", "--one-file-system", str(host.root)], check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["build", "up", "down"])
    parser.add_argument("--count", type=int, default=2)
    args = parser.parse_args()
    run_dir = TESTHOSTS_DIR / "run"
    if args.action == "build":
        print(build_rootfs())
    elif args.action == "up":
        for host in bring_up(args.count, run_dir):
            print(f"{host.name} {host.address}:{host.port} key={host.client_key} pid={host.pid}")
    else:
        for pidfile in sorted(run_dir.glob("*/sshd.pid")):
            host = TestHost(pidfile.parent.name, "", 0, pidfile.parent, run_dir / "id_ed25519")
            host.stop()
            print(f"stopped {host.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
