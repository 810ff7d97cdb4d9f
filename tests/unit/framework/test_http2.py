"""opsync.http2 against an independent implementation: the h2 library's server and hpack's encoder.

HPACK is property-tested both ways (hpack's encoder, Huffman codes and table size changes included, into our
decoder; our encoder into hpack's decoder). The connection is tested against an h2 server on a local socket,
driven event by event: streams sharing it, flow control holding back what nobody reads, resets, GOAWAY, PING in
both directions, header blocks split over CONTINUATION frames, a protocol error; the pool over TLS with and
without ``h2`` in ALPN.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
import subprocess
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import hpack
import pytest
from aiohttp import web
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hypothesis import given, settings
from hypothesis import strategies as st

from opsync import http2, rest
from opsync.client import Client
from opsync.resources import NAMESPACES

E = TypeVar("E", bound=h2.events.Event)

REQUEST = [(":method", "GET"), (":scheme", "https"), (":authority", "api:6443"), (":path", "/api/v1/secrets")]


# HPACK


@given(st.binary(max_size=200))
def test_huffman_decodes_what_the_rfc_code_encodes(data: bytes) -> None:
    assert http2.huffman_decode(HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH).encode(data)) == data


@pytest.mark.parametrize(
    "coded",
    [
        b"\x00",  # "0" (5 zero bits) and 3 bits of padding that are not ones
        b"\xff\xff\xff\xff",  # EOS, which must never be decoded
        b"\x1f\xff",  # "a" (00011) then 11 bits of ones: padding longer than 7 bits
    ],
)
def test_huffman_refuses_bad_padding_and_eos(coded: bytes) -> None:
    with pytest.raises(http2._ProtocolError):
        http2.huffman_decode(coded)


header_names = st.sampled_from(
    [":status", "content-type", "date", "audit-id", "cache-control", "x-kubernetes-pf-flowschema-uid", "x-long"]
)
header_values = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=300)
header_lists = st.lists(st.tuples(header_names, header_values), max_size=8)


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(header_lists, st.booleans(), st.sampled_from([None, 0, 64, 256, 4096]), st.booleans()),
        min_size=1,
        max_size=12,
    )
)
def test_decoder_follows_hpacks_encoder_across_blocks(blocks: list[tuple[Any, bool, int | None, bool]]) -> None:
    encoder, decoder = hpack.Encoder(), http2.HeaderDecoder()
    for headers, huffman, table_size, sensitive in blocks:
        if table_size is not None:
            encoder.header_table_size = table_size  # sent as a size update at the start of the next block
        sent = [hpack.NeverIndexedHeaderTuple(n, v) if sensitive else (n, v) for n, v in headers]
        assert decoder.decode(encoder.encode(sent, huffman=huffman)) == headers


@given(header_lists)
def test_our_encoding_decodes_with_hpack(headers: list[tuple[str, str]]) -> None:
    headers = [*headers, ("authorization", "Bearer token")]
    assert hpack.Decoder().decode(http2.encode_headers(headers)) == headers


def test_authorization_is_sent_never_indexed() -> None:
    (header,) = hpack.Decoder().decode(http2.encode_headers([("authorization", "Bearer t")]))
    assert isinstance(header, hpack.NeverIndexedHeaderTuple)


@pytest.mark.parametrize(
    "block",
    [
        b"\x80",  # index 0
        b"\xbf\x10",  # index 63 with an empty dynamic table
        b"\x3f\xe2\x1f",  # a table size update to 4097, beyond the 4096 announced
        b"\x00\x05ab",  # a name longer than the block
        b"\x0f",  # an integer cut short
    ],
)
def test_decoder_refuses_malformed_blocks(block: bytes) -> None:
    with pytest.raises(http2._ProtocolError):
        http2.HeaderDecoder().decode(block)


# The connection, against h2's server


class H2Server:
    """One server-side connection of the h2 library on a local socket; tests drive it event by event."""

    def __init__(self) -> None:
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        self.events: asyncio.Queue[h2.events.Event] = asyncio.Queue()
        self.muted = False  # nothing reaches the client, not even h2's own PING answers
        self.writer: asyncio.StreamWriter | None = None
        self.bodies: dict[int, bytearray] = {}  # request bodies received, by stream
        self._window = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.conn.initiate_connection()
        self.flush()
        while data := await reader.read(65536):
            for event in self.conn.receive_data(data):
                if isinstance(event, h2.events.WindowUpdated):
                    self._window.set()
                elif isinstance(event, h2.events.DataReceived):
                    self.bodies.setdefault(event.stream_id, bytearray()).extend(event.data)
                    self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                self.events.put_nowait(event)
            self.flush()

    def flush(self) -> None:
        pending = self.conn.data_to_send()
        if not self.muted and self.writer is not None:
            self.writer.write(pending)

    async def event(self, kind: type[E]) -> E:
        async with asyncio.timeout(5):
            while True:
                event = await self.events.get()
                if isinstance(event, kind):
                    return event

    def respond(self, stream_id: int, status: int = 200, headers: Sequence[tuple[str, str]] = ()) -> None:
        self.conn.send_headers(stream_id, [(":status", str(status)), *headers])
        self.flush()

    def data(self, stream_id: int, body: bytes, *, end: bool = False, pad: int | None = None) -> None:
        self.conn.send_data(stream_id, body, end_stream=end, pad_length=pad)
        self.flush()

    async def send_all(self, stream_id: int, body: bytes) -> None:
        """``body`` as the client's windows allow, then the end of the stream."""
        while body:
            window = min(self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size)
            if window == 0:
                self._window.clear()
                await self._window.wait()
                continue
            chunk, body = body[:window], body[window:]
            self.data(stream_id, chunk)
        self.data(stream_id, b"", end=True)


