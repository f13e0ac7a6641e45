"""Tolerant, total, linear-time reading of a VQA answer (ReasonMap-Plus): the last ``\\boxed{}``, an "answer is"
phrase, or a short bare answer, mapped onto the question type's answer set. The released code's reading lives in
``reward_fns.reward_released``.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import Literal

from reward_fns.ground_truth import COUNT_TYPES, OPTION_LETTERS, OPTION_TYPES, YES_NO_TYPES

_BOX_OR_BRACE = re.compile(r"[bB][oO][xX][eE][dD]\{|[{}]")


def extract_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` (nested braces balanced; any case of "boxed"), else None.

    "Last" is the box that closes last, so ``\\boxed{\\boxed{1}}`` gives ``\\boxed{1}``. One pass over the braces.
    """
    if not isinstance(text, str) or "{" not in text:
        return None
    depth = 0
    open_boxes: list[tuple[int, int]] = []  # (depth outside the box, content start)
    last: tuple[int, int] | None = None
    for match in _BOX_OR_BRACE.finditer(text):
        token = match.group()
        if token == "{":
            depth += 1
        elif token == "}":
            if depth == 0:
                continue  # a stray closing brace
            depth -= 1
            if open_boxes and open_boxes[-1][0] == depth:
                last = (open_boxes.pop()[1], match.start())
        else:  # "boxed{"
            open_boxes.append((depth, match.end()))
            depth += 1
    return None if last is None else text[last[0] : last[1]]


_ANSWER_PHRASE = re.compile(r"answer[ \t]{0,3}(?:(?:is|should[ \t]{1,3}be)[ \t]{0,3}[:：]?|[:：])", re.IGNORECASE)
_LATEX_WRAPPERS = ("\\textbf", "\\text", "\\mathrm", "\\mathbf", "\\mbox", "\\bf")
_MARKUP = str.maketrans("", "", "{}$*`\"'“”‘’")
_WORD = re.compile(r"[a-z]+|\d+")
_YES = frozenset({"yes", "true"})
_NO = frozenset({"no", "false"})
_LETTERS = {letter.lower(): index for index, letter in enumerate(OPTION_LETTERS)}
_LETTER_WORDS = frozenset({"option", "choice", "answer"})
_NUMBER_WORDS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen twenty".split()
    )
}
_MAX_ANSWER = 200  # an answer is a word or a number; longer content is judged on its first characters


@dataclass(frozen=True, slots=True)
class VqaExtraction:
    """The raw answer text found in a response and where it came from (``boxed``, ``phrase`` or ``bare``)."""

    text: str
    source: Literal["boxed", "phrase", "bare"]


def extract_vqa_answer(text: str) -> VqaExtraction | None:
    """Tolerantly find the answer of a VQA response: last ``\\boxed{}``, else the last "answer is" phrase
    (rest of its line, first sentence), else the whole response when it is short (a bare "Yes" or "B")."""
    if not isinstance(text, str):
        return None
    boxed = extract_boxed(text)
    if boxed is not None:
        return VqaExtraction(boxed, "boxed")
    phrases = deque(_ANSWER_PHRASE.finditer(text), maxlen=1)  # keeps only the last match
    if phrases:
        last = phrases[0]
        tail = text[last.end() : last.end() + 4 * _MAX_ANSWER].partition("\n")[0].partition(". ")[0]
        return VqaExtraction(tail, "phrase")
    if len(text.strip()) <= 32:
        return VqaExtraction(text, "bare")
    return None


def _plain(raw: str) -> str:
    s = raw[: 4 * _MAX_ANSWER]
    for wrapper in _LATEX_WRAPPERS:
        s = s.replace(wrapper, "")
    return s.translate(_MARKUP).strip().lower()[:_MAX_ANSWER]


def normalize_vqa_answer(raw: str, question_type: str) -> str | int | None:
    """Map an extracted answer onto the question type's answer set, or None when it is not one unambiguous answer.

    TorF*: ``"yes"`` / ``"no"`` (also true/false); the first word decides, and content naming both polarities
    ("yes or no") is rejected. Counting1: option index 0-3 from a letter A-D (``B``, ``(B)``, ``B. 5``,
    ``Option B``); content naming two different letters is rejected. Counting2/3: the one distinct integer in
    the content (digits or an English number word up to twenty); several different numbers are rejected.
    """
    if not isinstance(raw, str):
        return None
    words = _WORD.findall(_plain(raw))
    if not words:
        return None
    if question_type in YES_NO_TYPES:
        polar = {"yes" if w in _YES else "no" for w in words if w in _YES or w in _NO}
        first = words[0]
        if len(polar) == 1 and (first in _YES or first in _NO):
            return polar.pop()
        return None
    if question_type in OPTION_TYPES:
        if words[0] in _LETTER_WORDS and len(words) > 1:
            words = words[1:]
        letters = {w for w in words if w in _LETTERS}
        if words[0] in _LETTERS and len(letters) == 1:
            return _LETTERS[words[0]]
        return None
    if question_type in COUNT_TYPES:
        numbers = {int(w) for w in words if w.isdigit() and len(w) <= 6}
        numbers |= {_NUMBER_WORDS[w] for w in words if w in _NUMBER_WORDS}
        return numbers.pop() if len(numbers) == 1 else None
    return None
