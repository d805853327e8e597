"""Writes the PNG fixtures of NyquistImageTests with Python's zlib and struct only (an encoder
independent of NyquistImage; no other PNG encoder, ImageMagick, netpbm or PIL, was available on
the machine). Run once, offline: python3 make_fixtures.py. The pixel values are given by the
formulas and lists below; PNGFixtureTests states the same values on its own.
"""
import struct
import zlib


def chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def filtered(rows, bpp, types):
    """Each raw row filtered with the given type (0 none, 1 sub, 2 up, 3 average, 4 paeth)."""
    out = b""
    prev = bytes(len(rows[0]))
    for row, kind in zip(rows, types):
        line = bytearray()
        for i, x in enumerate(row):
            a = row[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            pred = [0, a, b, (a + b) // 2, paeth(a, b, c)][kind]
            line.append((x - pred) & 0xFF)
        out += bytes([kind]) + bytes(line)
        prev = row
    return out


def png(width, height, depth, colour, raw, extra=b"", idat_parts=1, before_idat=b"", interlace=0):
    data = zlib.compress(raw, 6)
    step = -(-len(data) // idat_parts)
    idats = b"".join(chunk(b"IDAT", data[i:i + step]) for i in range(0, len(data), step))
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace))
    return b"\x89PNG\r\n\x1a\n" + header + before_idat + extra + idats + chunk(b"IEND", b"")


# 5x5 RGB, 8 bits: row r uses filter type r, so all five filters appear; three IDAT chunks and
# a tEXt chunk (ancillary, must be skipped).
def rgb_pixel(r, c):
    return ((r * 50 + c * 3) % 256, (255 - r * 40 - c * 7) % 256, (r * c * 11) % 256)


rows = [bytes(v for c in range(5) for v in rgb_pixel(r, c)) for r in range(5)]
open("rgb8-filters.png", "wb").write(png(5, 5, 8, 2, filtered(rows, 3, [0, 1, 2, 3, 4]),
                                         extra=chunk(b"tEXt", b"Comment\x00python zlib"), idat_parts=3))

# 3x2 gray, 16 bits, big-endian samples, filters paeth then sub.
gray16 = [0, 1, 256, 65535, 4660, 43981]
rows = [b"".join(struct.pack(">H", v) for v in gray16[r * 3:(r + 1) * 3]) for r in range(2)]
open("gray16.png", "wb").write(png(3, 2, 16, 0, filtered(rows, 2, [4, 1])))

# 4x2 palette, 8 bits, 3 entries, tRNS for the first two (the third is opaque).
palette = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
alpha = [0, 128]
indices = [[0, 1, 2, 1], [2, 2, 0, 1]]
rows = [bytes(r) for r in indices]
extra = chunk(b"PLTE", bytes(v for p in palette for v in p)) + chunk(b"tRNS", bytes(alpha))
open("palette-trns.png", "wb").write(png(4, 2, 8, 3, filtered(rows, 1, [2, 3]), before_idat=extra))

# 2x2 gray+alpha, 8 bits; 2x1 RGBA, 16 bits.
ga = [(0, 255), (64, 128), (128, 64), (255, 0)]
rows = [bytes(v for p in ga[r * 2:(r + 1) * 2] for v in p) for r in range(2)]
open("gray-alpha8.png", "wb").write(png(2, 2, 8, 4, filtered(rows, 2, [1, 4])))
rgba16 = [(1, 2, 3, 65535), (65534, 32768, 0, 0)]
rows = [b"".join(struct.pack(">H", v) for p in rgba16 for v in p)]
open("rgba16.png", "wb").write(png(2, 1, 16, 6, filtered(rows, 8, [3])))

# 1x1 RGB, Adam7 interlaced (a valid file: the single pixel is all of pass 1), for the
# "interlacing is not supported" error.
open("interlaced.png", "wb").write(png(1, 1, 8, 2, bytes([0, 200, 100, 50]), interlace=1))
