"""The gzip decoder of the scrape client: one gzip member, inflated within a size bound.

A page is inflated raw after reading its gzip header here, and the trailer's length checked, so
a gzip bomb stops at the bound and no second pass checks the CRC (see :func:`gunzip`).
"""

from __future__ import annotations

import zlib


def gunzip(body: bytes, limit: int) -> bytes | None:
    """The content of a gzip member, or None if it inflates past ``limit`` bytes (a gzip bomb
    stops there: ``max_length`` bounds the output). Raises ``zlib.error`` for a body that is
    not gzip, is truncated, or whose trailer's length does not match.

    Why not ``zlib.decompressobj(16 + MAX_WBITS)``: that also checks the trailer's CRC-32, a second
    pass over the inflated page that costs a fifth of inflating it (``bench/bench_scrape.py`` shows
    the cost of inflating). Corruption on the way is for TCP's checksum (and TLS's MAC) to catch; a
    CRC would add only the case of a server whose own gzip stream is wrong yet inflates, which the
    length check below and the parser's grammar mostly catch too. So the header is read here, the
    deflate stream inflated raw, and the trailer's length (ISIZE) compared with what came out.
    """
    start = _gzip_header_end(body)
    if (len(body) - start) * MAX_INFLATE_RATIO <= limit:
        return _inflate_whole(body, start)
    decoder = zlib.decompressobj(-zlib.MAX_WBITS)
    data = decoder.decompress(memoryview(body)[start:], limit + 1)
    if len(data) > limit:
        return None
    trailer = decoder.unused_data
    if not decoder.eof or len(trailer) < 8:
        raise zlib.error("gzip'd body is truncated")
    _check_length(trailer[4:8], data)
    return data


#: The most a deflate stream can inflate: 1032 to 1 (a 258-byte match in under two bits; zlib's
#: FAQ, "Technical details"). A body this many times smaller than the limit cannot pass it.
MAX_INFLATE_RATIO = 1032


def _inflate_whole(body: bytes, start: int) -> bytes:
    """Inflate a gzip member that cannot inflate past the limit, in one call.

    Why besides the bounded decoder: ``zlib.decompress`` with the output buffer sized from the
    trailer's ISIZE writes the page once into one buffer, where ``decompressobj`` grows a chain of
    blocks (32 KB, then more) and joins them, a second copy: about a fifth of inflating an aws-node
    page (``bench/bench_scrape.py``). It has no output bound, hence only for bodies under the limit
    divided by :data:`MAX_INFLATE_RATIO` (10 KB for the default 10 MiB; a 40 KB aws-node page gzips
    to about 6 KB).
    """
    if len(body) - start < 8:
        raise zlib.error("gzip'd body is truncated")
    size = body[-4:]
    expected = int.from_bytes(size, "little")
    cap = (len(body) - start) * MAX_INFLATE_RATIO
    data = zlib.decompress(memoryview(body)[start:-8], -zlib.MAX_WBITS,
                           max(1, min(expected, cap)))
    _check_length(size, data)
    return data


def _check_length(isize: bytes, data: bytes) -> None:
    if int.from_bytes(isize, "little") != len(data) & 0xFFFFFFFF:
        raise zlib.error("length in the gzip trailer does not match the content")


_FHCRC, _FEXTRA, _FNAME, _FCOMMENT, _FRESERVED = 2, 4, 8, 16, 0xE0


def _gzip_header_end(body: bytes) -> int:
    """Offset of the deflate stream after a gzip member header (RFC 1952, 2.3.1)."""
    if len(body) < 10 or body[0] != 0x1F or body[1] != 0x8B:
        raise zlib.error("not a gzip header")
    if body[2] != 8:
        raise zlib.error(f"unknown gzip compression method {body[2]}")
    flags = body[3]
    if flags & _FRESERVED:
        raise zlib.error("reserved gzip header flags set")
    at = 10
    if flags & _FEXTRA:
        if len(body) < at + 2:
            raise zlib.error("gzip'd body is truncated")
        at += 2 + int.from_bytes(body[at:at + 2], "little")
    for flag in (_FNAME, _FCOMMENT):
        if flags & flag:
            end = body.find(b"\0", at)
            if end < 0:
                raise zlib.error("gzip'd body is truncated")
            at = end + 1
    if flags & _FHCRC:
        at += 2
    if at > len(body):
        raise zlib.error("gzip'd body is truncated")
    return at
