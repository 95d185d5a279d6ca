"""End to end: TLS, mutual TLS and bearer-token auth on the real attnbench-server.

Certificates are made with the openssl CLI into a temporary directory for this run (a CA, a server
certificate for IP:127.0.0.1 and DNS:localhost, a client certificate, and a second, untrusted CA
with its own client certificate); nothing secret is kept. Checks accepted and rejected cases for
each mode, that health and reflection stay reachable without a token, that bad security flags stop
the server at startup naming the flag, that the server's stderr never holds a token or the key,
and that the CLI reaches the secured servers with its --tls_* and --token flags.
"""

import os
import subprocess
import tempfile
import unittest

import grpc

import harness
from attnbench.v1 import attnbench_pb2 as pb
from attnbench.v1 import attnbench_pb2_grpc as pb_grpc
from health.v1 import health_pb2
from health.v1 import health_pb2_grpc
from reflection.v1alpha import reflection_pb2
from reflection.v1alpha import reflection_pb2_grpc

TIMEOUT = 20

GOOD_TOKEN = "tok-alice-5f0c2e9a7b1d44e8"
OTHER_TOKEN = "tok-bob-93ab1c7d2e4f5a6b"
DISABLED_TOKEN = "tok-mallory-0d1e2f3a4b5c6d7e"
WRONG_TOKEN = "tok-wrong-8c7b6a5f4e3d2c1b"
ALL_TOKENS = (GOOD_TOKEN, OTHER_TOKEN, DISABLED_TOKEN, WRONG_TOKEN)

TMP = None
FILES = {}


def openssl(*args):
    out = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL, cwd=TMP.name)
    if out.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {out.stderr}")


def path(name):
    return os.path.join(TMP.name, name)


def read(name):
    with open(path(name), "rb") as f:
        return f.read()


def make_ca(name):
    openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
            "-subj", f"/CN=attnbench test {name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")


def make_leaf(name, ca, extensions):
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=attnbench {name}")
    with open(path(f"{name}.ext"), "w") as f:
        f.write(extensions)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")


def setUpModule():
    global TMP
    TMP = tempfile.TemporaryDirectory(prefix="attnbench-security-")
    make_ca("ca")
    make_ca("rogue_ca")
    make_leaf("server", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
              "extendedKeyUsage=serverAuth\n")
    make_leaf("client", "ca", "extendedKeyUsage=clientAuth\n")
    make_leaf("rogue_client", "rogue_ca", "extendedKeyUsage=clientAuth\n")
    with open(path("tokens.txt"), "w") as f:
        f.write("# token tenant [weight]\n"
                f"{GOOD_TOKEN} alice 2\n"
                f"{OTHER_TOKEN} bob   # weight 1\n"
                f"{DISABLED_TOKEN} mallory 0\n")
    with open(path("client_token.txt"), "w") as f:
        f.write(OTHER_TOKEN + "\n")


def tearDownModule():
    if TMP is not None:
        TMP.cleanup()


def tls_flags(mutual=False):
    flags = [f"--tls_cert_file={path('server.pem')}", f"--tls_key_file={path('server.key')}"]
    if mutual:
        flags.append(f"--tls_client_ca_file={path('ca.pem')}")
    return flags


def secure_channel(target, root="ca", client=None):
    credentials = grpc.ssl_channel_credentials(
        root_certificates=read(f"{root}.pem"),
        private_key=read(f"{client}.key") if client else None,
        certificate_chain=read(f"{client}.pem") if client else None)
    return grpc.secure_channel(target, credentials)


def capabilities(channel, token=None):
    metadata = [("authorization", f"Bearer {token}")] if token else None
    stub = pb_grpc.AttnBenchStub(channel)
    return stub.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=TIMEOUT, metadata=metadata)


def small_run_request():
    req = pb.RunRequest(backend="cpu_reference")
    req.spec.batch_size, req.spec.seq_len_q, req.spec.seq_len_kv = 1, 16, 16
    req.spec.head_dim_qk = 16
    req.spec.dtype = pb.DTYPE_FLOAT32
    req.spec.layout.mha.num_heads = 2
    req.measurement.min_iterations = req.measurement.max_iterations = 2
    return req


def health_status(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service="attnbench.v1.AttnBench"),
                      timeout=TIMEOUT).status


class SecretsCheck:
    """Mixin: the server's stderr holds no token and no line of the private key."""

    def assert_no_secrets(self, server):
        log = server.stderr_text()
        for token in ALL_TOKENS:
            self.assertNotIn(token, log)
        key_lines = [line for line in read("server.key").decode().splitlines()
                     if line and not line.startswith("-----")]
        self.assertTrue(key_lines)
        for line in key_lines:
            self.assertNotIn(line, log)


