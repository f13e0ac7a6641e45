"""Detail reward (partial credit) for planning answers: the released rule and the fixed rule.

Both start at 0 and pay nothing unless the first departure is the origin and the last arrival the destination;
then, with t = the question's transfer count and blocks indexed i = 0, 1, ...:

============================  ==========================================  ========================================
                              released (``released.released_detail``)        fixed (``fixed_detail``)
============================  ==========================================  ========================================
endpoints match               +2                                          +2
block with a line of the city +3 if t > 0; if t == 0, +4 when that line   same, but only for the first occurrence
                              holds both endpoints, else 0                of a block (line, departure, arrival)
consistent transfer           +1 when block i's stops are on its line,    same, and the next block must be on a
                              its arrival is block i+1's departure, and   different line (a transfer changes line)
                              i+1 <= t
over-length penalty           -5 per block with i+1 > t                   -5 per block with i+1 > t+1
range                         capped at 10 above, no floor                clamped to [0, 10]
============================  ==========================================  ========================================

The released penalty is off by one: a route with t transfers has t+1 blocks, so every correct answer loses 5 on
its last block, and a wrong single-block answer to a one-transfer question (2 + 3 = 5) outscores the correct
two-block answer (2 + 3 + 1 + 3 - 5 = 4). The fixed rule penalises only blocks beyond the t+1 expected rides,
and its [0, 10] range keeps alpha x detail below the +10 of correctness, so (with the default alpha = 0.5 and
format reward 1) a correct answer always outscores an incorrect one. Its two extra conditions make padding
worthless: repeating a block earns no block points, and consecutive rides on one line (a route split at every
station) earn no transfer points, so a correct route never gains by being longer (each extra block nets -2 or
less) and a wrong one never gains by repeating itself.
"""

from __future__ import annotations

from collections.abc import Sequence

from reward_fns.correctness import endpoints_match
from reward_fns.question_context import Leg, QuestionContext

DETAIL_MAX = 10.0
ENDPOINTS_POINTS = 2.0
BLOCK_POINTS = 3.0
DIRECT_BLOCK_POINTS = 4.0
TRANSFER_POINTS = 1.0
OVERLENGTH_PENALTY = 5.0


def fixed_detail(legs: Sequence[Leg], ctx: QuestionContext, transfers: int) -> float:
    """The fixed detail reward over tolerantly parsed legs (see the module table), in [0, 10]."""
    if ctx.index is None or not endpoints_match(legs, ctx):
        return 0.0
    transfers = max(int(transfers), 0)
    stations = ctx.index.line_stations
    score = ENDPOINTS_POINTS
    last = len(legs) - 1
    seen: set[Leg] = set()
    for i, leg in enumerate(legs):
        if i > transfers:  # i+1 > t+1: beyond the expected number of rides
            score -= OVERLENGTH_PENALTY
        if leg.line is None:
            continue
        if leg not in seen:
            seen.add(leg)
            if transfers == 0:
                score += DIRECT_BLOCK_POINTS if leg.line in ctx.direct_lines else 0.0
            else:
                score += BLOCK_POINTS
        on_line = stations[leg.line]
        if i < last and i + 1 <= transfers and leg.departure in on_line and leg.arrival in on_line:
            nxt = legs[i + 1]
            if leg.arrival == nxt.departure and nxt.line != leg.line:
                score += TRANSFER_POINTS
    return min(max(score, 0.0), DETAIL_MAX)