QUICK = http2.HealthCheck(read_idle=0.05, ping_timeout=0.1)


@pytest.fixture
def health_check() -> http2.HealthCheck:
    """The connection's health check: client-go's timers, unless a test parametrizes quicker ones."""
    return http2.HealthCheck()


@pytest.fixture
async def peers(health_check: http2.HealthCheck) -> AsyncIterator[tuple[H2Server, http2.Connection]]:
    server = H2Server()
    listener = await asyncio.start_server(server.serve, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    connection = http2.Connection(reader, writer, "test", health_check)
    yield server, connection
    await connection.close()
    listener.close()


async def request(server: H2Server, connection: http2.Connection) -> tuple[asyncio.Task[http2.Stream], int]:
    """Start a request; returns it and its stream id once the server has it."""
    task = asyncio.create_task(connection.request(REQUEST))
    received = await server.event(h2.events.RequestReceived)
    assert received.headers[:4] == REQUEST
    return task, received.stream_id


async def responded(server: H2Server, connection: http2.Connection) -> tuple[http2.Stream, int]:
    """A request the server has answered (200, no body yet): the stream and its id."""
    task, stream_id = await request(server, connection)
    server.respond(stream_id)
    return await task, stream_id


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.01)


async def body_of(stream: http2.Stream) -> bytes:
    body = bytearray()
    async with asyncio.timeout(10):
        while chunk := await stream.read():
            body += chunk
    return bytes(body)


async def test_streams_share_the_connection_and_read_their_own_bodies(
    peers: tuple[H2Server, http2.Connection],
) -> None:
    server, connection = peers
    started = [await request(server, connection) for _ in range(10)]
    for _, stream_id in started:
        server.respond(stream_id, headers=[("content-type", "application/json"), ("retry-after", "3")])
    streams = [await task for task, _ in started]
    assert [s.status for s in streams] == [200] * 10
    assert streams[0].headers == {"content-type": "application/json", "retry-after": "3"}
    for n, (_, stream_id) in enumerate(reversed(started)):
        server.data(stream_id, b'{"type":', pad=7)
        server.data(stream_id, f'"{n}"'.encode())
        server.data(stream_id, b"}\n", end=True, pad=0)
    bodies = [await body_of(s) for s in reversed(streams)]
    assert bodies == [f'{{"type":"{n}"}}\n'.encode() for n in range(10)]
    assert connection.available


