"""The review window's two modal dialogs: the passphrase that unlocks the session, and the
question before marked parts are deleted for good.

Both run on the Tk thread over the review window (:mod:`agent.ui.review`), grab the input until
they close, and call ``report(state, widgets, top)`` once shown (the window's
``optin-review-state`` line: ``passphrase`` or ``confirm``, with the widgets' centres).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agent.ui.tk_toolkit import PAD

if TYPE_CHECKING:
    import tkinter as tk
    from tkinter import ttk

#: Called once a dialog is shown: its state name, its widgets by name, its window.
Report = Callable[[str, dict[str, Any], Any], None]


def ask_passphrase(root: tk.Tk, *, again: bool, report: Report) -> bytes | None:
    """The volunteer's passphrase (kept in memory only), or None when they cancelled; ``again``
    says the last one did not unlock the key."""
    import tkinter as tk
    from tkinter import ttk

    body = (
        "Your passphrase opens this session on this computer. It is kept in memory only, never written down."
    )
    top, frame = _modal(root, "optin — unlock your recordings", "Unlock your recordings", body, 420)
    if again:
        said = "That passphrase did not unlock your key. Try again."
        ttk.Label(frame, text=said, style="Notice.TLabel").grid(row=2, column=0, sticky="w", pady=(6, 0))
    secret = tk.StringVar(top)
    entry = ttk.Entry(frame, textvariable=secret, show="*", width=40)
    entry.grid(row=3, column=0, sticky="ew", pady=(10, 0))
    bar = ttk.Frame(frame)
    bar.grid(row=4, column=0, sticky="e", pady=(12, 0))
    answer: list[bytes] = []

    def ok(_e: object = None) -> None:
        if not secret.get():
            top.bell()
            return
        answer.append(secret.get().encode("utf-8"))
        secret.set("")
        top.destroy()

    def cancel(_e: object = None) -> None:
        secret.set("")
        top.destroy()

    cancel_button = ttk.Button(bar, text="Cancel", command=cancel)
    ok_button = ttk.Button(bar, text="Unlock", command=ok)
    cancel_button.grid(row=0, column=0, padx=(0, 6))
    ok_button.grid(row=0, column=1)
    entry.bind("<Return>", ok)
    entry.bind("<KP_Enter>", ok)
    top.bind("<Escape>", cancel)
    top.protocol("WM_DELETE_WINDOW", cancel)
    widgets = {"entry": entry, "ok": ok_button, "cancel": cancel_button}
    _hold(root, top, entry, lambda: report("passphrase", widgets, top))
    return answer[0] if answer else None


def confirm_cut(
    root: tk.Tk, body: str, *, report: Report, heading: str = "Delete the marked parts from this computer?"
) -> bool:
    """Delete the marked parts (or, when they are all of it, the session) for good?  The focus
    starts on Cancel; Enter presses the focused button, Escape cancels."""
    from tkinter import ttk

    top, frame = _modal(root, "optin — delete for good?", heading, body, 480)
    bar = ttk.Frame(frame)
    bar.grid(row=2, column=0, sticky="e", pady=(16, 0))
    answer: list[bool] = []

    def yes() -> None:
        answer.append(True)
        top.destroy()

    cancel = ttk.Button(bar, text="Cancel", command=top.destroy)
    delete = ttk.Button(bar, text="Delete them", command=yes)
    cancel.grid(row=0, column=0, padx=(0, 6))
    delete.grid(row=0, column=1)

    def activate(_e: object) -> str:
        focused = top.focus_get()
        if isinstance(focused, ttk.Button):
            focused.invoke()
        return "break"

    top.bind("<Return>", activate)
    top.bind("<KP_Enter>", activate)
    top.bind("<Escape>", lambda _e: top.destroy())
    top.protocol("WM_DELETE_WINDOW", top.destroy)
    _hold(root, top, cancel, lambda: report("confirm", {"cancel": cancel, "delete": delete}, top))
    return bool(answer)


def _modal(root: tk.Tk, title: str, heading: str, body: str, wrap: int) -> tuple[tk.Toplevel, ttk.Frame]:
    """A dialog over ``root``: its title, a heading and a paragraph (rows 0 and 1 of its frame)."""
    import tkinter as tk
    from tkinter import ttk

    top = tk.Toplevel(root)
    top.title(title)
    top.transient(root)
    frame = ttk.Frame(top, padding=PAD + 4)
    frame.grid(row=0, column=0, sticky="nsew")
    frame.columnconfigure(0, weight=1)
    ttk.Label(frame, text=heading, style="Heading.TLabel").grid(row=0, column=0, sticky="w")
    ttk.Label(frame, text=body, wraplength=wrap).grid(row=1, column=0, sticky="w", pady=(8, 0))
    return top, frame


def _hold(root: tk.Tk, top: tk.Toplevel, focus: tk.Misc, shown: Callable[[], None]) -> None:
    """Show ``top`` modal with the focus on ``focus``, call ``shown``, wait until it is closed."""
    top.resizable(False, False)
    top.wait_visibility()
    top.grab_set()
    top.focus_force()
    focus.focus_set()
    shown()
    root.wait_window(top)
