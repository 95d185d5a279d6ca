"""End to end: the Node.js example client (client/node) against a real server.

The example's package files are copied into a directory under the build tree, where `npm ci`
installs @grpc/grpc-js and @grpc/proto-loader from the lock file; node_modules is kept there
and reinstalled only when package.json or package-lock.json change, so reruns download nothing.
The example then runs GetCapabilities, a Run and a Sweep against the server, and its output
is checked line by line.
"""

import base64
import hashlib
import json
import os
import struct
import re
import shutil
import subprocess
import tempfile
import unittest

import harness

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOURCE = os.path.join(ROOT, "client", "node")
PACKAGE_FILES = ("package.json", "package-lock.json", ".npmrc")
WORK_DIR = os.environ.get("ATTNBENCH_NODE_CLIENT_DIR") or os.path.join(
    os.path.dirname(os.path.abspath(harness.BIN_DIR or ".")), "node_client")
NPM_TIMEOUT = 200  # Inside ctest's 300 s for the whole file.
RUN_TIMEOUT = 120
SERVER = None

LINE_RE = re.compile(r"^(capabilities|run|sweep) (.*)$")


def install_dependencies():
    """npm ci into WORK_DIR unless its node_modules came from the same package files."""
    os.makedirs(WORK_DIR, exist_ok=True)
    digest = hashlib.sha256()
    for name in PACKAGE_FILES:
        with open(os.path.join(SOURCE, name), "rb") as f:
            digest.update(name.encode() + b"\0" + f.read())
    stamp = os.path.join(WORK_DIR, "node_modules", ".attnbench-stamp")
    if os.path.exists(stamp):
        with open(stamp) as f:
            if f.read() == digest.hexdigest():
                return
    for name in PACKAGE_FILES:
        shutil.copyfile(os.path.join(SOURCE, name), os.path.join(WORK_DIR, name))
    out = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                         cwd=WORK_DIR, capture_output=True, text=True, timeout=NPM_TIMEOUT,
                         stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise RuntimeError(f"npm ci in {WORK_DIR} failed:\n{out.stdout}\n{out.stderr}")
    with open(stamp, "w") as f:
        f.write(digest.hexdigest())


def setUpModule():
    global SERVER
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed (scripts/setup installs nodejs and npm)")
    install_dependencies()
    shutil.copyfile(os.path.join(SOURCE, "example.js"), os.path.join(WORK_DIR, "example.js"))
    SERVER = harness.Server("--cpu_threads=2")


def tearDownModule():
    if SERVER is not None:
        SERVER.stop()


def run_example(*args):
    return subprocess.run(["node", os.path.join(WORK_DIR, "example.js"),
                           f"--proto_dir={os.path.join(ROOT, 'proto')}", *args],
                          capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=WORK_DIR,
                          stdin=subprocess.DEVNULL)


def parse(stdout):
    """Output lines -> [(keyword, {key: value})]; the device name is quoted JSON."""
    steps = []
    for line in stdout.splitlines():
        match = LINE_RE.match(line)
        if not match:
            raise AssertionError(f"unexpected output line {line!r}")
        fields = dict(re.findall(r'(\w+)=("[^"]*"|\S+)', match.group(2)))
        steps.append((match.group(1), fields))
    return steps


class PackageTest(unittest.TestCase):

    def test_lock_file_pins_versions_without_download_addresses(self):
        with open(os.path.join(SOURCE, "package-lock.json")) as f:
            lock = f.read()
        self.assertNotIn('"resolved"', lock)
        self.assertIn('"node_modules/@grpc/grpc-js"', lock)
        self.assertIn('"node_modules/@grpc/proto-loader"', lock)
        self.assertIn('"integrity"', lock)


