"""The collector side of ``optin-bundle/2`` (agent/export/inspect.py, recount.py): a valid bundle
opens, is summarised and unpacks byte for byte; every way of breaking one that docs/export-format.md
("Limits", "What a reader recomputes", "Reading") names is refused before anything is written; an
``optin-bundle/1`` bundle still opens, its volunteer id marked unverified.

Bundles are built here from the spec's words, not by agent/export/bundle.py: tar members under
``<session-id>/``, canonical JSON manifest, Ed25519 ``manifest.sig``, age-encrypted with pyrage.
The larger hostile cases (bombs under resource limits, forgeries) are in tests/hostile/test_bundles.py.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import io
import json
import os
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import pyrage
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyrage import x25519

from agent.errors import ExportError, UsageError
from agent.export import inspect
from agent.store import signing

SESSION = "20261127T213000Z-1a2b3c4d"
VOLUNTEER = bytes(range(32))  # the volunteer's X25519 identity (signing.py's test vector)
STUDY = "web-tasks-2026"
STUDY_KEY = x25519.Identity.generate()
SECRET_TEXT = "alice.canary@example.com"  # noqa: S105 - stands for content no message may show


def canonical(obj: Any) -> bytes:
    """The spec's canonical JSON."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sample_events() -> list[dict[str, Any]]:
    """events.jsonl of the sample: a click, a redacted e-mail address, enter; a clean start and stop."""
    stop_loss = {"events": 0, "frame_failures": 0, "frames_skipped": 0, "pastes_lost": 0}
    return [
        {"v": 1, "k": "marker", "t_ns": 0, "marker": "session_start", "detail": {}},
        {"v": 1, "k": "button_press", "t_ns": 1_000_000_000, "x": 3, "y": 4, "button": "left"},
        {"v": 1, "k": "button_release", "t_ns": 1_100_000_000, "x": 3, "y": 4, "button": "left"},
        {"v": 1, "k": "redacted", "t_ns": 2_000_000_000, "entity": "EMAIL"},
        {"v": 1, "k": "key_press", "t_ns": 3_000_000_000, "char": None, "name": "enter"},
        {
            "v": 1,
            "k": "marker",
            "t_ns": 12_500_000_000,
            "marker": "session_stop",
            "detail": {"loss": stop_loss},
        },
    ]


def lines(records: list[dict[str, Any]]) -> bytes:
    return b"".join(canonical(r) + b"\n" for r in records)


def sample_members() -> dict[str, bytes]:
    """Three steps (two with a frame), the event stream, the frame list and one frame of no step."""
    steps = [
        {"action": "click", "x": 3, "y": 4, "button": "left", "frame": 0, "events": [1, 2]},
        {"action": "type", "text": f"to:{SECRET_TEXT}", "frame": 1, "events": [3]},
        {"action": "key", "keys": ["enter"], "frame": None, "events": [4]},
    ]
    frames = [
        {"v": 1, "k": "frame", "t_ns": t, "member": m}
        for t, m in [
            (500_000_000, "000000.webp"),
            (1_500_000_000, "000001.webp"),
            (2_500_000_000, "frames/000002.webp"),
        ]
    ]
    return {
        "000000.json": canonical(steps[0]),
        "000000.webp": b"RIFF-frame-0",
        "000001.json": canonical(steps[1]),
        "000001.webp": b"RIFF-frame-1",
        "000002.json": canonical(steps[2]),
        "events.jsonl": lines(sample_events()),
        "frames.jsonl": lines(frames),
        "frames/000002.webp": b"RIFF-frame-2",
    }


#: What the sample's manifest states, as the members give it.
SAMPLE_COUNTS = {
    "button_press": 1,
    "button_release": 1,
    "frame": 3,
    "key_press": 1,
    "marker": 2,
    "redacted": 1,
}
SAMPLE_LOSS = {
    "dropped_events": 0,
    "frame_failures": 0,
    "frames_skipped": 0,
    "pastes_lost": 0,
    "frames_left_out_ocr_failed": 0,
    "pauses": 0,
    "paused_s": 0.0,
    "cuts": 0,
    "cut_s": 0.0,
    "clean_stop": True,
    "store_problems": [],
}


