"""Score text detectors against the labelled corpus in ``corpus/`` (see README.md here).

A positive is *hit* when every alphanumeric character of its ``secret`` (each place it occurs in
``text``) lies inside some detected span, of any entity. Multi-line samples (PEM private keys) must
be covered both by ``detect(text)`` and by ``detect_lines(text.splitlines())``. Every span detected
on a negative line is one false positive. Spans on a positive that overlap no occurrence of its
secret are counted as over-redaction (reported, no target).

The scorer takes the detectors as arguments, so its own tests run it with stand-ins.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from agent.redact.spans import ENTITIES, FAMILIES

CORPUS = Path(__file__).resolve().parent / "corpus"
POSITIVES_PATH = CORPUS / "positives.jsonl"
NEGATIVES_DIR = CORPUS / "negatives"
CATEGORIES = ("code", "prose", "shell", "chat", "form")

#: Minimum recall per family (the issue's targets); families not listed are reported only.
RECALL_TARGETS: dict[str, float] = {
    "email": 0.99,
    "card": 0.99,
    "iban": 0.99,
    "token": 0.99,
    "private_key": 0.99,
    "phone": 0.95,
}
#: Maximum false positives per 1,000 lines over these negative categories combined.
FP_GATED_CATEGORIES = ("code", "prose")
FP_TARGET_PER_1000 = 1.0
#: How many misses per family and false positives per category a report lists.
LISTED = 8


class SpanLike(Protocol):
    """What the scorer reads of a detector's span (read-only: the detectors' spans are frozen)."""

    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...
    @property
    def entity(self) -> str: ...


Detect = Callable[[str], Sequence[SpanLike]]
DetectLines = Callable[[Iterable[str]], Iterator[Sequence[SpanLike]]]


@dataclass(frozen=True)
class Positive:
    id: str
    category: str
    family: str
    kind: str
    text: str
    secret: str


def load_positives(path: Path = POSITIVES_PATH) -> list[Positive]:
    out = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                out.append(
                    Positive(
                        row["id"],
                        row["category"],
                        row["family"],
                        row.get("kind", ""),
                        row["text"],
                        row["secret"],
                    )
                )
    return out


def load_negatives(directory: Path = NEGATIVES_DIR) -> dict[str, list[str]]:
    """Lines of each ``<category>.txt``, in order (the files end with a newline)."""
    out = {}
    for category in CATEGORIES:
        path = directory / f"{category}.txt"
        if path.exists():
            text = path.read_text(encoding="utf-8")
            out[category] = text[:-1].split("\n") if text.endswith("\n") else text.split("\n")
    return out


def secret_chars(text: str, secret: str) -> tuple[set[int], list[tuple[int, int]]]:
    """Indices of the alphanumeric characters of every occurrence of ``secret``, and the occurrences."""
    occurrences = []
    start = text.find(secret)
    while start >= 0:
        occurrences.append((start, start + len(secret)))
        start = text.find(secret, start + 1)
    if not occurrences:
        msg = "the secret does not occur in the text"
        raise ValueError(msg)
    chars = {i for a, b in occurrences for i in range(a, b) if text[i].isalnum()}
    return chars, occurrences


def covered(chars: set[int], spans: Iterable[tuple[int, int]]) -> bool:
    inside: set[int] = set()
    for start, end in spans:
        inside.update(range(start, end))
    return chars <= inside


def contract_problems(spans: Sequence[SpanLike], length: int) -> list[str]:
    """What is wrong with a detector's answer for a text of ``length`` characters."""
    problems = []
    previous_end = 0
    for span in spans:
        if span.entity not in ENTITIES:
            problems.append(f"unknown entity {span.entity!r}")
        if not 0 <= span.start < span.end <= length:
            problems.append(f"span {span.start}..{span.end} outside 0..{length}")
        if span.start < previous_end:
            problems.append(f"span {span.start}..{span.end} overlaps or precedes the one before")
        previous_end = max(previous_end, span.end)
    return problems


@dataclass
class FamilyResult:
    family: str
    total: int = 0
    hits: int = 0
    misses: list[dict[str, str]] = field(default_factory=list)
    by_category: dict[str, list[int]] = field(default_factory=dict)  # category -> [hits, total]
    over_redaction_spans: int = 0
    over_redaction_entities: Counter[str] = field(default_factory=Counter)

    @property
    def recall(self) -> float:
        return self.hits / self.total if self.total else 1.0


@dataclass
class CategoryFalsePositives:
    category: str
    lines: int = 0
    spans: int = 0
    lines_hit: int = 0
    by_entity: Counter[str] = field(default_factory=Counter)
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def per_1000(self) -> float:
        return 1000 * self.spans / self.lines if self.lines else 0.0


