"""A numpy stand-in for the few parts of PyTorch that bench/variants_table.py and
bench/decode_table.py use, so their peer code paths (FlexAttention with score_mod and BlockMask,
SDPA pinned to a backend, the cold-L2 CUDA-event timer, the sampled output check; a decode
cache's dequantization and page gather) run end to end on a machine without torch or a GPU.

Only for tests (tests/e2e/bench_variants_test.py puts this folder on PYTHONPATH,
tests/e2e/bench_decode_test.py on sys.path). Semantics are
the documented ones, computed densely in float32: flex_attention applies score_mod to the scaled
scores and attends to what the BlockMask's full tiles and its partial tiles' mask_mod keep (the
kernel's reading of kv_num_blocks / kv_indices), with enable_gqa mapping query head h to kv head
h // (H_q / H_kv). SDPA's flash backend refuses D_qk != D_v, as FlashAttention-2 does.
FAKE_TORCH_BREAK_FLEX=1 makes flex_attention ignore score_mod, to test that the check sees it.
"""

import contextlib
import enum
import math
import os
import sys
import time
import types

import numpy as np

__version__ = "0.0+numpy-fake"


class Tensor(np.ndarray):
    """An ndarray with the torch methods the script calls."""

    def float(self):
        return np.asarray(self, dtype=np.float32).view(Tensor)

    def transpose(self, dim0, dim1):
        return np.swapaxes(np.asarray(self), dim0, dim1).view(Tensor)

    def fill_(self, value):
        self[...] = value
        return self

    def to(self, dtype):
        return self.astype(dtype)

    def copy_(self, src):
        self[...] = np.asarray(src)
        return self

    def mul_(self, other):
        np.multiply(self, np.asarray(other), out=self, casting="unsafe")
        return self

    def sub_(self, other):
        np.subtract(self, np.asarray(other), out=self, casting="unsafe")
        return self

    def unsqueeze(self, dim):
        return _t(np.expand_dims(np.asarray(self), dim))

    def view(self, *shape, **kwargs):
        """torch's view(*sizes); numpy's view(dtype or type) where numpy itself calls it."""
        if kwargs or not shape or not isinstance(shape[0], (int, tuple, list)):
            return np.ndarray.view(self, *shape, **kwargs)
        return _t(np.reshape(np.asarray(self), shape[0] if len(shape) == 1 and
                             not isinstance(shape[0], int) else shape))

    def flatten(self, start_dim=0, end_dim=-1):
        a = np.asarray(self)
        start, end = start_dim % max(a.ndim, 1), end_dim % max(a.ndim, 1)
        return _t(a.reshape(a.shape[:start] + (-1,) + a.shape[end + 1:]))

    @property
    def device(self):
        return "cuda:0"


bfloat16 = np.dtype(np.float32)  # storage precision does not matter here
float16 = np.dtype(np.float16)
float32 = np.dtype(np.float32)
int8 = np.dtype(np.int8)
int32 = np.dtype(np.int32)
int64 = np.dtype(np.int64)
uint8 = np.dtype(np.uint8)
bool = np.dtype(np.bool_)  # noqa: A001 - torch.bool

_rng = np.random.default_rng(0)


def _t(array):
    return np.asarray(array).view(Tensor)


def randn(*shape, dtype=None, device=None):
    return _t(_rng.standard_normal(shape).astype(dtype or np.float32))


def rand(*shape, dtype=None, device=None):
    return _t(_rng.random(shape).astype(dtype or np.float32))


def randint(low, high, size, dtype=None, device=None):
    return _t(_rng.integers(low, high, size).astype(dtype or np.int64))


def randperm(n, device=None):
    return _t(_rng.permutation(n))


def stack(tensors, dim=0):
    return _t(np.stack([np.asarray(x) for x in tensors], axis=dim))


def index_select(x, dim, index):
    return _t(np.take(np.asarray(x), np.asarray(index), axis=dim))


def empty(*shape, dtype=None, device=None):
    return _t(np.empty(shape, dtype=dtype or np.float32))


def tensor(data, dtype=None, device=None):
    return _t(np.array(data, dtype=dtype))


def as_tensor(data, dtype=None, device=None):
    return _t(np.asarray(data, dtype=dtype))


def arange(n, device=None, dtype=None):
    return _t(np.arange(n, dtype=dtype or np.int64))


def amax(x, dim=None, keepdim=False):
    return _t(np.max(np.asarray(x), axis=dim, keepdims=keepdim))


exp, tanh = np.exp, np.tanh


def where(cond, a, b):
    return _t(np.where(cond, a, b))


