"""Field-by-field mutations of a valid RunRequest, each with the answer it must get.

A mutator changes one thing in a valid request and returns the Expect that holds when it is the
only change (for example `spec.batch_size = -1` must be INVALID_ARGUMENT naming spec.batch_size),
or None when it does not apply to this request. Stacked mutations, and the descriptor-driven
random field writes at the end, can only be judged by the general rules (outcomes.anything()).
The sizes stay either tiny or far over the server's limits: a huge value must be refused, not run.
"""

import math

from attnbench.v1 import attnbench_pb2 as pb

import outcomes
from outcomes import C, Expect, strict
import valid_requests

NONPOSITIVE_32 = [0, -1, -7, -2**31]
NONPOSITIVE_64 = NONPOSITIVE_32 + [-2**63, -2**40]
# Far above every limit (memory, 2^40 elements, head counts): must be refused before running.
HUGE_32 = [2**20 + 1, 2**31 - 1, 2**30]
HUGE_64 = HUGE_32 + [2**31, 2**32, 2**40, 2**62, 2**63 - 1]
BAD_FINITE_POSITIVE = [math.nan, math.inf, -math.inf, 0.0, -0.0, -1.0, -1e308]
ODD_DOUBLES = [math.nan, math.inf, -math.inf, 0.0, -0.0, -1.0, 1e308, -1e308, 5e-324, 1e-300,
               7.5, 1e6]
BAD_ENUMS = [-1, -2**31, 2**31 - 1, 99, 1000]


def _bad_enum(rng, last_valid):
    return rng.choice(BAD_ENUMS + [last_valid + 1])


# --- sizes ---------------------------------------------------------------------------------

def _nonpositive(name, wide):
    def mutate(rng, req):
        setattr(req.spec, name, rng.choice(NONPOSITIVE_64 if wide else NONPOSITIVE_32))
        return strict(f"spec.{name}")
    mutate.__name__ = f"m_nonpositive_{name}"
    return mutate


def _huge(name, wide):
    def mutate(rng, req):
        setattr(req.spec, name, rng.choice(HUGE_64 if wide else HUGE_32))
        return Expect(outcomes.REFUSED)
    mutate.__name__ = f"m_huge_{name}"
    return mutate


# --- enums ---------------------------------------------------------------------------------

def m_dtype(rng, req):
    req.spec.dtype = rng.choice([0] + BAD_ENUMS + [5])
    return strict("spec.dtype")


def m_phase(rng, req):
    req.spec.phase = _bad_enum(rng, pb.PHASE_BACKWARD)
    return strict("spec.phase")


def m_scope(rng, req):
    req.spec.scope = _bad_enum(rng, pb.SCOPE_LAYER)
    return strict("spec.scope")


def m_alibi_schedule(rng, req):
    req.spec.alibi.schedule = _bad_enum(rng, pb.ALIBI_SCHEDULE_HARMONIC)
    return strict("spec.alibi.schedule")


def m_cache_format(rng, req):
    req.spec.kv_cache.format = _bad_enum(rng, pb.CACHE_FORMAT_INT4)
    return strict("spec.kv_cache.format")


def m_band_format(rng, req):
    bands = req.spec.kv_cache.saq_bands
    if not bands:
        return None
    rng.choice(bands).format = _bad_enum(rng, pb.CACHE_FORMAT_INT4)
    return strict("spec.kv_cache.saq_bands[")


# --- FP8 (docs/variants.md §1b) -----------------------------------------------------------------

DTYPES = [pb.DTYPE_FLOAT32, pb.DTYPE_FLOAT16, pb.DTYPE_BFLOAT16, pb.DTYPE_FLOAT8_E4M3]


def _fp8_allowed(req):
    s = req.spec
    return (s.phase in (pb.PHASE_UNSPECIFIED, pb.PHASE_PREFILL) and
            s.scope in (pb.SCOPE_UNSPECIFIED, pb.SCOPE_CORE) and not s.HasField("kv_compression")
            and not s.HasField("inputs"))