@dataclass
class Report:
    families: dict[str, FamilyResult]
    negatives: dict[str, CategoryFalsePositives]
    contract: list[str]
    seconds: float

    @property
    def gated_lines(self) -> int:
        return sum(self.negatives[c].lines for c in FP_GATED_CATEGORIES if c in self.negatives)

    @property
    def gated_spans(self) -> int:
        return sum(self.negatives[c].spans for c in FP_GATED_CATEGORIES if c in self.negatives)

    @property
    def gated_fp_per_1000(self) -> float:
        return 1000 * self.gated_spans / self.gated_lines if self.gated_lines else 0.0

    def failures(self) -> list[str]:
        out = []
        for family, target in RECALL_TARGETS.items():
            result = self.families.get(family)
            if result is None or result.total == 0:
                out.append(f"{family}: no positives in the corpus")
            elif result.recall < target:
                ratio = f"{result.hits}/{result.total}"
                out.append(f"{family}: recall {result.recall:.2%} ({ratio}) is below {target:.0%}")
        if self.gated_fp_per_1000 > FP_TARGET_PER_1000:
            out.append(
                f"false positives on {'+'.join(FP_GATED_CATEGORIES)}: {self.gated_fp_per_1000:.2f} "
                f"per 1,000 lines ({self.gated_spans} in {self.gated_lines}) is above {FP_TARGET_PER_1000:g}"
            )
        out += [f"detector contract: {p}" for p in self.contract[:LISTED]]
        if len(self.contract) > LISTED:
            out.append(f"detector contract: ... {len(self.contract) - LISTED} more")
        return out

    def table(self) -> str:
        lines = ["", "Recall per family (a hit covers every letter and digit of the secret)"]
        lines.append(
            f"  {'family':<16}{'hits/total':>12}{'recall':>9}{'target':>8}"
            "       over-redaction  misses (id category kind)"
        )
        for family in _ordered(self.families):
            r = self.families[family]
            target = RECALL_TARGETS.get(family)
            mark = "" if target is None else (" ok" if r.recall >= target else " FAIL")
            shown = ", ".join(f"{m['id']} {m['category']} {m['kind']}" for m in r.misses[:LISTED])
            more = f", ... {len(r.misses) - LISTED} more" if len(r.misses) > LISTED else ""
            target_text = f"{target:.0%}" if target else "-"
            lines.append(
                f"  {family:<16}{f'{r.hits}/{r.total}':>12}{r.recall:>9.1%}{target_text:>8}{mark:<5}"
                f"{r.over_redaction_spans:>16}  {shown}{more}"
            )
        lines.append("")
        lines.append("Recall per family and category (hits/total)")
        lines.append("  " + f"{'family':<16}" + "".join(f"{c:>10}" for c in CATEGORIES))
        for family in _ordered(self.families):
            cells = self.families[family].by_category
            lines.append(
                "  "
                + f"{family:<16}"
                + "".join(
                    f"{(f'{cells[c][0]}/{cells[c][1]}' if c in cells else '-'):>10}" for c in CATEGORIES
                )
            )
        lines.append("")
        lines.append("False positives on negatives (each detected span is one)")
        lines.append(f"  {'category':<10}{'lines':>8}{'spans':>8}{'per 1,000':>11}  entities")
        for category, n in self.negatives.items():
            entities = ", ".join(f"{e} {k}" for e, k in n.by_entity.most_common())
            lines.append(f"  {category:<10}{n.lines:>8}{n.spans:>8}{n.per_1000:>11.2f}  {entities}")
        status = "ok" if self.gated_fp_per_1000 <= FP_TARGET_PER_1000 else "FAIL"
        lines.append(
            f"  {'+'.join(FP_GATED_CATEGORIES):<10}{self.gated_lines:>8}{self.gated_spans:>8}"
            f"{self.gated_fp_per_1000:>11.2f}  target <= {FP_TARGET_PER_1000:g} per 1,000 lines: {status}"
        )
        for category, n in self.negatives.items():
            for ex in n.examples[:LISTED]:
                lines.append(
                    f"    {category} line {ex['line']}: {ex['entity']} on {ex['match']!r} in {ex['text']!r}"
                )
        if self.contract:
            lines.append("")
            lines.append(f"Detector contract problems: {len(self.contract)}")
            lines += [f"  {p}" for p in self.contract[:LISTED]]
        lines.append("")
        lines.append(f"({self.seconds:.2f} s)")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "targets": {
                "recall": RECALL_TARGETS,
                "fp_per_1000": FP_TARGET_PER_1000,
                "fp_categories": list(FP_GATED_CATEGORIES),
            },
            "recall": {
                family: {
                    "hits": r.hits,
                    "total": r.total,
                    "recall": r.recall,
                    "target": RECALL_TARGETS.get(family),
                    "by_category": {c: {"hits": h, "total": t} for c, (h, t) in r.by_category.items()},
                    "misses": r.misses,
                    "over_redaction_spans": r.over_redaction_spans,
                    "over_redaction_entities": dict(r.over_redaction_entities),
                }
                for family, r in self.families.items()
            },
            "false_positives": {
                category: {
                    "lines": n.lines,
                    "spans": n.spans,
                    "lines_hit": n.lines_hit,
                    "per_1000": n.per_1000,
                    "by_entity": dict(n.by_entity),
                    "examples": n.examples,
                }
                for category, n in self.negatives.items()
            },
            "false_positives_gated": {
                "categories": list(FP_GATED_CATEGORIES),
                "lines": self.gated_lines,
                "spans": self.gated_spans,
                "per_1000": self.gated_fp_per_1000,
            },
            "contract_problems": self.contract,
            "failures": self.failures(),
            "seconds": self.seconds,
        }


