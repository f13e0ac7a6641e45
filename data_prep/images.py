"""Map images: read any form a dataset stores them in, and resize once, at prep time, to the model's pixel budget.

Why at prep time: transit maps are 2 to 100 megapixels. Resizing each one once (to the size Qwen2.5-VL's
processor would pick anyway) keeps Parquet files, dataloader memory and per-step CPU time bounded, and makes the
processor's own resize a no-op (``smart_resize_dims`` is idempotent on its output).

Pixel budget. The released RewardMap scripts set ``data.max_pixels: 128450560`` (= 163840 x 28 x 28) and
``min_pixels: 3136``, but their dataset only applies that cap itself (a no-op for maps under 128 MP); the image
then goes through the Qwen2.5-VL-7B-Instruct processor, whose ``max_pixels`` is 12845056 (= 16384 x 28 x 28,
its ``preprocessor_config.json``), and that is the size the model really sees. ``DEFAULT_MAX_PIXELS`` is
therefore 16384 x 28 x 28: at most 16384 visual tokens (one per 28 x 28 cell), consistent with the released
max prompt length of 20000 tokens. Every entry point (and the prep command's --max-pixels) overrides it.
``RELEASED_CONFIG_MAX_PIXELS`` keeps the yaml's number for reference.

Decompression bombs. PIL warns above ``Image.MAX_IMAGE_PIXELS`` (about 89 MP) and refuses twice that.
Real maps reach the warning threshold, so ``load_image`` lifts the limit only for its own ``Image.open`` call
(``pixel_limit``) and enforces its own explicit ``max_source_pixels`` instead; the global is never left changed.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import io
import math
import os
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from data_prep.checksums import bytes_sha256, file_sha256
from data_prep.schema import RowError

PATCH_SIZE = 14  # Qwen2.5-VL's vision patch side, in pixels
MERGE_SIZE = 2  # patches merged 2 x 2 into one image token
IMAGE_FACTOR = PATCH_SIZE * MERGE_SIZE  # 28: one image token per 28 x 28 pixels
DEFAULT_MIN_PIXELS = 4 * IMAGE_FACTOR**2  # 3136, as in the released scripts and Qwen's processor
DEFAULT_MAX_PIXELS = 16384 * IMAGE_FACTOR**2  # 12845056, what Qwen2.5-VL-7B-Instruct's processor applies (see above)
RELEASED_CONFIG_MAX_PIXELS = (
    163840 * IMAGE_FACTOR**2
)  # 128450560, the released yaml's data.max_pixels (documented only)
DEFAULT_MAX_SOURCE_PIXELS = 400_000_000  # largest source image accepted (real maps reach about 100 MP)
MAX_ASPECT_RATIO = 200  # Qwen's smart_resize rejects flatter images

_LIMIT_LOCK = threading.Lock()
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"


class ImageError(RowError):
    """An image that cannot be read or resized; the message names where it came from."""


def smart_resize_dims(
    width: int, height: int, *, min_pixels: int, max_pixels: int, factor: int = IMAGE_FACTOR
) -> tuple[int, int]:
    """Qwen2.5-VL's resize rule: sides multiples of ``factor``, area in [min_pixels, max_pixels], aspect kept.

    Returns ``(width, height)``. Rounds like Qwen's ``smart_resize`` (Python ``round``), so the processor maps
    the result onto itself. As in Qwen's rule, an image scaled *up* to ``min_pixels`` can overshoot a
    ``max_pixels`` closer than about 4 x ``min_pixels``; real budgets (3136 .. 12845056) are far from that.

    >>> smart_resize_dims(5839, 5449, min_pixels=3136, max_pixels=12845056)
    (3696, 3444)
    >>> smart_resize_dims(3696, 3444, min_pixels=3136, max_pixels=12845056)
    (3696, 3444)
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if factor <= 0 or min_pixels <= 0 or max_pixels < factor * factor or min_pixels > max_pixels:
        raise ValueError(
            f"bad pixel budget: min_pixels={min_pixels}, max_pixels={max_pixels}, factor={factor} "
            f"(need 0 < min_pixels <= max_pixels and max_pixels >= factor^2)"
        )
    if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        raise ValueError(f"aspect ratio of {width}x{height} exceeds {MAX_ASPECT_RATIO}")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return w_bar, h_bar


@contextlib.contextmanager
def pixel_limit(max_pixels: int) -> Iterator[None]:
    """Within the block only, let PIL open images up to ``max_pixels`` without a decompression-bomb error.

    Serialised by a lock and restored on exit, so the process-wide default stays in force everywhere else.
    """
    with _LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _decode_text(text: str, where: str) -> bytes | Path:
    """A string is either base64 (optionally a ``data:`` URI) or a path (optionally ``file://``)."""
    s = text.strip()
    if s.startswith("data:"):
        if "," not in s:
            raise ImageError(f"{where}: data URI without a comma")
        s = s.split(",", 1)[1]
        return _b64(s, where)
    if s.startswith("file://"):
        return Path(s[len("file://") :])
    # Short strings or ones with path-like characters that exist on disk are paths; else try base64.
    if len(s) < 4096 and os.path.exists(s):
        return Path(s)
    if len(s) >= 64 and not any(c in s for c in " \\"):
        try:
            return _b64(s, where)
        except ImageError:
            pass
    return Path(s)


