"""The consent dialog and the withdrawal dialog (Tk), each in a process of its own.

``python -m agent.ui.consent_dialog`` shows the installed study's consent
(``--study FILE``: that file instead, not installed) and waits for the
volunteer:

* **I agree** (enabled only once at least one scope is ticked): records the
  consent with :func:`agent.consent.grant` for exactly the ticked scopes and the
  consent SHA-256 of what was shown (the text and every term of the study, recipients
  included), prints ``{"agreed": true, "scopes": [...]}`` and exits 0;
* **Not now**, Escape or closing the window: prints ``{"agreed": false}``, exits 1;
* no display (or no Tk): one line on stderr saying the fix, exit 2.

``--withdraw`` shows "Withdraw consent? Capture stops." with a box "Also delete
all my local recordings": **Withdraw** removes the receipt with
:func:`agent.consent.withdraw`, prints ``{"withdrawn": true, "delete": bool,
"had_consent": bool}`` and exits 0; **Cancel**/Escape/close prints
``{"withdrawn": false}`` and exits 1.  Deleting the recordings is the caller's
job (the agent must stop first).

``--confirm`` asks a yes/no question read as JSON from stdin (``{"title",
"message", "yes", "no"}``; the focus starts on "no"), prints ``{"confirmed":
bool}`` and exits 0 (yes) or 1; :func:`confirm` runs it (the tray's "Opt out").

Tk runs in its own process because it must not share one with the GTK tray;
:func:`ask_consent`, :func:`ask_withdraw` and :func:`confirm` run that process
and return what the volunteer chose.  What the dialogs say is decided by the pure functions
:func:`consent_view`, :func:`grant_request` and :func:`withdraw_view`; the Tk
code only renders them.  What the consent dialog says optin does (records, exports, keeps,
never records) is written by :func:`agent.promises.promises` from the study's own policy;
text from the study file is shown through :func:`agent.untrusted_text.visible`.  Scopes start
unticked: consent is something the volunteer does, not something they fail to undo.

``OPTIN_DIALOG_DEBUG_GEOMETRY=1`` prints the widgets' root coordinates on stderr
once the window is shown (for the real-display tests).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.consent import Receipt
from agent.errors import EnvironmentProblem, OptinError, UsageError
from agent.paths import Dirs, display_path, optin_command
from agent.promises import SCOPE_LABELS, by_section, promises
from agent.study import Study
from agent.untrusted_text import shown_text, visible

if TYPE_CHECKING:
    import tkinter as tk
    from tkinter import ttk

#: Exit codes of the dialog process.
EXIT_YES = 0
EXIT_NO = 1
EXIT_CANNOT = 2
#: ``optin _dialog ...`` runs this module's :func:`main` in a process of its own (agent/__main__.py).
DIALOG_COMMAND = "_dialog"

#: Environment variable: print the widgets' root coordinates on stderr once shown.
DEBUG_GEOMETRY_ENV = "OPTIN_DIALOG_DEBUG_GEOMETRY"

#: The Debian/Ubuntu package that has Tk for the system Python.
TK_PACKAGE = "python3-tk"


# --- what the dialogs show (pure) -----------------------------------------------------------------


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


# --- running the dialog process from the agent --------------------------------------------------


def _run_dialog(
    args: list[str],
    d: Dirs | None,
    timeout: float | None,
    on_started: Callable[[int], None] | None,
    request: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]] | None:
    """Run the dialog process; (exit code, its JSON answer), or None when it timed out.

    :param d: the directories the dialog must use (checked: the process finds them itself).
    :param request: a JSON object for its stdin (``--confirm``).
    """
    from agent.paths import dirs as current_dirs

    if d is not None and d != current_dirs():
        msg = "the consent dialog uses the directories of OPTIN_HOME / the platform; pass paths.dirs()"
        raise UsageError(msg)
    proc = subprocess.Popen(
        optin_command(DIALOG_COMMAND, *args),
        stdin=subprocess.DEVNULL if request is None else subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        if on_started is not None:
            on_started(proc.pid)
        out, err = proc.communicate(None if request is None else json.dumps(request), timeout=timeout)
    except BaseException as exc:  # timed out, or the caller's callback failed: no dialog left behind
        proc.kill()
        proc.communicate()
        if isinstance(exc, subprocess.TimeoutExpired):
            return None
        raise
    if proc.returncode not in (EXIT_YES, EXIT_NO):
        lines = [line for line in err.splitlines() if line.strip()]
        msg = lines[-1] if lines else f"the dialog failed (exit code {proc.returncode})"
        raise EnvironmentProblem(msg.removeprefix("optin: "))
    lines = [line for line in out.splitlines() if line.strip()]
    try:
        answer = json.loads(lines[-1]) if lines else {}
    except ValueError:
        answer = {}
    return proc.returncode, answer if isinstance(answer, dict) else {}


def confirm(
    title: str,
    message: str,
    *,
    yes: str = "OK",
    no: str = "Cancel",
    timeout: float | None = None,
    on_started: Callable[[int], None] | None = None,
) -> bool:
    """Ask a yes/no question in a dialog of its own process (Escape, closing or a timeout: no).

    The focus starts on ``no``: use it for questions whose "yes" cannot be undone.
    Blocks: call it off the GUI thread.

    :raises EnvironmentProblem: the dialog could not be shown.
    """
    request = {"title": title, "message": message, "yes": yes, "no": no}
    result = _run_dialog(["--confirm"], None, timeout, on_started, request)
    return result is not None and result[0] == EXIT_YES and result[1].get("confirmed") is True


def ask_consent(
    d: Dirs,
    study: Study,
    *,
    timeout: float | None = None,
    on_started: Callable[[int], None] | None = None,
) -> Receipt | None:
    """Show the consent dialog for the installed study and wait for the volunteer.

    Blocks: call it off the GUI thread.  ``study`` must be the installed study
    (the dialog process reads it again); the result is checked against it.

    :param timeout: seconds before the dialog is closed as "Not now".
    :param on_started: called with the dialog's PID once it runs (e.g. to treat its
        windows as optin's own).
    :returns: the new receipt, or None (Not now, closed, timed out).
    :raises EnvironmentProblem: the dialog could not be shown (no display, no Tk); the message says why.
    """
    from agent import consent

    result = _run_dialog([], d, timeout, on_started)
    if result is None or result[0] != EXIT_YES:
        return None
    receipt = consent.current_receipt(d)
    return receipt if receipt is not None and receipt.covers(study) else None


def ask_withdraw(
    d: Dirs, *, timeout: float | None = None, on_started: Callable[[int], None] | None = None
) -> WithdrawChoice | None:
    """Show the withdrawal dialog and wait; the consent is already withdrawn when this returns a choice.

    Blocks: call it off the GUI thread.  If the choice says ``delete``, deleting
    the local recordings is the caller's job.

    :returns: the choice, or None (Cancel, closed, timed out: nothing changed).
    :raises EnvironmentProblem: the dialog could not be shown.
    """
    result = _run_dialog(["--withdraw"], d, timeout, on_started)
    if result is None or result[0] != EXIT_YES or result[1].get("withdrawn") is not True:
        return None
    return WithdrawChoice(
        delete=result[1].get("delete") is True, had_consent=result[1].get("had_consent") is True
    )


# --- the Tk views ---------------------------------------------------------------------------------

_FAMILY = "DejaVu Sans"
#: The consent text box never shrinks below this many lines.
TEXT_MIN_LINES = 6
_SIZE = 10
_PAD = 12


def _make_root(title: str) -> tk.Tk:
    """A Tk root with readable fonts; raises EnvironmentProblem without Tk or a display."""
    try:
        import tkinter as tk
        from tkinter import font, ttk
    except ImportError as exc:
        msg = (
            f"cannot show the dialog: Python has no Tk ({exc}). "
            f"Fix: sudo apt-get install {TK_PACKAGE} (or your system's Tk package for Python)"
        )
        raise EnvironmentProblem(msg) from exc
    try:
        root = tk.Tk(className="optin")
    except tk.TclError as exc:
        where = os.environ.get("DISPLAY")
        why = f"cannot connect to display {where!r}" if where else "no graphical display (DISPLAY is not set)"
        msg = (
            f"cannot show the dialog: {why} ({exc}). Fix: run it in your desktop session, or use "
            "`optin consent show` and `optin consent grant` in a terminal"
        )
        raise EnvironmentProblem(msg) from exc
    root.title(title)
    family = _FAMILY if _FAMILY in font.families(root) else None
    for name in ("TkDefaultFont", "TkTextFont", "TkMenuFont", "TkHeadingFont", "TkCaptionFont"):
        named = font.nametofont(name, root)
        if family:
            named.configure(family=family)
        named.configure(size=_SIZE)
    style = ttk.Style(root)
    if "clam" in style.theme_names():
        style.theme_use("clam")  # clear focus rings and a visibly disabled button
    style.configure("TCheckbutton", indicatorsize=14, indicatormargin=(0, 0, 6, 0))
    style.configure("Heading.TLabel", font=(family or "TkDefaultFont", _SIZE + 5, "bold"))
    style.configure("Section.TLabel", font=(family or "TkDefaultFont", _SIZE + 1, "bold"))
    style.configure("Notice.TLabel", foreground="#8a4b00")
    style.configure("Small.TLabel", foreground="#555555")
    return root


def _bind_keys(root: tk.Tk, on_escape: Callable[[], None]) -> None:
    """Escape answers no; Enter (and keypad Enter) presses the focused button; Space ticks a box.

    There is deliberately no default button: Enter never agrees unless "I agree" has the focus.
    """
    from tkinter import ttk

    def activate(_event: object) -> str:
        w = root.focus_get()
        if isinstance(w, ttk.Button):
            w.invoke()
        return "break"

    root.bind("<Escape>", lambda _e: on_escape())
    root.bind("<Return>", activate)
    root.bind("<KP_Enter>", activate)
    root.protocol("WM_DELETE_WINDOW", on_escape)


def _wrapping(label: ttk.Label, parent: tk.Misc, margin: int = 0) -> None:
    """Wrap ``label``'s text to its parent's width as the window is resized."""
    parent.bind("<Configure>", lambda e: label.configure(wraplength=max(200, e.width - margin)), add="+")


def _wrapping_style(style: str, parent: tk.Misc, margin: int = 0) -> None:
    """Wrap the text of every widget of ``style`` (checkbuttons) to ``parent``'s width."""
    from tkinter import ttk

    styles = ttk.Style(parent)
    parent.bind(
        "<Configure>", lambda e: styles.configure(style, wraplength=max(200, e.width - margin)), add="+"
    )


