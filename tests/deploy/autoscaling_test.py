"""The autoscaling component (deploy/k8s/components/autoscaling), rendered with `kubectl
kustomize` on top of every overlay under deploy/k8s/overlays, and checked:
  - a HorizontalPodAutoscaler (autoscaling/v2) targets the overlay's Deployment, which no longer
    sets replicas (an apply would otherwise reset the HPA's count);
  - its one metric is the Pods metric attnbench_queue_depth, a gauge of docs/metrics.md, with an
    average-value target per replica;
  - the Prometheus adapter rule shipped beside it serves exactly that name, per pod and
    namespace (the labels the PodMonitor gives every series), from that series;
  - bounds: at least two replicas, so the one PodDisruptionBudget selecting the pods still leaves
    one serving; a maximum above the minimum;
  - scale-down waits longer than a typical sweep (10 minutes) and than a pod's termination, and
    removes one pod at a time; scale-up is not slower than scale-down.
Renders only with kubectl 1.21 or newer (kustomize components); skipped, not failed, where only
an older kubectl is installed (Debian 12's kubernetes-client 1.20), and where there is none.
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import unittest

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
COMPONENT = K8S / "components" / "autoscaling"
OVERLAYS = sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml"))
METRIC = "attnbench_queue_depth"
# The standard table's longest part runs about 7 minutes (bench/README.md); a sweep that long must
# not lose its replicas between bursts.
TYPICAL_SWEEP_SECONDS = 600


def kubectl_minor():
    """kubectl's client minor version, or None without kubectl."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    out = subprocess.run([kubectl, "version", "--client", "-o", "json"], capture_output=True,
                         text=True, timeout=60, stdin=subprocess.DEVNULL)
    return int(re.match(r"\d+", json.loads(out.stdout)["clientVersion"]["minor"]).group(0))


