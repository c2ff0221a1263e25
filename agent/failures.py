"""A failure named without its text, for logs and status lines.

An exception's message may quote what it failed on (a title pattern, a path inside a
session, captured text), so optin's logs and ``status.json`` name a failure by the OS's
words for it (``strerror``) or by its type, never by its message.  Every floor uses it:
the store's housekeeping, capture, the writer loop and the recorder.
"""

from __future__ import annotations


def describe_failure(exc: BaseException) -> str:
    """A failure in words without its message text (which may quote captured content)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__
