"""The Python mirror of kernels/spec for the variants table: exactly what the server computes for
ALiBi slopes, softcap, the explicit and probabilistic block-sparse masks (docs/variants.md §3, §4;
kernels/spec/mask.h, kernels/spec/philox.h, kernels/spec/modifiers.cc), the kept-pair counts of
§7, and the FlexAttention equivalents built from them: score_mod and mask_mod functions and the
BlockMask tables (kv_num_blocks / kv_indices, partial and full) of exactly the kept block set.

Pure Python and numpy, no torch: the score_mod / mask_mod factories only use operators and the
array functions handed to them, so the same functions are traced by torch.compile for Flex on
the GPU and evaluated with numpy by the self-test against the server's outputs here.
"""

import math
import random
from dataclasses import dataclass

import numpy as np

# ---------------------------------------------------------------------------------------------
# Philox4x32-10 (kernels/spec/philox.cc)
# ---------------------------------------------------------------------------------------------

_M32 = 0xFFFFFFFF
_MUL0, _MUL1 = 0xD2511F53, 0xCD9E8D57
_BUMP0, _BUMP1 = 0x9E3779B9, 0xBB67AE85


def philox_key(seed):
    """The key a 64-bit seed stands for: (seed & 0xffffffff, seed >> 32)."""
    seed &= (1 << 64) - 1
    return seed & _M32, seed >> 32


def philox4x32_10(counter, key):
    """Philox4x32-10 of a 4-word counter and 2-word key (Python ints), as a 4-tuple of ints."""
    x0, x1, x2, x3 = (int(w) & _M32 for w in counter)
    k0, k1 = (int(w) & _M32 for w in key)
    for _ in range(10):
        p0 = _MUL0 * x0
        p1 = _MUL1 * x2
        x0, x1, x2, x3 = (p1 >> 32) ^ x1 ^ k0, p1 & _M32, (p0 >> 32) ^ x3 ^ k1, p0 & _M32
        k0 = (k0 + _BUMP0) & _M32
        k1 = (k1 + _BUMP1) & _M32
    return x0, x1, x2, x3


def philox4x32_10_np(c0, c1, c2, c3, key):
    """Philox4x32-10 over numpy arrays of counter words (broadcast together, values < 2^32) with
    one key; returns the four output words as uint64 arrays."""
    m32 = np.uint64(_M32)
    s32 = np.uint64(32)
    mul0, mul1 = np.uint64(_MUL0), np.uint64(_MUL1)
    x0, x1, x2, x3 = np.broadcast_arrays(*(np.asarray(c, dtype=np.uint64) & m32
                                           for c in (c0, c1, c2, c3)))
    k0, k1 = (int(w) & _M32 for w in key)
    for _ in range(10):
        p0 = x0 * mul0  # < 2^64: both factors < 2^32
        p1 = x2 * mul1
        x0, x1, x2, x3 = ((p1 >> s32) ^ x1 ^ np.uint64(k0), p1 & m32,
                          (p0 >> s32) ^ x3 ^ np.uint64(k1), p0 & m32)
        k0 = (k0 + _BUMP0) & _M32
        k1 = (k1 + _BUMP1) & _M32
    return x0, x1, x2, x3


# ---------------------------------------------------------------------------------------------
# Score modifiers (kernels/spec/modifiers.cc)
# ---------------------------------------------------------------------------------------------


def alibi_slopes(schedule, num_heads, harmonic_base=1.0):
    """Slope of every output head: "geometric" 2^(-8(h+1)/n) for n a power of two, else the
    slopes of the largest power of two m < n followed by every other slope of the 2m schedule;
    "harmonic" harmonic_base / (h + 1)."""
    if schedule == "harmonic":
        return [harmonic_base / (h + 1) for h in range(num_heads)]
    if schedule != "geometric":
        raise ValueError(f"unknown ALiBi schedule {schedule!r}")
    m = 1
    while m * 2 <= num_heads:
        m *= 2
    slopes = [2.0 ** (-8.0 * (h + 1) / m) for h in range(m)]
    slopes += [2.0 ** (-8.0 * (2 * k + 1) / (2 * m)) for k in range(num_heads - m)]
    return slopes


