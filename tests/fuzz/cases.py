"""The fuzzer's cases: case number n (with the run's seed) decides, alone, what is sent to which
method and which answers are acceptable, so any failing case can be replayed by its number.

Mix: valid requests (which must succeed), single field mutations with an exact expected answer,
stacked and descriptor-driven mutations, score_mod / mask_mod expressions and aux tensors (random,
mutated, invalid, hostile), sweep-grid abuse, wire-level corruption, garbage, messages over
--max_message_bytes, client cancellations and tight deadlines, and tenant headers.
"""

import contextlib
import dataclasses
import os
import random
import threading
import warnings

from google.protobuf.message import DecodeError

from attnbench.v1 import attnbench_pb2 as pb

import outcomes
from outcomes import C, Expect, strict
import valid_requests
import expression_mutations
import spec_mutations
import wire_mutations

SERVICE = "/attnbench.v1.AttnBench/"
REQUEST_TYPES = {"Run": pb.RunRequest, "StreamRun": pb.RunRequest, "Sweep": pb.SweepRequest,
                 "GetCapabilities": pb.GetCapabilitiesRequest}
STREAMING = {"StreamRun", "Sweep"}


@dataclasses.dataclass
class Case:
    index: int
    category: str
    method: str
    payload: bytes
    expect: Expect
    note: str
    # The request is one of valid_requests.py's, unchanged: it must succeed and be right.
    valid: bool = False
    metadata: tuple = ()
    # Seconds; None means the fuzzer's generous default deadline.
    deadline: float = None
    # Streams: cancel after this many messages. Unary: cancel right after sending.
    cancel_after: int = None


_parse_lock = threading.Lock()


def parses(method, payload):
    """Whether the C++ parser the server uses accepts the payload as the method's request. The
    Python module wraps that parser, but only warns where it gives up (an unexpected end-group
    tag), so warnings count as failures; the lock keeps the warning filter to this thread. The
    parser also logs every invalid UTF-8 string to stderr: silenced, it would bury a report."""
    with _parse_lock, warnings.catch_warnings(), _quiet_stderr():
        warnings.simplefilter("error")
        try:
            REQUEST_TYPES[method].FromString(payload)
            return True
        except (DecodeError, RuntimeWarning, SystemError, RuntimeError, ValueError):
            return False


@contextlib.contextmanager
def _quiet_stderr():
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _run_method(rng):
    return rng.choice(["Run", "Run", "StreamRun"])


def _valid(rng, index):
    if rng.random() < 0.2:
        req = valid_requests.valid_sweep_request(rng)
        return Case(index, "valid", "Sweep", req.SerializeToString(), Expect(frozenset({C.OK})),
                    "valid sweep", valid=True)
    req = valid_requests.valid_run_request(rng)
    method = _run_method(rng)
    return Case(index, "valid", method, req.SerializeToString(), Expect(frozenset({C.OK})),
                "valid", valid=True)


def _single(rng, index):
    req = valid_requests.valid_run_request(rng)
    expect, name = spec_mutations.mutate_once(rng, req)
    if rng.random() < 0.2:
        # The same mutation as the base of an axis-free sweep: every point is checked first, so
        # a rule broken is refused outright; a refusal that comes only when the point runs (a
        # limit, a backend) is streamed in the point's place under continue_on_error.
        sweep = pb.SweepRequest(base=req, continue_on_error=rng.random() < 0.5)
        if sweep.continue_on_error and expect.codes != {C.INVALID_ARGUMENT}:
            expect = Expect(expect.codes | {C.OK}, expect.field)
        return Case(index, "single", "Sweep", sweep.SerializeToString(), expect,
                    f"sweep base {name}")
    return Case(index, "single", _run_method(rng), req.SerializeToString(), expect, name)


def _stacked(rng, index):
    req = valid_requests.valid_run_request(rng)
    names = []
    for _ in range(rng.randint(2, 4)):
        if rng.random() < 0.5:
            try:
                names.append(spec_mutations.mutate_once(rng, req)[1])
            except (ArithmeticError, ValueError, IndexError, TypeError):
                # A mutator meant for a valid request tripped over an earlier mutation's value
                # (a zero block size, say); what it changed so far stays.
                names.append("partial")
        else:
            spec_mutations.random_field_write(rng, req)
            names.append("random_field_write")
    return Case(index, "stacked", _run_method(rng), req.SerializeToString(),
                outcomes.anything(), "+".join(names))


def _expression(rng, index):
    """A small valid request with a score_mod or mask_mod and aux tensors (issue #15)."""
    req = valid_requests.valid_run_request(rng)
    expect, note = expression_mutations.expression_case(rng, req)
    return Case(index, "expression", _run_method(rng), req.SerializeToString(), expect, note)


