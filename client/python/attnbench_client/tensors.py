"""Tensors of a RunResult: O, and for PHASE_BACKWARD dQ, dK, dV.

Run returns them inline (RunResult.output, .dq, .dk, .dv) when the request sets return_output
and they fit the server's max_inline_output_bytes together; StreamRun sends them as TensorChunks
named "output", "dq", "dk", "dv", which ChunkAssembler puts back together into the same fields.
Every tensor is row-major with little-endian elements of its dtype (pb.Tensor).
"""

import grpc

from ._stubs import pb
from .errors import AttnBenchError

# RunResult's tensor fields, in the order StreamRun sends them.
TENSOR_NAMES = ("output", "dq", "dk", "dv")


def tensors(result):
    """{name: pb.Tensor} of the tensors a RunResult holds, in TENSOR_NAMES order."""
    return {name: getattr(result, name) for name in TENSOR_NAMES if result.HasField(name)}


class ChunkAssembler:
    """Reassembles StreamRun's chunks: each tensor's chunks must come in offset order, agree on
    dtype, shape and total, and tile the tensor exactly. Violations raise
    AttnBenchError(DATA_LOSS) naming the tensor."""

    def __init__(self):
        self._parts = {}  # name -> [dtype, shape, total, bytearray]

    def add(self, chunk):
        if chunk.name not in TENSOR_NAMES:
            raise _data_loss(f"unknown tensor {chunk.name!r} in the stream")
        shape = list(chunk.shape)
        part = self._parts.setdefault(chunk.name,
                                      [chunk.dtype, shape, chunk.total_bytes, bytearray()])
        dtype, first_shape, total, data = part
        if (chunk.dtype, shape, chunk.total_bytes) != (dtype, first_shape, total):
            raise _data_loss(f"{chunk.name} chunk at offset {chunk.offset_bytes} describes "
                             f"another tensor than its first")
        if chunk.offset_bytes != len(data):
            raise _data_loss(f"{chunk.name} chunk at offset {chunk.offset_bytes} out of order "
                             f"(expected {len(data)})")
        if len(data) + len(chunk.data) > total:
            raise _data_loss(f"{chunk.name} chunk at offset {chunk.offset_bytes} runs past its "
                             f"total of {total} bytes")
        data.extend(chunk.data)

    def finish(self):
        """{name: pb.Tensor} of every tensor received, each checked whole."""
        out = {}
        for name in TENSOR_NAMES:
            if name not in self._parts:
                continue
            dtype, shape, total, data = self._parts[name]
            if len(data) != total:
                raise _data_loss(f"{name} has {len(data)} bytes, expected {total}")
            out[name] = pb.Tensor(dtype=dtype, shape=shape, data=bytes(data))
        return out


def to_numpy(tensor):
    """A pb.Tensor as a numpy array of its shape (numpy required): float32 for DTYPE_FLOAT32 and
    DTYPE_BFLOAT16 (widened exactly), float16 for DTYPE_FLOAT16."""
    import numpy  # Optional dependency: only this function needs it.
    if tensor.dtype == pb.DTYPE_FLOAT32:
        values = numpy.frombuffer(tensor.data, dtype="<f4")
    elif tensor.dtype == pb.DTYPE_FLOAT16:
        values = numpy.frombuffer(tensor.data, dtype="<f2")
    elif tensor.dtype == pb.DTYPE_BFLOAT16:
        halves = numpy.frombuffer(tensor.data, dtype="<u2").astype("<u4")
        values = (halves << 16).view("<f4")
    else:
        raise ValueError(f"to_numpy: no numpy type for {pb.DType.Name(tensor.dtype)}")
    return values.reshape(tuple(tensor.shape))


def from_numpy(array):
    """A numpy float32 or float16 array as a pb.Tensor of its shape (for grad_output). Other
    dtypes (bfloat16, float8) need a pb.Tensor built from their bytes."""
    import numpy
    array = numpy.asarray(array)
    if array.dtype == numpy.float32:
        dtype, stored = pb.DTYPE_FLOAT32, "<f4"
    elif array.dtype == numpy.float16:
        dtype, stored = pb.DTYPE_FLOAT16, "<f2"
    else:
        raise ValueError(f"from_numpy: float32 or float16 arrays only, not {array.dtype} "
                         "(build a pb.Tensor for bfloat16 or float8)")
    return pb.Tensor(dtype=dtype, shape=list(array.shape),
                     data=numpy.ascontiguousarray(array, dtype=stored).tobytes())


def _data_loss(message):
    return AttnBenchError(grpc.StatusCode.DATA_LOSS, message)
