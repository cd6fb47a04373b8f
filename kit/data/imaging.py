"""Image preparation and record serialization without TensorFlow (the record writer's worker side).

The writer's worker processes import only this module (numpy-free: Pillow and the standard library),
so they start in a fraction of a second instead of paying for a TensorFlow import each (numpy loads only
for the rare image of more than 8 bits per pixel).

Resize policy (``prepare_image``), applied to every image the writer stores:

- ``"crop"`` (default): scale so the *shorter* side is ``size``, keeping the aspect ratio, then take
  the centred ``size`` x ``size`` square. Dermoscopy and histology tiles centre the lesion, and a
  4:3 HAM10000 image squashed to a square would distort the very shape (asymmetry, border) that
  tells classes apart. Square images are simply resized.
- ``"squash"``: resize to ``size`` x ``size`` ignoring the aspect ratio (what most public
  notebooks do with ``cv2.resize``), for users who want every pixel of the original field.

Pixel depth: 16-bit grey images (PCam-style TIFFs, mode ``I;16``) are scaled from 0..65535 to 0..255,
32-bit integer ones the same when their pixels fit in 16 bits (as they are when they fit in 8), and
float ones (mode ``F``) from 0..1 (or 0..255 when their pixels lie there) to 0..255; any other range,
and NaN or infinite pixels, is refused with the range found. Pillow's own conversion would clip them
to flat white or black without a word.

Orientation: a JPEG's EXIF orientation tag is applied, as image viewers do (a phone photo of a lesion
is stored sideways and shown upright), so the records hold what the user saw.

Resampling is Pillow's antialiased bicubic. JPEGs are first decoded with libjpeg's DCT scaling
(``Image.draft``) at the smallest of 1/1, 1/2, 1/4, 1/8 scale that still covers ``size``: this is
the area-averaging reduction libjpeg does for free, and it makes large JPEGs several times faster
to shrink. Images are stored as baseline JPEG (quality 95 by default, 4:2:0), RGB.

``example_bytes`` writes a ``tf.train.Example`` in protobuf wire format by hand; kit.data.records parses
it with ``tf.io.parse_single_example`` like any other Example.
"""

from __future__ import annotations

import functools
import io
import math
import numbers
import os
import re
import struct
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Mapping, Sequence

from PIL import Image, ImageOps, UnidentifiedImageError

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

RESIZE_POLICIES = ("crop", "squash")
JPEG_QUALITY = 95


class ImageError(ValueError):
    """An image file that cannot be read (empty, not an image, truncated or corrupt)."""


# An image stored inside an HDF5 file (ISIC 2024's train-image.hdf5: one dataset of encoded JPEG bytes per
# isic_id) is named "FILE.hdf5::KEY" wherever kit passes image paths around.
HDF5_SEP = "::"
_H5_FILES: dict[str, "_H5File"] = {}  # open HDF5 files of this process: opening one per image costs more than the read
# A forked worker must open its own handles: an HDF5 handle shared across fork is not safe to read from.
os.register_at_fork(after_in_child=_H5_FILES.clear)


def hdf5_member(file: str | Path, key: str) -> str:
    """The path kit uses for the image stored under ``key`` in the HDF5 ``file``."""
    return f"{file}{HDF5_SEP}{key}"


def _split_member(path: str) -> tuple[str, str] | None:
    if HDF5_SEP not in path:
        return None
    file, key = path.rsplit(HDF5_SEP, 1)
    return file, key


