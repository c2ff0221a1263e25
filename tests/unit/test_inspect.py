"""The collector side of ``optin-bundle/1`` (agent/export/inspect.py): a valid bundle opens, is
summarised and unpacks byte for byte; every way of breaking one that docs/export-format.md
("Reading") names is refused before anything is written.

Bundles are built here from the spec's words, not by agent/export/bundle.py: tar members under
``<session-id>/``, canonical JSON manifest, Ed25519 ``manifest.sig``, age-encrypted with pyrage.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

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
STUDY_KEY = x25519.Identity.generate()
SECRET_TEXT = "alice.canary@example.com"  # noqa: S105 - stands for content no message may show


def canonical(obj: Any) -> bytes:
    """The spec's canonical JSON."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sample_members() -> dict[str, bytes]:
    """Three steps (two with a frame), the event stream, the frame list and one frame of no step."""
    steps = [
        {"action": "click", "x": 3, "y": 4, "button": "left", "frame": 0, "events": [0, 1]},
        {"action": "type", "text": f"to:{SECRET_TEXT}", "frame": 1, "events": [2]},
        {"action": "key", "keys": ["enter"], "frame": None, "events": [3]},
    ]
    events = [{"v": 1, "k": "button_press", "t_ns": i} for i in range(4)]
    frames = [
        {"t_ns": i, "member": m} for i, m in enumerate(["000000.webp", "000001.webp", "frames/000002.webp"])
    ]
    return {
        "000000.json": canonical(steps[0]),
        "000000.webp": b"RIFF-frame-0",
        "000001.json": canonical(steps[1]),
        "000001.webp": b"RIFF-frame-1",
        "000002.json": canonical(steps[2]),
        "events.jsonl": b"".join(canonical(e) + b"\n" for e in events),
        "frames.jsonl": b"".join(canonical(f) + b"\n" for f in frames),
        "frames/000002.webp": b"RIFF-frame-2",
    }


def manifest_for(members: dict[str, bytes], /, **fields: Any) -> dict[str, Any]:
    """A manifest that vouches for ``members``; ``fields`` replace top-level entries."""
    manifest = {
        "schema": "optin-bundle/1",
        "agent_version": "0.1.0",
        "session": SESSION,
        "volunteer": {
            "id": signing.volunteer_id(VOLUNTEER, "web-tasks-2026"),
            "signing_key": base64.b64encode(signing.public_signing_key(VOLUNTEER)).decode(),
        },
        "consent": {"study_id": "web-tasks-2026", "study_name": "Web tasks", "consent_version": "1"},
        "redaction": {"counts": {"typed": {"EMAIL": 1}, "paste": {}, "titles": {}, "screen": {"EMAIL": 2}}},
        "steps": {"version": 1, "count": 3, "by_action": {"click": 1, "type": 1, "key": 1}},
        "counts": {"button_press": 4},
        "loss": {"dropped_events": 0, "clean_stop": True, "store_problems": []},
        "duration_s": 12.5,
        "members": {
            name: {"sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob)}
            for name, blob in members.items()
        },
    }
    manifest.update(fields)
    return manifest


@dataclass(frozen=True)
class Entry:
    """One tar member as written: ``size`` overrides the header's size (the data may be shorter)."""

    name: str
    data: bytes = b""
    type: bytes = tarfile.REGTYPE
    linkname: str = ""
    size: int | None = None


def entries_for(
    members: dict[str, bytes],
    manifest: dict[str, Any] | None = None,
    *,
    signer: bytes = VOLUNTEER,
    session: str = SESSION,
    manifest_bytes: bytes | None = None,
) -> list[Entry]:
    """The tar members of a bundle: manifest.json, manifest.sig, then ``members``."""
    manifest_bytes = manifest_bytes or canonical(manifest or manifest_for(members))
    sig = signing.sign(signer, manifest_bytes)
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
        info.pax_headers = {"comment": "optin", "mtime": "0"} if pax else {}
        out.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        out.write(e.data + b"\0" * (-len(e.data) % tarfile.BLOCKSIZE))
    out.write(b"\0" * 2 * tarfile.BLOCKSIZE)
    return out.getvalue()


def valid_tar() -> bytes:
    return tar_of(entries_for(sample_members()))


def seal(tar_bytes: bytes, recipient: Any = None) -> bytes:
    return pyrage.encrypt(tar_bytes, [recipient or STUDY_KEY.to_public()])


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
    assert signing.verify(signing.public_signing_key(VOLUNTEER), bundle.manifest_bytes, bundle.signature)

    summary = inspect.summarise(bundle)
    assert json.loads(json.dumps(summary)) == summary
    assert summary["session"] == SESSION and summary["schema"] == "optin-bundle/1"
    assert summary["agent_version"] == "0.1.0" and summary["consent_version"] == "1"
    assert summary["volunteer"] == manifest_for(members)["volunteer"]
    assert summary["study"] == {"id": "web-tasks-2026", "name": "Web tasks"}
    assert summary["steps"] == {"count": 3, "by_action": {"click": 1, "key": 1, "type": 1}}
    assert (summary["frames"], summary["events"], summary["duration_s"]) == (3, 4, 12.5)
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
    entries = [*entries_for(sample_members()), Entry(f"{SESSION}/extra.bin", b"abc")]
    refused(entries, write, r"member 'extra.bin' is not listed")


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
        (Entry(f"{SESSION}/./x", b"x"), "not a file name under"),
        (Entry(f"{SESSION}//x", b"x"), "not a file name under"),
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
        (None, "steps say None"),
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
    members = {**sample_members(), "frames": b"x"}
    refused(
        entries_for(members), write, "member 'frames' is a file and the directory of 'frames/000002.webp'"
    )


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
