"""What the relay writes to an upstream for one request, frame by frame.

A raw HTTP/2 server (hyperframe over a real socket) records the frames the
relay sends; a gRPC server pays per frame, so none may be added on the way.
"""

from __future__ import annotations

import asyncio

from hpack import Encoder
from hyperframe.frame import DataFrame, Frame, HeadersFrame, SettingsFrame

from sidecar.transport import UpstreamPool, start_listener
from tests.integration.test_transport_support import StaticDispatcher, run
from tests.unit.transport.test_conformance import GOOD, PREFACE, headers_frame, read_frames

BODY = b"\x00\x00\x00\x00\x03abc"


def _data(sid: int, payload: bytes, end: bool) -> bytes:
    frame = DataFrame(sid, payload)
    if end:
        frame.flags.add("END_STREAM")
    return bytes(frame.serialize())


def _answer(sid: int) -> bytes:
    response = HeadersFrame(sid)
    response.data = Encoder().encode([(b":status", b"200")])
    response.flags.add("END_HEADERS")
    response.flags.add("END_STREAM")
    return bytes(response.serialize())


def test_end_stream_rides_on_the_last_data_frame_upstream() -> None:
    """On a connection already up (no buffering while connecting), DATA+END_STREAM
    from the caller reaches the upstream as one frame, not DATA plus an empty one."""
    seen: list[Frame] = []

    async def scenario() -> None:
        ended = 0
        two_ended = asyncio.Event()

        async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal ended
            await reader.readexactly(len(PREFACE))
            writer.write(bytes(SettingsFrame(0).serialize()))
            loop = asyncio.get_running_loop()
            until = loop.time() + 5.0
            while ended < 2 and loop.time() < until:
                for frame in await read_frames(reader, min(until, loop.time() + 0.05)):
                    seen.append(frame)
                    if frame.stream_id and "END_STREAM" in frame.flags:
                        ended += 1
                        writer.write(_answer(frame.stream_id))
            two_ended.set()
            writer.close()

        server = await asyncio.start_server(upstream, "127.0.0.1", 0)
        address = server.sockets[0].getsockname()[:2]
        pool = UpstreamPool()
        listener = await start_listener(
            "127.0.0.1", 0, StaticDispatcher(address), pool, name="frames"
        )
        try:
            reader, writer = await asyncio.open_connection(*listener.address)
            writer.write(PREFACE + bytes(SettingsFrame(0).serialize()))
            loop = asyncio.get_running_loop()
            for sid in (1, 3):
                writer.write(headers_frame(sid, GOOD, end_stream=False) + _data(sid, BODY, True))
                until = loop.time() + 5.0
                answered = False
                while not answered and loop.time() < until:
                    frames = await read_frames(reader, min(until, loop.time() + 0.05))
                    answered = any(f.stream_id == sid and "END_STREAM" in f.flags for f in frames)
                assert answered, f"no answer on stream {sid}"
            await asyncio.wait_for(two_ended.wait(), 5.0)
            writer.close()
            await writer.wait_closed()
        finally:
            await listener.close(grace=0.5)
            await pool.close()
            server.close()
            await server.wait_closed()

    run(scenario)
    streams = sorted({f.stream_id for f in seen if f.stream_id})
    assert len(streams) == 2, streams
    second = [f for f in seen if f.stream_id == streams[1]]
    kinds = [(type(f).__name__, "END_STREAM" in f.flags) for f in second]
    assert kinds == [("HeadersFrame", False), ("DataFrame", True)], kinds
    assert isinstance(second[1], DataFrame)
    assert second[1].data == BODY
