"""The text detectors' public API: detect, detect_lines, redact, overlap resolution, PEM state.

Family-by-family positives and negatives are in test_detectors_pii.py and
test_detectors_secrets.py.  All values are synthetic.
"""

from __future__ import annotations

import itertools
import string
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.redact import detectors
from agent.redact.spans import ENTITIES, Span
from tests.unit.test_detectors_helpers import card, found, grouped

BEGIN = "-----BEGIN RSA PRIVATE KEY-----"
END = "-----END RSA PRIVATE KEY-----"
BODY = ["MIIEowIBAAKCAQEAx3Jm0dFlQzSyntheticKeyMaterialOnly0123456789abcd", "q2Vb7ZnP1tXkT9Lz+/ABCDEFG=="]


def test_version_and_names() -> None:
    assert isinstance(detectors.DETECTORS_VERSION, str) and detectors.DETECTORS_VERSION
    assert detectors.DETECTOR_NAMES == (
        "email",
        "phone",
        "cards",
        "iban",
        "ssn",
        "url_credentials",
        "tokens",
        "jwt",
        "private_keys",
        "prompts",
    )


def test_every_entity_has_a_specificity() -> None:
    assert set(detectors.SPECIFICITY) == set(ENTITIES)


def test_empty_and_plain_text() -> None:
    assert detectors.detect("") == []
    assert detectors.detect("Nothing to see here, just words and 42 numbers.") == []


def test_detect_sorted_and_disjoint_on_mixed_text() -> None:
    text = (
        "Mail alice@example.com, call +44 20 7946 0958, pay with "
        f"{grouped(card('4', 16))}, IBAN GB82 WEST 1234 5698 7654 32, key AKIAIOSFODNN7EXAMPLE\n"
        "password: hunter2\n"
    )
    spans = detectors.detect(text)
    assert [s.entity for s in spans] == [
        "EMAIL",
        "PHONE",
        "CREDIT_CARD",
        "IBAN",
        "AWS_ACCESS_KEY",
        "PASSWORD",
    ]
    for a, b in itertools.pairwise(spans):
        assert a.end < b.start


def test_redact_replaces_spans_with_placeholders() -> None:
    text = "write to alice@example.com or bob@example.org today"
    spans = detectors.detect(text)
    assert detectors.redact(text, spans) == "write to [EMAIL] or [EMAIL] today"


def test_redact_without_spans_is_identity() -> None:
    assert detectors.redact("plain text", []) == "plain text"


def test_redact_merges_unsorted_overlapping_spans() -> None:
    text = "0123456789"
    spans = [Span(5, 8, "PHONE"), Span(1, 3, "EMAIL"), Span(2, 6, "CREDIT_CARD")]
    assert detectors.redact(text, spans) == "0[CREDIT_CARD]89"


def test_overlap_keeps_union_and_more_specific_entity() -> None:
    # the international rule reads "+44 4111 1111 1111" as a phone; the card wins the union
    number = grouped(card("4111", 16))
    text = f"ring +44 {number} now"
    spans = detectors.detect(text)
    assert len(spans) == 1
    assert spans[0].entity == "CREDIT_CARD"
    assert text[spans[0].start : spans[0].end] == f"+44 {number}"


def test_vendor_token_beats_prompt_secret() -> None:
    token = "ghp_" + "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5"
    assert found(f"token: {token}") == [("GITHUB_TOKEN", token)]


def test_card_beats_password_prompt() -> None:
    number = card("5", 16)
    assert found(f"password: {number}") == [("CREDIT_CARD", number)]


def test_touching_spans_are_merged_into_the_more_specific() -> None:
    assert detectors.redact("abcdef", [Span(0, 3, "PHONE"), Span(3, 5, "EMAIL")]) == "[EMAIL]f"


# ---- detect() across lines -------------------------------------------------------------


def test_detect_covers_pem_block_across_lines() -> None:
    text = "\n".join(["key follows:", BEGIN, *BODY, END, "mail alice@example.com"])
    spans = detectors.detect(text)
    assert spans[0].entity == "PRIVATE_KEY"
    assert text[spans[0].start : spans[0].end] == "\n".join([BEGIN, *BODY, END])
    assert spans[1].entity == "EMAIL"


def test_detect_pem_without_end_runs_to_end_of_text() -> None:
    text = "\n".join(["x", BEGIN, *BODY, "more text alice@example.com"])
    spans = detectors.detect(text)
    assert len(spans) == 1
    assert (spans[0].entity, spans[0].end) == ("PRIVATE_KEY", len(text))


# ---- detect_lines ----------------------------------------------------------------------


def _covered_whole(line: str, spans: list[Span]) -> bool:
    return spans == ([Span(0, len(line), "PRIVATE_KEY")] if line else [])


