"""RunResults (and failed sweep points) -> flat dicts, one per run, that load straight into
pandas: `pandas.DataFrame(records)` or `records.to_pandas()`.

Every record has the same keys, COLUMNS, in that order. Measurement columns are None for a
failed sweep point, which instead has error_code (the gRPC status name) and error_message.
"""

from . import names

COLUMNS = (
    # Where it ran.
    "point_index", "backend", "server", "tenant", "device", "device_kind", "device_index",
    # What ran (the normalized spec).
    "layout", "heads", "q_heads", "kv_heads", "mask", "causal", "dtype", "phase", "batch",
    "seq_q", "seq_kv", "head_dim", "head_dim_v",
    # Timing, milliseconds per iteration.
    "iterations", "median_ms", "p10_ms", "p90_ms", "mean_ms", "min_ms", "max_ms", "stdev_ms",
    # Work and rates.
    "flops", "min_bytes", "tflops", "tflops_flash", "gbps", "peak_fraction",
    "bandwidth_fraction", "memory_bound",
    # Correctness against the float64 reference.
    "checked", "rel_error", "max_abs_error", "passed",
    # Server-side time.
    "queue_ms", "wall_ms",
    # A failed sweep point (continue_on_error).
    "error_code", "error_message",
    # NaN and infinite output elements (any fails the check); appended last so that the
    # positions of the older columns hold.
    "non_finite_elements",
    # Backward runs (appended after, for the same reason): what an iteration timed
    # ("backward_only" or "training_step"), and each gradient's own check.
    "backward_timing",
    "dq_rel_error", "dq_max_abs_error", "dq_passed",
    "dk_rel_error", "dk_max_abs_error", "dk_passed",
    "dv_rel_error", "dv_max_abs_error", "dv_passed",
    # Client-written expressions (docs/expressions.md), as the spec carries them; None when
    # there is none. Appended last, for the same reason.
    "score_mod", "mask_mod",
    # SCOPE_LAYER (appended last, for the same reason): the scope ("core" or "layer"), d_model
    # (None at core scope), and the median of each iteration's projections and attention core
    # (RunResult.layer_timing; None at core scope or where the backend does not split).
    "scope", "d_model", "projections_ms", "core_ms",
    # spec.kv_compression (docs/variants.md §5b): the target KV heads and, per method, its
    # errors and its compressed run's median time; None without compression. Appended last.
    "kv_compression_heads",
    "pca_key_error", "pca_value_error", "pca_output_error", "pca_median_ms",
    "mean_pool_key_error", "mean_pool_value_error", "mean_pool_output_error",
    "mean_pool_median_ms",
    # PHASE_BACKWARD at SCOPE_LAYER (appended last, for the same reason): the check of dX and of
    # each weight's gradient; None elsewhere.
    "dx_rel_error", "dx_max_abs_error", "dx_passed",
    "dw_q_rel_error", "dw_q_max_abs_error", "dw_q_passed",
    "dw_k_rel_error", "dw_k_max_abs_error", "dw_k_passed",
    "dw_v_rel_error", "dw_v_max_abs_error", "dw_v_passed",
    "dw_o_rel_error", "dw_o_max_abs_error", "dw_o_passed",
    # A decode from a quantized cache (Correctness.quantization; appended last, for the same
    # reason): rel_error above against the unquantized cache, split into the kernel's own error
    # (against the cache as stored) and the quantization's; and whether the run asked for
    # deterministic results. None where not applicable.
    "kernel_rel_error", "kernel_passed", "quantization_rel_error",
    "deterministic",
)

COMPRESSION_METHODS = ("pca", "mean_pool")

# Gradients a backward run's check reports: dQ, dK, dV at core scope; dX and the weights' at
# layer scope.
GRADIENTS = ("dq", "dk", "dv", "dx", "dw_q", "dw_k", "dw_v", "dw_o")


class Records(list):
    """A list of record dicts with a DataFrame view."""

    def to_pandas(self):
        """A pandas DataFrame with one row per record and COLUMNS as columns (pandas required)."""
        import pandas  # Optional dependency: only this method needs it.
        return pandas.DataFrame(list(self), columns=list(COLUMNS))


def _backward_timing(measurement):
    timing = measurement.backward_timing
    return names.enum_name(names.BACKWARD_TIMINGS, timing) if timing else None


def _gradient_columns(correctness):
    """{dq_rel_error: ..., dq_max_abs_error: ..., dq_passed: ..., ...} of the gradients the
    check compared (the others stay None)."""
    columns = {}
    for check in correctness.tensors:
        if check.name in GRADIENTS:
            columns[f"{check.name}_rel_error"] = check.relative_error
            columns[f"{check.name}_max_abs_error"] = check.max_abs_error
            columns[f"{check.name}_passed"] = check.passed
    return columns


