"""The Tk toolkit optin's windows share: a root with readable fonts, the keys, wrapping, focus.

Every Tk window of optin (the consent, withdrawal and confirm dialogs in
:mod:`agent.ui.consent_dialog`, the review window in :mod:`agent.ui.review`) starts from
:func:`make_root` and :func:`bind_keys`, and is brought up with :func:`show_up`.  Nothing here
knows what a window says; tkinter is imported lazily, so importing this module needs no Tk.

``OPTIN_DIALOG_DEBUG_GEOMETRY=1`` (:data:`DEBUG_GEOMETRY_ENV`) makes :func:`report_geometry`
print the widgets' root coordinates on stderr once the window is shown (for the real-display tests).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from agent.errors import EnvironmentProblem

if TYPE_CHECKING:
    import tkinter as tk
    from tkinter import ttk

#: Environment variable: print the widgets' root coordinates on stderr once shown.
DEBUG_GEOMETRY_ENV = "OPTIN_DIALOG_DEBUG_GEOMETRY"

#: The Debian/Ubuntu package that has Tk for the system Python.
TK_PACKAGE = "python3-tk"

#: The padding around a window's content and between its parts, in pixels.
PAD = 12

_FAMILY = "DejaVu Sans"
_SIZE = 10


def make_root(title: str) -> tk.Tk:
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


def bind_keys(root: tk.Tk, on_escape: Callable[[], None]) -> None:
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


def wrapping(label: ttk.Label, parent: tk.Misc, margin: int = 0) -> None:
    """Wrap ``label``'s text to its parent's width as the window is resized."""
    parent.bind("<Configure>", lambda e: label.configure(wraplength=max(200, e.width - margin)), add="+")


def wrapping_style(style: str, parent: tk.Misc, margin: int = 0) -> None:
    """Wrap the text of every widget of ``style`` (checkbuttons) to ``parent``'s width."""
    from tkinter import ttk

    styles = ttk.Style(parent)
    parent.bind(
        "<Configure>", lambda e: styles.configure(style, wraplength=max(200, e.width - margin)), add="+"
    )


def report_geometry(root: tk.Tk, widgets: dict[str, tk.Misc]) -> None:
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


def show_up(root: tk.Tk, focus: tk.Misc) -> None:
    """Bring the window to the front with the keyboard focus on ``focus``."""

    def take_focus() -> None:
        root.focus_force()
        focus.focus_set()

    root.update_idletasks()
    root.deiconify()
    root.lift()
    root.after(100, take_focus)


def label(parent: tk.Misc, text: str, row: int, *, style: str = "TLabel", pady: Any = 0) -> ttk.Label:
    """A left-aligned label in column 0 of ``parent``'s grid, wrapped to ``parent``'s width."""
    from tkinter import ttk

    widget = ttk.Label(parent, text=text, style=style)
    widget.grid(row=row, column=0, sticky="w", pady=pady)
    wrapping(widget, parent)
    return widget


def text_box(
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