def _report_geometry(root: tk.Tk, widgets: dict[str, tk.Misc]) -> None:
    """With OPTIN_DIALOG_DEBUG_GEOMETRY=1, print each widget's centre (root coordinates) on stderr."""
    if os.environ.get(DEBUG_GEOMETRY_ENV) != "1":
        return

    def report() -> None:
        root.update_idletasks()
        out = {
            "window": [root.winfo_rootx(), root.winfo_rooty(), root.winfo_width(), root.winfo_height()],
            "widgets": {
                name: [w.winfo_rootx() + w.winfo_width() // 2, w.winfo_rooty() + w.winfo_height() // 2]
                for name, w in widgets.items()
            },
        }
        sys.stderr.write("optin-dialog-geometry " + json.dumps(out) + "\n")
        sys.stderr.flush()

    def on_map(_e: object) -> None:
        root.unbind("<Map>")
        root.after(300, report)  # after the window manager has placed it

    root.bind("<Map>", on_map)


def _show_up(root: tk.Tk, focus: tk.Misc) -> None:
    """Bring the window to the front with the keyboard focus on ``focus``."""

    def take_focus() -> None:
        root.focus_force()
        focus.focus_set()

    root.update_idletasks()
    root.deiconify()
    root.lift()
    root.after(100, take_focus)


def _label(parent: tk.Misc, text: str, row: int, *, style: str = "TLabel", pady: Any = 0) -> ttk.Label:
    """A left-aligned label in column 0 of ``parent``'s grid, wrapped to ``parent``'s width."""
    from tkinter import ttk

    label = ttk.Label(parent, text=text, style=style)
    label.grid(row=row, column=0, sticky="w", pady=pady)
    _wrapping(label, parent)
    return label


def _text_box(
    parent: tk.Misc, parts: Iterable[tuple[str, str]], *, height: int = 8
) -> tuple[ttk.Frame, tk.Text]:
    """A read-only, scrollable, keyboard-focusable Text of ``parts`` ((text, tag) pairs), in a frame to grid.

    Tags: ``heading`` (bold), ``item`` (a bullet with a hanging indent), "" (plain).
    """
    import tkinter as tk
    from tkinter import font as tkfont
    from tkinter import ttk

    box = ttk.Frame(parent)
    box.columnconfigure(0, weight=1)
    box.rowconfigure(0, weight=1)
    widget = tk.Text(
        box,
        wrap="word",
        height=height,
        width=40,
        padx=8,
        pady=6,
        relief="solid",
        borderwidth=1,
        highlightthickness=2,
        highlightcolor="#3465a4",
        takefocus=1,  # in the Tab order, so the keyboard can scroll it (arrows, Page Up/Down)
        font="TkTextFont",
    )
    base = tkfont.nametofont("TkTextFont", widget)
    bold = base.copy()
    bold.configure(weight="bold")
    widget.tag_configure("heading", font=bold, spacing1=6, spacing3=2)
    widget.tag_configure("item", lmargin1=2, lmargin2=2 + base.measure("• "), spacing1=3)
    for text, tag in parts:
        widget.insert("end", text, (tag,) if tag else ())
    widget.configure(state="disabled")  # read-only
    scroll = ttk.Scrollbar(box, orient="vertical", command=widget.yview)
    widget.configure(yscrollcommand=scroll.set)
    widget.grid(row=0, column=0, sticky="nsew")
    scroll.grid(row=0, column=1, sticky="ns")
    return box, widget


def _reading(parent: tk.Misc, view: ConsentView) -> tuple[ttk.Frame, tk.Text, tk.Text]:
    """Side by side: the study's own text, and what optin does in this study (agent.promises)."""
    from tkinter import ttk

    reading = ttk.Frame(parent)
    reading.columnconfigure(0, weight=1, uniform="reading")
    reading.columnconfigure(1, weight=1, uniform="reading")
    reading.rowconfigure(1, weight=1)
    titles = ("Please read the study's consent text:", "What optin does in this study:")
    for col, title in enumerate(titles):
        heading = ttk.Label(reading, text=title, style="Section.TLabel")
        heading.grid(row=0, column=col, sticky="w", pady=(0, 4))
    box, text = _text_box(reading, [(view.consent_text, "")])
    box.grid(row=1, column=0, sticky="nsew", padx=(0, _PAD))
    summary_box, summary = _text_box(reading, _summary_parts(view))
    summary_box.grid(row=1, column=1, sticky="nsew")
    return reading, text, summary


def _summary_parts(view: ConsentView) -> list[tuple[str, str]]:
    """What optin does in this study, as (text, tag) pieces for :func:`_text_box`."""
    parts: list[tuple[str, str]] = []
    for n, (heading, lines) in enumerate(view.sections):
        parts.append((("" if n == 0 else "\n") + heading + "\n", "heading"))
        parts.extend((f"• {line}\n", "item") for line in lines)
    return parts


def _agree_bar(
    parent: tk.Misc,
    view: ConsentView,
    ticked: dict[str, tk.BooleanVar],
    on_agree: Callable[[GrantRequest], None],
) -> tuple[ttk.Frame, ttk.Button, ttk.Button]:
    """The hint, the text's hash and the buttons "Not now" / "I agree" (disabled while nothing is ticked)."""
    from tkinter import ttk

    bar = ttk.Frame(parent)
    bar.columnconfigure(0, weight=1)
    hint = ttk.Label(bar, style="Small.TLabel")
    hint.grid(row=0, column=0, sticky="w")
    sha = f"Consent SHA-256 (the text and the study settings shown): {view.consent_sha256[:16]}…"
    ttk.Label(bar, text=sha, style="Small.TLabel").grid(row=1, column=0, sticky="w")

    def agree() -> None:
        request = grant_request(view, [s for s, var in ticked.items() if var.get()])
        if request is not None:  # nothing ticked is no consent (the button is disabled then)
            on_agree(request)

    no_button = ttk.Button(bar, text="Not now", command=parent.winfo_toplevel().destroy)
    yes_button = ttk.Button(bar, text="I agree", command=agree)
    no_button.grid(row=0, column=1, rowspan=2, padx=(_PAD, 6))
    yes_button.grid(row=0, column=2, rowspan=2)

    def refresh(*_args: object) -> None:
        any_ticked = any(var.get() for var in ticked.values())
        yes_button.state(["!disabled"] if any_ticked else ["disabled"])
        hint.configure(
            text="Nothing is recorded until you press “I agree”."
            if any_ticked
            else "Tick at least one item to agree. Nothing is recorded until you do."
        )

    for var in ticked.values():
        var.trace_add("write", refresh)
    refresh()
    return bar, no_button, yes_button


def show_consent(view: ConsentView) -> GrantRequest | None:
    """Show the consent dialog; the volunteer's grant request, or None (Not now / Escape / closed)."""
    import tkinter as tk
    from tkinter import font as tkfont
    from tkinter import ttk

    root = _make_root(view.window_title)
    answer: list[GrantRequest] = []
    ticked = {scope: tk.BooleanVar(root, value=False) for scope, _label in view.scopes}

    outer = ttk.Frame(root, padding=_PAD)
    outer.pack(fill="both", expand=True)
    # Two parts, created top first (the Tab order: text, summary, scopes, buttons) but packed bottom
    # first: on a small screen the texts shrink, never the scopes or the buttons.
    frame = ttk.Frame(outer)
    bottom = ttk.Frame(outer)
    frame.pack(side="top", fill="both", expand=True)
    bottom.pack(side="bottom", fill="x", before=frame)
    frame.columnconfigure(0, weight=1)
    bottom.columnconfigure(0, weight=1)

    rows: list[tuple[str, str, Any]] = [
        (view.heading, "Heading.TLabel", 0),
        (view.about, "Small.TLabel", (2, 0)),
    ]
    if view.notice:
        rows.append((view.notice, "Notice.TLabel", (6, 0)))
    for row, (line, style, pady) in enumerate(rows):
        _label(frame, line, row, style=style, pady=pady)
    row = len(rows)
    reading, text, summary = _reading(frame, view)
    reading.grid(row=row, column=0, sticky="nsew", pady=(10, 0))
    # the texts take the spare height, and keep at least TEXT_MIN_LINES lines
    lines = tkfont.nametofont("TkTextFont", root).metrics("linespace") * TEXT_MIN_LINES + 20
    frame.rowconfigure(row, weight=1, minsize=lines)

    question = "What may this study record? Tick each item you agree to:"
    _label(bottom, question, 0, style="Section.TLabel", pady=(12, 4))
    boxes: dict[str, tk.Misc] = {}
    for row, (scope, label) in enumerate(view.scopes, start=1):
        check = ttk.Checkbutton(bottom, text=label, variable=ticked[scope], style="Wrap.TCheckbutton")
        check.grid(row=row, column=0, sticky="w", pady=1)
        boxes[f"scope:{scope}"] = check
    _wrapping_style("Wrap.TCheckbutton", bottom, 30)

    def on_agree(request: GrantRequest) -> None:
        answer.append(request)
        root.destroy()

    bar, no_button, yes_button = _agree_bar(bottom, view, ticked, on_agree)
    bar.grid(row=len(view.scopes) + 1, column=0, sticky="ew", pady=(12, 0))

    _bind_keys(root, root.destroy)
    root.minsize(640, 560)
    width = min(1180, root.winfo_screenwidth() - 40)  # two columns of about 80 characters
    height = min(740, root.winfo_screenheight() - 60)
    root.geometry(f"{width}x{height}")
    widgets = {"text": text, "summary": summary, **boxes, "not_now": no_button, "agree": yes_button}
    _report_geometry(root, widgets)
    _show_up(root, text)
    root.mainloop()
    return answer[0] if answer else None


def show_withdraw(view: WithdrawView) -> bool | None:
    """Show the withdrawal dialog: None (Cancel / Escape / closed), else whether to delete everything."""
    import tkinter as tk
    from tkinter import ttk

    root = _make_root(view.window_title)
    answer: list[bool] = []
    delete = tk.BooleanVar(root, value=False)

    frame = ttk.Frame(root, padding=_PAD + 4)
    frame.grid(row=0, column=0, sticky="nsew")
    root.columnconfigure(0, weight=1)
    root.rowconfigure(0, weight=1)
    frame.columnconfigure(0, weight=1)
    ttk.Label(frame, text=view.heading, style="Heading.TLabel").grid(row=0, column=0, sticky="w")
    body = ttk.Label(frame, text=view.body, wraplength=480)
    body.grid(row=1, column=0, sticky="w", pady=(8, 0))
    _wrapping(body, frame, 2 * (_PAD + 4))
    check = ttk.Checkbutton(frame, text=view.delete_label, variable=delete, style="Wrap.TCheckbutton")
    check.grid(row=2, column=0, sticky="w", pady=(12, 0))
    _wrapping_style("Wrap.TCheckbutton", frame, 2 * (_PAD + 4) + 30)

    bar = ttk.Frame(frame)
    bar.grid(row=3, column=0, sticky="e", pady=(16, 0))

    def cancel() -> None:
        root.destroy()

    def withdraw() -> None:
        answer.append(bool(delete.get()))
        root.destroy()

    cancel_button = ttk.Button(bar, text="Cancel", command=cancel)
    withdraw_button = ttk.Button(bar, text="Withdraw", command=withdraw)
    cancel_button.grid(row=0, column=0, padx=(0, 6))
    withdraw_button.grid(row=0, column=1)

    _bind_keys(root, cancel)
    root.minsize(460, 220)
    root.geometry("600x250")
    _report_geometry(root, {"delete": check, "cancel": cancel_button, "withdraw": withdraw_button})
    _show_up(root, withdraw_button)
    root.mainloop()
    return answer[0] if answer else None


def show_confirm(title: str, message: str, yes: str, no: str) -> bool:
    """A yes/no question; True only for ``yes`` (Escape or closing: False).  The focus starts on ``no``."""
    from tkinter import ttk

    root = _make_root(f"optin — {title}")
    answer: list[bool] = []
    frame = ttk.Frame(root, padding=_PAD + 4)
    frame.grid(row=0, column=0, sticky="nsew")
    root.columnconfigure(0, weight=1)
    root.rowconfigure(0, weight=1)
    frame.columnconfigure(0, weight=1)
    ttk.Label(frame, text=title, style="Heading.TLabel").grid(row=0, column=0, sticky="w")
    body = ttk.Label(frame, text=message, wraplength=480)
    body.grid(row=1, column=0, sticky="w", pady=(8, 0))
    _wrapping(body, frame, 2 * (_PAD + 4))
    bar = ttk.Frame(frame)
    bar.grid(row=2, column=0, sticky="e", pady=(16, 0))

    def say_yes() -> None:
        answer.append(True)
        root.destroy()

    no_button = ttk.Button(bar, text=no, command=root.destroy)
    yes_button = ttk.Button(bar, text=yes, command=say_yes)
    no_button.grid(row=0, column=0, padx=(0, 6))
    yes_button.grid(row=0, column=1)
    _bind_keys(root, root.destroy)
    root.minsize(420, 180)
    root.geometry("560x200")
    _report_geometry(root, {"no": no_button, "yes": yes_button})
    _show_up(root, no_button)
    root.mainloop()
    return bool(answer)


# --- the dialog process ---------------------------------------------------------------------------


def _say(obj: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _consent_main(study_path: str | None) -> int:
    from agent import consent
    from agent.paths import dirs
    from agent.study import installed_study, load_study_file

    d = dirs()
    study = load_study_file(Path(study_path)) if study_path else installed_study(d)
    request = show_consent(consent_view(study, d, consent.current_receipt(d)))
    if request is None:
        _say({"agreed": False})
        return EXIT_NO
    receipt = consent.grant(d, study, request.consent_sha256, list(request.scopes))
    _say({"agreed": True, "scopes": list(receipt.scopes)})
    return EXIT_YES


def _withdraw_main() -> int:
    from agent import consent
    from agent.paths import dirs

    d = dirs()
    delete = show_withdraw(withdraw_view(consent.current_receipt(d), d))
    if delete is None:
        _say({"withdrawn": False})
        return EXIT_NO
    had = consent.withdraw(d)
    _say({"withdrawn": True, "delete": delete, "had_consent": had})
    return EXIT_YES


def _confirm_main() -> int:
    try:
        request = json.loads(sys.stdin.read())
        title, message = str(request["title"]), str(request["message"])
        yes, no = str(request.get("yes", "OK")), str(request.get("no", "Cancel"))
    except (ValueError, KeyError, TypeError) as exc:
        msg = 'the --confirm dialog reads {"title": ..., "message": ..., "yes": ..., "no": ...} from stdin'
        raise UsageError(msg) from exc
    confirmed = show_confirm(title, message, yes, no)
    _say({"confirmed": confirmed})
    return EXIT_YES if confirmed else EXIT_NO


def main(argv: list[str] | None = None) -> int:
    """``python -m agent.ui.consent_dialog [--study FILE | --withdraw | --confirm]``.

    Exit 0: yes (agreed, withdrawn, confirmed); 1: no; 2: the dialog cannot be shown.
    """
    from agent.errors import EnvironmentProblem
    from agent.hardening import harden_process

    try:
        harden_process()  # the dialog shows a study and receives no content, but dumps nothing either
    except EnvironmentProblem as exc:
        sys.stderr.write(f"optin: {exc}\n")
        return 2
    parser = argparse.ArgumentParser(
        prog="python -m agent.ui.consent_dialog",
        description="Ask the volunteer for consent (or its withdrawal) in a window.",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--study", metavar="FILE", help="show this study file instead of the installed one")
    group.add_argument("--withdraw", action="store_true", help="ask whether to withdraw consent")
    group.add_argument(
        "--confirm", action="store_true", help="ask a yes/no question read as JSON from stdin (for the tray)"
    )
    args = parser.parse_args(argv)
    try:
        if args.confirm:
            return _confirm_main()
        return _withdraw_main() if args.withdraw else _consent_main(args.study)
    except OptinError as exc:
        sys.stderr.write(f"optin: {exc}\n")
        return EXIT_CANNOT


if __name__ == "__main__":
    sys.exit(main())