def _compression_columns(result):
    """{kv_compression_heads: ..., pca_key_error: ..., ...} of result.kv_compression."""
    columns = {}
    if result.spec.HasField("kv_compression"):
        columns["kv_compression_heads"] = result.spec.kv_compression.target_kv_heads
    for c in result.kv_compression:
        if c.method in COMPRESSION_METHODS:
            columns[f"{c.method}_key_error"] = c.key_error
            columns[f"{c.method}_value_error"] = c.value_error
            columns[f"{c.method}_output_error"] = c.output_error
            columns[f"{c.method}_median_ms"] = c.timing.median_ms
    return columns


def _spec_columns(spec):
    q_heads, kv_heads, out_heads = names.layout_heads(spec.layout)
    return {
        "layout": names.layout_to_string(spec.layout),
        "heads": out_heads,
        "q_heads": q_heads,
        "kv_heads": kv_heads,
        "mask": names.mask_to_string(spec.mask),
        "causal": spec.mask.WhichOneof("kind") == "causal",
        "dtype": names.enum_name(names.DTYPES, spec.dtype),
        "phase": names.enum_name(names.PHASES, spec.phase or names.PHASES["prefill"]),
        "batch": spec.batch_size,
        "seq_q": spec.seq_len_q,
        "seq_kv": spec.seq_len_kv,
        "head_dim": spec.head_dim_qk,
        "head_dim_v": spec.head_dim_v if spec.HasField("head_dim_v") else spec.head_dim_qk,
        "score_mod": spec.score_mod.expression if spec.HasField("score_mod") else None,
        "mask_mod": spec.mask_mod.expression if spec.HasField("mask_mod") else None,
    }


def _layer_columns(result):
    spec = result.spec
    layer = result.layer_timing if result.HasField("layer_timing") else None
    return {
        "scope": names.enum_name(names.SCOPES, spec.scope),
        "d_model": spec.d_model if spec.HasField("d_model") else None,
        "projections_ms": layer.projections.median_ms if layer is not None else None,
        "core_ms": layer.core.median_ms if layer is not None else None,
    }


def from_result(result, point_index=None):
    """The record of one RunResult."""
    record = dict.fromkeys(COLUMNS)
    record.update(_spec_columns(result.spec))
    if result.head_map:
        record["heads"] = len(result.head_map)
    t, w, r, c = result.timing, result.work, result.throughput, result.correctness
    record.update({
        "point_index": point_index,
        "backend": result.backend,
        "server": result.server,
        "tenant": result.tenant,
        "device": result.device.name,
        "device_kind": result.device.kind,
        "device_index": result.device.index,
        "iterations": t.count,
        "median_ms": t.median_ms,
        "p10_ms": t.p10_ms,
        "p90_ms": t.p90_ms,
        "mean_ms": t.mean_ms,
        "min_ms": t.min_ms,
        "max_ms": t.max_ms,
        "stdev_ms": t.stdev_ms,
        "flops": w.flops + w.projection_flops,
        "min_bytes": w.min_bytes,
        "tflops": r.achieved_tflops,
        "tflops_flash": r.achieved_tflops_flash_convention,
        "gbps": r.achieved_gbps,
        "peak_fraction": r.fraction_of_peak_flops,
        "bandwidth_fraction": r.fraction_of_peak_bandwidth,
        "memory_bound": r.memory_bound,
        "checked": c.checked,
        "rel_error": c.relative_error if c.checked else None,
        "max_abs_error": c.max_abs_error if c.checked else None,
        "passed": c.passed if c.checked else None,
        "queue_ms": result.queue_ms,
        "wall_ms": result.wall_ms,
        "non_finite_elements": result.output_summary.non_finite_elements,
        "backward_timing": _backward_timing(result.measurement),
        "deterministic": result.measurement.deterministic,
    })
    if c.HasField("quantization"):
        q = c.quantization
        record.update({"kernel_rel_error": q.kernel_relative_error,
                       "kernel_passed": q.kernel_passed,
                       "quantization_rel_error": q.quantization_relative_error})
    record.update(_gradient_columns(c))
    record.update(_layer_columns(result))
    record.update(_compression_columns(result))
    return record


def from_error(request, point_index, code_name, message):
    """The record of a sweep point that failed: its workload (from the request the client
    computed for that point, before the server's defaults) and the error."""
    record = dict.fromkeys(COLUMNS)
    record.update(_spec_columns(request.spec))
    record.update({
        "point_index": point_index,
        "backend": request.backend or "auto",
        "error_code": code_name,
        "error_message": message,
        "backward_timing": _backward_timing(request.measurement),
    })
    return record
