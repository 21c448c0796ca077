"""Back-pressure: a caller that stops reading makes the relay stop reading upstream."""

from __future__ import annotations

import asyncio
import struct

import h2.config
import h2.connection
import h2.events
import pytest

from sidecar.transport import UpstreamPool, start_listener
from sidecar.transport.downstream import H2Downstream
from sidecar.transport.h2conn import STREAM_WINDOW
from tests.integration.test_transport_support import EchoApp, StaticDispatcher, run

pytestmark = pytest.mark.integration


def test_slow_reader_bounds_what_the_relay_buffers() -> None:
    message = bytes(range(256)) * 4096 * 3  # 3 MiB: far beyond every window
    frame = b"\x00" + struct.pack(">I", len(message)) + message

    with EchoApp() as app:

        async def scenario() -> None:
            pool = UpstreamPool()
            listener = await start_listener(
                "127.0.0.1", 0, StaticDispatcher(app.address), pool, name="flow"
            )
            reader, writer = await asyncio.open_connection(*listener.address)
            client = h2.connection.H2Connection(
                h2.config.H2Configuration(client_side=True, header_encoding=None)
            )
            client.initiate_connection()  # default 64 KiB windows, never widened
            sid = client.get_next_available_stream_id()
            client.send_headers(
                sid,
                [
                    (b":method", b"POST"),
                    (b":scheme", b"http"),
                    (b":path", b"/test.Echo/Big"),
                    (b":authority", b"echo"),
                    (b"content-type", b"application/grpc"),
                    (b"te", b"trailers"),
                ],
            )
            received = bytearray()
            trailers: list[tuple[bytes, bytes]] = []
            pending = memoryview(frame)
            ended = False
            unacked = 0

            async def pump(ack: bool, seconds: float) -> None:
                nonlocal pending, ended, unacked
                if ack and unacked:
                    client.acknowledge_received_data(unacked, sid)
                    unacked = 0
                loop = asyncio.get_running_loop()
                until = loop.time() + seconds
                while loop.time() < until and not ended:
                    while pending:
                        chunk = min(
                            len(pending),
                            client.local_flow_control_window(sid),
                            client.max_outbound_frame_size,
                        )
                        if chunk <= 0:
                            break
                        client.send_data(
                            sid, bytes(pending[:chunk]), end_stream=chunk == len(pending)
                        )
                        pending = pending[chunk:]
                    writer.write(client.data_to_send())
                    try:
                        data = await asyncio.wait_for(reader.read(65536), 0.05)
                    except TimeoutError:
                        continue
                    for ev in client.receive_data(data):
                        if isinstance(ev, h2.events.DataReceived):
                            received.extend(ev.data)
                            if ack:
                                client.acknowledge_received_data(ev.flow_controlled_length, sid)
                            else:
                                unacked += ev.flow_controlled_length
                        elif isinstance(ev, h2.events.TrailersReceived):
                            trailers.extend(ev.headers)
                        elif isinstance(ev, h2.events.StreamEnded):
                            ended = True
                    writer.write(client.data_to_send())

            try:
                await pump(ack=False, seconds=1.5)  # upload everything, read without acking
                assert not pending, "the relay must let the whole request through"
                assert len(received) <= 65535
                (down,) = [c for c in listener._conns if isinstance(c, H2Downstream)]
                (ex,) = down.streams.values()
                buffered = len(ex.resp_buf or b"")
                assert 0 < buffered <= STREAM_WINDOW  # bounded by what upstream may send us
                await pump(ack=True, seconds=10.0)
                assert ended
                assert dict(trailers)[b"grpc-status"] == b"0"
                assert received[5:] == message[::-1]
            finally:
                writer.close()
                await listener.close(grace=0.5)
                await pool.close()

        run(scenario)
