"""Checks deploy/grafana and deploy/prometheus against docs/metrics.md, the metrics contract.

Every metric name in a dashboard expression, a dashboard variable query or a rule expression must
be documented in docs/metrics.md (histograms with their _bucket/_sum/_count series), be recorded
by one of the recording rules, or be Prometheus's own `up`. So renaming a metric without updating
the dashboard and rules fails here. Also checks that the dashboard JSON and provisioning files
parse and hold together. Standard library plus Debian's python3-yaml.
"""

import json
import pathlib
import re
import unittest

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
METRICS_DOC = ROOT / "docs" / "metrics.md"
RULE_FILES = sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"))
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"

# Series Prometheus adds to every target itself, so docs/metrics.md cannot list them.
PROMETHEUS_SERIES = {"up"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
            "group_left", "group_right", "inf", "nan"}
TOKEN = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*|\d[\w.]*")


def documented_metrics(text):
    """Metric names in docs/metrics.md: the first cell of every table headed `metric`
    (histograms add their _bucket, _sum and _count series) and the Process section's names."""
    names = set()
    section, header = "", None
    for line in text.splitlines():
        if line.startswith("#"):
            section, header = line.lstrip("#").strip(), None
            continue
        if not line.startswith("|"):
            header = None
            if section == "Process":
                names.update(re.findall(r"`([A-Za-z_:][A-Za-z0-9_:]*)`", line))
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
            continue
        if header[0] != "metric" or set(cells[0]) <= set("-: "):
            continue
        row = set(re.findall(r"`([A-Za-z_:][A-Za-z0-9_:]*)`", cells[0]))
        names |= row
        if "type" in header and cells[header.index("type")] == "histogram":
            names |= {n + s for n in row for s in ("_bucket", "_sum", "_count")}
    return names


def metric_names(expr):
    """Metric names a PromQL expression (Grafana variables allowed) selects."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', " ", expr)  # strings
    e = re.sub(r"\$\{[^}]*\}|\$\w+", " ", e)  # Grafana variables
    e = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", e)  # label matchers, ranges, subqueries
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in TOKEN.finditer(e):
        tok = m.group(0)
        if tok[0].isdigit() or tok in KEYWORDS or e[m.end():].lstrip().startswith("("):
            continue  # number or duration, keyword, function or aggregation
        names.add(tok)
    return names


def variable_query_names(query):
    """Metric names in a Grafana Prometheus variable query (label_values(selector, label))."""
    m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", query)
    if m:
        return metric_names(m.group(1))
    if re.fullmatch(r"\s*label_values\(\s*\w+\s*\)\s*", query):
        return set()
    return metric_names(re.sub(r"^\s*query_result\((.*)\)\s*$", r"\1", query))


def load_rules():
    """(recorded names, [(where, expr)]) over every rule file."""
    recorded, exprs = set(), []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                name = rule.get("record") or rule.get("alert")
                if "record" in rule:
                    recorded.add(rule["record"])
                exprs.append((f"{path.name}: {name}", rule["expr"]))
    return recorded, exprs


def dashboard_exprs(dashboard):
    """[(where, names)] for every panel target and variable query of a dashboard."""
    out = []
    panels = list(dashboard.get("panels", []))
    while panels:
        panel = panels.pop()
        panels.extend(panel.get("panels", []))
        for target in panel.get("targets", []):
            out.append((f"panel {panel['title']!r} {target['refId']}",
                        metric_names(target["expr"])))
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            out.append((f"variable {var['name']}", variable_query_names(query)))
    return out


DOCUMENTED = documented_metrics(METRICS_DOC.read_text())
RECORDED, RULE_EXPRS = load_rules()
KNOWN = DOCUMENTED | RECORDED | PROMETHEUS_SERIES


def unknown(names):
    return sorted(n for n in names if n not in KNOWN)


class CheckerTest(unittest.TestCase):
    """The checker itself: it must find names, and only names."""

    def test_reads_the_contract(self):
        for name in ("attnbench_requests_total", "attnbench_queue_wait_seconds_bucket",
                     "attnbench_kernel_time_seconds_count", "DCGM_FI_DEV_FB_TOTAL",
                     "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "process_resident_memory_bytes"):
            self.assertIn(name, DOCUMENTED)
        for not_metric in ("method", "device", "queue_full", "attnbench_requests_total_bucket"):
            self.assertNotIn(not_metric, DOCUMENTED)

    def test_extracts_names(self):
        expr = ('histogram_quantile(0.9, sum by (le, device) (rate(a_seconds_bucket'
                '{device=~"$device", code!="OK"}[$__rate_interval]))) * 1e6 '
                'and on (job) b:c:rate5m offset 5m / ignoring(x) sum(rate(d_total[1h:1m])) by (y)')
        self.assertEqual(metric_names(expr), {"a_seconds_bucket", "b:c:rate5m", "d_total"})
        self.assertEqual(variable_query_names('label_values(e_info{instance=~"$i"}, device)'),
                         {"e_info"})

    def test_flags_an_undocumented_name(self):
        self.assertEqual(unknown(metric_names('sum(rate(attnbench_request_total[5m]))')),
                         ["attnbench_request_total"])


class RulesTest(unittest.TestCase):
    def test_rule_files_exist(self):
        self.assertTrue(RULE_FILES, "no rule files in deploy/prometheus/rules")
        self.assertTrue(RECORDED)

    def test_rules_use_documented_metrics(self):
        for where, expr in RULE_EXPRS:
            with self.subTest(where):
                names = metric_names(expr)
                self.assertTrue(names, f"no metric found in {expr!r}")
                self.assertEqual(unknown(names), [], f"{where}: not in docs/metrics.md")


class DashboardTest(unittest.TestCase):
    def setUp(self):
        self.assertTrue(DASHBOARDS, "no dashboards in deploy/grafana/dashboards")

    def test_dashboards_use_documented_metrics(self):
        for path in DASHBOARDS:
            for where, names in dashboard_exprs(json.loads(path.read_text())):
                with self.subTest(f"{path.name}: {where}"):
                    self.assertTrue(names, f"{path.name}: {where} selects no metric")
                    self.assertEqual(unknown(names), [], "not in docs/metrics.md nor recorded")

    def test_dashboards_hold_together(self):
        for path in DASHBOARDS:
            with self.subTest(path.name):
                dash = json.loads(path.read_text())
                self.assertTrue(dash.get("uid"))
                variables = {v["name"]: v for v in dash["templating"]["list"]}
                for name in ("datasource", "instance", "device"):
                    self.assertIn(name, variables)
                self.assertEqual(variables["datasource"]["type"], "datasource")
                ids = [p["id"] for p in dash["panels"]]
                self.assertEqual(len(ids), len(set(ids)), "panel ids repeat")
                for panel in dash["panels"]:
                    if panel["type"] == "row":
                        continue
                    self.assertEqual(panel["datasource"]["uid"], "${datasource}", panel["title"])
                    self.assertTrue(panel["targets"], panel["title"])
                    pos = panel["gridPos"]
                    self.assertLessEqual(pos["x"] + pos["w"], 24, panel["title"])

    def test_provisioning(self):
        sources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
        self.assertEqual([s["type"] for s in sources["datasources"]], ["prometheus"])
        providers = yaml.safe_load((PROVISIONING / "dashboards" / "attnbench.yml").read_text())
        self.assertEqual([p["type"] for p in providers["providers"]], ["file"])
        self.assertTrue(providers["providers"][0]["options"]["path"].startswith("/"))


if __name__ == "__main__":
    unittest.main()
