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
    ├── ExportError                 export or bundle checking failed
    └── (agent/ipc_protocol.py) AgentNotRunning (exit 3), AgentError (the agent's own exit
                                code), ControlUnavailable

Messages say what failed, the offending value and the fix.  They never contain
captured content (typed characters, window titles, pixels).
"""

from __future__ import annotations


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
    """Export or bundle checking failed."""
