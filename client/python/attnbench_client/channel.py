"""Channels to one server or to several replicas behind one target.

Any gRPC target works: "host:port", "dns:///host:port" (every address the name resolves to),
"ipv4:10.0.0.1:50051,10.0.0.2:50051" or "ipv6:[::1]:50051,[::1]:50052". The channel uses the
round_robin policy, so successive calls (each sub-sweep of a fan-out is one call) go to
successive replicas; with a single address it behaves like the default pick_first.
"""

import json

import grpc

ROUND_ROBIN_SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


def channel_options(extra=()):
    """The channel arguments the client uses; `extra` (name, value) pairs are appended and win."""
    options = [
        ("grpc.service_config", ROUND_ROBIN_SERVICE_CONFIG),
        # The server's --max_message_bytes bounds what it sends; do not refuse it here.
        ("grpc.max_receive_message_length", -1),
    ]
    options.extend(extra)
    return options


def make_channel(target, *, tls=False, root_certificates=None, private_key=None,
                 certificate_chain=None, options=()):
    """An insecure channel, or a TLS one when `tls` or any PEM argument (bytes) is given."""
    if tls or root_certificates or private_key or certificate_chain:
        credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates,
                                                   private_key=private_key,
                                                   certificate_chain=certificate_chain)
        return grpc.secure_channel(target, credentials, options=channel_options(options))
    return grpc.insecure_channel(target, options=channel_options(options))


def call_metadata(token=None, tenant=None):
    """Bearer token (servers with --tokens_file) and tenant (servers without) as call metadata."""
    metadata = []
    if token:
        metadata.append(("authorization", f"Bearer {token}"))
    if tenant:
        metadata.append(("x-attnbench-tenant", tenant))
    return tuple(metadata)
