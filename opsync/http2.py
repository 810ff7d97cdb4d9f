"""HTTP/2 to the API server: every request and watch of a ``Client`` over one TLS connection, as client-go does.

Over HTTP/1.1 each open watch holds a TCP and TLS connection of its own for its whole life, one per (namespace,
kind), and every request in flight at the same moment another (the informers' first lists all start together):
74 KiB of resident memory each in this process, kept after the connection closes (docs/benchmarks.md), and as
many connections on the API server. HTTP/2 carries them all as streams of one connection.

This is an HTTP/2 client for what ``opsync.client`` sends (RFC 9113, RFC 7541): requests with a body known in
full, responses read as they come. It refuses server push and ignores priorities; what it must do, it does in
full: HPACK decoding with the dynamic table and Huffman codes, flow control both ways (per stream and per
connection), SETTINGS, PING (answered, and sent when the connection was silent for ``HealthCheck.read_idle``
seconds: no answer in ``HealthCheck.ping_timeout`` and the connection is dropped, as client-go's health check),
RST_STREAM and GOAWAY. A failure of a stream or of the connection is raised to the stream's reader as
``Http2Error`` (an ``aiohttp.ClientConnectionError``: ``opsync.client``'s callers already retry those).

``Pool.request`` opens streams, dialing a connection the first time and whenever every open one is full or
going away. When the server does not offer ``h2`` in TLS ALPN the pool says so (``None``), once and for good,
and the caller sends its requests over HTTP/1.1 instead.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import os
import ssl
import struct
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import aiohttp

__all__ = [
    "CLIENT_GO_HEALTH_CHECK",
    "Connection",
    "HeaderDecoder",
    "HealthCheck",
    "Http2Error",
    "Pool",
    "Stream",
    "Unprocessed",
    "encode_headers",
    "huffman_decode",
]

log = logging.getLogger(__name__)

STREAM_WINDOW = 1 << 20
"""Bytes the server may send on one stream before this side has read them: what one watch may buffer."""
CONNECTION_WINDOW = 1 << 24
"""The connection's receive window; credited as data arrives, so the streams' windows are what bound memory."""
MAX_HEADER_BLOCK = 1 << 16
"""The largest response header block accepted (SETTINGS_MAX_HEADER_LIST_SIZE is announced to match)."""
HEADER_TABLE_SIZE = 4096
"""The HPACK dynamic table the server's encoder may use (the protocol's default)."""
_CLOSE_TIMEOUT = 15.0  # seconds a closing connection waits for the server's side of TLS's close
_MAX_FRAME = 16384  # SETTINGS_MAX_FRAME_SIZE this side keeps at its default
_DEFAULT_WINDOW = 65535  # every window's size until SETTINGS or WINDOW_UPDATE change it
_MAX_STREAM_ID = _MAX_WINDOW = (1 << 31) - 1
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_SEND_ATTEMPTS = 3  # of a request the server did not process

# Frame types and flags (RFC 9113 section 6).
_DATA, _HEADERS, _PRIORITY, _RST_STREAM, _SETTINGS, _PUSH_PROMISE, _PING, _GOAWAY, _WINDOW_UPDATE, _CONTINUATION = (
    range(10)
)
_END_STREAM = _ACK = 0x1
_END_HEADERS = 0x4
_PADDED = 0x8
_PRIORITY_FLAG = 0x20

# Settings (section 6.5.2) and error codes (section 7).
_HEADER_TABLE_SIZE, _ENABLE_PUSH, _MAX_CONCURRENT_STREAMS, _INITIAL_WINDOW_SIZE, _MAX_FRAME_SIZE = 1, 2, 3, 4, 5
_MAX_HEADER_LIST_SIZE = 6
_NO_ERROR, _PROTOCOL_ERROR, _FLOW_CONTROL_ERROR, _FRAME_SIZE_ERROR = 0x0, 0x1, 0x3, 0x6
_REFUSED_STREAM, _CANCEL, _COMPRESSION_ERROR = 0x7, 0x8, 0x9
_ERROR_NAMES = {
    0x0: "NO_ERROR",
    0x1: "PROTOCOL_ERROR",
    0x2: "INTERNAL_ERROR",
    0x3: "FLOW_CONTROL_ERROR",
    0x4: "SETTINGS_TIMEOUT",
    0x5: "STREAM_CLOSED",
    0x6: "FRAME_SIZE_ERROR",
    0x7: "REFUSED_STREAM",
    0x8: "CANCEL",
    0x9: "COMPRESSION_ERROR",
    0xA: "CONNECT_ERROR",
    0xB: "ENHANCE_YOUR_CALM",
    0xC: "INADEQUATE_SECURITY",
    0xD: "HTTP_1_1_REQUIRED",
}


def _error_name(code: int) -> str:
    return _ERROR_NAMES.get(code, f"error {code:#x}")


class Http2Error(aiohttp.ClientConnectionError):
    """The connection or a stream failed (reset, GOAWAY, a protocol error, no PING answer); retry the request."""


class Unprocessed(Http2Error):
    """The server did not process the request (GOAWAY before it, or REFUSED_STREAM): safe to send again."""


class _ProtocolError(Exception):
    """The server broke the protocol; ``code`` is the error this side answers with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


# HPACK (RFC 7541)

Header = tuple[str, str]

