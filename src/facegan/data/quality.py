"""Data-quality accounting: every input read is either kept or skipped with a reason.

Each stage writes its part to reports/data_quality/<stage>.json (a DVC metric
of that stage) and the full list of skipped items to data/.../skipped.csv; the
`data_quality` stage merges the parts into reports/data_quality.json.
"""
from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from pathlib import Path

log = logging.getLogger(__name__)

EXAMPLES_PER_REASON = 10


class DataError(RuntimeError):
    """Too little usable data remains to go on."""


class SetQuality:
    """Counts for one dataset within one stage."""

    def __init__(self, name: str):
        self.name = name
        self.read = 0
        self.kept = 0
        self.skipped: Counter[str] = Counter()
        self.notes: Counter[str] = Counter()
        self.skipped_items: list[tuple[str, str, str]] = []
        self.rates: dict[str, float] = {}

    def skip(self, item: str, reason: str, detail: str = "") -> None:
        self.skipped[reason] += 1
        self.skipped_items.append((str(item), reason, detail))
        if self.skipped[reason] <= 3:
            log.warning("%s: skipped %s (%s%s)", self.name, item, reason, f": {detail}" if detail else "")

    def note(self, key: str, n: int = 1) -> None:
        """Count something kept but worth knowing (converted, fell back...)."""
        self.notes[key] += n

    def kept_fraction(self) -> float:
        return self.kept / self.read if self.read else 0.0

    def as_dict(self) -> dict:
        examples: dict[str, list[str]] = {}
        for item, reason, _ in self.skipped_items:
            bucket = examples.setdefault(reason, [])
            if len(bucket) < EXAMPLES_PER_REASON:
                bucket.append(item)
        return {
            "read": self.read,
            "kept": self.kept,
            "skipped": sum(self.skipped.values()),
            "skipped_by_reason": dict(sorted(self.skipped.items())),
            "notes": dict(sorted(self.notes.items())),
            **{k: round(v, 4) for k, v in sorted(self.rates.items())},
            "examples": examples,
        }

    def write_skipped(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["item", "reason", "detail"])
            writer.writerows(self.skipped_items)

    def require(self, min_fraction: float, param: str) -> None:
        """Fail, saying what and how many, when too little of the set remains."""
        if self.read == 0 or self.kept_fraction() < min_fraction:
            reasons = ", ".join(f"{r}: {n}" for r, n in self.skipped.most_common()) or "none"
            raise DataError(
                f"{self.name}: kept {self.kept} of {self.read} inputs "
                f"({self.kept_fraction():.1%}), below {param}={min_fraction}; skipped by reason: {reasons}")


def write_part(path: Path, stage: str, sets: dict[str, SetQuality]) -> dict:
    report = {name: q.as_dict() for name, q in sets.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"stage": stage, "sets": report}, indent=2) + "\n")
    return report


def merge_parts(part_paths: list[Path]) -> dict:
    """{set: {stage: counts}} plus, per set, the totals skipped over all stages."""
    merged: dict[str, dict] = {}
    for path in part_paths:
        part = json.loads(Path(path).read_text())
        for name, counts in part["sets"].items():
            merged.setdefault(name, {})[part["stage"]] = counts
    summary = {
        name: {"skipped_total": sum(c["skipped"] for c in stages.values()), "stages": stages}
        for name, stages in sorted(merged.items())
    }
    return {"sets": summary}
