"""One exception tree for the whole agent.

::

    OptinError                      exit code 1 unless a subclass says otherwise
    ├── UsageError                  bad arguments or input (exit 2)
    ├── EnvironmentProblem          this machine cannot do it: no display, Wayland, no RECORD (exit 2)
    │   ├── BackendUnavailable      no capture backend could be loaded; carries every fix
    │   └── RedactorUnavailable     the study requires a redactor (OCR) this machine cannot run
    ├── ConsentRequired             capture or export asked for without the needed consent (exit 2)
    ├── StudyError                  the study file is missing or invalid (exit 2)
    ├── KeyError_                   the volunteer's key pair is missing or unusable
    ├── StoreError                  the encrypted session store
    │   ├── StoreCorrupt            authentication failed: opaque on purpose (like Fernet's InvalidToken)
    │   └── StoreFormatError        a structural problem: names the file and offset
    ├── NotFound                    no such session, bundle or file
    ├── ExportError                 export or bundle checking failed; a refused bundle's code as
    │                               reason and stage (docs/dataset.md "Reason codes")
    ├── DestError                   optin dataset: an operation on DEST failed
    │   ├── DestUnusable            DEST cannot be used as given: link, other user, credentials (exit 2)
    │   ├── ObjectKeyRefused, ObjectExists, ObjectChanged, ObjectMissing, ObjectTooLarge
    └── (agent/ipc_protocol.py) AgentNotRunning (exit 3), AgentError (the agent's own exit
                                code), ControlUnavailable

Messages say what failed, the offending value and the fix.  They never contain
captured content (typed characters, window titles, pixels).
"""

from __future__ import annotations

from agent.export.reasons import NOT_A_REFUSAL, stage_of


class OptinError(Exception):
    """Base of every error the agent raises on purpose."""

    #: Process exit code when this error reaches the command line.
    exit_code = 1


class UsageError(OptinError):
    """The command was called wrongly; the message says how to call it."""

    exit_code = 2


class EnvironmentProblem(OptinError):
    """This machine cannot do what was asked; the message says the fix."""

    exit_code = 2


class BackendUnavailable(EnvironmentProblem):
    """No capture backend could be loaded.

    :param resolutions: one line per backend that was tried, with its fix.
    """

    def __init__(self, message: str, resolutions: list[str] | None = None) -> None:
        self.resolutions = list(resolutions or [])
        full = message if not self.resolutions else message + "\n" + "\n".join(self.resolutions)
        super().__init__(full)


class RedactorUnavailable(EnvironmentProblem):
    """The study requires a redactor that cannot run here: export refuses (fail closed)."""


class ConsentRequired(OptinError):
    """Capture or export needs consent that has not been given."""

    exit_code = 2


class StudyError(OptinError):
    """The study file is missing or invalid."""

    exit_code = 2


class KeyError_(OptinError):
    """The volunteer's key pair is missing or unusable."""


class StoreError(OptinError):
    """Something is wrong with the encrypted session store.

    :ivar offset: the byte offset in the file the error is about, when there is one
        (``optin verify`` reports it); the message names file and offset too.
    """

    def __init__(self, message: str = "", *, offset: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset


class StoreCorrupt(StoreError):
    """Authentication of stored data failed.

    Deliberately opaque: it never says which check failed inside the cipher.
    """


class StoreFormatError(StoreError):
    """A structural problem in a store file (bad magic, short header, bad length)."""


class NotFound(OptinError):
    """No such session, bundle or file."""


class ExportError(OptinError):
    """Export or bundle checking failed.

    :ivar reason: a code of docs/dataset.md "Reason codes" (agent/export/reasons.py ``REASONS``)
        when this refuses a bundle's bytes; ``"invalid"`` (no code) for any other export failure.
    :ivar stage: the code's stage (``age``, ``tar``, ``manifest``, ``recount``, ...); when not
        given, the one ``REASONS`` lists for ``reason`` (``""`` for no code).
    :ivar session: the manifest's ``session``, and ``volunteer`` its ``volunteer.id``, once the
        signature and the volunteer id were checked (:func:`agent.export.bundle_checks.check_tar`
        sets them); None before.
    """

    def __init__(self, message: str = "", *, reason: str = NOT_A_REFUSAL, stage: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.stage = stage or stage_of(reason)
        self.session: str | None = None
        self.volunteer: str | None = None


# --- optin dataset's DEST (agent/dataset/dest.py) ---------------------------------------------------


class DestError(OptinError):
    """An operation on DEST failed (exit 1); the message names the operation, the key and the fix."""


class DestUnusable(DestError):
    """DEST cannot be used as given: a link, another user's folder, no bucket, wrong credentials (exit 2)."""

    exit_code = 2


class ObjectKeyRefused(DestError):
    """A key is not a name of the dataset layout (docs/dataset.md, "Object names")."""


class ObjectExists(DestError):
    """A new object's key is already taken (``If-None-Match: *`` failed, or the link found a file)."""


class ObjectChanged(DestError):
    """A conditional replacement found the object changed (or gone, or there) since the caller read it."""


class ObjectMissing(DestError):
    """No object under that key."""


class ObjectTooLarge(DestError):
    """The object is larger than the caller allows for it."""
