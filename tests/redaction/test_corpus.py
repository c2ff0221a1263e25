"""The corpus itself: sizes, labels that hold (checksums, shapes), clean negatives, reproducibility."""

from __future__ import annotations

import collections
import hashlib
import json
import re

import pytest

from agent.redact.spans import FAMILIES
from tests.redaction import make_corpus, scoring

MINIMUM_POSITIVES = {
    "email": 300,
    "phone": 300,
    "card": 300,
    "iban": 200,
    "ssn": 100,
    "url_credentials": 100,
    "token": 300,
    "private_key": 60,
    "prompt_secret": 150,
}
MINIMUM_NEGATIVE_LINES = {"code": 8000, "prose": 4000, "shell": 1000, "chat": 500, "form": 500}


@pytest.fixture(scope="module")
def positives() -> list[scoring.Positive]:
    return scoring.load_positives()


@pytest.fixture(scope="module")
def negatives() -> dict[str, list[str]]:
    return scoring.load_negatives()


def test_every_family_has_its_minimum_of_positives_with_well_formed_labels(
    positives: list[scoring.Positive],
) -> None:
    counts = collections.Counter(p.family for p in positives)
    # this computer's names are not text the detectors know: tests/unit/test_local_names.py has them
    assert set(counts) == set(FAMILIES) - {"local_names"}
    assert all(counts[f] >= n for f, n in MINIMUM_POSITIVES.items()), counts
    assert len({p.id for p in positives}) == len(positives)
    for p in positives:
        assert p.category in scoring.CATEGORIES, p.id
        assert p.secret and p.secret in p.text, p.id
        assert any(c.isalnum() for c in p.secret), p.id
        assert "\n" not in p.text or p.family == "private_key", p.id


def test_every_family_appears_in_at_least_four_categories(positives: list[scoring.Positive]) -> None:
    categories = collections.defaultdict(set)
    for p in positives:
        categories[p.family].add(p.category)
    assert all(len(c) >= 4 for c in categories.values()), dict(categories)


def test_cards_are_luhn_valid_in_every_issuer_range(positives: list[scoring.Positive]) -> None:
    cards = [p for p in positives if p.family == "card"]
    for p in cards:
        digits = re.sub(r"[ -]", "", p.secret)
        assert digits.isdigit() and 13 <= len(digits) <= 19, p.id
        assert make_corpus.luhn_valid(digits), p.id
    issuers = {p.kind.split("-")[0] for p in cards}
    assert issuers >= {"visa", "mastercard", "amex", "discover", "jcb", "diners", "unionpay"}
    lengths = {p.kind for p in cards}
    assert {"visa-13", "visa-16", "visa-19", "amex-15", "diners-14"} <= lengths
    assert any(p.secret.startswith(("644", "645", "646", "647", "648", "649")) for p in cards)
    assert any(622126 <= int(p.secret[:6]) <= 622925 for p in cards if p.secret[:6].isdigit())
    assert any(2221 <= int(p.secret[:4]) <= 2720 for p in cards)


def test_ibans_pass_mod_97_with_their_registry_length(positives: list[scoring.Positive]) -> None:
    ibans = [p for p in positives if p.family == "iban"]
    for p in ibans:
        compact = p.secret.replace(" ", "")
        assert make_corpus.iban_remainder(compact) == 1, p.id
        assert len(compact) == make_corpus.IBAN_LENGTH[compact[:2]], p.id
    assert len({p.secret[:2] for p in ibans}) >= 20
    assert any(" " in p.secret for p in ibans) and any(" " not in p.secret for p in ibans)


def test_phones_cover_at_least_twelve_countries(positives: list[scoring.Positive]) -> None:
    phones = [p for p in positives if p.family == "phone"]
    assert len({p.kind for p in phones}) >= 12
    assert sum(p.secret.startswith("+") for p in phones) >= 60
    assert sum(not p.secret.startswith("+") for p in phones) >= 60