def make_score_mod(slopes=None, cap=None, tanh=None, offset=0):
    """A Flex score_mod(score, b, h, q_idx, kv_idx) applying ALiBi (score += slopes[h] * (j - i'),
    i' = i + offset) then softcap (cap * tanh(score / cap)), in the order of §4; `score` is the
    scaled dot product. `slopes` is indexable by the head (a tensor on the GPU for Flex, a numpy
    array here), `tanh` the array library's tanh. None when there is nothing to apply."""
    if slopes is None and cap is None:
        return None
    if cap is not None and tanh is None:
        raise ValueError("softcap needs the array library's tanh")
    if slopes is not None and cap is not None:
        if offset:
            def alibi_softcap(score, b, h, q_idx, kv_idx):
                score = score + slopes[h] * (kv_idx - q_idx - offset)
                return cap * tanh(score / cap)
        else:
            def alibi_softcap(score, b, h, q_idx, kv_idx):
                score = score + slopes[h] * (kv_idx - q_idx)
                return cap * tanh(score / cap)
        return alibi_softcap
    if slopes is not None:
        if offset:
            def alibi(score, b, h, q_idx, kv_idx):
                return score + slopes[h] * (kv_idx - q_idx - offset)
        else:
            def alibi(score, b, h, q_idx, kv_idx):
                return score + slopes[h] * (kv_idx - q_idx)
        return alibi

    def softcap(score, b, h, q_idx, kv_idx):
        return cap * tanh(score / cap)
    return softcap


def causal_mask_mod(b, h, q_idx, kv_idx):
    """Flex mask_mod of the causal mask with S_q = S_kv (module level, so torch.compile sees the
    same function object every time and reuses its compiled kernels)."""
    return q_idx >= kv_idx


