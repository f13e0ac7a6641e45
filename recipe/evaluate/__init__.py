"""Evaluation on ReasonMap and ReasonMap-Plus, under the released benchmark rules and the fixed ones: ``python -m
recipe.evaluate`` (``recipe.evaluate.cli``).

Subcommands: ``generate`` (model + prepared test files -> responses JSONL; ``generation``), ``score`` (responses +
test files -> results folder; ``scoring``, ``report``, ``plots``), ``compare`` (results folders -> one table and
plots; ``compare``), ``export-vlmevalkit`` (the ReasonMap-Plus test split as VLMEvalKit's TSV; ``vlmevalkit``).
The rules themselves are ``reward_fns.benchmark`` (over ``reward_fns.benchmark_released`` and ``benchmark_fixed``).
"""