def m_output_dtype(rng, req):
    """An output dtype other than the one the dtype allows, or not a dtype at all."""
    allowed = pb.DTYPE_BFLOAT16 if req.spec.dtype == pb.DTYPE_FLOAT8_E4M3 else req.spec.dtype
    req.spec.output_dtype = rng.choice([d for d in DTYPES if d != allowed] +
                                       [_bad_enum(rng, pb.DTYPE_FLOAT8_E4M3)])
    return strict("spec.output_dtype")


def _make_fp8(req):
    """Turns the request into a valid FP8 one where FP8 is defined (§1b); False elsewhere."""
    if not _fp8_allowed(req):
        return False
    req.spec.dtype = pb.DTYPE_FLOAT8_E4M3
    req.spec.ClearField("output_dtype")
    return True


def m_float8_scales(rng, req):
    """FP8 with a scale that is not finite and positive, too large, or one too many."""
    if not _make_fp8(req):
        return None
    f = req.spec.float8
    scales = rng.choice([f.query_scales, f.key_scales, f.value_scales])
    if rng.random() < 0.3:
        scales.extend([0.5, 0.5])  # two scales for SCALE_GRANULARITY_TENSOR
    else:
        scales.append(rng.choice(BAD_FINITE_POSITIVE + [8e35, 3e38]))
    return strict("spec.float8.")


def m_float8_granularity(rng, req):
    if not _make_fp8(req):
        return None
    req.spec.float8.granularity = _bad_enum(rng, pb.SCALE_GRANULARITY_HEAD)
    return strict("spec.float8.granularity")


def m_float8_without_fp8(rng, req):
    """Scales on a dtype that has none: refused, not ignored."""
    if req.spec.dtype == pb.DTYPE_FLOAT8_E4M3:
        return None
    req.spec.float8.key_scales.append(1.0)
    return strict("spec.float8")


def m_cache_mode(rng, req):
    req.measurement.cache_mode = _bad_enum(rng, pb.CACHE_MODE_WARM)
    return strict("measurement.cache_mode")


def m_check_mode(rng, req):
    req.check.mode = _bad_enum(rng, pb.CHECK_MODE_FULL)
    return strict("check.mode")


def m_backward(rng, req):
    # A backend without backward refuses it, one with it runs it (or finds it too large); a decode
    # cache or layer scope makes it a contradiction instead.
    req.spec.phase = pb.PHASE_BACKWARD
    return Expect(frozenset({C.OK, C.FAILED_PRECONDITION, C.INVALID_ARGUMENT,
                             C.RESOURCE_EXHAUSTED}))


def m_backward_timing(rng, req):
    """An unknown timing, or any timing on the forward phase every valid request has."""
    if req.spec.phase == pb.PHASE_BACKWARD:
        return None
    req.measurement.backward_timing = rng.choice(
        [pb.BACKWARD_TIMING_BACKWARD_ONLY, pb.BACKWARD_TIMING_TRAINING_STEP,
         _bad_enum(rng, pb.BACKWARD_TIMING_TRAINING_STEP)])
    return strict("measurement.backward_timing")


def m_grad_output_forward(rng, req):
    """dO on a forward request, of the right shape and values: refused, not ignored."""
    spec = req.spec
    if spec.phase == pb.PHASE_BACKWARD or spec.scope == pb.SCOPE_LAYER:
        return None
    d_v = spec.head_dim_v if spec.HasField("head_dim_v") else spec.head_dim_qk
    shape = [spec.batch_size, spec.seq_len_q, _output_heads(spec.layout), d_v]
    width = {pb.DTYPE_FLOAT32: 4, pb.DTYPE_FLOAT16: 2, pb.DTYPE_BFLOAT16: 2}.get(spec.dtype, 1)
    if min(shape) <= 0 or math.prod(shape) * width > 1 << 20:  # an earlier mutation's sizes
        return None
    t = spec.inputs.grad_output
    t.dtype = spec.dtype
    t.shape.extend(shape)
    t.data = bytes(math.prod(shape) * width)  # zeros: finite
    return strict("spec.inputs")