class _H5File:
    """One open HDF5 file: h5py for the layout, plus a plain descriptor to read stored bytes directly.

    h5py's ``file[key][()]`` costs about 75 us per member (a Python object per dataset, a selection, a
    copy); an image stored as one contiguous unfiltered scalar (ISIC 2024's layout) is just bytes at an
    offset, which the dataset's low-level handle gives in about 11 us and ``os.pread`` reads in 4 us.
    Any other layout (chunked, compressed, variable-length) is read through h5py as before.
    """

    def __init__(self, file: str) -> None:
        import h5py

        self.h5 = h5py.File(file, "r")
        self.fd = os.open(file, os.O_RDONLY)
        self._fid = self.h5.id

    def stored(self, key: str) -> tuple[int, int, bool] | None:
        """(offset, bytes, strip NULs) of a member whose value is its stored bytes, else None."""
        import h5py

        try:
            ds = h5py.h5d.open(self._fid, key.encode())
        except KeyError:
            raise OSError(f"no key {key!r} in {self.h5.filename}") from None
        dtype = ds.dtype
        raw = (dtype.kind == "S" and ds.shape == ()) or dtype.kind == "V" or (dtype.kind == "u" and dtype.itemsize == 1)
        plist = ds.get_create_plist()
        offset = ds.get_offset()
        if not raw or offset is None or plist.get_layout() != h5py.h5d.CONTIGUOUS or plist.get_nfilters():
            return None
        # h5py drops a fixed-length string's trailing NULs; a JPEG ends in FF D9, so this only keeps parity
        return offset, ds.get_storage_size(), dtype.kind == "S"

    def read(self, key: str) -> bytes:
        """The member's bytes, as ``bytes(file[key][()])`` gives them."""
        where = self.stored(key)
        if where is None:
            value = self.h5[key][()]
            return bytes(value.tobytes() if hasattr(value, "tobytes") else value)
        offset, n, strip = where
        data = os.pread(self.fd, n, offset)
        if len(data) != n:
            raise OSError(f"{self.h5.filename}: truncated (member {key!r} ends past the end of the file)")
        return data.rstrip(b"\0") if strip else data

    def size(self, key: str) -> int:
        """Bytes stored for the member."""
        where = self.stored(key)
        return int(self.h5[key].nbytes) if where is None else where[1]


def _h5(file: str) -> _H5File:
    handle = _H5_FILES.get(file)
    if handle is None:
        handle = _H5_FILES[file] = _H5File(file)
    return handle


def read_image_bytes(path: str | Path) -> bytes:
    """The encoded bytes of an image file, or of an HDF5 member ("FILE.hdf5::KEY"); OSError when unreadable."""
    member = _split_member(str(path))
    if member is None:
        return Path(path).read_bytes()
    file, key = member
    try:
        return _h5(file).read(key)
    except KeyError:
        raise OSError(f"no key {key!r} in {file}") from None


MAX_AUTO_SIZE = 256  # the records' side kit chooses for large images (--size to go higher)
MIN_SIZE = 8


