"""Attack 4: a picture file that makes the daemon allocate far more than its 250 MB budget.

A scan handed to the kiosk (``verify_paper`` with an image) is decoded by OpenCV, which allocates
the picture - and for a progressive JPEG every DCT coefficient - from the sizes in its header
before it reads any data. A 30 kB JPEG whose frame header says 20000 x 20000, hidden behind fill
bytes where the old size check did not look, took 2.4 GB; an 11999 x 11999 PNG was within the old
per-side limit and took 0.4 GB; TIFF, BMP, WebP and PNM sizes were not read at all. Every hostile
file is built here in a few kB (a PNG of zeros compresses 1000:1) and must be refused, with a
reason, before OpenCV sees it; a child process measures that the refusals cost no memory, and
that a legitimate picture at the pixel limit stays inside the memory the limit was sized for.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from models.picture_header import PNG_MAGIC, read_header
from models.signature_finder import (
    MAX_PICTURE_BYTES,
    MAX_PICTURE_PIXELS,
    PICTURE_MEMORY,
    UnreadablePictureError,
    decode_picture,
    read_picture,
)

ROOT = Path(__file__).resolve().parents[2]


# -- hostile files, built without allocating their pixels ----------------------------------------

def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_of_zeros(w: int, h: int) -> bytes:
    """A valid grey PNG of w x h zeros; its compressed rows are streamed, never held whole."""
    row = b"\0" * (1 + w)   # filter byte + one byte a pixel
    per = max(1, (1 << 20) // len(row))
    co, parts, done = zlib.compressobj(9), [], 0
    while done < h:
        n = min(per, h - done)
        parts.append(co.compress(row * n))
        done += n
    parts.append(co.flush())
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return PNG_MAGIC + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


def _segments(jpeg: bytes) -> list[bytes]:
    """A JPEG cut into its header segments (each with its marker) and the rest from the first SOS."""
    out, pos = [jpeg[:2]], 2
    while jpeg[pos + 1] != 0xDA:
        (n,) = struct.unpack(">H", jpeg[pos + 2:pos + 4])
        out.append(jpeg[pos:pos + 2 + n])
        pos += 2 + n
    out.append(jpeg[pos:])
    return out


def jpeg_claiming(w: int, h: int, *, progressive: bool = False, fill: bool = False, second_sof: bool = False) -> bytes:
    """A real 64x64 JPEG whose frame header is rewritten to say w x h; ``fill`` puts a comment
    segment and 0xFF fill bytes (legal, skipped by libjpeg) before it; ``second_sof`` appends a
    second frame header after the tables."""
    params = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1] if progressive else []
    ok, buf = cv2.imencode(".jpg", np.full((64, 64, 3), 180, np.uint8), params)
    assert ok
    segs = _segments(buf.tobytes())
    out = []
    for s in segs:
        if s[:2] in (b"\xff\xc0", b"\xff\xc2"):
            big = s[:5] + struct.pack(">HH", h, w) + s[9:]
            if fill:
                out.append(b"\xff\xfe\x00\x09crafted" + b"\xff\xff\xff")
                big = big[1:]   # the fill bytes supply the marker's 0xFF
            if second_sof:
                out.append(s)   # the genuine small frame first
                out.append(b"\xff\xfe\x00\x04ok")
            out.append(big)
        else:
            out.append(s)
    return b"".join(out)


def jpeg_with_scans(extra: int) -> bytes:
    """A real progressive JPEG of a small page whose last scan is repeated ``extra`` more times (legal
    for libjpeg, which decodes each over the whole picture: 441 000 of them, 8 MB, took 267 s)."""
    ok, buf = cv2.imencode(".jpg", np.full((256, 256), 250, np.uint8), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok
    data = buf.tobytes()
    last = data.rfind(b"\xff\xda")                      # the last scan runs to the EOI marker
    return data[:-2] + data[last:-2] * extra + b"\xff\xd9"


def tiff_claiming(w: int, h: int) -> bytes:
    """A little-endian grey TIFF header for w x h with one (short) uncompressed strip."""
    entries = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8 + 2 + 12 * 9 + 4), (277, 3, 1, 1), (278, 4, 1, h), (279, 4, 1, w * h)]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHI", t, typ, n) + (struct.pack("<HH", v, 0) if typ == 3 else struct.pack("<I", v))
        for t, typ, n, v in entries) + b"\0\0\0\0"
    return b"II*\0" + struct.pack("<I", 8) + ifd + b"\x80" * 4096


def tiff_with_repeated_tags(first_tile: int, second_tile: int, size: int = 1000) -> bytes:
    """A tiled grey TIFF whose directory gives the tile width and height twice: libtiff (OpenCV's
    decoder) keeps the first of a repeated tag, a reader that kept the last would see a legal
    picture while OpenCV decodes one tile of ``first_tile`` squared (a 65 KB file raised a peak by
    259 MB before it was refused)."""
    data = zlib.compress(b"\xc8" * (first_tile * first_tile), 9)
    entries = [(256, 4, 1, size), (257, 4, 1, size), (258, 3, 1, 8), (259, 3, 1, 8), (262, 3, 1, 1),
               (277, 3, 1, 1), (284, 3, 1, 1), (322, 4, 1, first_tile), (322, 4, 1, second_tile),
               (323, 4, 1, first_tile), (323, 4, 1, second_tile), (324, 4, 1, 8 + 2 + 12 * 13 + 4),
               (325, 4, 1, len(data))]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHI", t, typ, n) + (struct.pack("<HH", v, 0) if typ == 3 else struct.pack("<I", v))
        for t, typ, n, v in entries) + b"\0\0\0\0"
    return b"II*\0" + struct.pack("<I", 8) + ifd + data


def bmp_claiming(w: int, h: int) -> bytes:
    dib = struct.pack("<IiiHHIIiiII", 40, w, -h, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54 + 4096, 0, 0, 54) + dib + b"\x80" * 4096


def hostile() -> dict[str, tuple[bytes, str]]:
    """name -> (file bytes, what the refusal must say)."""
    return {
        "jpeg-sof-20000-behind-fill-bytes": (jpeg_claiming(20000, 20000, fill=True), "too large"),
        "jpeg-progressive-11000": (jpeg_claiming(11000, 11000, progressive=True), "too large"),
        "jpeg-two-frame-headers": (jpeg_claiming(20000, 20000, second_sof=True), "more than one frame header"),
        "jpeg-5000-scans": (jpeg_with_scans(5000), "more than 100 scans"),
        "png-11999": (png_of_zeros(11999, 11999), "too large"),
        "tiff-11000": (tiff_claiming(11000, 11000), "too large"),
        "tiff-repeated-tile-tags": (tiff_with_repeated_tags(8192, 1008), "more than once"),
        "bmp-11000": (bmp_claiming(11000, 11000), "too large"),
        "webp": (cv2.imencode(".webp", np.full((64, 64, 3), 180, np.uint8))[1].tobytes(), "WebP"),
        "ppm-11000": (b"P6\n11000 11000\n255\n" + b"\x80" * 4096, "PNM"),
        "oversized-file": (PNG_MAGIC + b"\0" * (MAX_PICTURE_BYTES + 1), "file too large"),
    }


@pytest.fixture(scope="module")
def hostile_files() -> dict[str, tuple[bytes, str]]:
    return hostile()


HOSTILE = ("jpeg-sof-20000-behind-fill-bytes", "jpeg-progressive-11000", "jpeg-two-frame-headers", "jpeg-5000-scans",
           "png-11999",
           "tiff-11000", "tiff-repeated-tile-tags", "bmp-11000", "webp", "ppm-11000", "oversized-file")


def test_every_hostile_file_is_tested(hostile_files: dict[str, tuple[bytes, str]]) -> None:
    assert set(hostile_files) == set(HOSTILE)


def test_a_progressive_jpeg_with_a_few_scans_more_still_reads(tmp_path: Path) -> None:
    """The scan bound sits far above what encoders write: the same file with 50 scans is read."""
    path = tmp_path / "scan.jpg"
    path.write_bytes(jpeg_with_scans(40))
    assert read_picture(path).shape[:2] == (256, 256)


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_picture_is_refused_before_decoding(name: str, hostile_files: dict[str, tuple[bytes, str]],
                                                      tmp_path: Path) -> None:
    data, reason = hostile_files[name]
    path = tmp_path / "scan.bin"
    path.write_bytes(data)
    with pytest.raises(UnreadablePictureError, match=reason):
        read_picture(path)


def test_a_huge_file_or_a_fifo_is_refused_without_being_read_whole(tmp_path: Path) -> None:
    # A sparse 2 GiB file: read whole, it would cost 2 GiB before the size check refused it.
    huge = tmp_path / "huge.png"
    with huge.open("wb") as f:
        f.write(PNG_MAGIC)
        f.truncate(2 << 30)
    fifo = tmp_path / "endless.png"
    os.mkfifo(fifo)
    writer = subprocess.Popen([sys.executable, "-c",
                               "import sys\nwith open(sys.argv[1], 'wb') as f:\n    try:\n        while True: f.write(bytes(1 << 20))\n"
                               "    except BrokenPipeError: pass", str(fifo)])
    try:
        for path in (huge, fifo):
            with pytest.raises(UnreadablePictureError, match=r"file too large \(more than 8\.4 MB\)"):
                read_picture(path)
    finally:
        writer.kill()
        writer.wait(10)


def test_headers_are_read_where_the_decoder_reads_them() -> None:
    # The crafted frame header is found behind the comment and the fill bytes, progressive or not.
    for progressive in (False, True):
        head = read_header(jpeg_claiming(20000, 12345, progressive=progressive, fill=True))
        assert (head.format, head.width, head.height) == ("JPEG", 20000, 12345)
    head = read_header(png_of_zeros(300, 200))
    assert (head.format, head.width, head.height) == ("PNG", 300, 200)


@pytest.mark.parametrize("ext,params", [(".png", []), (".jpg", []), (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
                                        (".tiff", []), (".bmp", [])], ids=["png", "jpeg", "jpeg-progressive", "tiff", "bmp"])
def test_ordinary_pictures_still_decode(ext: str, params: list[int]) -> None:
    pixels = np.full((956, 1340, 3), 200, np.uint8)   # a 300 dpi scan of a signature area: at the limit
    assert 956 * 1340 <= MAX_PICTURE_PIXELS < 957 * 1340
    ok, buf = cv2.imencode(ext, pixels, params)
    assert ok
    head = read_header(buf.tobytes())
    assert (head.width, head.height) == (1340, 956)
    assert decode_picture(buf.tobytes()).shape == (956, 1340, 3)


def test_one_row_over_the_pixel_budget_is_refused() -> None:
    w = 2048
    h = MAX_PICTURE_PIXELS // w + 1
    with pytest.raises(UnreadablePictureError, match="megapixels"):
        decode_picture(png_of_zeros(w, h))
    assert decode_picture(png_of_zeros(w, h - 1)).shape == (h - 1, w, 3)


# -- memory, measured in a child process ---------------------------------------------------------

_CHILD = r"""
import json, sys
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/tests/security"]
import cv2, numpy as np
from models.signature_finder import UnreadablePictureError, decode_picture, find_signature