class TlsTest(unittest.TestCase, SecretsCheck):

    @classmethod
    def setUpClass(cls):
        cls.server = harness.Server("--cpu_threads=1", *tls_flags())

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_tls_client_succeeds(self):
        with secure_channel(self.server.target) as channel:
            reply = capabilities(channel)
            self.assertIn("cpu_reference", [b.name for b in reply.backends])
            self.assertEqual(health_status(channel), health_pb2.HealthCheckResponse.SERVING)
        # DNS:localhost in the certificate, checked through a name override.
        with grpc.secure_channel(
                self.server.target, grpc.ssl_channel_credentials(read("ca.pem")),
                options=[("grpc.ssl_target_name_override", "localhost")]) as channel:
            capabilities(channel)
        self.assert_no_secrets(self.server)

    def test_plaintext_client_fails(self):
        with grpc.insecure_channel(self.server.target) as channel:
            with self.assertRaises(grpc.RpcError) as raised:
                capabilities(channel)
        self.assertEqual(raised.exception.code(), grpc.StatusCode.UNAVAILABLE)

    def test_client_rejects_a_server_its_ca_did_not_sign(self):
        with secure_channel(self.server.target, root="rogue_ca") as channel:
            with self.assertRaises(grpc.RpcError) as raised:
                capabilities(channel)
        self.assertEqual(raised.exception.code(), grpc.StatusCode.UNAVAILABLE)

    def test_cli_over_tls(self):
        out = harness.run_cli("caps", f"--server={self.server.target}",
                              f"--tls_ca_file={path('ca.pem')}")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("backend cpu_reference:", out.stdout)
        out = harness.run_cli("caps", f"--server={self.server.target}", "--deadline_seconds=10")
        self.assertEqual(out.returncode, 1, out.stdout)
        self.assertIn("UNAVAILABLE", out.stderr)


class MutualTlsTest(unittest.TestCase, SecretsCheck):

    @classmethod
    def setUpClass(cls):
        cls.server = harness.Server("--cpu_threads=1", *tls_flags(mutual=True))

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_client_with_a_ca_signed_certificate_succeeds(self):
        with secure_channel(self.server.target, client="client") as channel:
            self.assertIn("cpu_reference", [b.name for b in capabilities(channel).backends])
        self.assert_no_secrets(self.server)

    def test_client_without_a_certificate_is_rejected(self):
        with secure_channel(self.server.target) as channel:
            with self.assertRaises(grpc.RpcError) as raised:
                capabilities(channel)
        self.assertEqual(raised.exception.code(), grpc.StatusCode.UNAVAILABLE)

    def test_client_with_an_untrusted_certificate_is_rejected(self):
        with secure_channel(self.server.target, client="rogue_client") as channel:
            with self.assertRaises(grpc.RpcError) as raised:
                capabilities(channel)
        self.assertEqual(raised.exception.code(), grpc.StatusCode.UNAVAILABLE)

    def test_cli_with_a_client_certificate(self):
        base = ["caps", f"--server={self.server.target}", f"--tls_ca_file={path('ca.pem')}"]
        out = harness.run_cli(*base, f"--tls_cert_file={path('client.pem')}",
                              f"--tls_key_file={path('client.key')}")
        self.assertEqual(out.returncode, 0, out.stderr)
        out = harness.run_cli(*base, "--deadline_seconds=10")
        self.assertEqual(out.returncode, 1, out.stdout)
        out = harness.run_cli(*base, f"--tls_cert_file={path('client.pem')}")
        self.assertEqual(out.returncode, 2, out.stdout)
        self.assertIn("--tls_key_file", out.stderr)


