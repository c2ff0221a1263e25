"""Write ``<session>.optin.tar.age``: a redacted session, encrypted to the study.

The bundle is an age file (readable with the standard ``age -d``) holding a tar:

* ``manifest.json`` — schema, agent version, session id, consent receipt,
  redaction evidence, counts and loss, and the SHA-256 of every other member;
* ``events.jsonl`` — every non-frame event, redacted, one JSON object a line;
* ``frames/NNNNNN.webp`` — the frames, in order; ``frames.jsonl`` says when
  and why each was taken.

See docs/export-format.md.  Decrypted data stays in memory; the only file
written is the encrypted bundle (to a temporary name, then renamed).  No
hostname, user name or home path goes into a bundle: tar members carry no
owner names and a fixed mtime.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import __version__, consent
from agent.errors import ConsentRequired, ExportError, UsageError
from agent.events import Frame, Marker, kind_counts, to_dict
from agent.paths import Dirs, write_private_file
from agent.redact import policy
from agent.redact.screen import TesseractOcr
from agent.store import keys
from agent.store.reader import read_session
from agent.study import Study

#: Version of the bundle layout.
BUNDLE_SCHEMA = "optin-bundle/0"


@dataclass(frozen=True)
class ExportResult:
    session_id: str
    path: Path
    bytes: int
    members: int
    events: int
    frames: int

    def to_json(self) -> dict[str, Any]:
        return {
            "session": self.session_id,
            "path": str(self.path),
            "bytes": self.bytes,
            "members": self.members,
            "events": self.events,
            "frames": self.frames,
        }


def parse_recipient(text: str) -> Any:
    """An age X25519 recipient, or a UsageError that says what is wrong."""
    from pyrage import x25519

    try:
        return x25519.Recipient.from_str(text.strip())
    except Exception as exc:  # pyrage raises its own RecipientError/ValueError variants
        msg = f"--recipient {text!r} is not an age public key (it should start with age1...)"
        raise UsageError(msg) from exc


def export_session(
    dirs: Dirs,
    session_id: str,
    out_dir: Path,
    study: Study,
    recipients: list[str] | None = None,
    *,
    progress: policy.Progress | None = None,
) -> ExportResult:
    """Redact, pack and encrypt one session.

    :param progress: called with (frames done, frames in all) while frames are OCR-masked.
    :raises ConsentRequired: the session's consent is no longer in force.
    :raises RedactorUnavailable: the study requires OCR and no engine is installed.
    :raises ExportError: the output cannot be written.
    """
    chosen = recipients or list(study.recipients)
    age_recipients = [parse_recipient(r) for r in chosen]
    identity = keys.load_identity(dirs)
    data = read_session(dirs, session_id, identity)
    start = next((e for e in data.events if isinstance(e, Marker) and e.marker == "session_start"), None)
    receipt = consent.current_receipt(dirs)
    if start is None or receipt is None or start.detail.get("consent_sha256") != receipt.text_sha256:
        msg = (
            f"session {session_id} cannot be exported: the consent it was recorded under is not in force "
            "(withdrawn or replaced). Nothing was written."
        )
        raise ConsentRequired(msg)

    rules = policy.Policy.from_study(study)
    engine = TesseractOcr.find() if rules.ocr != "off" else None
    redaction = policy.redact_session(data.events, rules, ocr=engine, progress=progress)
    events = redaction.events
    tar_bytes, members = _pack(session_id, events, receipt.to_json(), redaction.evidence(), data.problems)
    from pyrage import encrypt

    sealed = encrypt(tar_bytes, age_recipients)
    path = _write_atomically(out_dir, f"{session_id}.optin.tar.age", sealed)
    frames = sum(1 for e in events if isinstance(e, Frame))
    return ExportResult(session_id, path, len(sealed), members, len(events) - frames, frames)


def _pack(
    session_id: str,
    events: list[Any],
    receipt: dict[str, Any],
    evidence: dict[str, Any],
    problems: list[str],
) -> tuple[bytes, int]:
    members: dict[str, bytes] = {}
    lines: list[str] = []
    frame_lines: list[str] = []
    for ev in events:
        if isinstance(ev, Frame):
            name = f"frames/{len(frame_lines):06d}.{ev.format}"
            members[name] = ev.data
            frame_lines.append(json.dumps({**to_dict(ev), "member": name}, separators=(",", ":")))
        else:
            record = ev.to_dict() if isinstance(ev, policy.Redacted) else to_dict(ev)
            lines.append(json.dumps(record, separators=(",", ":"), ensure_ascii=False))
    members["events.jsonl"] = ("\n".join(lines) + "\n").encode()
    members["frames.jsonl"] = ("\n".join(frame_lines) + "\n").encode() if frame_lines else b""
    stop = next((e for e in events if isinstance(e, Marker) and e.marker == "session_stop"), None)
    manifest = {
        "schema": BUNDLE_SCHEMA,
        "agent_version": __version__,
        "session": session_id,
        "consent": receipt,
        "redaction": evidence,
        "counts": kind_counts(events),
        "loss": _loss(stop, problems),
        "members": {name: hashlib.sha256(blob).hexdigest() for name, blob in sorted(members.items())},
    }
    members["manifest.json"] = json.dumps(manifest, indent=2, sort_keys=True).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ["manifest.json", *sorted(n for n in members if n != "manifest.json")]:
            blob = members[name]
            info = tarfile.TarInfo(f"{session_id}/{name}")
            info.size = len(blob)
            info.mode = 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(blob))
    return buf.getvalue(), len(members)


def _loss(stop: Marker | None, problems: list[str]) -> dict[str, Any]:
    """Loss counts from the session_stop marker; None where unknown (no clean stop)."""
    counts = dict(stop.detail.get("loss", {})) if stop is not None else {}
    return {
        "dropped_events": counts.get("events"),
        "frame_failures": counts.get("frame_failures"),
        "frames_skipped": counts.get("frames_skipped"),
        "pastes_lost": counts.get("pastes_lost"),
        "clean_stop": stop is not None,
        "store_problems": list(problems),
    }


def _write_atomically(out_dir: Path, name: str, blob: bytes) -> Path:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / name
        write_private_file(target, blob)
    except OSError as exc:
        msg = (
            f"cannot write the bundle into {out_dir}: {exc.strerror}. Fix: choose a writable --out directory"
        )
        raise ExportError(msg) from exc
    return target
