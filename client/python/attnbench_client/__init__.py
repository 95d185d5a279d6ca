"""attnbench_client: a small Python client of the attnbench gRPC service.

    import attnbench_client as ab
    with ab.Client("localhost:50051") as client:
        record = client.run(batch=1, seq_len=1024, head_dim=64, layout="gqa:8/2",
                            mask="causal", dtype="fp32")
        records = client.sweep({"seq_len": [512, 1024], "layout": ["mha:8", "gqa:8/2"]},
                               batch=1, head_dim=64, dtype="fp32", fan_out=2)
        frame = records.to_pandas()
        # PHASE_BACKWARD: dQ, dK, dV (with O) reassembled from StreamRun.
        result = client.stream_result(batch=1, seq_len=1024, head_dim=64, layout="gqa:8/2",
                                      dtype="bf16", phase="backward",
                                      backward_timing="training_step")
        dq = ab.to_numpy(result.dq)
        # A client-written mask and score modifier (docs/expressions.md).
        record = client.run(batch=1, seq_len=1024, head_dim=64, layout="mha:8", dtype="fp32",
                            mask="causal", mask_mod="doc[q] == doc[kv]",
                            score_mod="s - slopes[h] * (q - kv)",
                            aux={"doc": [i // 256 for i in range(1024)],
                                 "slopes": [2.0 ** -(h + 1) for h in range(8)]})

The generated stubs are importable as attnbench.v1.attnbench_pb2 (also re-exported as `pb`).
"""

from ._stubs import pb, pb_grpc
from .channel import ROUND_ROBIN_SERVICE_CONFIG, channel_options
from .client import Client
from .errors import AttnBenchError
from .records import COLUMNS, Records
from .requests import build_request, split_grid
from .tensors import TENSOR_NAMES, ChunkAssembler, aux_tensor, from_numpy, tensors, to_numpy

__all__ = ["AttnBenchError", "COLUMNS", "ChunkAssembler", "Client", "ROUND_ROBIN_SERVICE_CONFIG",
           "Records", "TENSOR_NAMES", "aux_tensor", "build_request", "channel_options", "from_numpy", "pb",
           "pb_grpc", "split_grid", "tensors", "to_numpy"]
__version__ = "0.1.0"