def peak_mb():   # VmHWM since the last reset, less the resident memory at the reset
    with open("/proc/self/status") as f:
        v = {l.split(":")[0]: int(l.split()[1]) for l in f if l.startswith(("VmHWM", "VmRSS"))}
    return v["VmHWM"] / 1024

def reset():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    with open("/proc/self/status") as f:
        return [int(l.split()[1]) for l in f if l.startswith("VmRSS")][0] / 1024

def scan(w, h, box=True):
    img = np.full((h, w, 3), 235, np.uint8)
    if box:
        cv2.rectangle(img, (w // 4, h // 3), (3 * w // 4, 2 * h // 3), (20, 20, 20), 4)
    for k in range(5):
        cv2.line(img, (w // 4 + 50 + k * w // 20, h // 2), (w // 4 + k * w // 20 + w // 10, h // 2 + h // 12), (40, 40, 120), 5)
    return cv2.imencode(".png", img)[1].tobytes()

import test_pictures as tp
hostile = {k: v[0] for k, v in tp.hostile().items()}
decode_picture(scan(400, 300))   # codecs loaded before measuring
out = {}
for name, data in hostile.items():
    base = reset()
    try:
        decode_picture(data)
        refused = False
    except UnreadablePictureError:
        refused = True
    out[name] = [refused, round(peak_mb() - base, 1)]
print(json.dumps(out))
"""

# A picture at the pixel limit, decoded and its signature found, in a process of its own (the
# allocator keeps what an earlier picture freed, which would hide this one's peak): a scan with a
# signature box, and one without (the whole page searched for ink: the larger peak).
_LEGIT_CHILD = _CHILD.split("import test_pictures as tp")[0] + r"""
from models.signature_finder import MAX_PICTURE_PIXELS
for small_box in (True, False):   # codecs and OpenCV's first-use buffers, as a running kiosk has them
    find_signature(decode_picture(scan(400, 300, box=small_box)))
w = 1340
data = scan(w, MAX_PICTURE_PIXELS // w, box=sys.argv[2] == "box")
base = reset()
found = find_signature(decode_picture(data))
print(json.dumps({"peak_mb": round(peak_mb() - base, 1), "source": found.source}))
"""


def _child(code: str, env: dict[str, str] | None = None, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, str(ROOT), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc peak-RSS reset")
def test_hostile_pictures_cost_no_memory_and_a_legit_one_fits_its_budget() -> None:
    res = _child(_CHILD)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for name, (refused, grew) in out.items():
        assert refused and grew < 8, f"{name}: refused {refused}, the peak grew by {grew} MB"
    # The pixel limit was sized so that decoding and finding the signature fit PICTURE_MEMORY.
    for layout, source in (("box", "scan: signature box"), ("whole", "scan: whole picture")):
        res = _child(_LEGIT_CHILD, None, layout)
        assert res.returncode == 0, res.stderr[-2000:]
        legit = json.loads(res.stdout.strip().splitlines()[-1])
        assert legit["source"] == source
        assert 5 < legit["peak_mb"] <= PICTURE_MEMORY / 2**20, legit


def test_opencv_own_cap_is_a_clean_refusal_and_matches_the_unit() -> None:
    # The systemd unit gives OpenCV the same pixel cap, read when cv2 is imported.
    unit = (ROOT / "systemd" / "sigkiosk.service").read_text()
    assert f"Environment=OPENCV_IO_MAX_IMAGE_PIXELS={MAX_PICTURE_PIXELS}\n" in unit
    # Behind the header check: when OpenCV's cap refuses (it raises), the caller gets the same
    # clear error as for any unreadable picture.
    code = ("import sys; sys.path.insert(0, sys.argv[1])\n"
            "import cv2, numpy as np\n"
            "from models.signature_finder import UnreadablePictureError, decode_picture\n"
            "data = cv2.imencode('.png', np.zeros((100, 100), np.uint8))[1].tobytes()\n"
            "try:\n    decode_picture(data); print('decoded')\n"
            "except UnreadablePictureError as e:\n    print('refused:', e)\n")
    res = _child(code, {"OPENCV_IO_MAX_IMAGE_PIXELS": "1000"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert "refused:" in res.stdout and "not a picture OpenCV can read" in res.stdout
