"""Checks of deploy/compose without a docker daemon: the files parse, the server is built from
a Dockerfile target that exists (runtime-cpu, and runtime with GPUs reserved in the override),
Prometheus and Grafana mount deploy/prometheus and deploy/grafana where those files expect to be,
the scrape target and data source URL name the compose services and ports, and `docker compose
stop` waits longer than the server drains. `docker compose config` also runs where the compose
plugin exists.
"""

import re
import shutil
import subprocess
import unittest

import yaml

import dockerfile

COMPOSE_DIR = dockerfile.ROOT / "deploy" / "compose"
BASE = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())
GPU = yaml.safe_load((COMPOSE_DIR / "compose.gpu.yaml").read_text())
_, STAGES = dockerfile.parse()


def duration_seconds(text):
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", str(text))
    if not match or not any(match.groups()):
        raise ValueError(f"unparsed duration {text!r}")
    return int(match.group(1) or 0) * 60 + int(match.group(2) or 0)


def flag(args, name):
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    return values[-1] if values else None


def bind_mounts(service):
    """(host path resolved against the compose dir, container path) of each bind mount."""
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith(".") or source.startswith("/"):
            mounts.append(((COMPOSE_DIR / source).resolve(), target))
    return mounts


class ComposeTest(unittest.TestCase):

    def test_services(self):
        self.assertEqual(set(BASE["services"]), {"attnbench", "prometheus", "grafana"})
        for name, service in BASE["services"].items():
            image = service["image"]
            first = image.split("/")[0]
            self.assertFalse("/" in image and ("." in first or ":" in first), image)
            for port in service.get("ports", []):
                self.assertTrue(str(port).startswith("127.0.0.1:"), f"{name}: {port}")

    def test_server_builds_a_dockerfile_target(self):
        server = BASE["services"]["attnbench"]
        build = server["build"]
        self.assertEqual((COMPOSE_DIR / build["context"]).resolve(), dockerfile.ROOT)
        self.assertEqual(build["dockerfile"], "Dockerfile")
        self.assertEqual(build["target"], "runtime-cpu")
        runtime_cpu = dockerfile.stage(STAGES, "runtime-cpu")
        args = server["command"]
        # The ports the server listens on are the image's exposed ones.
        listen = int(flag(args, "listen_address").rsplit(":", 1)[1])
        metrics = int(flag(args, "metrics_address").rsplit(":", 1)[1])
        self.assertEqual({listen, metrics}, dockerfile.exposed_ports(runtime_cpu))
        published = {int(str(p).rsplit(":", 1)[1]) for p in server["ports"]}
        self.assertEqual(published, {listen, metrics})
        # Stopping waits out the drain.
        drain = float(flag(args, "shutdown_grace_seconds"))
        self.assertGreater(duration_seconds(server["stop_grace_period"]), drain)

    def test_gpu_override(self):
        server = GPU["services"]["attnbench"]
        self.assertEqual(server["build"]["target"], "runtime")
        dockerfile.stage(STAGES, "runtime")
        devices = server["deploy"]["resources"]["reservations"]["devices"]
        self.assertEqual(devices[0]["driver"], "nvidia")
        self.assertIn("gpu", devices[0]["capabilities"])
        self.assertEqual(server["image"], "attnbench:gpu")

    def test_prometheus_config_is_mounted_and_scrapes_the_server(self):
        prometheus = BASE["services"]["prometheus"]
        mounts = dict((target, source) for source, target in bind_mounts(prometheus))
        config_dir = mounts["/etc/prometheus"]
        self.assertEqual(config_dir, dockerfile.ROOT / "deploy" / "prometheus")
        self.assertIn("--config.file=/etc/prometheus/prometheus.yml", prometheus["command"])
        config = yaml.safe_load((config_dir / "prometheus.yml").read_text())
        targets = [t for job in config["scrape_configs"]
                   for sc in job.get("static_configs", []) for t in sc["targets"]]
        metrics = flag(BASE["services"]["attnbench"]["command"], "metrics_address")
        self.assertIn(f"attnbench:{metrics.rsplit(':', 1)[1]}", targets)

    def test_grafana_provisioning_is_mounted(self):
        grafana = BASE["services"]["grafana"]
        mounts = dict((target, source) for source, target in bind_mounts(grafana))
        provisioning = mounts["/etc/grafana/provisioning"]
        self.assertEqual(provisioning, dockerfile.ROOT / "deploy" / "grafana" / "provisioning")
        dashboards_dir = mounts["/var/lib/grafana/dashboards"]
        self.assertTrue(list(dashboards_dir.glob("*.json")), dashboards_dir)
        # The dashboard provider reads where the dashboards are mounted; the data source is the
        # compose Prometheus.
        providers = [p for f in (provisioning / "dashboards").glob("*.y*ml")
                     for p in yaml.safe_load(f.read_text())["providers"]]
        self.assertIn("/var/lib/grafana/dashboards", [p["options"]["path"] for p in providers])
        sources = [d for f in (provisioning / "datasources").glob("*.y*ml")
                   for d in yaml.safe_load(f.read_text())["datasources"]]
        self.assertIn("http://prometheus:9090", [d["url"] for d in sources])
        self.assertIn("prometheus", BASE["services"])

    def test_every_bind_mount_exists(self):
        for name, service in list(BASE["services"].items()) + list(GPU["services"].items()):
            for source, _ in bind_mounts(service):
                self.assertTrue(source.exists(), f"{name}: {source}")

    def test_docker_compose_config(self):
        docker = shutil.which("docker")
        if docker is None:
            self.skipTest("no docker CLI")
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode != 0:
            self.skipTest("no docker compose plugin")
        out = subprocess.run(
            [docker, "compose", "-f", str(COMPOSE_DIR / "compose.yaml"), "-f",
             str(COMPOSE_DIR / "compose.gpu.yaml"), "config", "--quiet"],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)


if __name__ == "__main__":
    unittest.main()
