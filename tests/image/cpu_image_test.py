"""Runs the CPU image that scripts/image built (ctest label `image`; build_image.py builds it
first) the way a container runtime would, and checks what deploy/ relies on:
  - the image's own configuration: a numeric non-root USER that exists in its /etc/passwd, the
    gRPC and metrics ports of its CMD exposed, STOPSIGNAL SIGTERM, a HEALTHCHECK;
  - its ENTRYPOINT and CMD, started as that user in fresh namespaces on its read-only root file
    system (sandbox.py), print the startup line on the CMD's ports;
  - the process is not root: every uid and gid in /proc/PID/status is the image's, no
    supplementary group 0 and no effective capabilities;
  - the image's HEALTHCHECK command (the image's own CLI, run inside the container like
    `docker exec`) answers SERVING;
  - one Run through the image's CLI succeeds on cpu_reference;
  - /metrics answers over HTTP on the CMD's metrics port and counts that run;
  - the STOPSIGNAL sent while a longer run is in flight drains: that run still completes, and
    the server exits 0.
Skips (exit 77) only where image_env.why_not() says no image can run on this machine.
"""

import json
import os
import pathlib
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import image_env

HERE = pathlib.Path(__file__).resolve().parent
TIMEOUT = 120
STARTUP_RE = re.compile(r"^attnbench-server listening on (\S+):(\d+) metrics on (\S+):(\d+) ")
SMALL_RUN = ["--backend=cpu_reference", "--batch=1", "--layout=mha", "--heads=2", "--seq_len=32",
             "--head_dim=16", "--dtype=fp32", "--warmup=1", "--min_iters=2", "--max_iters=3"]
# Seconds of work on the image's default threads: long enough to be in flight at SIGTERM, well
# inside the default --shutdown_grace_seconds (10).
LONG_ITERS = 60
LONG_RUN = ["--backend=cpu_reference", "--batch=1", "--layout=mha", "--heads=4", "--seq_len=512",
            "--head_dim=64", "--dtype=fp32", "--warmup=0", f"--min_iters={LONG_ITERS}",
            f"--max_iters={LONG_ITERS}", "--max_seconds=60"]


def port_flag(cmd, name):
    value = next(a.split("=", 1)[1] for a in cmd if a.startswith(f"--{name}="))
    return int(value.rsplit(":", 1)[1])


