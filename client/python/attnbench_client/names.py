"""Short names of the proto's enums and the compact layout and mask syntax, in both directions.

The same spellings as the attnbench CLI (client/names.cc, client/layout_syntax.cc), so a layout
written "gqa:8/2" means the same in a CLI flag, a Python call and a result record.
  layouts: mha:H  mqa:H  gqa:Hq/Hkv  sqa:H/Hq/Hkv  ssqa:H  xsqa:H[/Hq]  gqkva:Gq/Gkv
           explicit:Hq/Hkv/q-k+q-k+...
  masks:   none  causal  window:L/R (an empty side is unbounded)
"""

from ._stubs import pb

DTYPES = {"fp32": pb.DTYPE_FLOAT32, "fp16": pb.DTYPE_FLOAT16, "bf16": pb.DTYPE_BFLOAT16,
          "fp8": pb.DTYPE_FLOAT8_E4M3}
PHASES = {"prefill": pb.PHASE_PREFILL, "decode": pb.PHASE_DECODE,
          "backward": pb.PHASE_BACKWARD}
SCOPES = {"core": pb.SCOPE_CORE, "layer": pb.SCOPE_LAYER}
CACHE_MODES = {"cold": pb.CACHE_MODE_COLD, "warm": pb.CACHE_MODE_WARM}
CHECK_MODES = {"off": pb.CHECK_MODE_OFF, "auto": pb.CHECK_MODE_AUTO, "full": pb.CHECK_MODE_FULL}
BACKWARD_TIMINGS = {"backward_only": pb.BACKWARD_TIMING_BACKWARD_ONLY,
                    "training_step": pb.BACKWARD_TIMING_TRAINING_STEP}


