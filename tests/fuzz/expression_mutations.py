"""Hostile score_mod / mask_mod expressions and aux tensors (issue #15) for the fuzzer: random
well-typed expressions, the same mutated (deletions, insertions, duplication, deep nesting), the
classic attacks (huge literals, division by zero, NaN-producing functions), and aux tensors with
bad names, too many dimensions, huge shapes, short data and NaN values, each set on a small valid
request.

Each builder returns (Expect, note). An expression that is certainly invalid, or an aux tensor
that is, gets INVALID_ARGUMENT naming its field exactly (spec.score_mod.expression,
spec.mask_mod.expression, spec.aux[i]...); a request that may be valid may also succeed or be
refused by a backend that does not run expressions (FAILED_PRECONDITION) or by a limit
(RESOURCE_EXHAUSTED), but never crash the server or answer INTERNAL or UNKNOWN.
"""

import math
import struct

from attnbench.v1 import attnbench_pb2 as pb

from outcomes import C, Expect, strict

SCORE = "spec.score_mod.expression"
MASK = "spec.mask_mod.expression"
MAYBE_VALID = frozenset({C.OK, C.INVALID_ARGUMENT, C.FAILED_PRECONDITION, C.RESOURCE_EXHAUSTED})

_INT_LEAVES = ["0", "1", "2", "7", "16", "2147483647", "9223372036854775807", "b", "h", "q", "kv",
               "hq", "hkv", "S_q", "S_kv"]
_FLOAT_LEAVES = ["0.0", "0.5", "-1.5", "1e-3", ".25", "2.", "3e38", "1e-40", "100.0"]
_COMPARE = ["<", "<=", ">", ">=", "==", "!="]
_FUNCS = ["abs", "exp", "exp2", "log", "log2", "sqrt", "tanh", "sigmoid"]
_TOKENS = (_INT_LEAVES + _FLOAT_LEAVES + _COMPARE + _FUNCS +
           ["s", "doc", "min", "max", "floor", "ceil", "(", ")", "[", "]", ",", "?", ":", "+",
            "-", "*", "/", "%", "&&", "||", "!", " ", "zz", "$", "\x00", "\u00e9"])

# Certainly invalid in either kind, whatever the problem: (text, what is wrong).
INVALID = [
    "", "(", ")", "1 +", "q kv", "q $ kv", "1e", "2f", "foo(1)", "min(1)", "exp(1, 2)", "doc[]",
    "qq", "s &&& 1", "!3", "(q < kv) + 1", "q ? 1 : 2", "kv % 2.0", "9223372036854775808",
    "1e39", "(" * 10000, "(" * 40 + "1" + ")" * 40, "-" * 100 + "1", "abs(" * 40 + "1" + ")" * 40,
    "1" + " + 1" * 300, "q" * 5000, "min(1, 2, 3)", "doc", "nope[0]", "doc[0.5]", "doc[1, 2, 3]",
    "\xff\xfe", "kv < 1 \x00",
]


class Gen:
    """Random well-typed expressions; aux indexes are clamped with min/max so the checker can
    prove them in bounds (a random index would only exercise the bounds error)."""

    def __init__(self, rng, score, aux_len):
        self.rng = rng
        self.score = score
        self.aux_len = aux_len

    def int_(self, d):
        r = self.rng
        if d <= 0 or r.random() < 0.25:
            return r.choice(_INT_LEAVES)
        d -= 1
        k = r.randrange(9)
        if k < 5:
            return f"({self.int_(d)} {'+-*/%'[k]} {self.int_(d)})"
        if k == 5:
            return f"-{self.int_(d)}"
        if k == 6:
            return f"({self.bool_(d)} ? {self.int_(d)} : {self.int_(d)})"
        if k == 7:
            return f"{r.choice(['min', 'max'])}({self.int_(d)}, {self.int_(d)})"
        return f"{r.choice(['floor', 'ceil'])}({self.float_(d)})"

    def float_(self, d):
        r = self.rng
        if d <= 0 or r.random() < 0.25:
            if self.score and r.random() < 0.3:
                return "s"
            return r.choice(_FLOAT_LEAVES)
        d -= 1
        k = r.randrange(8)
        if k < 4:
            return f"({self.float_(d)} {'+-*/'[k]} {self.num(d)})"
        if k == 4:
            return f"{r.choice(_FUNCS)}({self.num(d)})"
        if k == 5 and self.aux_len:
            return f"doc[min(max({self.int_(d)}, 0), {self.aux_len - 1})]"
        if k == 6:
            return f"({self.bool_(d)} ? {self.float_(d)} : {self.num(d)})"
        return f"{r.choice(['min', 'max'])}({self.float_(d)}, {self.num(d)})"

    def num(self, d):
        return self.int_(d) if self.rng.random() < 0.5 else self.float_(d)

    def bool_(self, d):
        r = self.rng
        if d <= 0:
            return f"({self.int_(0)} {r.choice(_COMPARE)} {self.int_(0)})"
        d -= 1
        k = r.randrange(5)
        if k < 2:
            return f"({self.num(d)} {r.choice(_COMPARE)} {self.num(d)})"
        if k == 2:
            return f"({self.bool_(d)} {r.choice(['&&', '||'])} {self.bool_(d)})"
        if k == 3:
            return f"!{self.bool_(d)}"
        return f"({self.bool_(d)} ? {self.bool_(d)} : {self.bool_(d)})"

    def expression(self, depth):
        return self.num(depth) if self.score else self.bool_(depth)