def test_detect_lines_one_list_per_line() -> None:
    lines = ["alice@example.com", "", "nothing", "+44 20 7946 0958"]
    result = list(detectors.detect_lines(lines))
    assert len(result) == len(lines)
    assert [[s.entity for s in spans] for spans in result] == [["EMAIL"], [], [], ["PHONE"]]


def test_detect_lines_carries_pem_block() -> None:
    lines = ["before alice@example.com", "key = '''" + BEGIN, *BODY, "", END + "'''", "after bob@example.org"]
    result = list(detectors.detect_lines(lines))
    assert [s.entity for s in result[0]] == ["EMAIL"]
    for line, spans in zip(lines[1:-1], result[1:-1], strict=True):
        assert _covered_whole(line, spans), line
    assert [s.entity for s in result[-1]] == ["EMAIL"]


def test_detect_lines_pem_without_end_fails_closed_for_200_lines() -> None:
    lines = [BEGIN] + [f"line {i} looks harmless" for i in range(250)]
    result = list(detectors.detect_lines(lines))
    assert _covered_whole(lines[0], result[0])
    covered = [
        i for i, (line, spans) in enumerate(zip(lines, result, strict=True)) if _covered_whole(line, spans)
    ]
    assert covered == list(range(0, detectors.PEM_MAX_LINES + 1))
    assert result[-1] == []


def test_detect_lines_pem_block_reopens_after_end() -> None:
    lines = [BEGIN, BODY[0], END, "plain", "-----BEGIN OPENSSH PRIVATE KEY-----", BODY[1], "plain?"]
    result = list(detectors.detect_lines(lines))
    assert [_covered_whole(line, spans) for line, spans in zip(lines, result, strict=True)] == [
        True,
        True,
        True,
        False,
        True,
        True,
        True,
    ]


def test_detect_lines_mention_of_marker_does_not_open_block() -> None:
    lines = [f'    if line.startswith("{BEGIN}"):', "        return parse(line)", "alice@example.com"]
    result = list(detectors.detect_lines(lines))
    assert [s.entity for s in result[0]] == ["PRIVATE_KEY"]
    assert result[0][0].end < len(lines[0])  # the marker only
    assert result[1] == []
    assert [s.entity for s in result[2]] == ["EMAIL"]


def test_detect_lines_single_line_key_with_escaped_newlines() -> None:
    line = '  "private_key": "' + BEGIN + "\\n" + "\\n".join(BODY) + "\\n" + END + '\\n",'
    (spans,) = list(detectors.detect_lines([line]))
    assert [s.entity for s in spans] == ["PRIVATE_KEY"]
    assert line[spans[0].start : spans[0].end].startswith(BEGIN)
    assert line[spans[0].start : spans[0].end].endswith(END)


def test_detect_lines_is_lazy() -> None:
    def source() -> Iterator[str]:
        yield "alice@example.com"
        raise RuntimeError("read too far")

    lines = detectors.detect_lines(source())
    assert [s.entity for s in next(lines)] == ["EMAIL"]
    with pytest.raises(RuntimeError):
        next(lines)


# ---- properties -------------------------------------------------------------------------

_FRAGMENTS = [
    "alice@example.com",
    "+44 20 7946 0958",
    "(415) 555-0123",
    card("4", 16),
    grouped(card("5", 16), sep="-"),
    "GB82 WEST 1234 5698 7654 32",
    "078-05-1120",
    "https://u:p4ss@example.com/",
    "AKIAIOSFODNN7EXAMPLE",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
    BEGIN,
    END,
    "password: ",
    "token=",
    "--password ",
    "mysql -p",
    "Bearer ",
    "@",
    "://",
    "0",
    "00",
    "+",
    "-",
    "\n",
    " ",
]
_text = st.lists(
    st.one_of(
        st.sampled_from(_FRAGMENTS),
        st.text(alphabet=string.printable + "äöüéßİıﬁ€\u00a0\u2028", max_size=12),
    ),
    max_size=30,
).map("".join)


def _check(text: str, spans: list[Span]) -> None:
    for span in spans:
        assert 0 <= span.start < span.end <= len(text)
        assert span.entity in ENTITIES
    for a, b in itertools.pairwise(spans):
        assert a.end < b.start  # sorted, disjoint, touching ones merged


@settings(max_examples=300, deadline=None)
@given(_text)
def test_detect_never_raises_and_spans_are_sane(text: str) -> None:
    spans = detectors.detect(text)
    _check(text, spans)
    redacted = detectors.redact(text, spans)
    for span in spans:
        assert span.placeholder() in redacted


@settings(max_examples=200, deadline=None)
@given(_text)
def test_detect_lines_never_raises_and_spans_are_sane(text: str) -> None:
    lines = text.split("\n")
    result = list(detectors.detect_lines(lines))
    assert len(result) == len(lines)
    for line, spans in zip(lines, result, strict=True):
        _check(line, spans)
