"""Small valid requests for the hostile-input fuzzer: the seeds every mutation starts from.

Each builder draws from a random.Random so a case is reproducible from its number alone. The
shapes are tiny (S <= 64, D <= 32, H <= 8) and the measurement settings minimal, so a valid request
finishes in well under a second on the sanitizer build; a mutation that makes a request big must
then be refused by the server's limits rather than run for minutes.
"""

import struct

from attnbench.v1 import attnbench_pb2 as pb

# The limits fuzz_test.py starts the server with; mutations aim at them.
MAX_MESSAGE_BYTES = 1 << 20
MAX_REQUEST_BYTES = 4 << 20
MAX_INLINE_OUTPUT_BYTES = 64 << 10
MAX_SWEEP_POINTS = 8
MAX_ITERATIONS = 8
MAX_DURATION_SECONDS = 2.0

FLOAT_DTYPES = (pb.DTYPE_FLOAT32, pb.DTYPE_FLOAT16, pb.DTYPE_BFLOAT16)
DTYPE_BYTES = {pb.DTYPE_FLOAT32: 4, pb.DTYPE_FLOAT16: 2, pb.DTYPE_BFLOAT16: 2,
               pb.DTYPE_FLOAT8_E4M3: 1}


def set_layout(rng, layout):
    """A valid head layout of at most 8 heads; returns (H_q, H_kv)."""
    kind = rng.choice(["mha", "mqa", "gqa", "sqa", "symmetric_sqa", "extreme_sqa", "gqkva",
                       "explicit_map"])
    layout.Clear()
    if kind == "mha":
        h = rng.choice([1, 2, 4])
        layout.mha.num_heads = h
        return h, h
    if kind == "mqa":
        h = rng.choice([1, 2, 4])
        layout.mqa.num_heads = h
        return h, 1
    if kind == "gqa":
        hq, hkv = rng.choice([(4, 2), (4, 1), (8, 2), (2, 2)])
        layout.gqa.num_query_heads = hq
        layout.gqa.num_kv_heads = hkv
        return hq, hkv
    if kind == "sqa":
        h, hq, hkv = rng.choice([(8, 4, 2), (4, 2, 1), (8, 2, 2)])
        layout.sqa.baseline_heads = h
        layout.sqa.num_query_heads = hq
        layout.sqa.num_kv_heads = hkv
        return hq, hkv
    if kind == "symmetric_sqa":
        h = rng.choice([2, 4, 8])
        layout.symmetric_sqa.baseline_heads = h
        return h // 2, h // 2
    if kind == "extreme_sqa":
        h = rng.choice([4, 8])
        layout.extreme_sqa.baseline_heads = h
        hq = h // 4
        if rng.random() < 0.5:
            hq = rng.randint(1, h // 4)
            layout.extreme_sqa.num_query_heads = hq
        return hq, hq
    if kind == "gqkva":
        gq, gkv = rng.choice([(2, 2), (1, 3), (2, 1)])
        layout.gqkva.query_groups = gq
        layout.gqkva.kv_groups = gkv
        return gq, gkv
    hq, hkv = rng.choice([(2, 1), (3, 2), (1, 1)])
    m = layout.explicit_map
    m.num_query_heads = hq
    m.num_kv_heads = hkv
    for _ in range(rng.randint(1, 4)):
        pair = m.pairs.add()
        pair.query_head = rng.randrange(hq)
        pair.kv_head = rng.randrange(hkv)
    return hq, hkv


def set_mask(rng, spec):
    """A valid mask for the spec's sequence lengths."""
    mask = spec.mask
    mask.Clear()
    kind = rng.choice(["unset", "none", "causal", "window", "block", "prob"])
    if kind == "none":
        mask.none.SetInParent()
    elif kind == "causal":
        mask.causal.SetInParent()
    elif kind == "window":
        mask.sliding_window.SetInParent()
        if rng.random() < 0.7:
            mask.sliding_window.left_tokens = rng.randint(0, 32)
        if rng.random() < 0.5:
            mask.sliding_window.right_tokens = rng.randint(0, 8)
    elif kind == "block":
        b = mask.block_sparse
        b.query_block_tokens = rng.choice([8, 16])
        b.kv_block_tokens = rng.choice([8, 16])
        rows = -(-spec.seq_len_q // b.query_block_tokens)
        cols = -(-spec.seq_len_kv // b.kv_block_tokens)
        for _ in range(rng.randint(0, 6)):
            blk = b.blocks.add()
            blk.query_block = rng.randrange(rows)
            blk.kv_block = rng.randrange(cols)
        b.intersect_causal = rng.random() < 0.5
    elif kind == "prob":
        p = mask.probabilistic_block_sparse
        p.query_block_tokens = rng.choice([8, 16])
        p.kv_block_tokens = rng.choice([8, 16])
        p.c_coefficient = rng.choice([0.5, 1.0, 4.0])
        p.alpha = rng.choice([0.0, 1.0, 2.5])
        p.seed = rng.getrandbits(64)


def set_modifiers(rng, spec):
    if rng.random() < 0.2:
        spec.rope.SetInParent()
        if rng.random() < 0.5:
            spec.rope.theta = rng.choice([10000.0, 500000.0, 2.0])
        if rng.random() < 0.5:
            spec.rope.rotary_dims = rng.choice([2, spec.head_dim_qk])
    if rng.random() < 0.2:
        spec.alibi.SetInParent()
        if rng.random() < 0.5:
            spec.alibi.schedule = pb.ALIBI_SCHEDULE_HARMONIC
            if rng.random() < 0.5:
                spec.alibi.harmonic_base_slope = rng.choice([0.5, 1.0, 2.0])
        elif rng.random() < 0.5:
            spec.alibi.schedule = pb.ALIBI_SCHEDULE_GEOMETRIC
    if rng.random() < 0.2:
        spec.softcap.cap = rng.choice([5.0, 30.0, 50.0])
    if rng.random() < 0.1:
        spec.scale = rng.choice([0.125, 0.5, 1.0])
    if rng.random() < 0.1:
        spec.input_scale = rng.choice([0.5, 2.0])


def set_decode_cache(rng, spec):
    cache = spec.kv_cache
    choice = rng.choice(["native", "paged", "int8", "int4", "saq"])
    if choice == "paged":
        page = rng.choice([4, 16])
        cache.paging.page_size_tokens = page
        if rng.random() < 0.5:
            pages = spec.batch_size * -(-spec.seq_len_kv // page)
            table = list(range(pages))
            rng.shuffle(table)
            cache.paging.page_table.extend(table)
    elif choice == "int8":
        cache.format = pb.CACHE_FORMAT_INT8
    elif choice == "int4":
        cache.format = pb.CACHE_FORMAT_INT4
    elif choice == "saq":
        for fmt in rng.sample([pb.CACHE_FORMAT_NATIVE, pb.CACHE_FORMAT_INT8,
                               pb.CACHE_FORMAT_INT4], rng.randint(1, 3)):
            band = cache.saq_bands.add()
            band.num_tokens = rng.choice([4, 16, 100])
            band.format = fmt
        if rng.random() < 0.5:
            cache.saq_bands[-1].ClearField("num_tokens")
    elif rng.random() < 0.5:
        cache.format = pb.CACHE_FORMAT_NATIVE


def float_bytes(rng, count, dtype):
    """count small finite values stored as dtype (little-endian)."""
    if dtype == pb.DTYPE_FLOAT32:
        return struct.pack(f"<{count}f", *(rng.uniform(-2, 2) for _ in range(count)))
    # fp16 and bf16 bit patterns of small normal numbers: exponent field kept mid-range.
    if dtype == pb.DTYPE_FLOAT16:
        words = (((rng.getrandbits(1) << 15) | (rng.randint(12, 16) << 10) | rng.getrandbits(10))
                 for _ in range(count))
    else:
        words = (((rng.getrandbits(1) << 15) | (rng.randint(120, 128) << 7) | rng.getrandbits(7))
                 for _ in range(count))
    return struct.pack(f"<{count}H", *words)


def set_inputs(rng, spec, hq, hkv):
    b, sq, skv = spec.batch_size, spec.seq_len_q, spec.seq_len_kv
    dqk = spec.head_dim_qk
    dv = spec.head_dim_v if spec.HasField("head_dim_v") else dqk
    for name, shape in (("query", [b, sq, hq, dqk]), ("key", [b, skv, hkv, dqk]),
                        ("value", [b, skv, hkv, dv])):
        t = getattr(spec.inputs, name)
        t.dtype = spec.dtype
        t.shape.extend(shape)
        count = 1
        for d in shape:
            count *= d
        t.data = float_bytes(rng, count, spec.dtype)


def valid_run_request(rng):
    """A small RunRequest the server must run (OK)."""
    req = pb.RunRequest()
    req.backend = rng.choice(["", "auto", "cpu_reference", "cpu_reference"])
    spec = req.spec
    spec.batch_size = rng.choice([1, 1, 2])
    spec.head_dim_qk = rng.choice([8, 16, 32])
    if rng.random() < 0.2:
        spec.head_dim_v = rng.choice([8, 16])
    spec.dtype = rng.choice(FLOAT_DTYPES)
    hq, hkv = set_layout(rng, spec.layout)
    kind = rng.choice(["prefill"] * 5 + ["decode"] * 2 + ["layer"])
    if kind == "prefill":
        spec.seq_len_q = rng.choice([1, 5, 16, 33, 64])
        spec.seq_len_kv = rng.choice([spec.seq_len_q, 16, 48])
        if rng.random() < 0.5:
            spec.phase = pb.PHASE_PREFILL
    elif kind == "decode":
        spec.phase = pb.PHASE_DECODE
        spec.seq_len_kv = rng.choice([16, 40, 64])
        spec.seq_len_q = rng.choice([1, 1, 2])
        set_decode_cache(rng, spec)
    else:
        spec.scope = pb.SCOPE_LAYER
        spec.d_model = rng.choice([16, 32])
        spec.seq_len_q = spec.seq_len_kv = rng.choice([8, 16, 32])
    if rng.random() < 0.5:
        spec.scope = spec.scope or pb.SCOPE_CORE
    set_mask(rng, spec)
    set_modifiers(rng, spec)
    spec.seed = rng.getrandbits(64)
    if kind == "prefill" and rng.random() < 0.1:
        set_inputs(rng, spec, hq, hkv)
    m = req.measurement
    m.warmup_iterations = rng.choice([0, 1])
    m.min_iterations = 1
    m.max_iterations = rng.choice([1, 2])
    m.max_duration_seconds = 0.5
    if rng.random() < 0.3:
        m.cache_mode = rng.choice([pb.CACHE_MODE_COLD, pb.CACHE_MODE_WARM])
    m.return_samples = rng.random() < 0.3
    if rng.random() < 0.2:
        m.target_relative_noise = rng.choice([0.0, 0.05])
    req.check.mode = rng.choice([pb.CHECK_MODE_OFF, pb.CHECK_MODE_AUTO, pb.CHECK_MODE_FULL])
    if rng.random() < 0.2:
        req.check.max_sampled_rows = rng.choice([1, 8])
    if rng.random() < 0.2:
        req.device_index = 0
    req.priority = rng.randint(0, 9)
    req.return_output = rng.random() < 0.3
    return req


def valid_axis(rng, axis, kind):
    """A valid sweep axis of 1 to 2 values of the given kind."""
    n = rng.randint(1, 2)
    if kind == "seq_len":
        axis.seq_len.values.extend(rng.sample([8, 16, 24, 32], n))
    elif kind == "batch_size":
        axis.batch_size.values.extend(rng.sample([1, 2], n))
    elif kind == "head_dim":
        axis.head_dim.values.extend(rng.sample([8, 16], n))
    elif kind == "layout":
        for _ in range(n):
            layout = axis.layout.values.add()
            set_layout(rng, layout)
    elif kind == "mask":
        axis.mask.values.add().causal.SetInParent()
        if n > 1:
            axis.mask.values.add().none.SetInParent()
    elif kind == "dtype":
        axis.dtype.values.extend(rng.sample(FLOAT_DTYPES, n))
    elif kind == "backend":
        axis.backend.values.extend(rng.sample(["cpu_reference", "auto", ""], n))
    elif kind == "phase":
        axis.phase.values.extend([pb.PHASE_PREFILL] * n)


def valid_sweep_request(rng):
    """A SweepRequest of at most MAX_SWEEP_POINTS small points the server must run."""
    req = pb.SweepRequest()
    base = req.base
    base.backend = rng.choice(["", "cpu_reference"])
    spec = base.spec
    spec.batch_size = 1
    spec.seq_len_q = spec.seq_len_kv = 16
    spec.head_dim_qk = 8
    spec.dtype = pb.DTYPE_FLOAT32
    spec.layout.mha.num_heads = 2
    spec.seed = rng.getrandbits(64)
    base.measurement.warmup_iterations = 0
    base.measurement.min_iterations = 1
    base.measurement.max_iterations = 1
    base.check.mode = rng.choice([pb.CHECK_MODE_OFF, pb.CHECK_MODE_AUTO])
    # Axes on distinct fields (seq_len and seq_len_q/kv would collide, so only seq_len is used).
    kinds = rng.sample(["seq_len", "batch_size", "head_dim", "layout", "mask", "dtype", "backend",
                        "phase"], rng.randint(0, 3))
    for kind in kinds:
        valid_axis(rng, req.axes.add(), kind)
    req.continue_on_error = rng.random() < 0.5
    req.spread_devices = rng.random() < 0.3
    return req
