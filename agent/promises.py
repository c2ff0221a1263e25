"""What optin tells the volunteer it does, written from the study's own policy (P1).

The consent dialog, ``optin consent show``, the README and the volunteer guide say what optin
records, what an export holds, where recordings are kept and what is never recorded.  Most of
that depends on the study: its scopes, ``[redaction]`` (``ocr``, ``typed_text``,
``window_titles``), ``[retention]`` (``days``, ``max_gib``, ``after_export``), ``[capture]``
(idle pause, pause hotkey), ``[[deny]]`` rules and ``[tasks]`` (the mode and how many
``[[task]]`` entries).  So every such sentence is written here, by the pure function
:func:`promises`, from the study itself, never by hand for one policy and then shown for another.
Each sentence has a stable key (``export.typed_text.drop``...); tests/unit/test_consent_promises.py
names, for every key, the tests that hold the behaviour the sentence states, and checks that the
docs show exactly what this module writes for a study with optin's defaults.

A consent receipt binds every field these sentences are written from
(:meth:`agent.study.Study.terms`): a study file that changes one of them needs a new agreement.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from agent.keyboard.hotkey import hotkey_words
from agent.study import Study
from agent.untrusted_text import visible

#: The sections, in the order they are shown, with their headings.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("recorded", "What is recorded"),
    ("export", "What an export holds"),
    ("kept", "Where it is kept"),
    ("never", "What is never recorded"),
)

#: At most this many of the study's deny-rule labels are named (then "and N more"), each cut to at
#: most MAX_LABEL_CHARS characters: the consent text must keep its room on a small screen.
MAX_DENY_LABELS = 4
MAX_LABEL_CHARS = 48

#: What the detectors find in text (agent/redact/detectors, docs/redaction.md), in words.
FINDS = (
    "e-mail addresses, phone, card and bank account (IBAN) numbers, US social security numbers, "
    "passwords in web addresses, access tokens, private keys and what follows a “password:” or "
    "“token:” prompt"
)
#: This computer's names (agent/redact/local_names.py), in words.
LOCAL_NAMES = "this computer's name, your user name, home folder and network card (MAC) addresses"

#: What ticking each scope lets the study record, in plain words (the dialog's checkboxes).  Keys
#: ``scope.<name>`` in tests/unit/test_consent_promises.py name the tests that hold them.
SCOPE_LABELS = {
    "pointer": "Pointer: mouse moves (at most 50 a second), clicks and scrolls, with their positions",
    "keyboard": "Keyboard: the keys you press and release (the character, the key's name and the "
    "modifiers held)",
    "screen": "Screen: screenshots of the whole screen (every monitor) around each click, scroll, shortcut "
    "or window change and when you start typing; only protected windows are greyed out",
    "window_titles": "Window titles: which window has the focus (its title, application and position)",
}


@dataclass(frozen=True)
class Promise:
    """One sentence the volunteer reads, the section it is in, and its key (the test that holds it)."""

    key: str
    section: str
    text: str


def promises(study: Study, *, data_dir: str | None = None) -> tuple[Promise, ...]:
    """Everything the volunteer is told about what ``study`` records, exports, keeps and never records.

    :param data_dir: where recordings are kept, as the volunteer reads it (``~/.local/share/optin``);
        None: "on this computer".
    """
    found = [*_recorded(study), *_export(study), *_kept(study, data_dir), *_never(study)]
    return tuple(p for p in found if p is not None)


def _recorded(study: Study) -> list[Promise | None]:
    return [
        Promise("recorded.scopes", "recorded", "Only the items you agree to, and only for this study."),
        Promise(
            "recorded.indicator",
            "recorded",
            "Only while optin's tray icon is red; nothing while it is amber (paused), and nothing at all "
            "if the icon cannot be shown.",
        ),
        Promise("recorded.pausing", "recorded", _pausing(study)),
        _tasks(study),
        _elements(study),
    ]


def _elements(study: Study) -> Promise | None:
    """The UI element under each action (agent/recorder_elements.py); None without pointer and keyboard."""
    scopes = set(study.scopes)
    if not scopes & {"pointer", "keyboard"}:
        return None
    actions = " and ".join(
        what for scope, what in (("pointer", "click and scroll"), ("keyboard", "typing")) if scope in scopes
    )
    label = (
        "and its label (such as “Sign in”)"
        if "window_titles" in scopes
        else "but not its label (that needs window titles)"
    )
    return Promise(
        "recorded.elements." + ("labels" if "window_titles" in scopes else "no_labels"),
        "recorded",
        f"For each {actions}: the kind of control it went to (a button, a text field…), its state and "
        f"where it is on the screen, {label}, as the system's accessibility interface tells optin; never "
        "what a field contains, and nothing of protected windows or optin's own.",
    )


def _tasks(study: Study) -> Promise | None:
    """What the study asks the volunteer to do (``[tasks] mode``, ``[[task]]``); None without tasks."""
    count = len(study.tasks)
    listed = f"from its list ({'1 task' if count == 1 else f'{count} tasks'})"
    own = "that you describe in your own words"
    texts = {
        "list": f"This study asks you to do tasks {listed}.",
        "free": f"This study asks you to do tasks {own}.",
        "both": f"This study asks you to do tasks {listed}, or tasks {own}.",
    }
    text = texts.get(study.tasks_mode)
    if text is None:
        return None
    done = (
        f", or end it as done with {hotkey_words(study.task_done_hotkey)}"
        if study.task_done_hotkey and "keyboard" in study.scopes
        else ""
    )
    how = (
        f" You start and end each task from the tray menu (“Start a task…”) or with `optin task`{done}; "
        "giving a task up deletes its recording from this computer."
    )
    return Promise(f"recorded.tasks.{study.tasks_mode}", "recorded", text + how)


def _export(study: Study) -> list[Promise | None]:
    scopes = set(study.scopes)
    out: list[Promise | None] = [
        Promise(
            "export.upload",
            "export",
            "Nothing leaves by itself: a recording leaves only once you have approved it, and an export is "
            "sent only when you choose to upload it (“Upload to the study” after an export, or `optin "
            f"upload`), only to the study's intake at {visible(study.upload_url, limit=200)}, encrypted "
            "to the study's key; the recorder itself has no network code.",
        )
        if study.upload_url
        else Promise(
            "export.by_you",
            "export",
            "Nothing leaves by itself: a recording leaves only once you have approved it, and you hand "
            "over the encrypted export yourself; the recorder has no network code.",
        )
    ]
    named = "keyboard" in scopes and study.redaction_typed_text != "drop"  # FINDS listed once, first
    if "keyboard" in scopes:
        out.append(
            Promise(
                "export.typed_text.drop",
                "export",
                "No typed character and no pasted text: only when keys were pressed, and which of them "
                "type no character (Enter, Tab, arrows, modifiers).",
            )
            if study.redaction_typed_text == "drop"
            else Promise(
                "export.typed_text.redact",
                "export",
                f"What you type and paste, except {FINDS}: each of these becomes a marker such as "
                "[EMAIL], without its characters or their timing.",
            )
        )
        out.append(terminal_passwords(study))
    if "window_titles" in scopes:
        finds = "the same finds" if named else FINDS
        out.append(
            Promise(
                "export.window_titles.drop",
                "export",
                "No window titles and no labels of controls: only which application had the focus, "
                "and where.",
            )
            if study.redaction_window_titles == "drop"
            else Promise(
                "export.window_titles.redact",
                "export",
                f"Window titles and the labels of controls, with {finds} replaced by markers.",
            )
        )
    if scopes & {"keyboard", "window_titles"}:
        out.append(
            Promise(
                "export.local_names",
                "export",
                f"In exported text, {LOCAL_NAMES} are replaced by markers too.",
            )
        )
    if "screen" in scopes:
        out.append(Promise(f"export.ocr.{study.redaction_ocr}", "export", _screens(study, named=named)))
    if scopes & {"keyboard", "window_titles", "screen"}:
        out.append(
            Promise(
                "export.not_recognised",
                "export",
                "Names, postal addresses and other private words are not recognised: look for them in "
                "the review window and cut what should not leave.",
            )
        )
    return out


def _kept(study: Study, data_dir: str | None) -> list[Promise | None]:
    where = f"in {visible(data_dir)}" if data_dir else "on this computer"
    keys = ", ".join(shorten_recipient(r) for r in study.recipients)
    owner = "the study's key" if len(study.recipients) == 1 else "the study's keys"
    days = _days(study.retention_days)
    return [
        Promise("kept.stored", "kept", f"Encrypted with your key, {where}."),
        Promise("kept.readers", "kept", f"Exports can be read only with {owner}: {keys}."),
        Promise(
            "kept.retention",
            "kept",
            f"Deleted once {days} old (when optin starts, and every minute while it records); the oldest "
            f"go sooner once all recordings together pass {study.retention_max_gib:g} GiB.",
        ),
        Promise(
            "kept.after_export.delete",
            "kept",
            "A recording you export is deleted from this computer (crypto-shredded) as soon as its "
            "export file is written.",
        )
        if study.retention_after_export == "delete"
        else Promise(
            "kept.after_export.keep",
            "kept",
            f"A recording you export stays here until you delete it or it is {days} old.",
        ),
        _after_upload(study, days),
    ]


def _after_upload(study: Study, days: str) -> Promise | None:
    """What happens here once the study confirmed it stored an upload (nothing to say without an
    intake, or when an export already deletes the recording)."""
    if not study.upload_url or study.retention_after_export == "delete":
        return None
    if study.deletes_after_upload:
        return Promise(
            "kept.after_upload.delete",
            "kept",
            "Once the study confirms it stored an upload, the recording and its export file are deleted "
            "from this computer (crypto-shredded); not before.",
        )
    return Promise(
        "kept.after_upload.keep",
        "kept",
        f"A recording you upload stays here until you delete it or it is {days} old.",
    )


def _never(study: Study) -> list[Promise | None]:
    deny = _study_deny(study)
    return [
        Promise("never.before_consent", "never", "Anything before you agree, or after you withdraw consent."),
        Promise(
            "never.paused",
            "never",
            "Anything while paused: pause stops the keyboard and mouse hooks and the screen grabber "
            "themselves.",
        ),
        Promise(
            "never.default_deny",
            "never",
            "Password managers, private browser windows, password dialogs (pinentry, polkit, "
            "ssh-askpass…) and screen lockers: their input is left out and they are greyed out in "
            "screenshots.",
        ),
        Promise("never.study_deny", "never", deny) if deny else None,
        Promise(
            "never.own_ui", "never", "On Linux (X11), what you do on optin's own tray icon, menu and windows."
        ),
        Promise(
            "never.secure_input",
            "never",
            "Keys typed while the system says a password field has the keyboard (Windows, macOS, and on "
            "Linux the programs that report it through accessibility).",
        )
        if "keyboard" in study.scopes
        else None,
    ]


def terminal_passwords(study: Study) -> Promise | None:
    """What exports do with a password typed in a terminal; None when no typed character leaves.

    The one place this is said: it must match agent/redact/terminal.py.  With frames that OCR
    read, a terminal field the screen never showed (echo off, as at a password prompt) or that
    answers a prompt asking for a password, passphrase, PIN, secret or token is a password;
    without them, only the command rule (a one-word line right after ``sudo``, ``ssh``,
    ``passwd``...).  Either way a terminal is known by its window's application class, which
    a session stores only with the window-titles scope.
    """
    if "keyboard" not in study.scopes or study.redaction_typed_text == "drop":
        return None
    key = "export.terminal_passwords"
    if "window_titles" not in study.scopes:
        return Promise(
            f"{key}.no_titles",
            "export",
            "A password typed in a terminal is not recognised as one: this study does not record window "
            "titles, which is how optin knows a window is a terminal. Pause before typing one.",
        )
    command = "a one-word line right after a command that asks for a password (sudo, ssh, passwd…)"
    kept = (
        "This needs window titles too (they tell optin a window is a terminal); the line itself is kept, "
        "encrypted, on this computer."
    )
    if "screen" not in study.scopes or study.redaction_ocr == "off":
        return Promise(f"{key}.command", "export", f"In a terminal, {command} leaves as [PASSWORD]. {kept}")
    ocr = " read with OCR" if study.redaction_ocr == "required" else " read with OCR, when it is installed"
    return Promise(
        f"{key}.screen",
        "export",
        "A line typed in a terminal that never showed on the screen (as at a password prompt), or that "
        "answers a prompt for a password, passphrase, PIN, secret or token, leaves as [PASSWORD] (the "
        f"screen{ocr}); without the screen, only {command}. {kept}",
    )


def by_section(found: Iterable[Promise]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``found`` grouped under the headings of :data:`SECTIONS` (empty sections left out)."""
    listed = list(found)
    out = []
    for section, heading in SECTIONS:
        texts = tuple(p.text for p in listed if p.section == section)
        if texts:
            out.append((heading, texts))
    return tuple(out)


