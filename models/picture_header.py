"""A picture file's format and size, read from its header before any pixel is decoded.

OpenCV allocates the decoded picture (and, for a progressive JPEG, the whole image's DCT
coefficients) from the sizes in the header before it looks at the data, so a small file can ask
for gigabytes: a 30 kB JPEG whose frame header says 20000 x 20000 took 2.4 GB. The sizes are read
here, for every format we decode, exactly where the decoder reads them:

* **PNG**: the IHDR chunk, which libpng requires to come first; an animated PNG (``acTL`` before
  the image data) is refused: its frame buffers come on top, and no scanner or camera makes one.
* **JPEG**: every marker segment is walked from SOI to EOI, fill bytes and the entropy-coded data
  of every scan (a progressive JPEG has many) included, and every frame header (SOF0..SOF15 but
  DHT, JPG and DAC, which share the range) is read. More than one frame header is refused
  (libjpeg refuses it too, but only after it has allocated the first), so is a scan before any.
* **BMP**: the DIB header (core 12-byte and the 40..124-byte Windows variants; a negative height
  is a top-down picture).
* **TIFF**: the first image directory (what OpenCV decodes): width, length, samples per pixel,
  bits per sample, and the strip or tile geometry, since OpenCV's strip/tile buffer is sized from
  it (a tile larger than the picture would make the buffer larger than the picture).

Every other format OpenCV could decode (WebP, GIF, AVIF, JPEG 2000, PNM, Sun raster, HDR, PFM...)
is refused by :func:`read_header`: a kiosk's scans and photos are PNG or JPEG (TIFF and BMP from
scanners and the offline datasets), and a decoder we do not use is one that cannot hurt us.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from models.errors import VerificationError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class PictureHeaderError(VerificationError, ValueError):
    """The header cannot be read or asks for something we do not decode; the message says which."""


@dataclass(frozen=True)
class PictureHeader:
    format: str   # "PNG", "JPEG", "BMP" or "TIFF"
    width: int
    height: int
    channels: int = 3

    @property
    def pixels(self) -> int:
        return self.width * self.height


def read_header(data: bytes) -> PictureHeader:
    """The format and size of ``data``; ``PictureHeaderError`` for a format we do not decode or a
    header that does not hold together."""
    if data.startswith(PNG_MAGIC):
        return _png(data)
    if data.startswith(b"\xff\xd8"):
        return _jpeg(data)
    if data.startswith(b"BM"):
        return _bmp(data)
    if data[:4] in (b"II*\0", b"MM\0*"):
        return _tiff(data)
    raise PictureHeaderError(f"not a PNG, JPEG, TIFF or BMP picture ({_guess(data)}): save it as PNG or JPEG")


def _guess(data: bytes) -> str:
    """What the file looks like, for the message."""
    for magic, name in ((b"RIFF", "WebP or another RIFF file"), (b"GIF8", "GIF"), (b"\0\0\0\x0cjP  ", "JPEG 2000"),
                        (b"\xff\x4f\xff\x51", "JPEG 2000"), (b"#?RADIANCE", "Radiance HDR"), (b"\x59\xa6\x6a\x95", "Sun raster"),
                        (b"II+\0", "BigTIFF"), (b"MM\0+", "BigTIFF"), (b"%PDF", "PDF")):
        if data.startswith(magic):
            return name
    if data[4:12] in (b"ftypavif", b"ftypavis", b"ftypheic", b"ftypmif1"):
        return "AVIF/HEIF"
    if len(data) >= 2 and data[0:1] == b"P" and data[1:2] in b"1234567fF":
        return "PNM/PFM"
    return "unknown format"


def _png(data: bytes) -> PictureHeader:
    if len(data) < 33 or data[8:16] != b"\0\0\0\x0dIHDR":
        raise PictureHeaderError("PNG without its IHDR header chunk first")
    w, h = struct.unpack(">II", data[16:24])
    bit_depth, colour = data[24], data[25]
    if not (0 < w < 2**31 and 0 < h < 2**31):
        raise PictureHeaderError(f"PNG header gives an impossible size {w}x{h}")
    # Walk the chunks before the image data: an animation control chunk means an APNG.
    pos = 33
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        if kind == b"acTL":
            raise PictureHeaderError("animated PNG: save a single picture as PNG or JPEG")
        if kind in (b"IDAT", b"IEND") or length >= 2**31:
            break
        pos += 12 + length
    channels = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(colour, 4)
    del bit_depth   # libpng strips 16 bits to 8 into OpenCV's buffer: the depth costs nothing extra
    return PictureHeader("PNG", w, h, channels)


#: Frame headers: C0..CF except C4 (DHT), C8 (JPG, reserved) and CC (DAC).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: Scans a JPEG may have. A progressive file has about 10 (a camera's baseline one: 1), and the
#: decoder goes over the whole picture for each: a 8 MB file of 441 000 tiny scans took 267 s of
#: CPU (found by a review; libjpeg's djpeg has -maxscans for the same reason).
MAX_JPEG_SCANS = 100
#: Markers without a length field: TEM, RST0..7, SOI, EOI.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8), 0xD8, 0xD9})
#: In entropy-coded data a 0xFF is followed by 0x00 (a stuffed byte) or RSTn; anything else is a marker.
_MARKER_IN_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7]")


def _jpeg(data: bytes) -> PictureHeader:
    frames: list[tuple[int, int, int]] = []
    scans = 0
    pos = 2
    n = len(data)
    while True:
        if pos >= n:
            raise PictureHeaderError("JPEG ends before its end marker (truncated)")
        if data[pos] != 0xFF:
            raise PictureHeaderError(f"JPEG marker expected at byte {pos}, found 0x{data[pos]:02x}")
        while pos < n and data[pos] == 0xFF:   # any number of fill bytes may precede a marker
            pos += 1
        if pos >= n:
            raise PictureHeaderError("JPEG ends before its end marker (truncated)")
        marker = data[pos]
        pos += 1
        if marker == 0xD9:   # EOI
            break
        if marker == 0x00 or marker == 0xD8:
            raise PictureHeaderError(f"JPEG holds a misplaced marker 0x{marker:02x}")
        if marker in _STANDALONE:
            continue
        if pos + 2 > n:
            raise PictureHeaderError("JPEG ends inside a marker segment (truncated)")
        (length,) = struct.unpack(">H", data[pos:pos + 2])
        if length < 2 or pos + length > n:
            raise PictureHeaderError(f"JPEG segment 0x{marker:02x} has a length ({length}) past the end of the file")
        segment = data[pos + 2:pos + length]
        pos += length
        if marker in _SOF:
            if len(segment) < 6:
                raise PictureHeaderError("JPEG frame header too short")
            h, w = struct.unpack(">HH", segment[1:5])
            frames.append((w, h, segment[5]))
            if len(frames) > 1:
                raise PictureHeaderError("JPEG with more than one frame header: save it again as a plain JPEG")
        elif marker == 0xDA:   # SOS: its entropy-coded data runs to the next real marker
            if not frames:
                raise PictureHeaderError("JPEG scan before any frame header")
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise PictureHeaderError(f"JPEG with more than {MAX_JPEG_SCANS} scans: save it again as a plain JPEG")
            m = _MARKER_IN_SCAN.search(data, pos)
            if m is None:
                raise PictureHeaderError("JPEG ends inside its image data (truncated)")
            pos = m.start()
    if not frames:
        raise PictureHeaderError("JPEG without a frame header")
    w, h, components = frames[0]
    if w == 0 or h == 0:
        raise PictureHeaderError(f"JPEG frame header gives an impossible size {w}x{h}")
    if components not in (1, 3, 4):
        raise PictureHeaderError(f"JPEG with {components} colour components (expected 1, 3 or 4)")
    return PictureHeader("JPEG", w, h, components)


def _bmp(data: bytes) -> PictureHeader:
    if len(data) < 26:
        raise PictureHeaderError("BMP header too short")
    (dib,) = struct.unpack("<I", data[14:18])
    if dib == 12:
        w, h = struct.unpack("<HH", data[18:22])
        bpp = struct.unpack("<H", data[24:26])[0]
    elif 40 <= dib <= 124 and len(data) >= 30:
        w, h = struct.unpack("<ii", data[18:26])
        bpp = struct.unpack("<H", data[28:30])[0]
        h = abs(h)   # negative: rows stored top-down
    else:
        raise PictureHeaderError(f"BMP with an unknown header ({dib} bytes)")
    if w <= 0 or h <= 0:
        raise PictureHeaderError(f"BMP header gives an impossible size {w}x{h}")
    if bpp not in (1, 4, 8, 16, 24, 32):
        raise PictureHeaderError(f"BMP with {bpp} bits per pixel")
    return PictureHeader("BMP", w, h, 4 if bpp == 32 else 3)


_TIFF_TYPES = {3: ("H", 2), 4: ("I", 4)}   # SHORT, LONG: the only types these tags may have


def _tiff(data: bytes) -> PictureHeader:
    end = "<" if data[:2] == b"II" else ">"
    if len(data) < 8:
        raise PictureHeaderError("TIFF header too short")
    (ifd,) = struct.unpack(end + "I", data[4:8])
    if ifd < 8 or ifd + 2 > len(data):
        raise PictureHeaderError("TIFF image directory outside the file")
    (count,) = struct.unpack(end + "H", data[ifd:ifd + 2])
    if ifd + 2 + 12 * count > len(data):
        raise PictureHeaderError("TIFF image directory runs past the end of the file")
    tags: dict[int, list[int]] = {}
    seen: set[int] = set()
    for k in range(count):
        e = ifd + 2 + 12 * k
        tag, typ, n = struct.unpack(end + "HHI", data[e:e + 8])
        # libtiff keeps the first of a repeated tag (with a warning) and ignores the rest: a file
        # that gives its tile size twice, a legal one last, had OpenCV decode a tile of the first
        # (8192 x 8192 from 65 KB) behind a check that read the last. No writer repeats a tag.
        if tag in seen:
            raise PictureHeaderError(f"TIFF gives tag {tag} more than once")
        seen.add(tag)
        if tag not in (256, 257, 258, 277, 278, 322, 323):
            continue
        if typ not in _TIFF_TYPES or not 1 <= n <= 16:
            raise PictureHeaderError(f"TIFF tag {tag} has an unexpected type or count")
        fmt, size = _TIFF_TYPES[typ]
        if n * size <= 4:
            raw = data[e + 8:e + 8 + n * size]
        else:
            (off,) = struct.unpack(end + "I", data[e + 8:e + 12])
            if off + n * size > len(data):
                raise PictureHeaderError(f"TIFF tag {tag} points outside the file")
            raw = data[off:off + n * size]
        tags[tag] = list(struct.unpack(end + fmt * n, raw))
    if 256 not in tags or 257 not in tags:
        raise PictureHeaderError("TIFF without its width and length")
    w, h = tags[256][0], tags[257][0]
    spp = tags.get(277, [1])[0]
    bps = max(tags.get(258, [1]))
    if w <= 0 or h <= 0:
        raise PictureHeaderError(f"TIFF header gives an impossible size {w}x{h}")
    if not 1 <= spp <= 4 or bps > 16:
        raise PictureHeaderError(f"TIFF with {spp} samples of {bps} bits a pixel (expected at most 4 of 16)")
    # OpenCV sizes its read buffer from one strip (rows per strip x width) or one tile: neither may
    # be larger than the picture (tiles are multiples of 16, so they may pass its edge by 15 px).
    if 322 in tags or 323 in tags:
        tw, th = tags.get(322, [0])[0], tags.get(323, [0])[0]
        if not (0 < tw <= w + 15 and 0 < th <= h + 15):
            raise PictureHeaderError(f"TIFF tiles of {tw}x{th} for a {w}x{h} picture")
    return PictureHeader("TIFF", w, h, spp)