def _output_heads(layout):
    kind = layout.WhichOneof("layout")
    if kind in ("mha", "mqa"):
        return getattr(layout, kind).num_heads
    if kind in ("gqa", "sqa"):
        return getattr(layout, kind).num_query_heads
    if kind == "symmetric_sqa":
        return layout.symmetric_sqa.baseline_heads // 2
    if kind == "extreme_sqa":
        x = layout.extreme_sqa
        return x.num_query_heads if x.HasField("num_query_heads") else x.baseline_heads // 4
    if kind == "gqkva":
        return layout.gqkva.query_groups * layout.gqkva.kv_groups
    if kind == "explicit_map":
        return len(layout.explicit_map.pairs)
    return 0


# --- head layouts ----------------------------------------------------------------------------

def _layout_int_fields(layout):
    kind = layout.WhichOneof("layout")
    if kind is None:
        return None, None, []
    sub = getattr(layout, kind)
    ints = [f.name for f in sub.DESCRIPTOR.fields if f.type == f.TYPE_INT32 and
            (not f.has_presence or sub.HasField(f.name))]
    return kind, sub, ints


def m_layout_count(rng, req):
    kind, sub, ints = _layout_int_fields(req.spec.layout)
    if not ints:
        return None
    name = rng.choice(ints)
    setattr(sub, name, rng.choice(NONPOSITIVE_32 + [65537, 2**31 - 1]))
    return strict(f"spec.layout.{kind}.")


def m_layout_unset(rng, req):
    req.spec.ClearField("layout")
    return strict("spec.layout")


def m_layout_inconsistent(rng, req):
    """Head counts that contradict each other (divisibility, ordering, parity, map indexes)."""
    layout = req.spec.layout
    choice = rng.choice(["gqa", "sqa_more", "sqa_kv", "ssqa_odd", "xsqa", "map_q", "map_kv",
                         "map_empty", "map_huge"])
    layout.Clear()
    if choice == "gqa":
        layout.gqa.num_query_heads = rng.choice([3, 5, 7])
        layout.gqa.num_kv_heads = rng.choice([2, 4])
        return strict("spec.layout.gqa.num_query_heads")
    if choice == "sqa_more":
        layout.sqa.baseline_heads = 4
        layout.sqa.num_query_heads = rng.choice([4, 8])
        layout.sqa.num_kv_heads = 2
        return strict("spec.layout.sqa.num_query_heads")
    if choice == "sqa_kv":
        layout.sqa.baseline_heads = 8
        layout.sqa.num_query_heads = 2
        layout.sqa.num_kv_heads = 4
        return strict("spec.layout.sqa.num_kv_heads")
    if choice == "ssqa_odd":
        layout.symmetric_sqa.baseline_heads = rng.choice([1, 3, 5])
        return strict("spec.layout.symmetric_sqa.baseline_heads")
    if choice == "xsqa":
        layout.extreme_sqa.baseline_heads = rng.choice([4, 8])
        layout.extreme_sqa.num_query_heads = rng.choice([0, -1, 3, 2**31 - 1])
        return strict("spec.layout.extreme_sqa.num_query_heads")
    m = layout.explicit_map
    m.num_query_heads = 2
    m.num_kv_heads = 1
    if choice == "map_empty":
        return strict("spec.layout.explicit_map.pairs")
    if choice == "map_huge":
        # More pairs than output heads are allowed (65536): refused after reading them all.
        for _ in range(65537 + rng.randint(0, 40000)):
            m.pairs.add()
        return strict("spec.layout.explicit_map.pairs")
    for _ in range(rng.randint(0, 3)):
        m.pairs.add()
    pair = m.pairs.add()
    if choice == "map_q":
        pair.query_head = rng.choice([2, -1, 2**31 - 1, -2**31])
    else:
        pair.kv_head = rng.choice([1, -1, 2**31 - 1, -2**31])
    for _ in range(rng.randint(0, 3)):
        m.pairs.add()
    return strict("spec.layout.explicit_map.pairs[")


# --- floats ----------------------------------------------------------------------------------

def m_scale(rng, req):
    req.spec.scale = rng.choice(BAD_FINITE_POSITIVE)
    return strict("spec.scale")