def markdown(found: Sequence[Promise]) -> str:
    """The promises as Markdown: a bold heading and a bullet list per section."""
    parts = []
    for heading, texts in by_section(found):
        parts.append(f"**{heading}**\n\n" + "".join(f"- {text}\n" for text in texts))
    return "\n".join(parts)


def shorten_recipient(recipient: str) -> str:
    """An age public key shortened for reading: ``age1abcd…wxyz``."""
    recipient = visible(recipient)
    if len(recipient) <= 16:
        return recipient
    return f"{recipient[:8]}…{recipient[-4:]}"


def _days(days: int) -> str:
    return "1 day" if days == 1 else f"{days} days"


def _pausing(study: Study) -> str:
    key = ""
    if study.pause_hotkey and "keyboard" in study.scopes:
        key = f" or with {hotkey_words(study.pause_hotkey)} (when the keyboard is recorded)"
    idle = ""
    if study.idle_pause_minutes > 0:
        minutes = study.idle_pause_minutes
        idle = f" and after {minutes} minute{'' if minutes == 1 else 's'} without input"
    return (
        f"You can pause at any time from the tray{key}; optin also pauses by itself while the screen is "
        f"locked{idle}."
    )


def _screens(study: Study, *, named: bool) -> str:
    ocr = study.redaction_ocr
    finds = "the same finds" if named else FINDS
    if "keyboard" in study.scopes:
        finds = f"{finds}, and what you typed that was hidden,"
    if ocr == "required":
        return (
            f"Screenshots with {finds} greyed out: optin reads the text of every exported screenshot "
            "(OCR), leaves out one it cannot read, and exports nothing without OCR."
        )
    if ocr == "if-available":
        return (
            f"Screenshots with {finds} greyed out if OCR (tesseract) is installed on this computer, "
            "otherwise as your screen showed them (protected windows greyed out); the review window "
            "shows which."
        )
    return (
        "Screenshots as your screen showed them, only protected windows greyed out: pause or close "
        "private things first."
    )


def _study_deny(study: Study) -> str | None:
    labels = [" ".join(visible(rule.label).split()) for rule in study.deny]
    labels = [
        label if len(label) <= MAX_LABEL_CHARS else label[: MAX_LABEL_CHARS - 1] + "…"
        for label in labels
        if label
    ]
    if not labels:
        return None
    if len(labels) > MAX_DENY_LABELS:
        labels = [*labels[:MAX_DENY_LABELS], f"and {len(labels) - MAX_DENY_LABELS} more"]
    return (
        "Windows this study excludes (input left out, greyed out in screenshots): " + "; ".join(labels) + "."
    )


__all__ = [
    "SCOPE_LABELS",
    "SECTIONS",
    "Promise",
    "by_section",
    "markdown",
    "promises",
    "shorten_recipient",
    "terminal_passwords",
]