def manifest_for(
    members: dict[str, bytes], /, *, signer: bytes = VOLUNTEER, study: str = STUDY, **fields: Any
) -> dict[str, Any]:
    """A manifest that vouches for ``members`` (signed by ``signer``); ``fields`` replace its entries."""
    manifest = {
        "schema": "optin-bundle/2",
        "agent_version": "0.1.0",
        "session": SESSION,
        "volunteer": {
            "id": signing.volunteer_id(signer, study),
            "signing_key": base64.b64encode(signing.public_signing_key(signer, study)).decode(),
        },
        "consent": {"study_id": study, "study_name": "Web tasks", "consent_version": "1"},
        "redaction": {
            "frames_left_out_ocr_failed": 0,
            "counts": {"typed": {"EMAIL": 1}, "paste": {}, "titles": {}, "screen": {"EMAIL": 2}},
        },
        "steps": {"version": 1, "count": 3, "by_action": {"click": 1, "type": 1, "key": 1}},
        "counts": SAMPLE_COUNTS,
        "loss": SAMPLE_LOSS,
        "duration_s": 12.5,
        "members": {
            name: {"sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob)}
            for name, blob in members.items()
        },
    }
    manifest.update(fields)
    return manifest


def v1_manifest_for(members: dict[str, bytes], /, **fields: Any) -> dict[str, Any]:
    """An ``optin-bundle/1`` manifest: one key for every study, the id an HMAC under its seed."""
    seed = signing.v1_signing_seed(VOLUNTEER)
    volunteer = {
        "id": signing.v1_volunteer_id(VOLUNTEER, STUDY),
        "signing_key": base64.b64encode(signing.public_key_of_seed(seed)).decode(),
    }
    return manifest_for(members, schema="optin-bundle/1", volunteer=volunteer, **fields)


@dataclass(frozen=True)
class Entry:
    """One tar member as written: ``size`` overrides the header's size (the data may be shorter).

    ``pax``: its pax extended header's records; ``raw``: bytes written before its header as they are.
    """

    name: str
    data: bytes = b""
    type: bytes = tarfile.REGTYPE
    linkname: str = ""
    size: int | None = None
    pax: dict[str, str] | None = None
    raw: bytes = b""
    format: Literal[0, 1, 2] = tarfile.PAX_FORMAT  # tarfile.USTAR_FORMAT, GNU_FORMAT, PAX_FORMAT


def entries_for(
    members: dict[str, bytes],
    manifest: dict[str, Any] | None = None,
    *,
    signer: bytes = VOLUNTEER,
    seed: bytes | None = None,
    session: str = SESSION,
    manifest_bytes: bytes | None = None,
) -> list[Entry]:
    """The tar members of a bundle: manifest.json, manifest.sig, then ``members``.

    :param signer: the identity whose key for STUDY signs; ``seed``: sign with this Ed25519 seed instead.
    """
    manifest_bytes = manifest_bytes or canonical(manifest or manifest_for(members))
    seed = seed or signing.signing_seed(signer, STUDY)
    sig = signing.sign_with_seed(seed, manifest_bytes)
    head = [Entry(f"{session}/manifest.json", manifest_bytes), Entry(f"{session}/manifest.sig", sig)]
    return head + [Entry(f"{session}/{name}", blob) for name, blob in members.items()]


def tar_of(entries: list[Entry], *, pax: bool = False) -> bytes:
    """A pax tar of ``entries``, header by header, exactly as given (duplicates, links, short data).

    :param pax: give every member a pax extended header too (the writer's for long or non-ASCII names).
    """
    out = io.BytesIO()
    for e in entries:
        info = tarfile.TarInfo(e.name)
        info.type, info.linkname = e.type, e.linkname
        info.size = len(e.data) if e.size is None else e.size
        info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = 0o644, 0, 0, 0, "", ""
        info.pax_headers = e.pax if e.pax is not None else {"comment": "optin", "mtime": "0"} if pax else {}
        out.write(e.raw)
        out.write(info.tobuf(e.format, "utf-8", "surrogateescape"))
        out.write(e.data + b"\0" * (-len(e.data) % tarfile.BLOCKSIZE))
    out.write(b"\0" * 2 * tarfile.BLOCKSIZE)
    return out.getvalue()


def valid_tar() -> bytes:
    return tar_of(entries_for(sample_members()))


def seal(tar_bytes: bytes, recipient: Any = None) -> bytes:
    sealed: bytes = pyrage.encrypt(tar_bytes, [recipient or STUDY_KEY.to_public()])
    return sealed


@pytest.fixture
def write(tmp_path: Path) -> Callable[[bytes], Path]:
    """Write an encrypted bundle into tmp_path; return its path."""

    def _write(blob: bytes) -> Path:
        path = tmp_path / f"{SESSION}.optin.tar.age"
        path.write_bytes(blob)
        return path

    return _write


@pytest.fixture
def identity_file(tmp_path: Path) -> Path:
    path = tmp_path / "study-identity.txt"
    path.write_text(f"# created: 2026-11-27\n# public key: {STUDY_KEY.to_public()}\n{STUDY_KEY}\n")
    return path


def open_entries(entries: list[Entry], write: Callable[[bytes], Path]) -> inspect.Bundle:
    return inspect.open_bundle(write(seal(tar_of(entries))), [STUDY_KEY])


def refused(entries: list[Entry], write: Callable[[bytes], Path], match: str) -> str:
    """The refusal of ``entries``' bundle, which must match ``match`` and show no member content."""
    with pytest.raises(ExportError, match=match) as info:
        open_entries(entries, write)
    message = str(info.value)
    assert SECRET_TEXT not in message and "RIFF" not in message
    return message


# --- the valid bundle ---------------------------------------------------------------------------------


def test_a_valid_bundle_opens_summarises_and_unpacks(
    write: Callable[[bytes], Path], identity_file: Path, tmp_path: Path
) -> None:
    members = sample_members()
    path = write(seal(valid_tar()))
    bundle = inspect.open_bundle(path, inspect.load_identity_file(identity_file), identity_file=identity_file)
    assert bundle.session == SESSION and bundle.path == path
    assert list(bundle.members) == list(members) and bundle.members == members
    assert bundle.manifest == json.loads(bundle.manifest_bytes) == manifest_for(members)
    assert signing.verify(
        signing.public_signing_key(VOLUNTEER, STUDY), bundle.manifest_bytes, bundle.signature
    )
    assert bundle.id_verified

    summary = inspect.summarise(bundle)
    assert json.loads(json.dumps(summary)) == summary
    assert summary["session"] == SESSION and summary["schema"] == "optin-bundle/2"
    assert summary["agent_version"] == "0.1.0" and summary["consent_version"] == "1"
    assert summary["volunteer"] == {**manifest_for(members)["volunteer"], "id_verified": True}
    assert summary["study"] == {"id": "web-tasks-2026", "name": "Web tasks"}
    assert summary["steps"] == {"count": 3, "by_action": {"click": 1, "key": 1, "type": 1}}
    assert (summary["frames"], summary["events"], summary["duration_s"]) == (3, 6, 12.5)
    assert summary["redactions"]["typed"] == {"EMAIL": 1} and summary["loss"]["clean_stop"] is True
    total = sum(map(len, members.values())) + len(bundle.manifest_bytes) + 64
    assert summary["members"] == {"count": len(members) + 2, "bytes": total}
    assert summary["signature"] == "valid"

    text = inspect.render_summary(summary)
    assert "steps:" in text and "3: click 1, key 1, type 1" in text
    assert "redactions:" in text and "screen EMAIL 2; typed EMAIL 1" in text
    assert SECRET_TEXT not in text

    root = inspect.unpack(bundle, tmp_path / "out")
    assert root == tmp_path / "out" / SESSION
    on_disk = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert on_disk == {**members, "manifest.json": bundle.manifest_bytes, "manifest.sig": bundle.signature}
    assert (root / "frames").is_dir()


def test_a_bundle_read_from_a_stream_is_checked_exactly_like_a_file(
    write: Callable[[bytes], Path], identity_file: Path
) -> None:
    """What an object store hands the dataset build (a stream and its length) goes through the same
    checks as `optin inspect`'s file, and gives the same result; a stream read past ``size`` is
    never read (a longer stream than its stated size is cut where the size says)."""
    sealed = seal(valid_tar())
    identities = inspect.load_identity_file(identity_file)
    from_file = inspect.open_bundle(write(sealed), identities)
    label = Path("study-bucket") / "incoming" / f"{SESSION}.optin.tar.age"
    streamed = inspect.open_bundle_stream(
        io.BytesIO(sealed + b"trailing junk"), len(sealed), label, identities
    )
    assert streamed.members == from_file.members and streamed.manifest == from_file.manifest
    assert streamed.path == label
    with pytest.raises(ExportError, match="study-bucket/incoming"):
        inspect.open_bundle_stream(io.BytesIO(sealed[:-40]), len(sealed) - 40, label, identities)


def test_render_summary_aligns_its_values() -> None:
    bundle = inspect.check_tar(valid_tar(), Path("b.optin.tar.age"))
    lines = inspect.render_summary(inspect.summarise(bundle)).splitlines()
    starts = {len(line) - len(line.split(":", 1)[1].lstrip()) for line in lines}
    assert len(starts) == 1, lines


def test_unpack_into_an_existing_empty_directory(tmp_path: Path) -> None:
    bundle = inspect.check_tar(valid_tar(), Path("b.optin.tar.age"))
    (tmp_path / SESSION).mkdir()
    root = inspect.unpack(bundle, tmp_path)
    assert (root / "manifest.json").read_bytes() == bundle.manifest_bytes


# --- keys -----------------------------------------------------------------------------------------------


def test_a_wrong_identity_is_named_as_such(write: Callable[[bytes], Path], tmp_path: Path) -> None:
    other = tmp_path / "other-study.txt"
    other.write_text(f"{x25519.Identity.generate()}\n")
    path = write(seal(valid_tar()))
    with pytest.raises(ExportError, match="not one of the bundle's recipients") as info:
        inspect.open_bundle(path, inspect.load_identity_file(other), identity_file=other)
    assert str(path) in str(info.value) and str(other) in str(info.value)
    assert info.value.exit_code == 1


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("# only a comment\n\n", "holds no age identity"),
        (
            f"# ok\n{STUDY_KEY}\nAGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQ\n",
            "line 3 is not a valid age identity",
        ),
        (f"{STUDY_KEY}\n{str(STUDY_KEY)[:-6]}\n", "line 2 is not a valid age identity"),
        (f"{STUDY_KEY}x\n", "line 1 is not a valid age identity"),
        (f"# public\n{STUDY_KEY.to_public()}\n", "line 2 is a recipient"),
        (f"\n\nkey = {STUDY_KEY}\n", "line 3 is not an age identity"),
        ("AGE-PLUGIN-YUBIKEY-1QQQQQ\n", "line 1: plugin identities"),
    ],
    ids=["no-key", "garbage-key", "cut-key", "bad-checksum", "recipient", "not-a-key", "plugin"],
)
def test_bad_identity_files_name_the_file_and_line_never_the_key(
    tmp_path: Path, text: str, match: str
) -> None:
    path = tmp_path / "study-identity.txt"
    path.write_text(text)
    with pytest.raises(UsageError, match=match) as info:
        inspect.load_identity_file(path)
    message = str(info.value)
    assert str(path) in message and "Fix:" in message and info.value.exit_code == 2
    assert "AGE-SECRET-KEY-1" not in message.replace("AGE-SECRET-KEY-1...", "")
    assert str(STUDY_KEY)[16:] not in message and str(STUDY_KEY)[16:].lower() not in message


