"""
Real C{python -m asynqueue.wire serve} processes on loopback, for the wire
tests: started on a free port (the server says which), killed with SIGKILL
or stopped with SIGTERM, and restarted on the same port.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SECRET = "correct horse battery staple, wire"
_SERVING = re.compile(rb"serving on [\d.]+:(\d+)")


class Server:
    """
    One server process, with its stderr (the log) in a file.
    """

    def __init__(
        self,
        tmp: Path,
        *,
        tls: bool = True,
        secret: str = SECRET,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.tmp = tmp
        self.tls = tls
        self.secret = secret
        #: More command-line arguments.
        self.extra = extra
        #: The line the server printed once it listened.
        self.banner = ""
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log = tmp / f"server-{id(self)}.log"

    @property
    def description(self) -> str:
        return f"tcp:127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 60) -> Server:
        """
        Start the server (on its old port, if it had one) and wait until
        it listens.
        """
        secretFile = self.tmp / f"secret-{id(self)}"
        secretFile.write_text(self.secret + "\n")
        command = [sys.executable, "-m", "asynqueue.wire", "serve"]
        command += ["--port", str(self.port), "--interface", "127.0.0.1"]
        command += ["--secret-file", str(secretFile)]
        if not self.tls:
            command.append("--no-tls")
        command += self.extra
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env.pop("ASYNQUEUE_WIRE_SECRET", None)
        deadline = time.monotonic() + timeout
        while True:
            self._closePipe()  # (A restart: the killed process's pipe.)
            with open(self.log, "ab") as log:
                self.process = subprocess.Popen(
                    command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log
                )
            port = self._readPort(deadline)
            if port is not None:
                self.port = port
                return self
            # The old port may still be held a moment after a kill: again.
            self.process.wait()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: {self.log.read_text()}")
            time.sleep(0.2)

    def _readPort(self, deadline: float) -> int | None:
        assert self.process is not None and self.process.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(self.process.stdout, selectors.EVENT_READ)
        data = b""
        try:
            while time.monotonic() < deadline:
                if not selector.select(timeout=0.5):
                    if self.process.poll() is not None:
                        return None
                    continue
                chunk = os.read(self.process.stdout.fileno(), 4096)
                if not chunk:
                    return None
                data += chunk
                match = _SERVING.search(data)
                if match:
                    self.banner = data.decode(errors="replace")
                    return int(match.group(1))
        finally:
            selector.close()
        raise RuntimeError(f"the server did not start in time: {self.log.read_text()}")

    def kill(self) -> None:
        """
        SIGKILL, and wait for it to be gone.
        """
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self._closePipe()

    def stop(self) -> None:
        """
        SIGTERM (SIGKILL if it does not end within 30 s).
        """
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._closePipe()

    def _closePipe(self) -> None:
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()

    def logText(self) -> str:
        return self.log.read_text(errors="replace")