# Past each dtype's limit for generated inputs (6.7637 * input_scale must stay finite in it).
OVERFLOWING_SCALES = {pb.DTYPE_FLOAT16: [9700.0, 1e5, 1e300]}
OVERFLOWING_SCALES_DEFAULT = [5.1e37, 1e300]  # bfloat16, float32, float8_e4m3


def m_input_scale(rng, req):
    spec = req.spec
    if not spec.HasField("inputs") and rng.random() < 0.3:
        spec.input_scale = rng.choice(
            OVERFLOWING_SCALES.get(spec.dtype, OVERFLOWING_SCALES_DEFAULT))
        return strict("spec.input_scale")
    spec.input_scale = rng.choice(BAD_FINITE_POSITIVE)
    return strict("spec.input_scale")


def m_softcap(rng, req):
    req.spec.softcap.cap = rng.choice(BAD_FINITE_POSITIVE)
    return strict("spec.softcap.cap")


def m_rope_theta(rng, req):
    req.spec.rope.theta = rng.choice(BAD_FINITE_POSITIVE)
    if req.spec.rope.HasField("rotary_dims"):
        req.spec.rope.ClearField("rotary_dims")
    return strict("spec.rope.theta")


def m_rotary_dims(rng, req):
    req.spec.rope.rotary_dims = rng.choice(
        [0, -2, 1, 3, req.spec.head_dim_qk + 2, req.spec.head_dim_qk + 1, 2**31 - 1, -2**31])
    req.spec.rope.ClearField("theta")
    return strict("spec.rope.rotary_dims")


def m_alibi_slope(rng, req):
    alibi = req.spec.alibi
    if rng.random() < 0.5:
        alibi.schedule = pb.ALIBI_SCHEDULE_HARMONIC
        alibi.harmonic_base_slope = rng.choice(BAD_FINITE_POSITIVE)
    else:
        alibi.schedule = rng.choice([pb.ALIBI_SCHEDULE_UNSPECIFIED, pb.ALIBI_SCHEDULE_GEOMETRIC])
        alibi.harmonic_base_slope = rng.choice([1.0, 0.5])
    return strict("spec.alibi.harmonic_base_slope")


def m_prob_mask(rng, req):
    p = req.spec.mask.probabilistic_block_sparse
    p.query_block_tokens = p.query_block_tokens or 16
    p.kv_block_tokens = p.kv_block_tokens or 16
    p.c_coefficient = p.c_coefficient or 1.0
    which = rng.choice(["query_block_tokens", "kv_block_tokens", "c_coefficient", "alpha"])
    if which.endswith("tokens"):
        setattr(p, which, rng.choice(NONPOSITIVE_64))
    elif which == "c_coefficient":
        p.c_coefficient = rng.choice(BAD_FINITE_POSITIVE)
    else:
        p.alpha = rng.choice([math.nan, math.inf, -math.inf, -1.0, -1e-9])
    return strict(f"spec.mask.probabilistic_block_sparse.{which}")


# --- masks -----------------------------------------------------------------------------------

def m_window(rng, req):
    w = req.spec.mask.sliding_window
    side = rng.choice(["left_tokens", "right_tokens"])
    other = "right_tokens" if side == "left_tokens" else "left_tokens"
    if w.HasField(other) and getattr(w, other) < 0:
        w.ClearField(other)
    setattr(w, side, rng.choice(NONPOSITIVE_64[1:]))
    return strict(f"spec.mask.sliding_window.{side}")