def _sweep_abuse(rng, index):
    req = valid_requests.valid_sweep_request(rng)
    choice = rng.choice(["long_axis", "unset_axis", "empty_axis", "conflict", "too_many",
                         "bad_value", "long_layouts", "random"])
    del req.axes[:]
    if choice == "long_axis":
        axis = req.axes.add()
        getattr(axis, rng.choice(["seq_len", "batch_size", "seq_len_kv"])).values.extend(
            rng.choice([16, 1, 2**40, -1]) for _ in range(rng.randint(9, 100000)))
        return Case(index, "sweep", "Sweep", req.SerializeToString(), strict("axes"), choice)
    if choice == "unset_axis":
        valid_requests.valid_axis(rng, req.axes.add(), "dtype")
        req.axes.add()
        return Case(index, "sweep", "Sweep", req.SerializeToString(), strict("axes[1]"), choice)
    if choice == "empty_axis":
        getattr(req.axes.add(), rng.choice(["seq_len", "layout", "backend", "phase"])).SetInParent()
        return Case(index, "sweep", "Sweep", req.SerializeToString(), strict("axes[0]"), choice)
    if choice == "conflict":
        first, second = rng.choice([("seq_len", "seq_len_q"), ("seq_len_kv", "seq_len"),
                                    ("dtype", "dtype"), ("layout", "layout")])
        for kind in (first, second):
            axis = req.axes.add()
            if kind in ("seq_len_q", "seq_len_kv"):
                getattr(axis, kind).values.append(16)
            else:
                valid_requests.valid_axis(rng, axis, kind)
        return Case(index, "sweep", "Sweep", req.SerializeToString(), strict("axes[1]"), choice)
    if choice == "too_many":
        for kind in ("batch_size", "dtype", "seq_len", "head_dim"):
            axis = req.axes.add()
            valid_requests.valid_axis(rng, axis, kind)
            while len(getattr(axis, kind).values) < 2:
                valid_requests.valid_axis(rng, axis, kind)
        # 2^4 = 16 points, over the server's 8.
        return Case(index, "sweep", "Sweep", req.SerializeToString(), strict("axes"), choice)
    if choice == "bad_value":
        axis = req.axes.add()
        kind, value, field = rng.choice([
            ("seq_len", -1, "spec.seq_len_q"), ("batch_size", 0, "spec.batch_size"),
            ("head_dim", -2**31, "spec.head_dim_qk"), ("dtype", 99, "spec.dtype"),
            ("phase", -5, "spec.phase"), ("backend", "no-such-backend", "backend")])
        getattr(axis, kind).values.append(value)
        return Case(index, "sweep", "Sweep", req.SerializeToString(), strict(field), kind)
    if choice == "long_layouts":
        axis = req.axes.add()
        for _ in range(rng.randint(9, 50000)):
            axis.layout.values.add().mha.num_heads = 1
        return Case(index, "sweep", "Sweep", req.SerializeToString(), strict("axes"), choice)
    for _ in range(rng.randint(1, 3)):
        spec_mutations.random_field_write(rng, req)
    return Case(index, "sweep", "Sweep", req.SerializeToString(), outcomes.anything(), choice)


def _wire(rng, index):
    method = rng.choice(["Run", "StreamRun", "Sweep", "GetCapabilities"])
    if method == "Sweep":
        data = valid_requests.valid_sweep_request(rng).SerializeToString()
    elif method == "GetCapabilities":
        data = b""
    else:
        data = valid_requests.valid_run_request(rng).SerializeToString()
    data, names = wire_mutations.mutate(rng, data)
    return _bytes_case(index, "wire", method, data, "+".join(names))


def _garbage(rng, index):
    method = rng.choice(["Run", "StreamRun", "Sweep", "GetCapabilities"])
    return _bytes_case(index, "garbage", method, wire_mutations.garbage(rng), "garbage")


def _bytes_case(index, category, method, data, note):
    if len(data) > valid_requests.MAX_MESSAGE_BYTES:
        return Case(index, category, method, data, Expect(frozenset({C.RESOURCE_EXHAUSTED})),
                    note + " (oversized)")
    if parses(method, data):
        return Case(index, category, method, data, outcomes.anything(), note)
    return Case(index, category, method, data,
                Expect(frozenset({C.INVALID_ARGUMENT}), REQUEST_TYPES[method].DESCRIPTOR.full_name,
                       unparseable=True),
                note + " (unparseable)")