def _ordered(families: dict[str, FamilyResult]) -> list[str]:
    return [f for f in FAMILIES if f in families] + sorted(set(families) - set(FAMILIES))


def _line_offsets(text: str) -> list[int]:
    offsets, position = [], 0
    for line in text.split("\n"):
        offsets.append(position)
        position += len(line) + 1
    return offsets


def _spans_by_lines(
    detect_lines: DetectLines, text: str, contract: list[str], where: str
) -> list[tuple[int, int]]:
    """``detect_lines`` over the lines of ``text``, mapped back to offsets in ``text``."""
    lines = text.split("\n")
    answers = list(detect_lines(iter(lines)))
    if len(answers) != len(lines):
        contract.append(f"{where}: detect_lines gave {len(answers)} lists for {len(lines)} lines")
    out = []
    for offset, line, spans in zip(_line_offsets(text), lines, answers, strict=False):
        contract.extend(f"{where}: {p}" for p in contract_problems(spans, len(line)))
        out += [(offset + s.start, offset + s.end) for s in spans]
    return out


def evaluate(
    detect: Detect,
    detect_lines: DetectLines,
    positives: Sequence[Positive],
    negatives: dict[str, list[str]],
    *,
    examples: int = 50,
) -> Report:
    started = time.perf_counter()
    families: dict[str, FamilyResult] = {}
    contract: list[str] = []
    for p in positives:
        result = families.setdefault(p.family, FamilyResult(p.family))
        chars, occurrences = secret_chars(p.text, p.secret)
        spans: Sequence[SpanLike] = list(detect(p.text))
        contract.extend(f"{p.id}: {problem}" for problem in contract_problems(spans, len(p.text)))
        hit_whole = covered(chars, ((s.start, s.end) for s in spans))
        hit_lines = True
        if "\n" in p.text:
            hit_lines = covered(chars, _spans_by_lines(detect_lines, p.text, contract, p.id))
        hit = hit_whole and hit_lines
        cell = result.by_category.setdefault(p.category, [0, 0])
        cell[1] += 1
        result.total += 1
        if hit:
            result.hits += 1
            cell[0] += 1
        else:
            why = "both" if not (hit_whole or hit_lines) else ("detect_lines" if hit_whole else "detect")
            result.misses.append({"id": p.id, "category": p.category, "kind": p.kind, "missed_by": why})
        for s in spans:
            if not any(s.start < b and a < s.end for a, b in occurrences):
                result.over_redaction_spans += 1
                result.over_redaction_entities[s.entity] += 1

    fps: dict[str, CategoryFalsePositives] = {}
    for category, lines in negatives.items():
        n = fps[category] = CategoryFalsePositives(category, lines=len(lines))
        answers = list(detect_lines(iter(lines)))
        if len(answers) != len(lines):
            contract.append(
                f"negatives/{category}: detect_lines gave {len(answers)} lists for {len(lines)} lines"
            )
        for number, (line, spans) in enumerate(zip(lines, answers, strict=False), 1):
            contract.extend(
                f"negatives/{category}.txt:{number}: {p}" for p in contract_problems(spans, len(line))
            )
            if spans:
                n.lines_hit += 1
            for s in spans:
                n.spans += 1
                n.by_entity[s.entity] += 1
                if len(n.examples) < examples:
                    n.examples.append(
                        {
                            "line": number,
                            "entity": s.entity,
                            "match": line[s.start : s.end],
                            "text": line[:200],
                        }
                    )
    return Report(families, fps, contract, time.perf_counter() - started)


def write_report(report: Report, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