# Appendix A: the static table, index 1 first.
_STATIC: tuple[Header, ...] = (
    (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"), (":path", "/index.html"),
    (":scheme", "http"), (":scheme", "https"), (":status", "200"), (":status", "204"), (":status", "206"),
    (":status", "304"), (":status", "400"), (":status", "404"), (":status", "500"), ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""), ("accept", ""),
    ("access-control-allow-origin", ""), ("age", ""), ("allow", ""), ("authorization", ""),
    ("cache-control", ""), ("content-disposition", ""), ("content-encoding", ""), ("content-language", ""),
    ("content-length", ""), ("content-location", ""), ("content-range", ""), ("content-type", ""),
    ("cookie", ""), ("date", ""), ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""),
    ("if-match", ""), ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""),
    ("if-unmodified-since", ""), ("last-modified", ""), ("link", ""), ("location", ""), ("max-forwards", ""),
    ("proxy-authenticate", ""), ("proxy-authorization", ""), ("range", ""), ("referer", ""), ("refresh", ""),
    ("retry-after", ""), ("server", ""), ("set-cookie", ""), ("strict-transport-security", ""),
    ("transfer-encoding", ""), ("user-agent", ""), ("vary", ""), ("via", ""), ("www-authenticate", ""),
)  # fmt: skip

# Appendix B: the Huffman code of each octet, (code, length in bits); EOS (30 ones) must never be decoded.
_HUFFMAN: tuple[tuple[int, int], ...] = (
    (0x1ff8, 13), (0x7fffd8, 23), (0xfffffe2, 28), (0xfffffe3, 28), (0xfffffe4, 28), (0xfffffe5, 28),
    (0xfffffe6, 28), (0xfffffe7, 28), (0xfffffe8, 28), (0xffffea, 24), (0x3ffffffc, 30), (0xfffffe9, 28),
    (0xfffffea, 28), (0x3ffffffd, 30), (0xfffffeb, 28), (0xfffffec, 28), (0xfffffed, 28), (0xfffffee, 28),
    (0xfffffef, 28), (0xffffff0, 28), (0xffffff1, 28), (0xffffff2, 28), (0x3ffffffe, 30), (0xffffff3, 28),
    (0xffffff4, 28), (0xffffff5, 28), (0xffffff6, 28), (0xffffff7, 28), (0xffffff8, 28), (0xffffff9, 28),
    (0xffffffa, 28), (0xffffffb, 28), (0x14, 6), (0x3f8, 10), (0x3f9, 10), (0xffa, 12),
    (0x1ff9, 13), (0x15, 6), (0xf8, 8), (0x7fa, 11), (0x3fa, 10), (0x3fb, 10),
    (0xf9, 8), (0x7fb, 11), (0xfa, 8), (0x16, 6), (0x17, 6), (0x18, 6),
    (0x0, 5), (0x1, 5), (0x2, 5), (0x19, 6), (0x1a, 6), (0x1b, 6),
    (0x1c, 6), (0x1d, 6), (0x1e, 6), (0x1f, 6), (0x5c, 7), (0xfb, 8),
    (0x7ffc, 15), (0x20, 6), (0xffb, 12), (0x3fc, 10), (0x1ffa, 13), (0x21, 6),
    (0x5d, 7), (0x5e, 7), (0x5f, 7), (0x60, 7), (0x61, 7), (0x62, 7),
    (0x63, 7), (0x64, 7), (0x65, 7), (0x66, 7), (0x67, 7), (0x68, 7),
    (0x69, 7), (0x6a, 7), (0x6b, 7), (0x6c, 7), (0x6d, 7), (0x6e, 7),
    (0x6f, 7), (0x70, 7), (0x71, 7), (0x72, 7), (0xfc, 8), (0x73, 7),
    (0xfd, 8), (0x1ffb, 13), (0x7fff0, 19), (0x1ffc, 13), (0x3ffc, 14), (0x22, 6),
    (0x7ffd, 15), (0x3, 5), (0x23, 6), (0x4, 5), (0x24, 6), (0x5, 5),
    (0x25, 6), (0x26, 6), (0x27, 6), (0x6, 5), (0x74, 7), (0x75, 7),
    (0x28, 6), (0x29, 6), (0x2a, 6), (0x7, 5), (0x2b, 6), (0x76, 7),
    (0x2c, 6), (0x8, 5), (0x9, 5), (0x2d, 6), (0x77, 7), (0x78, 7),
    (0x79, 7), (0x7a, 7), (0x7b, 7), (0x7ffe, 15), (0x7fc, 11), (0x3ffd, 14),
    (0x1ffd, 13), (0xffffffc, 28), (0xfffe6, 20), (0x3fffd2, 22), (0xfffe7, 20), (0xfffe8, 20),
    (0x3fffd3, 22), (0x3fffd4, 22), (0x3fffd5, 22), (0x7fffd9, 23), (0x3fffd6, 22), (0x7fffda, 23),
    (0x7fffdb, 23), (0x7fffdc, 23), (0x7fffdd, 23), (0x7fffde, 23), (0xffffeb, 24), (0x7fffdf, 23),
    (0xffffec, 24), (0xffffed, 24), (0x3fffd7, 22), (0x7fffe0, 23), (0xffffee, 24), (0x7fffe1, 23),
    (0x7fffe2, 23), (0x7fffe3, 23), (0x7fffe4, 23), (0x1fffdc, 21), (0x3fffd8, 22), (0x7fffe5, 23),
    (0x3fffd9, 22), (0x7fffe6, 23), (0x7fffe7, 23), (0xffffef, 24), (0x3fffda, 22), (0x1fffdd, 21),
    (0xfffe9, 20), (0x3fffdb, 22), (0x3fffdc, 22), (0x7fffe8, 23), (0x7fffe9, 23), (0x1fffde, 21),
    (0x7fffea, 23), (0x3fffdd, 22), (0x3fffde, 22), (0xfffff0, 24), (0x1fffdf, 21), (0x3fffdf, 22),
    (0x7fffeb, 23), (0x7fffec, 23), (0x1fffe0, 21), (0x1fffe1, 21), (0x3fffe0, 22), (0x1fffe2, 21),
    (0x7fffed, 23), (0x3fffe1, 22), (0x7fffee, 23), (0x7fffef, 23), (0xfffea, 20), (0x3fffe2, 22),
    (0x3fffe3, 22), (0x3fffe4, 22), (0x7ffff0, 23), (0x3fffe5, 22), (0x3fffe6, 22), (0x7ffff1, 23),
    (0x3ffffe0, 26), (0x3ffffe1, 26), (0xfffeb, 20), (0x7fff1, 19), (0x3fffe7, 22), (0x7ffff2, 23),
    (0x3fffe8, 22), (0x1ffffec, 25), (0x3ffffe2, 26), (0x3ffffe3, 26), (0x3ffffe4, 26), (0x7ffffde, 27),
    (0x7ffffdf, 27), (0x3ffffe5, 26), (0xfffff1, 24), (0x1ffffed, 25), (0x7fff2, 19), (0x1fffe3, 21),
    (0x3ffffe6, 26), (0x7ffffe0, 27), (0x7ffffe1, 27), (0x3ffffe7, 26), (0x7ffffe2, 27), (0xfffff2, 24),
    (0x1fffe4, 21), (0x1fffe5, 21), (0x3ffffe8, 26), (0x3ffffe9, 26), (0xffffffd, 28), (0x7ffffe3, 27),
    (0x7ffffe4, 27), (0x7ffffe5, 27), (0xfffec, 20), (0xfffff3, 24), (0xfffed, 20), (0x1fffe6, 21),
    (0x3fffe9, 22), (0x1fffe7, 21), (0x1fffe8, 21), (0x7ffff3, 23), (0x3fffea, 22), (0x3fffeb, 22),
    (0x1ffffee, 25), (0x1ffffef, 25), (0xfffff4, 24), (0xfffff5, 24), (0x3ffffea, 26), (0x7ffff4, 23),
    (0x3ffffeb, 26), (0x7ffffe6, 27), (0x3ffffec, 26), (0x3ffffed, 26), (0x7ffffe7, 27), (0x7ffffe8, 27),
    (0x7ffffe9, 27), (0x7ffffea, 27), (0x7ffffeb, 27), (0xffffffe, 28), (0x7ffffec, 27), (0x7ffffed, 27),
    (0x7ffffee, 27), (0x7ffffef, 27), (0x7fffff0, 27), (0x3ffffee, 26),
)  # fmt: skip

