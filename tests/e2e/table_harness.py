"""In-process helpers of the bench table tests (bench_sqa, bench_layer, bench_decode): bench/ on
sys.path, the generated stubs, a table's main run against a fake stub with its outputs read back,
and the refusal a backend answers for what it does not run.

Import harness first: it puts the generated stubs (ATTNBENCH_PYTHON_PATH) on sys.path.
"""

import contextlib
import io
import json
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH = os.path.join(ROOT, "bench")
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)

from correctness import import_stubs  # noqa: E402  (after the path setup)

grpc, pb, pb_grpc, json_format = import_stubs()
STUBS = (grpc, pb, pb_grpc, json_format)


class Refused(grpc.RpcError):
    """What a stub raises for a request its backend does not run: FAILED_PRECONDITION."""

    def __init__(self, details):
        super().__init__(details)
        self._details = details

    def code(self):
        return grpc.StatusCode.FAILED_PRECONDITION

    def details(self):
        return self._details


def run_table(main, name, argv, fake=None, wrap_stub=None, out_dir=None):
    """main(argv) of bench/NAME_table.py in process, behind `fake` (a stub standing in for the
    server) or `wrap_stub`, writing to out_dir (a fresh temporary folder when None); (exit status,
    what it printed, NAME_table.json loaded, NAME_table.md)."""
    if fake is not None:
        wrap_stub = lambda stub, g, p: fake  # noqa: E731
    with contextlib.ExitStack() as stack:
        if out_dir is None:
            out_dir = stack.enter_context(tempfile.TemporaryDirectory())
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = main([f"--out-dir={out_dir}", *argv], wrap_stub=wrap_stub, stubs=STUBS)
        with open(os.path.join(out_dir, f"{name}_table.json"), encoding="utf-8") as f:
            data = json.load(f)
        with open(os.path.join(out_dir, f"{name}_table.md"), encoding="utf-8") as f:
            table = f.read()
    return rc, buf.getvalue(), data, table
