"""Data-path timings: synthetic generation, real-map conversion, and fetching one sample through verl's dataset.

    .venv/bin/python benchmarks/bench_data.py [--cities 6] [--questions-per-city 30] [--rows-per-map 109]
        [--repeats 3] [--maps DIR]

1. Synthetic generation (``data_prep.synthetic.generate_dataset``, written to a temporary folder): rows per
   second with rendering and with ``--no-render`` placeholders.
2. Official conversion of the real map images (``../shared/reasonmap/maps``; skipped with a message when
   absent): each map loaded and resized once (``data_prep.images.prepare_image``, i.e. ``load_image`` +
   ``resize_to_budget``), then ``--rows-per-map`` schema rows built on it (ReasonMap-Train has 3266 rows on 30
   maps, about 109 per map) with the city's real network embedded in the ground truth. Also the Parquet bytes
   per row when one map's rows are written together.
3. One training sample through verl 0.9.1's ``RLHFDataset``: ``__getitem__`` (reads the row, opens the image
   lazily; 0.9.1 no longer tokenises there) plus the image step the agent loop runs next on ``raw_prompt``
   (``RLHFDataset._process_multi_modal_info`` -> qwen_vl_utils ``fetch_image``: decode, RGB, ``smart_resize``,
   resize). Measured for the pre-resized PNG the prep writes and for the raw map, in the same run, and printed
   as a ratio. When
   ``qwen_vl_utils`` (or the torchvision it imports) is missing, an equivalent of its ``fetch_image`` for
   images is timed instead and the output says so.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MAPS_DIR = ROOT.parent / "shared" / "reasonmap" / "maps"
STATIONS_DIR = ROOT.parent / "shared" / "reasonmap" / "stations"


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
        written = sum(p.stat().st_size for p in out.glob("*.parquet"))
        print(
            f"  {path.parent.name}/{path.name}: {raw_mp:.1f} MP -> {size[0]}x{size[1]} ({len(png) / 1e6:.1f} MB PNG);"
            f" resize {resized:.2f} s, {len(rows)} rows {elapsed:.2f} s = {len(rows) / elapsed:,.0f} rows/s;"
            f" Parquet {written / len(rows) / 1e6:.2f} MB/row"
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cities", type=int, default=6)
    parser.add_argument("--questions-per-city", type=int, default=30)
    parser.add_argument("--rows-per-map", type=int, default=109)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--maps", type=Path, default=MAPS_DIR)
    parser.add_argument("--skip", action="append", default=[], choices=("synthetic", "official", "verl"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp_name:
        tmp = Path(tmp_name)
        if "synthetic" not in args.skip:
            bench_synthetic(args.cities, args.questions_per_city, tmp)
        if "official" not in args.skip:
            bench_official(args.rows_per_map, args.maps, tmp)
        if "verl" not in args.skip:
            bench_verl_fetch(args.maps, args.repeats, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
