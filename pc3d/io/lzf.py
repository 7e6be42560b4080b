"""LZF (the byte-oriented LZ77 variant PCL uses for `DATA binary_compressed`), in pure Python.

Stream format: a control byte c < 32 starts a literal run of c+1 bytes; otherwise the top three
bits hold the match length - 2 (7 means "one more length byte follows") and the low five bits
the high part of the back-reference distance - 1, whose low byte follows.
"""

from __future__ import annotations

MAX_LITERAL = 32
MAX_DISTANCE = 1 << 13
MAX_MATCH = 2 + 7 + 255


class LzfError(ValueError):
    """The compressed stream is corrupt or does not decompress to the expected size."""


def lzf_decompress(data: bytes, expected_size: int) -> bytes:
    out = bytearray()
    src, n = memoryview(data), len(data)
    i = 0
    while i < n:
        ctrl = src[i]
        i += 1
        if ctrl < 32:
            length = ctrl + 1
            if i + length > n:
                raise LzfError("literal run runs past the end of the data")
            out += src[i:i + length]
            i += length
            continue
        length = ctrl >> 5
        if length == 7:
            if i >= n:
                raise LzfError("match length byte missing")
            length += src[i]
            i += 1
        if i >= n:
            raise LzfError("match distance byte missing")
        distance = ((ctrl & 0x1F) << 8) + src[i] + 1
        i += 1
        length += 2
        start = len(out) - distance
        if start < 0:
            raise LzfError("back reference points before the start of the data")
        if distance >= length:
            out += out[start:start + length]
        else:  # overlapping copy repeats the last `distance` bytes
            pattern = out[start:]
            out += (pattern * (length // distance + 1))[:length]
        if len(out) > expected_size:
            break
    if len(out) != expected_size:
        raise LzfError(f"decompressed to {len(out)} bytes, header says {expected_size}")
    return bytes(out)


def lzf_compress(data: bytes) -> bytes:
    """Greedy LZF with a dictionary of 3-byte prefixes; correct for any input, modest speed."""
    data = bytes(data)
    n = len(data)
    out = bytearray()
    literal_start = 0  # data[literal_start:i] is pending as literals
    last_seen: dict[bytes, int] = {}
    i = 0

    def flush(end: int) -> None:
        start = literal_start
        while start < end:
            chunk = data[start:min(end, start + MAX_LITERAL)]
            out.append(len(chunk) - 1)
            out.extend(chunk)
            start += len(chunk)

    while i + 2 < n:
        key = data[i:i + 3]
        ref = last_seen.get(key)
        last_seen[key] = i
        if ref is None or i - ref > MAX_DISTANCE:
            i += 1
            continue
        limit = min(MAX_MATCH, n - i)
        length = 3
        # extend in blocks first, then byte by byte (long zero runs are common in point data)
        while length + 16 <= limit and data[ref + length:ref + length + 16] == data[i + length:i + length + 16]:
            length += 16
        while length < limit and data[ref + length] == data[i + length]:
            length += 1
        flush(i)
        distance = i - ref - 1
        code = length - 2
        if code < 7:
            out.append((code << 5) | (distance >> 8))
        else:
            out.append((7 << 5) | (distance >> 8))
            out.append(code - 7)
        out.append(distance & 0xFF)
        # remember a couple of positions inside the match so the next matches can find them
        for j in range(i + length - 2, i + length):
            if j + 2 < n:
                last_seen[data[j:j + 3]] = j
        i += length
        literal_start = i
    flush(n)
    return bytes(out)