async def test_a_body_goes_out_as_the_servers_windows_open(peers: tuple[H2Server, http2.Connection]) -> None:
    server, connection = peers
    server.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1000})
    server.flush()
    await server.event(h2.events.SettingsAcknowledged)
    body = bytes(range(256)) * 800  # 200 KiB: three times the connection's first window, 200 the stream's
    task = asyncio.create_task(connection.request([(":method", "PUT"), *REQUEST[1:]], body))
    ended = await server.event(h2.events.StreamEnded)  # h2 ends the connection on any window overrun
    assert server.bodies[ended.stream_id] == body
    server.respond(ended.stream_id, 201)
    assert (await task).status == 201


async def test_unread_data_is_held_back_by_the_stream_window_and_resumes_when_read(
    peers: tuple[H2Server, http2.Connection],
) -> None:
    server, connection = peers
    stream, stream_id = await responded(server, connection)
    body = bytes(range(256)) * (3 * 4096)  # 3 MiB, three stream windows
    sending = asyncio.create_task(server.send_all(stream_id, body))
    await until(lambda: server.conn.local_flow_control_window(stream_id) == 0)  # a whole window nobody reads
    assert not sending.done()  # held back: what one watch buffers is bounded by its window
    assert await body_of(stream) == body
    await sending


async def test_a_reset_fails_the_reader_after_what_arrived_before_it(
    peers: tuple[H2Server, http2.Connection],
) -> None:
    server, connection = peers
    stream, stream_id = await responded(server, connection)
    server.data(stream_id, b"one event\n")
    server.conn.reset_stream(stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
    server.flush()
    assert await stream.read() == b"one event\n"
    with pytest.raises(http2.Http2Error, match="reset the stream \\(INTERNAL_ERROR\\)"):
        await stream.read()


async def test_goaway_fails_the_streams_it_never_took_and_lets_the_others_finish(
    peers: tuple[H2Server, http2.Connection],
) -> None:
    server, connection = peers
    first, first_id = await request(server, connection)
    second, _ = await request(server, connection)
    goaway(server, last_stream_id=first_id)
    with pytest.raises(http2.Http2Error, match="going away"):
        await second
    assert not connection.available  # new streams go to another connection
    server.respond(first_id)
    stream = await first
    server.data(first_id, b"last\n", end=True)
    assert await body_of(stream) == b"last\n"


def goaway(server: H2Server, last_stream_id: int) -> None:
    """A GOAWAY written past h2, whose state machine would refuse to finish the streams it let through."""
    assert server.writer is not None
    server.writer.write(struct.pack(">I", 8)[1:] + struct.pack(">BBIII", 7, 0, 0, last_stream_id, 0))


async def test_closing_a_stream_early_resets_it(peers: tuple[H2Server, http2.Connection]) -> None:
    server, connection = peers
    stream, stream_id = await responded(server, connection)
    stream.close()
    reset = await server.event(h2.events.StreamReset)
    assert (reset.stream_id, reset.error_code) == (stream_id, h2.errors.ErrorCodes.CANCEL)


async def test_a_cancelled_request_resets_its_stream(peers: tuple[H2Server, http2.Connection]) -> None:
    server, connection = peers
    task, stream_id = await request(server, connection)
    task.cancel()
    reset = await server.event(h2.events.StreamReset)
    assert (reset.stream_id, reset.error_code) == (stream_id, h2.errors.ErrorCodes.CANCEL)


async def test_the_servers_ping_is_answered(peers: tuple[H2Server, http2.Connection]) -> None:
    server, _ = peers
    server.conn.ping(b"12345678")
    server.flush()
    assert (await server.event(h2.events.PingAckReceived)).ping_data == b"12345678"


@pytest.mark.parametrize("health_check", [QUICK])
async def test_a_silent_connection_is_pinged_then_dropped(peers: tuple[H2Server, http2.Connection]) -> None:
    server, connection = peers
    task, _ = await request(server, connection)
    server.muted = True
    await server.event(h2.events.PingReceived)  # the client asked after read_idle of silence
    with pytest.raises(http2.Http2Error, match="no answer to a PING"):
        await task
    assert connection.closed


@pytest.mark.parametrize("health_check", [QUICK])
async def test_a_frame_cut_short_is_silence(peers: tuple[H2Server, http2.Connection]) -> None:
    server, connection = peers
    task, stream_id = await request(server, connection)
    assert server.writer is not None
    server.writer.write(struct.pack(">I", 100)[1:] + struct.pack(">BBI", 0, 0, stream_id) + bytes(10))  # 10 of 100
    server.muted = True
    with pytest.raises(http2.Http2Error, match="no answer to a PING"):
        await task
    assert connection.closed


@pytest.mark.parametrize("health_check", [QUICK])
async def test_a_ping_answer_keeps_a_quiet_connection(peers: tuple[H2Server, http2.Connection]) -> None:
    server, connection = peers
    for _ in range(6):  # 0.3 s at least: a connection that took no answer as life would have dropped at 0.15
        await server.event(h2.events.PingReceived)  # answered by h2 each time
    assert not connection.closed


@pytest.mark.parametrize("health_check", [http2.HealthCheck(read_idle=0, ping_timeout=0.1)])
async def test_no_health_check_when_read_idle_is_0(peers: tuple[H2Server, http2.Connection]) -> None:
    server, connection = peers
    task, _ = await request(server, connection)
    server.muted = True
    with pytest.raises(TimeoutError):  # QUICK would have pinged after 0.05 s and dropped the connection at 0.15
        await asyncio.wait_for(server.event(h2.events.PingReceived), 0.5)
    assert not connection.closed and not task.done()
    task.cancel()


async def test_response_headers_split_over_continuation_frames(peers: tuple[H2Server, http2.Connection]) -> None:
    server, connection = peers
    task, stream_id = await request(server, connection)
    server.respond(stream_id, headers=[("x-long", "v" * 40000)])  # h2 splits it at 16 KiB frames
    assert (await task).headers["x-long"] == "v" * 40000


async def test_a_frame_beyond_the_announced_size_ends_the_connection_with_goaway(
    peers: tuple[H2Server, http2.Connection],
) -> None:
    server, connection = peers
    task, stream_id = await request(server, connection)
    assert server.writer is not None
    server.writer.write(struct.pack(">I", 20000)[1:] + struct.pack(">BBI", 0, 0, stream_id) + bytes(20000))
    with pytest.raises(http2.Http2Error, match="FRAME_SIZE_ERROR"):
        await task
    terminated = await server.event(h2.events.ConnectionTerminated)
    assert terminated.error_code == h2.errors.ErrorCodes.FRAME_SIZE_ERROR


async def test_a_response_without_status_resets_only_its_stream(peers: tuple[H2Server, http2.Connection]) -> None:
    server, connection = peers
    bad, bad_id = await request(server, connection)
    good, good_id = await request(server, connection)
    server.conn.config.validate_outbound_headers = False
    server.conn.send_headers(bad_id, [("content-type", "text/plain")])
    server.respond(good_id)
    with pytest.raises(http2.Http2Error, match="without a valid :status"):
        await bad
    assert (await good).status == 200
    reset = await server.event(h2.events.StreamReset)
    assert (reset.stream_id, reset.error_code) == (bad_id, h2.errors.ErrorCodes.PROTOCOL_ERROR)


# The pool, over TLS


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "tls.crt", folder / "tls.key"
    request = "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=test"
    extension = ["-addext", "subjectAltName=IP:127.0.0.1"]
    command = ["openssl", *request.split(), *extension, "-keyout", str(key), "-out", str(cert)]
    subprocess.run(command, check=True, capture_output=True)  # openssl from PATH, as opsync.envtest
    return cert, key


def server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


def client_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certificate[0]))
    context.set_alpn_protocols(["h2"])
    return context


