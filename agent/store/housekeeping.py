"""The store's housekeeping before a recorder opens a session, in one entry point.

:func:`open_store` runs, in this order: crash recovery (seals what a killed recorder
left, with the public key only), the deletions and the cuts an interruption left
half done, and the budget and retention (:func:`enforce_budget`), so a new session
never adds to a store over its budget.  It logs what it did (session ids and
actions, never content); only recovery's and the interrupted steps' failures are
raised, a failed budget clean-up is logged and never fatal.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from agent.failures import describe_failure
from agent.paths import Dirs
from agent.store import cut, retention
from agent.store.recovery import RecoveryReport, recover_sessions

logger = logging.getLogger(__name__)


def open_store(dirs: Dirs, recipient: bytes, *, max_bytes: int, max_age_days: float) -> list[RecoveryReport]:
    """Make the store ready for a new session; returns what crash recovery did.

    :param recipient: the volunteer's public key (recovery seals with it; no secret is needed).
    :param max_bytes: the store's byte budget; ``max_age_days``: the retention, in days.
    """
    recovered = recover_sessions(dirs, recipient)  # sessions a crash left open
    for report in recovered:
        if report.action != "skipped":  # recovery logged why it left one alone (path, fix)
            logger.warning("session %s was left open by a crash: %s", report.session_id, report.action)
    for sid in retention.finish_interrupted_deletions(dirs):
        logger.warning("finished a deletion in session %s that had been interrupted", sid)
    for sid in cut.finish_interrupted_cuts(dirs):
        logger.warning("finished or undid a cut of session %s that had been interrupted", sid)
    enforce_budget(dirs, keep=set(), max_bytes=max_bytes, max_age_days=max_age_days)
    return recovered


def enforce_budget(dirs: Dirs, *, keep: Iterable[str], max_bytes: int, max_age_days: float) -> None:
    """Delete sessions beyond the byte budget and the retention; never fatal, never those in ``keep``."""
    try:
        deleted = retention.enforce(dirs, keep=keep, max_bytes=max_bytes, max_age_days=max_age_days)
    except Exception as exc:  # a failed clean-up must not stop recording
        logger.warning("enforcing the store's budget and retention failed (%s)", describe_failure(exc))
        return
    for item in deleted:
        logger.info("deleted session %s (%s, %s bytes)", item.session_id, item.reason, item.bytes)
