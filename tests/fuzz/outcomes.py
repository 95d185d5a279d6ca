"""What the fuzzer accepts as the end of a call: the status codes each case allows, and the rules
every status must follow (a non-empty message; INVALID_ARGUMENT naming a request field).

The standard (README, issue #4): bad input gets INVALID_ARGUMENT naming the field and the rule,
RESOURCE_EXHAUSTED when memory or a queue would overflow, FAILED_PRECONDITION when a backend
cannot run it; never UNKNOWN or INTERNAL, and never UNAVAILABLE while the server is up.
"""

import dataclasses
import re

import grpc

from attnbench.v1 import attnbench_pb2 as pb

C = grpc.StatusCode

# Every answer a request of unknown validity may get: it may be valid (OK), refused by a rule,
# over a limit, or not runnable on any backend.
ANY_ANSWER = frozenset({C.OK, C.INVALID_ARGUMENT, C.RESOURCE_EXHAUSTED, C.FAILED_PRECONDITION,
                        C.OUT_OF_RANGE})
REFUSED = ANY_ANSWER - {C.OK}

# Codes a sweep may stream in place of a point that failed while running (continue_on_error).
POINT_ERROR_CODES = frozenset({3, 8, 9, 11})  # INVALID_ARGUMENT, RESOURCE_EXHAUSTED, ...


@dataclasses.dataclass(frozen=True)
class Expect:
    """The codes a case may end with. `field`, when set, must appear in an INVALID_ARGUMENT
    message (the mutated field's path); otherwise the message must name some request field."""
    codes: frozenset
    field: str = None
    # The payload does not parse as the method's request type: INVALID_ARGUMENT, whose message
    # must name that type (`field` holds its full name, e.g. "attnbench.v1.RunRequest").
    unparseable: bool = False


def strict(field, code=C.INVALID_ARGUMENT):
    return Expect(frozenset({code}), field)


def anything():
    return Expect(ANY_ANSWER)


def _field_names():
    """Every field name of the request messages, to recognize an error message naming one."""
    names = set()
    seen = set()
    todo = [pb.RunRequest.DESCRIPTOR, pb.SweepRequest.DESCRIPTOR]
    while todo:
        desc = todo.pop()
        if desc.full_name in seen:
            continue
        seen.add(desc.full_name)
        for field in desc.fields:
            names.add(field.name)
            if field.message_type is not None:
                todo.append(field.message_type)
    # Not proto fields but request inputs an error may rightly name.
    names.update({"x-attnbench-tenant", "axes", "request"})
    return frozenset(names)


FIELD_NAMES = _field_names()
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")


def names_a_field(message):
    return any(word in FIELD_NAMES for word in _WORD.findall(message))


# A status message travels in an HTTP/2 header, which gRPC clients refuse beyond 8-16 KiB, taking
# other calls on the connection down with it; error messages must quote client input briefly.
MAX_STATUS_MESSAGE_BYTES = 4096


def judge(expect, code, details, elapsed, deadline):
    """None when (code, details) is acceptable for `expect`, else a sentence saying why not."""
    details = details or ""
    if "metadata size exceeds limit" in details:
        return (f"{code.name} ({details!r}): the client could not read the server's headers or "
                f"trailers, too large (a long status message?)")
    if len(details.encode("utf-8", "replace")) > MAX_STATUS_MESSAGE_BYTES:
        return (f"{code.name} with a status message of {len(details)} characters (limit "
                f"{MAX_STATUS_MESSAGE_BYTES}): {details[:200]!r}...")
    if code == C.DEADLINE_EXCEEDED:
        if C.DEADLINE_EXCEEDED in expect.codes:
            return None
        # Only our own deadline may expire; the fuzzer's deadline is far above any valid run,
        # so reaching it means the server hung on this request.
        return (f"DEADLINE_EXCEEDED after {elapsed:.1f} s (deadline {deadline} s): the server "
                f"did not answer in time")
    if code == C.CANCELLED and C.CANCELLED in expect.codes:
        return None
    if code not in expect.codes:
        allowed = ", ".join(sorted(c.name for c in expect.codes))
        return f"status {code.name} ({details!r}) not in the allowed set {{{allowed}}}"
    if code == C.OK:
        return None
    if not details.strip():
        return f"status {code.name} with an empty message"
    if code == C.INVALID_ARGUMENT:
        if expect.unparseable and "request: bytes do not parse as" not in details:
            return f"INVALID_ARGUMENT for an unparseable payload does not say so: {details!r}"
        if expect.field is not None and expect.field not in details:
            return f"INVALID_ARGUMENT message does not name {expect.field!r}: {details!r}"
        if not names_a_field(details):
            return f"INVALID_ARGUMENT message names no request field: {details!r}"
    return None