def typical_size(paths: Sequence[str | Path], sample: int = 64) -> int:
    """The records' side for images of these sizes: the median shorter side of up to ``sample`` images spread over
    ``paths``, within [MIN_SIZE, MAX_AUTO_SIZE]; MAX_AUTO_SIZE when none can be read (the writer names bad ones).

    Upscaling 8 px digits or 96 px tiles to 256 px adds no detail, only cost (an EfficientNet on digits at 256 px
    took 26 minutes); larger photographs are cut down to what a GPU trains at."""
    paths = list(paths)
    if not paths:
        return MAX_AUTO_SIZE
    step = max(1, len(paths) // sample)
    sides = []
    for path in paths[::step][:sample]:
        try:
            member = _split_member(str(path))
            with Image.open(io.BytesIO(read_image_bytes(path)) if member else path) as im:
                sides.append(min(im.size))
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
    if not sides:
        return MAX_AUTO_SIZE
    return int(min(MAX_AUTO_SIZE, max(MIN_SIZE, sorted(sides)[len(sides) // 2])))


def image_byte_size(path: str | Path) -> int:
    """Bytes of an image file or HDF5 member without reading it (-1 when it cannot be found)."""
    member = _split_member(str(path))
    try:
        if member is None:
            return Path(path).stat().st_size
        file, key = member
        return _h5(file).size(key)
    except (OSError, KeyError):
        return -1


def prepare_image(data: bytes, size: int, policy: str = "crop") -> Image.Image:
    """Decode ``data`` and resize it to ``size`` x ``size`` RGB by ``policy`` (see the module doc)."""
    return _resized(_open(data), size, policy)


def _open(data: bytes) -> Image.Image:
    """The image in ``data``, its header read and its pixels not yet decoded."""
    if not data:
        raise ImageError("empty file (0 bytes)")
    try:
        return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageError(f"too many pixels to decode safely ({exc})") from None
    except UnidentifiedImageError:
        raise ImageError("not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"corrupt image ({exc})") from None


def _resized(im: Image.Image, size: int, policy: str) -> Image.Image:
    """Decode an opened image (a JPEG at the smallest DCT scale that covers ``size``) and resize it by ``policy``."""
    if policy not in RESIZE_POLICIES:
        raise ValueError(f"resize policy must be one of {RESIZE_POLICIES}. Received: {policy!r}")
    try:
        if im.format == "JPEG":
            im.draft("RGB", (size, size))
        im.load()
    except Image.DecompressionBombError as exc:
        raise ImageError(f"too many pixels to decode safely ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"corrupt image ({exc})") from None
    if _orientation(im) != 1:
        im = ImageOps.exif_transpose(im)
    if im.mode in _DEEP_MODES:
        im = _to_8bit(im)
    if im.mode != "RGB":
        im = im.convert("RGB")
    w, h = im.size
    if (w, h) == (size, size):
        return im
    side = min(w, h)
    box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2) if policy == "crop" else (0, 0, w, h)
    return im.resize((size, size), Image.Resampling.BICUBIC, box=box)


# Modes whose pixels do not fit 0..255: Pillow's convert("RGB") clips them (flat white or black).
_DEEP_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_EXIF_ORIENTATION = 0x0112


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation tag of ``im`` (1, upright, when it has none or it cannot be read)."""
    try:
        return int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except (OSError, SyntaxError, ValueError, TypeError):
        return 1


def _to_8bit(im: Image.Image) -> Image.Image:
    """A greyscale image of more than 8 bits per pixel scaled to 8 bits by its depth (module doc), or ImageError."""
    import numpy as np  # only here: the writer's workers stay numpy-free for the usual 8-bit images

    a = np.asarray(im)
    if a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise ImageError("float image with NaN or infinite pixels")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0 or hi > 255:
            raise ImageError(f"float image with pixels in {lo:g}..{hi:g}; kit reads float images in 0..1 or 0..255")
        scale = 255.0 if hi <= 1 else 1.0
    else:
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 65535:
            raise ImageError(f"{a.dtype.itemsize * 8}-bit image with pixels in {lo}..{hi}; kit reads 0..65535")
        scale = 1.0 if (im.mode == "I" and hi <= 255) else 255.0 / 65535.0
    return Image.fromarray(np.clip(np.rint(a.astype(np.float64) * scale), 0, 255).astype(np.uint8), "L")


def encode_jpeg(im: Image.Image, quality: int = JPEG_QUALITY) -> bytes:
    """Baseline RGB JPEG bytes of ``im``."""
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


# --- tf.train.Example in protobuf wire format ----------------------------------------------------


def _varint(n: int) -> bytes:
    if 0 <= n < 0x80:
        return _SMALL_VARINTS[n]
    n &= (1 << 64) - 1  # int64 fields: two's complement, so -1 takes 10 bytes as protobuf writes it
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL_VARINTS = [bytes((i,)) for i in range(0x80)]
# A scalar float Feature is always float_list (field 2, 6 bytes) holding one packed float (field 1, 4 bytes):
# only the 4 value bytes change, so metadata-heavy records (ISIC 2024: 41 columns) serialise several times faster.
_FLOAT_FEATURE = b"\x12\x06\x0a\x04"
_FLOAT = struct.Struct("<f")


def _len_field(num: int, payload: bytes) -> bytes:
    return _varint((num << 3) | 2) + _varint(len(payload)) + payload


def _feature(value: bytes | str | int | float | Sequence) -> bytes:
    """One Feature message: bytes_list (1), float_list (2, packed) or int64_list (3, packed)."""
    if isinstance(value, float):
        return _FLOAT_FEATURE + _FLOAT.pack(value)
    if isinstance(value, int) and not isinstance(value, bool):
        packed = _varint(value)
        return _len_field(3, b"\x0a" + _varint(len(packed)) + packed)
    values = value if isinstance(value, (list, tuple)) else [value]
    if all(isinstance(v, (bytes, str)) for v in values):
        items = b"".join(_len_field(1, v.encode() if isinstance(v, str) else v) for v in values)
        return _len_field(1, items)
    if all(isinstance(v, numbers.Integral) for v in values):
        return _len_field(3, _len_field(1, b"".join(_varint(int(v)) for v in values)))
    floats = [float(v) for v in values]
    return _len_field(2, _len_field(1, struct.pack(f"<{len(floats)}f", *floats)))


@functools.lru_cache(maxsize=4096)
def _key_field(key: str) -> bytes:
    return _len_field(1, key.encode())


@functools.lru_cache(maxsize=4096)
def _float_entry_prefix(key: str) -> bytes:
    """Everything of a scalar float's map entry but its 4 value bytes (the same for every record)."""
    inner = _key_field(key) + _len_field(2, _FLOAT_FEATURE + b"\0\0\0\0")
    return _varint((1 << 3) | 2) + _varint(len(inner)) + inner[:-4]


def _entry(key: str, value: bytes | str | int | float | Sequence) -> bytes:
    if isinstance(value, float):
        return _float_entry_prefix(key) + _FLOAT.pack(value)
    return _len_field(1, _key_field(key) + _len_field(2, _feature(value)))


def example_bytes(features: Mapping[str, bytes | str | int | float | Sequence]) -> bytes:
    """Serialize a ``tf.train.Example``: bytes/str -> bytes_list, int -> int64_list, float -> float_list."""
    return _len_field(1, b"".join([_entry(key, value) for key, value in features.items()]))


# --- TFRecord framing (the writer needs no TensorFlow) ----------------------------------------------


def _crc32c_python(data: bytes) -> int:
    """CRC32C in pure Python: only where google-crc32c is missing (a kernel that installed kit with --no-deps)."""
    if not _CRC_TABLE:
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
            _CRC_TABLE.append(c)
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


_CRC_TABLE: list[int] = []
try:  # the C (hardware CRC32C) implementation: framing 100 MB shards in Python would crawl
    from google_crc32c import value as _crc32c
except ImportError:  # pragma: no cover - exercised by the test that hides the module
    _crc32c = _crc32c_python


def _masked_crc(data: bytes) -> int:
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
    """One record in TFRecord framing: length, its masked CRC32C, the data, its masked CRC32C."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", _masked_crc(length)) + data + struct.pack("<I", _masked_crc(data))


class TFRecordFile:
    """A TFRecord file written record by record without TensorFlow (what ``tf.io.TFRecordWriter`` writes)."""

    def __init__(self, path: str | Path) -> None:
        self._f = open(path, "wb")

    def write(self, data: bytes) -> None:
        """Append one serialized record."""
        self._f.write(frame_record(data))

    def close(self) -> None:
        """Flush and close the file."""
        self._f.close()

    def __enter__(self) -> "TFRecordFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_tfrecord(path: str | Path, records: Sequence[bytes]) -> None:
    """Write ``records`` in TFRecord framing."""
    with TFRecordFile(path) as f:
        for data in records:
            f.write(data)


def count_tfrecords(path: str | Path) -> int:
    """Records in a TFRecord file, read from its framing alone (each length and its checksum; the payloads are
    skipped, so a 100 MB shard is counted in milliseconds). ValueError naming the byte offset when the framing is
    broken: a truncated file, random bytes, or a length whose checksum does not match."""
    n, at = 0, 0
    with open(path, "rb") as f:
        end = os.fstat(f.fileno()).st_size
        while at < end:
            head = f.read(12)
            if len(head) < 12:
                raise ValueError(f"truncated at byte {at} (record {n + 1} has no complete header)")
            length, crc = struct.unpack("<QI", head)
            if _masked_crc(head[:8]) != crc:
                raise ValueError(f"not TFRecord data at byte {at} (record {n + 1}'s length checksum is wrong)")
            at += 12 + length + 4
            if at > end:
                raise ValueError(f"truncated: record {n + 1} runs past the end of the file ({end} bytes)")
            f.seek(at)
            n += 1
    return n


def read_tfrecords(path: str | Path) -> Iterator[bytes]:
    """The payloads of a TFRecord file, in order (framing checked as ``count_tfrecords`` checks it)."""
    with open(path, "rb") as f:
        data = f.read()
    at, n = 0, 0
    while at < len(data):
        length, crc = struct.unpack_from("<QI", data, at)
        if _masked_crc(data[at:at + 8]) != crc or at + 12 + length + 4 > len(data):
            raise ValueError(f"{path}: damaged record {n + 1} at byte {at}")
        yield data[at + 12:at + 12 + length]
        at += 12 + length + 4
        n += 1


# --- the writer's worker processes ----------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Make this worker process get SIGKILL when ``parent`` dies (Linux), so a killed ``kit records`` leaves no
    workers behind; exits at once if the parent is already gone."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no prctl (an unusual libc): workers then end when they next find the pool gone
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def worker_pool(workers: int) -> "ProcessPoolExecutor":
    """A pool of ``workers`` processes that die with this one (see :func:`die_with_parent`)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # Fork on Linux: workers run only kit.data.imaging (Pillow), never TensorFlow, so TensorFlow's
    # threads in this process are harmless to them, and forking (unlike spawn or a fork server)
    # does not re-run the caller's script, which a user's plain script without a __main__ guard
    # would need. Elsewhere spawn is the only safe choice.
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") and "fork" in methods else "spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=die_with_parent,
                               initargs=(os.getpid(),))


def sha1_of(path: str | Path) -> str:
    """SHA-1 of an image's bytes (a file or an HDF5 member); "" for a missing or empty one, never a duplicate."""
    import hashlib

    try:
        data = read_image_bytes(path)
    except OSError:
        return ""
    return hashlib.sha1(data).hexdigest() if data else ""


def sha1_all(paths: Sequence[str]) -> list[str]:
    """``sha1_of`` for each path: a worker process's share of duplicate detection."""
    return [sha1_of(p) for p in paths]


# --- the writer's unit of work -------------------------------------------------------------------


def make_records(
    rows: Sequence[tuple[str, Mapping[str, object]]], size: int, policy: str = "crop", quality: int = JPEG_QUALITY
) -> list[tuple[bytes | None, str]]:
    """For each (path, fields) row: (serialized Example, "") or (None, reason) when the image is bad.

    ``fields`` holds every feature but the image; the prepared JPEG is added as ``image``.
    """
    return [(example_bytes({"image": jpeg, **fields}), note) if jpeg is not None else (None, note)
            for (_, fields), (jpeg, note) in zip(rows, make_jpegs(rows, size, policy, quality))]


def make_jpegs(
    rows: Sequence[tuple[str, Mapping[str, object]]], size: int, policy: str = "crop", quality: int = JPEG_QUALITY
) -> list[tuple[bytes | None, str]]:
    """For each (path, fields) row: (the JPEG bytes its record would store, note) or (None, reason); the note is
    "" or what Pillow warned about that image (the caller names the image: Pillow's own warning would not).

    What a streamed test split is made of: the records' image without the record around it (no Example to
    serialize, nor to parse), decoded by the same pipeline step that decodes records.
    """
    out: list[tuple[bytes | None, str]] = []
    with warnings.catch_warnings(record=True) as caught:  # once per chunk: cheaper than once per image
        warnings.simplefilter("always")
        for path, _ in rows:
            seen = len(caught)
            try:
                out.append((prepared_jpeg(read_image_bytes(path), size, policy, quality),
                            "; ".join(dict.fromkeys(_warning_text(w.message) for w in caught[seen:]))))
            except ImageError as exc:
                out.append((None, str(exc)))
            except OSError as exc:
                out.append((None, f"cannot read ({exc.strerror or exc})"))
    return out


_BOMB_RE = re.compile(r"\((\d+) pixels\) exceeds limit of (\d+) pixels")


def _warning_text(message: Warning | str) -> str:
    """Pillow's warning about one image in kit's words (a large image is legal below twice Pillow's limit)."""
    m = _BOMB_RE.search(str(message)) if isinstance(message, Image.DecompressionBombWarning) else None
    if m:
        return (f"{int(m[1]):,} pixels, above Pillow's decompression-bomb warning size of {int(m[2]):,}; read all "
                "the same (twice that is refused as a bad image)")
    return " ".join(str(message).split())


def prepared_jpeg(data: bytes, size: int, policy: str = "crop", quality: int = JPEG_QUALITY) -> bytes:
    """The JPEG bytes the records store for an encoded image: ``data`` itself when it is already an RGB JPEG
    of ``size`` x ``size`` (a second JPEG generation would only lose detail and time), else resized by
    ``policy`` and encoded at ``quality``."""
    im = _open(data)
    # a JPEG cut short keeps its header: only one whose end-of-image marker follows its last scan passes as
    # stored (bytes after the marker are harmless); a truncated one is decoded here, where it fails with its
    # path, not later in TensorFlow's decoder. Neither marker can occur inside entropy-coded data.
    complete = data.rfind(b"\xff\xd9") > data.rfind(b"\xff\xda") >= 0
    if im.format == "JPEG" and im.mode == "RGB" and im.size == (size, size) and _orientation(im) == 1 and complete:
        return data
    return encode_jpeg(_resized(im, size, policy), quality)


def jpeg_size_estimate(size: int, quality: int = JPEG_QUALITY) -> int:
    """Rough bytes per stored image, to size shards (about 0.6 bytes per pixel at quality 95)."""
    return int(math.ceil(size * size * (0.6 if quality >= 90 else 0.3)))