def test_private_keys_are_whole_pem_blocks_of_every_type(positives: list[scoring.Positive]) -> None:
    keys = [p for p in positives if p.family == "private_key"]
    headers = set()
    for p in keys:
        m = re.match(r"-----BEGIN ([A-Z ]*PRIVATE KEY)-----", p.secret)
        assert m, p.id
        assert p.secret.endswith(f"-----END {m.group(1)}-----"), p.id
        headers.add(m.group(1))
    assert headers == {
        "RSA PRIVATE KEY",
        "EC PRIVATE KEY",
        "OPENSSH PRIVATE KEY",
        "ENCRYPTED PRIVATE KEY",
        "PRIVATE KEY",
    }
    assert sum("\n" in p.secret for p in keys) >= 50


def test_tokens_have_every_documented_shape(positives: list[scoring.Positive]) -> None:
    kinds = collections.Counter(p.kind for p in positives if p.family == "token")
    assert set(kinds) == set(make_corpus.TOKEN_PLAN)
    prefixes = (
        "AKIA",
        "AIza",
        "ghp_",
        "gho_",
        "ghs_",
        "github_pat_",
        "glpat-",
        "xoxb-",
        "xoxp-",
        "sk_live_",
        "sk_test_",
        "rk_live_",
        "sk-proj-",
        "sk-",
        "eyJ",
    )
    secrets = [p.secret for p in positives if p.family == "token"]
    assert all(any(s.startswith(prefix) for s in secrets) for prefix in prefixes)


def test_negative_files_are_big_enough(negatives: dict[str, list[str]]) -> None:
    assert {c: len(v) >= MINIMUM_NEGATIVE_LINES[c] for c, v in negatives.items()} == dict.fromkeys(
        MINIMUM_NEGATIVE_LINES, True
    )


def test_no_negative_line_trips_the_screen_or_is_blank(negatives: dict[str, list[str]]) -> None:
    for category, lines in negatives.items():
        for number, line in enumerate(lines, 1):
            assert make_corpus.usable(line), f"{category}.txt:{number}"
            assert make_corpus.screen(line) is None, f"{category}.txt:{number}: {make_corpus.screen(line)}"


def test_forms_hold_bad_checksum_controls(negatives: dict[str, list[str]]) -> None:
    bad_cards = bad_ibans = 0
    for line in negatives["form"]:
        value = line.split(": ", 1)[-1]
        compact = value.replace(" ", "").replace("-", "")
        if compact.isdigit() and len(compact) in (15, 16):
            assert not make_corpus.luhn_valid(compact), line
            bad_cards += 1
        elif (
            re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", compact) and compact[:2] in make_corpus.IBAN_LENGTH
        ):
            assert make_corpus.iban_remainder(compact) != 1, line
            bad_ibans += 1
    assert bad_cards >= 25 and bad_ibans >= 25, (bad_cards, bad_ibans)


def test_the_committed_corpus_is_small_and_matches_its_manifest() -> None:
    files = [*sorted(scoring.NEGATIVES_DIR.glob("*.txt")), scoring.POSITIVES_PATH]
    assert sum(f.stat().st_size for f in scoring.CORPUS.rglob("*") if f.is_file()) < 2_000_000
    manifest = json.loads((scoring.CORPUS / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["sha256"] == {
        str(f.relative_to(scoring.CORPUS)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files
    }


def test_the_generated_parts_are_what_the_generator_makes_from_the_seed() -> None:
    """Shell, chat and form negatives and every positive depend on the seed alone."""
    parts = make_corpus.generated_parts()
    for category in ("shell", "chat", "form"):
        committed = (scoring.NEGATIVES_DIR / f"{category}.txt").read_text(encoding="utf-8")
        assert committed == make_corpus.negatives_text(parts[category].lines), category  # type: ignore[attr-defined]
    committed = scoring.POSITIVES_PATH.read_text(encoding="utf-8")
    assert committed == make_corpus.positives_jsonl(parts["positives"])  # type: ignore[arg-type]