_HUFFMAN_MAX_BITS = 30
_EOS = 256


def _canonical_table() -> tuple[list[int], list[int], list[int], list[tuple[int, ...]]]:
    """The code is canonical (codes of one length consecutive, in octet order, each length continuing the one
    before): per length, the first left-justified value past its codes, the length, its first code, its octets."""
    by_length: dict[int, list[tuple[int, int]]] = {}
    for octet, (code, length) in enumerate((*_HUFFMAN, ((1 << _HUFFMAN_MAX_BITS) - 1, _HUFFMAN_MAX_BITS))):
        by_length.setdefault(length, []).append((code, octet))
    limits, lengths, firsts, octets = [], [], [], []
    for length in sorted(by_length):
        codes = sorted(by_length[length])
        limits.append((codes[-1][0] + 1) << (_HUFFMAN_MAX_BITS - length))
        lengths.append(length)
        firsts.append(codes[0][0])
        octets.append(tuple(octet for _, octet in codes))
    return limits, lengths, firsts, octets


_LIMITS, _LENGTHS, _FIRSTS, _OCTETS = _canonical_table()


def huffman_decode(data: bytes) -> bytes:
    """Decode a Huffman-coded HPACK string (section 5.2); padding must be at most 7 bits, all ones."""
    out = bytearray()
    value, left = int.from_bytes(data, "big"), len(data) * 8  # ``left``: the low bits not decoded yet
    full = (1 << _HUFFMAN_MAX_BITS) - 1
    while left:
        # The next 30 bits, padded with ones past the end: a code's length is where they fall among the limits.
        shift = left - _HUFFMAN_MAX_BITS
        window = (value >> shift if shift >= 0 else (value << -shift) | ((1 << -shift) - 1)) & full
        index = bisect.bisect_right(_LIMITS, window)
        length = _LENGTHS[index]
        if length > left:
            break  # what is left is shorter than the code it begins: padding, checked below
        octet = _OCTETS[index][(window >> (_HUFFMAN_MAX_BITS - length)) - _FIRSTS[index]]
        if octet == _EOS:
            raise _ProtocolError(_COMPRESSION_ERROR, "EOS in a Huffman-coded header")
        out.append(octet)
        left -= length
    if left > 7 or value & ((1 << left) - 1) != (1 << left) - 1:
        raise _ProtocolError(_COMPRESSION_ERROR, "invalid padding after a Huffman-coded header")
    return bytes(out)