def _b64(s: str, where: str) -> bytes:
    try:
        return base64.b64decode("".join(s.split()), validate=True)
    except (binascii.Error, ValueError) as err:
        raise ImageError(f"{where}: not valid base64 image data ({err})") from err


def source_bytes_or_path(source: Any, *, where: str) -> bytes | Path | Image.Image:
    """Reduce any accepted image form to raw bytes, a path, or a PIL image (no decoding)."""
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, dict):
        data = source.get("bytes")
        if data:
            return bytes(data)
        path = source.get("path")
        if path:
            return Path(path)
        raise ImageError(f"{where}: image dict has neither 'bytes' nor 'path'")
    if isinstance(source, os.PathLike):
        return Path(source)
    if isinstance(source, str):
        if not source.strip():
            raise ImageError(f"{where}: empty image string")
        return _decode_text(source, where)
    raise ImageError(f"{where}: unsupported image type {type(source).__name__}")


def source_key(source: Any, *, where: str) -> str:
    """A stable identity for a source image (content hash, or path + size + mtime), for caching resizes."""
    raw = source_bytes_or_path(source, where=where)
    if isinstance(raw, bytes):
        return "sha256:" + bytes_sha256(raw)
    if isinstance(raw, Path):
        try:
            st = raw.stat()
        except FileNotFoundError as err:
            raise ImageError(f"{where}: image file not found: {str(raw)!r}") from err
        except OSError as err:
            raise ImageError(f"{where}: cannot read image file {str(raw)!r} ({err.strerror or err})") from err
        return f"path:{raw.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    digest = hashlib.sha256(raw.tobytes())
    digest.update(f"{raw.mode}{raw.size}".encode())
    return "pil:" + digest.hexdigest()


def _file_sha256(path: Path, where: str) -> str:
    try:
        return "sha256:" + file_sha256(path)
    except OSError as err:
        raise ImageError(f"{where}: cannot read image file {str(path)!r} ({err.strerror or err})") from err


def _open(raw: bytes | Path, *, where: str, max_source_pixels: int) -> Image.Image:
    """Open (header only, not decoded) under a local decompression-bomb limit, then check the size ourselves."""
    if isinstance(raw, Path) and not raw.is_file():
        raise ImageError(f"{where}: image file not found: {str(raw)!r}")
    try:
        with pixel_limit(max(max_source_pixels, 1)):
            image = Image.open(io.BytesIO(raw) if isinstance(raw, bytes) else raw)
    except Image.DecompressionBombError as err:  # above twice our cap: PIL stops before we can look
        raise ImageError(f"{where}: image is above max_source_pixels={max_source_pixels} ({err})") from err
    except (OSError, ValueError, SyntaxError) as err:
        raise _unreadable(raw, where, err) from err
    try:
        _check_size(image.size, max_source_pixels, where)
    except ImageError:
        image.close()
        raise
    return image


def _decode(image: Image.Image, raw: bytes | Path, *, where: str, draft_size: tuple[int, int] | None) -> Image.Image:
    """Decode pixels (JPEG at a reduced scale no smaller than ``draft_size`` when given); closes the file."""
    try:
        if draft_size is not None and image.format == "JPEG":
            image.draft("RGB", draft_size)
        image.load()
    except (OSError, ValueError, SyntaxError) as err:
        image.close()
        raise _unreadable(raw, where, err) from err
    return image


def _unreadable(raw: bytes | Path, where: str, err: BaseException) -> ImageError:
    what = f"file {str(raw)!r}" if isinstance(raw, Path) else f"{len(raw)} bytes ({_sniff(raw)})"
    return ImageError(f"{where}: unreadable image {what}: {err}")


def open_image(source: Any, *, where: str, max_source_pixels: int = DEFAULT_MAX_SOURCE_PIXELS) -> Image.Image:
    """Open any accepted image form lazily (header read, pixels not decoded), e.g. to read its size.

    Use it as a context manager, or call ``.load()`` / ``.convert()`` to decode. Same errors as ``load_image``.
    """
    raw = source_bytes_or_path(source, where=where)
    if isinstance(raw, Image.Image):
        _check_size(raw.size, max_source_pixels, where)
        return raw
    return _open(raw, where=where, max_source_pixels=max_source_pixels)


def load_image(
    source: Any,
    *,
    where: str,
    max_source_pixels: int = DEFAULT_MAX_SOURCE_PIXELS,
    draft_size: tuple[int, int] | None = None,
) -> Image.Image:
    """Decode an image given as a PIL image, PNG/JPEG bytes, base64 text, a ``{'bytes'|'path'}`` dict, or a path.

    Returns a loaded image (file closed). ``draft_size`` lets JPEG decode at a reduced scale no smaller than it
    (``Image.draft``), bounding memory for huge photos. Raises ``ImageError`` naming ``where`` on anything
    unreadable or larger than ``max_source_pixels``.
    """
    raw = source_bytes_or_path(source, where=where)
    if isinstance(raw, Image.Image):
        _check_size(raw.size, max_source_pixels, where)
        return raw
    image = _open(raw, where=where, max_source_pixels=max_source_pixels)
    return _decode(image, raw, where=where, draft_size=draft_size)