def sample(text, name, **labels):
    """The value of one series of a Prometheus exposition, or None."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    return None


class CpuImageTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        info = json.loads(image_env.buildah("inspect", "--type", "image", image_env.IMAGE))
        # scripts/image builds with --format docker, which keeps HEALTHCHECK.
        cls.config = info["Docker"]["config"]
        cls.container = image_env.buildah("from", "--pull=never", image_env.IMAGE).strip()
        cls.rootfs = image_env.buildah("mount", cls.container).strip()
        cls.server = None

    @classmethod
    def tearDownClass(cls):
        cls.stop_server()
        image_env.buildah("umount", cls.container)
        image_env.buildah("rm", cls.container)

    @classmethod
    def stop_server(cls):
        if cls.server is None:
            return
        if cls.server.poll() is None:
            cls.server.kill()
            cls.server.wait(timeout=30)
        cls.server.stdout.close()
        cls.server_log.close()
        cls.server = None

    # --- the image's configuration -----------------------------------------------------------

    def user(self):
        uid, _, gid = self.config["User"].partition(":")
        self.assertTrue(uid.isdigit() and gid.isdigit(), f"USER {self.config['User']!r}")
        return int(uid), int(gid)

    def env(self):
        return dict(e.split("=", 1) for e in self.config.get("Env") or [])

    def command(self):
        return list(self.config.get("Entrypoint") or []) + list(self.config.get("Cmd") or [])

    def test_config(self):
        uid, gid = self.user()
        self.assertNotEqual(uid, 0)
        self.assertNotEqual(gid, 0)
        passwd = pathlib.Path(self.rootfs, "etc/passwd").read_text()
        self.assertRegex(passwd, rf"(?m)^[\w-]+:x:{uid}:{gid}:")
        self.assertEqual(self.config["Entrypoint"], ["attnbench-server"])
        cmd = self.command()
        ports = {port_flag(cmd, "listen_address"), port_flag(cmd, "metrics_address")}
        self.assertEqual({int(p.split("/")[0]) for p in self.config["ExposedPorts"]}, ports)
        self.assertEqual(self.config.get("StopSignal"), "SIGTERM")
        self.assertEqual(self.config["Healthcheck"]["Test"][0], "CMD")
        self.assertTrue(pathlib.Path(self.rootfs, "opt/attnbench/bin/attnbench-server").is_file())

    # --- the running image -------------------------------------------------------------------

    def start(self):
        """Starts ENTRYPOINT + CMD as the image's user; returns (server pid, startup line)."""
        uid, gid = self.user()
        log = tempfile.TemporaryFile()
        type(self).server_log = log
        type(self).server = subprocess.Popen(
            ["unshare", "--mount", "--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child",
             sys.executable, str(HERE / "sandbox.py"), self.rootfs, str(uid), str(gid),
             self.config.get("WorkingDir") or "/", "--", json.dumps(self.env()), "--",
             *self.command()],
            stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
        line = self.read_line(self.server.stdout.fileno(), timeout=TIMEOUT)
        # unshare's child, the sandbox exec'd into the server.
        children = pathlib.Path(f"/proc/{self.server.pid}/task/{self.server.pid}/children")
        pids = children.read_text().split()
        self.assertEqual(len(pids), 1, pids)
        return int(pids[0]), line

    def read_line(self, fd, timeout):
        """The server's first stdout line, without hanging on a server that never prints it."""
        deadline = time.monotonic() + timeout
        data = b""
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in data:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.fail(f"no startup line; server stderr:\n{self.server_stderr()}")
                if not sel.select(timeout=left):
                    continue
                chunk = os.read(fd, 4096)
                if not chunk:
                    self.fail(f"the server exited ({self.server.wait(timeout=10)}) before its "
                              f"startup line; stderr:\n{self.server_stderr()}")
                data += chunk
        return data.split(b"\n", 1)[0].decode()

    def server_stderr(self):
        self.server_log.seek(0)
        return self.server_log.read().decode(errors="replace")

    def exec_in(self, pid, *args, timeout=TIMEOUT, background=False):
        """Like `docker exec`: the image's command in the server's namespaces and root, as the
        image's user, with the image's environment."""
        uid, gid = self.user()
        nsenter = shutil.which("nsenter")
        argv = [nsenter, f"--target={pid}", "--mount", "--net", "--pid", "--ipc", "--uts",
                "--root", "--wd", f"--setuid={uid}", f"--setgid={gid}", *args]
        if background:
            return subprocess.Popen(argv, env=self.env(), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        return subprocess.run(argv, env=self.env(), capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def metrics(self, pid, port):
        """GET /metrics from inside the server's network namespace (host Python, no chroot)."""
        fetch = ("import sys, urllib.request\n"
                 f"r = urllib.request.urlopen('http://127.0.0.1:{port}/metrics', timeout=10)\n"
                 "sys.stdout.write(f'{r.status}\\n' + r.read().decode())\n")
        out = subprocess.run(["nsenter", f"--target={pid}", "--net", sys.executable, "-c", fetch],
                             capture_output=True, text=True, timeout=TIMEOUT)
        self.assertEqual(out.returncode, 0, out.stderr)
        status, _, body = out.stdout.partition("\n")
        self.assertEqual(status, "200")
        return body

    def test_entrypoint_serves_as_the_image_user_and_drains(self):
        uid, gid = self.user()
        cmd = self.command()
        grpc_port = port_flag(cmd, "listen_address")
        metrics_port = port_flag(cmd, "metrics_address")
        pid, line = self.start()
        try:
            match = STARTUP_RE.match(line)
            self.assertIsNotNone(match, line)
            self.assertEqual((int(match.group(2)), int(match.group(4))), (grpc_port, metrics_port))

            # Not root: real, effective, saved and filesystem ids; groups; capabilities.
            status = dict(l.split(":", 1) for l in
                          pathlib.Path(f"/proc/{pid}/status").read_text().splitlines())
            self.assertEqual(pathlib.Path(f"/proc/{pid}/comm").read_text().strip(),
                             "attnbench-serve")
            self.assertEqual(status["Uid"].split(), [str(uid)] * 4)
            self.assertEqual(status["Gid"].split(), [str(gid)] * 4)
            self.assertNotIn("0", status["Groups"].split())
            self.assertEqual(int(status["CapEff"], 16), 0)

            # The image's own HEALTHCHECK command.
            health = self.exec_in(pid, *self.config["Healthcheck"]["Test"][1:])
            self.assertEqual((health.returncode, health.stdout), (0, "SERVING\n"), health.stderr)

            run = self.exec_in(pid, "attnbench", "run", f"--server=127.0.0.1:{grpc_port}",
                               *SMALL_RUN, "--format=json")
            self.assertEqual(run.returncode, 0, run.stderr)
            result = json.loads(run.stdout)["result"]
            self.assertEqual(result["backend"], "cpu_reference")
            self.assertGreater(result["timing"]["medianMs"], 0)

            body = self.metrics(pid, metrics_port)
            self.assertEqual(sample(body, "attnbench_runs_total", backend="cpu_reference"), 1)
            self.assertEqual(sample(body, "attnbench_build_info"), 1)
            self.assertIsNotNone(sample(body, "attnbench_queue_depth"), "no queue depth gauge")
            self.assertEqual(sample(body, "attnbench_draining"), 0)

            # Drain: the stop signal arrives while a run holds the device.
            long_run = self.exec_in(pid, "attnbench", "run", f"--server=127.0.0.1:{grpc_port}",
                                    *LONG_RUN, "--format=json", background=True)
            deadline = time.monotonic() + 60
            while (sample(self.metrics(pid, metrics_port), "attnbench_in_flight") or 0) < 1:
                self.assertIsNone(long_run.poll(), "the long run ended before it was seen")
                self.assertLess(time.monotonic(), deadline, "the long run never started")
                time.sleep(0.1)
            os.kill(pid, getattr(signal, self.config["StopSignal"]))
            out, err = long_run.communicate(timeout=TIMEOUT)
            self.assertEqual(long_run.returncode, 0, err)
            self.assertEqual(json.loads(out)["result"]["timing"]["count"], LONG_ITERS)
            # unshare --fork exits with its child's status.
            self.assertEqual(self.server.wait(timeout=60), 0, self.server_stderr())
        except BaseException:
            print(f"server stderr:\n{self.server_stderr()}")
            raise
        finally:
            self.stop_server()


if __name__ == "__main__":
    reason = image_env.why_not()
    if reason:
        print(f"SKIPPED: {reason}")
        sys.exit(image_env.SKIP)
    unittest.main()