def test_a_missing_identity_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.txt"
    with pytest.raises(UsageError, match="does not exist") as info:
        inspect.load_identity_file(path)
    assert str(path) in str(info.value)


def test_a_directory_is_not_an_identity_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read identity file"):
        inspect.load_identity_file(tmp_path)


def test_identity_files_with_several_keys_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "keys.txt"
    path.write_bytes(f"# two\r\n{x25519.Identity.generate()}\r\n\r\n{STUDY_KEY}\r\n".encode())
    assert len(inspect.load_identity_file(path)) == 2


def test_the_volunteers_own_key_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "identity"
    path.write_text("optin-sec2\nsalt...\n")
    with pytest.raises(UsageError, match="optin volunteer identity"):
        inspect.load_identity_file(path)


# --- the age file -----------------------------------------------------------------------------------


def test_not_an_age_file(write: Callable[[bytes], Path]) -> None:
    with pytest.raises(ExportError, match="is not an age file"):
        inspect.open_bundle(write(b"hello, this is text\n" * 40), [STUDY_KEY])
    with pytest.raises(ExportError, match="already decrypted"):
        inspect.open_bundle(write(valid_tar()), [STUDY_KEY])


def test_a_missing_bundle(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="does not exist"):
        inspect.open_bundle(tmp_path / "gone.optin.tar.age", [STUDY_KEY])


@pytest.mark.parametrize("cut", [-20, 120], ids=["payload", "header"])
def test_a_truncated_age_file_gets_the_opaque_answer(write: Callable[[bytes], Path], cut: int) -> None:
    sealed = seal(valid_tar())
    with pytest.raises(ExportError, match="wrong key or damaged file") as info:
        inspect.open_bundle(write(sealed[:cut]), [STUDY_KEY])
    assert "buffer" not in str(info.value) and "decryption error" not in str(info.value)


def test_decrypted_garbage_is_not_a_tar(write: Callable[[bytes], Path]) -> None:
    with pytest.raises(ExportError, match="not a complete tar archive"):
        inspect.open_bundle(write(seal(b"\x01garbage" * 200)), [STUDY_KEY])


def test_a_tar_cut_short_is_refused(write: Callable[[bytes], Path]) -> None:
    tar = valid_tar()
    refused_at = tar.index(b"RIFF-frame-2")
    with pytest.raises(ExportError, match=r"cut short|not a complete tar"):
        inspect.open_bundle(write(seal(tar[: refused_at + 4])), [STUDY_KEY])


# --- members ----------------------------------------------------------------------------------------


def _edit(name: str, entries: list[Entry], **changes: Any) -> list[Entry]:
    return [replace(e, **changes) if e.name == f"{SESSION}/{name}" else e for e in entries]


def test_a_flipped_byte_is_caught_by_the_hash(write: Callable[[bytes], Path]) -> None:
    data = bytearray(sample_members()["000001.json"])
    data[5] ^= 1
    entries = _edit("000001.json", entries_for(sample_members()), data=bytes(data))
    refused(entries, write, r"member '000001.json' does not match its SHA-256")


def test_an_unlisted_member(write: Callable[[bytes], Path]) -> None:
    entries = [*entries_for(sample_members()), Entry(f"{SESSION}/frames/000009.webp", b"abc")]
    refused(entries, write, r"member 'frames/000009.webp' is not listed")


def test_a_listed_member_missing(write: Callable[[bytes], Path]) -> None:
    entries = [e for e in entries_for(sample_members()) if not e.name.endswith("events.jsonl")]
    refused(entries, write, r"member 'events.jsonl', listed in the manifest, is missing")


@pytest.mark.parametrize("name", ["events.jsonl", "manifest.json", "manifest.sig"])
def test_a_member_twice(write: Callable[[bytes], Path], name: str) -> None:
    entries = entries_for(sample_members())
    twice = next(e for e in entries if e.name.endswith(name))
    refused([*entries, twice], write, f"member '{name}' appears twice")


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        (
            Entry(f"{SESSION}/frames.jsonl", type=tarfile.SYMTYPE, linkname="/etc/passwd"),
            "is a symbolic link",
        ),
        (
            Entry(f"{SESSION}/frames.jsonl", type=tarfile.LNKTYPE, linkname=f"{SESSION}/events.jsonl"),
            "hard link",
        ),
        (Entry(f"{SESSION}/frames", type=tarfile.DIRTYPE), "is a directory"),
        (Entry(f"{SESSION}/dev", type=tarfile.CHRTYPE), "is a character device"),
        (Entry(f"{SESSION}/fifo", type=tarfile.FIFOTYPE), "is a FIFO"),
        (Entry(f"{SESSION}/sparse", type=tarfile.GNUTYPE_SPARSE), "not a regular file"),
        (Entry(f"{SESSION}/../evil", b"x"), r"contains '\.\.'"),
        (Entry("../evil", b"x"), r"contains '\.\.'"),
        (Entry("/etc/x", b"x"), "has an absolute path"),
        (Entry(f"{SESSION}\\evil", b"x"), "contains a backslash"),
        (Entry(f"{SESSION}/frames\\000002.webp", b"x"), "contains a backslash"),
        (Entry("other-session/events.jsonl", b"x"), "is outside the bundle's directory"),
        (Entry(f"{SESSION}/./x", b"x"), "not a name a bundle holds"),
        (Entry(f"{SESSION}//x", b"x"), "not a name a bundle holds"),
        (Entry(f"{SESSION}/bell\x07", b"x"), "control character"),
        (Entry("loose.txt", b"x"), "not a file name under"),
    ],
    ids=[
        "symlink",
        "hardlink",
        "directory",
        "device",
        "fifo",
        "sparse",
        "dotdot-inside",
        "dotdot",
        "absolute",
        "backslash-top",
        "backslash",
        "outside",
        "dot",
        "empty-component",
        "control",
        "no-directory",
    ],
)
def test_unsafe_members_are_refused(write: Callable[[bytes], Path], entry: Entry, match: str) -> None:
    entries = [e for e in entries_for(sample_members()) if e.name != entry.name]
    refused([*entries, entry], write, match)