def mutate_text(rng, text):
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(text) + 1)
        k = rng.randrange(6)
        if k == 0:
            text = text[:at] + text[at + rng.randint(1, 4):]
        elif k == 1:
            text = text[:at] + rng.choice(_TOKENS) + text[at:]
        elif k == 2:
            text = text[:at] + text[at:at + rng.randint(1, 30)] + text[at:]
        elif k == 3:
            text = text[:at] + chr(rng.randrange(1, 0x250)) + text[at + 1:]
        elif k == 4:
            text = rng.choice(["(", "-", "!", "abs("]) * rng.randint(1, 80) + text
        else:
            text = "".join(rng.choice(_TOKENS) for _ in range(rng.randint(1, 40)))
    return text


def _float32(shape, values):
    t = pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=shape)
    t.data = struct.pack(f"<{len(values)}f", *values)
    return t


def _seq_len_kv(spec):
    return spec.seq_len_kv or spec.seq_len_q or 1


def _set(rng, spec, score, text):
    (spec.score_mod if score else spec.mask_mod).expression = text


def expression_case(rng, req):
    """One expression case on a valid request: returns (Expect, note)."""
    spec = req.spec
    n = max(1, min(_seq_len_kv(spec), 4096))
    score = rng.random() < 0.5
    field = SCORE if score else MASK
    choice = rng.choice(["random", "random", "mutated", "mutated", "invalid", "attack", "aux_bad",
                         "aux_bad", "aux_huge"])
    if choice != "aux_bad" and choice != "aux_huge" and rng.random() < 0.6:
        # A document-id tensor as long as the keys, which the random expressions index.
        ids = [float(i * 4 // n) for i in range(n)]
        spec.aux.add(name="doc", tensor=_float32([n], ids))
        aux_len = n
    else:
        aux_len = 0
    gen = Gen(rng, score, aux_len)
    if choice == "random":
        text = gen.expression(rng.randint(0, 5))
        _set(rng, spec, score, text)
        return Expect(MAYBE_VALID), f"{choice} {field}"
    if choice == "mutated":
        text = mutate_text(rng, gen.expression(rng.randint(1, 4)))
        _set(rng, spec, score, text)
        return Expect(MAYBE_VALID), f"{choice} {field}"
    if choice == "invalid":
        text = rng.choice(INVALID)
        if text == "" and rng.random() < 0.5:
            text = "   "
        _set(rng, spec, score, text)
        return strict(field), f"invalid {field} {text[:20]!r}"
    if choice == "attack":
        text = rng.choice(["kv / 0", "kv % 0", "1.0 / 0", "0.0 / 0", "log(-1)", "sqrt(-1)",
                           "log(0.0)", "exp(1e30)", "exp(100.0) * 0.0", "floor(exp(100.0))",
                           "(-9223372036854775807 - 1) / -1", "9223372036854775807 * kv",
                           "abs(-9223372036854775807 - 1)", "3.4028235e38 * 3e38"])
        text = text if score else f"({text}) == ({text})"
        _set(rng, spec, score, text)
        return Expect(MAYBE_VALID), f"attack {field} {text!r}"
    # Aux tensors wrong in one way, with a valid expression that does not read them.
    _set(rng, spec, score, "s * 0.5" if score else "kv <= q || kv < 4")
    if choice == "aux_huge":
        shape = rng.choice([[2**26, 2**26], [2**40], [2**63 - 1, 2**63 - 1], [-1], [0, 5]])
        spec.aux.add(name="big", tensor=pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=shape,
                                                  data=b"\0" * rng.choice([0, 4, 64])))
        codes = frozenset({C.INVALID_ARGUMENT, C.RESOURCE_EXHAUSTED})
        return Expect(codes, "spec.aux"), f"aux shape {shape}"
    k = len(spec.aux)
    path = f"spec.aux[{k}]"
    bad = rng.choice(["name", "reserved", "duplicate", "rank3", "rank0", "short", "nan", "inf",
                      "dtype"])
    name, tensor = "extra", _float32([4], [0.0, 1.0, 2.0, 3.0])
    if bad == "name":
        name = rng.choice(["", "1x", "a-b", "a b", "x" * 65, "\u00e9", "doc[0]"])
    elif bad == "reserved":
        name = rng.choice(["s", "kv", "S_kv", "min", "sigmoid", "floor"])
    elif bad == "duplicate":
        spec.aux.add(name="extra", tensor=_float32([2], [0.0, 1.0]))
        path = f"spec.aux[{k + 1}]"
    elif bad == "rank3":
        tensor = _float32([1, 2, 2], [0.0] * 4)
    elif bad == "rank0":
        tensor = _float32([], [0.0])
    elif bad == "short":
        tensor = _float32([5], [0.0] * 4)
    elif bad == "nan":
        tensor = _float32([2, 2], [0.0, math.nan, 1.0, 2.0])
    elif bad == "inf":
        tensor = _float32([4], [0.0, 1.0, -math.inf, 2.0])
    else:
        tensor.dtype = rng.choice([pb.DTYPE_UNSPECIFIED, 99])
    spec.aux.add(name=name, tensor=tensor)
    return strict(path), f"aux {bad}"
