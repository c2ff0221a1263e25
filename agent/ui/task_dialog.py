"""The "Start a task" dialog (Tk): a thin view that renders a :class:`~agent.ui.task_views.TaskDialogView`.

:func:`show_task` shows the study's tasks in a list (Up and Down pick one; its instruction and
hints show below) and/or a one-line box for the volunteer's own instruction, with Cancel and
Start; Escape or closing cancels, Enter in the list or the box starts.  What it says and what a
choice becomes are :mod:`agent.ui.task_views`'; the process that shows it is
:mod:`agent.ui.dialogs` (``--task``).  What the volunteer writes is never logged or printed
here: it goes back only as the dialog's answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.ui.task_views import TaskChoice, TaskDialogView, choose, writes_own
from agent.ui.tk_toolkit import (
    PAD,
    bind_keys,
    label,
    make_root,
    report_geometry,
    show_up,
    text_box,
    wrapping,
)

if TYPE_CHECKING:
    import tkinter as tk
    from tkinter import ttk


def _task_list(frame: tk.Misc, view: TaskDialogView, row: int) -> tuple[tk.Listbox, tk.Text]:
    """The list of the study's tasks (the first picked) and, below it, the picked one's details."""
    import tkinter as tk

    listbox = tk.Listbox(
        frame,
        height=min(8, max(3, len(view.row_labels))),
        exportselection=False,
        activestyle="dotbox",
        highlightthickness=2,
        highlightcolor="#3465a4",
        selectbackground="#3465a4",
        selectforeground="#ffffff",
        font="TkTextFont",
    )
    for line in view.row_labels:
        listbox.insert("end", line)
    listbox.grid(row=row, column=0, sticky="nsew", pady=(10, 0))
    frame.rowconfigure(row, weight=1)
    listbox.selection_set(0)
    listbox.activate(0)
    box, details = text_box(frame, [("", "")], height=4)
    box.grid(row=row + 1, column=0, sticky="nsew", pady=(6, 0))
    details.configure(takefocus=0)  # the list shows it; Tab goes on to the box or the buttons
    return listbox, details


def _own_entry(
    frame: tk.Misc, view: TaskDialogView, row: int, text: tk.StringVar
) -> tuple[ttk.Label, ttk.Entry]:
    """The box for the volunteer's own instruction (one line, at most ``view.max_chars``
    characters) and its label."""
    from tkinter import ttk

    title = label(frame, view.entry_label, row, style="Section.TLabel", pady=(10, 2))
    limit = view.max_chars
    fits = frame.register(lambda proposed: len(proposed) <= limit)
    entry = ttk.Entry(frame, textvariable=text, validate="key", validatecommand=(fits, "%P"))
    entry.grid(row=row + 1, column=0, sticky="ew")
    _wrapped(frame, view.privacy_note, row + 2, style="Small.TLabel", pady=(2, 0))
    return title, entry


def _switch_entry(view: TaskDialogView, title: ttk.Label, entry: ttk.Entry, *, on: bool) -> None:
    """The box takes text only while the volunteer's own task is picked; its label says how."""
    entry.state(["!disabled"] if on else ["disabled"])
    title.configure(
        text=view.entry_label if on else view.entry_label_off,
        style="Section.TLabel" if on else "Small.TLabel",
    )


def _show_details(details: tk.Text, text: str) -> None:
    details.configure(state="normal")
    details.delete("1.0", "end")
    details.insert("end", text)
    details.configure(state="disabled")


def _frame(root: tk.Tk, view: TaskDialogView) -> ttk.Frame:
    """The window's frame, with the heading and what to do."""
    from tkinter import ttk

    frame = ttk.Frame(root, padding=PAD + 4)
    frame.grid(row=0, column=0, sticky="nsew")
    root.columnconfigure(0, weight=1)
    root.rowconfigure(0, weight=1)
    frame.columnconfigure(0, weight=1)
    ttk.Label(frame, text=view.heading, style="Heading.TLabel").grid(row=0, column=0, sticky="w")
    _wrapped(frame, view.intro, 1, pady=(6, 0))
    return frame


def _wrapped(frame: tk.Misc, text: str, row: int, *, style: str = "TLabel", pady: Any = 0) -> None:
    """A label wrapped to the frame's width inside its padding."""
    from tkinter import ttk

    widget = ttk.Label(frame, text=text, style=style, wraplength=560)
    widget.grid(row=row, column=0, sticky="w", pady=pady)
    wrapping(widget, frame, 2 * (PAD + 4) + 8)


def _size(root: tk.Tk, *, tall: bool) -> None:
    root.minsize(480, 240)
    width = min(720, root.winfo_screenwidth() - 40)
    root.geometry(f"{width}x{min(520 if tall else 300, root.winfo_screenheight() - 60)}")


def show_task(view: TaskDialogView) -> TaskChoice | None:
    """Show the dialog; the volunteer's choice, or None (Cancel / Escape / closed)."""
    import tkinter as tk
    from tkinter import ttk

    root = make_root(view.window_title)
    answer: list[TaskChoice] = []
    frame = _frame(root, view)
    widgets: dict[str, tk.Misc] = {}
    listbox, details = _task_list(frame, view, 2) if view.row_labels else (None, None)
    text = tk.StringVar(root, value="")
    row = 4 if listbox is not None else 2
    entry_title, entry = _own_entry(frame, view, row, text) if view.free else (None, None)
    row += 3 if entry is not None else 0
    problem = ttk.Label(frame, text="", style="Notice.TLabel")
    problem.grid(row=row, column=0, sticky="w", pady=(8, 0))
    bar = ttk.Frame(frame)
    bar.grid(row=row + 1, column=0, sticky="e", pady=(8, 0))

    def picked() -> int | None:
        chosen = listbox.curselection() if listbox is not None else ()  # type: ignore[no-untyped-call]
        return int(chosen[0]) if chosen else None

    def show_picked(_event: object = None) -> None:
        index = picked()
        if details is not None:
            row = view.rows[index] if index is not None and index < len(view.rows) else None
            _show_details(details, row.details if row is not None else "Write it in the box below.")
        if entry is not None and entry_title is not None:
            _switch_entry(view, entry_title, entry, on=writes_own(view, index))
        problem.configure(text="")

    def start(_event: object = None) -> str:
        result = choose(view, picked(), text.get())
        if isinstance(result, str):
            problem.configure(text=result)  # names lengths and characters, never the text
        else:
            answer.append(result)
            root.destroy()
        return "break"

    cancel_button = ttk.Button(bar, text=view.cancel_label, command=root.destroy)
    start_button = ttk.Button(bar, text=view.start_label, command=start)
    cancel_button.grid(row=0, column=0, padx=(0, 6))
    start_button.grid(row=0, column=1)
    for name, widget in (("list", listbox), ("entry", entry)):
        if widget is not None:
            widgets[name] = widget
            if name == "list":
                widget.bind("<<ListboxSelect>>", show_picked)
            widget.bind("<Return>", start)  # Enter in the list or the box starts
            widget.bind("<KP_Enter>", start)
    widgets.update({"cancel": cancel_button, "start": start_button})
    show_picked()
    bind_keys(root, root.destroy)
    _size(root, tall=listbox is not None)
    report_geometry(root, widgets)
    show_up(root, listbox or entry or start_button)
    root.mainloop()
    return answer[0] if answer else None