def test_a_session_directory_other_than_the_manifests(write: Callable[[bytes], Path]) -> None:
    entries = entries_for(sample_members(), session="20990101T000000Z-deadbeef")
    refused(entries, write, r"under '20990101T000000Z-deadbeef/' but the manifest's session is")


def test_the_manifest_must_come_first(write: Callable[[bytes], Path]) -> None:
    entries = entries_for(sample_members())
    refused([entries[2], *entries[:2], *entries[3:]], write, "first member is '000000.json'")
    refused([entries[0], entries[2], entries[1], *entries[3:]], write, "second member is '000000.json'")


def test_a_member_larger_than_its_manifest_size(write: Callable[[bytes], Path]) -> None:
    members = sample_members()
    entries = _edit("events.jsonl", entries_for(members), data=members["events.jsonl"] + b"\n")
    refused(entries, write, r"'events.jsonl' is \d+ bytes in the tar, but the manifest says \d+")


def test_a_large_declared_size_is_refused_before_its_data_is_read(write: Callable[[bytes], Path]) -> None:
    # The header claims 512 MiB and no data follows: reading it would fail as "cut short".
    entries = _edit("events.jsonl", entries_for(sample_members()), data=b"", size=512 << 20)
    cut = entries.index(next(e for e in entries if e.name.endswith("events.jsonl")))
    refused(entries[: cut + 1], write, r"'events.jsonl' is 536870912 bytes in the tar, but the manifest says")


def test_a_member_over_one_gib_is_refused_even_when_listed(write: Callable[[bytes], Path]) -> None:
    members = sample_members()
    manifest = manifest_for(members)
    manifest["members"]["events.jsonl"]["size"] = (1 << 30) + 1
    entries = _edit("events.jsonl", entries_for(members, manifest), data=b"", size=(1 << 30) + 1)
    refused(entries, write, r"'events.jsonl' is 1073741825 bytes, over the 1073741824-byte limit")


def test_the_signature_must_be_64_bytes(write: Callable[[bytes], Path]) -> None:
    entries = _edit("manifest.sig", entries_for(sample_members()), data=b"\0" * 65)
    refused(entries, write, "manifest.sig is 65 bytes, not 64")


# --- the manifest and its signature -----------------------------------------------------------------


def test_a_manifest_rehashed_but_not_resigned(write: Callable[[bytes], Path]) -> None:
    members = sample_members()
    original = entries_for(members)
    members["events.jsonl"] += canonical({"v": 1, "k": "marker", "t_ns": 9}) + b"\n"
    forged = canonical(manifest_for(members))
    entries = [*_edit("manifest.json", original[:2], data=forged), *entries_for(members)[2:]]
    refused(entries, write, "manifest.sig does not verify over manifest.json")


def test_a_signature_by_another_identity(write: Callable[[bytes], Path]) -> None:
    entries = entries_for(sample_members(), signer=bytes(32))
    refused(entries, write, "manifest.sig does not verify")


def test_a_manifest_changed_in_one_byte_after_signing(write: Callable[[bytes], Path]) -> None:
    entries = entries_for(sample_members())
    data = entries[0].data.replace(b'"duration_s":12.5', b'"duration_s":12.6')
    entries[0] = replace(entries[0], data=data)
    refused(entries, write, "manifest.sig does not verify")


def test_an_unknown_schema_is_named(write: Callable[[bytes], Path]) -> None:
    members = sample_members()
    entries = entries_for(members, manifest_for(members, schema="optin-bundle/9"))
    message = refused(entries, write, "schema 'optin-bundle/9', which this optin does not read")
    assert "optin-bundle/1" in message


@pytest.mark.parametrize(
    ("manifest_bytes", "match"),
    [
        (b"[1, 2]", "not a JSON object"),
        (b"\xff\xfe{}", "not a JSON object"),
        (b'{"schema": "optin-bundle/1", "schema": "optin-bundle/1"}', "no duplicate keys"),
    ],
    ids=["array", "not-utf8", "duplicate-key"],
)
def test_a_manifest_that_is_not_json(
    write: Callable[[bytes], Path], manifest_bytes: bytes, match: str
) -> None:
    refused(entries_for(sample_members(), manifest_bytes=manifest_bytes), write, match)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"volunteer": {"id": "x"}}, "volunteer.signing_key is not base64"),
        ({"volunteer": {"signing_key": "AAAA"}}, "volunteer.signing_key is not base64 of a 32-byte"),
        ({"members": []}, "no members table"),
        ({"members": {"events.jsonl": "ab" * 32}}, "entry for 'events.jsonl' has no lower-case hex sha256"),
        ({"members": {"events.jsonl": {"sha256": "AB" * 32, "size": 1}}}, "no lower-case hex"),
        (
            {"members": {"events.jsonl": {"sha256": "ab" * 32, "size": True}}},
            "entry for 'events.jsonl' has no size",
        ),
        ({"members": {"manifest.sig": {"sha256": "ab" * 32, "size": 64}}}, "lists 'manifest.sig'"),
    ],
    ids=["no-key", "short-key", "members-list", "bare-hash", "upper-hex", "bool-size", "lists-sig"],
)
def test_malformed_manifests(write: Callable[[bytes], Path], fields: dict[str, Any], match: str) -> None:
    members = sample_members()
    refused(entries_for(members, manifest_for(members, **fields)), write, match)


# --- steps ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "match"),
    [
        ({"version": 1, "count": 4, "by_action": {"click": 1, "type": 1, "key": 1}}, "steps say 4"),
        ({"version": 1, "count": 3, "by_action": {"click": 2, "type": 1}}, "bundle holds 3"),
        (None, "steps say null"),
    ],
    ids=["count", "by-action", "absent"],
)
def test_steps_that_disagree_with_the_manifest(
    write: Callable[[bytes], Path], steps: Any, match: str
) -> None:
    members = sample_members()
    refused(entries_for(members, manifest_for(members, steps=steps)), write, match)


def test_zero_counts_in_by_action_are_fine(write: Callable[[bytes], Path]) -> None:
    members = sample_members()
    steps = {"version": 1, "count": 3, "by_action": {"click": 1, "type": 1, "key": 1, "drag": 0}}
    bundle = open_entries(entries_for(members, manifest_for(members, steps=steps)), write)
    assert bundle.steps_by_action == {"click": 1, "type": 1, "key": 1}


def test_steps_numbered_with_a_gap(write: Callable[[bytes], Path]) -> None:
    members = sample_members()
    members["000003.json"] = members.pop("000002.json")
    refused(entries_for(members), write, r"not numbered from 000000 without gaps \(no 000002.json\)")


def test_a_step_frame_without_its_step(write: Callable[[bytes], Path]) -> None:
    members = {**sample_members(), "000007.webp": b"RIFF-orphan"}
    refused(entries_for(members), write, "'000007.webp' is the frame of a step that has no 000007.json")


def test_a_step_without_an_action(write: Callable[[bytes], Path]) -> None:
    members = {**sample_members(), "000001.json": canonical({"text": SECRET_TEXT})}
    refused(entries_for(members), write, "step member '000001.json' is not a JSON object with an action")