def make_table_mask_mod(table, bq, bk, causal, offset=0):
    """A Flex mask_mod looking up a selected-block table [B', H', R, C] (B', H' 1 or full) at
    (q_idx // bq, kv_idx // bk), intersected with causal (kv_idx <= q_idx + offset) when asked."""
    per_b, per_h = table.shape[0] > 1, table.shape[1] > 1
    if per_b and per_h:
        def lookup(b, h, q_idx, kv_idx):
            return table[b, h, q_idx // bq, kv_idx // bk]
    elif per_b:
        t = table[:, 0]

        def lookup(b, h, q_idx, kv_idx):
            return t[b, q_idx // bq, kv_idx // bk]
    elif per_h:
        t = table[0]

        def lookup(b, h, q_idx, kv_idx):
            return t[h, q_idx // bq, kv_idx // bk]
    else:
        t = table[0, 0]

        def lookup(b, h, q_idx, kv_idx):
            return t[q_idx // bq, kv_idx // bk]
    if not causal:
        return lookup
    if offset:
        def lookup_causal(b, h, q_idx, kv_idx):
            return lookup(b, h, q_idx, kv_idx) & (kv_idx <= q_idx + offset)
    else:
        def lookup_causal(b, h, q_idx, kv_idx):
            return lookup(b, h, q_idx, kv_idx) & (kv_idx <= q_idx)
    return lookup_causal


# ---------------------------------------------------------------------------------------------
# Block-sparse masks (kernels/spec/mask.h)
# ---------------------------------------------------------------------------------------------


def ceil_div(a, b):
    return -(-a // b)


def block_pair_counts(seq_q, seq_kv, bq, bk, causal):
    """int64 [R, C]: the pairs block (r, c) keeps when selected (clipped to S_q x S_kv; with
    causal, only j <= i + S_kv - S_q)."""
    rows, cols = ceil_div(seq_q, bq), ceil_div(seq_kv, bk)
    r = np.arange(rows, dtype=np.int64)
    c = np.arange(cols, dtype=np.int64)
    height = np.minimum((r + 1) * bq, seq_q) - r * bq          # [R]
    width = np.minimum((c + 1) * bk, seq_kv) - c * bk          # [C]
    if not causal:
        return height[:, None] * width[None, :]
    offset = seq_kv - seq_q
    counts = np.zeros((rows, cols), dtype=np.int64)
    j0 = c * bk
    for k in range(bq):  # row k of every block row at once
        i = r * bq + k                                        # [R]
        valid = (i < seq_q)[:, None]
        kept = np.clip(i[:, None] + offset - j0[None, :] + 1, 0, width[None, :])
        counts += np.where(valid, kept, 0)
    return counts


def mask_pairs(seq_q, seq_kv, causal):
    """Kept pairs per (b, h) of no mask or the causal mask (bottom-right aligned)."""
    if not causal:
        return seq_q * seq_kv
    i = np.arange(seq_q, dtype=np.int64)
    return int(np.clip(i + (seq_kv - seq_q) + 1, 0, seq_kv).sum())


@dataclass
class BlockSelection:
    """Which (query block, kv block) pairs a block mask selects, per (batch, output head):
    `selected` is bool [B', H', R, C] with B' in {1, batch} and H' in {1, heads} (1: the same for
    every batch / head); kept pairs are also intersected with causal when `causal`."""
    seq_q: int
    seq_kv: int
    bq: int
    bk: int
    causal: bool
    selected: np.ndarray

    @property
    def offset(self):
        return self.seq_kv - self.seq_q

    def pair_counts(self):
        return block_pair_counts(self.seq_q, self.seq_kv, self.bq, self.bk, self.causal)

    def kept_pairs(self, batch, heads):
        """Kept (i, j) pairs summed over batch and output heads (WorkCounts.kept_pairs)."""
        per = (self.selected * self.pair_counts()[None, None]).sum(dtype=np.int64)
        scale = (batch if self.selected.shape[0] == 1 else 1) * \
                (heads if self.selected.shape[1] == 1 else 1)
        return int(per) * scale

    def envelope_pairs(self, batch, heads):
        """The pairs of the mask this one thins out: all, or the causal ones."""
        return mask_pairs(self.seq_q, self.seq_kv, self.causal) * batch * heads

    def table(self, b, h):
        return self.selected[b if self.selected.shape[0] > 1 else 0,
                             h if self.selected.shape[1] > 1 else 0]

    def keep_rows(self, b, h, rows):
        """bool [len(rows), S_kv]: whether (i, j) is kept, for query rows `rows` of (b, h)."""
        rows = np.asarray(rows, dtype=np.int64)
        j = np.arange(self.seq_kv, dtype=np.int64)
        keep = self.table(b, h)[rows // self.bq][:, j // self.bk]
        if self.causal:
            keep &= j[None, :] <= rows[:, None] + self.offset
        return keep


def causal_envelope_blocks(seq_q, seq_kv, bq, bk):
    """The blocks (r, c) holding at least one causal pair."""
    counts = block_pair_counts(seq_q, seq_kv, bq, bk, True)
    return [(int(r), int(c)) for r, c in zip(*np.nonzero(counts))]


def explicit_selection(seq_q, seq_kv, bq, bk, density, causal, seed):
    """A seeded random explicit block list: round(density * candidates) blocks (at least one),
    drawn without replacement from every block, or with causal from the blocks holding a causal
    pair. Returns (sorted [(r, c)], BlockSelection with B' = H' = 1)."""
    rows, cols = ceil_div(seq_q, bq), ceil_div(seq_kv, bk)
    if causal:
        candidates = causal_envelope_blocks(seq_q, seq_kv, bq, bk)
    else:
        candidates = [(r, c) for r in range(rows) for c in range(cols)]
    n = min(len(candidates), max(1, int(round(density * len(candidates)))))
    blocks = sorted(random.Random(seed).sample(candidates, n))
    selected = np.zeros((1, 1, rows, cols), dtype=bool)
    for r, c in blocks:
        selected[0, 0, r, c] = True
    return blocks, BlockSelection(seq_q, seq_kv, bq, bk, causal, selected)


def block_distance(seq_q, seq_kv, bq, bk):
    """int64 [R, C]: d = floor((r * bq + S_kv - S_q) / bk) - c."""
    rows, cols = ceil_div(seq_q, bq), ceil_div(seq_kv, bk)
    r = np.arange(rows, dtype=np.int64)
    c = np.arange(cols, dtype=np.int64)
    return ((r * bq + seq_kv - seq_q) // bk)[:, None] - c[None, :]


def keep_probability(d, c_coefficient, alpha):
    """p(d) of §3 for a block distance array: 1 where d <= 0, else min(1, c / (1 + d)^alpha),
    each distinct value computed with Python's pow in double as the server's std::pow does."""
    d = np.asarray(d, dtype=np.int64)
    p = np.ones(d.shape, dtype=np.float64)
    for value in np.unique(d[d > 0]):
        p[d == value] = min(1.0, c_coefficient / math.pow(1.0 + float(value), alpha))
    return p


def probabilistic_selection(batch, heads, seq_q, seq_kv, bq, bk, c_coefficient, alpha, seed):
    """The exact block set of a probabilistic block-sparse mask, per (b, h): block (r, c) is kept
    when d <= 0, else when Philox4x32-10((c, r, h, b), key(seed)) word 0 / 2^32 < p(d); always
    intersected with causal."""
    d = block_distance(seq_q, seq_kv, bq, bk)
    p = keep_probability(d, c_coefficient, alpha)
    rows, cols = d.shape
    b = np.arange(batch, dtype=np.uint64)[:, None, None, None]
    h = np.arange(heads, dtype=np.uint64)[None, :, None, None]
    r = np.arange(rows, dtype=np.uint64)[None, None, :, None]
    c = np.arange(cols, dtype=np.uint64)[None, None, None, :]
    w0 = philox4x32_10_np(c, r, h, b, philox_key(seed))[0]
    drawn = w0.astype(np.float64) / 4294967296.0 < p[None, None]
    selected = (d <= 0)[None, None] | drawn
    return BlockSelection(seq_q, seq_kv, bq, bk, True, selected)


def expected_probabilistic_density(seq, bq, bk, c_coefficient, alpha, _cache={}):
    """Expected kept pairs / causal pairs of a probabilistic mask with S_q = S_kv = seq."""
    key = (seq, bq, bk)
    if key not in _cache:
        counts = block_pair_counts(seq, seq, bq, bk, True)
        _cache.clear()
        _cache[key] = (counts, block_distance(seq, seq, bq, bk), float(counts.sum()))
    counts, d, total = _cache[key]
    p = np.where(d > 0, np.minimum(1.0, c_coefficient /
                                   np.power(1.0 + np.maximum(d, 0).astype(np.float64), alpha)),
                 1.0)
    return float((p * counts).sum()) / total


def solve_probabilistic_c(seq, bq, bk, alpha, target_density):
    """The c_coefficient whose expected density (of the causal pairs) is closest to the target:
    bisection in log(c) over [1e-4, 1e6]; the diagonal band alone sets the lowest reachable."""
    lo, hi = math.log(1e-4), math.log(1e6)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if expected_probabilistic_density(seq, bq, bk, math.exp(mid), alpha) < target_density:
            lo = mid
        else:
            hi = mid
    return float(f"{math.exp(0.5 * (lo + hi)):.6g}")


# ---------------------------------------------------------------------------------------------
# FlexAttention BlockMask tables
# ---------------------------------------------------------------------------------------------

FLEX_BLOCK = 128  # Flex's default sparse block size; its kernels' tiles divide it


@dataclass
class FlexTables:
    """The arrays of BlockMask.from_kv_blocks for a BlockSelection, at Flex's tile size: partial
    tiles (mask_mod applied) and full tiles (no mask_mod), each as (num_blocks [B', H', TR],
    indices [B', H', TR, TC]) int32, listed in ascending order (then the unused ones).
    `mask_mod_kind` is None (no partial tiles), "causal" (only the causal diagonal is partial:
    causal_mask_mod applies) or "table" (fine blocks split tiles: make_table_mask_mod)."""
    kv_num_blocks: np.ndarray
    kv_indices: np.ndarray
    full_kv_num_blocks: np.ndarray
    full_kv_indices: np.ndarray
    tile: int
    mask_mod_kind: object
    seq_q: int
    seq_kv: int
    # The selection [B', H', R, C] padded with unselected blocks to whole tiles, for the "table"
    # mask_mod (Flex evaluates it over whole tiles, past S too).
    table: np.ndarray = None

    def partial_tiles(self):
        return int(self.kv_num_blocks.sum())

    def full_tiles(self):
        return int(self.full_kv_num_blocks.sum())


def _ordered(dense):
    """(num_blocks, indices) of a bool [..., TR, TC] tile map, indices of set tiles first in
    ascending order (as torch's _dense_to_ordered: a stable argsort)."""
    num = dense.sum(axis=-1).astype(np.int32)
    indices = np.argsort(~dense, axis=-1, kind="stable").astype(np.int32)
    return np.ascontiguousarray(num), np.ascontiguousarray(indices)


def flex_tables(selection, tile=FLEX_BLOCK):
    """FlexTables of exactly the selection's kept pairs. The block sizes must divide the tile;
    a tile is full when every in-range pair of it is kept, partial when some are."""
    sel = selection
    if tile % sel.bq or tile % sel.bk:
        raise ValueError(f"blocks {sel.bq}x{sel.bk} do not divide Flex's {tile}x{tile} tiles")
    fr, fc = tile // sel.bq, tile // sel.bk
    rows, cols = sel.selected.shape[-2:]
    trows, tcols = ceil_div(rows, fr), ceil_div(cols, fc)
    counts = np.zeros((trows * fr, tcols * fc), dtype=np.int64)
    counts[:rows, :cols] = sel.pair_counts()
    area = np.zeros_like(counts)
    area[:rows, :cols] = block_pair_counts(sel.seq_q, sel.seq_kv, sel.bq, sel.bk, False)
    chosen = np.zeros(sel.selected.shape[:2] + counts.shape, dtype=bool)
    chosen[..., :rows, :cols] = sel.selected
    kept = (chosen * counts).reshape(chosen.shape[:2] + (trows, fr, tcols, fc)).sum(axis=(3, 5))
    tile_area = area.reshape(trows, fr, tcols, fc).sum(axis=(1, 3))[None, None]
    full = (kept == tile_area) & (tile_area > 0)
    partial = (kept > 0) & ~full
    if not partial.any():
        kind = None
    elif fr == 1 and fc == 1 and sel.causal:
        kind = "causal"  # a selected tile is partial only through the causal diagonal
    else:
        kind = "table"
    kv_num, kv_idx = _ordered(partial)
    full_num, full_idx = _ordered(full)
    return FlexTables(kv_num, kv_idx, full_num, full_idx, tile, kind, sel.seq_q, sel.seq_kv,
                      table=chosen)


def simulate_flex_keep(tables, mask_mod, b, h, rows):
    """bool [len(rows), S_kv]: the pairs Flex attends to for (b, h), from the tables as its kernel
    reads them (full tiles whole, partial tiles through mask_mod); for testing the tables."""
    rows = np.asarray(rows, dtype=np.int64)
    keep = np.zeros((len(rows), tables.seq_kv), dtype=bool)
    bb = b if tables.kv_num_blocks.shape[0] > 1 else 0
    hh = h if tables.kv_num_blocks.shape[1] > 1 else 0
    t = tables.tile
    for n, i in enumerate(rows):
        tr = i // t
        for num, idx, masked in ((tables.full_kv_num_blocks, tables.full_kv_indices, False),
                                 (tables.kv_num_blocks, tables.kv_indices, True)):
            for tc in idx[bb, hh, tr, :num[bb, hh, tr]]:
                j = np.arange(tc * t, min((tc + 1) * t, tables.seq_kv), dtype=np.int64)
                if masked:
                    keep[n, j] = np.asarray(mask_mod(b, h, i, j), dtype=bool)
                else:
                    keep[n, j] = True
    return keep


# ---------------------------------------------------------------------------------------------
# Attention rows, for checking outputs (numpy here, torch on the GPU)
# ---------------------------------------------------------------------------------------------


class NumpyOps:
    """The few array operations attention_rows needs, for numpy."""
    exp = staticmethod(np.exp)
    where = staticmethod(np.where)
    tanh = staticmethod(np.tanh)

    @staticmethod
    def arange(n, like):
        return np.arange(n, dtype=np.int64)

    @staticmethod
    def indices(values, like):
        return np.asarray(values, dtype=np.int64)

    @staticmethod
    def row_max(x):
        return x.max(axis=-1, keepdims=True)

    @staticmethod
    def as_mask(keep, like):
        return np.asarray(keep, dtype=bool)


class TorchOps:
    """The same for torch tensors (on the tensors' device)."""

    def __init__(self, torch):
        self.torch = torch
        self.exp, self.where, self.tanh = torch.exp, torch.where, torch.tanh

    def arange(self, n, like):
        return self.torch.arange(n, device=like.device, dtype=self.torch.int64)

    def indices(self, values, like):
        return self.torch.as_tensor(np.asarray(values, dtype=np.int64), device=like.device)

    def row_max(self, x):
        return self.torch.amax(x, dim=-1, keepdim=True)

    def as_mask(self, keep, like):
        return self.torch.as_tensor(np.asarray(keep, dtype=bool), device=like.device)


def attention_rows(ops, q, k, v, scale, b, h, rows, keep, score_mod=None):
    """Float attention for some query rows of one (b, h): q [n, D_qk] holds rows `rows`, k
    [S_kv, D_qk], v [S_kv, D_v] (float arrays of one library), keep bool [n, S_kv]; the scores
    go through score_mod(score, b, h, q_idx, kv_idx) like Flex's. Rows keeping nothing give
    zeros (§1). Returns [n, D_v]."""
    s = (q @ k.T) * scale
    if score_mod is not None:
        q_idx = ops.indices(rows, s)[:, None]
        kv_idx = ops.arange(k.shape[0], s)[None, :]
        s = score_mod(s, b, h, q_idx, kv_idx)
    keep = ops.as_mask(keep, s)
    s = ops.where(keep, s, -math.inf)
    m = ops.row_max(s)
    m = ops.where(m > -math.inf, m, 0.0)
    p = ops.where(keep, ops.exp(s - m), 0.0)
    denom = p.sum(-1)[:, None]
    denom = ops.where(denom > 0, denom, 1.0)
    return (p @ v) / denom


# ---------------------------------------------------------------------------------------------
# Offline self-checks (no server): run by variants_table.py --selftest
# ---------------------------------------------------------------------------------------------


def _brute_block_selected(kind, b, h, r, c, seq_q, seq_kv, bq, bk, c_coefficient=0.0, alpha=0.0,
                          seed=0, blocks=()):
    """MaskEvaluator::BlockSelected, one block at a time, in plain Python."""
    if kind == "explicit":
        return (r, c) in blocks
    d = (r * bq + seq_kv - seq_q) // bk - c
    if d <= 0:
        return True
    w0 = philox4x32_10((c, r, h, b), philox_key(seed))[0]
    p = min(1.0, c_coefficient / math.pow(1.0 + d, alpha))
    return w0 / 4294967296.0 < p


def offline_checks():
    """[(name, ok, detail)] of the Python mirror against its definitions, without a server."""
    results = []

    def check(name, ok, detail=""):
        results.append((name, bool(ok), detail))

    kat = [((0, 0, 0, 0), (0, 0), (0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8)),
           ((_M32,) * 4, (_M32, _M32), (0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd)),
           ((0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344), (0xa4093822, 0x299f31d0),
            (0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1))]
    for counter, key, want in kat:
        check(f"philox KAT {counter[0]:#x}", philox4x32_10(counter, key) == want)
        # Element 0 of each one-element lane: NumPy 2.3 refuses int() of a 1-element array.
        got = tuple(int(w[0]) for w in philox4x32_10_np(*[np.array([x]) for x in counter], key))
        check(f"philox numpy KAT {counter[0]:#x}", got == want)
    check("philox key split", philox_key(0x0123456789abcdef) == (0x89abcdef, 0x01234567))
    rng = random.Random(7)
    ctr = [[rng.getrandbits(32) for _ in range(64)] for _ in range(4)]
    key = (rng.getrandbits(32), rng.getrandbits(32))
    vec = philox4x32_10_np(*[np.array(x, dtype=np.uint64) for x in ctr], key)
    same = all(tuple(int(w[n]) for w in vec) == philox4x32_10([x[n] for x in ctr], key)
               for n in range(64))
    check("philox numpy == scalar (64 random counters)", same)

    geo = alibi_slopes("geometric", 8)
    check("alibi geometric 8", geo == [2.0 ** -(h + 1) for h in range(8)])
    # 12 heads: the 8 of the power of two, then slopes 0, 2, 4, 6 of the 16-head schedule.
    geo16 = alibi_slopes("geometric", 16)
    check("alibi geometric 12 interpolates",
          alibi_slopes("geometric", 12) == geo + [geo16[0], geo16[2], geo16[4], geo16[6]])
    check("alibi harmonic", alibi_slopes("harmonic", 4, 0.5) == [0.5, 0.25, 0.5 / 3, 0.125])

    for seq_q, seq_kv, bq, bk in ((300, 333, 48, 40), (333, 300, 64, 32), (256, 256, 32, 32),
                                  (100, 100, 128, 128)):
        for causal in (False, True):
            counts = block_pair_counts(seq_q, seq_kv, bq, bk, causal)
            i = np.arange(seq_q)[:, None]
            j = np.arange(seq_kv)[None, :]
            keep = np.ones((seq_q, seq_kv), dtype=bool) if not causal else j <= i + seq_kv - seq_q
            brute = np.zeros_like(counts)
            np.add.at(brute, ((i // bq) * np.ones_like(j), (j // bk) * np.ones_like(i)), keep)
            check(f"pair counts {seq_q}x{seq_kv} {bq}x{bk} causal={causal}",
                  np.array_equal(counts, brute))
            check(f"mask pairs {seq_q}x{seq_kv} causal={causal}",
                  mask_pairs(seq_q, seq_kv, causal) == int(keep.sum()))

    # Probabilistic: the vectorized selection against the one-block-at-a-time definition.
    for (batch, heads, seq_q, seq_kv, bq, bk, cc, alpha, seed) in (
            (2, 3, 300, 333, 48, 40, 1.3, 0.7, 0x1234_5678_9abc_def0),
            (1, 2, 333, 300, 32, 64, 0.4, 1.0, 99), (2, 2, 512, 512, 64, 64, 2.0, 1.5, 5)):
        sel = probabilistic_selection(batch, heads, seq_q, seq_kv, bq, bk, cc, alpha, seed)
        rows, cols = sel.selected.shape[-2:]
        ok = all(sel.selected[b, h, r, c] == _brute_block_selected(
            "prob", b, h, r, c, seq_q, seq_kv, bq, bk, cc, alpha, seed)
            for b in range(batch) for h in range(heads) for r in range(rows)
            for c in range(cols))
        check(f"probabilistic selection {seq_q}x{seq_kv} {bq}x{bk}", ok)
        i = np.arange(seq_q)
        kept = sum(int(sel.keep_rows(b, h, i).sum()) for b in range(batch) for h in range(heads))
        check(f"probabilistic kept pairs {seq_q}x{seq_kv} {bq}x{bk}",
              kept == sel.kept_pairs(batch, heads), f"{kept} vs {sel.kept_pairs(batch, heads)}")

    # Flex tables: what Flex would attend to equals the mask, for tiles split by fine blocks,
    # the causal diagonal, per-(b, h) selections and sequences that are not whole tiles.
    cases = []
    for seq, bq, causal, density in ((512, 128, False, 0.25), (512, 128, True, 0.5),
                                     (512, 64, False, 0.25), (448, 64, True, 0.3),
                                     (384, 32, True, 0.5)):
        cases.append((f"explicit S={seq} b={bq} causal={causal}", 1, 1,
                      explicit_selection(seq, seq, bq, bq, density, causal, seed=seq + bq)[1]))
    cases.append(("probabilistic S=512 b=128", 2, 2,
                  probabilistic_selection(2, 2, 512, 512, 128, 128, 0.8, 1.0, 11)))
    cases.append(("probabilistic S=320 b=32", 1, 2,
                  probabilistic_selection(1, 2, 320, 320, 32, 32, 0.8, 1.0, 12)))
    for name, batch, heads, sel in cases:
        tables = flex_tables(sel)
        if tables.mask_mod_kind == "causal":
            mask_mod = causal_mask_mod
        elif tables.mask_mod_kind == "table":
            mask_mod = make_table_mask_mod(tables.table, sel.bq, sel.bk, sel.causal)
        else:
            mask_mod = None
        rows = np.arange(sel.seq_q)
        ok = all(np.array_equal(simulate_flex_keep(tables, mask_mod, b, h, rows),
                                sel.keep_rows(b, h, rows))
                 for b in range(batch) for h in range(heads))
        check(f"flex tables {name} ({tables.mask_mod_kind}, {tables.partial_tiles()} partial, "
              f"{tables.full_tiles()} full)", ok)
    check("flex tables: 128 blocks without causal have no partial tile",
          flex_tables(explicit_selection(512, 512, 128, 128, 0.5, False, 1)[1]).mask_mod_kind
          is None)

    for target in (0.1, 0.25, 0.5):
        c = solve_probabilistic_c(8192, 128, 128, 1.0, target)
        got = expected_probabilistic_density(8192, 128, 128, c, 1.0)
        check(f"probabilistic c for {target:.0%} at S=8k", abs(got - target) < 0.005,
              f"c={c} expected density {got:.4f}")
    return results
