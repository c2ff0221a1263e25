"""The reason codes of a refused bundle, each with its stage (docs/dataset.md, "Reason codes").

Every refusal of a bundle's bytes — by ``optin inspect``'s checks (agent/export/inspect.py,
bundle_checks.py, recount.py) or by the dataset's own (agent/dataset/) — carries exactly one
of these codes as :attr:`~agent.errors.ExportError.reason`, and its stage as ``stage``; a
dataset build quarantines the bundle under it.  The list is fixed by the spec: a new code is a
new minor version of ``optin-dataset/1`` (tests/unit/test_reason_codes.py holds every raise
site to it).

An :class:`~agent.errors.ExportError` that is not a refusal of a bundle's bytes (a path that
is not a regular file, an output directory that cannot be written, a session that cannot be
exported) keeps the default reason :data:`NOT_A_REFUSAL`, which is in no table: it never
reaches a ledger.

Pure data: this module imports nothing.
"""

from __future__ import annotations

#: Every reason code, in the spec's order, with its stage.
REASONS: dict[str, str] = {
    # source: the file as listed, before it is read
    "too_large": "source",
    # age: the age layer
    "not_age": "age",
    "age_armored": "age",
    "age_header_limits": "age",
    "not_a_recipient": "age",
    "decrypt_failed": "age",
    # tar: the decrypted tar, header by header
    "tar_header": "tar",
    "member_name": "tar",
    "member_size": "tar",
    "member_unlisted": "tar",
    "member_missing": "tar",
    "member_hash": "tar",
    # manifest: manifest.json and manifest.sig
    "manifest_order": "manifest",
    "manifest_json": "manifest",
    "schema_unknown": "manifest",
    "session_mismatch": "manifest",
    "signature_invalid": "manifest",
    "volunteer_id_mismatch": "manifest",
    "manifest_types": "manifest",
    # recount: what the manifest states, recomputed from the members
    "recount_mismatch": "recount",
    "stream_invalid": "recount",
    "step_invalid": "recount",
    "tasks_invalid": "recount",
    "elements_invalid": "recount",
    # dataset: the dataset's own checks
    "study_mismatch": "dataset",
    "session_id_unsupported": "dataset",
    "duplicate_session": "dataset",
    "volunteer_withdrawn": "dataset",
    "image_invalid": "dataset",
    "internal_error": "dataset",
}

#: Every stage, in the order a bundle meets them.
STAGE_ORDER: tuple[str, ...] = ("source", "age", "tar", "manifest", "recount", "dataset")

#: The reason of an :class:`~agent.errors.ExportError` that refuses no bundle's bytes (not a code).
NOT_A_REFUSAL = "invalid"


def stage_of(reason: str) -> str:
    """The stage of ``reason``; ``""`` for :data:`NOT_A_REFUSAL` or anything not a code."""
    return REASONS.get(reason, "")


__all__ = ["NOT_A_REFUSAL", "REASONS", "STAGE_ORDER", "stage_of"]