def test_a_file_that_is_also_a_directory(write: Callable[[bytes], Path]) -> None:
    members = {**sample_members(), "frames": b"x"}  # not in the spec's grammar, so never both
    refused(entries_for(members), write, "members lists 'frames', not a name a bundle holds")


# --- unpack -----------------------------------------------------------------------------------------


@pytest.fixture
def bundle() -> inspect.Bundle:
    return inspect.check_tar(valid_tar(), Path(f"{SESSION}.optin.tar.age"))


def test_unpack_refuses_a_non_empty_directory(bundle: inspect.Bundle, tmp_path: Path) -> None:
    (tmp_path / SESSION).mkdir()
    (tmp_path / SESSION / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="already exists and is not empty"):
        inspect.unpack(bundle, tmp_path)
    assert [p.name for p in (tmp_path / SESSION).iterdir()] == ["notes.txt"]


def test_unpack_refuses_a_file_in_its_place(bundle: inspect.Bundle, tmp_path: Path) -> None:
    (tmp_path / SESSION).write_text("mine")
    with pytest.raises(UsageError, match="is not a directory"):
        inspect.unpack(bundle, tmp_path)
    with pytest.raises(UsageError, match=r"output directory .* is not a directory"):
        inspect.unpack(bundle, tmp_path / SESSION)


def test_unpack_refuses_a_planted_symlink(bundle: inspect.Bundle, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / SESSION).symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ExportError, match="is a symbolic link") as info:
        inspect.unpack(bundle, out)
    assert info.value.exit_code == 1
    assert list(elsewhere.iterdir()) == []


def test_unpack_removes_what_it_wrote_when_writing_fails(
    bundle: inspect.Bundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = inspect._write_all

    def failing(fd: int, blob: bytes) -> None:
        calls.append(fd)
        if len(calls) == 6:  # half-way: the sixth of ten files
            os.close(fd)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, blob)

    monkeypatch.setattr(inspect, "_write_all", failing)
    with pytest.raises(ExportError, match="No space left on device") as info:
        inspect.unpack(bundle, tmp_path / "out")
    assert str(tmp_path / "out" / SESSION) in str(info.value)
    assert list((tmp_path / "out").iterdir()) == []


def test_unpack_cleans_up_when_the_last_member_fails(
    bundle: inspect.Bundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = inspect._write_all

    def failing(fd: int, blob: bytes) -> None:
        if blob == b"RIFF-frame-2":  # frames/000002.webp, inside the frames/ it made
            os.close(fd)
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real(fd, blob)

    monkeypatch.setattr(inspect, "_write_all", failing)
    (tmp_path / SESSION).mkdir()  # an empty directory already there: kept, emptied again
    with pytest.raises(ExportError, match="Input/output error"):
        inspect.unpack(bundle, tmp_path)
    assert list((tmp_path / SESSION).iterdir()) == []


# --- corruption, exhaustively sampled ---------------------------------------------------------------

VALID_TARS = [tar_of(entries_for(sample_members()), pax=pax) for pax in (False, True)]
VALID = inspect.check_tar(VALID_TARS[0], Path("b"))


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(VALID_TARS), st.data(), st.integers(1, 255))
def test_any_single_byte_corruption_is_refused_or_harmless(tar: bytes, data: st.DataObject, xor: int) -> None:
    """Flip some bits of one byte of the tar: refused, or (padding, pax comments) the same bundle."""
    position = data.draw(st.integers(0, len(tar) - 1), label="position")
    corrupt = bytearray(tar)
    corrupt[position] ^= xor
    try:
        bundle = inspect.check_tar(bytes(corrupt), Path("b"))
    except ExportError:
        return
    assert (bundle.session, bundle.manifest_bytes, bundle.signature) == (
        VALID.session,
        VALID.manifest_bytes,
        VALID.signature,
    )
    assert bundle.members == VALID.members and list(bundle.members) == list(VALID.members)


def test_both_sample_tars_open_alike() -> None:
    assert inspect.check_tar(VALID_TARS[1], Path("b")) == VALID


# --- the volunteer id (optin-bundle/2) and optin-bundle/1 --------------------------------------------

FRESH_SEED = bytes(range(100, 132))  # anyone's fresh Ed25519 key


def forged_volunteer(members: dict[str, bytes], **fields: Any) -> list[Entry]:
    """A bundle signed with a fresh key, carrying the real volunteer's id."""
    volunteer = {
        "id": signing.volunteer_id(VOLUNTEER, STUDY),
        "signing_key": base64.b64encode(signing.public_key_of_seed(FRESH_SEED)).decode(),
    }
    return entries_for(members, manifest_for(members, volunteer=volunteer, **fields), seed=FRESH_SEED)


def test_a_bundle_signed_by_another_key_with_the_volunteers_id_is_refused(
    write: Callable[[bytes], Path],
) -> None:
    message = refused(forged_volunteer(sample_members()), write, "is not the id of the key that signed it")
    assert "forged" in message and signing.id_of_key(STUDY, signing.public_key_of_seed(FRESH_SEED)) in message


def test_a_forgery_with_a_replaced_frame_is_refused_too(write: Callable[[bytes], Path]) -> None:
    members = {**sample_members(), "frames/000002.webp": b"RIFF-replaced"}
    refused(forged_volunteer(members), write, "is not the id of the key that signed it")


def test_the_id_is_bound_to_the_study_too(write: Callable[[bytes], Path]) -> None:
    members = sample_members()
    consent = {"study_id": "another-study", "study_name": "Web tasks", "consent_version": "1"}
    refused(entries_for(members, manifest_for(members, consent=consent)), write, "is not the id of the key")


def test_a_fresh_key_under_its_own_id_is_a_new_pseudonym(write: Callable[[bytes], Path]) -> None:
    """Anyone can enrol under a new id (the operator guide says so); nobody can take an existing one."""
    members = sample_members()
    public = signing.public_key_of_seed(FRESH_SEED)
    volunteer = {"id": signing.id_of_key(STUDY, public), "signing_key": base64.b64encode(public).decode()}
    bundle = open_entries(
        entries_for(members, manifest_for(members, volunteer=volunteer), seed=FRESH_SEED), write
    )
    assert bundle.id_verified and bundle.manifest["volunteer"]["id"] != signing.volunteer_id(VOLUNTEER, STUDY)


@pytest.mark.parametrize(
    "volunteer_id", ["", "ABCDEF" * 5 + "AB", "0" * 31, 7], ids=["empty", "upper", "short", "int"]
)
def test_a_malformed_volunteer_id(write: Callable[[bytes], Path], volunteer_id: Any) -> None:
    members = sample_members()
    volunteer = {**manifest_for(members)["volunteer"], "id": volunteer_id}
    refused(entries_for(members, manifest_for(members, volunteer=volunteer)), write, "volunteer.id is not 32")


def test_an_optin_bundle_1_opens_with_its_id_unverified(write: Callable[[bytes], Path]) -> None:
    members = sample_members()
    manifest = v1_manifest_for(members)
    bundle = open_entries(entries_for(members, manifest, seed=signing.v1_signing_seed(VOLUNTEER)), write)
    assert not bundle.id_verified and bundle.manifest["schema"] == "optin-bundle/1"
    summary = inspect.summarise(bundle)
    assert summary["volunteer"]["id_verified"] is False and summary["signature"] == "valid"
    text = inspect.render_summary(summary)
    volunteer_line = next(line for line in text.splitlines() if line.startswith("volunteer:"))
    assert "NOT verified" in volunteer_line and manifest["volunteer"]["signing_key"] in volunteer_line
    assert "volunteer's key" not in text  # the signature line claims only the key


