"""Data-path timings: synthetic generation, real-map conversion, and fetching one sample through verl's dataset.

    .venv/bin/python benchmarks/bench_data.py [--cities 6] [--questions-per-city 30] [--rows-per-map 109]
        [--repeats 3] [--maps DIR] [--storage-maps 30] [--storage-rows-per-map 100] [--storage-samples 30]
        [--skip synthetic|official|verl|storage]

1. Synthetic generation (``data_prep.synthetic.generate_dataset``, written to a temporary folder): rows per
   second with rendering and with ``--no-render`` placeholders.
2. Official conversion of the real map images (``../shared/reasonmap/maps``; skipped with a message when
   absent): each map loaded and resized once (``data_prep.images.prepare_image``, i.e. ``load_image`` +
   ``resize_to_budget``), then ``--rows-per-map`` schema rows built on it (ReasonMap-Train has 3266 rows on 30
   maps, about 109 per map) with the city's real network embedded in the ground truth. Also the folder's bytes
   per row when one map's rows are written together.
3. One training sample through verl 0.9.1's ``RLHFDataset``: ``__getitem__`` (reads the row, opens the image
   lazily; 0.9.1 no longer tokenises there) plus the image step the agent loop runs next on ``raw_prompt``
   (``RLHFDataset._process_multi_modal_info`` -> qwen_vl_utils ``fetch_image``: decode, RGB, ``smart_resize``,
   resize). Measured for the pre-resized PNG the prep writes and for the raw map, in the same run, and printed
   as a ratio. When
   ``qwen_vl_utils`` (or the torchvision it imports) is missing, an equivalent of its ``fetch_image`` for
   images is timed instead and the output says so.
4. Storage at ReasonMap-Train scale (``--storage-maps`` maps x ``--storage-rows-per-map`` rows; real maps from
   ``--maps`` cycled and made byte-distinct, real networks): bytes on disk, bytes in the ``datasets`` cache
   (each Parquet file loaded as verl loads it), and per-sample fetch time through ``StagedRLHFDataset`` as the
   agent loop calls it, for rows embedding their map (the layout before ``images/``; written grouped by map and
   shuffled, since Parquet's dictionary encoding dedups adjacent equal maps) and for each map stored once; the
   ratios of one run. Also what identifying the stage files by content costs the stage plan. The embedded
   layout at full scale needs about 15 GB of temporary disk.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# the real ReasonMap networks and maps beside the project (REWARDMAP_REASONMAP_DIR overrides, as in tests/conftest.py)
REASONMAP_DIR = Path(os.environ.get("REWARDMAP_REASONMAP_DIR") or ROOT.parent / "shared" / "reasonmap")
MAPS_DIR = REASONMAP_DIR / "maps"
STATIONS_DIR = REASONMAP_DIR / "stations"


def bench_synthetic(cities: int, questions: int, tmp: Path) -> None:
    from data_prep.synthetic import SyntheticParams, generate_dataset
    from data_prep.writer import read_manifest

    print(f"== synthetic generation: {cities} cities (mixed difficulty) x {questions} questions, written to Parquet")
    for render in (True, False):
        out = tmp / f"synthetic-{'render' if render else 'norender'}"
        start = time.perf_counter()
        generate_dataset(out, SyntheticParams(cities=cities, seed=0, questions_per_city=questions, render=render))
        elapsed = time.perf_counter() - start
        rows = sum(f["rows"] for f in read_manifest(out)["files"].values())
        label = "with rendering   " if render else "without rendering"
        print(
            f"  {label}: {rows} rows in {elapsed:.2f} s = {rows / elapsed:,.0f} rows/s ({elapsed / cities:.2f} s/city)"
        )


def bench_official(rows_per_map: int, maps_dir: Path, tmp: Path) -> None:
    from PIL import Image

    from data_prep.images import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, prepare_image
    from data_prep.schema import build_row
    from data_prep.synth_network import network_difficulty
    from data_prep.synth_questions import CityMeta, default_counts, generate_questions
    from data_prep.writer import write_dataset
    from reward_fns.network import MetroNetwork

    maps = sorted(maps_dir.glob("*/*.png"))
    print(f"== official conversion of the real maps ({maps_dir}), {rows_per_map} rows per map")
    if not maps:
        print(f"  skipped: no map images under {maps_dir}")
        return
    total_rows, total_time = 0, 0.0
    for path in maps:
        station_file = STATIONS_DIR / path.parent.name / f"{path.stem}.json"
        if not station_file.is_file():
            print(f"  {path.parent.name}/{path.name}: skipped (no station file {station_file})")
            continue
        network = MetroNetwork.from_json(station_file)
        meta = CityMeta(path.stem, path.parent.name, network_difficulty(network))
        questions = generate_questions(network, meta, random.Random(0), default_counts(rows_per_map))
        start = time.perf_counter()
        png = prepare_image(path, where=str(path), min_pixels=DEFAULT_MIN_PIXELS, max_pixels=DEFAULT_MAX_PIXELS)
        resized = time.perf_counter() - start
        rows = [
            build_row(
                data_source="reasonmap_train",
                question=q.text,
                image_png=png,
                ground_truth=q.ground_truth,
                split="train",
                index=i,
                source_id=f"bench:{path.stem}:{i}",
                min_pixels=DEFAULT_MIN_PIXELS,
                max_pixels=DEFAULT_MAX_PIXELS,
            )
            for i, q in enumerate(questions)
        ]
        elapsed = time.perf_counter() - start
        total_rows += len(rows)
        total_time += elapsed
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as raw, Image.open(io.BytesIO(png)) as small:
                raw_mp, size = raw.width * raw.height / 1e6, small.size
        out = write_dataset(tmp / f"official-{path.stem}", {"train": rows}, manifest_extra={})
        written = _folder_bytes(out)  # Parquet files, the map stored once, manifest
        print(
            f"  {path.parent.name}/{path.name}: {raw_mp:.1f} MP -> {size[0]}x{size[1]} ({len(png) / 1e6:.1f} MB PNG);"
            f" resize {resized:.2f} s, {len(rows)} rows {elapsed:.2f} s = {len(rows) / elapsed:,.0f} rows/s;"
            f" folder {written / len(rows) / 1e6:.3f} MB/row"
        )
    if total_rows:
        print(f"  all maps: {total_rows} rows in {total_time:.2f} s = {total_rows / total_time:,.0f} rows/s")


def _image_step():
    """What the agent loop runs on ``raw_prompt`` (RLHFDataset._process_multi_modal_info, i.e. qwen_vl_utils'
    process_vision_info -> fetch_image), or, when qwen_vl_utils does not import, an equivalent for images."""
    from verl.utils.dataset.rl_dataset import RLHFDataset

    try:
        import qwen_vl_utils  # noqa: F401  (imported lazily by verl; fail here, not inside the timing loop)

        def real(messages, config):
            images, _, _ = RLHFDataset._process_multi_modal_info(messages, image_patch_size=14, config=config)
            return images[0]

        return real, "RLHFDataset._process_multi_modal_info (qwen_vl_utils.process_vision_info / fetch_image)"
    except ImportError as err:
        from data_prep.images import smart_resize_dims

        def equivalent(messages, config):
            item = next(c for m in messages for c in m["content"] if c["type"] == "image")
            img = item["image"].convert("RGB")  # fetch_image's to_rgb (RGBA is composited; same cost class)
            w, h = smart_resize_dims(
                img.width, img.height, min_pixels=item["min_pixels"], max_pixels=item["max_pixels"], factor=28
            )
            return img.resize((w, h))  # fetch_image: PIL's default resample (bicubic)

        return equivalent, f"an equivalent of qwen_vl_utils.fetch_image (qwen_vl_utils not importable: {err})"


def bench_verl_fetch(maps_dir: Path, repeats: int, tmp: Path) -> None:
    os.environ.setdefault("HF_DATASETS_CACHE", str(tmp / "hf-cache"))
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq
    from omegaconf import OmegaConf
    from PIL import Image

    from data_prep.images import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, prepare_image

    datasets.disable_progress_bars()
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)

    maps = sorted(maps_dir.glob("*/*.png"))
    print("== one training sample through verl's RLHFDataset: __getitem__ + the agent loop's image step")
    if not maps:
        print(f"  skipped: no map images under {maps_dir}")
        return
    from verl.utils.dataset.rl_dataset import RLHFDataset

    process, what = _image_step()
    print(f"  image step: {what}")
    # No tokenizer: 0.9.1's __getitem__ does not tokenise, and the length filter (which would) is off. A
    # processor object is only asserted to exist when a row has images.
    config = OmegaConf.create({"filter_overlong_prompts": False, "cache_dir": str(tmp / "verl-cache")})
    processor = SimpleNamespace(image_processor=SimpleNamespace(patch_size=14))
    ratios = []
    for path in maps:
        variants = {
            "pre-resized": prepare_image(path, where=str(path)),
            "raw map": path.read_bytes(),
        }
        times = {}
        for name, data in variants.items():
            file = tmp / f"verl-{path.stem}-{name.replace(' ', '-')}.parquet"
            row = {
                "data_source": "reasonmap_train",
                "prompt": [{"role": "user", "content": "<image>\nAccording to the subway map, ...?"}],
                "images": [{"bytes": data, "min_pixels": DEFAULT_MIN_PIXELS, "max_pixels": DEFAULT_MAX_PIXELS}],
                "extra_info": {"index": 0},
            }
            pq.write_table(pa.Table.from_pylist([row]), file)
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                dataset = RLHFDataset(str(file), tokenizer=None, config=config, processor=processor)
            samples = []
            for _ in range(repeats):
                start = time.perf_counter()
                item = dataset[0]  # the raw 98 MP map only warns (PIL's bomb error starts at 179 MP)
                out = process(item["raw_prompt"], config)
                out.load()
                samples.append(time.perf_counter() - start)
            times[name] = statistics.median(samples)
            if name == "raw map":
                with Image.open(io.BytesIO(data)) as raw:
                    raw_size = raw.size
            final = out.size
        ratio = times["raw map"] / times["pre-resized"]
        ratios.append(ratio)
        print(
            f"  {path.parent.name}/{path.name} ({raw_size[0]}x{raw_size[1]} -> {final[0]}x{final[1]}):"
            f" pre-resized {times['pre-resized'] * 1e3:,.0f} ms, raw {times['raw map'] * 1e3:,.0f} ms,"
            f" raw / pre-resized = {ratio:.1f}x"
        )
    print(
        f"  median ratio over {len(ratios)} maps: {statistics.median(ratios):.1f}x (median of {repeats} fetches each)"
    )


# --- storage: each map once vs. embedded in every row ------------------------------------------------------------


def _distinct_png(png: bytes, k: int) -> bytes:
    """``png`` with a ``tEXt`` chunk naming copy ``k`` before IEND: other bytes, the same pixels and decode cost."""
    import struct
    import zlib

    data = b"Comment\x00bench map copy " + str(k).encode()
    chunk = struct.pack(">I", len(data)) + b"tEXt" + data + struct.pack(">I", zlib.crc32(b"tEXt" + data))
    return png[:-12] + chunk + png[-12:]  # IEND is the last 12 bytes


def _storage_maps(n_maps: int, maps_dir: Path, max_pixels: int) -> tuple[list[bytes], str]:
    """``n_maps`` distinct budget-sized map PNGs: the real maps (cycled, made distinct), else rendered cities."""
    from data_prep.images import DEFAULT_MIN_PIXELS, prepare_image, resize_to_budget

    real = sorted(maps_dir.glob("*/*.png"))
    if real:
        base = [prepare_image(p, where=str(p), min_pixels=DEFAULT_MIN_PIXELS, max_pixels=max_pixels) for p in real]
        what = f"the {len(real)} real maps under {maps_dir} (resized to the budget), cycled and made distinct"
    else:
        from PIL import Image

        from data_prep.synth_network import generate_city
        from data_prep.synth_render import render_map

        base = []
        for i in range(min(n_maps, 6)):
            with Image.open(io.BytesIO(render_map(generate_city(f"bench:{i}", "hard").layout).png)) as image:
                base.append(resize_to_budget(image, min_pixels=DEFAULT_MIN_PIXELS, max_pixels=max_pixels))
        what = f"rendered synthetic cities (no real maps under {maps_dir}; smaller than real maps, ratios conservative)"
    return [_distinct_png(base[k % len(base)], k) for k in range(n_maps)], what


def _storage_rows(maps: list[bytes], rows_per_map: int, max_pixels: int) -> list[dict]:
    """``rows_per_map`` questions per map on a real network (cycled over the 30 cities) or a generated one."""
    from data_prep.images import DEFAULT_MIN_PIXELS
    from data_prep.schema import build_row
    from data_prep.synth_network import generate_city, network_difficulty
    from data_prep.synth_questions import CityMeta, default_counts, generate_questions
    from reward_fns.network import MetroNetwork

    station_files = sorted(STATIONS_DIR.glob("*/*.json"))
    rows: list[dict] = []
    for k, png in enumerate(maps):
        if station_files:
            path = station_files[k % len(station_files)]
            network = MetroNetwork.from_json(path)
            meta = CityMeta(path.stem, path.parent.name, network_difficulty(network))
        else:
            city = generate_city(f"bench-net:{k}", "hard")
            network, meta = city.network, CityMeta(city.name, city.country, city.difficulty)
        for q in generate_questions(network, meta, random.Random(k), default_counts(rows_per_map)):
            rows.append(
                build_row(
                    data_source="reasonmap_train",
                    question=q.text,
                    image_png=png,  # one bytes object per map, as the prep's resize cache hands out
                    ground_truth=q.ground_truth,
                    split="train",
                    index=len(rows),
                    source_id=f"bench:{k}:{q.key}",
                    min_pixels=DEFAULT_MIN_PIXELS,
                    max_pixels=max_pixels,
                )
            )
    return rows


def _write_inline(folder: Path, rows: list[dict]) -> None:
    """The layout before images/: every row embeds its PNG (the old writer: same schema, zstd, 32-row groups)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from data_prep.schema import STAGE_OF_TYPE
    from data_prep.writer import ROW_SCHEMA, stage_file

    folder.mkdir(parents=True)
    by_stage: dict[str, list[dict]] = {}
    for row in rows:
        by_stage.setdefault(STAGE_OF_TYPE[row["extra_info"]["question_type"]], []).append(row)
    for stage, stage_rows in by_stage.items():
        with pq.ParquetWriter(folder / stage_file(stage), ROW_SCHEMA, compression="zstd") as writer:
            for start in range(0, len(stage_rows), 32):
                table = pa.Table.from_pylist(stage_rows[start : start + 32], schema=ROW_SCHEMA)
                writer.write_table(table, row_group_size=32)


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _datasets_cache_bytes(files: list[Path], cache: Path) -> int:
    """Load each Parquet file with ``datasets`` exactly as verl's RLHFDataset does, into ``cache``; its size."""
    import datasets

    for f in files:
        datasets.load_dataset("parquet", data_files=str(f), cache_dir=str(cache))
    return _folder_bytes(cache)