def parse_enum(table, what, value):
    """A short name ("fp16") or the enum's own value (pb.DTYPE_FLOAT16) -> the enum value."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value not in table.values():
            raise ValueError(f"unknown {what} value {value}")
        return value
    if isinstance(value, str) and value in table:
        return table[value]
    raise ValueError(f"unknown {what} {value!r} (expected {'|'.join(table)})")


def enum_name(table, value):
    """The short name of an enum value; "unspecified" for zero or an unknown value."""
    for name, entry in table.items():
        if entry == value:
            return name
    return "unspecified"


def _counts(text, args, low, high):
    parts = args.split("/")
    if not low <= len(parts) <= high:
        need = str(low) if low == high else f"{low} to {high}"
        raise ValueError(f"layout {text!r} needs {need} '/'-separated counts")
    try:
        return [int(part) for part in parts]
    except ValueError:
        raise ValueError(f"layout {text!r}: counts must be integers") from None


def parse_layout(value):
    """"gqa:8/2" (or a pb.HeadLayout, copied) -> pb.HeadLayout."""
    if isinstance(value, pb.HeadLayout):
        return pb.HeadLayout.FromString(value.SerializeToString())
    if not isinstance(value, str):
        raise ValueError(f"a layout is a string like 'gqa:8/2' or a HeadLayout, not {value!r}")
    name, sep, args = value.partition(":")
    if not sep or not args:
        raise ValueError(f"layout {value!r} is not of the form name:counts "
                         "(name one of mha|mqa|gqa|sqa|ssqa|xsqa|gqkva|explicit)")
    layout = pb.HeadLayout()
    if name == "mha":
        layout.mha.num_heads, = _counts(value, args, 1, 1)
    elif name == "mqa":
        layout.mqa.num_heads, = _counts(value, args, 1, 1)
    elif name == "gqa":
        layout.gqa.num_query_heads, layout.gqa.num_kv_heads = _counts(value, args, 2, 2)
    elif name == "sqa":
        sqa = layout.sqa
        sqa.baseline_heads, sqa.num_query_heads, sqa.num_kv_heads = _counts(value, args, 3, 3)
    elif name == "ssqa":
        layout.symmetric_sqa.baseline_heads, = _counts(value, args, 1, 1)
    elif name == "xsqa":
        counts = _counts(value, args, 1, 2)
        layout.extreme_sqa.baseline_heads = counts[0]
        if len(counts) == 2:
            layout.extreme_sqa.num_query_heads = counts[1]
    elif name == "gqkva":
        layout.gqkva.query_groups, layout.gqkva.kv_groups = _counts(value, args, 2, 2)
    elif name == "explicit":
        parts = args.split("/", 2)
        if len(parts) != 3:
            raise ValueError(f"layout {value!r} is not of the form explicit:Hq/Hkv/q-k+q-k+...")
        explicit = layout.explicit_map
        explicit.num_query_heads, explicit.num_kv_heads = _counts(value, "/".join(parts[:2]), 2, 2)
        for pair_text in parts[2].split("+"):
            halves = pair_text.split("-")
            if len(halves) != 2:
                raise ValueError(f"layout {value!r}: head pair {pair_text!r} is not q-k")
            pair = explicit.pairs.add()
            pair.query_head, pair.kv_head = _counts(value, "/".join(halves), 2, 2)
    else:
        raise ValueError(f"unknown layout {name!r} "
                         "(expected mha|mqa|gqa|sqa|ssqa|xsqa|gqkva|explicit)")
    return layout


def layout_to_string(layout):
    kind = layout.WhichOneof("layout")
    if kind == "mha":
        return f"mha:{layout.mha.num_heads}"
    if kind == "mqa":
        return f"mqa:{layout.mqa.num_heads}"
    if kind == "gqa":
        return f"gqa:{layout.gqa.num_query_heads}/{layout.gqa.num_kv_heads}"
    if kind == "sqa":
        s = layout.sqa
        return f"sqa:{s.baseline_heads}/{s.num_query_heads}/{s.num_kv_heads}"
    if kind == "symmetric_sqa":
        return f"ssqa:{layout.symmetric_sqa.baseline_heads}"
    if kind == "extreme_sqa":
        x = layout.extreme_sqa
        if x.HasField("num_query_heads"):
            return f"xsqa:{x.baseline_heads}/{x.num_query_heads}"
        return f"xsqa:{x.baseline_heads}"
    if kind == "gqkva":
        return f"gqkva:{layout.gqkva.query_groups}/{layout.gqkva.kv_groups}"
    if kind == "explicit_map":
        m = layout.explicit_map
        pairs = "+".join(f"{p.query_head}-{p.kv_head}" for p in m.pairs)
        return f"explicit:{m.num_query_heads}/{m.num_kv_heads}/{pairs}"
    return "unset"


def layout_heads(layout):
    """(query heads, key/value heads, output heads) of a layout, per docs/variants.md §2."""
    kind = layout.WhichOneof("layout")
    if kind == "mha":
        h = layout.mha.num_heads
        return h, h, h
    if kind == "mqa":
        h = layout.mqa.num_heads
        return h, 1, h
    if kind == "gqa":
        return layout.gqa.num_query_heads, layout.gqa.num_kv_heads, layout.gqa.num_query_heads
    if kind == "sqa":
        s = layout.sqa
        return s.num_query_heads, s.num_kv_heads, s.num_query_heads
    if kind == "symmetric_sqa":
        h = layout.symmetric_sqa.baseline_heads // 2
        return h, h, h
    if kind == "extreme_sqa":
        x = layout.extreme_sqa
        h = x.num_query_heads if x.HasField("num_query_heads") else x.baseline_heads // 4
        return h, h, h
    if kind == "gqkva":
        g = layout.gqkva
        return g.query_groups, g.kv_groups, g.query_groups * g.kv_groups
    if kind == "explicit_map":
        m = layout.explicit_map
        return m.num_query_heads, m.num_kv_heads, len(m.pairs)
    return None, None, None


def parse_mask(value):
    """"none", "causal", "window:L/R" (or a pb.Mask, copied) -> pb.Mask."""
    if isinstance(value, pb.Mask):
        return pb.Mask.FromString(value.SerializeToString())
    mask = pb.Mask()
    if value == "none":
        mask.none.SetInParent()
    elif value == "causal":
        mask.causal.SetInParent()
    elif isinstance(value, str) and value.startswith("window:") and value.count("/") == 1:
        left, right = value[len("window:"):].split("/")
        mask.sliding_window.SetInParent()
        try:
            if left:
                mask.sliding_window.left_tokens = int(left)
            if right:
                mask.sliding_window.right_tokens = int(right)
        except ValueError:
            raise ValueError(f"mask {value!r}: window sides must be integers") from None
    else:
        raise ValueError(f"unknown mask {value!r} (expected none|causal|window:L/R, or a "
                         "Mask message for the block-sparse masks)")
    return mask


def mask_to_string(mask):
    kind = mask.WhichOneof("kind")
    if kind == "causal":
        return "causal"
    if kind == "sliding_window":
        w = mask.sliding_window
        left = str(w.left_tokens) if w.HasField("left_tokens") else ""
        right = str(w.right_tokens) if w.HasField("right_tokens") else ""
        return f"window:{left}/{right}"
    if kind == "block_sparse":
        b = mask.block_sparse
        causal = "+causal" if b.intersect_causal else ""
        return f"block_sparse:{b.query_block_tokens}/{b.kv_block_tokens}{causal}"
    if kind == "probabilistic_block_sparse":
        p = mask.probabilistic_block_sparse
        return f"prob_block_sparse:{p.query_block_tokens}/{p.kv_block_tokens}"
    return "none"