def _decode_int(data: bytes, pos: int, prefix: int) -> tuple[int, int]:
    """An integer with a ``prefix``-bit prefix at ``data[pos]`` (section 5.1): (value, position after it)."""
    limit = (1 << prefix) - 1
    value = data[pos] & limit
    pos += 1
    if value < limit:
        return value, pos
    shift = 0
    while True:
        if pos >= len(data) or shift > 28:
            raise _ProtocolError(_COMPRESSION_ERROR, "a truncated or oversized integer in a header block")
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _decode_string(data: bytes, pos: int) -> tuple[str, int]:
    if pos >= len(data):
        raise _ProtocolError(_COMPRESSION_ERROR, "a truncated header block")
    huffman = bool(data[pos] & 0x80)
    length, pos = _decode_int(data, pos, 7)
    if pos + length > len(data):
        raise _ProtocolError(_COMPRESSION_ERROR, "a header string longer than its block")
    raw = data[pos : pos + length]
    # latin-1 keeps one character per octet: a table entry's size counts octets.
    return (huffman_decode(raw) if huffman else raw).decode("latin-1"), pos + length


class HeaderDecoder:
    """HPACK decoding for one connection: its dynamic table lives as long as the connection.

    Every header block the server sends must go through it, in order, including those of streams this side no
    longer reads: each may change the table the next ones refer to.
    """

    def __init__(self, max_table_size: int = HEADER_TABLE_SIZE) -> None:
        self._max_allowed = max_table_size  # what this side announced
        self._max_size = max_table_size  # what the encoder last chose, at most that
        self._table: deque[Header] = deque()  # newest first: index 62 is self._table[0]
        self._size = 0

    def decode(self, block: bytes) -> list[Header]:
        """The headers of one complete block; raises on anything malformed."""
        headers: list[Header] = []
        pos = 0
        while pos < len(block):
            byte = block[pos]
            if byte & 0x80:  # indexed field
                index, pos = _decode_int(block, pos, 7)
                headers.append(self._entry(index))
            elif byte & 0x40:  # literal, added to the table
                header, pos = self._literal(block, pos, 6)
                headers.append(header)
                self._add(header)
            elif byte & 0x20:  # dynamic table size update
                size, pos = _decode_int(block, pos, 5)
                if size > self._max_allowed:
                    raise _ProtocolError(_COMPRESSION_ERROR, f"a header table of {size} octets was never allowed")
                self._max_size = size
                self._evict()
            else:  # literal, not added (0x10: never to be indexed, the same to a decoder)
                header, pos = self._literal(block, pos, 4)
                headers.append(header)
        return headers

    def _literal(self, block: bytes, pos: int, prefix: int) -> tuple[Header, int]:
        index, pos = _decode_int(block, pos, prefix)
        if index:
            name = self._entry(index)[0]
        else:
            name, pos = _decode_string(block, pos)
        value, pos = _decode_string(block, pos)
        return (name, value), pos

    def _entry(self, index: int) -> Header:
        if 1 <= index <= len(_STATIC):
            return _STATIC[index - 1]
        dynamic = index - len(_STATIC) - 1
        if index == 0 or dynamic >= len(self._table):
            raise _ProtocolError(_COMPRESSION_ERROR, f"header index {index} is not in the table")
        return self._table[dynamic]

    def _add(self, header: Header) -> None:
        self._table.appendleft(header)
        self._size += _entry_size(header)
        self._evict()  # an entry larger than the table empties it, and is not kept either (section 4.4)

    def _evict(self) -> None:
        while self._size > self._max_size:
            self._size -= _entry_size(self._table.pop())


def _entry_size(header: Header) -> int:
    return len(header[0]) + len(header[1]) + 32


def _encode_int(value: int, prefix: int, first: int) -> bytes:
    limit = (1 << prefix) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_headers(headers: Iterable[Header]) -> bytes:
    """A header block of literals that touch no table: nothing to keep in step with the server's decoder.

    ``authorization`` goes as never-indexed, so that no intermediary keeps the credential in a table.
    """
    out = bytearray()
    for name, value in headers:
        out += _encode_int(0, 4, 0x10 if name == "authorization" else 0x00)
        for text in (name.encode("latin-1"), value.encode("latin-1")):
            out += _encode_int(len(text), 7, 0x00)
            out += text
    return bytes(out)


# Frames (RFC 9113)


def _frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", kind, flags, stream_id) + payload


def _unpadded(flags: int, payload: bytes) -> bytes:
    if not flags & _PADDED:
        return payload
    if not payload or payload[0] >= len(payload):
        raise _ProtocolError(_PROTOCOL_ERROR, "padding longer than its frame")
    return payload[1 : len(payload) - payload[0]]


