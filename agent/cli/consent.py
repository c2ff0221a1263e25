"""``optin consent show | grant | withdraw``: consent to the installed study, from the terminal
(``optin run`` asks for it in the consent dialog instead)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from agent.cli.output import print_json
from agent.cli.recording import running_status
from agent.errors import OptinError, UsageError

if TYPE_CHECKING:
    from agent.paths import Dirs
    from agent.study import Study

__all__ = ["cmd_consent"]


def cmd_consent(args: argparse.Namespace) -> int:
    from agent import consent
    from agent.paths import dirs
    from agent.study import install_study, installed_study
    from agent.untrusted_text import visible

    d = dirs()
    study = install_study(d, Path(args.study)) if getattr(args, "study", None) else installed_study(d)
    if args.action == "show":
        _consent_show(d, study, as_json=args.json)
        return 0
    if args.action == "grant":
        if not args.accept_text_sha256:
            msg = "consent grant needs --accept-text-sha256 HASH, the consent sha256 `consent show` prints"
            raise UsageError(msg)
        receipt = consent.grant(d, study, args.accept_text_sha256, args.scopes)
        if args.json:
            print_json(receipt.to_json())
        else:
            what = f"{visible(study.id)} version {visible(study.consent_version)}"
            print(f"consent given to {what}: {', '.join(receipt.scopes)}")
        return 0
    had = consent.withdraw(d)
    try:
        running = running_status(d) is not None
    except OptinError:  # something answers, if strangely: the withdrawal is done either way
        running = True
    if not had:
        print("no consent was given; nothing to withdraw")
    elif running:
        print("consent withdrawn; the running agent stops recording within a second")
    else:
        print("consent withdrawn; optin will not record")
    return 0


def _consent_show(d: Dirs, study: Study, *, as_json: bool) -> None:
    """``optin consent show``: the study's text, what optin does in it (agent.promises), hashes, state.

    Everything from the study file is printed through ``visible()``: none of it acts on the terminal.
    """
    from agent import consent
    from agent.paths import display_path
    from agent.promises import by_section, promises
    from agent.untrusted_text import shown_text, visible

    receipt = consent.current_receipt(d)
    state = consent.state(receipt, study)
    why = receipt.renewal_reason(study) if receipt is not None else None
    said = promises(study, data_dir=display_path(d.data))
    if as_json:
        print_json(
            {
                "study": study.id,
                "name": study.name,
                "contact": study.contact,
                "consent_version": study.consent_version,
                "text": study.consent_text,
                "text_sha256": study.text_sha256,
                "consent_sha256": study.terms_sha256,
                "terms": study.terms(),
                "scopes": list(study.scopes),
                "recipients": list(study.recipients),
                "promises": [{"key": p.key, "section": p.section, "text": p.text} for p in said],
                "granted": state == consent.GIVEN,
                "state": state,
                "renewal_reason": why,
            }
        )
        return
    lines = [
        f"Study:    {visible(study.name)} ({visible(study.id)}), "
        f"consent version {visible(study.consent_version)}",
        f"Contact:  {visible(study.contact)}",
        f"Captures: {', '.join(study.scopes)}",
        f"Exports readable only by: {', '.join(visible(r) for r in study.recipients)}",
        "",
        shown_text(study.consent_text),
    ]
    for heading, texts in by_section(said):
        lines += ["", heading, *(f"  - {text}" for text in texts)]
    lines += [
        "",
        f"consent sha256: {study.terms_sha256} "
        "(the text and the study settings the list above is written from)",
        f"text sha256: {study.text_sha256}",
    ]
    if receipt is not None and state == consent.GIVEN:
        lines.append(f"consent: GIVEN ({', '.join(receipt.scopes)}; {visible(receipt.granted_at)})")
    elif state == consent.NEEDS_RENEWAL:
        lines.append(f"consent: NEEDS RENEWAL: {why}; nothing is recorded until you agree again")
    else:
        lines.append("consent: not given")
    if state != consent.GIVEN:
        lines.append(f"To agree: optin consent grant --accept-text-sha256 {study.terms_sha256}")
    print("\n".join(lines))
