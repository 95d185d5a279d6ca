"""Renders every Kustomize overlay under deploy/k8s with `kubectl kustomize`, lints the YAML
with yamllint, and checks what the rendered manifests promise:
  - a Deployment with a headless Service, a PodDisruptionBudget and a PodMonitor selecting its
    pods, a ConfigMap whose server.flags the server reads (--flagfile) and the pod name as
    --server_name;
  - native gRPC probes on the gRPC port (exec `attnbench health` over TLS in overlays that turn
    TLS on, where native probes cannot follow);
  - the GPU overlays request nvidia.com/gpu, the CPU one does not;
  - terminationGracePeriodSeconds longer than the preStop pause plus the server's drain;
  - ports, image and user consistent with the Dockerfile's EXPOSE, targets and USER;
  - the built attnbench-server (ATTNBENCH_BIN_DIR) knows every flag the overlays pass, and starts
    with a plaintext overlay's flag file (listening on loopback instead).
The render step needs kubectl (scripts/setup installs Debian's kubernetes-client where no kubectl
is installed) and is skipped only when there is none; kubectl 1.20's kustomize v2.0.3 and
current v5 both render these files.
"""

import os
import pathlib
import re
import shutil
import signal
import subprocess
import tempfile
import unittest

import yaml

import dockerfile

K8S = dockerfile.ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml"))
YAMLLINT_CONFIG = pathlib.Path(__file__).resolve().parent / "yamllint.yaml"
SERVER = pathlib.Path(os.environ.get("ATTNBENCH_BIN_DIR", dockerfile.ROOT / "build/release/bin"),
                      "attnbench-server")
_, STAGES = dockerfile.parse()
# Dockerfile target -> the image tag the overlays use for it.
TAG_OF_TARGET = {"runtime": "gpu", "runtime-cpu": "cpu"}


def render(overlay):
    kubectl = shutil.which("kubectl")
    out = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True,
                         timeout=120, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise AssertionError(f"kubectl kustomize {overlay} failed:\n{out.stderr}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def one(docs, kind):
    found = [d for d in docs if d["kind"] == kind]
    if len(found) != 1:
        raise AssertionError(f"expected one {kind}, found {len(found)}")
    return found[0]


def flags_of(text):
    """--name=value lines of a flagfile as a dict."""
    flags = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("--"):
            name, _, value = line[2:].partition("=")
            flags[name] = value
    return flags


def port_of(address):
    return int(address.rsplit(":", 1)[1])


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


class LintTest(unittest.TestCase):

    def test_yamllint(self):
        yamllint = shutil.which("yamllint")
        self.assertIsNotNone(yamllint, "yamllint is missing (bash scripts/setup installs it)")
        out = subprocess.run(
            [yamllint, "--strict", "-c", str(YAMLLINT_CONFIG), str(K8S),
             str(dockerfile.ROOT / "deploy" / "compose")],
            capture_output=True, text=True, timeout=120)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)

    def test_sources_parse(self):
        files = list(K8S.rglob("*.yaml"))
        self.assertGreater(len(files), 8)
        for path in files:
            list(yaml.safe_load_all(path.read_text()))