@contextlib.asynccontextmanager
async def pool_and_servers(
    certificate: tuple[Path, Path], alpn: list[str]
) -> AsyncIterator[tuple[http2.Pool, list[H2Server]]]:
    """A pool of a TLS listener offering ``alpn``; each connection it takes is an ``H2Server``, in order."""
    servers: list[H2Server] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        servers.append(server := H2Server())
        await server.serve(reader, writer)

    context = server_tls(certificate)
    if alpn:
        context.set_alpn_protocols(alpn)
    listener = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    pool = http2.Pool("127.0.0.1", listener.sockets[0].getsockname()[1], client_tls(certificate))
    try:
        yield pool, servers
    finally:
        await pool.close()
        listener.close()


async def test_the_pool_carries_streams_on_one_tls_connection_and_dials_after_goaway(
    certificate: tuple[Path, Path],
) -> None:
    async with pool_and_servers(certificate, ["h2", "http/1.1"]) as (pool, servers):
        tasks = [asyncio.create_task(pool.request(REQUEST)) for _ in range(3)]
        await until(lambda: bool(servers))
        for _ in range(3):
            server_stream = (await servers[0].event(h2.events.RequestReceived)).stream_id
            servers[0].respond(server_stream)
        assert [getattr(await t, "status", None) for t in tasks] == [200] * 3
        assert len(servers) == 1
        servers[0].conn.close_connection()
        servers[0].flush()
        await until(lambda: not any(c.available for c in pool._connections))  # the client read the GOAWAY
        task = asyncio.create_task(pool.request(REQUEST))
        await until(lambda: len(servers) == 2)
        received = await servers[-1].event(h2.events.RequestReceived)
        servers[-1].respond(received.stream_id)
        assert (await task) is not None
        assert not pool.refused