def compile(fn, dynamic=None, **kwargs):  # noqa: A001 - torch.compile
    return fn


# -- torch.cuda ---------------------------------------------------------------------------------

cuda = types.ModuleType("torch.cuda")
cuda.is_available = lambda: True
cuda.get_device_properties = lambda index=0: types.SimpleNamespace(
    name="numpy fake GPU", L2_cache_size=1 << 20)
cuda.synchronize = lambda: None
cuda.empty_cache = lambda: None


class _Event:
    def __init__(self, enable_timing=False):
        self.t = None

    def record(self):
        self.t = time.perf_counter()

    def elapsed_time(self, end):
        return max((end.t - self.t) * 1e3, 1e-6)


cuda.Event = _Event

# -- torch._dynamo ---------------------------------------------------------------------------------

_dynamo = types.ModuleType("torch._dynamo")
_dynamo.config = types.SimpleNamespace(cache_size_limit=8, recompile_limit=8,
                                       accumulated_recompile_limit=256)

# -- torch.nn, torch.nn.functional, torch.nn.attention ------------------------------------------

nn = types.ModuleType("torch.nn")
functional = types.ModuleType("torch.nn.functional")
attention = types.ModuleType("torch.nn.attention")
flex_module = types.ModuleType("torch.nn.attention.flex_attention")
nn.functional, nn.attention, attention.flex_attention = functional, attention, flex_module


class SDPBackend(enum.Enum):
    MATH = 0
    FLASH_ATTENTION = 1
    EFFICIENT_ATTENTION = 2
    CUDNN_ATTENTION = 3


_pinned = [None]


@contextlib.contextmanager
def sdpa_kernel(backends):
    previous = _pinned[0]
    _pinned[0] = backends
    try:
        yield
    finally:
        _pinned[0] = previous


attention.SDPBackend, attention.sdpa_kernel = SDPBackend, sdpa_kernel