def test_an_optin_bundle_1_forgery_cannot_be_told_and_says_so(write: Callable[[bytes], Path]) -> None:
    """The v1 hole, kept honest: the forged id opens, marked unverified, under another signing key."""
    members = sample_members()
    public = signing.public_key_of_seed(FRESH_SEED)
    manifest = v1_manifest_for(members)
    manifest["volunteer"]["signing_key"] = base64.b64encode(public).decode()
    bundle = open_entries(entries_for(members, manifest, seed=FRESH_SEED), write)
    assert not bundle.id_verified
    genuine = base64.b64encode(signing.public_key_of_seed(signing.v1_signing_seed(VOLUNTEER))).decode()
    assert bundle.manifest["volunteer"]["signing_key"] != genuine  # what tells them apart


def test_optin_bundle_1_is_still_checked_in_everything_else(write: Callable[[bytes], Path]) -> None:
    members = sample_members()
    manifest = v1_manifest_for(members, duration_s=99.0)
    refused(
        entries_for(members, manifest, seed=signing.v1_signing_seed(VOLUNTEER)), write, "duration_s is 99.0"
    )


# --- what the manifest states, recomputed -----------------------------------------------------------


def resigned(members: dict[str, bytes], **fields: Any) -> list[Entry]:
    """A bundle whose manifest says ``fields``, correctly hashed and signed by the volunteer."""
    return entries_for(members, manifest_for(members, **fields))


def with_events(records: list[dict[str, Any]]) -> dict[str, bytes]:
    return {**sample_members(), "events.jsonl": lines(records)}


def _stop(**loss: int) -> dict[str, Any]:
    stop_loss = {"events": 0, "frame_failures": 0, "frames_skipped": 0, "pastes_lost": 0, **loss}
    return {
        "v": 1,
        "k": "marker",
        "t_ns": 12_500_000_000,
        "marker": "session_stop",
        "detail": {"loss": stop_loss},
    }


@pytest.mark.parametrize(
    ("members", "fields", "match"),
    [
        (None, {"counts": {**SAMPLE_COUNTS, "button_press": 2}}, r"counts is \{.*\} but the members give"),
        (None, {"counts": {k: v for k, v in SAMPLE_COUNTS.items() if k != "frame"}}, "counts is"),
        (None, {"counts": {**SAMPLE_COUNTS, "marker": True}}, "counts is"),  # 1 and true differ
        (None, {"duration_s": 13.0}, "duration_s is 13.0 but the members give 12.5"),
        (None, {"duration_s": "12.5"}, "duration_s is"),
        (None, {"duration_s": None}, "duration_s is null"),
        (None, {"loss": {**SAMPLE_LOSS, "pauses": 1}}, "loss is"),
        (None, {"loss": {**SAMPLE_LOSS, "dropped_events": 5}}, "loss is"),
        (None, {"loss": {**SAMPLE_LOSS, "clean_stop": False}}, "loss is"),
        (None, {"loss": {**SAMPLE_LOSS, "paused_s": 0.01}}, "loss is"),
        (None, {"loss": {**SAMPLE_LOSS, "store_problems": [1]}}, "store_problems is not a list of strings"),
        (None, {"loss": {**SAMPLE_LOSS, "frames_left_out_ocr_failed": 1}}, "are not the same count"),
        (None, {"loss": None}, "no loss or no redaction"),
        (
            None,
            {"redaction": {"frames_left_out_ocr_failed": 0, "counts": {"typed": {"EMAIL": 2}}}},
            "redaction.counts.typed is",
        ),
        (
            None,
            {"redaction": {"frames_left_out_ocr_failed": 0, "counts": {"typed": {"EMAIL": -1}}}},
            "not a table of counts",
        ),
        (with_events([*sample_events()[:-1], _stop(events=3)]), {}, "loss is"),
        (
            with_events(
                [
                    *sample_events()[:2],
                    {"v": 1, "k": "marker", "t_ns": 1_050_000_000, "marker": "pause", "detail": {}},
                    *sample_events()[2:],
                ]
            ),
            {"counts": {**SAMPLE_COUNTS, "marker": 3}},
            "loss is",
        ),
        (
            with_events(sample_events()[:-1]),
            {"counts": {**SAMPLE_COUNTS, "marker": 1}, "duration_s": 3.0},
            "loss is",
        ),
    ],
    ids=[
        "counts",
        "counts-no-frame",
        "counts-bool",
        "duration",
        "duration-string",
        "duration-null",
        "pauses",
        "dropped",
        "clean-stop",
        "paused-s",
        "problems",
        "left-out",
        "no-loss",
        "typed",
        "negative-count",
        "stop-loss",
        "unstated-pause",
        "no-stop",
    ],
)
def test_what_the_manifest_states_is_recomputed(
    write: Callable[[bytes], Path], members: dict[str, bytes] | None, fields: dict[str, Any], match: str
) -> None:
    refused(resigned(members or sample_members(), **fields), write, match)


def test_what_rounds_within_a_millisecond_is_accepted(write: Callable[[bytes], Path]) -> None:
    typed = {"typed": {"EMAIL": 1, "ALL_TEXT": 5, "PHONE": 0}, "paste": {}, "titles": {}, "screen": {}}
    fields = {
        "duration_s": 12.5004,
        "loss": {**SAMPLE_LOSS, "paused_s": 0.0009},
        "redaction": {"frames_left_out_ocr_failed": 0, "counts": typed},
    }
    assert open_entries(resigned(sample_members(), **fields), write).manifest["duration_s"] == 12.5004


def test_pauses_and_cuts_are_recomputed_from_the_markers(write: Callable[[bytes], Path]) -> None:
    def marker(t: int, name: str, **detail: int) -> dict[str, Any]:
        return {"v": 1, "k": "marker", "t_ns": t, "marker": name, "detail": detail}

    events = sample_events()
    events[5:5] = [
        marker(5_000_000_000, "pause"),
        marker(7_000_000_000, "resume"),
        marker(8_000_000_000, "cut", from_ns=8_000_000_000, to_ns=8_500_000_000),
        marker(9_000_000_000, "pause"),
    ]
    loss = {**SAMPLE_LOSS, "pauses": 2, "paused_s": 5.5, "cuts": 1, "cut_s": 0.5}
    bundle = open_entries(
        resigned(with_events(events), loss=loss, counts={**SAMPLE_COUNTS, "marker": 6}), write
    )
    assert bundle.manifest["loss"]["paused_s"] == 5.5
    events[7]["detail"]["to_ns"] = "8500000000"
    refused(
        resigned(with_events(events), loss=loss, counts={**SAMPLE_COUNTS, "marker": 6}),
        write,
        "a cut's to_ns is not",
    )


def _frames(*members: str) -> bytes:
    times = [500_000_000, 1_500_000_000, 2_500_000_000, 3_500_000_000]
    return lines(
        [{"v": 1, "k": "frame", "t_ns": t, "member": m} for t, m in zip(times, members, strict=False)]
    )