def render_with_component(overlay):
    """`kubectl kustomize` of a throwaway kustomization: the overlay plus the component."""
    with tempfile.TemporaryDirectory(prefix="attnbench-autoscaling-") as tmp:
        # Kustomize refuses absolute paths to other kustomizations.
        text = yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [os.path.relpath(overlay, tmp)],
            "components": [os.path.relpath(COMPONENT, tmp)],
        })
        pathlib.Path(tmp, "kustomization.yaml").write_text(text)
        out = subprocess.run(["kubectl", "kustomize", tmp], capture_output=True, text=True,
                             timeout=120, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise AssertionError(f"kubectl kustomize {overlay.name} + autoscaling:\n{out.stderr}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def one(docs, kind):
    found = [d for d in docs if d["kind"] == kind]
    if len(found) != 1:
        raise AssertionError(f"expected one {kind}, found {len(found)}")
    return found[0]


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


class AdapterRuleTest(unittest.TestCase):
    """The adapter rule file on its own: no kubectl needed."""

    def rule(self):
        values = yaml.safe_load((COMPONENT / "prometheus-adapter-values.yaml").read_text())
        rules = [r for r in values["rules"]["custom"] if METRIC in r["seriesQuery"]]
        self.assertEqual(len(rules), 1)
        return rules[0]

    def test_serves_the_queue_depth_per_pod(self):
        rule = self.rule()
        series = re.match(r"^(\w+)\{(.*)\}$", rule["seriesQuery"])
        self.assertIsNotNone(series, rule["seriesQuery"])
        self.assertEqual(series.group(1), METRIC)
        self.assertIn('pod!=""', series.group(2))
        self.assertIn('namespace!=""', series.group(2))
        overrides = rule["resources"]["overrides"]
        self.assertEqual(overrides["pod"], {"resource": "pod"})
        self.assertEqual(overrides["namespace"], {"resource": "namespace"})
        self.assertEqual(rule["name"]["as"], METRIC)
        self.assertRegex(METRIC, rule["name"]["matches"])
        query = rule["metricsQuery"]
        for placeholder in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
            self.assertIn(placeholder, query)
        # One value per pod: its devices' series summed.
        self.assertRegex(query, r"^sum\(.*\) by \(<<\.GroupBy>>\)$")

    def test_the_metric_is_a_documented_gauge(self):
        docs = (ROOT / "docs" / "metrics.md").read_text()
        row = re.search(rf"(?m)^\| `{METRIC}` \| (\w+) \|", docs)
        self.assertIsNotNone(row, f"{METRIC} is not in docs/metrics.md")
        self.assertEqual(row.group(1), "gauge")


@unittest.skipIf(kubectl_minor() is None, "no kubectl: cannot render the component")
@unittest.skipIf((kubectl_minor() or 99) < 21,
                 "kubectl older than 1.21: its kustomize has no components")
class ComponentTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.rendered = {overlay.name: render_with_component(overlay) for overlay in OVERLAYS}

    def each(self):
        for name, docs in self.rendered.items():
            with self.subTest(overlay=name):
                yield name, docs, one(docs, "Deployment"), one(docs, "HorizontalPodAutoscaler")

    def test_renders_on_every_overlay(self):
        self.assertGreaterEqual(len(self.rendered), 3)

    def test_targets_the_deployment_which_leaves_replicas_to_it(self):
        for _, _, deployment, hpa in self.each():
            self.assertEqual(hpa["apiVersion"], "autoscaling/v2")
            self.assertEqual(hpa["spec"]["scaleTargetRef"],
                             {"apiVersion": deployment["apiVersion"], "kind": "Deployment",
                              "name": deployment["metadata"]["name"]})
            self.assertNotIn("replicas", deployment["spec"])

    def test_scales_on_queue_depth_per_replica(self):
        rule_name = yaml.safe_load((COMPONENT / "prometheus-adapter-values.yaml").read_text())[
            "rules"]["custom"][0]["name"]["as"]
        for _, _, _, hpa in self.each():
            metrics = hpa["spec"]["metrics"]
            self.assertEqual([m["type"] for m in metrics], ["Pods"])
            pods = metrics[0]["pods"]
            self.assertEqual(pods["metric"]["name"], METRIC)
            self.assertEqual(pods["metric"]["name"], rule_name)
            self.assertEqual(pods["target"]["type"], "AverageValue")
            self.assertGreater(float(pods["target"]["averageValue"]), 0)

    def test_bounds_and_disruption_budget(self):
        for _, docs, deployment, hpa in self.each():
            low, high = hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]
            self.assertGreaterEqual(low, 2)
            self.assertGreater(high, low)
            self.assertLessEqual(high, 64)
            pdb = one(docs, "PodDisruptionBudget")
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            self.assertTrue(matches(pdb["spec"]["selector"]["matchLabels"], labels))
            # At the minimum, a voluntary disruption still leaves a replica serving.
            self.assertIsInstance(pdb["spec"]["maxUnavailable"], int)
            self.assertGreaterEqual(low - pdb["spec"]["maxUnavailable"], 1)
            # The series the adapter reads come from scraping these pods.
            monitor = one(docs, "PodMonitor")
            self.assertTrue(matches(monitor["spec"]["selector"]["matchLabels"], labels))

    def test_scale_down_outlasts_a_sweep_and_a_drain(self):
        for _, _, deployment, hpa in self.each():
            behavior = hpa["spec"]["behavior"]
            down, up = behavior["scaleDown"], behavior["scaleUp"]
            grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            self.assertGreater(down["stabilizationWindowSeconds"], TYPICAL_SWEEP_SECONDS)
            self.assertGreater(down["stabilizationWindowSeconds"], grace)
            # One pod at a time, each period long enough for the last one to drain.
            for policy in down["policies"]:
                if policy["type"] == "Pods":
                    self.assertEqual(policy["value"], 1)
                else:
                    self.fail(f"scale-down policy {policy}: only Pods policies bound a drain")
                self.assertGreater(policy["periodSeconds"], grace)
            self.assertLessEqual(up.get("stabilizationWindowSeconds", 0),
                                 down["stabilizationWindowSeconds"])


if __name__ == "__main__":
    unittest.main()