def _attend(q, k, v, scale, keep=None, score_mod=None, enable_gqa=False):
    q, k, v = (np.asarray(x, dtype=np.float32) for x in (q, k, v))
    batch, hq, sq, dqk = q.shape
    hkv, skv = k.shape[1], k.shape[2]
    if hq != hkv:
        if not enable_gqa:
            raise RuntimeError("query and key head counts differ without enable_gqa")
        k, v = np.repeat(k, hq // hkv, axis=1), np.repeat(v, hq // hkv, axis=1)
    s = np.einsum("bhqd,bhkd->bhqk", q, k) * np.float32(scale if scale else 1 / math.sqrt(dqk))
    if score_mod is not None:
        b = np.arange(batch)[:, None, None, None]
        h = np.arange(hq)[None, :, None, None]
        qi = np.arange(sq)[None, None, :, None]
        kj = np.arange(skv)[None, None, None, :]
        s = np.asarray(score_mod(s, b, h, qi, kj), dtype=np.float32)
    if keep is None:
        keep = np.ones(s.shape, dtype=np.bool_)
    keep = np.broadcast_to(keep, s.shape)
    s = np.where(keep, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    p = np.where(keep, np.exp(s - m), 0)
    denom = p.sum(axis=-1, keepdims=True)
    return _t((p @ v) / np.where(denom > 0, denom, 1))


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, scale=None, enable_gqa=False):
    pinned = _pinned[0]
    if pinned == SDPBackend.FLASH_ATTENTION and query.shape[-1] != value.shape[-1]:
        raise RuntimeError("No available kernel. Aborting execution. (fake flash: D_qk != D_v)")
    sq, skv = query.shape[2], key.shape[2]
    keep = None
    if is_causal:
        keep = np.arange(skv)[None, :] <= np.arange(sq)[:, None]
    return _attend(query, key, value, scale, keep, enable_gqa=enable_gqa)


functional.scaled_dot_product_attention = scaled_dot_product_attention


def noop_mask(b, h, q_idx, kv_idx):
    return np.ones(np.broadcast(q_idx, kv_idx).shape, dtype=np.bool_)


class BlockMask:
    """kv_num_blocks / kv_indices (partial tiles, mask_mod applied) and the full ones."""

    def __init__(self, seq_lengths, kv_num_blocks, kv_indices, full_kv_num_blocks,
                 full_kv_indices, block_size, mask_mod, dense=None):
        self.seq_lengths = tuple(seq_lengths)
        self.kv_num_blocks, self.kv_indices = kv_num_blocks, kv_indices
        self.full_kv_num_blocks, self.full_kv_indices = full_kv_num_blocks, full_kv_indices
        self.BLOCK_SIZE = block_size
        self.mask_mod = mask_mod
        self.dense = dense

    @classmethod
    def from_kv_blocks(cls, kv_num_blocks, kv_indices, full_kv_num_blocks=None,
                       full_kv_indices=None, BLOCK_SIZE=128, mask_mod=None, seq_lengths=None,
                       compute_q_blocks=True):
        if isinstance(BLOCK_SIZE, int):
            BLOCK_SIZE = (BLOCK_SIZE, BLOCK_SIZE)
        for name, a in (("kv_num_blocks", kv_num_blocks), ("kv_indices", kv_indices)):
            if np.asarray(a).dtype != np.int32:
                raise RuntimeError(f"{name} must be int32")
        if np.asarray(kv_indices).ndim != 4 or np.asarray(kv_num_blocks).ndim != 3:
            raise RuntimeError("expected [B, H, rows] counts and [B, H, rows, cols] indices")
        if seq_lengths is None:
            seq_lengths = (kv_indices.shape[-2] * BLOCK_SIZE[0],
                           kv_indices.shape[-1] * BLOCK_SIZE[1])
        return cls(seq_lengths, np.asarray(kv_num_blocks), np.asarray(kv_indices),
                   None if full_kv_num_blocks is None else np.asarray(full_kv_num_blocks),
                   None if full_kv_indices is None else np.asarray(full_kv_indices),
                   BLOCK_SIZE, mask_mod or noop_mask)

    def keep(self, batch, heads):
        """bool [B, H, S_q, S_kv] as the kernel reads the tables."""
        if self.dense is not None:
            return np.broadcast_to(self.dense, (batch, heads) + self.dense.shape[2:])
        sq, skv = self.seq_lengths
        tq, tk = self.BLOCK_SIZE
        out = np.zeros((batch, heads, sq, skv), dtype=np.bool_)
        lists = [(self.kv_num_blocks, self.kv_indices, True)]
        if self.full_kv_num_blocks is not None:
            lists.append((self.full_kv_num_blocks, self.full_kv_indices, False))
        for b in range(batch):
            for h in range(heads):
                bb = b if self.kv_num_blocks.shape[0] > 1 else 0
                hh = h if self.kv_num_blocks.shape[1] > 1 else 0
                for tr in range(self.kv_indices.shape[2]):
                    rows = np.arange(tr * tq, min((tr + 1) * tq, sq))
                    for num, idx, masked in lists:
                        for tc in idx[bb, hh, tr, :num[bb, hh, tr]]:
                            cols = np.arange(tc * tk, min((tc + 1) * tk, skv))
                            if masked:
                                block = self.mask_mod(np.int64(b), np.int64(h), rows[:, None],
                                                      cols[None, :])
                                out[b, h, rows[:, None], cols[None, :]] = np.asarray(block)
                            else:
                                out[b, h, rows[:, None], cols[None, :]] = True
        return out


def create_block_mask(mask_mod, B, H, Q_LEN, KV_LEN, device="cuda", BLOCK_SIZE=128,
                      _compile=False):
    b = np.arange(B or 1)[:, None, None, None]
    h = np.arange(H or 1)[None, :, None, None]
    dense = np.broadcast_to(mask_mod(b, h, np.arange(Q_LEN)[None, None, :, None],
                                     np.arange(KV_LEN)[None, None, None, :]),
                            (B or 1, H or 1, Q_LEN, KV_LEN))
    return BlockMask((Q_LEN, KV_LEN), None, None, None, None, (BLOCK_SIZE, BLOCK_SIZE),
                     mask_mod, dense=np.array(dense))


def flex_attention(query, key, value, score_mod=None, block_mask=None, scale=None,
                   enable_gqa=False, return_lse=False, kernel_options=None):
    if os.environ.get("FAKE_TORCH_BREAK_FLEX") == "1":
        score_mod = None
    keep = None
    if block_mask is not None:
        keep = block_mask.keep(query.shape[0], query.shape[1])
    return _attend(query, key, value, scale, keep, score_mod, enable_gqa)


flex_module.flex_attention = flex_attention
flex_module.create_block_mask = create_block_mask
flex_module.BlockMask = BlockMask
flex_module.noop_mask = noop_mask

for _name, _module in (("torch.cuda", cuda), ("torch._dynamo", _dynamo), ("torch.nn", nn),
                       ("torch.nn.functional", functional), ("torch.nn.attention", attention),
                       ("torch.nn.attention.flex_attention", flex_module)):
    sys.modules[_name] = _module