def _fetch_seconds(
    files: dict[str, list[Path]], indices: list[int], tmp: Path
) -> dict[str, tuple[float, tuple[int, int]]]:
    """Median seconds per sample, per layout, through the recipe's dataset class as the agent loop uses it.

    ``__getitem__`` (verl's row read and message building, where a stored path becomes absolute) and then the
    class method the agent loop calls in its worker, ``_process_multi_modal_info`` (decode, RGB, fit). Layouts
    alternate sample by sample, so load on a shared machine hits both alike.
    """
    from omegaconf import OmegaConf

    from recipe.dataset import StagedRLHFDataset

    config = OmegaConf.create({"filter_overlong_prompts": False, "cache_dir": str(tmp / "verl-cache")})
    processor = SimpleNamespace(image_processor=SimpleNamespace(patch_size=14))
    loaded = {}
    for name, layout_files in files.items():
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            loaded[name] = StagedRLHFDataset([str(f) for f in layout_files], None, config, processor)

    def fetch(dataset: StagedRLHFDataset, i: int):
        item = dataset[i]
        (image,), _, _ = StagedRLHFDataset._process_multi_modal_info(item["raw_prompt"], 14, config)
        image.load()
        return image

    times: dict[str, list[float]] = {name: [] for name in loaded}
    sizes: dict[str, tuple[int, int]] = {}
    for dataset in loaded.values():
        fetch(dataset, indices[0])  # warm-up: imports, first file opens
    for i in indices:
        for name, dataset in loaded.items():
            start = time.perf_counter()
            sizes[name] = fetch(dataset, i).size
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(t), sizes[name]) for name, t in times.items()}


