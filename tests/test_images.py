"""data_prep.images: Qwen's resize rule, every accepted image form, bomb limits kept local, deterministic PNGs."""

from __future__ import annotations

import base64
import hashlib
import io
import math
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from data_prep.images import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_PIXELS,
    ImageError,
    ResizeCache,
    load_image,
    pixel_limit,
    prepare_image,
    resize_to_budget,
    smart_resize_dims,
    source_key,
)
from data_prep.schema import RowError


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _map_like(size: tuple[int, int] = (300, 200), mode: str = "RGB") -> Image.Image:
    """A small picture with structure (lines on white), so resampling differences would show."""
    image = Image.new("RGB", size, "white")
    for x in range(0, size[0], 7):
        for y in range(size[1]):
            image.putpixel((x, y), (200, 30, 30))
    return image.convert(mode)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` with one tiny (truncated) IDAT: opens cheaply, never loads."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")
    )


# --- smart_resize_dims ------------------------------------------------------------------------------------------


def test_defaults_follow_the_released_setup() -> None:
    assert DEFAULT_MIN_PIXELS == 3136
    assert DEFAULT_MAX_PIXELS == 16384 * 28 * 28


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((5839, 5449), (3696, 3444)),  # ReasonMap's average map, capped
        ((28, 28), (56, 56)),  # below min_pixels: scaled up
        ((1000, 600), (1008, 588)),  # within budget: rounded to multiples of 28
    ],
)
def test_smart_resize_known_values(size: tuple[int, int], expected: tuple[int, int]) -> None:
    assert smart_resize_dims(*size, min_pixels=3136, max_pixels=DEFAULT_MAX_PIXELS) == expected


@settings(max_examples=300, deadline=None)
@given(
    w=st.integers(1, 40000),
    h=st.integers(1, 40000),
    max_tokens=st.integers(16, 20000),  # max >= 4 x min (see smart_resize_dims)
)
def test_smart_resize_invariants(w: int, h: int, max_tokens: int) -> None:
    min_pixels, max_pixels = 3136, max_tokens * 784
    if max(w, h) / min(w, h) > 200:
        with pytest.raises(ValueError, match="aspect ratio"):
            smart_resize_dims(w, h, min_pixels=min_pixels, max_pixels=max_pixels)
        return
    rw, rh = smart_resize_dims(w, h, min_pixels=min_pixels, max_pixels=max_pixels)
    assert rw % 28 == 0 and rh % 28 == 0
    assume(max(w, h) / min(w, h) <= 10 and min(w, h) >= 28)  # map-like shapes: Qwen's clamps stay out of play
    assert min_pixels <= rw * rh <= max_pixels
    # idempotent: the processor, given our output and the same budget, keeps it as is
    assert smart_resize_dims(rw, rh, min_pixels=min_pixels, max_pixels=max_pixels) == (rw, rh)
    # aspect kept up to the rounding of each side to a 28-px cell
    assert abs(math.log((rw / rh) / (w / h))) <= math.log((min(rw, rh) + 28) / max(min(rw, rh) - 28, 1)) + 1e-9


def test_smart_resize_matches_transformers_qwen2_vl() -> None:
    reference = pytest.importorskip("transformers.models.qwen2_vl.image_processing_pil_qwen2_vl").smart_resize
    for w, h in [(5839, 5449), (9921, 9908), (1682, 1551), (4600, 5600), (100, 3000), (31, 29), (28, 5000)]:
        for max_pixels in (DEFAULT_MAX_PIXELS, 1280 * 784, 256 * 784):
            rh, rw = reference(h, w, factor=28, min_pixels=3136, max_pixels=max_pixels)
            assert smart_resize_dims(w, h, min_pixels=3136, max_pixels=max_pixels) == (rw, rh)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_pixels": 0, "max_pixels": 10**6},
        {"min_pixels": 10**6, "max_pixels": 10**5},
        {"min_pixels": 1, "max_pixels": 100},
    ],
)
def test_smart_resize_rejects_bad_budgets(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="pixel budget"):
        smart_resize_dims(100, 100, **kwargs)


# --- load_image ---------------------------------------------------------------------------------------------------


def test_load_image_accepts_every_form(tmp_path: Path) -> None:
    image = _map_like()
    png = _png(image)
    path = tmp_path / "map.png"
    path.write_bytes(png)
    b64 = base64.b64encode(png).decode()
    forms = [
        image,
        png,
        bytearray(png),
        _jpeg(image),
        b64,
        "data:image/png;base64," + b64,
        b64[:50] + "\n" + b64[50:],  # wrapped base64
        {"bytes": png, "path": None},
        {"bytes": None, "path": str(path)},
        str(path),
        path,
        "file://" + str(path),
    ]
    for form in forms:
        loaded = load_image(form, where="test")
        assert loaded.size == (300, 200), type(form)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (b"not an image at all", "unreadable image"),
        ("/no/such/map.png", "not found"),
        ({"bytes": None, "path": None}, "neither 'bytes' nor 'path'"),
        (12345, "unsupported image type"),
        ("", "empty image string"),
        ("data:image/png;base64,@@@@", "not valid base64"),
    ],
)
def test_load_image_errors_name_where(source: object, message: str) -> None:
    with pytest.raises(ImageError, match=message) as info:
        load_image(source, where="beijing record 7: field 'figure'")
    assert "beijing record 7: field 'figure'" in str(info.value)
    assert isinstance(info.value, RowError)  # callers converting records catch one error type


def test_truncated_png_is_an_image_error() -> None:
    png = _png(_map_like((400, 400)))
    with pytest.raises(ImageError, match="unreadable image"):
        load_image(png[: len(png) // 2], where="w")


def test_bomb_limit_is_local_and_explicit() -> None:
    before = Image.MAX_IMAGE_PIXELS
    huge = _png_header_only(20000, 10000)  # 200 MP: PIL's default refuses it outright
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(huge))
    # our own cap is explicit and named in the error
    with pytest.raises(ImageError, match="above max_source_pixels=1000000"):
        load_image(huge, where="w", max_source_pixels=10**6)
    # under our default cap the header opens; the truncated data then fails as unreadable, not as a bomb
    with pytest.raises(ImageError, match="unreadable image"):
        load_image(huge, where="w")
    assert Image.MAX_IMAGE_PIXELS == before
    with pixel_limit(10):
        assert Image.MAX_IMAGE_PIXELS == 10
    assert Image.MAX_IMAGE_PIXELS == before


def test_real_large_image_loads_past_pils_default_limit() -> None:
    big = Image.new("1", (18000, 10000))  # 180 MP, cheap in 1-bit mode; PIL's default would refuse it
    png = _png(big)
    assert load_image(png, where="w").size == (18000, 10000)
    out = Image.open(io.BytesIO(prepare_image(png, where="w", max_pixels=256 * 784)))
    assert out.size == smart_resize_dims(18000, 10000, min_pixels=3136, max_pixels=256 * 784)


# --- resize_to_budget / prepare_image -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "LA", "CMYK"])
def test_resize_to_budget_gives_rgb_png_at_size(mode: str) -> None:
    image = _map_like((900, 500), mode)
    png = resize_to_budget(image, min_pixels=3136, max_pixels=200 * 784)
    out = Image.open(io.BytesIO(png))
    assert out.format == "PNG" and out.mode == "RGB"
    assert out.size == smart_resize_dims(900, 500, min_pixels=3136, max_pixels=200 * 784)
    assert png == resize_to_budget(image, min_pixels=3136, max_pixels=200 * 784)  # deterministic bytes


def test_transparent_background_becomes_white() -> None:
    image = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    out = Image.open(io.BytesIO(resize_to_budget(image, min_pixels=3136, max_pixels=DEFAULT_MAX_PIXELS)))
    assert out.getpixel((10, 10)) == (255, 255, 255)


def test_small_image_is_scaled_up_to_min_pixels() -> None:
    out = Image.open(io.BytesIO(resize_to_budget(_map_like((20, 10)), min_pixels=3136, max_pixels=10**6)))
    assert out.width * out.height >= 3136 and out.width % 28 == 0 and out.height % 28 == 0


def test_jpeg_draft_decodes_at_reduced_scale_but_not_below_target() -> None:
    jpeg = _jpeg(_map_like((4000, 3000)))
    budget = 64 * 784
    out = Image.open(io.BytesIO(prepare_image(jpeg, where="w", max_pixels=budget)))
    assert out.size == smart_resize_dims(4000, 3000, min_pixels=3136, max_pixels=budget)


def test_prepare_image_reports_extreme_aspect_as_image_error() -> None:
    with pytest.raises(ImageError, match="aspect ratio"):
        prepare_image(_png(Image.new("RGB", (3000, 10))), where="record 3")


def test_resize_cache_resizes_each_source_once(tmp_path: Path) -> None:
    png = _png(_map_like())
    path = tmp_path / "m.png"
    path.write_bytes(png)
    cache = ResizeCache(max_pixels=100 * 784)
    first = cache.get(png, where="a")
    assert cache.get(base64.b64encode(png).decode(), where="b") is first  # same content, other form
    assert cache.get({"bytes": png}, where="c") is first
    assert cache.get(path, where="d") is first  # a file is keyed by its content too
    assert cache.get(str(path), where="e") is first
    other = tmp_path / "other.png"
    other.write_bytes(_png(_map_like((280, 140))))
    assert cache.get(other, where="f") is not first
    assert (cache.misses, cache.hits, len(cache)) == (2, 4, 2)
    assert source_key(png, where="x") == source_key(bytearray(png), where="x")


def test_real_maps_resize_within_budget(reasonmap_dir: Path) -> None:
    maps = sorted((reasonmap_dir / "maps").glob("*/*.png"))
    if not maps:
        pytest.skip("no real maps under ../shared/reasonmap/maps")
    small = min(maps, key=lambda p: p.stat().st_size)
    with pixel_limit(10**9):
        size = Image.open(small).size
    out = Image.open(io.BytesIO(prepare_image(small, where=str(small), max_pixels=1024 * 784)))
    assert out.size == smart_resize_dims(*size, min_pixels=3136, max_pixels=1024 * 784)
    assert math.isclose(out.width / out.height, size[0] / size[1], rel_tol=0.05)


# --- images stored once beside the Parquet files (data_prep.image_files) -------------------------------------------


def test_image_store_writes_each_map_once_named_by_its_content(tmp_path: Path) -> None:
    from data_prep.image_files import ImageStore

    store = ImageStore(tmp_path)
    png = _png(_map_like((280, 140)))
    path = store.add(png, where="row 0")
    assert path == f"images/{hashlib.sha256(png).hexdigest()}.png"
    assert store.add(png, where="row 1") == path  # the same object
    assert store.add(bytes(bytearray(png)), where="row 2") == path  # equal bytes, another object
    other = store.add(_png(_map_like((140, 280))), where="row 3")
    assert other != path
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == sorted([Path(path).name, Path(other).name])
    assert (tmp_path / path).read_bytes() == png
    assert store.listing()[path] == {"bytes": len(png), "sha256": hashlib.sha256(png).hexdigest(), "width": 280,
                                     "height": 140}  # fmt: skip
    with pytest.raises(ImageError, match="row 4: prepared images are PNG, got JPEG"):
        store.add(_jpeg(_map_like()), where="row 4")


def test_open_row_image_reads_every_storage(tmp_path: Path) -> None:
    from data_prep.image_files import ImageStore, open_row_image, resolve_row_images

    png = _png(_map_like((280, 140)))
    stored = ImageStore(tmp_path).add(png, where="w")
    entries = [
        {"bytes": png, "path": None},  # in memory, or a folder written before the images/ layout
        {"bytes": None, "path": stored},  # as written: relative to the data folder
        {"bytes": None, "path": str(tmp_path / stored)},  # resolved
    ]
    for entry in entries:
        with open_row_image(entry, data_dir=tmp_path, where="w") as image:
            assert image.size == (280, 140)
    row = resolve_row_images({"images": [entries[1]], "x": 1}, [tmp_path / "elsewhere", tmp_path])
    assert row == {"images": [{"bytes": None, "path": str(tmp_path / stored)}], "x": 1}
    with pytest.raises(ImageError, match="relative to its data folder, and no data folder was given"):
        open_row_image(entries[1], where="w")
    with pytest.raises(ImageError, match=r"torf.parquet row 3: images\[0\]: image 'images/.*' not found under"):
        resolve_row_images({"images": [entries[1]]}, [tmp_path / "elsewhere"], where="torf.parquet row 3")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"bytes": None, "path": "../images/" + "0" * 64 + ".png"}, "is not images/<sha256>.png"),
        ({"bytes": None, "path": "/data/images/" + "0" * 64 + ".png"}, "is not images/<sha256>.png"),
        ({"bytes": None, "path": "images/map.png"}, "is not images/<sha256>.png"),
        ({"bytes": b"png", "path": "images/" + "0" * 64 + ".png"}, "has both 'bytes' and 'path'"),
        ({"bytes": None, "path": None}, "has neither PNG 'bytes' nor a stored 'path'"),
    ],
)
def test_a_row_names_its_image_one_way(entry: dict, message: str) -> None:
    from data_prep.schema import validate_row
    from tests.fixtures.stage_data import make_row

    row = make_row("torf", 0)
    row["images"] = [{**entry, "min_pixels": 3136, "max_pixels": 12544}]
    with pytest.raises(RowError, match=message):
        validate_row(row, where="torf.parquet row 0")


def test_fetch_image_reads_every_form_load_image_reads(tmp_path: Path) -> None:
    """The dataset's worker-side reader unwraps sources through data_prep.images (one home for every form)."""
    from recipe.dataset import fetch_image

    png = _png(_map_like((280, 140)))
    path = tmp_path / "map.png"
    path.write_bytes(png)
    b64 = base64.b64encode(png).decode()
    for source in (png, b64, "data:image/png;base64," + b64, {"bytes": png}, str(path), "file://" + str(path)):
        assert fetch_image({"type": "image", "image": source, "max_pixels": DEFAULT_MAX_PIXELS}).size == (280, 140)
    with pytest.raises(ImageError, match="image file not found"):
        fetch_image({"type": "image", "image": str(tmp_path / "missing.png")})
