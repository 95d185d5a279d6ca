"""Keyword arguments -> RunRequest and SweepRequest, and the grid arithmetic of a sweep.

Arguments left as None leave their proto fields unset, so the server's defaults apply (it needs
at least batch, the sequence lengths, head_dim, a layout and a dtype), as with the CLI. Anything
the keywords do not cover (decode caches, RoPE, block-sparse masks, ...) goes through
`request=`, a pb.RunRequest used as the base.
"""

import math

from ._stubs import pb
from . import names
from . import tensors as tens

# Sweep axis name -> (SweepAxis oneof field, parser of one value).
AXES = {
    "seq_len": ("seq_len", int),
    "seq_len_q": ("seq_len_q", int),
    "seq_len_kv": ("seq_len_kv", int),
    "batch": ("batch_size", int),
    "head_dim": ("head_dim", int),
    "layout": ("layout", names.parse_layout),
    "mask": ("mask", names.parse_mask),
    "dtype": ("dtype", lambda v: names.parse_enum(names.DTYPES, "dtype", v)),
    "backend": ("backend", str),
    "phase": ("phase", lambda v: names.parse_enum(names.PHASES, "phase", v)),
    "kv_compression_heads": ("kv_compression_heads", int),
}


def build_request(request=None, *, batch=None, seq_len=None, seq_len_q=None, seq_len_kv=None,
                  head_dim=None, head_dim_v=None, layout=None, mask=None, dtype=None, phase=None,
                  scope=None, seed=None, scale=None, backend=None, device_index=None,
                  warmup=None, min_iters=None, max_iters=None, max_seconds=None, noise=None,
                  cache=None, samples=None, check=None, priority=None, backward_timing=None,
                  grad_output=None, return_output=None, score_mod=None, mask_mod=None,
                  aux=None, d_model=None, x=None, w_q=None, w_k=None, w_v=None, w_o=None,
                  kv_spectrum_decay=None, kv_spectrum_rank=None, kv_compression_heads=None,
                  deterministic=None, fp8_scales=None, query_scales=None, key_scales=None,
                  value_scales=None):
    """A pb.RunRequest: a copy of `request` (if given) with every non-None keyword applied.

    seq_len sets seq_len_q and seq_len_kv alike; layout is "gqa:8/2" or a HeadLayout; mask is
    "none", "causal", "window:L/R" or a Mask; dtype, phase, scope, cache ("cold"|"warm"),
    check ("off"|"auto"|"full") and backward_timing ("backward_only"|"training_step", for
    phase "backward") take the CLI's short names or the enum values; warmup, min_iters,
    max_iters, max_seconds and noise set the measurement; samples asks for every per-iteration
    time; deterministic asks for the same bits over runs (a backend that cannot refuses with
    FAILED_PRECONDITION, and "auto" picks one that can). grad_output is the client's dO [B, S_q, H_out, D_v] for phase "backward": a pb.Tensor,
    or a numpy float32/float16 array. return_output asks for O (and dQ, dK, dV) in the result.
    score_mod and mask_mod are expression strings (docs/expressions.md), sent as written: the
    server parses and checks them. aux is the tensors they index: a dict (or a list of pairs)
    of name -> pb.Tensor, or anything 1-D or 2-D that numpy.asarray or nested lists give
    (numbers, sent as float32; see tensors.aux_tensor); it replaces any aux of `request`.
    d_model is the layer width for scope "layer"; x (X [B, S, d_model]) and the weights w_q
    [d_model, H_q * D_qk], w_k [d_model, H_kv * D_qk], w_v [d_model, H_kv * D_v] and w_o
    [H_out * D_v, d_model] are the client's layer inputs (x alone, the four weights, or all
    five; a pb.Tensor or a numpy float32/float16 array each), docs/variants.md §6 and §8.
    kv_spectrum_decay (and kv_spectrum_rank) give the generated K and V a decaying
    singular-value spectrum (docs/variants.md §8); kv_compression_heads also runs the problem
    with its KV heads compressed to that many, by PCA and mean-pooling (§5b; results in
    RunResult.kv_compression). For dtype "fp8" (docs/variants.md §1b), fp8_scales ("tensor" or
    "head") sets the scales' granularity, and query_scales, key_scales, value_scales (a number
    or a list: one per head) give scales instead of deriving them from the data; the result's
    spec echoes the scales used.
    """
    req = pb.RunRequest()
    if request is not None:
        req.CopyFrom(request)
    spec = req.spec
    if batch is not None:
        spec.batch_size = batch
    if seq_len is not None:
        spec.seq_len_q = spec.seq_len_kv = seq_len
    if seq_len_q is not None:
        spec.seq_len_q = seq_len_q
    if seq_len_kv is not None:
        spec.seq_len_kv = seq_len_kv
    if head_dim is not None:
        spec.head_dim_qk = head_dim
    if head_dim_v is not None:
        spec.head_dim_v = head_dim_v
    if layout is not None:
        spec.layout.CopyFrom(names.parse_layout(layout))
    if mask is not None:
        spec.mask.CopyFrom(names.parse_mask(mask))
    if dtype is not None:
        spec.dtype = names.parse_enum(names.DTYPES, "dtype", dtype)
    if phase is not None:
        spec.phase = names.parse_enum(names.PHASES, "phase", phase)
    if scope is not None:
        spec.scope = names.parse_enum(names.SCOPES, "scope", scope)
    if seed is not None:
        spec.seed = seed
    if scale is not None:
        spec.scale = scale
    if backend is not None:
        req.backend = backend
    if device_index is not None:
        req.device_index = device_index
    m = req.measurement
    if warmup is not None:
        m.warmup_iterations = warmup
    if min_iters is not None:
        m.min_iterations = min_iters
    if max_iters is not None:
        m.max_iterations = max_iters
    if max_seconds is not None:
        m.max_duration_seconds = max_seconds
    if noise is not None:
        m.target_relative_noise = noise
    if cache is not None:
        m.cache_mode = names.parse_enum(names.CACHE_MODES, "cache mode", cache)
    if samples is not None:
        m.return_samples = bool(samples)
    if deterministic is not None:
        m.deterministic = bool(deterministic)
    if check is not None:
        req.check.mode = names.parse_enum(names.CHECK_MODES, "check mode", check)
    if priority is not None:
        req.priority = priority
    if backward_timing is not None:
        m.backward_timing = names.parse_enum(names.BACKWARD_TIMINGS, "backward timing",
                                             backward_timing)
    if grad_output is not None:
        if not isinstance(grad_output, pb.Tensor):
            grad_output = tens.from_numpy(grad_output)
        spec.inputs.grad_output.CopyFrom(grad_output)
    if d_model is not None:
        spec.d_model = d_model
    for name, value in (("x", x), ("w_q", w_q), ("w_k", w_k), ("w_v", w_v), ("w_o", w_o)):
        if value is not None:
            if not isinstance(value, pb.Tensor):
                value = tens.from_numpy(value)
            getattr(spec.inputs, name).CopyFrom(value)
    if return_output is not None:
        req.return_output = bool(return_output)
    if score_mod is not None:
        spec.score_mod.expression = _expression("score_mod", score_mod)
    if mask_mod is not None:
        spec.mask_mod.expression = _expression("mask_mod", mask_mod)
    if aux is not None:
        items = list(aux.items()) if isinstance(aux, dict) else list(aux)
        seen = set()
        del spec.aux[:]
        for name, value in items:
            if not isinstance(name, str) or not name:
                raise ValueError(f"aux: tensor names are non-empty strings, not {name!r}")
            if name in seen:
                raise ValueError(f"aux: tensor {name!r} given twice")
            seen.add(name)
            tensor = value if isinstance(value, pb.Tensor) else tens.aux_tensor(value, name)
            spec.aux.add(name=name).tensor.CopyFrom(tensor)
    if kv_spectrum_rank is not None and kv_spectrum_decay is None and \
            not spec.HasField("kv_spectrum"):
        raise ValueError("kv_spectrum_rank needs kv_spectrum_decay")
    if kv_spectrum_decay is not None:
        spec.kv_spectrum.decay = kv_spectrum_decay
    if kv_spectrum_rank is not None:
        spec.kv_spectrum.rank = kv_spectrum_rank
    if kv_compression_heads is not None:
        spec.kv_compression.target_kv_heads = kv_compression_heads
    if fp8_scales is not None:
        granularities = {"tensor": pb.SCALE_GRANULARITY_TENSOR, "head": pb.SCALE_GRANULARITY_HEAD}
        if fp8_scales not in granularities:
            raise ValueError(f"fp8_scales: 'tensor' or 'head', not {fp8_scales!r}")
        spec.float8.granularity = granularities[fp8_scales]
    for keyword, values, field in (("query_scales", query_scales, spec.float8.query_scales),
                                   ("key_scales", key_scales, spec.float8.key_scales),
                                   ("value_scales", value_scales, spec.float8.value_scales)):
        if values is None:
            continue
        values = [values] if isinstance(values, (int, float)) else list(values)
        if not values:
            raise ValueError(f"{keyword}: at least one scale")
        del field[:]
        field.extend(float(v) for v in values)
    return req