class TokenTest(unittest.TestCase, SecretsCheck):
    """Token auth over TLS, logging everything (--log_level=debug) to check for leaks."""

    @classmethod
    def setUpClass(cls):
        cls.server = harness.Server("--cpu_threads=1", *tls_flags(),
                                    f"--tokens_file={path('tokens.txt')}", "--log_level=debug")
        cls.channel = secure_channel(cls.server.target)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.server.stop()

    def assert_code(self, code, metadata):
        stub = pb_grpc.AttnBenchStub(self.channel)
        with self.assertRaises(grpc.RpcError) as raised:
            stub.Run(small_run_request(), timeout=TIMEOUT, metadata=metadata)
        self.assertEqual(raised.exception.code(), code, raised.exception.details())
        for token in ALL_TOKENS:
            self.assertNotIn(token, raised.exception.details())

    def test_rejections(self):
        unauthenticated = grpc.StatusCode.UNAUTHENTICATED
        self.assert_code(unauthenticated, None)
        self.assert_code(unauthenticated, [("authorization", f"Bearer {WRONG_TOKEN}")])
        self.assert_code(unauthenticated, [("authorization", GOOD_TOKEN)])
        self.assert_code(unauthenticated, [("authorization", f"Basic {GOOD_TOKEN}")])
        self.assert_code(grpc.StatusCode.PERMISSION_DENIED,
                         [("authorization", f"Bearer {DISABLED_TOKEN}")])

    def test_good_token_succeeds(self):
        stub = pb_grpc.AttnBenchStub(self.channel)
        reply = stub.Run(small_run_request(), timeout=TIMEOUT,
                         metadata=[("authorization", f"Bearer {GOOD_TOKEN}")])
        self.assertEqual(reply.result.timing.count, 2)
        capabilities(self.channel, token=OTHER_TOKEN)

    def test_health_and_reflection_need_no_token(self):
        self.assertEqual(health_status(self.channel), health_pb2.HealthCheckResponse.SERVING)
        stub = reflection_pb2_grpc.ServerReflectionStub(self.channel)
        replies = list(stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=TIMEOUT))
        services = {s.name for s in replies[0].list_services_response.service}
        self.assertIn("attnbench.v1.AttnBench", services)

    def test_cli_with_token(self):
        base = ["caps", f"--server={self.server.target}", f"--tls_ca_file={path('ca.pem')}"]
        out = harness.run_cli(*base, f"--token={GOOD_TOKEN}")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("backend cpu_reference:", out.stdout)
        out = harness.run_cli("run", *base[1:], f"--token_file={path('client_token.txt')}",
                              "--backend=cpu_reference", "--batch=1", "--seq_len=16",
                              "--head_dim=16", "--heads=2", "--dtype=fp32", *harness.FAST_FLAGS)
        self.assertEqual(out.returncode, 0, out.stderr)
        out = harness.run_cli(*base)
        self.assertEqual(out.returncode, 1, out.stdout)
        self.assertIn("UNAUTHENTICATED", out.stderr)
        out = harness.run_cli(*base, f"--token={WRONG_TOKEN}")
        self.assertEqual(out.returncode, 1, out.stdout)
        self.assertIn("UNAUTHENTICATED", out.stderr)
        self.assertNotIn(WRONG_TOKEN, out.stderr)

    def test_log_has_no_secrets(self):
        # Every kind of call first (rejected and accepted), so the log has something to check.
        self.test_rejections()
        self.test_good_token_succeeds()
        log = self.server.stderr_text()
        self.assertIn("UNAUTHENTICATED", log)
        self.assertIn("tenant=alice", log)
        self.assert_no_secrets(self.server)


class StartupErrorTest(unittest.TestCase):
    """Bad security flags stop the server before it listens, naming the flag."""

    def start(self, *flags):
        return subprocess.run(
            [harness.SERVER, "--listen_address=127.0.0.1:0", "--metrics_address=", *flags],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)

    def assert_refused(self, flags, flag, *texts):
        out = self.start(*flags)
        self.assertNotEqual(out.returncode, 0, out.stdout)
        self.assertNotIn("listening", out.stdout)
        self.assertIn(f"--{flag}: ", out.stderr)
        for text in texts:
            self.assertIn(text, out.stderr)
        for token in ALL_TOKENS:
            self.assertNotIn(token, out.stderr)
        return out

    def test_bad_flags(self):
        cert, key = f"--tls_cert_file={path('server.pem')}", f"--tls_key_file={path('server.key')}"
        self.assert_refused([cert], "tls_key_file")
        self.assert_refused([key], "tls_cert_file")
        self.assert_refused([f"--tls_client_ca_file={path('ca.pem')}"], "tls_client_ca_file")
        self.assert_refused([cert, f"--tls_key_file={path('client.key')}"], "tls_key_file",
                            "does not match")
        self.assert_refused([cert, f"--tls_key_file={path('missing.key')}"], "tls_key_file",
                            "cannot read")
        self.assert_refused([cert, f"--tls_key_file={path('server.pem')}"], "tls_key_file")
        self.assert_refused([cert, key, f"--tls_client_ca_file={path('tokens.txt')}"],
                            "tls_client_ca_file")
        self.assert_refused([f"--tokens_file={path('missing.txt')}"], "tokens_file",
                            "cannot read")
        duplicate = path("duplicate_tokens.txt")
        with open(duplicate, "w") as f:
            f.write(f"{GOOD_TOKEN} alice\n\n{GOOD_TOKEN} bob\n")
        self.assert_refused([f"--tokens_file={duplicate}"], "tokens_file", "line 3",
                            "duplicate token")


if __name__ == "__main__":
    unittest.main()