def _step(number: int, **changes: Any) -> tuple[str, bytes]:
    step = json.loads(sample_members()[f"{number:06d}.json"])
    return f"{number:06d}.json", canonical({**step, **changes})


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"events.jsonl": b'{"v":1,"k":"marker"\n'}, "events.jsonl line 1 is not a JSON object of version 1"),
        ({"events.jsonl": lines(sample_events())[:-1]}, "does not end with a newline"),
        ({"events.jsonl": b"\n"}, "line 1 is not a JSON object"),
        ({"events.jsonl": lines([{"v": 2, "k": "marker", "t_ns": 0}])}, "not a JSON object of version 1"),
        ({"events.jsonl": lines([{"v": True, "k": "marker", "t_ns": 0}])}, "not a JSON object of version 1"),
        ({"events.jsonl": lines([{"v": 1, "k": "Marker\u001b", "t_ns": 0}])}, "line 1 has no kind"),
        ({"events.jsonl": lines([{"v": 1, "k": "marker", "t_ns": 1.5}])}, "has no t_ns"),
        ({"events.jsonl": lines([{"v": 1, "k": "marker", "t_ns": 1 << 63}])}, "has no t_ns"),
        ({"events.jsonl": b'{"v":1,"k":"scroll","t_ns":NaN}\n'}, "not a JSON object"),
        ({"events.jsonl": lines([{"v": 1, "k": "frame", "t_ns": 0}])}, "events.jsonl line 1 is a frame"),
        ({"events.jsonl": lines(sample_events()[::-1])}, "line 2 is earlier than the line before"),
        (
            {"frames.jsonl": _frames("000000.webp", "000001.webp", "frames/000003.webp")},
            "line 3 names no image member",
        ),
        (
            {"frames.jsonl": _frames("000000.webp", "000001.webp", "frames.jsonl")},
            "line 3 names no image member",
        ),
        (
            {"frames.jsonl": _frames("000000.webp", "000001.webp", "000000.webp")},
            "'frames/000002.webp' is not the member",
        ),
        (dict([_step(0, frame=7)]), "'000000.json' points at no frames.jsonl line"),
        (dict([_step(0, frame=True)]), "'000000.json' points at no frames.jsonl line"),
        (dict([_step(2, frame=2)]), "'000002.json' has a frame but no image member"),
        (dict([_step(1, frame=None)]), "'000001.json' has no frame but an image member"),
        (dict([_step(1, frame=0)]), "'000001.json''s image is not the frame frames.jsonl line 1 names"),
        (dict([_step(1, events=[6])]), "'000001.json' has events that are not events.jsonl line numbers"),
        (dict([_step(1, events="3")]), "has events that are not"),
        (dict([_step(1, action="type\u001b[2J")]), "not a JSON object with an action"),
    ],
    ids=[
        "event-not-json",
        "no-final-newline",
        "empty-line",
        "version-2",
        "version-true",
        "kind-escape",
        "float-time",
        "huge-time",
        "nan",
        "frame-in-events",
        "time-order",
        "frame-member-missing",
        "frame-member-not-image",
        "unused-frame-unnamed",
        "step-frame-out-of-range",
        "step-frame-bool",
        "step-frame-without-image",
        "step-image-without-frame",
        "step-image-not-its-frame",
        "step-event-out-of-range",
        "step-events-not-list",
        "action-escape",
    ],
)
def test_what_steps_and_frames_point_at_must_exist(
    write: Callable[[bytes], Path], changes: dict[str, bytes], match: str
) -> None:
    refused(resigned({**sample_members(), **changes}), write, match)


def test_the_event_stream_must_be_there(write: Callable[[bytes], Path]) -> None:
    members = {k: v for k, v in sample_members().items() if k != "events.jsonl"}
    refused(resigned(members), write, "it has no events.jsonl")


# --- limits: the file, the age header, the tar ------------------------------------------------------


def test_only_a_regular_file_is_read(tmp_path: Path) -> None:
    if sys.platform == "win32":
        pytest.skip("character devices and FIFOs are POSIX")
    for path, kind in ((Path("/dev/zero"), "a character device"), (tmp_path, "a directory")):
        with pytest.raises(ExportError, match=f"is not a regular file \\({kind}\\)"):
            inspect.open_bundle(path, [STUDY_KEY])
    fifo = tmp_path / "bundle.fifo"
    os.mkfifo(fifo)
    with pytest.raises(ExportError, match=r"is not a regular file \(a FIFO\)"):
        inspect.open_bundle(fifo, [STUDY_KEY])  # without a writer: opening must not wait for one


def test_an_armored_bundle_is_named(write: Callable[[bytes], Path]) -> None:
    armored = (
        b"-----BEGIN AGE ENCRYPTED FILE-----\n"
        b"YWdlLWVuY3J5cHRpb24ub3JnL3YxCg==\n"
        b"-----END AGE ENCRYPTED FILE-----\n"
    )
    with pytest.raises(ExportError, match="ASCII-armored"):
        inspect.open_bundle(write(armored), [STUDY_KEY])


def test_the_age_header_is_bounded_before_decryption(write: Callable[[bytes], Path]) -> None:
    others = [x25519.Identity.generate().to_public() for _ in range(63)]
    at_limit = pyrage.encrypt(valid_tar(), [*others[:62], STUDY_KEY.to_public()])  # 63 + grease = 64
    assert inspect.open_bundle(write(at_limit), [STUDY_KEY]).session == SESSION
    over = pyrage.encrypt(valid_tar(), [*others, STUDY_KEY.to_public()])
    with pytest.raises(ExportError, match="age header with 65 recipient stanzas; a bundle has at most 64"):
        inspect.open_bundle(write(over), [STUDY_KEY])
    body = b"-> X25519 " + b"A" * 43 + b"\n" + (b"B" * 64 + b"\n") * 400  # no --- line in 16 KiB
    with pytest.raises(ExportError, match="age header longer than 16384 bytes"):
        inspect.open_bundle(
            write(b"age-encryption.org/v1\n" + body + b"C\n--- " + b"D" * 43 + b"\n"), [STUDY_KEY]
        )


def _pax_header(records: dict[str, str] | bytes, kind: bytes = tarfile.XHDTYPE) -> bytes:
    """A raw pax extended (or global) header block and its records (or the bytes given)."""
    payload = records if isinstance(records, bytes) else b""
    for key, value in records.items() if isinstance(records, dict) else ():
        rest = f" {key}={value}\n".encode()
        n = len(rest) + 1
        while len(str(n)) + len(rest) != n:
            n += 1
        payload += str(n).encode() + rest
    info = tarfile.TarInfo("././@PaxHeader")
    info.type, info.size = kind, len(payload)
    return info.tobuf(tarfile.USTAR_FORMAT) + payload + b"\0" * (-len(payload) % tarfile.BLOCKSIZE)