def _expression(keyword, text):
    # An empty string would leave the message set but say nothing; refuse it here, by name.
    if not isinstance(text, str):
        raise ValueError(f"{keyword}: an expression string, not {type(text).__name__}")
    if not text.strip():
        raise ValueError(f"{keyword}: empty expression")
    return text


def normalize_axes(axes):
    """{"seq_len": [...], "layout": [...]} (or a list of (name, values) pairs) -> a list of
    (name, [parsed values]) in grid order: the first axis slowest, the last fastest."""
    items = list(axes.items()) if isinstance(axes, dict) else list(axes)
    if not items:
        raise ValueError("a sweep needs at least one axis")
    seen = set()
    normalized = []
    for name, values in items:
        if name not in AXES:
            raise ValueError(f"unknown sweep axis {name!r} (expected {'|'.join(AXES)})")
        if name in seen:
            raise ValueError(f"sweep axis {name!r} given twice")
        seen.add(name)
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            raise ValueError(f"sweep axis {name!r} needs a list of values, not {values!r}")
        parse = AXES[name][1]
        parsed = [parse(v) for v in values]
        if not parsed:
            raise ValueError(f"sweep axis {name!r} has no values")
        normalized.append((name, parsed))
    return normalized


def build_sweep(base, axes, *, continue_on_error=False, spread_devices=False):
    """A pb.SweepRequest from a base RunRequest and normalized axes."""
    sweep = pb.SweepRequest(continue_on_error=continue_on_error, spread_devices=spread_devices)
    sweep.base.CopyFrom(base)
    for name, values in axes:
        field = AXES[name][0]
        axis = getattr(sweep.axes.add(), field)
        for value in values:
            if name in ("layout", "mask"):
                axis.values.add().CopyFrom(value)
            else:
                axis.values.append(value)
    return sweep


