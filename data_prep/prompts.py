"""Question wording and answer formats of ReasonMap and ReasonMap-Plus, so synthetic rows read like the benchmark.

A model trained on synthetic questions must answer the official benchmark in the same shape, so the wording
below follows the official templates; ``reward_fns.gold`` writes answers in exactly the format each prompt demands.

Sources (read, not copied from code; the benchmark repositories ship no template code, the questions live in the
datasets):

- Planning, three templates: ReasonMap paper (arXiv 2505.18675), Appendix A.1 "Question Template Summary" (one
  short, two long templates; long 1 asks for the number of via stops, long 2 for the via stops themselves). The
  ride blocks are separated by a line ``--``: that is what the official evaluation (ReasonMap ``main.py``)
  splits a response on, and it reads ``Number of Via Stops:`` (template 1) or ``Via Stops:`` (template 2).
- ReasonMap-Plus, five types: RewardMap paper (arXiv 2510.02240), Appendix A.2 "Question Template"; the exact
  punctuation of the ``\\boxed{}`` instruction and of the A-D option list is the one shown in the RewardMap
  README's SFT example (``... in one "\\boxed{}". According to the subway map, ... \\nA) 8 \\nB) 1 ...``).
"""

from __future__ import annotations

from collections.abc import Sequence

from reward_fns.ground_truth import OPTION_LETTERS

# ReasonMap-Plus (RewardMap Appendix A.2; boxed/option punctuation from the RewardMap README example).
# Templates are str.format patterns ("{{}}" prints as "{}"); use the functions below.
_BOX_YES_NO = 'Please solve the problem and put your answer (only answer yes or no) in one "\\boxed{{}}". '
_BOX_NUMBER = 'Please solve the problem and put your answer in one "\\boxed{{}}". '
_BOX_CHOICE = (
    f"Please solve the multiple choice problem and put your answer (one of {''.join(OPTION_LETTERS)}) "
    'in one "\\boxed{{}}". '
)

TORF1 = _BOX_YES_NO + "According to the subway map, is it true that {station_1} is the same line as {station_2}?"
TORF2 = _BOX_YES_NO + "According to the subway map, is it true that {station_1} is on the line {line}?"
COUNTING1 = (
    _BOX_CHOICE + "According to the subway map, how many intermediate stops are there between {station_1} and "
    "{station_2} (except for this two stops)? \n{options}"
)
COUNTING2 = _BOX_NUMBER + "According to the subway map, how many lines pass through {station_1}?"
COUNTING3 = _BOX_NUMBER + "According to the subway map, how many subway (metro) lines are there in total?"

# ReasonMap planning (ReasonMap Appendix A.1); the format example keeps the paper's placeholders.
_PLANNING_QUESTION = "According to the subway map, how do I get from {station_1} to {station_2}? "
_FORMAT_INTRO = "The format should be strictly followed:\n"
_BLOCK = "Route Name: Line x\nDeparture Stop: xx Station\nArrival Stop: xx Station\n"
PLANNING = {
    "short": _PLANNING_QUESTION
    + "Provide only one optimal route, with only the line name and the departure and arrival stations. "
    + _FORMAT_INTRO
    + _BLOCK
    + "--\n"
    + _BLOCK.rstrip("\n"),
    "long1": _PLANNING_QUESTION
    + "Provide only one optimal route, and include the number of via stops for each route section (excluding the "
    "departure and arrival stops). "
    + _FORMAT_INTRO
    + _BLOCK
    + "Number of Via Stops: x\n--\n"
    + _BLOCK
    + "Number of Via Stops: x",
    "long2": _PLANNING_QUESTION
    + "Provide only one optimal route, including all the via stops. "
    + _FORMAT_INTRO
    + _BLOCK
    + "Via Stops: xx Station, xx Station\n--\n"
    + _BLOCK
    + "Via Stops: xx Station",
}


def torf1(station_1: str, station_2: str) -> str:
    """TorF1: are the two stations on one line? (answer yes/no)."""
    return TORF1.format(station_1=station_1, station_2=station_2)


def torf2(station: str, line: str) -> str:
    """TorF2: is the station on the named line? (answer yes/no)."""
    return TORF2.format(station_1=station, line=line)


def counting1(station_1: str, station_2: str, options: Sequence[str]) -> str:
    """Counting1: stops strictly between two stations of one line, four options A-D (answer a letter)."""
    if len(options) != len(OPTION_LETTERS):
        raise ValueError(f"Counting1 needs {len(OPTION_LETTERS)} options, got {len(options)}")
    listed = "".join(f"{letter}) {text} \n" for letter, text in zip(OPTION_LETTERS, options, strict=True))
    return COUNTING1.format(station_1=station_1, station_2=station_2, options=listed)


def counting2(station: str) -> str:
    """Counting2: how many lines serve the station."""
    return COUNTING2.format(station_1=station)


def counting3() -> str:
    """Counting3: how many lines the whole map has."""
    return COUNTING3.format()


def planning(template: str, station_1: str, station_2: str) -> str:
    """A route-planning question in one of the templates short, long1, long2."""
    try:
        return PLANNING[template].format(station_1=station_1, station_2=station_2)
    except KeyError:
        raise ValueError(f"planning template {template!r} is not one of {tuple(PLANNING)}") from None
