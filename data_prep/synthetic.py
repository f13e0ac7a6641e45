"""Synthetic dataset: generated cities (and optionally real networks drawn schematically), all question types.

Writes the same folder as the official conversion (``data_prep.writer.write_dataset``: curriculum stage files,
val/test, manifest), ``data_source`` "synthetic", split by city (a city's map never appears in two splits).
Deterministic: the same arguments give byte-identical files (Parquet, manifest, images, contact sheet); every
random draw comes from ``random.Random`` seeded with a string derived from ``--seed`` and the city's position.

    python -m data_prep.synthetic --out DIR --cities N --seed S [--questions-per-city K]
        [--difficulty easy|middle|hard|mixed] [--no-render] [--min-pixels P --max-pixels P]
        [--from-network PATH.json ...] [--planning-templates short,long1,long2] [--contact-sheet] [--overwrite]

``--no-render`` writes a blank placeholder image (the row schema needs one) and is for text-only tests and
timing; ``manifest.generator.rendered`` says so. The parameters are one dataclass, ``SyntheticParams``, which the
command line, ``generate_dataset`` and the recipe's embedded default curriculum (``recipe.main_rewardmap``, about
a second for 4 small cities in a cache folder) all build.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import random
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from data_prep import synth_network
from data_prep.images import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, resize_to_budget
from data_prep.schema import build_row
from data_prep.synth_network import generate_city, network_difficulty
from data_prep.synth_questions import CityMeta, Question, default_counts, generate_questions
from data_prep.synth_render import map_font, render_map, render_schematic
from data_prep.writer import write_dataset
from reward_fns.gold import gold_response
from reward_fns.ground_truth import MAP_DIFFICULTIES, PLANNING_TEMPLATES
from reward_fns.network import MetroNetwork

GENERATOR_VERSION = 1
DATA_SOURCE = "synthetic"
CONTACT_SHEET = "contact_sheet.png"


@dataclass(frozen=True)
class SyntheticParams:
    """What a synthetic dataset is a function of: the same parameters give byte-identical files.

    ``cities`` generated cities (map difficulty per ``difficulty``: "mixed" cycles easy, middle, hard) plus one
    city per ``from_networks`` station file, ``questions_per_city`` questions each (``synth_questions.
    default_counts``), planning in ``planning_templates`` in turn, maps drawn (``render``) at the pixel budget.
    """

    cities: int
    seed: int
    questions_per_city: int = 30
    difficulty: str = "mixed"
    render: bool = True
    min_pixels: int = DEFAULT_MIN_PIXELS
    max_pixels: int = DEFAULT_MAX_PIXELS
    from_networks: tuple[str, ...] = ()
    planning_templates: tuple[str, ...] = PLANNING_TEMPLATES

    def __post_init__(self) -> None:
        object.__setattr__(self, "from_networks", tuple(str(path) for path in self.from_networks))
        object.__setattr__(self, "planning_templates", tuple(self.planning_templates))
        if self.cities < 0 or (self.cities == 0 and not self.from_networks):
            raise ValueError("need at least one city (--cities >= 1 or --from-network)")
        if self.difficulty not in (*MAP_DIFFICULTIES, "mixed"):
            raise ValueError(f"difficulty {self.difficulty!r} is not one of {(*MAP_DIFFICULTIES, 'mixed')}")


@dataclass(frozen=True)
class CityData:
    """One city ready for rows: network, metadata, the budget-sized map PNG and its questions."""

    meta: CityMeta
    network: MetroNetwork
    png: bytes
    size: tuple[int, int]
    questions: list[Question]
    source: str  # "generated" or the station file it came from
    split: str = "train"


def city_splits(n: int, rng: random.Random, *, val_fraction: float = 0.15, test_fraction: float = 0.15) -> list[str]:
    """A split per city: with 3 or more cities at least one each for val and test, the rest train."""
    if n < 3:
        return ["train"] * n if n < 2 else ["train", "val"][:n]
    n_test = max(1, round(n * test_fraction))
    n_val = max(1, round(n * val_fraction))
    n_test, n_val = min(n_test, n - 2), min(n_val, n - 1 - min(n_test, n - 2))
    splits = ["test"] * n_test + ["val"] * n_val + ["train"] * (n - n_test - n_val)
    rng.shuffle(splits)
    return splits


def _difficulties(n: int, difficulty: str) -> list[str]:
    if difficulty == "mixed":
        return [MAP_DIFFICULTIES[i % len(MAP_DIFFICULTIES)] for i in range(n)]
    return [difficulty] * n


def _placeholder_png(min_pixels: int, max_pixels: int) -> bytes:
    return resize_to_budget(Image.new("RGB", (56, 56), "white"), min_pixels=min_pixels, max_pixels=max_pixels)


def build_cities(params: SyntheticParams) -> list[CityData]:
    """Generate (or load) every city, draw its map at the pixel budget, and ask its questions."""
    seed, render, min_pixels, max_pixels = params.seed, params.render, params.min_pixels, params.max_pixels
    counts = default_counts(params.questions_per_city)
    placeholder = None if render else _placeholder_png(min_pixels, max_pixels)
    out: list[CityData] = []
    plans: list[tuple[str, object]] = [("generated", d) for d in _difficulties(params.cities, params.difficulty)]
    plans += [("network", Path(p)) for p in params.from_networks]
    for i, (kind, what) in enumerate(plans):
        if kind == "generated":
            city = generate_city(f"{seed}:{i}", str(what))
            network, meta, source = city.network, CityMeta(city.name, city.country, city.difficulty), "generated"
            draw = (lambda c=city: render_map(c.layout)) if render else None
        else:
            path = Path(str(what))
            network = MetroNetwork.from_json(path)
            meta = CityMeta(path.stem, path.parent.name, network_difficulty(network))
            source = f"{path.parent.name}/{path.name}"
            draw = (lambda n=network, t=path.stem: render_schematic(n, title=t, seed=seed)) if render else None
        if draw is not None:
            with Image.open(io.BytesIO(draw().png)) as image:
                png = resize_to_budget(image, min_pixels=min_pixels, max_pixels=max_pixels)
        else:
            png = placeholder
        with Image.open(io.BytesIO(png)) as image:
            size = image.size
        rng = random.Random(f"rewardmap-questions:{seed}:{i}")
        questions = generate_questions(network, meta, rng, counts, planning_templates=params.planning_templates)
        out.append(CityData(meta=meta, network=network, png=png, size=size, questions=questions, source=source))
    splits = city_splits(len(out), random.Random(f"rewardmap-splits:{seed}:{len(out)}"))
    return [dataclasses.replace(c, split=s) for c, s in zip(out, splits, strict=True)]


def rows_by_split(city_data: Sequence[CityData], params: SyntheticParams) -> dict[str, list[dict]]:
    """Schema rows per split, in city order then question order."""
    rows: dict[str, list[dict]] = {}
    for c in city_data:
        split_rows = rows.setdefault(c.split, [])
        for q in c.questions:
            split_rows.append(
                build_row(
                    data_source=DATA_SOURCE,
                    question=q.text,
                    image_png=c.png,
                    ground_truth=q.ground_truth,
                    split=c.split,
                    index=len(split_rows),
                    source_id=f"synthetic:{params.seed}:{c.meta.country}/{c.meta.city}:{q.key}",
                    min_pixels=params.min_pixels,
                    max_pixels=params.max_pixels,
                )
            )
    return rows


def generate_dataset(
    out_dir: str | Path, params: SyntheticParams, *, contact_sheet: bool = False, overwrite: bool = False
) -> Path:
    """Generate, validate and write the synthetic dataset of ``params`` into ``out_dir`` (returned);
    ``contact_sheet`` also writes ``contact_sheet.png`` beside the data (atomically with it; listed in
    ``manifest["extra_files"]``)."""
    data = build_cities(params)
    rows = rows_by_split(data, params)
    extra = {
        "data_source": DATA_SOURCE,
        "generator": {
            "name": "data_prep.synthetic",
            "version": GENERATOR_VERSION,
            "seed": params.seed,
            "cities": params.cities,
            "questions_per_city": params.questions_per_city,
            "difficulty": params.difficulty,
            "rendered": params.render,
            "planning_templates": list(params.planning_templates),
            "from_networks": [c.source for c in data if c.source != "generated"],
        },
        "difficulty_thresholds": {
            "hard": f"lines >= {synth_network.HARD_MIN_LINES} or transfer stations >= "
            f"{synth_network.HARD_MIN_TRANSFERS}",
            "easy": f"otherwise lines <= {synth_network.EASY_MAX_LINES}",
            "middle": "otherwise",
        },
        "cities": [
            {
                "city": c.meta.city,
                "country": c.meta.country,
                "split": c.split,
                "source": c.source,
                "map_difficulty": c.meta.map_difficulty,
                "lines": len(c.network.lines),
                "stations": len(c.network.stations),
                "transfer_stations": synth_network.count_transfers(c.network),
                "questions": len(c.questions),
                "image_size": list(c.size),
            }
            for c in data
        ],
    }
    extra_files = {CONTACT_SHEET: make_contact_sheet(data)} if contact_sheet else {}
    return write_dataset(out_dir, rows, manifest_extra=extra, overwrite=overwrite, extra_files=extra_files)


def make_contact_sheet(city_data: Sequence[CityData], *, max_tiles: int = 6, tile_width: int = 560) -> bytes:
    """PNG of sample maps, one question each (types in turn) with its gold answer, for eyeballing the data."""
    font = map_font(13)
    bold = map_font(14, bold=True)
    tiles = []
    for k, c in enumerate(city_data[:max_tiles]):
        q = _pick_question(c.questions, k)
        with Image.open(io.BytesIO(c.png)) as image:
            thumb = image.convert("RGB")
            thumb.thumbnail((tile_width, int(tile_width * 0.8)), Image.Resampling.LANCZOS)
        header = f"{c.meta.city} ({c.meta.map_difficulty}, {c.split}) - {q.question_type if q else 'no question'}"
        lines = []
        if q is not None:
            text = q.text.replace("\n", " | ")
            lines = textwrap.wrap(text, width=78)[:9]
            gold = gold_response(q.ground_truth).replace("\n", " ")
            lines += textwrap.wrap("Gold: " + gold, width=78)[:4]
        height = thumb.height + 30 + 18 * len(lines) + 16
        tile = Image.new("RGB", (tile_width, height), "white")
        draw = ImageDraw.Draw(tile)
        draw.text((8, 6), header, font=bold, fill="#111111")
        tile.paste(thumb, ((tile_width - thumb.width) // 2, 28))
        y = thumb.height + 36
        for line in lines:
            draw.text((8, y), line, font=font, fill="#222222")
            y += 18
        tiles.append(tile)
    cols = min(3, max(1, len(tiles)))
    rows = -(-len(tiles) // cols)
    row_h = [max(t.height for t in tiles[r * cols : (r + 1) * cols]) for r in range(rows)]
    sheet = Image.new("RGB", (cols * (tile_width + 12) + 12, sum(row_h) + 12 * (rows + 1)), "#DDDDDD")
    y = 12
    for r in range(rows):
        for j, tile in enumerate(tiles[r * cols : (r + 1) * cols]):
            sheet.paste(tile, (12 + j * (tile_width + 12), y))
        y += row_h[r] + 12
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def _pick_question(questions: Sequence[Question], k: int) -> Question | None:
    order = ("planning", "Counting1", "TorF1", "Counting2", "TorF2", "Counting3")
    for t in order[k % len(order) :] + order[: k % len(order)]:
        for q in questions:
            if q.question_type == t:
                return q
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (stage files, val/test, manifest)")
    parser.add_argument("--cities", type=int, required=True, help="number of generated cities")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--questions-per-city", type=int, default=SyntheticParams.questions_per_city)
    parser.add_argument("--difficulty", choices=(*MAP_DIFFICULTIES, "mixed"), default=SyntheticParams.difficulty)
    parser.add_argument("--no-render", action="store_true", help="blank placeholder images (text-only, fast)")
    parser.add_argument("--min-pixels", type=int, default=SyntheticParams.min_pixels)
    parser.add_argument("--max-pixels", type=int, default=SyntheticParams.max_pixels)
    parser.add_argument(
        "--from-network", action="append", default=[], metavar="PATH.json", help="also a real network (repeatable)"
    )
    parser.add_argument(
        "--planning-templates",
        default=",".join(SyntheticParams.planning_templates),
        help="comma-separated subset of short,long1,long2 (the 'released' reward mode credits short only)",
    )
    parser.add_argument("--contact-sheet", action="store_true", help=f"also write {CONTACT_SHEET}")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    args = parser.parse_args(argv)
    try:
        params = SyntheticParams(
            cities=args.cities,
            seed=args.seed,
            questions_per_city=args.questions_per_city,
            difficulty=args.difficulty,
            render=not args.no_render,
            min_pixels=args.min_pixels,
            max_pixels=args.max_pixels,
            from_networks=tuple(args.from_network),
            planning_templates=tuple(t.strip() for t in args.planning_templates.split(",") if t.strip()),
        )
        out = generate_dataset(args.out, params, contact_sheet=args.contact_sheet, overwrite=args.overwrite)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from data_prep.writer import read_manifest

    manifest = read_manifest(out)
    for name, info in manifest["files"].items():
        print(f"{name}: {info['rows']} rows, {info['bytes']} bytes")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
