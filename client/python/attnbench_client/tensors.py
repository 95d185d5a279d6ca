"""Tensors of a RunResult: O, and for PHASE_BACKWARD dQ, dK, dV (at layer scope Y, and dX and
the weight gradients dW_q, dW_k, dW_v, dW_o).

Run returns them inline (RunResult.output, .dq, .dk, .dv, or .dx, .dw_q, .dw_k, .dw_v, .dw_o)
when the request sets return_output and they fit the server's max_inline_output_bytes together;
StreamRun sends them as TensorChunks named like the fields, "output" first, which ChunkAssembler
puts back together into the same fields.
Every tensor is row-major with little-endian elements of its dtype (pb.Tensor).
"""

import math
import struct

import grpc

from ._stubs import pb
from .errors import AttnBenchError

# RunResult's tensor fields, in the order StreamRun sends them (a run has the core's gradients or
# the layer's, never both).
TENSOR_NAMES = ("output", "dq", "dk", "dv", "dx", "dw_q", "dw_k", "dw_v", "dw_o")


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


def aux_tensor(values, name="aux"):
    """A 1-D or 2-D array of numbers (nested lists, or a numpy array of any real dtype) as a
    DTYPE_FLOAT32 pb.Tensor, for spec.aux: what the CLI's --aux sends. Every value must be
    finite and within float32's range, and integers exact in float32 (|v| <= 2**24), so an
    index or a document id never silently changes; ValueError naming `name` otherwise."""
    if hasattr(values, "tolist"):  # numpy arrays and scalars, without importing numpy
        values = values.tolist()
    if not isinstance(values, (list, tuple)):
        raise ValueError(f"aux {name}: a 1-D or 2-D array of numbers, not {type(values).__name__}")
    if values and all(isinstance(row, (list, tuple)) for row in values):
        shape = [len(values), len(values[0])]
        for i, row in enumerate(values):
            if len(row) != shape[1]:
                raise ValueError(f"aux {name}: row {i} has {len(row)} numbers, row 0 has "
                                 f"{shape[1]} (a 2-D tensor's rows must be as long)")
        flat = [v for row in values for v in row]
    else:
        shape = [len(values)]
        flat = list(values)
    if not flat:
        raise ValueError(f"aux {name}: empty (an aux tensor has at least one element)")
    for i, v in enumerate(flat):
        if isinstance(v, (list, tuple)):
            raise ValueError(f"aux {name}: more than 2 dimensions (an aux tensor has 1 or 2)")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"aux {name}: element {i} is {v!r}, not a number")
        if isinstance(v, int) and abs(v) > 1 << 24:
            raise ValueError(f"aux {name}: element {i} is the integer {v}, not exact in float32 "
                             "(|v| <= 16777216)")
        if not math.isfinite(v):
            raise ValueError(f"aux {name}: element {i} is {v}; aux tensors must be finite")
        if abs(v) > 3.4028234663852886e38:
            raise ValueError(f"aux {name}: element {i} is {v}, outside float32's range")
    return pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=shape,
                     data=struct.pack(f"<{len(flat)}f", *flat))


def _data_loss(message):
    return AttnBenchError(grpc.StatusCode.DATA_LOSS, message)
