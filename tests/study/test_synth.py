"""tests/study/synth.py: synthetic bundles written by optin's own writer open with the real reader
and the study identity, carry the variety a dataset build must handle, give each volunteer their
own pseudonym, and are the same for the same seed (but for age's random encryption).

The 200-bundle timing is printed (``pytest -s``), not asserted: timing belongs in benchmarks.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from agent.dataset.samples import samples
from agent.export.bundle_checks import Bundle
from agent.export.inspect import load_identity_file, open_bundle
from tests.study.synth import CYCLE, STUDY_ID, SynthBundle, make_bundles, make_study_identity

MEMBER_EXT = (".json", ".webp")


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, list[Any]]:
    """The study identity file, its recipient and the identities read from the file."""
    identity_file, recipient = make_study_identity(tmp_path_factory.mktemp("study"))
    return identity_file, recipient, load_identity_file(identity_file)


@pytest.fixture(scope="module")
def twelve(
    study: tuple[Path, str, list[Any]], tmp_path_factory: pytest.TempPathFactory
) -> list[tuple[SynthBundle, Bundle]]:
    """3 volunteers x 4 sessions (every variant appears within 12 bundles), each opened."""
    _file, recipient, identities = study
    made = make_bundles(tmp_path_factory.mktemp("twelve"), recipient, volunteers=3, sessions=4, seed=7)
    return [(b, open_bundle(b.path, identities)) for b in made]


def step_members(opened: Bundle) -> list[dict[str, Any]]:
    return [
        json.loads(bytes(opened.members[f"{n:06d}.json"])) for n in range(opened.manifest["steps"]["count"])
    ]


def jsonl(opened: Bundle, name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in bytes(opened.members[name]).splitlines()]


def sample_docs(opened: Bundle) -> list[dict[str, Any]]:
    """The dataset's own samples (agent/dataset/samples.py) of a bundle."""
    frames = jsonl(opened, "frames.jsonl")
    images = {n: bytes(opened.members[f["member"]]) for n, f in enumerate(frames)}
    found = samples(
        opened.manifest,
        step_members(opened),
        tasks=opened.manifest["tasks"],
        frames=frames,
        events=jsonl(opened, "events.jsonl"),
        images=images,
    )
    return [s.doc for s in found]


def test_every_bundle_opens_with_the_study_identity(twelve: list[tuple[SynthBundle, Bundle]]) -> None:
    assert len(twelve) == 12
    for made, opened in twelve:
        m = opened.manifest
        assert made.path.name == f"{made.session}.optin.tar.age" and made.size == made.path.stat().st_size
        assert opened.session == m["session"] == made.session
        assert m["schema"] == "optin-bundle/3" and m["consent"]["study_id"] == STUDY_ID
        assert opened.id_verified and m["volunteer"] == {
            "id": made.volunteer,
            "signing_key": made.signing_key,
        }
        assert m["steps"]["count"] == made.steps == 6
        assert m["steps"]["by_action"] == dict.fromkeys(sorted(CYCLE[:6]), 1)
        assert len(made.sha256) == 64


def test_session_ids_have_optins_form_and_differ(twelve: list[tuple[SynthBundle, Bundle]]) -> None:
    ids = [made.session for made, _ in twelve]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}", s) for s in ids)


def test_typed_addresses_and_titles_leave_redacted(twelve: list[tuple[SynthBundle, Bundle]]) -> None:
    """The real policy ran: the typed address is one [EMAIL] record, titles and free instructions
    say [EMAIL], and no address is in any member."""
    for _made, opened in twelve:
        (typed,) = [s for s in step_members(opened) if s["action"] == "type"]
        assert typed["text"] == "to:[EMAIL]"
        assert opened.manifest["redaction"]["counts"]["typed"] == {"EMAIL": 1}
        assert opened.manifest["redaction"]["counts"]["titles"] == {"EMAIL": 1}
        assert not any(b"@example." in bytes(blob) for _name, blob in opened.files())
        assert any(
            e.get("title") == "Inbox — [EMAIL] — Mozilla Thunderbird" for e in jsonl(opened, "events.jsonl")
        )


