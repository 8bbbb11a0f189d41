"""A real `dmfnet serve` started from the serving environment (.venv-serve: PyTriton pins numpy<2) on free
loopback ports, for the tests of this folder (conftest.py starts one for the whole folder)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SERVE_BIN = REPO / ".venv-serve" / "bin" / "dmfnet"


def die_with_parent() -> None:
    """In the server's process: get SIGTERM when the test process dies, so no server outlives a crashed run."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Server:
    def __init__(self, onnx: Path, ports: list[int], *extra: str) -> None:
        self.onnx, self.ports, self.extra = onnx, ports, extra
        self.proc: subprocess.Popen | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.ports[0]}"

    @property
    def grpc(self) -> str:
        return f"grpc://127.0.0.1:{self.ports[1]}"

    def start(self, timeout: float = 120) -> dict:
        self.log_path = self.onnx.parent / f"server-{time.monotonic_ns()}.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(SERVE_BIN), "serve", "--onnx", str(self.onnx), "--threads", "1", "--http-port", str(self.ports[0]),
             "--grpc-port", str(self.ports[1]), "--metrics-port", str(self.ports[2]), "--max-batch", "8",
             "--preferred-batch", "4", "8", "--queue-delay-us", "20000", *self.extra],
            stdout=subprocess.PIPE, stderr=self.log, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("ready "):
                return json.loads(line[len("ready "):])
            if not line and self.proc.poll() is not None:
                break
        self.stop()
        raise RuntimeError(f"server did not start: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode if self.proc else 0