def _oversized(rng, index):
    """Messages over --max_message_bytes (RESOURCE_EXHAUSTED) and exactly at it (read)."""
    limit = valid_requests.MAX_MESSAGE_BYTES
    method = rng.choice(["Run", "StreamRun", "Sweep", "GetCapabilities"])
    choice = rng.choice(["inputs", "axis", "blob", "at_limit", "over_by_one", "backend"])
    base = (valid_requests.valid_sweep_request(rng) if method == "Sweep" else
            pb.GetCapabilitiesRequest() if method == "GetCapabilities" else
            valid_requests.valid_run_request(rng))
    if choice == "inputs" and method in ("Run", "StreamRun"):
        base.spec.inputs.query.data = rng.randbytes(limit + rng.randint(1, limit))
        data = base.SerializeToString()
    elif choice == "axis" and method == "Sweep":
        base.axes.add().seq_len.values.extend([2**40 + i for i in range(limit // 5)])
        data = base.SerializeToString()
    elif choice == "backend" and method in ("Run", "StreamRun"):
        base.backend = "b" * (limit + rng.randint(1, 1000))
        data = base.SerializeToString()
    elif choice in ("at_limit", "over_by_one"):
        size = limit if choice == "at_limit" else limit + 1
        data = wire_mutations.padded_to(base.SerializeToString(), size)
        assert data is not None and len(data) == size
        if choice == "at_limit":
            # Read in full, then judged as the request it carries (unknown fields are ignored).
            expect = Expect(frozenset({C.OK})) if method == "GetCapabilities" else (
                outcomes.anything())
            return Case(index, "oversized", method, data, expect, f"{choice} ({size} bytes)")
    else:
        data = rng.randbytes(limit + rng.randint(1, 3 * limit))
    return Case(index, "oversized", method, data, Expect(frozenset({C.RESOURCE_EXHAUSTED})),
                f"{choice} ({len(data)} bytes)")


def _cancel(rng, index):
    """A valid request the client abandons: mid-stream, or right after sending."""
    if rng.random() < 0.5:
        req = valid_requests.valid_sweep_request(rng)
        del req.axes[:]
        valid_requests.valid_axis(rng, req.axes.add(), "seq_len")
        req.axes[0].seq_len.values[:] = [8, 16, 24]
        method = "Sweep"
    else:
        req = valid_requests.valid_run_request(rng)
        method = rng.choice(["Run", "StreamRun"])
    after = 1 if method == "Sweep" else rng.choice([0, 1])
    return Case(index, "cancel", method, req.SerializeToString(),
                Expect(frozenset({C.CANCELLED, C.OK})), f"cancel after {after}",
                cancel_after=after)


def _deadline(rng, index):
    req = valid_requests.valid_run_request(rng)
    deadline = rng.choice([0.001, 0.01, 0.05, 0.2])
    return Case(index, "deadline", _run_method(rng), req.SerializeToString(),
                Expect(frozenset({C.OK, C.DEADLINE_EXCEEDED})), f"deadline {deadline} s",
                deadline=deadline)


def _capabilities(rng, index):
    return Case(index, "caps", "GetCapabilities", b"", Expect(frozenset({C.OK})), "caps",
                valid=True)


def _tenant(rng, index):
    """Tenant headers: many distinct valid tenants (per-tenant state must stay bounded), and
    malformed ones (refused naming the header)."""
    case = _valid(rng, index)
    case.category = "tenant"
    if rng.random() < 0.7:
        alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 64)))
        case.metadata = (("x-attnbench-tenant", name),)
        case.note = "valid tenant"
        return case
    # Legal header values (printable ASCII) that are no tenant name, and a repeated header.
    bad = rng.choice(["", "a" * 65, "has space", "semi;colon", "slash/x", "q?", "dup"])
    if bad == "dup":
        case.metadata = (("x-attnbench-tenant", "a"), ("x-attnbench-tenant", "b"))
    else:
        case.metadata = (("x-attnbench-tenant", bad),)
    case.expect = strict("x-attnbench-tenant")
    case.valid = False
    case.note = f"bad tenant {bad!r}"
    return case


# (weight, builder); weights sum to 100.
MIX = [(12, _valid), (25, _single), (12, _stacked), (5, _expression), (9, _sweep_abuse),
       (14, _wire), (7, _garbage), (3, _oversized), (4, _cancel), (3, _deadline),
       (2, _capabilities), (4, _tenant)]


def build(seed, index):
    rng = random.Random(seed * 1_000_003 + index)
    pick = rng.randrange(100)
    for weight, builder in MIX:
        if pick < weight:
            return builder(rng, index)
        pick -= weight
    raise AssertionError("weights do not sum to 100")
