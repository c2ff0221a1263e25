"""Consent: the single gate every capture stage asks (P1).

A consent *receipt* records what the volunteer agreed to: the study, the
consent text's version and SHA-256, the scopes, and when.  Consent is valid
only for the exact text it names: a study with a new text or version needs a
new grant.  Withdrawing removes the receipt; the running agent stops (the
control issue adds "and offers to delete all local data").
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from agent import __version__
from agent.errors import ConsentRequired, UsageError
from agent.paths import Dirs, ensure_private_dir, write_private_file
from agent.study import SCOPES, Study


@dataclass(frozen=True)
class Receipt:
    """What the volunteer agreed to, and when."""

    study_id: str
    study_name: str
    consent_version: str
    text_sha256: str
    scopes: tuple[str, ...]
    granted_at: str
    agent_version: str

    def covers(self, study: Study) -> bool:
        """True if this receipt is consent to exactly ``study``'s current text."""
        return (
            self.study_id == study.id
            and self.consent_version == study.consent_version
            and self.text_sha256 == study.text_sha256
        )

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        d["scopes"] = list(self.scopes)
        return d


def _receipt_path(dirs: Dirs) -> Path:
    return dirs.config / "consent.json"


def current_receipt(dirs: Dirs) -> Receipt | None:
    """The stored receipt, or None."""
    path = _receipt_path(dirs)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
        obj["scopes"] = tuple(obj["scopes"])
        return Receipt(**obj)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, KeyError):
        # An unreadable receipt is no consent (fail closed).
        return None


def grant(dirs: Dirs, study: Study, accept_text_sha256: str, scopes: list[str] | None = None) -> Receipt:
    """Record consent to ``study``'s text.

    :param accept_text_sha256: the hash the volunteer saw (``optin consent show``);
        it must match the text, so nobody consents to a text they did not see.
    :param scopes: a subset of the study's scopes (default: all it asks for).
    :raises UsageError: wrong hash or scopes the study does not offer.
    """
    if accept_text_sha256.strip().lower() != study.text_sha256:
        msg = (
            f"--accept-text-sha256 {accept_text_sha256!r} does not match the consent text of study "
            f"{study.id!r} version {study.consent_version} (sha256 {study.text_sha256}). "
            "Fix: read it with `optin consent show` and pass the hash it prints."
        )
        raise UsageError(msg)
    chosen = tuple(scopes) if scopes else study.scopes
    bad = [s for s in chosen if s not in study.scopes]
    if bad:
        msg = f"scopes {bad} are not offered by study {study.id!r}; it offers {', '.join(study.scopes)}"
        raise UsageError(msg)
    receipt = Receipt(
        study_id=study.id,
        study_name=study.name,
        consent_version=study.consent_version,
        text_sha256=study.text_sha256,
        scopes=tuple(s for s in SCOPES if s in chosen),
        granted_at=datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        agent_version=__version__,
    )
    ensure_private_dir(dirs.config)
    write_private_file(_receipt_path(dirs), json.dumps(receipt.to_json(), indent=2).encode("utf-8"))
    return receipt


def withdraw(dirs: Dirs) -> bool:
    """Remove the receipt.  Returns whether there was one."""
    try:
        _receipt_path(dirs).unlink()
    except FileNotFoundError:
        return False
    return True


def require(dirs: Dirs, study: Study) -> Receipt:
    """The receipt that covers ``study``, or :class:`ConsentRequired` with the fix."""
    receipt = current_receipt(dirs)
    if receipt is None or not receipt.covers(study):
        what = "has not been given" if receipt is None else "was given to a different text or version"
        msg = (
            f"consent to study {study.id!r} (version {study.consent_version}) {what}; nothing is recorded "
            "without it. Fix: read it with `optin consent show`, then "
            f"`optin consent grant --accept-text-sha256 {study.text_sha256}`"
        )
        raise ConsentRequired(msg)
    return receipt
