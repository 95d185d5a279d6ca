"""The exception every failed call raises: the gRPC status code and the server's message."""

import grpc


class AttnBenchError(Exception):
    """A failed RPC. `code` is a grpc.StatusCode, `code_name` its name ("INVALID_ARGUMENT"),
    `message` the server's message. A failed sweep also carries the `records` that arrived
    before the failure."""

    def __init__(self, code, message, records=None):
        self.code = code
        self.code_name = code.name if isinstance(code, grpc.StatusCode) else str(code)
        self.message = message
        self.records = records if records is not None else []
        super().__init__(f"{self.code_name}: {message}")

    @classmethod
    def from_rpc_error(cls, error, records=None):
        return cls(error.code(), error.details() or "", records)


def status_code_name(number):
    """The name of a google.rpc.Code number (SweepPointError.code), e.g. 8 -> RESOURCE_EXHAUSTED."""
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code.name
    return str(number)