def _identity_seconds(files: dict[str, list[Path]]) -> dict[str, float]:
    """Seconds to identify the stage files by content, as the stage plan does: via the manifest, or hashing."""
    from data_prep.checksums import file_sha256
    from data_prep.writer import content_sha256, read_manifest

    listed = read_manifest(files["stored"][0].parent)["files"]
    start = time.perf_counter()
    assert all(content_sha256(f) == listed[f.name]["sha256"] for f in files["stored"])
    out = {"manifest": time.perf_counter() - start}
    for name in ("stored", "grouped"):
        start = time.perf_counter()
        for f in files[name]:
            file_sha256(f)
        out[name] = time.perf_counter() - start
    return out


def bench_storage(n_maps: int, rows_per_map: int, samples: int, maps_dir: Path, max_pixels: int, tmp: Path) -> None:
    """Disk, ``datasets`` cache and fetch time: every row embedding its map (before) vs each map once (now).

    Embedded rows are written twice: in source order grouped by map, where Parquet's dictionary encoding stores
    one copy of a map per row group (the old writer's best case), and shuffled, where nearly every row holds a
    copy. The ``datasets`` cache (Arrow, no dictionary) holds one copy per row in either order.
    """
    os.environ.setdefault("HF_DATASETS_CACHE", str(tmp / "hf-cache"))
    import datasets

    from data_prep.writer import read_manifest, write_dataset

    datasets.disable_progress_bars()
    print(
        f"== storage: {n_maps} maps x {rows_per_map} rows (ReasonMap-Train: 30 maps, 3266 rows), "
        f"max_pixels {max_pixels}"
    )
    maps, what = _storage_maps(n_maps, maps_dir, max_pixels)
    print(f"  maps: {what}; PNG {statistics.mean(len(m) for m in maps) / 1e6:.2f} MB on average")
    rows = _storage_rows(maps, rows_per_map, max_pixels)
    shuffled_rows = random.Random(1).sample(rows, len(rows))
    folders = {"grouped": tmp / "embedded-grouped", "shuffled": tmp / "embedded-shuffled", "stored": tmp / "stored"}
    start = time.perf_counter()
    _write_inline(folders["grouped"], rows)
    t_inline = time.perf_counter() - start
    _write_inline(folders["shuffled"], shuffled_rows)
    start = time.perf_counter()
    write_dataset(folders["stored"], {"train": rows}, manifest_extra={})
    t_stored = time.perf_counter() - start
    del rows, shuffled_rows
    manifest = read_manifest(folders["stored"])
    files = {name: sorted(folder.glob("*.parquet")) for name, folder in folders.items()}
    disk = {name: _folder_bytes(folder) for name, folder in folders.items()}
    cache = {name: _datasets_cache_bytes(files[name], tmp / f"cache-{name}") for name in ("grouped", "stored")}
    shutil.rmtree(tmp / "cache-grouped")  # gigabytes: free them before timing
    identity = _identity_seconds(files)
    n_rows = sum(f["rows"] for f in manifest["files"].values())
    indices = sorted(random.Random(0).sample(range(n_rows), min(samples, n_rows)))
    fetch = _fetch_seconds({name: files[name] for name in ("grouped", "stored")}, indices, tmp)
    assert fetch["grouped"][1] == fetch["stored"][1]  # the same images came out
    print(
        f"  {n_rows} rows; write: embedded {t_inline:.1f} s, each map once {t_stored:.1f} s "
        f"({len(manifest['image_files'])} image files)"
    )
    for label, key in (
        ("embedded, grouped by map", "grouped"),
        ("embedded, shuffled", "shuffled"),
        ("each map once", "stored"),
    ):
        line = f"  {label:24}: disk {disk[key] / 1e6:9,.1f} MB"
        if key in cache:
            line += f", datasets cache {cache[key] / 1e6:9,.1f} MB, fetch {fetch[key][0] * 1e3:6,.1f} ms/sample"
        print(line)
    print(f"  (fetch: median of {len(indices)} samples, the same rows for both layouts)")
    print(
        "  stage-plan file identities (sha256 per stage file, page cache warm): from the manifest "
        f"{identity['manifest'] * 1e3:.1f} ms; hashing: each map once {identity['stored'] * 1e3:.1f} ms "
        f"({sum(f.stat().st_size for f in files['stored']) / 1e6:.1f} MB), embedded {identity['grouped']:.2f} s "
        f"({sum(f.stat().st_size for f in files['grouped']) / 1e6:,.0f} MB)"
    )
    print(
        f"  ratios (embedded / each map once), one run: disk {disk['shuffled'] / disk['stored']:.1f}x shuffled, "
        f"{disk['grouped'] / disk['stored']:.1f}x grouped; datasets cache {cache['grouped'] / cache['stored']:.1f}x; "
        f"fetch time {fetch['grouped'][0] / fetch['stored'][0]:.2f}x (>= 1: no slower)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cities", type=int, default=6)
    parser.add_argument("--questions-per-city", type=int, default=30)
    parser.add_argument("--rows-per-map", type=int, default=109)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--maps", type=Path, default=MAPS_DIR)
    parser.add_argument("--storage-maps", type=int, default=30)
    parser.add_argument("--storage-rows-per-map", type=int, default=100)
    parser.add_argument("--storage-samples", type=int, default=30, help="samples timed per layout")
    parser.add_argument("--storage-max-pixels", type=int, default=None, help="default: the prep's default budget")
    parser.add_argument("--skip", action="append", default=[], choices=("synthetic", "official", "verl", "storage"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp_name:
        tmp = Path(tmp_name)
        if "synthetic" not in args.skip:
            bench_synthetic(args.cities, args.questions_per_city, tmp)
        if "official" not in args.skip:
            bench_official(args.rows_per_map, args.maps, tmp)
        if "verl" not in args.skip:
            bench_verl_fetch(args.maps, args.repeats, tmp)
        if "storage" not in args.skip:
            from data_prep.images import DEFAULT_MAX_PIXELS

            budget = args.storage_max_pixels or DEFAULT_MAX_PIXELS
            bench_storage(args.storage_maps, args.storage_rows_per_map, args.storage_samples, args.maps, budget, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
