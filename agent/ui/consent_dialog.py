"""The consent, withdrawal and confirm dialogs (Tk): thin views that render a view model.

:func:`show_consent` renders a :class:`~agent.ui.consent_views.ConsentView` and returns what "I
agree" grants (a :class:`~agent.ui.consent_views.GrantRequest`, or None); :func:`show_withdraw`
renders a :class:`~agent.ui.consent_views.WithdrawView`; :func:`show_confirm` asks a yes/no
question.  What they say is decided by the pure functions of :mod:`agent.ui.consent_views`; the
process that shows them, and what it records and prints, is :mod:`agent.ui.dialogs`; the fonts,
keys, wrapping and focus every window shares are :mod:`agent.ui.tk_toolkit`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agent.ui.consent_views import ConsentView, GrantRequest, WithdrawView, grant_request, summary_parts
from agent.ui.tk_toolkit import (
    PAD,
    bind_keys,
    label,
    make_root,
    report_geometry,
    show_up,
    text_box,
    wrapping,
    wrapping_style,
)

if TYPE_CHECKING:
    import tkinter as tk
    from tkinter import ttk

#: The consent text box never shrinks below this many lines.
TEXT_MIN_LINES = 6


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
    box, text = text_box(reading, [(view.consent_text, "")])
    box.grid(row=1, column=0, sticky="nsew", padx=(0, PAD))
    summary_box, summary = text_box(reading, summary_parts(view))
    summary_box.grid(row=1, column=1, sticky="nsew")
    return reading, text, summary


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
    no_button.grid(row=0, column=1, rowspan=2, padx=(PAD, 6))
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

    root = make_root(view.window_title)
    answer: list[GrantRequest] = []
    ticked = {scope: tk.BooleanVar(root, value=False) for scope, _label in view.scopes}

    outer = ttk.Frame(root, padding=PAD)
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
        label(frame, line, row, style=style, pady=pady)
    row = len(rows)
    reading, text, summary = _reading(frame, view)
    reading.grid(row=row, column=0, sticky="nsew", pady=(10, 0))
    # the texts take the spare height, and keep at least TEXT_MIN_LINES lines
    lines = tkfont.nametofont("TkTextFont", root).metrics("linespace") * TEXT_MIN_LINES + 20
    frame.rowconfigure(row, weight=1, minsize=lines)

    question = "What may this study record? Tick each item you agree to:"
    label(bottom, question, 0, style="Section.TLabel", pady=(12, 4))
    boxes: dict[str, tk.Misc] = {}
    for row, (scope, scope_label) in enumerate(view.scopes, start=1):
        check = ttk.Checkbutton(bottom, text=scope_label, variable=ticked[scope], style="Wrap.TCheckbutton")
        check.grid(row=row, column=0, sticky="w", pady=1)
        boxes[f"scope:{scope}"] = check
    wrapping_style("Wrap.TCheckbutton", bottom, 30)

    def on_agree(request: GrantRequest) -> None:
        answer.append(request)
        root.destroy()

    bar, no_button, yes_button = _agree_bar(bottom, view, ticked, on_agree)
    bar.grid(row=len(view.scopes) + 1, column=0, sticky="ew", pady=(12, 0))

    bind_keys(root, root.destroy)
    root.minsize(640, 560)
    width = min(1180, root.winfo_screenwidth() - 40)  # two columns of about 80 characters
    height = min(740, root.winfo_screenheight() - 60)
    root.geometry(f"{width}x{height}")
    widgets = {"text": text, "summary": summary, **boxes, "not_now": no_button, "agree": yes_button}
    report_geometry(root, widgets)
    show_up(root, text)
    root.mainloop()
    return answer[0] if answer else None


def show_withdraw(view: WithdrawView) -> bool | None:
    """Show the withdrawal dialog: None (Cancel / Escape / closed), else whether to delete everything."""
    import tkinter as tk
    from tkinter import ttk

    root = make_root(view.window_title)
    answer: list[bool] = []
    delete = tk.BooleanVar(root, value=False)

    frame = ttk.Frame(root, padding=PAD + 4)
    frame.grid(row=0, column=0, sticky="nsew")
    root.columnconfigure(0, weight=1)
    root.rowconfigure(0, weight=1)
    frame.columnconfigure(0, weight=1)
    ttk.Label(frame, text=view.heading, style="Heading.TLabel").grid(row=0, column=0, sticky="w")
    body = ttk.Label(frame, text=view.body, wraplength=480)
    body.grid(row=1, column=0, sticky="w", pady=(8, 0))
    wrapping(body, frame, 2 * (PAD + 4))
    check = ttk.Checkbutton(frame, text=view.delete_label, variable=delete, style="Wrap.TCheckbutton")
    check.grid(row=2, column=0, sticky="w", pady=(12, 0))
    wrapping_style("Wrap.TCheckbutton", frame, 2 * (PAD + 4) + 30)

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

    bind_keys(root, cancel)
    root.minsize(460, 220)
    root.geometry("600x250")
    report_geometry(root, {"delete": check, "cancel": cancel_button, "withdraw": withdraw_button})
    show_up(root, withdraw_button)
    root.mainloop()
    return answer[0] if answer else None


def show_confirm(title: str, message: str, yes: str, no: str) -> bool:
    """A yes/no question; True only for ``yes`` (Escape or closing: False).  The focus starts on ``no``."""
    from tkinter import ttk

    root = make_root(f"optin — {title}")
    answer: list[bool] = []
    frame = ttk.Frame(root, padding=PAD + 4)
    frame.grid(row=0, column=0, sticky="nsew")
    root.columnconfigure(0, weight=1)
    root.rowconfigure(0, weight=1)
    frame.columnconfigure(0, weight=1)
    ttk.Label(frame, text=title, style="Heading.TLabel").grid(row=0, column=0, sticky="w")
    body = ttk.Label(frame, text=message, wraplength=480)
    body.grid(row=1, column=0, sticky="w", pady=(8, 0))
    wrapping(body, frame, 2 * (PAD + 4))
    bar = ttk.Frame(frame)
    bar.grid(row=2, column=0, sticky="e", pady=(16, 0))

    def say_yes() -> None:
        answer.append(True)
        root.destroy()

    no_button = ttk.Button(bar, text=no, command=root.destroy)
    yes_button = ttk.Button(bar, text=yes, command=say_yes)
    no_button.grid(row=0, column=0, padx=(0, 6))
    yes_button.grid(row=0, column=1)
    bind_keys(root, root.destroy)
    root.minsize(420, 180)
    root.geometry("560x200")
    report_geometry(root, {"no": no_button, "yes": yes_button})
    show_up(root, no_button)
    root.mainloop()
    return bool(answer)