GIB = 1 << 30


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        (
            Entry(
                f"{SESSION}/frames/000002.webp",
                b"\x01",
                size=1,
                pax={"GNU.sparse.size": str(GIB), "GNU.sparse.map": f"{GIB - 1},1"},
            ),
            "sparse member",
        ),
        (
            Entry(
                f"{SESSION}/frames/000002.webp",
                b"1\n0\n1\n" + b"\0" * 506 + b"\x01",
                size=513,
                pax={
                    "GNU.sparse.major": "1",
                    "GNU.sparse.minor": "0",
                    "GNU.sparse.realsize": str(GIB),
                    "GNU.sparse.name": f"{SESSION}/frames/000002.webp",
                },
            ),
            "sparse member",
        ),
        (
            Entry(f"{SESSION}/frames/000002.webp", b"RIFF-frame-2", pax={"GNU.sparse.realsize": str(GIB)}),
            "sparse member",
        ),
        (
            Entry(f"{SESSION}/frames/000002.webp", b"RIFF-frame-2", pax={"comment": "x" * 9000}),
            r"header of 9014 bytes \(at most 1024\)",
        ),
        (
            Entry(
                f"{SESSION}/frames/000002.webp",
                b"RIFF-frame-2",
                pax={"comment": "a"},
                raw=_pax_header({"comment": "b"}),
            ),
            "two pax extended headers in a row",
        ),
        (
            Entry(
                f"{SESSION}/frames/000002.webp",
                b"RIFF-frame-2",
                raw=_pax_header({"comment": "g"}, tarfile.XGLTYPE),
            ),
            "global or Solaris extended header",
        ),
        (Entry(f"{SESSION}/frames/" + "9" * 100, b"x", format=tarfile.GNU_FORMAT), "GNU long-name header"),
        (Entry(f"{SESSION}/" + "d/" * 2000 + "000000.webp", b"x"), "pax extended header of 4"),
        (
            Entry(f"{SESSION}/" + "d/" * 2000 + "000000.webp", b"x", format=tarfile.GNU_FORMAT),
            "GNU long-name",
        ),
        (Entry(f"{SESSION}/d/d/d/000000.webp", b"x"), "not a name a bundle holds"),
        (
            Entry(f"{SESSION}/frames/000002.webp", b"RIFF-frame-2", pax={"comment": "9" * 21}),
            "more than 20 digits",
        ),
        (
            Entry(f"{SESSION}/frames/000002.webp", b"RIFF-frame-2", pax={f"k{i}": "v" for i in range(9)}),
            "more than 8",
        ),
        (
            Entry(f"{SESSION}/frames/000002.webp", b"RIFF-frame-2", raw=_pax_header(b"9 a=b\n")),
            "malformed pax",
        ),
        (
            Entry(f"{SESSION}/frames/000002.webp", b"RIFF-frame-2", raw=_pax_header(b"6 ab\n\n")),
            "malformed pax",
        ),
        (  # a record without a length after a good one: malformed, not "more than 8 records"
            Entry(
                f"{SESSION}/frames/000002.webp",
                b"RIFF-frame-2",
                raw=_pax_header(b"13 path=abcd\n" + b"x" * 30),
            ),
            "malformed pax",
        ),
        (Entry(f"{SESSION}/frames/000002.gif", b"x"), "not a name a bundle holds"),
        (Entry(f"{SESSION}/0000002.json", b"x"), "not a name a bundle holds"),
    ],
    ids=[
        "sparse-0.1",
        "sparse-1.0",
        "sparse-realsize",
        "big-pax",
        "pax-chain",
        "global-header",
        "gnu-longname",
        "deep",
        "deep-gnu",
        "deep-short",
        "pax-long-number",
        "pax-many-records",
        "pax-bad-length",
        "pax-no-equals",
        "pax-no-length-after-a-record",
        "unknown-extension",
        "seven-digits",
    ],
)
def test_tar_headers_outside_the_spec_are_refused_before_their_data(
    write: Callable[[bytes], Path], entry: Entry, match: str
) -> None:
    entries = [e for e in entries_for(sample_members()) if e.name != entry.name]
    refused([*entries, entry], write, match)


def test_member_data_is_never_more_than_the_tar_holds(write: Callable[[bytes], Path]) -> None:
    # a pax size of 1 GiB for a member the manifest lists at 1 GiB: refused, nothing read past the end
    members = sample_members()
    manifest = manifest_for(members)
    manifest["members"]["frames/000002.webp"] = {"sha256": "ab" * 32, "size": GIB}
    entries = _edit("frames/000002.webp", entries_for(members, manifest), pax={"size": str(GIB)})
    refused(entries, write, r"'.*frames/000002.webp' is cut short")


# --- printing what the bundle says -------------------------------------------------------------------

ESCAPES = "\x1b[2K\r\x1b[1Asignature:  valid (forged)\x1b]0;title\x07\u202e\u200b\x9b31m"


def test_the_summary_prints_no_terminal_control_from_the_bundle(write: Callable[[bytes], Path]) -> None:
    members = sample_members()
    fields: dict[str, Any] = {
        "agent_version": f"0.1{ESCAPES}",
        "consent": {"study_id": STUDY, "study_name": f"Web tasks{ESCAPES}", "consent_version": ESCAPES},
        "redaction": {
            "frames_left_out_ocr_failed": 0,
            "counts": {
                "typed": {"EMAIL": 1},
                "paste": {},
                "titles": {ESCAPES: 1},
                f"screen{ESCAPES}": {"X": 1},
            },
        },
        "loss": {**SAMPLE_LOSS, "store_problems": [f"tail{ESCAPES}" * 40]},
    }
    text = inspect.render_summary(inspect.summarise(open_entries(resigned(members, **fields), write)))
    assert not [ch for ch in text if ch != "\n" and (ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F)]
    assert "\u202e" not in text and "\u200b" not in text
    assert "\\u001b[2K" in text and "Web tasks\\u001b" in text
    assert [line.split(":")[0] for line in text.splitlines()].count("signature") == 1
    assert max(len(line) for line in text.splitlines()) < 1000  # long values are cut short


def test_refusals_show_untrusted_names_visibly_and_short(write: Callable[[bytes], Path]) -> None:
    members = sample_members()
    message = refused(resigned(members, session=f"x{ESCAPES}" * 100), write, "manifest's session is")
    assert "\x1b" not in message and "\u202e" not in message and len(message) < 600


def test_a_bundle_optin_wrote_before_optin_bundle_2_still_opens() -> None:
    """tests/data/bundle-v1: a real optin-bundle/1 bundle, every count recomputed, its id unverified."""
    data = Path(__file__).parent.parent / "data"
    identity = data / "upgrade-0.1.0" / "study-identity.txt"
    path = data / "bundle-v1" / "20261128T061014Z-32909a69.optin.tar.age"
    bundle = inspect.open_bundle(path, inspect.load_identity_file(identity))
    assert bundle.manifest["schema"] == "optin-bundle/1" and not bundle.id_verified
    assert bundle.steps_by_action == {"click": 1, "type": 1}
    summary = inspect.summarise(bundle)
    assert summary["volunteer"]["id_verified"] is False and summary["signature"] == "valid"
    assert "NOT verified" in inspect.render_summary(summary)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"agent_version": 1}, "agent_version is not a string"),
        (
            {"consent": {"study_id": STUDY, "study_name": ["x"], "consent_version": "1"}},
            "study_name is not a",
        ),
        (
            {"consent": {"study_id": STUDY, "study_name": "x", "consent_version": 1}},
            "consent_version is not a",
        ),
    ],
    ids=["agent-version", "study-name", "consent-version"],
)
def test_what_is_stated_has_the_type_the_spec_gives(
    write: Callable[[bytes], Path], fields: dict[str, Any], match: str
) -> None:
    refused(resigned(sample_members(), **fields), write, match)
