"""Consent: the single gate every capture stage asks (P1).

A consent *receipt* records what the volunteer agreed to: the study, the consent text's version
and SHA-256, the scopes they ticked, when, and the study's *terms* — everything the consent
dialog and ``optin consent show`` state about the study (:meth:`agent.study.Study.terms`: the
recipients who can read exports, the deny rules, retention, the redaction and capture choices)
with their SHA-256.  A receipt covers a study only if all of that is unchanged: a study file with
the same id, version and text but another recipient key is a study the volunteer has not agreed
to, and nothing is recorded under it until they agree again.

A receipt written by an older optin (no terms) is still read: it covers nothing and is reported
as needing renewal.  An unreadable or inconsistent receipt is no consent (fail closed).
Withdrawing removes the receipt; the running agent stops.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from agent import __version__
from agent.errors import ConsentRequired, UsageError
from agent.paths import Dirs, ensure_private_dir, write_private_file
from agent.study import MAX_STUDY_BYTES, SCOPES, Study, changed_terms, terms_digest
from agent.untrusted_text import visible

#: A receipt file larger than this is not a receipt.  It holds the study's terms (deny rules and
#: tasks included), written as UTF-8 JSON: a few KiB for most studies, and for the largest study
#: file optin accepts at most a small multiple of it (a short TOML entry grows by its JSON keys,
#: nulls and indentation), hence eight times that bound.
MAX_RECEIPT_BYTES = 8 * MAX_STUDY_BYTES

#: :func:`state` answers.
GIVEN = "given"
NOT_GIVEN = "not given"
NEEDS_RENEWAL = "needs renewal"

_HEX = frozenset("0123456789abcdef")


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
    #: SHA-256 of the study's terms agreed to; "" in a receipt of an older optin (covers nothing).
    terms_sha256: str = ""
    #: The terms themselves (:meth:`Study.terms`), to say what changed; None in an older receipt.
    terms: Mapping[str, Any] | None = field(default=None, compare=False)

    def covers(self, study: Study) -> bool:
        """True if this receipt is consent to exactly ``study``: its text, version and every term shown."""
        return (
            self.study_id == study.id
            and self.consent_version == study.consent_version
            and self.text_sha256 == study.text_sha256
            and self.terms_sha256 == study.terms_sha256
        )

    def renewal_reason(self, study: Study) -> str | None:
        """Why this receipt does not cover ``study``, in words for the volunteer; None if it does."""
        if self.covers(study):
            return None
        if self.study_id != study.id:
            return f"you agreed to another study ({visible(self.study_name, limit=80)})"
        if (self.consent_version, self.text_sha256) != (study.consent_version, study.text_sha256):
            agreed = visible(self.consent_version, limit=40)
            return f"the consent text has changed since you agreed to version {agreed}"
        if not self.terms_sha256 or self.terms is None:
            return (
                "your consent was recorded by an older optin, which did not bind who can read exports "
                "and what the study's policy is"
            )
        changed = changed_terms(self.terms, study.terms())
        return "the study has changed since you agreed: " + (", ".join(changed) or "its terms")

    def to_json(self) -> dict[str, object]:
        return {
            "study_id": self.study_id,
            "study_name": self.study_name,
            "consent_version": self.consent_version,
            "text_sha256": self.text_sha256,
            "scopes": list(self.scopes),
            "granted_at": self.granted_at,
            "agent_version": self.agent_version,
            "terms_sha256": self.terms_sha256,
            "terms": dict(self.terms) if self.terms is not None else None,
        }


def _receipt_path(dirs: Dirs) -> Path:
    return dirs.config / "consent.json"


def _is_sha256(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX


def receipt_from_json(obj: object) -> Receipt | None:
    """A receipt from its JSON form, or None if anything in it is missing, mistyped or inconsistent."""
    if not isinstance(obj, dict):
        return None
    strings = ("study_id", "study_name", "consent_version", "granted_at", "agent_version")
    if not all(isinstance(obj.get(k), str) for k in strings) or not _is_sha256(obj.get("text_sha256")):
        return None
    scopes = obj.get("scopes")
    if not isinstance(scopes, list) or not all(isinstance(s, str) and s in SCOPES for s in scopes):
        return None
    terms_sha256 = obj.get("terms_sha256", "")
    terms = obj.get("terms")
    if terms_sha256 == "" and terms is None:
        pass  # written by an older optin: read, and reported as needing renewal
    elif not (_is_sha256(terms_sha256) and isinstance(terms, dict) and terms_digest(terms) == terms_sha256):
        return None  # terms that do not hash to what the receipt says: no consent (fail closed)
    return Receipt(
        study_id=obj["study_id"],
        study_name=obj["study_name"],
        consent_version=obj["consent_version"],
        text_sha256=obj["text_sha256"],
        scopes=tuple(scopes),
        granted_at=obj["granted_at"],
        agent_version=obj["agent_version"],
        terms_sha256=terms_sha256,
        terms=terms,
    )


def current_receipt(dirs: Dirs) -> Receipt | None:
    """The stored receipt, or None (none, unreadable, too large, not a regular file)."""
    path = _receipt_path(dirs)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0))
    except OSError:  # absent, a symlink, unreadable: no consent
        return None
    try:
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                return None
            data = fh.read(MAX_RECEIPT_BYTES + 1)
    except OSError:
        return None
    if len(data) > MAX_RECEIPT_BYTES:
        return None
    try:
        obj = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):  # an unreadable receipt is no consent (fail closed)
        return None
    return receipt_from_json(obj)


def state(receipt: Receipt | None, study: Study) -> str:
    """:data:`GIVEN`, :data:`NOT_GIVEN` or :data:`NEEDS_RENEWAL` (a receipt that does not cover ``study``)."""
    if receipt is None:
        return NOT_GIVEN
    return GIVEN if receipt.covers(study) else NEEDS_RENEWAL


def grant(dirs: Dirs, study: Study, accept_text_sha256: str, scopes: list[str] | None = None) -> Receipt:
    """Record consent to ``study``: its text and every term the dialog shows.

    :param accept_text_sha256: the consent SHA-256 the volunteer saw (``optin consent show``
        prints it: it covers the text and every term shown with it, recipients included).  It
        must match, so nobody consents to terms they did not see.  The consent text's own
        SHA-256 is refused: it would bind whatever recipients and policy are installed when
        ``grant`` runs, which the volunteer may never have seen.
    :param scopes: a subset of the study's scopes (default: all it asks for).
    :raises UsageError: wrong hash or scopes the study does not offer.
    """
    given = accept_text_sha256.strip().lower()
    if given == study.text_sha256:
        msg = (
            "--accept-text-sha256 got the SHA-256 of the consent text alone, which does not cover who "
            f"can read exports and the study's policy. Fix: read `optin consent show` and pass the consent "
            f"sha256 it prints ({study.terms_sha256})"
        )
        raise UsageError(msg)
    if given != study.terms_sha256:
        msg = (
            f"--accept-text-sha256 {visible(accept_text_sha256, limit=80)!r} does not match the consent of "
            f"study {visible(study.id)!r} version {visible(study.consent_version)} (consent sha256 "
            f"{study.terms_sha256}). Fix: read it with `optin consent show` and pass the consent sha256 "
            "it prints"
        )
        raise UsageError(msg)
    chosen = tuple(scopes) if scopes else study.scopes
    bad = [s for s in chosen if s not in study.scopes]
    if bad:
        msg = f"scopes {bad} are not offered by study {study.id!r}; it offers {', '.join(study.scopes)}"
        raise UsageError(msg)
    terms = study.terms()
    receipt = Receipt(
        study_id=study.id,
        study_name=study.name,
        consent_version=study.consent_version,
        text_sha256=study.text_sha256,
        scopes=tuple(s for s in SCOPES if s in chosen),
        granted_at=datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        agent_version=__version__,
        terms_sha256=terms_digest(terms),
        terms=terms,
    )
    data = json.dumps(receipt.to_json(), indent=2, ensure_ascii=False).encode("utf-8")
    if len(data) > MAX_RECEIPT_BYTES:  # never write a receipt that could not be read back
        msg = (
            f"the consent receipt of this study would have {len(data)} bytes, more than the "
            f"{MAX_RECEIPT_BYTES} optin reads back. Fix: ask the study for a shorter study file"
        )
        raise UsageError(msg)
    ensure_private_dir(dirs.config)
    write_private_file(_receipt_path(dirs), data)
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
        what = "has not been given" if receipt is None else f"needs renewal: {receipt.renewal_reason(study)}"
        msg = (
            f"consent to study {visible(study.id)!r} (version {visible(study.consent_version)}) {what}; "
            "nothing is recorded without it. Fix: read it with `optin consent show`, then "
            f"`optin consent grant --accept-text-sha256 {study.terms_sha256}`"
        )
        raise ConsentRequired(msg)
    return receipt
