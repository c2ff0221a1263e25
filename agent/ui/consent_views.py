"""What the consent and withdrawal dialogs show, decided without a display (no Tk here).

:func:`consent_view` and :func:`withdraw_view` make the views that the Tk dialogs of
:mod:`agent.ui.consent_dialog` only render; :func:`grant_request` is what "I agree" grants for
the ticked scopes.  What the consent dialog says optin does (records, exports, keeps, never records)
is written by :func:`agent.promises.promises` from the study's own policy; text from the study file
is shown through :func:`agent.untrusted_text.visible`.  Scopes start unticked: consent is something
the volunteer does, not something they fail to undo.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from agent.consent import Receipt
from agent.paths import Dirs, display_path
from agent.promises import SCOPE_LABELS, by_section, promises
from agent.study import Study
from agent.untrusted_text import shown_text, visible


@dataclass(frozen=True)
class ConsentView:
    """Everything the consent dialog shows, decided without a display."""

    window_title: str
    heading: str
    about: str  #: study id, consent version and contact
    notice: str | None  #: why consent is asked again (a new version, a changed study, another study), or None
    #: the study's text as shown: without its surrounding blank lines, editor line wraps joined
    #: (:func:`reflow`), hidden characters shown
    consent_text: str
    text_sha256: str  #: SHA-256 of the study's consent text as the study file has it
    consent_sha256: str  #: SHA-256 of the study's terms (agent.study.Study.terms): what "I agree" binds
    #: (heading, sentences) from agent.promises: what is recorded, exported, kept, never recorded
    sections: tuple[tuple[str, tuple[str, ...]], ...]
    scopes: tuple[tuple[str, str], ...]  #: (scope, label), in the study's order; all start unticked


@dataclass(frozen=True)
class GrantRequest:
    """What :func:`agent.consent.grant` gets when the volunteer presses "I agree"."""

    consent_sha256: str  #: the terms' SHA-256 of the view shown
    scopes: tuple[str, ...]  #: never empty


@dataclass(frozen=True)
class WithdrawView:
    """What the withdrawal dialog shows."""

    window_title: str
    heading: str
    body: str
    delete_label: str


@dataclass(frozen=True)
class WithdrawChoice:
    """The volunteer withdrew consent; ``delete``: they also asked to delete all local recordings."""

    delete: bool
    had_consent: bool


#: A line at least this long that is followed by more text of the same paragraph was wrapped by the
#: author's editor, not ended on purpose (:func:`reflow`).
WRAPPED_LINE = 50
_LIST_ITEM = re.compile(r"\s|[-*•–]\s|\d{1,3}[.)]\s|[A-Za-z][.)]\s")


def reflow(text: str) -> str:
    """Join the lines an editor wrapped, so the text wraps to the dialog's width instead.

    A line of :data:`WRAPPED_LINE` characters or more is joined with the next one unless the next
    one is empty, indented or starts a list item; shorter lines (an address, a signature) and
    paragraphs stay as written.  Only how the text is shown changes: its SHA-256 is the file's.
    """
    lines = text.split("\n")
    out = [lines[0]] if lines else []
    for prev, line in itertools.pairwise(lines):
        if len(prev) >= WRAPPED_LINE and line.strip() and not _LIST_ITEM.match(line):
            out[-1] = out[-1].rstrip() + " " + line.lstrip()
        else:
            out.append(line)
    return "\n".join(out)


def consent_view(
    study: Study, d: Dirs, receipt: Receipt | None = None, *, home: Path | None = None
) -> ConsentView:
    """What the consent dialog shows for ``study``.

    The sentences about what is recorded, exported, kept and never recorded come from
    :func:`agent.promises.promises`, written from the study's own policy.

    :param receipt: the consent on record, if any (a notice says why consent is asked again).
    :param home: the home directory paths are shown relative to (default: the user's).
    """
    notice = None
    why = receipt.renewal_reason(study) if receipt is not None else None
    if why is not None:
        if receipt is not None and receipt.study_id != study.id:
            notice = f"{why[0].upper()}{why[1:]} before; agreeing here replaces it."
        else:
            notice = f"{why[0].upper()}{why[1:]}. optin records nothing until you agree again."
    name = visible(study.name)
    return ConsentView(
        window_title=f"optin — consent to {visible(study.name, limit=80)}",
        heading=name,
        about=(
            f"Study {visible(study.id)}, consent version {visible(study.consent_version)}. "
            f"Contact: {visible(study.contact)}"
        ),
        notice=notice,
        consent_text=reflow(shown_text(study.consent_text)),
        text_sha256=study.text_sha256,
        consent_sha256=study.terms_sha256,
        sections=by_section(promises(study, data_dir=display_path(d.data, home))),
        scopes=tuple((s, SCOPE_LABELS.get(s, s)) for s in study.scopes),
    )


def grant_request(view: ConsentView, ticked: Iterable[str]) -> GrantRequest | None:
    """What to grant for the ticked scopes (in the study's order), or None: nothing ticked, no consent.

    Scopes the view does not offer are ignored.  Never returns an empty scope
    list: :func:`agent.consent.grant` would read that as "every scope".
    """
    chosen = set(ticked)
    scopes = tuple(s for s, _label in view.scopes if s in chosen)
    if not scopes:
        return None
    return GrantRequest(consent_sha256=view.consent_sha256, scopes=scopes)


def withdraw_view(receipt: Receipt | None, d: Dirs, *, home: Path | None = None) -> WithdrawView:
    """What the withdrawal dialog shows."""
    if receipt is not None:
        body = (
            f"You agreed to “{visible(receipt.study_name, limit=80)}” (version "
            f"{visible(receipt.consent_version, limit=40)}). If you withdraw, "
            "optin stops recording within a second and records nothing until you agree again."
        )
    else:
        body = "You have not agreed to any study; optin records nothing."
    return WithdrawView(
        window_title="optin — withdraw consent",
        heading="Withdraw consent? Capture stops.",
        body=body,
        delete_label=(
            f"Also delete all my local recordings (everything in {display_path(d.data, home)}; "
            "this cannot be undone)"
        ),
    )


def summary_parts(view: ConsentView) -> list[tuple[str, str]]:
    """What optin does in this study, as (text, tag) pieces for :func:`agent.ui.tk_toolkit.text_box`."""
    parts: list[tuple[str, str]] = []
    for n, (heading, lines) in enumerate(view.sections):
        parts.append((("" if n == 0 else "\n") + heading + "\n", "heading"))
        parts.extend((f"• {line}\n", "item") for line in lines)
    return parts