def grid_size(axes):
    return math.prod(len(values) for _, values in axes)


def point_values(axes, index):
    """The value each axis takes at a grid index (row-major, last axis fastest)."""
    chosen = []
    for name, values in reversed(axes):
        index, position = divmod(index, len(values))
        chosen.append((name, values[position]))
    return list(reversed(chosen))


def point_request(base, axes, index):
    """The RunRequest a sweep runs at a grid index: the base with the point's axis values,
    following the proto's override rules (seq_len sets both lengths; head_dim sets head_dim_v
    too when the base leaves it unset)."""
    req = pb.RunRequest()
    req.CopyFrom(base)
    spec = req.spec
    for name, value in point_values(axes, index):
        if name == "seq_len":
            spec.seq_len_q = spec.seq_len_kv = value
        elif name == "seq_len_q":
            spec.seq_len_q = value
        elif name == "seq_len_kv":
            spec.seq_len_kv = value
        elif name == "batch":
            spec.batch_size = value
        elif name == "head_dim":
            spec.head_dim_qk = value
        elif name == "layout":
            spec.layout.CopyFrom(value)
        elif name == "mask":
            spec.mask.CopyFrom(value)
        elif name == "dtype":
            spec.dtype = value
        elif name == "phase":
            spec.phase = value
        elif name == "backend":
            req.backend = value
        elif name == "kv_compression_heads":
            spec.kv_compression.target_kv_heads = value
    return req


def split_grid(axes):
    """Splits the grid into one sub-grid per value of its first axis with more than one value
    (the whole grid when there is none), as the CLI's --fan_out does.

    Returns (sub_axes, offset) pairs in grid order: point p of a sub-grid is point offset + p
    of the whole grid. In row-major order with the last axis fastest, and every axis before the
    split one single-valued, value i of the split axis starts at i * (product of the later axis
    sizes), and a sub-grid keeps the later axes whole.
    """
    split = next((k for k, (_, values) in enumerate(axes) if len(values) > 1), None)
    if split is None:
        return [(list(axes), 0)]
    name, values = axes[split]
    later = grid_size(axes[split + 1:])
    return [(list(axes[:split]) + [(name, [value])] + list(axes[split + 1:]), i * later)
            for i, value in enumerate(values)]