class Stream:
    """One request: ``status`` and ``headers`` (names in lower case) once ``Pool.request`` returns it, then the
    body by ``read``. ``close`` it when done: a stream the server has not ended is reset."""

    def __init__(self, connection: Connection, stream_id: int) -> None:
        self.id = stream_id
        self.status = 0
        self.headers: dict[str, str] = {}
        self._connection = connection
        self._chunks: deque[bytes] = deque()
        self._changed = asyncio.Event()
        self._ended = False
        self._error: Http2Error | None = None
        self._window = STREAM_WINDOW  # what the server may still send
        self._unacked = 0  # read (or padding) and not yet given back to the server's window
        self._send_window = connection._peer_initial_window  # what this side may still send

    async def read(self) -> bytes:
        """The next piece of the body, b"" at its end; raises ``Http2Error`` once what came before it was read."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._ended:
                return b""
            self._changed.clear()
            await self._changed.wait()
        chunk = self._chunks.popleft()
        self._give_back(len(chunk))
        return chunk

    async def read_all(self, limit: int | None = None) -> bytes:
        """The rest of the body, cut at ``limit`` bytes when given."""
        body = bytearray()
        while (limit is None or len(body) < limit) and (chunk := await self.read()):
            body += chunk
        return bytes(body[:limit])

    def close(self) -> None:
        """Stop reading; resets the stream if the server has not ended it. Idempotent."""
        self._connection._forget(self, reset=not self._ended and self._error is None)

    async def _response(self) -> None:
        while not self.status:
            if self._error is not None:
                raise self._error
            if self._ended:
                raise Http2Error("the API server ended the stream without a response")
            self._changed.clear()
            await self._changed.wait()

    def _on_headers(self, headers: Sequence[Header], end_stream: bool) -> None:
        if not self.status:
            status = next((value for name, value in headers if name == ":status"), "")
            if not (status.isdigit() and len(status) == 3):
                raise _StreamError(_PROTOCOL_ERROR, f"a response without a valid :status ({status!r})")
            if int(status) < 200:
                return
            self.headers = {name: value for name, value in headers if not name.startswith(":")}
            self.status = int(status)
        # else trailers: a watch has none it needs
        if end_stream:
            self._ended = True
        self._changed.set()

    def _on_data(self, data: bytes, flow_controlled: int, end_stream: bool) -> None:
        self._window -= flow_controlled
        if self._window < 0:
            raise _StreamError(_FLOW_CONTROL_ERROR, "the API server sent more than the stream's window")
        if not self.status:
            raise _StreamError(_PROTOCOL_ERROR, "DATA before the response headers")
        self._give_back(flow_controlled - len(data))  # padding: never read, given back at once
        if data:
            self._chunks.append(data)
        if end_stream:
            self._ended = True
        self._changed.set()

    def _give_back(self, size: int) -> None:
        self._unacked += size
        if self._unacked >= STREAM_WINDOW // 2 and not self._ended and self._error is None:
            self._connection._window_update(self.id, self._unacked)
            self._window += self._unacked
            self._unacked = 0

    def _fail(self, error: Http2Error) -> None:
        if self._error is None and not self._ended:
            self._error = error
        self._changed.set()

    def _credit(self, increment: int) -> None:
        self._send_window += increment
        if self._send_window > _MAX_WINDOW:
            raise _StreamError(_FLOW_CONTROL_ERROR, "a stream's send window beyond 2^31-1")


class _StreamError(_ProtocolError):
    """The server broke the protocol on one stream: that stream is reset, the connection goes on."""


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """client-go's HTTP/2 health check (``HTTP2_READ_IDLE_TIMEOUT_SECONDS``, ``HTTP2_PING_TIMEOUT_SECONDS``)."""

    read_idle: float = 30.0
    """Seconds without a frame from the server before a PING asks whether the connection still lives; 0: never
    (the check is off, as in client-go)."""
    ping_timeout: float = 15.0
    """Seconds a PING may go unanswered before the connection is dropped and its streams fail."""


CLIENT_GO_HEALTH_CHECK = HealthCheck()
"""client-go's timers: a PING after 30 s of silence, the connection dropped 15 s later."""


