"""Repeated questions among prepared rows: duplicates within a split, conflicts, and questions shared across splits.

Two rows ask the same question when they have the same question type, planning template, country, city and
question text (whitespace collapsed): the same words about the same map. Then:

- same ground truth: a duplicate. Kept, as in the source (the paper trained on the data as released), and
  reported: counted and listed (first ``MAX_LISTED``) in the manifest, and a warning.
- different ground truth: a conflict (one question, two answers). An error naming both records, so with
  ``--skip-invalid`` the later record is skipped and listed like any invalid record.
- a validation or test row asking a training question: counted per split in the manifest and a warning (the
  scores would partly measure memorisation).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from data_prep.schema import RowError

MAX_LISTED = 20  # duplicates listed by record in the manifest; all are counted

QuestionKey = tuple[str, str, str, str, str]


def question_key(row: dict[str, Any]) -> QuestionKey:
    """What makes two rows the same question (see module doc)."""
    extra = row["extra_info"]
    text = " ".join(str(m["content"]) for m in row["prompt"]).replace("<image>", " ")
    return (extra["question_type"], extra["template"], extra["country"], extra["city"], " ".join(text.split()))


@dataclass
class QuestionIndex:
    """Rows seen so far, by split; ``add`` reports duplicates and raises on conflicts."""

    first: dict[tuple[str, QuestionKey], tuple[str, int, str]] = field(default_factory=dict)
    keys: dict[str, list[QuestionKey]] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    listed: list[dict[str, Any]] = field(default_factory=list)

    def add(self, rows: Sequence[dict[str, Any]], *, split: str, source: str, record: int, where: str) -> None:
        """Record a record's rows; raises RowError when one answers an earlier question differently."""
        pending = []
        for row in rows:
            key = question_key(row)
            truth = row["reward_model"]["ground_truth"]
            earlier = self.first.get((split, key))
            if earlier is None:
                pending.append((key, truth))
                continue
            _, earlier_record, earlier_truth = earlier
            if earlier_truth != truth:
                raise RowError(
                    f"{where}: field {_first_difference(earlier_truth, truth)!r}: the same question on the same map "
                    f"as record {earlier_record} of this split, with another answer (one question, two answers)"
                )
            self.duplicates[split] = self.duplicates.get(split, 0) + 1
            if len(self.listed) < MAX_LISTED:
                self.listed.append({"split": split, "source": source, "record": record, "same_as": earlier_record})
        for key, truth in pending:
            self.first[(split, key)] = (source, record, truth)
        self.keys.setdefault(split, []).extend(question_key(row) for row in rows)

    def shared_with_train(self) -> dict[str, int]:
        """Per non-train split, how many of its rows ask a question the train split asks too."""
        train = set(self.keys.get("train", []))
        return {split: sum(k in train for k in keys) for split, keys in self.keys.items() if split != "train"}

    def report(self) -> tuple[dict[str, Any], list[str]]:
        """The manifest's ``duplicates`` entry and the warnings to print."""
        shared = self.shared_with_train()
        warnings = [
            f"{n} duplicate rows in {split} (the same question, city and ground truth as an earlier record; kept as "
            f"in the source; listed under manifest 'duplicates')"
            for split, n in sorted(self.duplicates.items())
        ]
        warnings += [
            f"{n} {split} rows ask a question the training rows ask too: {split} scores partly measure memorisation"
            for split, n in sorted(shared.items())
            if n
        ]
        entry = {
            "rule": "same question type, template, country, city and question text; kept when the ground truth is "
            "the same, an error when it differs",
            "count": dict(sorted(self.duplicates.items())),
            "listed": self.listed,
            "shared_with_train": shared,
        }
        return entry, warnings


def _first_difference(old: str, new: str) -> str:
    """The first ground-truth field two ground truths disagree on (named like the record's field)."""
    a, b = json.loads(old), json.loads(new)
    for name in sorted(set(a) | set(b)):
        if a.get(name) != b.get(name):
            return "json" if name == "network" else name
    return "answer"
