"""Starts the real attnbench-server on loopback for the end-to-end tests, and always stops it.

The server is started with --listen_address=127.0.0.1:0 --metrics_address=127.0.0.1:0 and its
ports are read from its one startup line:
  attnbench-server listening on <host>:<port> metrics on <host>:<port> backends <names>
Paths come from the environment ctest sets (see CMakeLists.txt): ATTNBENCH_BIN_DIR holds
attnbench-server and attnbench; ATTNBENCH_PYTHON_PATH lists the generated stub directories.
Every wait is bounded in time.
"""

import atexit
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

BIN_DIR = os.environ.get("ATTNBENCH_BIN_DIR", "")
for _path in reversed(os.environ.get("ATTNBENCH_PYTHON_PATH", "").split(os.pathsep)):
    if _path and _path not in sys.path:
        sys.path.insert(0, _path)

SERVER = os.path.join(BIN_DIR, "attnbench-server")
CLI = os.path.join(BIN_DIR, "attnbench")

STARTUP_RE = re.compile(
    r"^attnbench-server listening on (\S+):(\d+) metrics on (\S+):(\d+) backends (\S+)$")

# Small, fast measurement settings for every request the tests send.
FAST_FLAGS = ["--warmup=1", "--min_iters=2", "--max_iters=3", "--max_seconds=2"]

_live = []


def _kill_all():
    for proc in list(_live):
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


atexit.register(_kill_all)


class Server:
    """A running attnbench-server; use as a context manager so it is always stopped."""

    def __init__(self, *extra_flags, startup_timeout=120.0):
        if not os.access(SERVER, os.X_OK):
            raise RuntimeError(f"no server binary at {SERVER!r} (set ATTNBENCH_BIN_DIR)")
        args = [SERVER, "--listen_address=127.0.0.1:0", "--metrics_address=127.0.0.1:0",
                "--log_level=warning", *extra_flags]
        # stderr goes to a file, never a pipe nobody drains (a full pipe would block the server).
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        _live.append(self.proc)
        try:
            line = self._read_startup_line(startup_timeout)
        except Exception:
            self.stop()
            raise
        match = STARTUP_RE.match(line)
        if not match:
            self.stop()
            raise RuntimeError(f"unexpected startup line: {line!r}")
        self.host, self.port = match.group(1), int(match.group(2))
        self.metrics_host, self.metrics_port = match.group(3), int(match.group(4))
        self.backends = match.group(5).split(",")
        self.target = f"{self.host}:{self.port}"
        self.metrics_url = f"http://{self.metrics_host}:{self.metrics_port}/metrics"

    def _read_startup_line(self, timeout):
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        data = b""
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in data:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"server printed no startup line in {timeout} s")
                if not sel.select(timeout=left):
                    continue
                chunk = os.read(fd, 4096)
                if not chunk:
                    err = self.stderr_text()
                    raise RuntimeError(f"server exited (rc={self.proc.wait(timeout=10)}) "
                                       f"before its startup line; stderr:\n{err}")
                data += chunk
        return data.split(b"\n", 1)[0].decode()

    def stderr_text(self):
        """What the server wrote to stderr so far."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def terminate(self, timeout=20.0):
        """Sends SIGTERM and returns the exit status (killing it after `timeout` seconds)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.terminate()
            except subprocess.TimeoutExpired:
                pass
        self.proc.stdout.close()
        self.log.close()
        if self.proc in _live:
            _live.remove(self.proc)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


def run_cli(*args, timeout=120.0):
    """Runs the attnbench CLI; returns the CompletedProcess (text mode)."""
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


# What a server answers for PHASE_BACKWARD on a backend that does not list it.
NO_BACKWARD_ON_CPU = ("backend cpu_reference does not support spec.phase=PHASE_BACKWARD "
                      "(supports: PHASE_PREFILL, PHASE_DECODE)")
NO_BACKWARD_SKIP = ("cpu_reference does not list PHASE_BACKWARD in GetCapabilities: the backward "
                    "path runs once a backend with a backward pass is built in")
BACKWARD_SERVED_SKIP = "cpu_reference lists PHASE_BACKWARD: it no longer refuses backward"


def serves_backward(server, backend="cpu_reference"):
    """Whether `backend` of the running server lists PHASE_BACKWARD in GetCapabilities."""
    out = run_cli("caps", f"--server={server.target}", "--format=json")
    if out.returncode != 0:
        raise RuntimeError(f"attnbench caps failed: {out.stderr}")
    for entry in json.loads(out.stdout)["backends"]:
        if entry["name"] == backend:
            return "PHASE_BACKWARD" in entry.get("phases", [])
    return False


def free_port():
    """A loopback port nothing listens on (bound then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(server):
    """The server's /metrics text."""
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        return response.read().decode()


def sample(text, name, **labels):
    """Sum of the samples `name` in a /metrics text whose labels include `labels` (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(r"^(\w+)(\{(.*)\})? (\S+)", line)
        if not match or match.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(3) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(match.group(4))
    return total


class ServerTestCase(unittest.TestCase):
    """A TestCase sharing one server, started with `server_flags`, across its tests: cls.server."""

    server_flags = ("--cpu_threads=2",)

    @classmethod
    def setUpClass(cls):
        cls.server = Server(*cls.server_flags)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