class Connection:
    """One HTTP/2 connection over TLS; a task reads its frames until it closes. Make it with ``open``."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        name: str,
        health: HealthCheck = CLIENT_GO_HEALTH_CHECK,
    ) -> None:
        self.name = name
        self._health = health
        self.max_concurrent_streams = 100  # until the server's SETTINGS say (RFC 9113 recommends at least 100)
        self._reader = reader
        self._writer = writer
        self._streams: dict[int, Stream] = {}
        self._next_id = 1
        self._decoder = HeaderDecoder()
        self._headers_in_progress: tuple[int, bytearray, bool] | None = None  # (stream, block so far, END_STREAM)
        self._peer_max_frame = _MAX_FRAME
        self._peer_initial_window = _DEFAULT_WINDOW  # each new stream's send window (SETTINGS_INITIAL_WINDOW_SIZE)
        self._send_window = _DEFAULT_WINDOW  # the connection's
        self._window_opened = asyncio.Event()  # set, and replaced, whenever a send window grows
        self._unacked = 0  # received on the connection, not yet given back
        self._going_away = False
        self._closed = False
        self._loop = asyncio.get_running_loop()
        self._last_read = self._loop.time()  # when the last whole frame arrived
        self._pinged_at: float | None = None  # when the health check's PING went out, until a frame arrives
        self._silenced: Http2Error | None = None  # why the health check dropped the connection
        self._watchdog: asyncio.TimerHandle | None = None
        if health.read_idle > 0:
            self._watchdog = self._loop.call_at(self._last_read + health.read_idle, self._check_silence)
        settings = struct.pack(
            ">HIHIHIHI",
            _ENABLE_PUSH, 0,
            _INITIAL_WINDOW_SIZE, STREAM_WINDOW,
            _HEADER_TABLE_SIZE, HEADER_TABLE_SIZE,
            _MAX_HEADER_LIST_SIZE, MAX_HEADER_BLOCK,
        )  # fmt: skip
        writer.write(_PREFACE + _frame(_SETTINGS, 0, 0, settings))
        self._window_update(0, CONNECTION_WINDOW - 65535)  # from the protocol's initial 64 KiB
        self._task = asyncio.create_task(self._run(), name=f"http2 {name}")

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        context: ssl.SSLContext,
        server_hostname: str | None = None,
        health: HealthCheck = CLIENT_GO_HEALTH_CHECK,
    ) -> Connection | None:
        """Connect; None when the server did not choose ``h2`` in ALPN (then speak HTTP/1.1 to it)."""
        name = f"{host}:{port}"
        try:
            reader, writer = await asyncio.open_connection(host, port, ssl=context, server_hostname=server_hostname)
        except OSError as err:
            raise Http2Error(f"cannot connect to {name}: {err}") from err
        ssl_object = writer.get_extra_info("ssl_object")
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
            writer.close()
            return None
        return cls(reader, writer, name, health)

    @property
    def available(self) -> bool:
        """Whether a new stream may be opened here."""
        return (
            not self._closed
            and not self._going_away
            and len(self._streams) < self.max_concurrent_streams
            and self._next_id <= _MAX_STREAM_ID
        )

    @property
    def closed(self) -> bool:
        """Whether the connection has ended (its streams have failed)."""
        return self._closed

    async def request(self, headers: Sequence[Header], body: bytes = b"") -> Stream:
        """Send a request (``headers`` with the pseudo-headers first, names in lower case) with ``body``, and wait
        for the response's headers. Cancelled or failed, the stream is reset."""
        if not self.available:
            raise Http2Error(f"{self.name}: the connection takes no more streams")
        stream = Stream(self, self._next_id)
        self._next_id += 2
        self._streams[stream.id] = stream
        block = encode_headers(headers)
        size = self._peer_max_frame
        fragments = [block[i : i + size] for i in range(0, len(block), size)] or [b""]
        for i, fragment in enumerate(fragments):
            flags = _END_HEADERS if i == len(fragments) - 1 else 0
            if i == 0 and not body:
                flags |= _END_STREAM
            # One block is sent whole, never interleaved with another: nothing here awaits between its frames.
            self._write(_HEADERS if i == 0 else _CONTINUATION, flags, stream.id, fragment)
        try:
            await self._flush()
            await self._send_body(stream, body)
            await stream._response()
        except BaseException:
            stream.close()
            raise
        return stream

    async def _send_body(self, stream: Stream, body: bytes) -> None:
        """``body`` as DATA frames, as fast as the server's windows for the stream and the connection allow."""
        view, sent = memoryview(body), 0
        while sent < len(body):
            if stream._error is not None:
                raise stream._error
            if stream._ended:
                return  # the server answered before it had it all (an error): nothing more to send
            size = min(len(body) - sent, stream._send_window, self._send_window, self._peer_max_frame)
            if size <= 0:
                await self._window_opened.wait()
                continue
            stream._send_window -= size
            self._send_window -= size
            end = _END_STREAM if sent + size == len(body) else 0
            self._write(_DATA, end, stream.id, bytes(view[sent : sent + size]))
            sent += size
            await self._flush()

    async def _flush(self) -> None:
        try:
            await self._writer.drain()
        except OSError as err:  # dropped under the write; the reading task fails the other streams
            raise Http2Error(f"{self.name}: the connection failed: {err}") from err

    async def close(self) -> None:
        """Tell the server (GOAWAY), fail any open stream, and close the TLS connection."""
        if not self._closed:
            self._write(_GOAWAY, 0, 0, struct.pack(">II", 0, _NO_ERROR))
        self._task.cancel()
        await asyncio.wait([self._task])  # not ``await``: the task's cancellation is not this caller's
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await self._writer.wait_closed()
        except (OSError, TimeoutError):
            pass  # closing anyway; a server that does not answer TLS's close cannot keep it open

    # reading

    async def _run(self) -> None:
        error = Http2Error(f"{self.name}: the connection was closed")
        try:
            while True:
                header = await self._reader.readexactly(9)
                length = int.from_bytes(header[:3], "big")
                kind, flags, stream_id = header[3], header[4], int.from_bytes(header[5:], "big") & _MAX_STREAM_ID
                if length > _MAX_FRAME:
                    raise _ProtocolError(_FRAME_SIZE_ERROR, f"a frame of {length} bytes (at most {_MAX_FRAME})")
                payload = await self._reader.readexactly(length)
                self._last_read = self._loop.time()
                try:
                    self._dispatch(kind, flags, stream_id, payload)
                except _StreamError as err:
                    self._reset(stream_id, err.code, Http2Error(f"{self.name}: stream {stream_id}: {err}"))
        except _ProtocolError as err:
            self._write(_GOAWAY, 0, 0, struct.pack(">II", 0, err.code))  # 0: the server opened no stream here
            error = Http2Error(f"{self.name}: the API server broke HTTP/2 ({_error_name(err.code)}): {err}")
            log.warning("%s", error)
        except asyncio.IncompleteReadError:
            error = Http2Error(f"{self.name}: the API server closed the connection")
        except Http2Error as err:
            error = err
        except OSError as err:
            error = Http2Error(f"{self.name}: the connection failed: {err}")
        finally:
            self._shutdown(self._silenced or error)

    def _check_silence(self) -> None:
        """The health check: after ``read_idle`` seconds without a frame, a PING; if no frame at all comes within
        ``ping_timeout`` more, the connection is dropped (a frame cut short in between is silence too). One timer
        per connection, moved on when it fires: an ``asyncio.timeout`` around every read cost 7% of opsync's CPU
        in an initial sync."""
        if self._closed:
            return
        now, read_idle, ping_timeout = self._loop.time(), self._health.read_idle, self._health.ping_timeout
        if self._pinged_at is not None and self._last_read <= self._pinged_at:  # nothing since the PING
            if now >= self._pinged_at + ping_timeout:
                self._silenced = Http2Error(
                    f"{self.name}: no answer to a PING in {ping_timeout:g}s, dropping the connection"
                )
                self._task.cancel()
                return
            when = self._pinged_at + ping_timeout  # woken early: the loop's clock resolution
        elif now >= self._last_read + read_idle:
            self._pinged_at = now
            self._write(_PING, 0, 0, os.urandom(8))
            when = now + ping_timeout
        else:
            self._pinged_at = None  # a frame came since: silence is counted from it
            when = self._last_read + read_idle
        self._watchdog = self._loop.call_at(when, self._check_silence)

    def _dispatch(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._headers_in_progress is not None and kind != _CONTINUATION:
            raise _ProtocolError(_PROTOCOL_ERROR, "a header block was interrupted by another frame")
        if kind in {_DATA, _HEADERS, _CONTINUATION, _RST_STREAM} and stream_id == 0:
            raise _ProtocolError(_PROTOCOL_ERROR, f"a frame of type {kind} on stream 0")
        if kind in {_SETTINGS, _PING, _GOAWAY} and stream_id != 0:
            raise _ProtocolError(_PROTOCOL_ERROR, f"a frame of type {kind} on stream {stream_id}")
        if kind == _DATA:
            self._on_data(flags, stream_id, payload)
        elif kind == _HEADERS:
            block = _unpadded(flags, payload)
            if flags & _PRIORITY_FLAG:
                block = block[5:]
            self._on_header_fragment(stream_id, block, flags, bool(flags & _END_STREAM))
        elif kind == _CONTINUATION:
            if self._headers_in_progress is None or self._headers_in_progress[0] != stream_id:
                raise _ProtocolError(_PROTOCOL_ERROR, "a CONTINUATION that continues nothing")
            self._on_header_fragment(stream_id, payload, flags, self._headers_in_progress[2])
        elif kind == _RST_STREAM:
            code = self._fixed(payload, 4)
            error_type = Unprocessed if code == _REFUSED_STREAM else Http2Error
            self._reset(
                stream_id, None, error_type(f"{self.name}: the API server reset the stream ({_error_name(code)})")
            )
        elif kind == _SETTINGS:
            self._on_settings(flags, payload)
        elif kind == _PING:
            self._fixed(payload, 8)
            if not flags & _ACK:
                self._write(_PING, _ACK, 0, payload)
        elif kind == _GOAWAY:
            self._on_goaway(payload)
        elif kind == _WINDOW_UPDATE:
            self._on_window_update(stream_id, payload)
        elif kind == _PUSH_PROMISE:
            raise _ProtocolError(_PROTOCOL_ERROR, "a server push, which this side disabled")
        # PRIORITY and unknown types: ignored (RFC 9113 section 4.1).

    @staticmethod
    def _fixed(payload: bytes, size: int) -> int:
        if len(payload) != size:
            raise _ProtocolError(_FRAME_SIZE_ERROR, f"a frame of {len(payload)} bytes where {size} belong")
        return int.from_bytes(payload[:4], "big")

    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        self._unacked += len(payload)  # the connection's window: given back on arrival, the streams' bound memory
        if self._unacked >= CONNECTION_WINDOW // 2:
            self._window_update(0, self._unacked)
            self._unacked = 0
        data = _unpadded(flags, payload)
        stream = self._streams.get(stream_id)
        if stream is None:
            return  # closed by this side, or ended: its late frames mean nothing
        stream._on_data(data, len(payload), bool(flags & _END_STREAM))
        if flags & _END_STREAM:
            self._streams.pop(stream_id, None)
            self._drained()

    def _on_header_fragment(self, stream_id: int, fragment: bytes, flags: int, end_stream: bool) -> None:
        block = self._headers_in_progress[1] if self._headers_in_progress else bytearray()
        block += fragment
        if len(block) > MAX_HEADER_BLOCK:
            raise _ProtocolError(_PROTOCOL_ERROR, f"a header block over {MAX_HEADER_BLOCK} bytes")
        if not flags & _END_HEADERS:
            self._headers_in_progress = (stream_id, block, end_stream)
            return
        self._headers_in_progress = None
        headers = self._decoder.decode(bytes(block))  # always: the table must follow every block
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        stream._on_headers(headers, end_stream)
        if end_stream:
            self._streams.pop(stream_id, None)
            self._drained()

    def _on_window_update(self, stream_id: int, payload: bytes) -> None:
        increment = self._fixed(payload, 4) & _MAX_WINDOW
        if stream_id == 0:
            if not increment:
                raise _ProtocolError(_PROTOCOL_ERROR, "a WINDOW_UPDATE of 0 on the connection")
            self._send_window += increment
            if self._send_window > _MAX_WINDOW:
                raise _ProtocolError(_FLOW_CONTROL_ERROR, "the connection's send window beyond 2^31-1")
        elif (stream := self._streams.get(stream_id)) is not None:
            if not increment:
                raise _StreamError(_PROTOCOL_ERROR, "a WINDOW_UPDATE of 0")
            stream._credit(increment)
        self._windows_grew()

    def _windows_grew(self) -> None:
        self._window_opened.set()
        self._window_opened = asyncio.Event()

    def _on_settings(self, flags: int, payload: bytes) -> None:
        if flags & _ACK:
            if payload:
                raise _ProtocolError(_FRAME_SIZE_ERROR, "a SETTINGS acknowledgement with a payload")
            return
        if len(payload) % 6:
            raise _ProtocolError(_FRAME_SIZE_ERROR, "a SETTINGS frame not made of 6-byte settings")
        for offset in range(0, len(payload), 6):
            setting, value = struct.unpack_from(">HI", payload, offset)
            if setting == _MAX_CONCURRENT_STREAMS:
                self.max_concurrent_streams = value
            elif setting == _MAX_FRAME_SIZE:
                if not _MAX_FRAME <= value <= (1 << 24) - 1:
                    raise _ProtocolError(_PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE {value}")
                self._peer_max_frame = value
            elif setting == _INITIAL_WINDOW_SIZE:
                if value > _MAX_WINDOW:
                    raise _ProtocolError(_FLOW_CONTROL_ERROR, f"SETTINGS_INITIAL_WINDOW_SIZE {value}")
                for stream in self._streams.values():  # a change applies to the open streams too (section 6.9.2)
                    stream._send_window += value - self._peer_initial_window
                self._peer_initial_window = value
                self._windows_grew()
            elif setting == _ENABLE_PUSH and value > 1:
                raise _ProtocolError(_PROTOCOL_ERROR, f"SETTINGS_ENABLE_PUSH {value}")
            # The rest limit what this side never sends (indexed headers, large header lists): nothing to change.
        self._write(_SETTINGS, _ACK, 0)

    def _on_goaway(self, payload: bytes) -> None:
        if len(payload) < 8:
            raise _ProtocolError(_FRAME_SIZE_ERROR, "a GOAWAY shorter than 8 bytes")
        last_stream, code = struct.unpack_from(">II", payload)
        last_stream &= _MAX_STREAM_ID
        self._going_away = True
        # Streams after last_stream were never processed; those before it finish as usual.
        error = Unprocessed(f"{self.name}: the API server is going away ({_error_name(code)})")
        for stream_id in [i for i in self._streams if i > last_stream]:
            self._reset(stream_id, None, error)
        self._drained()

    # writing and bookkeeping

    def _write(self, kind: int, flags: int, stream_id: int, payload: bytes = b"") -> None:
        if not self._closed and not self._writer.is_closing():
            self._writer.write(_frame(kind, flags, stream_id, payload))

    def _window_update(self, stream_id: int, increment: int) -> None:
        self._write(_WINDOW_UPDATE, 0, stream_id, struct.pack(">I", increment))

    def _reset(self, stream_id: int, code: int | None, error: Http2Error) -> None:
        """Fail the stream with ``error``; tell the server with ``code``, unless it was the server that reset it."""
        stream = self._streams.pop(stream_id, None)
        if code is not None:
            self._write(_RST_STREAM, 0, stream_id, struct.pack(">I", code))
        if stream is not None:
            stream._fail(error)
            self._windows_grew()  # its body, if it waits for a window, sees the failure
        self._drained()

    def _forget(self, stream: Stream, *, reset: bool) -> None:
        if self._streams.pop(stream.id, None) is not None and reset:
            self._write(_RST_STREAM, 0, stream.id, struct.pack(">I", _CANCEL))
        self._drained()

    def _drained(self) -> None:
        # Going away and nothing left on it: the server will not take more, so nothing waits for it.
        if self._going_away and not self._streams and not self._closed:
            self._task.cancel()

    def _shutdown(self, error: Http2Error) -> None:
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        streams, self._streams = list(self._streams.values()), {}
        for stream in streams:
            stream._fail(error)
        self._windows_grew()  # a body waiting for a window sees the failure
        self._writer.close()


class Pool:
    """The HTTP/2 connections to one API server. ``request`` opens a stream on the first connection that takes
    one, dialing a new connection when none does (every one full, or going away)."""

    def __init__(
        self,
        host: str,
        port: int,
        context: ssl.SSLContext,
        server_hostname: str | None = None,
        health: HealthCheck = CLIENT_GO_HEALTH_CHECK,
    ) -> None:
        """``context`` must offer ``h2`` in ALPN (``context.set_alpn_protocols(["h2"])``)."""
        self._host, self._port, self._context, self._server_hostname = host, port, context, server_hostname
        self._health = health
        self._connections: list[Connection] = []
        self._dialing = asyncio.Lock()
        self.refused = False
        """True once the server did not offer ``h2``: ``request`` answers None from then on."""

    async def request(self, headers: Sequence[Header], body: bytes = b"") -> Stream | None:
        """A stream with the response to the request (see ``Connection.request``); None if the server has no HTTP/2.

        A request the server did not process (``Unprocessed``: a GOAWAY crossed it, or it was refused) is sent
        again, on another connection when that one is going away, up to ``_SEND_ATTEMPTS`` times in all.
        """
        attempt = 1
        while (connection := await self._connection()) is not None:
            try:
                return await connection.request(headers, body)
            except Unprocessed:
                if attempt == _SEND_ATTEMPTS:
                    raise
                attempt += 1
        return None

    async def _connection(self) -> Connection | None:
        async with self._dialing:  # one dial at a time: the watches that start together share its connection
            if self.refused:
                return None
            self._connections = [c for c in self._connections if not c.closed]
            connection = next((c for c in self._connections if c.available), None)
            if connection is None:
                connection = await Connection.open(
                    self._host, self._port, self._context, self._server_hostname, self._health
                )
                if connection is None:
                    self.refused = True
                    log.info("%s:%s offers no HTTP/2: each request takes a connection", self._host, self._port)
                    return None
                self._connections.append(connection)
            return connection

    async def close(self) -> None:
        """Close every connection."""
        connections, self._connections = self._connections, []
        await asyncio.gather(*(c.close() for c in connections))
