"""A small asyncio gRPC client over HTTP/2 (`h2`), without grpcio.

Why it exists: the sidecar talks gRPC only to the control daemon (the
discovery stream and registration calls). grpcio costs the sidecar ~11 MB of
RSS at import and more with a live channel (C-core threads and arenas),
which alone breaks its 40 MB budget. DESIGN.md keeps grpcio for our own gRPC
APIs; the measured RSS target is why the sidecar deviates. The control
daemon, the CLI and tests keep grpcio. Messages are the generated protobuf
classes (`skein.v1.*_pb2`), never the `_pb2_grpc` stubs.
"""

from skein.grpcclient.channel import BidiStream, GrpcChannel
from skein.grpcclient.status import RpcError, StatusCode, format_timeout

__all__ = ["BidiStream", "GrpcChannel", "RpcError", "StatusCode", "format_timeout"]
