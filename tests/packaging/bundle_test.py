"""scripts/bundle, the runtime image's payload: bundles the built attnbench-server and CLI
(ATTNBENCH_BIN_DIR) into a temporary folder, checks that every library they load resolves inside
the bundle or is a base-system one (glibc, the C++ runtime, CUDA's), then starts the bundled
server with an EMPTY environment from another directory and talks to it with the bundled CLI:
health, one run, and a SIGTERM that must end in exit status 0.
"""

import json
import os
import pathlib
import re
import selectors
import signal
import subprocess
import tempfile
import time
import unittest

import dockerfile

BIN_DIR = pathlib.Path(os.environ.get("ATTNBENCH_BIN_DIR", dockerfile.ROOT / "build/release/bin"))
STARTUP_RE = re.compile(r"^attnbench-server listening on (\S+):(\d+) metrics on (\S+):(\d+) ")
# What the runtime base image provides (kept in step with is_system_lib in scripts/bundle).
SYSTEM_LIB_RE = re.compile(
    r"^(linux-vdso|linux-gate|ld-linux.*|libc|libm|libpthread|libdl|librt|libresolv|libutil|"
    r"libanl|libmvec|libstdc\+\+|libgcc_s|libcuda|libcudart|libcublas|libcublasLt|"
    r"libnvidia-.*)\.so")


def ldd(path):
    """[(library name, resolved path or None)] as the loader resolves them, in an empty env."""
    out = subprocess.run(["ldd", str(path)], capture_output=True, text=True, env={},
                         timeout=60)
    if out.returncode != 0:
        raise AssertionError(f"ldd {path}: {out.stdout}{out.stderr}")
    libs = []
    for line in out.stdout.splitlines():
        line = line.strip()
        if "=> not found" in line:
            libs.append((line.split()[0], None))
        elif "=>" in line:
            name, _, rest = line.partition(" => ")
            libs.append((name, rest.split(" (")[0] or None))
        elif line.startswith("/"):
            path_ = line.split(" (")[0]
            libs.append((os.path.basename(path_), path_))
    return libs


def is_elf(path):
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


class BundleTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="attnbench-bundle-test-")
        cls.bundle = pathlib.Path(cls.tmp.name) / "bundle"
        out = subprocess.run(
            ["bash", str(dockerfile.ROOT / "scripts" / "bundle"), str(BIN_DIR), str(cls.bundle)],
            capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        if out.returncode != 0:
            raise AssertionError(f"scripts/bundle failed:\n{out.stdout}{out.stderr}")
        cls.bundle_log = out.stdout

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_layout(self):
        self.assertEqual(sorted(p.name for p in (self.bundle / "bin").iterdir()),
                         ["attnbench", "attnbench-server"])
        libs = list((self.bundle / "lib").iterdir())
        self.assertTrue(libs)
        self.assertTrue(all(is_elf(p) for p in libs))
        self.assertFalse(any(SYSTEM_LIB_RE.match(p.name) for p in libs), libs)
        self.assertIn("2 programs", self.bundle_log)

    def test_every_library_resolves_inside_the_bundle(self):
        root = self.bundle.resolve()
        files = list((self.bundle / "bin").iterdir()) + list((self.bundle / "lib").iterdir())
        for path in files:
            for name, resolved in ldd(path):
                with self.subTest(file=path.name, library=name):
                    if SYSTEM_LIB_RE.match(name):
                        continue
                    self.assertIsNotNone(resolved, "not found")
                    self.assertTrue(pathlib.Path(resolved).resolve().is_relative_to(root),
                                    f"loaded from {resolved}")

    def test_bundled_server_runs_with_an_empty_environment(self):
        server_bin = self.bundle / "bin" / "attnbench-server"
        cli = self.bundle / "bin" / "attnbench"
        log = tempfile.TemporaryFile()
        proc = subprocess.Popen(
            [str(server_bin), "--listen_address=127.0.0.1:0", "--metrics_address=127.0.0.1:0",
             "--cpu_threads=1", "--log_level=warning"],
            stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, env={},
            cwd=self.tmp.name, start_new_session=True)
        try:
            line = self.read_line(proc, timeout=120)
            match = STARTUP_RE.match(line)
            self.assertIsNotNone(match, line)
            target = f"127.0.0.1:{match.group(2)}"

            def run_cli(*args):
                return subprocess.run([str(cli), *args], capture_output=True, text=True, env={},
                                      cwd=self.tmp.name, timeout=120, stdin=subprocess.DEVNULL)

            health = run_cli("health", f"--server={target}")
            self.assertEqual((health.returncode, health.stdout), (0, "SERVING\n"), health.stderr)
            run = run_cli("run", f"--server={target}", "--backend=cpu_reference", "--batch=1",
                          "--layout=mha", "--heads=2", "--seq_len=32", "--head_dim=16",
                          "--dtype=fp32", "--warmup=1", "--min_iters=2", "--max_iters=3",
                          "--format=json")
            self.assertEqual(run.returncode, 0, run.stderr)
            result = json.loads(run.stdout)["result"]
            self.assertEqual(result["backend"], "cpu_reference")
            self.assertGreater(result["timing"]["medianMs"], 0)

            proc.send_signal(signal.SIGTERM)
            self.assertEqual(proc.wait(timeout=30), 0)
        except BaseException:
            log.seek(0)
            print(f"server stderr:\n{log.read().decode(errors='replace')}")
            raise
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            proc.stdout.close()
            log.close()

    @staticmethod
    def read_line(proc, timeout):
        deadline = time.monotonic() + timeout
        data = b""
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout.fileno(), selectors.EVENT_READ)
            while b"\n" not in data:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no startup line")
                if not sel.select(timeout=left):
                    continue
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    raise RuntimeError(f"server exited with {proc.wait(timeout=10)}")
                data += chunk
        return data.split(b"\n", 1)[0].decode()


if __name__ == "__main__":
    unittest.main()
