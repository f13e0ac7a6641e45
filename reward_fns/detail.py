"""Detail reward (partial credit) for planning answers: the released rule and the fixed rule.

Both start at 0 and pay nothing unless the first departure is the origin and the last arrival the destination;
then, with t = the question's transfer count and blocks indexed i = 0, 1, ...:

============================  ==========================================  ========================================
                              released (``released.released_detail``)     fixed (``fixed_detail``)
============================  ==========================================  ========================================
endpoints match               +2                                          +2
block with a line of the city +3 if t > 0; if t == 0, +4 when that line   same, but only for the first R rides of
                              holds both endpoints, else 0                the answer (padding is no ride, below)
consistent transfer           +1 when block i's stops are on its line,    +1 for boarding ride k (0 < k < R) from
                              its arrival is block i+1's departure, and   the block just before it, when that
                              i+1 <= t                                    block's stops are on its line and its
                                                                          arrival is the ride's departure
over-length penalty           -5 per block with i+1 > t                   -5 per block with i+1 > t+1
range                         capped at 10 above, no floor                clamped to [0, 10]
============================  ==========================================  ========================================

Fixed mode: a block is a ride unless it is padding: a ride whose departure is its arrival (a standstill), a ride
on the line of the last block that moved (one ride split in two, standstills between the parts or not), or a
repeat of an earlier block. R, the rides
paid for, is t+1 or the rides of a minimum-transfer route of the network, whichever is fewer: the transfer count
of a question can exceed the minimum (the benchmark's reference routes come from map apps), and a longer correct
route must not earn more than the shortest one.

The released penalty is off by one: a route with t transfers has t+1 blocks, so every correct answer loses 5 on
its last block, and a wrong single-block answer to a one-transfer question (2 + 3 = 5) outscores the correct
two-block answer (2 + 3 + 1 + 3 - 5 = 4). The fixed rule penalises only blocks beyond the t+1 expected rides,
and its [0, 10] range keeps alpha x detail below the +10 of correctness, so (with the default alpha = 0.5 and
format reward 1) a correct answer always outscores an incorrect one. Padding earns nothing and at most R rides
(and R-1 transfers) are paid, so no correct route outscores a minimum-transfer route, a correct route never gains
by being made longer (padding, a detour), and a wrong one never gains by repeating itself.
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
    paid = transfers + 1 if ctx.min_rides is None else min(transfers + 1, ctx.min_rides)
    stations = ctx.index.line_stations
    score = ENDPOINTS_POINTS
    rides = 0  # rides (non-padding blocks with a line of the city) so far
    seen: set[Leg] = set()
    travelled_line: str | None = None  # the line of the last block that moved (a standstill moves nowhere)
    for i, leg in enumerate(legs):
        if i > transfers:  # i+1 > t+1: beyond the expected number of rides
            score -= OVERLENGTH_PENALTY
        previous = legs[i - 1] if i else None
        standstill = leg.departure == leg.arrival
        padding = standstill or leg in seen or (i > 0 and leg.line == travelled_line)
        seen.add(leg)
        if not standstill:
            travelled_line = leg.line
        if leg.line is None or padding:
            continue
        if rides < paid:
            if transfers == 0:
                score += DIRECT_BLOCK_POINTS if leg.line in ctx.direct_lines else 0.0
            else:
                score += BLOCK_POINTS
            if 0 < rides and previous is not None and previous.line is not None:
                on_line = stations[previous.line]
                if previous.departure in on_line and previous.arrival in on_line and previous.arrival == leg.departure:
                    score += TRANSFER_POINTS
        rides += 1
    return min(max(score, 0.0), DETAIL_MAX)
