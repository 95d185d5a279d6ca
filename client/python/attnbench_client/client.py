"""Client: GetCapabilities, Run and Sweep as plain Python calls returning flat records.

A sweep with fan_out=N > 1 splits its grid along the first axis with more than one value into
one sub-sweep per value and runs up to N of those Sweep calls at once; over a multi-address
target (dns:///..., ipv4:a,b) the channel's round_robin policy sends successive calls to
successive replicas, so a replica that finishes early takes the next value. The results merge
back into one list in grid order, each record carrying the server and device that measured it.
"""

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc

from ._stubs import pb, pb_grpc
from . import records as rec
from . import requests as reqs
from . import tensors as tens
from .channel import call_metadata, make_channel
from .errors import AttnBenchError, status_code_name


class Client:
    """A connection to an attnbench server (or to replicas behind one target).

    target: any gRPC target ("localhost:50051", "dns:///bench:50051", "ipv4:a:p,b:p").
    token: bearer token for a server with --tokens_file; tenant: x-attnbench-tenant for one
    without. tls / root_certificates / private_key / certificate_chain (PEM bytes): TLS and
    mutual TLS. timeout: default deadline of each call in seconds (None: no deadline).
    options: extra gRPC channel arguments, (name, value) pairs.
    """

    def __init__(self, target="localhost:50051", *, token=None, tenant=None, tls=False,
                 root_certificates=None, private_key=None, certificate_chain=None,
                 timeout=None, options=()):
        self.target = target
        self.timeout = timeout
        self.metadata = call_metadata(token, tenant)
        self.channel = make_channel(target, tls=tls, root_certificates=root_certificates,
                                    private_key=private_key, certificate_chain=certificate_chain,
                                    options=options)
        # The raw stub, for calls the wrapper does not cover (StreamRun, ...).
        self.stub = pb_grpc.AttnBenchStub(self.channel)

    def close(self):
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def wait_ready(self, timeout=30.0):
        """Blocks until the channel has a connection; raises AttnBenchError(UNAVAILABLE)."""
        try:
            grpc.channel_ready_future(self.channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise AttnBenchError(grpc.StatusCode.UNAVAILABLE,
                                 f"no connection to {self.target} within {timeout} s") from None

    def _timeout(self, timeout):
        return self.timeout if timeout is None else timeout

    def capabilities(self, *, timeout=None):
        """The server's GetCapabilitiesResponse (backends, devices, limits)."""
        try:
            return self.stub.GetCapabilities(pb.GetCapabilitiesRequest(),
                                             timeout=self._timeout(timeout),
                                             metadata=self.metadata)
        except grpc.RpcError as error:
            raise AttnBenchError.from_rpc_error(error) from None

    def backends(self, *, timeout=None):
        """Names of the server's backends."""
        return [b.name for b in self.capabilities(timeout=timeout).backends]

    def run_result(self, request, *, timeout=None):
        """Sends a pb.RunRequest as it is and returns the pb.RunResult (with return_output, O and
        for phase "backward" dQ, dK, dV inline; see tensors())."""
        try:
            response = self.stub.Run(request, timeout=self._timeout(timeout),
                                     metadata=self.metadata)
        except grpc.RpcError as error:
            raise AttnBenchError.from_rpc_error(error) from None
        return response.result

    def stream_result(self, request=None, *, timeout=None, **workload):
        """Runs one workload through StreamRun and returns its pb.RunResult with the streamed
        tensors put back in place: result.output, and for phase "backward" result.dq, .dk and
        .dv (scope "layer": result.dx, .dw_q, .dw_k, .dw_v, .dw_o), whatever their size (Run refuses them over the server's max_inline_output_bytes).

        Keywords as run(); return_output is set unless given. A stream whose chunks do not tile
        their tensors raises AttnBenchError(DATA_LOSS).
        """
        workload.setdefault("return_output", True)
        req = reqs.build_request(request, **workload)
        assembler = tens.ChunkAssembler()
        result = None
        call = self.stub.StreamRun(req, timeout=self._timeout(timeout), metadata=self.metadata)
        try:
            for item in call:
                if item.WhichOneof("item") == "result":
                    result = item.result
                elif result is not None:
                    raise AttnBenchError(grpc.StatusCode.DATA_LOSS,
                                         f"{item.chunk.name} chunk after the result")
                else:
                    assembler.add(item.chunk)
        except grpc.RpcError as error:
            raise AttnBenchError.from_rpc_error(error) from None
        except AttnBenchError:
            call.cancel()  # A malformed stream: stop the server sending the rest.
            raise
        if result is None:
            raise AttnBenchError(grpc.StatusCode.DATA_LOSS, "StreamRun ended without a result")
        for name, tensor in assembler.finish().items():
            getattr(result, name).CopyFrom(tensor)
        return result

    def run(self, request=None, *, timeout=None, **workload):
        """Runs one workload and returns its record (a flat dict, see records.COLUMNS).

        Keywords as build_request: run(batch=1, seq_len=1024, head_dim=64, layout="gqa:8/2",
        mask="causal", dtype="bf16", backend="auto", check="auto", warmup=..., ...). The record
        carries no tensors: run_result() and stream_result() return them.
        """
        req = reqs.build_request(request, **workload)
        return rec.from_result(self.run_result(req, timeout=timeout))

    def sweep(self, axes, request=None, *, continue_on_error=False, spread_devices=False,
              fan_out=1, on_record=None, timeout=None, **workload):
        """Runs a grid and returns its Records, in grid order (point_index 0, 1, ...).

        axes: {"seq_len": [512, 1024], "layout": ["mha:8", "gqa:8/2"], ...} in grid order, the
        first axis slowest (axis names: seq_len, seq_len_q, seq_len_kv, batch, head_dim,
        layout, mask, dtype, backend, phase, kv_compression_heads). The other keywords build
        the base request as in run(). continue_on_error: a point that fails while running
        becomes a record with error_code and error_message instead of ending the sweep.
        fan_out: with N > 1, one sub-sweep per value of the first axis with several values, N
        at a time (see requests.split_grid). on_record: called with each record as it arrives
        (from a worker thread when fan_out > 1).
        A failure raises AttnBenchError whose .records holds the points received before it.
        """
        base = reqs.build_request(request, **workload)
        grid = reqs.normalize_axes(axes)
        if not isinstance(fan_out, int) or fan_out < 1:
            raise ValueError(f"fan_out must be a positive integer, not {fan_out!r}")
        pieces = reqs.split_grid(grid) if fan_out > 1 else [(grid, 0)]
        collected = rec.Records()
        lock = threading.Lock()
        calls = []
        failures = []

        def run_piece(sub_axes, offset):
            sweep = reqs.build_sweep(base, sub_axes, continue_on_error=continue_on_error,
                                     spread_devices=spread_devices)
            expected = reqs.grid_size(sub_axes)
            with lock:
                if failures:  # Another piece failed before this one started: skip it.
                    return
                call = self.stub.Sweep(sweep, timeout=self._timeout(timeout),
                                       metadata=self.metadata)
                calls.append(call)
            try:
                for response in call:
                    if response.total_points != expected:
                        raise AttnBenchError(
                            grpc.StatusCode.INTERNAL,
                            f"sub-sweep of {expected} points reported {response.total_points}")
                    index = offset + response.point_index
                    if response.WhichOneof("outcome") == "error":
                        record = rec.from_error(reqs.point_request(base, grid, index), index,
                                                status_code_name(response.error.code),
                                                response.error.message)
                    else:
                        record = rec.from_result(response.result, index)
                    with lock:
                        collected.append(record)
                    if on_record is not None:
                        on_record(record)
            except grpc.RpcError as error:
                raise AttnBenchError.from_rpc_error(error) from None

        def guarded(sub_axes, offset):
            try:
                run_piece(sub_axes, offset)
            except BaseException as error:  # Stop the other pieces, report the first cause.
                with lock:
                    failures.append(error)
                    for call in calls:
                        call.cancel()

        if len(pieces) == 1:
            guarded(*pieces[0])
        else:
            with ThreadPoolExecutor(max_workers=min(fan_out, len(pieces))) as pool:
                for future in [pool.submit(guarded, *piece) for piece in pieces]:
                    future.result()
        collected.sort(key=lambda r: r["point_index"])
        if failures:
            first = _first_cause(failures)
            if isinstance(first, AttnBenchError):
                raise AttnBenchError(first.code, first.message, collected)
            raise first
        return collected


def _first_cause(failures):
    """The failure that stopped the sweep, not the CANCELLED it caused in the other pieces."""
    for failure in failures:
        if not (isinstance(failure, AttnBenchError)
                and failure.code == grpc.StatusCode.CANCELLED):
            return failure
    return failures[0]
