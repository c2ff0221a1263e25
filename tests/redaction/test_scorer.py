"""The scorer, run with stand-in detectors: what counts as a hit, a false positive, a failure."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from agent.redact.spans import Span
from tests.redaction import scoring
from tests.redaction.scoring import Positive

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


def email_detect(text: str) -> list[Span]:
    return [Span(m.start(), m.end(), "EMAIL") for m in EMAIL.finditer(text)]


def email_detect_lines(lines: Iterable[str]) -> Iterator[list[Span]]:
    for line in lines:
        yield email_detect(line)


def nothing(text: str) -> list[Span]:
    return []


def nothing_lines(lines: Iterable[str]) -> Iterator[list[Span]]:
    for _ in lines:
        yield []


def pos(text: str, secret: str, family: str = "email", id_: str = "p-1", category: str = "chat") -> Positive:
    return Positive(id_, category, family, "k", text, secret)


def fixed(spans_by_text: dict[str, list[Span]]):  # type: ignore[no-untyped-def]
    """A detector that answers from a table (nothing for texts it does not know)."""

    def detect(text: str) -> list[Span]:
        return spans_by_text.get(text, [])

    def detect_lines(lines: Iterable[str]) -> Iterator[list[Span]]:
        for line in lines:
            yield spans_by_text.get(line, [])

    return detect, detect_lines


# -- hits ---------------------------------------------------------------------------------------


def test_a_hit_covers_every_letter_and_digit_of_the_secret() -> None:
    text = "call +44 20 7946 0123 now"
    value = "+44 20 7946 0123"
    start = text.index(value)
    digits_only = [Span(start + 1, start + 3, "PHONE"), Span(start + 4, start + len(value), "PHONE")]
    detect, lines = fixed({text: digits_only})
    report = scoring.evaluate(detect, lines, [pos(text, value, "phone")], {})
    assert report.families["phone"].hits == 1, "the '+' and the spaces need no cover"

    short = [Span(start, start + len(value) - 1, "PHONE")]
    detect, lines = fixed({text: short})
    report = scoring.evaluate(detect, lines, [pos(text, value, "phone")], {})
    assert report.families["phone"].hits == 0, "one uncovered digit is a miss"
    assert report.families["phone"].misses == [
        {"id": "p-1", "category": "chat", "kind": "k", "missed_by": "detect"}
    ]


def test_any_entity_counts_and_every_occurrence_must_be_covered() -> None:
    text = "pw hunter22 and again hunter22"
    first = text.index("hunter22")
    second = text.rindex("hunter22")
    one = [Span(first, first + 8, "US_SSN")]
    both = [*one, Span(second, second + 8, "JWT")]
    detect, lines = fixed({text: one})
    assert (
        scoring.evaluate(detect, lines, [pos(text, "hunter22", "prompt_secret")], {})
        .families["prompt_secret"]
        .hits
        == 0
    )
    detect, lines = fixed({text: both})
    assert (
        scoring.evaluate(detect, lines, [pos(text, "hunter22", "prompt_secret")], {})
        .families["prompt_secret"]
        .hits
        == 1
    )


def test_spans_larger_than_the_secret_are_hits_and_spans_elsewhere_are_over_redaction() -> None:
    text = "mail a@example.com at 10:30 in room 4"
    value = "a@example.com"
    start = text.index(value)
    spans = [
        Span(0, start + len(value), "EMAIL"),
        Span(text.index("10:30"), text.index("10:30") + 5, "PHONE"),
    ]
    detect, lines = fixed({text: spans})
    result = scoring.evaluate(detect, lines, [pos(text, value)], {}).families["email"]
    assert (result.hits, result.over_redaction_spans, dict(result.over_redaction_entities)) == (
        1,
        1,
        {"PHONE": 1},
    )


def test_a_multi_line_sample_must_be_covered_by_detect_and_by_detect_lines() -> None:
    text = "$ cat key\n-----BEGIN X-----\nQUJD\n-----END X-----\n$ ls"
    value = "-----BEGIN X-----\nQUJD\n-----END X-----"
    start = text.index(value)
    whole = [Span(start, start + len(value), "PRIVATE_KEY")]
    per_line = {line: [Span(0, len(line), "PRIVATE_KEY")] for line in value.split("\n")}

    def detect_whole(t: str) -> list[Span]:
        return whole if t == text else []

    def lines_right(lines: Iterable[str]) -> Iterator[list[Span]]:
        for line in lines:
            yield per_line.get(line, [])

    def lines_wrong(lines: Iterable[str]) -> Iterator[list[Span]]:
        for line in lines:
            yield per_line.get(line, []) if line != "QUJD" else []

    sample = [pos(text, value, "private_key", category="shell")]
    assert scoring.evaluate(detect_whole, lines_right, sample, {}).families["private_key"].hits == 1
    missed = scoring.evaluate(detect_whole, lines_wrong, sample, {}).families["private_key"]
    assert (missed.hits, missed.misses[0]["missed_by"]) == (0, "detect_lines")
    missed = scoring.evaluate(nothing, lines_right, sample, {}).families["private_key"]
    assert (missed.hits, missed.misses[0]["missed_by"]) == (0, "detect")
    missed = scoring.evaluate(nothing, nothing_lines, sample, {}).families["private_key"]
    assert (missed.hits, missed.misses[0]["missed_by"]) == (0, "both")


def test_single_line_samples_are_scored_with_detect_only() -> None:
    text = "mail a@example.com"
    detect, _ = fixed({text: email_detect(text)})
    assert (
        scoring.evaluate(detect, nothing_lines, [pos(text, "a@example.com")], {}).families["email"].hits == 1
    )


def test_a_secret_missing_from_its_text_is_an_error() -> None:
    with pytest.raises(ValueError, match="does not occur"):
        scoring.evaluate(nothing, nothing_lines, [pos("nothing here", "a@example.com")], {})


# -- false positives ----------------------------------------------------------------------------


def test_every_span_on_a_negative_line_is_one_false_positive_per_category() -> None:
    code = ["x = 1", "# a@example.com and b@example.org", *["pass"] * 498]
    prose = ["c@example.net wrote this", *["words"] * 499]
    chat = ["d@example.com", "fine"]
    report = scoring.evaluate(
        email_detect, email_detect_lines, [], {"code": code, "prose": prose, "chat": chat}
    )
    assert (report.negatives["code"].spans, report.negatives["code"].lines_hit) == (2, 1)
    assert report.negatives["code"].per_1000 == pytest.approx(4.0)
    assert report.negatives["chat"].per_1000 == pytest.approx(500.0)
    assert (report.gated_spans, report.gated_lines) == (3, 1000)
    assert report.gated_fp_per_1000 == pytest.approx(3.0)
    assert report.negatives["code"].examples[0] == {
        "line": 2,
        "entity": "EMAIL",
        "match": "a@example.com",
        "text": "# a@example.com and b@example.org",
    }
    assert any("false positives on code+prose: 3.00 per 1,000 lines" in f for f in report.failures())


def test_negatives_go_through_detect_lines_in_order() -> None:
    seen: list[str] = []

    def recording(lines: Iterable[str]) -> Iterator[list[Span]]:
        for line in lines:
            seen.append(line)
            yield []

    scoring.evaluate(nothing, recording, [], {"shell": ["a", "b", "c"]})
    assert seen == ["a", "b", "c"]


def test_the_gate_is_at_most_one_per_thousand_lines_of_code_and_prose() -> None:
    lines = ["a@example.com", *["x"] * 999]
    report = scoring.evaluate(
        email_detect, email_detect_lines, [], {"code": lines, "chat": ["e@example.com"] * 5}
    )
    assert report.gated_fp_per_1000 == pytest.approx(1.0)
    assert report.failures() == [f"{family}: no positives in the corpus" for family in scoring.RECALL_TARGETS]


# -- targets ------------------------------------------------------------------------------------


def _family_of(n_hit: int, n_miss: int, family: str) -> list[Positive]:
    hit = [pos(f"to a{i}@example.com", f"a{i}@example.com", family, f"{family}-h{i}") for i in range(n_hit)]
    miss = [pos(f"to a{i} example.com", f"a{i}", family, f"{family}-m{i}") for i in range(n_miss)]
    return hit + miss


def test_recall_targets_are_inclusive_and_per_family() -> None:
    corpus = (
        _family_of(99, 1, "email")
        + _family_of(98, 2, "card")
        + _family_of(95, 5, "phone")
        + _family_of(94, 6, "ssn")  # no target
        + _family_of(100, 0, "iban")
        + _family_of(100, 0, "token")
        + _family_of(10, 0, "private_key")
    )
    report = scoring.evaluate(email_detect, email_detect_lines, corpus, {"code": ["x"]})
    assert report.families["email"].recall == pytest.approx(0.99)
    assert report.failures() == ["card: recall 98.00% (98/100) is below 99%"]
    phone = _family_of(94, 6, "phone")
    report = scoring.evaluate(email_detect, email_detect_lines, [*corpus[:200], *phone, *corpus[300:]], {})
    assert report.failures() == [
        "card: recall 98.00% (98/100) is below 99%",
        "phone: recall 94.00% (94/100) is below 95%",
    ]


def test_the_null_detector_fails_every_gated_family_on_the_real_corpus_quickly() -> None:
    report = scoring.evaluate(nothing, nothing_lines, scoring.load_positives(), scoring.load_negatives())
    assert [f.split(":")[0] for f in report.failures()] == list(scoring.RECALL_TARGETS)
    assert report.gated_fp_per_1000 == 0
    assert report.seconds < 5


def test_an_oracle_detector_scores_perfectly_on_the_real_corpus() -> None:
    """Spans exactly on the labelled secrets: 100% recall, no false positive, no over-redaction.

    This checks the corpus as much as the scorer: a secret that also occurred in a negative line,
    or a label that did not match its text, would show here.
    """
    positives = scoring.load_positives()
    by_text: dict[str, list[Span]] = {}
    key_lines: set[str] = set()
    in_line: list[str] = []  # one-line secrets of multi-line texts (a PEM in a JSON string)
    entity_of = {
        "email": "EMAIL",
        "phone": "PHONE",
        "card": "CREDIT_CARD",
        "iban": "IBAN",
        "ssn": "US_SSN",
        "url_credentials": "URL_CREDENTIALS",
        "token": "JWT",
        "private_key": "PRIVATE_KEY",
        "prompt_secret": "PASSWORD",
    }
    for p in positives:
        start = p.text.index(p.secret)
        by_text[p.text] = [Span(start, start + len(p.secret), entity_of[p.family])]
        if "\n" in p.secret:
            key_lines.update(s.strip() for s in p.secret.split("\n") if s.strip())
        elif "\n" in p.text:
            in_line.append(p.secret)

    def detect(text: str) -> list[Span]:
        return by_text.get(text, [])

    def detect_lines(lines: Iterable[str]) -> Iterator[list[Span]]:
        for line in lines:
            stripped = line.strip()
            if stripped in key_lines:
                yield [Span(line.index(stripped), len(line), "PRIVATE_KEY")]
                continue
            found = [(line.index(s), line.index(s) + len(s)) for s in in_line if s in line]
            yield [Span(*found[0], "PRIVATE_KEY")] if found else []

    report = scoring.evaluate(detect, detect_lines, positives, scoring.load_negatives())
    assert report.failures() == []
    assert all(r.recall == 1 and r.over_redaction_spans == 0 for r in report.families.values())
    assert sum(n.spans for n in report.negatives.values()) == 0


# -- the contract and the report ----------------------------------------------------------------


def test_detector_contract_problems_fail_the_run() -> None:
    def short_lines(lines: Iterable[str]) -> Iterator[list[Span]]:
        yield []

    report = scoring.evaluate(nothing, short_lines, [], {"code": ["a", "b"]})
    assert report.contract == ["negatives/code: detect_lines gave 1 lists for 2 lines"]

    def overlapping(text: str) -> list[Span]:
        return [Span(0, 4, "EMAIL"), Span(2, 6, "EMAIL"), Span(5, 99, "EMAIL")]

    report = scoring.evaluate(overlapping, nothing_lines, [pos("abcdefgh", "abc")], {})
    assert report.contract == [
        "p-1: span 2..6 overlaps or precedes the one before",
        "p-1: span 5..99 outside 0..8",
        "p-1: span 5..99 overlaps or precedes the one before",
    ]
    assert any(f.startswith("detector contract:") for f in report.failures())


def test_the_table_names_misses_by_id_and_never_prints_a_secret(tmp_path: Path) -> None:
    value = "zq.canary@example.com"
    report = scoring.evaluate(
        nothing,
        nothing_lines,
        [pos(f"mail {value}", value, id_="email-0042", category="form")],
        {"code": ["x"]},
    )
    table = report.table()
    assert "email-0042 form k" in table
    assert "zq.canary" not in table
    path = tmp_path / "out" / "report.json"
    scoring.write_report(report, path)
    data = json.loads(path.read_text())
    assert data["recall"]["email"]["misses"] == [
        {"id": "email-0042", "category": "form", "kind": "k", "missed_by": "detect"}
    ]
    assert data["false_positives_gated"] == {
        "categories": ["code", "prose"],
        "lines": 1,
        "spans": 0,
        "per_1000": 0.0,
    }
    assert "zq.canary" not in path.read_text()


def test_negatives_load_as_lines_in_order(tmp_path: Path) -> None:
    (tmp_path / "code.txt").write_text("a\n  b\nc\n", encoding="utf-8")
    (tmp_path / "chat.txt").write_text("x", encoding="utf-8")
    assert scoring.load_negatives(tmp_path) == {"code": ["a", "  b", "c"], "chat": ["x"]}