@unittest.skipIf(shutil.which("kubectl") is None, "no kubectl: cannot render the overlays")
class OverlayTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.rendered = {overlay.name: render(overlay) for overlay in OVERLAYS}

    def test_every_overlay_renders(self):
        self.assertEqual(set(self.rendered), {"cpu", "gpu", "secure"})

    def each(self):
        """(overlay, docs, deployment, pod spec, container, flags ConfigMap, flags) each."""
        out = []
        for name, docs in self.rendered.items():
            deployment = one(docs, "Deployment")
            pod = deployment["spec"]["template"]["spec"]
            container = pod["containers"][0]
            config_map = one(docs, "ConfigMap")
            flags = flags_of(config_map["data"]["server.flags"])
            out.append((name, docs, deployment, pod, container, config_map, flags))
        return out

    def test_flags_come_from_the_config_map(self):
        for name, _, _, pod, container, config_map, flags in self.each():
            with self.subTest(overlay=name):
                volumes = {v["name"]: v for v in pod["volumes"]}
                mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
                flag_volume = [n for n, v in volumes.items() if v.get("configMap", {}).get("name")
                               == config_map["metadata"]["name"]]
                self.assertEqual(len(flag_volume), 1)
                self.assertIn(f"--flagfile={mounts[flag_volume[0]]}/server.flags",
                              container["args"])
                self.assertIn("--server_name=$(POD_NAME)", container["args"])
                env = {e["name"]: e for e in container["env"]}
                self.assertEqual(env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"],
                                 "metadata.name")
                self.assertIn("shutdown_grace_seconds", flags)

    def test_ports_match_the_image_and_the_flags(self):
        exposed = dockerfile.exposed_ports(dockerfile.stage(STAGES, "runtime"))
        for name, docs, _, _, container, _, flags in self.each():
            with self.subTest(overlay=name):
                ports = {p["name"]: p["containerPort"] for p in container["ports"]}
                self.assertEqual(set(ports.values()), exposed)
                self.assertEqual(ports["grpc"], port_of(flags["listen_address"]))
                self.assertEqual(ports["metrics"], port_of(flags["metrics_address"]))
                service = one(docs, "Service")
                # Headless: DNS answers with every ready pod's address.
                self.assertEqual(service["spec"]["clusterIP"], "None")
                for port in service["spec"]["ports"]:
                    self.assertIn(port["targetPort"], ports)
                    self.assertEqual(port["port"], ports[port["targetPort"]])

    def test_selectors_find_the_pods(self):
        for name, docs, deployment, _, _, _, _ in self.each():
            with self.subTest(overlay=name):
                labels = deployment["spec"]["template"]["metadata"]["labels"]
                self.assertTrue(matches(deployment["spec"]["selector"]["matchLabels"], labels))
                self.assertTrue(matches(one(docs, "Service")["spec"]["selector"], labels))
                pdb = one(docs, "PodDisruptionBudget")
                self.assertTrue(matches(pdb["spec"]["selector"]["matchLabels"], labels))
                monitor = one(docs, "PodMonitor")
                self.assertEqual(monitor["apiVersion"], "monitoring.coreos.com/v1")
                self.assertTrue(matches(monitor["spec"]["selector"]["matchLabels"], labels))
                self.assertEqual([e["port"] for e in monitor["spec"]["podMetricsEndpoints"]],
                                 ["metrics"])

    def test_probes(self):
        for name, _, _, _, container, _, flags in self.each():
            with self.subTest(overlay=name):
                grpc_port = port_of(flags["listen_address"])
                tls = "tls_cert_file" in flags
                for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                    probe = container[kind]
                    handlers = {"grpc", "exec", "httpGet", "tcpSocket"} & set(probe)
                    if not tls:
                        self.assertEqual(handlers, {"grpc"}, f"{name} {kind}")
                        self.assertEqual(probe["grpc"]["port"], grpc_port)
                    else:
                        # Native gRPC probes speak plaintext only; the CLI checks over TLS.
                        self.assertEqual(handlers, {"exec"}, f"{name} {kind}")
                        command = probe["exec"]["command"]
                        self.assertEqual(command[:2], ["attnbench", "health"])
                        self.assertIn(f"--server=localhost:{grpc_port}", command)
                        self.assertTrue(any(c.startswith("--tls_ca_file=") for c in command))
                readiness = container["readinessProbe"]
                service = (readiness.get("grpc", {}).get("service") or
                           next((c.split("=", 1)[1] for c in readiness.get("exec", {}).get(
                               "command", []) if c.startswith("--service=")), ""))
                self.assertEqual(service, "attnbench.v1.AttnBench", name)

    def test_gpu_requests(self):
        for name, _, _, pod, container, _, _ in self.each():
            with self.subTest(overlay=name):
                limits = container["resources"]["limits"]
                requests = container["resources"]["requests"]
                self.assertIn("memory", limits)
                self.assertIn("cpu", requests)
                image, tag = container["image"].rsplit(":", 1)
                self.assertEqual(image, "attnbench")
                self.assertIn(tag, TAG_OF_TARGET.values())
                for target in TAG_OF_TARGET:
                    dockerfile.stage(STAGES, target)
                if name in ("gpu", "secure"):
                    self.assertGreaterEqual(int(limits["nvidia.com/gpu"]), 1)
                    self.assertEqual(tag, TAG_OF_TARGET["runtime"])
                    self.assertIn("nvidia.com/gpu",
                                  [t["key"] for t in pod.get("tolerations", [])])
                else:
                    self.assertNotIn("nvidia.com/gpu", limits)
                    self.assertNotIn("nvidia.com/gpu", requests)
                    self.assertEqual(tag, TAG_OF_TARGET["runtime-cpu"])

    def test_termination_outlasts_the_drain(self):
        for name, _, _, pod, container, _, flags in self.each():
            with self.subTest(overlay=name):
                drain = float(flags["shutdown_grace_seconds"])
                pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {})
                command = pre_stop.get("command", [""])
                pause = float(command[1]) if command[0] == "sleep" else 0.0
                self.assertGreater(pod["terminationGracePeriodSeconds"], pause + drain, name)

    def test_runs_as_the_image_user(self):
        uid = dockerfile.user_id(dockerfile.stage(STAGES, "runtime"))
        self.assertEqual(uid, dockerfile.user_id(dockerfile.stage(STAGES, "runtime-cpu")))
        for name, _, _, pod, container, _, _ in self.each():
            with self.subTest(overlay=name):
                self.assertTrue(pod["securityContext"]["runAsNonRoot"])
                self.assertEqual(pod["securityContext"]["runAsUser"], uid)
                self.assertFalse(container["securityContext"]["allowPrivilegeEscalation"])
                self.assertTrue(container["securityContext"]["readOnlyRootFilesystem"])

    def test_secret_holds_tls_and_tokens(self):
        for name, _, _, pod, container, _, flags in self.each():
            with self.subTest(overlay=name):
                volumes = {v["name"]: v for v in pod["volumes"]}
                mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
                secrets = [n for n, v in volumes.items() if "secret" in v]
                self.assertEqual(secrets, ["auth"])
                secret = volumes["auth"]["secret"]
                self.assertEqual(secret["secretName"], "attnbench-auth")
                files = [flags[f] for f in ("tls_cert_file", "tls_key_file", "tokens_file")
                         if f in flags]
                for path in files:
                    self.assertTrue(path.startswith(mounts["auth"] + "/"), path)
                # Mandatory exactly when the flags read from it.
                self.assertEqual(secret.get("optional", False), not files, name)

    def test_the_server_takes_the_flags(self):
        if not os.access(SERVER, os.X_OK):
            self.skipTest(f"no server binary at {SERVER}")
        help_text = subprocess.run([str(SERVER), "--helpfull"], capture_output=True, text=True,
                                   timeout=60, stdin=subprocess.DEVNULL)
        known = set(re.findall(r"--(\w+)", help_text.stdout + help_text.stderr))
        for name, _, _, _, container, config_map, flags in self.each():
            with self.subTest(overlay=name):
                args = [a for a in container["args"] if not a.startswith("--flagfile=")]
                for flag in list(flags) + [a[2:].split("=", 1)[0] for a in args]:
                    self.assertIn(flag, known, f"{name}: --{flag} is not a server flag")
                if "tls_cert_file" in flags:
                    continue  # Its files exist only in the cluster's Secret.
                with tempfile.NamedTemporaryFile("w", suffix=".flags") as flagfile:
                    flagfile.write(config_map["data"]["server.flags"])
                    flagfile.flush()
                    args = [a.replace("$(POD_NAME)", "pod-0") for a in args]
                    # Later flags win: loopback and free ports instead of 0.0.0.0:50051.
                    proc = subprocess.Popen(
                        [str(SERVER), f"--flagfile={flagfile.name}", *args,
                         "--listen_address=127.0.0.1:0", "--metrics_address=127.0.0.1:0"],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                        stdin=subprocess.DEVNULL)
                    try:
                        line = proc.stdout.readline()
                        self.assertRegex(line, r"^attnbench-server listening on 127\.0\.0\.1:\d+ ",
                                         proc.stderr.read() if proc.poll() is not None else "")
                    finally:
                        proc.send_signal(signal.SIGTERM)
                        try:
                            proc.communicate(timeout=30)
                        except subprocess.TimeoutExpired:
                            proc.kill()
                            proc.communicate(timeout=10)


if __name__ == "__main__":
    unittest.main()
