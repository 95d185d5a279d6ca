"""bench/expressions_table.py (issue #15's expressions against FlexAttention) --smoke against a
real CPU-only server: every case's expressions run with a passing check, the built-in equivalents
where they exist, and the kept pairs of the Python mirror (what Flex would be given) equal to the
server's count; a mirror that drops the sink tokens is caught (exit status 1).
"""

import json
import os
import tempfile
import unittest

import harness
import table_harness  # noqa: F401  (puts bench/ on sys.path)

import expressions_table  # noqa: E402


class ExpressionsTableTest(harness.ServerTestCase):

    def test_smoke(self):
        out = tempfile.mkdtemp()
        rc = expressions_table.main([f"--server={self.server.target}", "--smoke",
                                     f"--out-dir={out}"])
        self.assertEqual(rc, 0)
        with open(os.path.join(out, "expressions_table.json")) as f:
            rows = json.load(f)
        self.assertEqual(len(rows), 10)
        for row in rows:
            self.assertEqual(row["failed"], [], row["case"])
            self.assertEqual(row["ours"]["extra"]["check"], "pass", row["case"])
            has_builtin = row["case"] in ("alibi", "softcap", "window_sinks")
            self.assertEqual(row["builtin"] is not None, has_builtin, row["case"])
            if has_builtin:
                self.assertEqual(row["builtin"]["extra"]["check"], "pass", row["case"])
        first = [r for r in rows if r["compile_ms"]]
        self.assertEqual(len(first), 5)  # each case's first point was sent twice

    def test_a_wrong_mirror_fails(self):
        right = expressions_table.keeps

        def without_sinks(case, seq, rows):
            keep = right(case, seq, rows)
            if case.name == "window_sinks":
                keep[:, :expressions_table.SINKS] = False
            return keep

        expressions_table.keeps = without_sinks
        try:
            rc = expressions_table.main([f"--server={self.server.target}", "--smoke",
                                         "--cases=window_sinks",
                                         f"--out-dir={tempfile.mkdtemp()}"])
        finally:
            expressions_table.keeps = right
        self.assertEqual(rc, 1)


if __name__ == "__main__":
    unittest.main()
