"""Command line of the evaluation (``python -m recipe.evaluate <command>``); ``main(argv)`` returns the exit status.

::

    generate           --model M --test FILE [FILE ...] --out responses.jsonl [sampling and engine options]
    score              --responses R [R ...] --test FILE [FILE ...] --out RESULTS_DIR [--training-log PATH ...]
    compare            RESULTS_DIR RESULTS_DIR [...] --out DIR [--names a,b] [--training-log [NAME=]PATH ...]
    export-vlmevalkit  --test FILE [FILE ...] --out ReasonMap-Plus.tsv [--embed-images]

Exit status: 0 done, 1 bad input (the message names the file and line or option), 2 usage, 130 interrupted
(resumable: run the same command again).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from recipe.evaluate.files import EvalInputError

PROG = "python -m recipe.evaluate"


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="model responses to prepared test questions (resumable JSONL)")
    p.add_argument("--model", required=True, help="hub name, local Hugging Face folder, or verl checkpoint folder")
    p.add_argument("--test", nargs="+", required=True, metavar="FILE", help="prepared test Parquet files")
    p.add_argument("--out", required=True, help="responses JSONL (appended; rerun to resume)")
    p.add_argument("--backend", default="auto", choices=("auto", "vllm", "transformers"))
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0, help="0: off")
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=2048, help="default 2048, as the released main.py")
    p.add_argument("--samples", type=int, default=1, help="samples per question (pass@k; needs --temperature > 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-pixels", type=int, help="image budget override (default: each row's own)")
    p.add_argument("--max-pixels", type=int, help="image budget override (rows are stored at their budget)")
    p.add_argument("--dtype", default="auto", help="auto (bfloat16 on GPU, float32 on CPU), float32, bfloat16, ...")
    p.add_argument("--batch-size", type=int, default=4, help="transformers: prompts per generate call")
    p.add_argument("--chunk-size", type=int, default=64, help="vLLM: prompts per engine call and per append")
    p.add_argument("--tensor-parallel-size", type=int, default=1, help="vLLM")
    p.add_argument("--max-model-len", type=int, help="vLLM")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9, help="vLLM")
    p.add_argument("--merged-dir", help="where a verl checkpoint is merged (default <actor>/huggingface_merged)")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--limit", type=int, help="only the first N questions (smoke runs)")
    p.add_argument("--no-progress", action="store_true")


def _add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="responses -> results folder (scores.jsonl, summary.json, report.md, plots)")
    p.add_argument("--responses", nargs="+", required=True, metavar="JSONL")
    p.add_argument("--test", nargs="+", required=True, metavar="FILE")
    p.add_argument("--out", required=True, help="results folder (written atomically; rerun to resume)")
    p.add_argument(
        "--official-cities",
        action="store_true",
        help="average ReasonMap rows over the 11 test cities only, as cal_metrics.py does",
    )
    p.add_argument("--training-log", action="append", default=[], metavar="PATH", help="TensorBoard dir or verl JSONL")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-progress", action="store_true")


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="two or more results folders -> one table and plots")
    p.add_argument("folders", nargs="+", metavar="RESULTS_DIR")
    p.add_argument("--out", required=True)
    p.add_argument("--names", help="comma-separated run names (default: folder names)")
    p.add_argument("--training-log", action="append", default=[], metavar="[NAME=]PATH")


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-vlmevalkit", help="the ReasonMap-Plus test split as VLMEvalKit's TSV")
    p.add_argument("--test", nargs="+", required=True, metavar="FILE")
    p.add_argument("--out", required=True, help="TSV path (images go to <stem>_images/ beside it)")
    p.add_argument("--embed-images", action="store_true", help="base64 images in an 'image' column instead")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Evaluate on ReasonMap and ReasonMap-Plus.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_generate, _add_score, _add_compare, _add_export):
        add(sub)
    return parser


def _generate(args: argparse.Namespace) -> dict:
    from recipe.evaluate.generation import GenerateRequest, GenerationSettings, run_generate

    settings = GenerationSettings(
        backend=args.backend,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        repetition_penalty=args.repetition_penalty,
        max_new_tokens=args.max_new_tokens,
        samples=args.samples,
        seed=args.seed,
        min_pixels=args.min_pixels,
        max_pixels=args.max_pixels,
        dtype=args.dtype,
    )
    engine = {"tensor_parallel_size": args.tensor_parallel_size, "gpu_memory_utilization": args.gpu_memory_utilization}
    if args.max_model_len:
        engine["max_model_len"] = args.max_model_len
    request = GenerateRequest(
        model=args.model,
        test_files=args.test,
        out=args.out,
        settings=settings,
        chunk_size=args.chunk_size,
        batch_size=args.batch_size,
        merged_dir=args.merged_dir,
        trust_remote_code=args.trust_remote_code,
        limit=args.limit,
        engine_options=engine,
    )
    return run_generate(request, progress=not args.no_progress)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "generate":
            result: object = _generate(args)
        elif args.command == "score":
            from recipe.evaluate.scoring import ScoreRequest, run_score

            request = ScoreRequest(
                responses=args.responses,
                test_files=args.test,
                out=args.out,
                official_cities=args.official_cities,
                training_logs=args.training_log,
                plots=not args.no_plots,
            )
            result = str(run_score(request, progress=not args.no_progress))
        elif args.command == "compare":
            from recipe.evaluate.compare import run_compare

            names = [n.strip() for n in args.names.split(",")] if args.names else None
            result = str(run_compare(args.folders, args.out, names=names, training_logs=args.training_log))
        else:
            from recipe.evaluate.vlmevalkit import run_export

            result = run_export(args.test, args.out, embed_images=args.embed_images)
    except EvalInputError as err:
        print(f"{PROG} {args.command}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    print(f"{PROG} {args.command}: {json.dumps(result, ensure_ascii=False)}")
    return 0