async def test_the_pool_sends_a_refused_request_again(certificate: tuple[Path, Path]) -> None:
    async with pool_and_servers(certificate, ["h2"]) as (pool, servers):
        task = asyncio.create_task(pool.request(REQUEST, b"{}"))
        await until(lambda: bool(servers))
        refused = (await servers[0].event(h2.events.RequestReceived)).stream_id
        servers[0].conn.reset_stream(refused, h2.errors.ErrorCodes.REFUSED_STREAM)  # not processed: safe to resend
        servers[0].flush()
        again = (await servers[0].event(h2.events.RequestReceived)).stream_id
        servers[0].respond(again)
        stream = await task
        assert stream is not None and stream.status == 200 and again != refused
        assert servers[0].bodies[again] == b"{}"


async def test_the_pool_says_none_once_the_server_offers_no_h2(certificate: tuple[Path, Path]) -> None:
    async with pool_and_servers(certificate, []) as (pool, _):
        assert await pool.request(REQUEST) is None
        assert pool.refused
        assert await pool.request(REQUEST) is None  # and never dials again


async def test_the_pool_reports_a_server_it_cannot_reach(certificate: tuple[Path, Path]) -> None:
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    with pytest.raises(http2.Http2Error, match=f"cannot connect to 127.0.0.1:{port}"):
        await http2.Pool("127.0.0.1", port, client_tls(certificate)).request(REQUEST)


async def test_a_client_speaks_http1_to_a_server_that_offers_no_h2(certificate: tuple[Path, Path]) -> None:
    """The pool's None sends the request over kubernetes-asyncio's session, with the same credentials."""
    seen: list[tuple[int, str]] = []

    async def namespace(request: web.Request) -> web.Response:
        seen.append((request.version.major, request.headers["Authorization"]))
        return web.json_response({"kind": "Namespace", "metadata": {"name": request.match_info["name"]}})

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/{name}", namespace)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls(certificate))
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    configuration = rest.Configuration(host=f"https://127.0.0.1:{port}", api_key={"BearerToken": "t0ken"})
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    configuration.ssl_ca_cert = str(certificate[0])
    try:
        async with Client(configuration) as client:
            assert (await client.get(NAMESPACES, "a"))["metadata"]["name"] == "a"
            assert (await client.get(NAMESPACES, "b"))["metadata"]["name"] == "b"
    finally:
        await runner.cleanup()
    assert seen == [(1, "Bearer t0ken"), (1, "Bearer t0ken")]
