"""Process hygiene, called first thing in every optin process that sees captured content.

:func:`harden_process` keeps optin's memory (titles, typed text, frames before
encryption, the unlocked identity) out of crash dumps (P5: no plaintext in
crash dumps): the core-file limit the kernel applies (the soft limit) goes to 0,
inherited by every child process, and the per-OS part in
:mod:`agent.backends.process` makes the process not dumpable on Linux.  The hard
limit is left as it is: optin never raises the soft one again, and lowering the
hard limit would only take from the user's shell what it cannot give back.

Called by ``optin run`` (the agent), ``optin _dialog`` (the consent dialog) and
the review window's process, before they read a study, a key or an event.  A
failure is an :class:`~agent.errors.EnvironmentProblem`: fail closed, no
recording with dumps possible.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from agent.backends import platform_calls, process
from agent.errors import EnvironmentProblem

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hardening:
    """What :func:`harden_process` did (for the log and ``optin doctor``)."""

    core_limit: str  #: ``"0"``, or why there is no such limit here
    os_part: str  #: what :func:`agent.backends.process.forbid_dumps` did


def harden_process() -> Hardening:
    """No core file of this process, on any OS that allows optin to say so; idempotent.

    :raises EnvironmentProblem: the OS refused (the message names the call and the fix).
    """
    core = _no_core_files()
    try:
        os_part = process.forbid_dumps()
    except OSError as exc:
        msg = (
            f"optin could not keep its memory out of crash dumps ({exc}); it does not run without that. "
            "Fix: report this to optin's developers with the output of `optin doctor` and `ulimit -c`"
        )
        raise EnvironmentProblem(msg) from None
    logger.debug("crash dumps: core limit %s; %s", core, os_part)
    return Hardening(core, os_part)


def _no_core_files() -> str:
    try:
        limited = platform_calls.forbid_core_files()
    except (OSError, ValueError) as exc:
        msg = f"optin could not set its core-file limit to 0 ({type(exc).__name__}). Fix: ulimit -c 0"
        raise EnvironmentProblem(msg) from None
    if not limited:  # Windows: no resource limits; the OS part does what can be done
        return "no resource limits on this OS"
    return "0"


__all__ = ["Hardening", "harden_process"]