class ExampleTest(unittest.TestCase):

    def check_output(self, out):
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        steps = parse(out.stdout)
        kinds = [kind for kind, _ in steps]
        self.assertEqual(kinds, ["capabilities", "run"] + ["sweep"] * 5)
        self.assertIn("cpu_reference", steps[0][1]["backends"].split(","))
        run = steps[1][1]
        self.assertEqual((run["backend"], run["layout"], run["mask"], run["seq_len"]),
                         ("cpu_reference", "mha:4", "causal", "64"))
        self.assertGreater(float(run["median_ms"]), 0)
        self.assertEqual((run["checked"], run["passed"]), ("true", "true"))
        self.assertEqual(run["non_finite"], "0")
        self.assertEqual((run["phase"], run["tensor_checks"]), ("prefill", "output:true"))
        self.assertNotIn("returned", run)
        self.assertTrue(run["device"].strip('"'))
        points = [fields for _, fields in steps[2:6]]
        self.assertEqual([p["point"] for p in points], ["0/4", "1/4", "2/4", "3/4"])
        self.assertEqual([(p["seq_len"], p["layout"]) for p in points],
                         [("32", "mha:4"), ("32", "gqa:4/2"), ("64", "mha:4"), ("64", "gqa:4/2")])
        self.assertTrue(all(float(p["median_ms"]) > 0 for p in points))
        self.assertEqual(steps[6][1], {"points": "4"})

    def test_capabilities_run_and_sweep(self):
        self.check_output(run_example(f"--target={SERVER.target}"))

    def test_dns_and_ipv4_targets(self):
        for target in (f"dns:///localhost:{SERVER.port}", f"ipv4:127.0.0.1:{SERVER.port}"):
            with self.subTest(target=target):
                self.check_output(run_example(f"--target={target}"))

    def test_failed_call_prints_the_status_code(self):
        out = run_example(f"--target={SERVER.target}", "--backend=no_such_backend")
        self.assertEqual(out.returncode, 1, out.stdout + out.stderr)
        self.assertIn("error INVALID_ARGUMENT: ", out.stderr)
        self.assertIn("no_such_backend", out.stderr)

    def test_backward_refused_where_no_backend_lists_it(self):
        if harness.serves_backward(SERVER):
            self.skipTest(harness.BACKWARD_SERVED_SKIP)
        out = run_example(f"--target={SERVER.target}", "--backend=cpu_reference",
                          "--phase=backward", "--backward_timing=training_step")
        self.assertEqual(out.returncode, 1, out.stdout + out.stderr)
        self.assertEqual(out.stderr, f"error FAILED_PRECONDITION: {harness.NO_BACKWARD_ON_CPU}\n")

    def test_backward_run_returns_and_checks_every_gradient(self):
        if not harness.serves_backward(SERVER):
            self.skipTest(harness.NO_BACKWARD_SKIP)
        out = run_example(f"--target={SERVER.target}", "--backend=cpu_reference",
                          "--phase=backward", "--backward_timing=training_step",
                          "--return_output=true")
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        steps = parse(out.stdout)
        self.assertEqual([kind for kind, _ in steps], ["capabilities", "run"] + ["sweep"] * 5)
        run = steps[1][1]
        self.assertEqual((run["phase"], run["backward_timing"]), ("backward", "training_step"))
        self.assertEqual((run["checked"], run["passed"]), ("true", "true"))
        self.assertEqual(sorted(run["tensor_checks"].split(",")),
                         ["dk:true", "dq:true", "dv:true"])
        # MHA 4 heads of dim 32, S 64: every tensor [1, 64, 4, 32].
        self.assertEqual(run["returned"],
                         "output:1x64x4x32,dq:1x64x4x32,dk:1x64x4x32,dv:1x64x4x32")
        self.assertTrue(all(fields["phase"] == "backward" for _, fields in steps[2:6]))

    def write(self, directory, name, text):
        path = os.path.join(directory, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_expression_flags_build_the_request(self):
        with tempfile.TemporaryDirectory() as tmp:
            doc = self.write(tmp, "doc.txt", "# one id per line\n0\n0\n1\n1\n")
            bias = self.write(tmp, "bias.txt", "0.5 -1\n2 3\n")
            out = run_example("--print_request=true", "--score_mod=s + bias[h % 2, 0]",
                              "--mask_mod=doc[q % 4] == doc[kv % 4]", f"--aux=doc={doc},bias={bias}")
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        spec = json.loads(out.stdout)["spec"]
        self.assertEqual(spec["score_mod"], {"expression": "s + bias[h % 2, 0]"})
        self.assertEqual(spec["mask_mod"], {"expression": "doc[q % 4] == doc[kv % 4]"})
        self.assertEqual([(a["name"], a["tensor"]["dtype"], a["tensor"]["shape"],
                           base64.b64decode(a["tensor"]["data"])) for a in spec["aux"]],
                         [("doc", "DTYPE_FLOAT32", [4], struct.pack("<4f", 0, 0, 1, 1)),
                          ("bias", "DTYPE_FLOAT32", [2, 2], struct.pack("<4f", 0.5, -1, 2, 3))])

    def test_bad_aux_flag_fails_before_calling(self):
        with tempfile.TemporaryDirectory() as tmp:
            ragged = self.write(tmp, "ragged.txt", "1 2\n3\n")
            for flag, message in (("--aux=doc", "--aux: 'doc' is not of the form name=FILE"),
                                  (f"--aux=t={ragged}", "aux t: the rows of a 2-D tensor"),
                                  ("--aux=t=/nonexistent/t.txt", "ENOENT")):
                with self.subTest(flag=flag):
                    out = run_example("--target=127.0.0.1:1", "--mask_mod=true", flag)
                    self.assertEqual(out.returncode, 1, out.stdout + out.stderr)
                    self.assertIn("error CLIENT: ", out.stderr)
                    self.assertIn(message, out.stderr)

    def test_expressions_reach_the_server(self):
        # doc has 4 elements; q and kv run to 63: the server's bounds check refuses it, naming
        # the field and column, whichever backend would have run it.
        with tempfile.TemporaryDirectory() as tmp:
            doc = self.write(tmp, "doc.txt", "0 0 1 1\n")
            out = run_example(f"--target={SERVER.target}", "--backend=cpu_reference",
                              "--mask_mod=doc[q] == doc[kv]", f"--aux=doc={doc}")
        self.assertEqual(out.returncode, 1, out.stdout + out.stderr)
        self.assertIn("error INVALID_ARGUMENT: ", out.stderr)
        self.assertIn("spec.mask_mod.expression: column 5: index 0 of 'doc'", out.stderr)

    def test_unreachable_server(self):
        out = run_example(f"--target=127.0.0.1:{harness.free_port()}", "--timeout=5")
        self.assertEqual(out.returncode, 1, out.stdout + out.stderr)
        self.assertRegex(out.stderr, r"error (UNAVAILABLE|DEADLINE_EXCEEDED): ")


if __name__ == "__main__":
    unittest.main()