def m_block_sparse(rng, req):
    """Block lists that do not fit the grid: the "bitmap of the wrong size" of block sparsity."""
    spec = req.spec
    b = spec.mask.block_sparse
    if b.query_block_tokens <= 0 or b.kv_block_tokens <= 0:
        b.query_block_tokens, b.kv_block_tokens = 16, 16
        del b.blocks[:]
    choice = rng.choice(["q_tokens", "kv_tokens", "row", "col", "many_bad"])
    if choice == "q_tokens":
        b.query_block_tokens = rng.choice(NONPOSITIVE_64)
        return strict("spec.mask.block_sparse.query_block_tokens")
    if choice == "kv_tokens":
        b.kv_block_tokens = rng.choice(NONPOSITIVE_64)
        return strict("spec.mask.block_sparse.kv_block_tokens")
    rows = -(-spec.seq_len_q // b.query_block_tokens)
    cols = -(-spec.seq_len_kv // b.kv_block_tokens)
    if choice == "many_bad":
        # A long list whose last entry is outside the grid.
        for i in range(rng.randint(1000, 60000)):
            blk = b.blocks.add()
            blk.query_block, blk.kv_block = i % rows, i % cols
    blk = b.blocks.add()
    if choice == "col":
        blk.kv_block = rng.choice([cols, cols + 1, -1, 2**62, -2**63])
        return strict("spec.mask.block_sparse.blocks[")
    blk.query_block = rng.choice([rows, rows + 5, -1, 2**63 - 1, -2**63])
    return strict("spec.mask.block_sparse.blocks[")


def m_block_sparse_many_valid(rng, req):
    """Tens of thousands of in-range (repeated) blocks: valid, and must be cheap."""
    spec = req.spec
    spec.mask.Clear()
    b = spec.mask.block_sparse
    b.query_block_tokens = rng.choice([1, 8])
    b.kv_block_tokens = rng.choice([1, 8])
    rows = -(-spec.seq_len_q // b.query_block_tokens)
    cols = -(-spec.seq_len_kv // b.kv_block_tokens)
    for i in range(rng.randint(10000, 60000)):
        blk = b.blocks.add()
        blk.query_block, blk.kv_block = (i * 7) % rows, (i * 13) % cols
    return Expect(outcomes.ANY_ANSWER)


# --- decode cache ----------------------------------------------------------------------------

def m_paging(rng, req):
    spec = req.spec
    cache = spec.kv_cache
    if spec.phase != pb.PHASE_DECODE:
        cache.paging.page_size_tokens = 16
        return strict("spec.kv_cache.paging")
    pages = spec.batch_size * -(-spec.seq_len_kv // 4)
    if pages > 1 << 20:  # an earlier mutation's sizes (stacked): no table to build
        return None
    cache.ClearField("saq_bands")
    cache.ClearField("format")
    paging = cache.paging
    choice = rng.choice(["size", "count", "huge_count", "dup", "range"])
    if choice == "size":
        paging.page_size_tokens = rng.choice(NONPOSITIVE_32)
        return strict("spec.kv_cache.paging.page_size_tokens")
    paging.page_size_tokens = 4
    del paging.page_table[:]
    table = list(range(pages))
    rng.shuffle(table)
    if choice == "count":
        table = table + [0] if rng.random() < 0.5 else table[:-1]
    elif choice == "huge_count":
        table = [i % pages for i in range(rng.randint(50000, 150000))]
    elif choice == "dup" and pages > 1:
        i = rng.randrange(pages)
        table[i] = table[(i + 1) % pages]
    else:
        table[rng.randrange(pages)] = rng.choice([-1, pages, 2**31 - 1, -2**31])
    paging.page_table.extend(table)
    return strict("spec.kv_cache.paging.page_table")


def m_saq(rng, req):
    spec = req.spec
    cache = spec.kv_cache
    if spec.phase != pb.PHASE_DECODE:
        cache.saq_bands.add(num_tokens=4, format=pb.CACHE_FORMAT_INT8)
        return strict("spec.kv_cache.saq_bands")
    cache.ClearField("paging")
    cache.ClearField("saq_bands")
    cache.ClearField("format")
    choice = rng.choice(["format", "tokens", "middle", "with_format", "many"])
    n = rng.randint(2, 5) if choice != "many" else rng.randint(5000, 40000)
    for _ in range(n):
        cache.saq_bands.add(num_tokens=rng.randint(1, 8), format=pb.CACHE_FORMAT_INT8)
    k = rng.randrange(n)
    if choice == "format":
        cache.saq_bands[k].format = pb.CACHE_FORMAT_UNSPECIFIED
        return strict(f"spec.kv_cache.saq_bands[{k}].format")
    if choice == "tokens":
        cache.saq_bands[k].num_tokens = rng.choice(NONPOSITIVE_64)
        return strict(f"spec.kv_cache.saq_bands[{k}].num_tokens")
    if choice == "middle":
        k = rng.randrange(n - 1)
        cache.saq_bands[k].ClearField("num_tokens")
        return strict(f"spec.kv_cache.saq_bands[{k}].num_tokens")
    if choice == "with_format":
        cache.format = rng.choice([pb.CACHE_FORMAT_NATIVE, pb.CACHE_FORMAT_INT4])
        return strict("spec.kv_cache.format")
    # Many valid bands: more bands than tokens, each fine on its own.
    return Expect(outcomes.ANY_ANSWER)


# --- scope -----------------------------------------------------------------------------------

def m_d_model(rng, req):
    spec = req.spec
    if spec.scope == pb.SCOPE_LAYER:
        if rng.random() < 0.5:
            spec.ClearField("d_model")
        else:
            spec.d_model = rng.choice(NONPOSITIVE_32)
    else:
        spec.d_model = rng.choice([1, 64, 2**31 - 1, -1, 0])
    return strict("spec.d_model")


def m_layer_mismatch(rng, req):
    spec = req.spec
    if spec.scope != pb.SCOPE_LAYER:
        return None
    spec.seq_len_kv = spec.seq_len_q + rng.randint(1, 8)
    return strict("spec.seq_len_q")


# --- client tensors --------------------------------------------------------------------------

NON_FINITE_BYTES = {
    pb.DTYPE_FLOAT32: [b"\x00\x00\xc0\x7f", b"\x00\x00\x80\x7f", b"\x00\x00\x80\xff"],
    pb.DTYPE_FLOAT16: [b"\x00\x7e", b"\x00\x7c", b"\x00\xfc", b"\x01\x7c"],
    pb.DTYPE_BFLOAT16: [b"\xc0\x7f", b"\x80\x7f", b"\x80\xff"],
    pb.DTYPE_FLOAT8_E4M3: [b"\x7f", b"\xff"],
}


def m_inputs(rng, req):
    spec = req.spec
    if not spec.HasField("inputs"):
        return None
    name = rng.choice(["query", "key", "value"])
    t = getattr(spec.inputs, name)
    choice = rng.choice(["partial", "dtype", "shape", "huge_shape", "data", "non_finite"])
    if choice == "partial":
        spec.inputs.ClearField(name)
        return strict("spec.inputs")
    if choice == "dtype":
        t.dtype = rng.choice([d for d in (0, 1, 2, 3, 4, 99, -1) if d != spec.dtype])
        return strict(f"spec.inputs.{name}.dtype")
    if choice == "shape":
        i = rng.randrange(len(t.shape))
        t.shape[i] = rng.choice([0, -1, t.shape[i] + 1, 2**62, -2**63])
        return strict(f"spec.inputs.{name}.shape")
    if choice == "huge_shape":
        t.shape.extend(rng.choice([1, 2**40, -1]) for _ in range(rng.randint(1000, 100000)))
        return strict(f"spec.inputs.{name}.shape")
    if choice == "non_finite":
        # One NaN or infinity (fp8 e4m3fn has only NaN), as little-endian bytes of the dtype.
        patterns = NON_FINITE_BYTES.get(spec.dtype)
        if patterns is None or not t.data:
            return None
        bad = rng.choice(patterns)
        k = rng.randrange(len(t.data) // len(bad))
        t.data = t.data[:k * len(bad)] + bad + t.data[(k + 1) * len(bad):]
        return strict(f"spec.inputs.{name}")
    cut = rng.randint(1, len(t.data)) if rng.random() < 0.5 else -rng.randint(1, 64)
    t.data = t.data[:-cut] if cut > 0 else t.data + b"\0" * -cut
    return strict(f"spec.inputs.{name}.data")


def m_inputs_add(rng, req):
    """Client tensors on a request that did not have them: wrong sizes, dtypes or scope."""
    spec = req.spec
    if spec.HasField("inputs"):
        return None
    t = getattr(spec.inputs, rng.choice(["query", "key", "value"]))
    t.dtype = spec.dtype
    t.shape.extend(rng.randint(-3, 70) for _ in range(rng.randint(0, 6)))
    t.data = rng.randbytes(rng.randint(0, 4096))
    return strict("spec.inputs")


# --- request-level fields --------------------------------------------------------------------

def m_iterations(rng, req):
    m = req.measurement
    which = rng.choice(["warmup_iterations", "min_iterations", "max_iterations", "order"])
    if which == "order":
        m.min_iterations = rng.randint(3, valid_requests.MAX_ITERATIONS)
        m.max_iterations = rng.randint(1, m.min_iterations - 1)
        return strict("measurement.max_iterations")
    low = -1 if which == "warmup_iterations" else 0
    value = rng.choice([low, -2**31, valid_requests.MAX_ITERATIONS + 1, 2**31 - 1])
    if which == "min_iterations":
        m.ClearField("max_iterations")
    setattr(m, which, value)
    return strict(f"measurement.{which}")


def m_duration(rng, req):
    m = req.measurement
    if rng.random() < 0.5:
        over = [1e9, 1e308, valid_requests.MAX_DURATION_SECONDS * 2]
        m.max_duration_seconds = rng.choice(BAD_FINITE_POSITIVE + over)
        return strict("measurement.max_duration_seconds")
    m.target_relative_noise = rng.choice([math.nan, math.inf, -math.inf, -1.0, -1e-300])
    return strict("measurement.target_relative_noise")


def m_sampled_rows(rng, req):
    req.check.max_sampled_rows = rng.choice(NONPOSITIVE_32)
    return strict("check.max_sampled_rows")


def m_device_index(rng, req):
    req.device_index = rng.choice([-1, 1, 2, 7, 2**31 - 1, -2**31])
    return strict("device_index")


def junk_string(rng):
    """A backend name that is no backend: control characters, non-ASCII, or very long."""
    choice = rng.choice(["ascii", "unicode", "control", "long", "near"])
    if choice == "ascii":
        return "".join(chr(rng.randint(33, 126)) for _ in range(rng.randint(1, 40)))
    if choice == "unicode":
        return "".join(chr(rng.choice([rng.randint(0x80, 0x7ff), rng.randint(0x800, 0xd7ff),
                                       rng.randint(0x10000, 0x10ffff)]))
                       for _ in range(rng.randint(1, 20)))
    if choice == "control":
        return "".join(chr(rng.randint(0, 31)) for _ in range(rng.randint(1, 20)))
    if choice == "long":
        return "x" * rng.randint(10000, 300000)
    return rng.choice(["cpu_reference ", " auto", "AUTO", "cpu_reference\0", "cuda_flash\n",
                       "cpu", "cpu_reference" * 2])


def m_backend(rng, req):
    req.backend = junk_string(rng)
    return strict("backend")


def m_priority(rng, req):
    req.priority = rng.choice([-1, 10, 11, 2**31 - 1, -2**31])
    return strict("priority")


def m_return_output_big(rng, req):
    """An output over the inline limit: refused for Run, streamed in chunks by StreamRun."""
    spec = req.spec
    if (spec.scope == pb.SCOPE_LAYER or spec.HasField("inputs") or
            spec.kv_cache.HasField("paging")):
        return None
    spec.ClearField("head_dim_v")
    spec.head_dim_qk = 32
    spec.seq_len_q = 64 * 4
    spec.seq_len_kv = 64
    if spec.phase == pb.PHASE_DECODE:
        spec.seq_len_kv = 256
    req.return_output = True
    req.check.mode = pb.CHECK_MODE_OFF
    return Expect(frozenset({C.OK, C.RESOURCE_EXHAUSTED}))


# Each applies alone to any valid request from valid_requests.valid_run_request (or returns None).
STRICT_MUTATORS = [
    _nonpositive("batch_size", True), _nonpositive("seq_len_q", True),
    _nonpositive("seq_len_kv", True), _nonpositive("head_dim_qk", False),
    _nonpositive("head_dim_v", False),
    m_dtype, m_phase, m_scope, m_alibi_schedule, m_cache_format, m_band_format, m_cache_mode,
    m_check_mode, m_layout_count, m_layout_unset, m_layout_inconsistent, m_scale, m_input_scale,
    m_softcap, m_rope_theta, m_rotary_dims, m_alibi_slope, m_prob_mask, m_window, m_block_sparse,
    m_paging, m_saq, m_d_model, m_layer_mismatch, m_inputs, m_inputs_add, m_iterations,
    m_duration, m_sampled_rows, m_device_index, m_backend, m_priority, m_backward_timing,
    m_grad_output_forward, m_output_dtype, m_float8_scales, m_float8_granularity,
    m_float8_without_fp8,
]
# Valid or refused, depending on the rest of the request.
LOOSE_MUTATORS = [
    _huge("batch_size", True), _huge("seq_len_q", True), _huge("seq_len_kv", True),
    _huge("head_dim_qk", False), _huge("head_dim_v", False), m_backward,
    m_block_sparse_many_valid, m_return_output_big,
]


def mutate_once(rng, req):
    """Applies one applicable mutator; returns its Expect and its name."""
    pool = STRICT_MUTATORS + LOOSE_MUTATORS
    while True:
        mutator = rng.choice(pool)
        expect = mutator(rng, req)
        if expect is not None:
            return expect, mutator.__name__


# --- descriptor-driven writes ----------------------------------------------------------------

_INT_EDGES = [0, 1, -1, 2, 7, 8, 9, 10, 64, 65536, 65537, 2**31 - 1, -2**31]
_INT64_EDGES = _INT_EDGES + [2**32, 2**40, 2**62, 2**63 - 1, -2**63]
_UINT_EDGES = [0, 1, 2**32 - 1, 2**63, 2**64 - 1]


def _random_scalar(rng, field):
    t = field.type
    if t == field.TYPE_DOUBLE or t == field.TYPE_FLOAT:
        return rng.choice(ODD_DOUBLES)
    if t == field.TYPE_BOOL:
        return rng.random() < 0.5
    if t == field.TYPE_STRING:
        return junk_string(rng) if rng.random() < 0.7 else rng.choice(["", "auto"])
    if t == field.TYPE_BYTES:
        return rng.randbytes(rng.randint(0, 256))
    if t == field.TYPE_ENUM:
        return rng.choice([v.number for v in field.enum_type.values] + BAD_ENUMS)
    if t in (field.TYPE_UINT64, field.TYPE_UINT32, field.TYPE_FIXED64, field.TYPE_FIXED32):
        limit = 2**64 - 1 if t in (field.TYPE_UINT64, field.TYPE_FIXED64) else 2**32 - 1
        return min(rng.choice(_UINT_EDGES + [rng.getrandbits(64)]), limit)
    if t in (field.TYPE_INT64, field.TYPE_SINT64, field.TYPE_SFIXED64):
        return rng.choice(_INT64_EDGES)
    return rng.choice(_INT_EDGES)


def random_field_write(rng, message, depth=0):
    """Writes an odd value into a random field reached from `message` (descending into
    sub-messages and oneofs), or appends odd elements to a repeated field."""
    fields = message.DESCRIPTOR.fields
    if not fields:  # Mask.None, Mask.Causal, GetCapabilitiesRequest
        message.SetInParent()
        return
    field = rng.choice(fields)
    repeated = field.label == field.LABEL_REPEATED
    if field.message_type is not None:
        if repeated:
            container = getattr(message, field.name)
            for _ in range(rng.choice([1, 1, 2, 5, 300])):
                child = container.add()
                if rng.random() < 0.7:
                    random_field_write(rng, child, depth + 1)
            return
        child = getattr(message, field.name)
        if depth < 6 and rng.random() < 0.85:
            random_field_write(rng, child, depth + 1)
        else:
            child.SetInParent()
        return
    if repeated:
        container = getattr(message, field.name)
        for _ in range(rng.choice([1, 2, 5, 1000])):
            container.append(_random_scalar(rng, field))
        return
    setattr(message, field.name, _random_scalar(rng, field))