def _check_size(size: tuple[int, int], max_source_pixels: int, where: str) -> None:
    w, h = size
    if w * h > max_source_pixels:
        raise ImageError(f"{where}: image is {w}x{h} = {w * h} pixels, above max_source_pixels={max_source_pixels}")


def _sniff(data: bytes) -> str:
    if data.startswith(_PNG_SIGNATURE):
        return "PNG signature"
    if data.startswith(_JPEG_SIGNATURE):
        return "JPEG signature"
    return "unknown format"


def _flatten_to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with transparency composited onto white (maps with transparent backgrounds stay legible)."""
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode in ("RGB", "L") and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        background.alpha_composite(rgba)
        return background.convert("RGB")
    if image.mode == "I;16" or image.mode.startswith("I;16"):
        image = image.point(lambda v: v / 256).convert("L")  # 16-bit grey: keep the top byte
    return image if image.mode == "RGB" else image.convert("RGB")


def resize_to_budget(image: Image.Image, *, min_pixels: int, max_pixels: int) -> bytes:
    """RGB PNG bytes of ``image`` at ``smart_resize_dims`` size; identical input gives identical bytes.

    Downscaling first reduces by an integer box factor (cheap, bounded memory) and finishes with Lanczos.
    """
    target = smart_resize_dims(image.width, image.height, min_pixels=min_pixels, max_pixels=max_pixels)
    return _png_at(image, target)


def _png_at(image: Image.Image, target: tuple[int, int]) -> bytes:
    rgb = _flatten_to_rgb(image)
    if rgb.size != target:
        rgb = rgb.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    buf = io.BytesIO()
    rgb.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def prepare_image(
    source: Any,
    *,
    where: str,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_source_pixels: int = DEFAULT_MAX_SOURCE_PIXELS,
) -> bytes:
    """``load_image`` then ``resize_to_budget``: any accepted source to budget-sized RGB PNG bytes.

    The target size is known from the header, so a JPEG decodes straight at a reduced scale (``Image.draft``);
    a PNG is decoded once at full size and box-reduced before the final resample.
    """
    raw = source_bytes_or_path(source, where=where)
    try:
        if isinstance(raw, Image.Image):
            _check_size(raw.size, max_source_pixels, where)
            return resize_to_budget(raw, min_pixels=min_pixels, max_pixels=max_pixels)
        image = _open(raw, where=where, max_source_pixels=max_source_pixels)
        try:
            target = smart_resize_dims(image.width, image.height, min_pixels=min_pixels, max_pixels=max_pixels)
        except ValueError:
            image.close()
            raise
        image = _decode(image, raw, where=where, draft_size=target)  # a JPEG may now be smaller, never below target
        with image:
            return _png_at(image, target)
    except ImageError:
        raise
    except ValueError as err:
        raise ImageError(f"{where}: {err}") from err


class ResizeCache:
    """Budget-sized PNG bytes per source image, so many questions on one map resize it once.

    One cache serves one pixel budget. Keyed by content (``source_key``; files by a hash of their bytes), it
    holds PNG bytes only (a few MB per map), never decoded images.
    """

    def __init__(
        self,
        *,
        min_pixels: int = DEFAULT_MIN_PIXELS,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_source_pixels: int = DEFAULT_MAX_SOURCE_PIXELS,
    ) -> None:
        smart_resize_dims(1000, 1000, min_pixels=min_pixels, max_pixels=max_pixels)  # validate the budget early
        self.min_pixels = min_pixels
        self.max_pixels = max_pixels
        self.max_source_pixels = max_source_pixels
        self._cache: dict[str, bytes] = {}
        self._path_content: dict[str, str] = {}
        self.hits = 0
        self.misses = 0

    def get(self, source: Any, *, where: str) -> bytes:
        """Budget-sized PNG bytes for ``source`` (resized on first sight, then served from the cache).

        A file is identified by its content (hashed once per path, size and mtime), so one map reached as a
        path in one dataset and as embedded bytes in another is still resized once.
        """
        key = source_key(source, where=where)
        if key.startswith("path:"):
            content = self._path_content.get(key)
            if content is None:
                content = self._path_content[key] = _file_sha256(Path(source_bytes_or_path(source, where=where)), where)
            key = content
        cached = self._cache.get(key)
        if cached is not None:
            self.hits += 1
            return cached
        png = prepare_image(
            source,
            where=where,
            min_pixels=self.min_pixels,
            max_pixels=self.max_pixels,
            max_source_pixels=self.max_source_pixels,
        )
        self._cache[key] = png
        self.misses += 1
        return png

    def __len__(self) -> int:
        return len(self._cache)