def test_the_variety_a_build_must_handle(twelve: list[tuple[SynthBundle, Bundle]]) -> None:
    frameless = with_frames = with_element = unused_frames = pauses = 0
    outcomes: Counter[tuple[str, str]] = Counter()
    apis: set[str | None] = set()
    for made, opened in twelve:
        m = opened.manifest
        found = step_members(opened)
        assert made.variant is not None
        assert (found[0]["frame"] is None) == (not made.variant.first_step_frame)
        frameless += sum(s["frame"] is None for s in found)
        with_frames += sum(s["frame"] is not None for s in found)
        with_element += sum(s["element"] is not None for s in found)
        unused_frames += sum(name.startswith("frames/") for name in opened.members)
        keys = {s["action"]: s["keys"] for s in found}
        assert keys["hotkey"] == ["ctrl", "c"] and keys["key"] == ["enter"]
        drag = next(s for s in found if s["action"] == "drag")
        assert (drag["to_x"], drag["to_y"]) != (drag["x"], drag["y"])
        scroll = next(s for s in found if s["action"] == "scroll")
        assert scroll["dy"] == -3
        for task in m["tasks"]:
            outcomes[task["source"], task["outcome"]] += 1
            assert task["steps"]["range"] == [0, 4] and found[5]["task"] is None
            if task["source"] == "volunteer":
                assert task["instruction"] == "mail [EMAIL] the booking number"
        pauses += m["loss"]["pauses"]
        assert m["loss"]["pauses"] == (1 if made.variant.pause else 0)
        apis.add(m["elements"]["api"])
        docs = sample_docs(opened)
        assert [d["after_gap"] for d in docs] == [False, False, False, made.variant.pause, False, False]
        assert [d["has_image"] for d in docs] == [s["frame"] is not None for s in found]
    assert frameless == 3 and with_frames == 12 * 6 - 3 and with_element > 0 and unused_frames > 0
    assert outcomes == {("study", "done"): 4, ("volunteer", "failed"): 4}
    assert pauses == 6 and apis == {"atspi", None}


def test_pseudonyms_are_one_per_volunteer(twelve: list[tuple[SynthBundle, Bundle]]) -> None:
    by_volunteer: dict[int, set[str]] = {}
    for made, opened in twelve:
        by_volunteer.setdefault(made.volunteer_index, set()).add(opened.manifest["volunteer"]["id"])
    assert sorted(by_volunteer) == [0, 1, 2]
    assert all(len(ids) == 1 for ids in by_volunteer.values())
    assert len(set().union(*by_volunteer.values())) == 3


def test_the_same_seed_makes_the_same_sessions(study: tuple[Path, str, list[Any]], tmp_path: Path) -> None:
    """Same seed: the same sessions, steps and tar members, byte for byte; the .age files differ
    (age encryption is randomised), so their sha256 do. Another seed: other sessions."""
    _file, recipient, identities = study
    first = make_bundles(tmp_path / "a", recipient, volunteers=2, sessions=3, seed=11)
    again = make_bundles(tmp_path / "b", recipient, volunteers=2, sessions=3, seed=11)
    other = make_bundles(tmp_path / "c", recipient, volunteers=2, sessions=3, seed=12)
    assert [(b.session, b.volunteer, b.steps) for b in first] == [
        (b.session, b.volunteer, b.steps) for b in again
    ]
    for a, b in zip(first, again, strict=True):
        one, two = open_bundle(a.path, identities), open_bundle(b.path, identities)
        assert list(one.files()) == list(two.files())
        assert a.sha256 != b.sha256
    assert not {b.session for b in first} & {b.session for b in other}
    assert {b.volunteer for b in first}.isdisjoint({b.volunteer for b in other})


@pytest.mark.parametrize(
    ("options", "count"),
    [
        ({"steps": 1}, 1),
        ({"steps": 10}, 10),
        ({"frames": False, "tasks": False, "elements": False}, 6),
    ],
    ids=["one-step", "ten-steps", "bare"],
)
def test_options(
    study: tuple[Path, str, list[Any]], tmp_path: Path, options: dict[str, Any], count: int
) -> None:
    _file, recipient, identities = study
    for made in make_bundles(tmp_path, recipient, volunteers=1, sessions=4, seed=3, **options):
        opened = open_bundle(made.path, identities)
        found = step_members(opened)
        assert len(found) == made.steps == count
        assert [s["action"] for s in found] == [CYCLE[n % len(CYCLE)] for n in range(count)]
        if options.get("frames") is False:
            assert not any(name.endswith(".webp") for name in opened.members)
            assert opened.manifest["tasks"] == [] and opened.manifest["elements"]["api"] is None


def test_two_hundred_bundles(study: tuple[Path, str, list[Any]], tmp_path: Path) -> None:
    """200 bundles (20 volunteers x 10 sessions): the time is printed; each one opens."""
    _file, recipient, identities = study
    t0 = time.perf_counter()
    made = make_bundles(tmp_path, recipient, volunteers=20, sessions=10, seed=1)
    t1 = time.perf_counter()
    for b in made:
        open_bundle(b.path, identities)
    t2 = time.perf_counter()
    size = sum(b.size for b in made)
    print(
        f"\nsynth: 200 bundles written in {t1 - t0:.2f} s ({size / 1024:.0f} KiB), "
        f"opened and checked in {t2 - t1:.2f} s"
    )
    assert len({b.session for b in made}) == 200 and len({b.volunteer for b in made}) == 20
