"""The review window (``optin review [ID]``): one session exactly as it would be exported.

A thin Tk view: :class:`agent.export.review_screen.ReviewScreen` (over
:class:`agent.export.review.Review`) holds what is shown (the frame, the cut marks, the step →
frame map, busy and locked) and decides what each action does and says; this module draws it
(the redacted frames on a timeline, masks visible; the steps, with typed text after redaction;
the session's task: its source, instruction as exported, outcome and steps; the selected step's
element, outlined on its frame; the counts), binds the keys and runs the background work.  A list
of the reviewable sessions (the newest 200) opens another one in the same window.

Threads: Tk is used from the main thread only.  Unlocking the key runs there (it may ask for
the passphrase in a small modal dialog); loading, applying cuts and exporting run on one
background thread at a time, which reports progress through a queue the window polls with
``after()``.  Nothing decrypted is written anywhere: frames are decoded from memory and shown
through an in-memory image; the only files written are the store's own (a cut, the approval)
and the bundle, all by ``Review``.

Keys: Left/Right (Home/End) move through the frames (not while the step list has the focus);
Alt+S starts a cut at the frame shown, Alt+T ends it there, Alt+X cuts the selected steps,
Alt+K cuts the session's task (its whole span), Alt+L clears the marks, Alt+C applies them
(after a confirmation whose focus starts on Cancel; when they hold all of the session, the
session is deleted), Alt+A approves (a task's session: "Approve this task for export"), Alt+E
exports, Alt+F changes the export folder, Alt+P and Alt+N open the previous (newer) and next
(older) session of the list; Escape, Alt+Q or closing the window closes it.

``OPTIN_DIALOG_DEBUG_GEOMETRY=1`` prints one line ``optin-review-state {json}`` on stderr each
time the window gets ready, an action finishes or a dialog of its own is shown (for the
real-display tests)::

    {"state": "ready" | "marked" | "cancelled" | "cut" | "deleted" | "approved" | "exported"
              | "opening" | "selected" | "error" | "passphrase" | "confirm",
     "session": id, "approval": "approved" | "not approved" | "changed", "frames": n, "steps": n,
     "cuts_marked": n, "cut_start": frame index | null, "frame": index shown, "frames_marked": n,
     "tasks": [{"id": id, "outcome": outcome, "steps": [first, last] | null}],
     "deletes_session": bool, "sessions": n listed,
     "outlines": [[x, y, width, height]],    # element rectangles drawn, root coordinates
     "window": [x, y, width, height], "widgets": {name: [x, y]},    # centres, root coordinates
     "message": "..." (error), "bundle": "<id>.optin.tar.age" (exported), "deleted": id,
     "selected": [step index, ...] (selected: the step list's selection changed)}

Counts, ids, indices and error messages only (which never hold captured content); no step text,
no instruction, no element name.
"""

from __future__ import annotations

import io
import json
import os
import queue
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.errors import EnvironmentProblem, KeyError_
from agent.export.review import Progress, Review, StepRow
from agent.export.review_screen import Outcome, ReviewScreen
from agent.paths import Dirs
from agent.study import Study
from agent.ui.review_dialogs import ask_passphrase, confirm_cut
from agent.ui.tk_toolkit import DEBUG_GEOMETRY_ENV, PAD, TK_PACKAGE, bind_keys, make_root, show_up, wrapping

if TYPE_CHECKING:
    import tkinter as tk
    from tkinter import ttk

#: Prefix of the debug lines on stderr (OPTIN_DIALOG_DEBUG_GEOMETRY=1).
STATE_PREFIX = "optin-review-state "
#: How often the window looks at the background work's queue (milliseconds).
POLL_MS = 50

_RED = "#c4161c"
_GREEN = "#2e7d32"
#: The presenter's tones as label styles.
_STYLES = {"good": "Good.TLabel", "notice": "Notice.TLabel", "small": "Small.TLabel", "error": "Error.TLabel"}
#: The strip's cell colours: a frame marked to cut, where a cut starts, any other frame.
_CELLS = {"cut": _RED, "start": "#e69500", "": "#b8b8b8"}
#: The outline of the selected step's element on the frame, and the step list's task rows.
_ELEMENT = "#00a2ff"
_TASK_ROW = "#e3edf9"


def default_out_dir() -> Path:
    """Where the Export button writes unless ``--out`` says otherwise."""
    return Path.home() / "optin-exports"


def run_review(dirs: Dirs, study: Study, session_id: str, *, out_dir: Path | None = None) -> int:
    """Show the review window for one session until the volunteer closes it.

    :returns: 0 when closed normally.
    :raises EnvironmentProblem: no display or no Tk (the message says the fix).
    :raises KeyError_: the volunteer cancelled the passphrase dialog.
    :raises OptinError: the session could not be loaded (after the window said why).
    """
    root = _review_root(f"optin review — {session_id} (loading…)", session_id)
    window = ReviewWindow(root, dirs, study, session_id, out_dir or default_out_dir())
    return window.run()


def _review_root(title: str, session_id: str) -> tk.Tk:
    """The consent dialog's root (fonts, theme), with a fix that fits the review window."""
    try:
        root = make_root(title)
    except EnvironmentProblem as exc:
        if isinstance(exc.__cause__, ImportError):
            why = f"Python has no Tk ({exc.__cause__}). Fix: sudo apt-get install {TK_PACKAGE}"
        else:
            where = os.environ.get("DISPLAY")
            why = (
                f"cannot connect to display {where!r}"
                if where
                else "no graphical display (DISPLAY is not set)"
            )
            why += (
                ". Fix: run optin review in your desktop session; or, without looking, "
                f"approve and export it with: optin export {session_id} --approve --out DIR"
            )
        msg = f"cannot show the review window: {why}"
        raise EnvironmentProblem(msg) from exc
    from tkinter import ttk

    style = ttk.Style(root)
    style.configure("Good.TLabel", foreground=_GREEN)
    style.configure("Error.TLabel", foreground=_RED)
    style.configure("Count.TLabel", font=("TkDefaultFont", 10))
    return root


class ReviewWindow:
    """The window; ``run()`` shows it until it is closed."""

    def __init__(self, root: tk.Tk, dirs: Dirs, study: Study, session_id: str, out_dir: Path) -> None:
        self.root = root
        self.study = study
        self.session_id = session_id
        review = Review(dirs, study, session_id, ask_passphrase=self._ask_passphrase)
        self.screen = ReviewScreen(review, out_dir)
        self._queue: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._photo: tk.PhotoImage | None = None
        self._moving = False  #: the timeline is being set to the frame shown (not moved by hand)
        self._outlines: list[list[int]] = []  #: element rectangles drawn (root coordinates)
        self._task_id: str | None = None  #: the task the task panel shows (None: the first)
        self._build()

    # -- layout ----------------------------------------------------------------------------------

    def _build(self) -> None:
        from tkinter import ttk

        root = self.root
        root.report_callback_exception = self._unexpected
        outer = ttk.Frame(root, padding=PAD)
        outer.grid(row=0, column=0, sticky="nsew")
        root.columnconfigure(0, weight=1)
        root.rowconfigure(0, weight=1)
        outer.columnconfigure(0, weight=1)
        outer.rowconfigure(1, weight=1)
        self._build_header(outer).grid(row=0, column=0, sticky="ew", pady=(0, 8))
        paned = ttk.PanedWindow(outer, orient="horizontal")
        paned.grid(row=1, column=0, sticky="nsew")
        paned.add(self._build_viewer(paned), weight=3)
        paned.add(self._build_steps(paned), weight=1)
        self.paned = paned
        self.marks = ttk.Label(outer, text="", style="Small.TLabel")
        self.marks.grid(row=2, column=0, sticky="ew", pady=(8, 0))
        self._build_buttons(outer).grid(row=3, column=0, sticky="ew", pady=(6, 0))
        self._build_folder(outer).grid(row=4, column=0, sticky="ew", pady=(6, 0))
        self.status = ttk.Label(outer, text="", style="TLabel")
        self.status.grid(row=5, column=0, sticky="ew", pady=(6, 0))
        wrapping(self.marks, outer, 2 * PAD)
        wrapping(self.status, outer, 2 * PAD)
        self.folder.configure(text=self.screen.folder_text())
        self._bind()
        self._set_buttons()

    def _build_header(self, parent: tk.Misc) -> ttk.Frame:
        """Study, session, counts, redactions, losses and the approval."""
        from tkinter import ttk

        header = ttk.Frame(parent)
        header.columnconfigure(0, weight=1)
        heading = f"Review before export: {self.study.name}"
        ttk.Label(header, text=heading, style="Heading.TLabel").grid(row=0, column=0, sticky="w")
        self._build_sessions(header).grid(row=1, column=0, columnspan=2, sticky="w", pady=(2, 0))
        self.counts = ttk.Label(header, text="Loading…")
        self.counts.grid(row=2, column=0, sticky="w", pady=(4, 0))
        self.redacted = ttk.Label(header, text="", style="Small.TLabel")
        self.redacted.grid(row=3, column=0, sticky="w")
        self.approval_label = ttk.Label(header, text="", style="Section.TLabel")
        self.approval_label.grid(row=0, column=1, sticky="ne")
        about = f"study {self.study.id} · what you see is what an export holds"
        ttk.Label(header, text=about, style="Small.TLabel").grid(row=2, column=1, sticky="se")
        self.loss = ttk.Label(header, text="", style="Notice.TLabel")
        self.loss.grid(row=3, column=1, sticky="se")
        return header

    def _build_sessions(self, parent: tk.Misc) -> ttk.Frame:
        """The session shown, chosen from the newest reviewable sessions, and previous / next."""
        from tkinter import ttk

        row = ttk.Frame(parent)
        ttk.Label(row, text="Session").grid(row=0, column=0, sticky="w", padx=(0, 6))
        self.sessions = ttk.Combobox(row, state="readonly", width=60, values=(self.session_id,))
        self.sessions.set(self.session_id)
        self.sessions.grid(row=0, column=1, sticky="w")
        self.sessions.bind("<<ComboboxSelected>>", self._session_chosen)
        self.buttons: dict[str, ttk.Button] = {}
        for col, (name, text, underline, move) in enumerate(
            (("previous", "Previous", 0, -1), ("next", "Next", 0, 1)), start=2
        ):
            button = ttk.Button(
                row,
                text=text,
                underline=underline,
                command=self._opener(move),
            )
            button.grid(row=0, column=col, sticky="w", padx=(6, 0))
            self.buttons[name] = button
        return row

    def _build_viewer(self, parent: tk.Misc) -> ttk.Frame:
        """The frame shown, the strip of frames (marks), the timeline and the frame's label."""
        import tkinter as tk
        from tkinter import ttk

        viewer = ttk.Frame(parent)
        viewer.columnconfigure(0, weight=1)
        viewer.rowconfigure(0, weight=1)
        self.canvas = tk.Canvas(  # in the Tab order: with the focus here, ← → move through the frames
            viewer,
            width=640,
            height=400,
            background="#2b2b2b",
            highlightthickness=2,
            highlightcolor="#3465a4",
            highlightbackground="#2b2b2b",
            takefocus=1,
        )
        self.canvas.grid(row=0, column=0, sticky="nsew")
        self.canvas.bind("<Configure>", lambda _e: self._draw())
        self.strip = tk.Canvas(viewer, height=10, background="#e6e6e6", highlightthickness=0, takefocus=0)
        self.strip.grid(row=1, column=0, sticky="ew", pady=(6, 0))
        self.strip.bind("<Configure>", lambda _e: self._draw_strip())
        self.strip.bind("<Button-1>", self._strip_click)
        self.timeline = ttk.Scale(viewer, from_=0, to=0, orient="horizontal", command=self._slid, takefocus=0)
        self.timeline.grid(row=2, column=0, sticky="ew", pady=(2, 0))
        self.frame_label = ttk.Label(viewer, text="")
        self.frame_label.grid(row=3, column=0, sticky="w", pady=(2, 0))
        return viewer

    def _build_steps(self, parent: tk.Misc) -> ttk.Frame:
        """The step list: time, action, detail (redacted), window; cut rows struck through."""
        from tkinter import font as tkfont
        from tkinter import ttk

        side = ttk.Frame(parent, padding=(PAD, 0, 0, 0))
        side.columnconfigure(0, weight=1)
        side.rowconfigure(2, weight=1)
        self.task_panel = self._build_task(side)
        self.task_panel.grid(row=0, column=0, columnspan=2, sticky="ew", pady=(0, 8))
        self.task_panel.grid_remove()  # shown for a session that holds a task
        ttk.Label(side, text="Steps, as exported", style="Section.TLabel").grid(row=1, column=0, sticky="w")
        tree = ttk.Treeview(
            side, columns=("t", "action", "detail", "window"), show="headings", selectmode="extended"
        )
        tree.heading("t", text="t (s)", anchor="e")
        tree.column("t", width=48, minwidth=40, stretch=False, anchor="e")
        for col, heading, width, stretch in (
            ("action", "Action", 70, False),
            ("detail", "Detail", 190, True),
            ("window", "Window", 110, True),
        ):
            tree.heading(col, text=heading, anchor="w")
            tree.column(col, width=width, minwidth=40, stretch=stretch, anchor="w")
        struck = tkfont.nametofont("TkDefaultFont", self.root).copy()
        struck.configure(overstrike=True)
        tree.tag_configure("cut", foreground="#9a9a9a", font=struck)
        tree.tag_configure("task", background=_TASK_ROW)
        linespace = tkfont.nametofont("TkDefaultFont", self.root).metrics("linespace")
        ttk.Style(self.root).configure("Treeview", rowheight=linespace + 6)
        scroll = ttk.Scrollbar(side, orient="vertical", command=tree.yview)
        tree.configure(yscrollcommand=scroll.set)
        tree.grid(row=2, column=0, sticky="nsew", pady=(4, 0))
        scroll.grid(row=2, column=1, sticky="ns", pady=(4, 0))
        tree.bind("<<TreeviewSelect>>", self._selected)
        hint = "Select a step to see the screen just before it; Ctrl or Shift selects several."
        ttk.Label(side, text=hint, style="Small.TLabel", wraplength=360).grid(
            row=3, column=0, columnspan=2, sticky="w", pady=(4, 0)
        )
        ttk.Label(side, text="Element acted on", style="Section.TLabel").grid(
            row=4, column=0, columnspan=2, sticky="w", pady=(8, 0)
        )
        self.element = ttk.Label(side, text="", wraplength=360, justify="left")
        self.element.grid(row=5, column=0, columnspan=2, sticky="w", pady=(2, 0))
        for label in (self.element, self.task_about, self.task_words, self.task_note, self.task_problem):
            wrapping(label, side, PAD + 8)
        self.tree = tree
        return side

    def _build_task(self, parent: tk.Misc) -> ttk.Frame:
        """The session's task: what it is (id, source, outcome, steps), its instruction as exported
        (or that it is dropped), and what approving and cutting it mean."""
        from tkinter import ttk

        panel = ttk.Frame(parent)
        panel.columnconfigure(0, weight=1)
        ttk.Label(panel, text="Task", style="Section.TLabel").grid(row=0, column=0, sticky="w")
        self.task_pick = ttk.Combobox(panel, state="readonly", width=24)
        self.task_pick.grid(row=0, column=1, sticky="e")
        self.task_pick.bind("<<ComboboxSelected>>", self._task_chosen)
        self.task_pick.grid_remove()  # only for a session with more than one task
        self.task_about = ttk.Label(panel, text="", style="Small.TLabel", wraplength=360)
        self.task_about.grid(row=1, column=0, columnspan=2, sticky="w", pady=(2, 0))
        self.task_words = ttk.Label(panel, text="", wraplength=360, justify="left")
        self.task_words.grid(row=2, column=0, columnspan=2, sticky="w", pady=(4, 0))
        note = (
            "Its steps are shaded in the list below. Approving this session approves this task for "
            "export; Cut this task (Alt+K) marks all of it to be deleted."
        )
        self.task_note = ttk.Label(panel, text=note, style="Small.TLabel", wraplength=360)
        self.task_note.grid(row=3, column=0, columnspan=2, sticky="w", pady=(4, 0))
        self.task_problem = ttk.Label(panel, text="", style="Error.TLabel", wraplength=360)
        self.task_problem.grid(row=4, column=0, columnspan=2, sticky="w", pady=(4, 0))
        cut = ttk.Button(
            panel,
            text="Cut this task",
            underline=12,
            command=lambda: self._done(self.screen.cut_task(self._task_id)),
        )
        cut.grid(row=5, column=0, sticky="w", pady=(6, 0))
        self.buttons["cut_task"] = cut
        return panel

    def _build_buttons(self, parent: tk.Misc) -> ttk.Frame:
        """Cut, clear and apply on the left; approve, export and close on the right."""
        from tkinter import ttk

        bar = ttk.Frame(parent)
        bar.columnconfigure(5, weight=1)
        done = self._done
        buttons: tuple[tuple[str, str, int, Callable[[], None]], ...] = (
            ("cut_from", "Cut starts here", 4, lambda: done(self.screen.cut_from())),
            ("cut_to", "Cut to here", 4, lambda: done(self.screen.cut_to())),
            (
                "cut_steps",
                "Cut selected steps",
                -1,
                lambda: done(self.screen.cut_steps(self._selected_indices())),
            ),
            ("clear", "Clear marks", 1, lambda: done(self.screen.clear())),
            ("apply", "Apply cuts…", 6, self._apply),
            ("approve", "Approve", 0, lambda: done(self.screen.approve())),
            ("export", "Export", 0, self._export),
            *((("upload", "Upload to the study", 0, self._upload),) if self.study.upload_url else ()),
            ("close", "Close", -1, self._close),
        )
        for col, (name, text, underline, command) in enumerate(buttons):
            button = ttk.Button(bar, text=text, underline=underline, command=command)
            left = col < 5
            button.grid(row=0, column=col if left else col + 1, padx=(0, 6) if left else (6, 0))
            self.buttons[name] = button
        return bar

    def _build_folder(self, parent: tk.Misc) -> ttk.Frame:
        """Where Export writes, the button to change it, and the progress of background work."""
        from tkinter import ttk

        below = ttk.Frame(parent)
        below.columnconfigure(1, weight=1)
        self.folder = ttk.Label(below, text="")
        self.folder.grid(row=0, column=0, sticky="w")
        folder_button = ttk.Button(below, text="Change folder…", underline=7, command=self._change_folder)
        folder_button.grid(row=0, column=1, sticky="w", padx=(8, 0))
        self.buttons["folder"] = folder_button
        self.progress_label = ttk.Label(below, text="", style="Small.TLabel")
        self.progress_label.grid(row=0, column=2, sticky="e", padx=(0, 6))
        self.progress = ttk.Progressbar(below, orient="horizontal", length=220, mode="indeterminate")
        self.progress.grid(row=0, column=3, sticky="e")
        self.progress.grid_remove()  # shown while background work runs
        return below

    def _bind(self) -> None:
        """Alt+letter presses its button; arrows, Home and End move through the frames; Escape closes."""
        root = self.root
        alt = {"s": "cut_from", "t": "cut_to", "x": "cut_steps", "k": "cut_task", "l": "clear"}
        alt |= {"c": "apply", "a": "approve", "e": "export", "f": "folder", "p": "previous", "n": "next"}
        alt |= {"u": "upload"}
        for key, name in alt.items():
            for k in (key, key.upper()):
                root.bind(f"<Alt-{k}>", self._presser(name))
        root.bind("<Alt-q>", lambda _e: self._close())
        root.bind("<Alt-Q>", lambda _e: self._close())
        for key, move in (("Left", -1), ("Right", 1), ("Home", -(10**9)), ("End", 10**9)):
            root.bind(f"<{key}>", self._mover(move))
        bind_keys(root, self._close)

    def _opener(self, move: int) -> Callable[[], None]:
        return lambda: self._open(self.screen.neighbour(move))

    def _presser(self, name: str) -> Callable[[object], str]:
        return lambda _e: self._press(name)

    def _mover(self, move: int) -> Callable[[object], str | None]:
        return lambda _e: self._arrow(move)

    # -- the life of the window ------------------------------------------------------------------

    def run(self) -> int:
        root = self.root
        root.minsize(900, 600)
        width = min(1240, root.winfo_screenwidth() - 40)
        height = min(780, root.winfo_screenheight() - 50)
        root.geometry(f"{width}x{height}")
        self._set_status("Unlocking your recordings…")

        def on_map(_e: object) -> None:
            root.unbind("<Map>")
            root.after(150, self._unlock_and_load)

        def place_sash(event: tk.Event[ttk.PanedWindow]) -> None:
            if event.width > 200:  # the first real size: the frame gets about two thirds
                self.paned.unbind("<Configure>")
                sashpos: Callable[[int, int], object] = self.paned.sashpos  # untyped in typeshed
                sashpos(0, int(event.width * 0.6))

        root.bind("<Map>", on_map)
        self.paned.bind("<Configure>", place_sash)
        show_up(root, self.canvas)
        root.mainloop()
        self.screen.closed = True
        if self.screen.failure is not None:
            raise self.screen.failure
        return 0

    def _unlock_and_load(self) -> None:
        screen = self.screen
        if screen.closed:
            return
        if not screen.unlock():
            if screen.cancelled or screen.closed:  # no passphrase: the window closes, the command fails
                if not screen.closed:
                    self._destroy()
            else:
                self._load_failed()
            return
        if screen.closed:
            return
        self._work("load", "Reading screens", screen.review.load, lambda _r: self._ready())

    def _ready(self) -> None:
        outcome = self.screen.ready()
        self._task_id = None
        self._render(rebuild=True)
        self._set_status(outcome.status)
        self.root.title(f"optin review — {self.session_id}")
        self._report(outcome.state)

    def _load_failed(self) -> None:
        """The session cannot be shown: say why (the presenter's failure); only Close works."""
        message = str(self.screen.failure)
        self.root.title(f"optin review — {self.session_id} (cannot be shown)")
        self.counts.configure(text="This session cannot be shown.")
        self._show_sessions()
        canvas = self.canvas
        canvas.delete("all")
        width = max(300, canvas.winfo_width() - 48)
        canvas.create_text(
            24, 24, anchor="nw", text=message, fill="#ffffff", width=width, font="TkDefaultFont"
        )
        self._set_status("Nothing can be reviewed or exported: close this window (Esc).", error=True)
        self._set_buttons()
        self.buttons["close"].focus_set()
        self._report("error", message=message)

    def _destroy(self) -> None:
        self.screen.closed = True
        self.root.destroy()

    def _close(self) -> None:
        refused = self.screen.close_refused()
        if refused is not None:
            self._set_status(refused)
            return
        self._destroy()

    def _unexpected(self, exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
        """A bug in a Tk callback: say so without its message (it could quote what it was given)."""
        where = ""
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        if tb is not None:
            where = f" at {Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno}"
        sys.stderr.write(f"optin: unexpected error in the review window: {exc_type.__name__}{where}\n")
        if not self.screen.closed:
            self._set_status(f"Something unexpected went wrong ({exc_type.__name__}).", error=True)

    # -- the modal dialogs (agent/ui/review_dialogs.py) -----------------------------------------------

    def _ask_passphrase(self, _prompt: str) -> bytes:
        """Asked by ``Review.unlock`` on the Tk thread; cancelled: the window closes, the command fails."""
        self.screen.asked += 1
        answer = ask_passphrase(self.root, again=self.screen.asked > 1, report=self._report)
        if answer is None:
            self.screen.cancelled = True
            msg = "no passphrase was entered"
            raise KeyError_(msg)
        return answer

    # -- background work ---------------------------------------------------------------------------

    def _work(
        self, what: str, label: str, work: Callable[[Progress], Any], done: Callable[[Any], None]
    ) -> None:
        """Run ``work(progress)`` on a background thread; ``done(result)`` on the Tk thread."""
        self.screen.begin(what)
        self._set_buttons()
        self.progress_label.configure(text=label + "…")
        self.progress.configure(mode="indeterminate", value=0)
        self.progress.grid()
        self.progress.start(15)
        answers = self._queue

        def run() -> None:
            try:
                result = work(lambda n, total: answers.put(("progress", n, total)))
            except BaseException as exc:  # every failure is shown; none may kill the window
                answers.put(("error", exc))
            else:
                answers.put(("done", result))

        threading.Thread(target=run, name=f"optin-review-{what}", daemon=True).start()
        self.root.after(POLL_MS, lambda: self._poll(label, done))

    def _poll(self, label: str, done: Callable[[Any], None]) -> None:
        if self.screen.closed:
            return
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                self.root.after(POLL_MS, lambda: self._poll(label, done))
                return
            if item[0] == "progress":
                n, total = int(item[1]), int(item[2])
                if str(self.progress.cget("mode")) != "determinate":
                    self.progress.stop()
                    self.progress.configure(mode="determinate")
                self.progress.configure(maximum=max(1, total), value=n)
                self.progress_label.configure(text=f"{label} {n}/{total}")
                continue
            what = self.screen.end()
            self.progress.stop()
            self.progress.configure(mode="determinate", value=0)
            self.progress.grid_remove()
            self.progress_label.configure(text="")
            if item[0] == "done":
                done(item[1])
            elif what == "load":
                self.screen.failed(what, item[1])
                self._load_failed()
            else:
                self._done(self.screen.failed(what, item[1]))
            self._set_buttons()
            return

    # -- what is shown ---------------------------------------------------------------------------

    def _render(self, *, rebuild: bool) -> None:
        """Show what the presenter holds (read from the review by it)."""
        screen = self.screen
        header = screen.header()
        if screen.deleted:
            self.counts.configure(text="This session was deleted from this computer.")
            self.redacted.configure(text="")
            self.loss.configure(text="")
            self.approval_label.configure(text="")
        else:
            self.counts.configure(text=header.counts)
            self.redacted.configure(text=header.redactions)
            self.loss.configure(text=header.loss)
            self.approval_label.configure(text=header.approval, style=_STYLES[header.approval_tone])
        self.timeline.configure(to=max(0, len(screen.frames) - 1))
        self._fill_tree(rebuild=rebuild)
        self._fill_task()
        self._show_sessions()
        self.buttons["approve"].configure(text=screen.approve_label())
        marks, tone = screen.marks()
        self.marks.configure(text=marks, style=_STYLES[tone])
        self._set_buttons()
        self._show(screen.current)

    def _fill_tree(self, *, rebuild: bool) -> None:
        tree, rows = self.tree, self.screen.rows

        def tags(row: StepRow) -> tuple[str, ...]:
            return (*(("cut",) if row.cut else ()), *(("task",) if row.task is not None else ()))

        if rebuild or len(tree.get_children()) != len(rows):
            tree.delete(*tree.get_children())
            for row in rows:
                values = (f"{row.t_s:.1f}", row.action, row.detail, row.window)
                tree.insert("", "end", iid=str(row.index), values=values, tags=tags(row))
            return
        for row in rows:
            tree.item(str(row.index), tags=tags(row))

    def _fill_task(self) -> None:
        """The task panel: shown for a session that holds a task, with the task chosen."""
        screen = self.screen
        ids = [t.id for t in screen.tasks]
        if self._task_id not in ids:
            self._task_id = ids[0] if ids else None
        view = screen.task_view(self._task_id)
        if view is None:
            self.task_panel.grid_remove()
            return
        self.task_about.configure(text=view.about)
        self.task_words.configure(
            text=view.instruction if view.dropped else f"“{view.instruction}”",
            style="Notice.TLabel" if view.dropped else "TLabel",
        )
        self.task_problem.configure(
            text=f"An export would refuse this session's tasks: {view.problem}." if view.problem else ""
        )
        if len(ids) > 1:
            self.task_pick.configure(values=ids)
            self.task_pick.set(view.id)
            self.task_pick.grid()
        else:
            self.task_pick.grid_remove()
        self.task_panel.grid()

    def _show_sessions(self) -> None:
        """The list of sessions, with the one shown chosen."""
        screen = self.screen
        labels = [c.label for c in screen.sessions]
        at = screen.session_index()
        if not labels:
            labels = [self.session_id]
        self.sessions.configure(values=labels)
        self.sessions.set(
            labels[at]
            if at is not None
            else f"{self.session_id} (deleted)"
            if screen.deleted
            else self.session_id
        )

    def _show(self, index: int) -> None:
        """Show frame ``index`` (clamped) on the canvas, the timeline and the label under it."""
        current = self.screen.show(index)
        self._moving = True
        try:
            self.timeline.set(current)
        finally:
            self._moving = False
        text, tone = self.screen.frame_label(self._selected_indices())
        if tone is None:
            self.frame_label.configure(text=text)
        else:
            self.frame_label.configure(text=text, style=_STYLES.get(tone, "TLabel"))
        self._show_element()
        self._draw()
        self._draw_strip()

    def _show_element(self) -> None:
        """The selected step's element, as exported (its own label: names are captured text)."""
        focus = self.tree.focus()
        chosen = self._selected_indices()
        self.element.configure(text=self.screen.element_text(chosen, int(focus) if focus else None))

    def _draw(self) -> None:
        """Draw the current frame scaled to the canvas (in memory only), dimmed with a red band when
        it is marked to cut, with the selected step's position."""
        import tkinter as tk

        from PIL import Image

        screen, canvas = self.screen, self.canvas
        self._outlines = []
        cw, ch = canvas.winfo_width(), canvas.winfo_height()
        if cw < 20 or ch < 20 or screen.failure is not None or not (screen.loaded or screen.deleted):
            return
        if not screen.frames:
            canvas.delete("all")
            words = screen.empty_text()
            canvas.create_text(cw // 2, ch // 2, text=words, fill="#ffffff", font="TkDefaultFont")
            return
        frame = screen.frames[screen.current]
        with Image.open(io.BytesIO(frame.data)) as opened:
            image = opened.convert("RGB")
        scale = min(cw / image.width, ch / image.height)
        size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
        resample = Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.BILINEAR
        image = image.resize(size, resample)
        cut = screen.frame_cut[screen.current]
        if cut:
            image = Image.blend(image, Image.new("RGB", size, (20, 20, 20)), 0.6)
        ppm = f"P6 {size[0]} {size[1]} 255\n".encode("ascii") + image.tobytes()
        self._photo = tk.PhotoImage(master=self.root, data=ppm, format="ppm")
        x0, y0 = (cw - size[0]) // 2, (ch - size[1]) // 2
        canvas.delete("all")
        canvas.create_image(x0, y0, image=self._photo, anchor="nw")
        root_x, root_y = canvas.winfo_rootx(), canvas.winfo_rooty()
        for ex, ey, ew, eh in screen.element_boxes(self._selected_indices()):
            left, top = x0 + ex * scale, y0 + ey * scale
            right, bottom = left + ew * scale, top + eh * scale
            canvas.create_rectangle(left - 2, top - 2, right + 2, bottom + 2, outline=_ELEMENT, width=3)
            self._outlines.append(
                [round(root_x + left), round(root_y + top), round(ew * scale), round(eh * scale)]
            )
        for action, x, y, to_x, to_y in screen.pointers(self._selected_indices()):
            px, py = x0 + (x - frame.left) * scale, y0 + (y - frame.top) * scale
            if action == "drag" and to_x is not None and to_y is not None:
                qx, qy = x0 + (to_x - frame.left) * scale, y0 + (to_y - frame.top) * scale
                canvas.create_line(px, py, qx, qy, fill="#ff9800", width=3, arrow="last")
            canvas.create_oval(px - 11, py - 11, px + 11, py + 11, outline="#ff9800", width=3)
        if cut:
            canvas.create_rectangle(x0 + 2, y0 + 2, x0 + size[0] - 2, y0 + size[1] - 2, outline=_RED, width=4)
            canvas.create_rectangle(x0, y0, x0 + size[0], y0 + 30, fill=_RED, outline=_RED)
            band = "Marked to cut: deleted from this computer when you apply the cuts"
            canvas.create_text(x0 + 10, y0 + 15, anchor="w", text=band, fill="#ffffff", font="TkDefaultFont")

    def _draw_strip(self) -> None:
        """One cell per frame under the picture: red when marked to cut, blue for the frame shown,
        amber where a cut was started."""
        strip = self.strip
        strip.delete("all")
        cells = self.screen.strip()
        width = strip.winfo_width()
        if not cells or width < 10:
            return
        cell = width / len(cells)
        for i, kind in enumerate(cells):
            strip.create_rectangle(i * cell + 1, 1, (i + 1) * cell - 1, 9, fill=_CELLS[kind], outline="")
        x = self.screen.current * cell
        strip.create_rectangle(x, 0, x + cell, 10, outline="#3465a4", width=2)

    def _set_buttons(self) -> None:
        enabled = self.screen.enabled()
        for name, button in self.buttons.items():
            button.state(["!disabled"] if enabled.get(name, False) else ["disabled"])
        self.sessions.state(["!disabled"] if enabled["sessions"] else ["disabled"])

    def _set_status(self, text: str, *, error: bool = False) -> None:
        self.status.configure(text=text, style="Error.TLabel" if error else "TLabel")

    def _report(
        self, state: str, widgets: dict[str, Any] | None = None, top: Any = None, **extra: Any
    ) -> None:
        """With OPTIN_DIALOG_DEBUG_GEOMETRY=1: one ``optin-review-state`` line on stderr (counts and
        widget centres; never content)."""
        if os.environ.get(DEBUG_GEOMETRY_ENV) != "1" or self.screen.closed:
            return
        window = top or self.root
        window.update_idletasks()
        if widgets is None:
            widgets = {
                **self.buttons,
                "tree": self.tree,
                "timeline": self.timeline,
                "frame": self.canvas,
                "strip": self.strip,
                "sessions": self.sessions,
                "task": self.task_words,
                "element": self.element,
            }
        out = {
            "state": state,
            **self.screen.state(),
            "outlines": self._outlines,
            "window": [
                window.winfo_rootx(),
                window.winfo_rooty(),
                window.winfo_width(),
                window.winfo_height(),
            ],
            "widgets": {
                name: [w.winfo_rootx() + w.winfo_width() // 2, w.winfo_rooty() + w.winfo_height() // 2]
                for name, w in widgets.items()
            },
            **extra,
        }
        sys.stderr.write(STATE_PREFIX + json.dumps(out) + "\n")
        sys.stderr.flush()

    # -- moving through the session --------------------------------------------------------------

    def _arrow(self, move: int) -> str | None:
        focus = self.root.focus_get()
        if focus is self.tree or not self.screen.frames:
            return None  # the step list moves its own selection
        self._show(self.screen.current + move)
        return "break"

    def _slid(self, value: str) -> None:
        if self._moving or not self.screen.frames:
            return
        index = round(float(value))
        if index != self.screen.current:
            self._show(index)
        else:
            self._moving = True
            try:
                self.timeline.set(index)
            finally:
                self._moving = False

    def _strip_click(self, event: tk.Event[tk.Canvas]) -> None:
        index = self.screen.frame_at(event.x, self.strip.winfo_width())
        if index is not None:
            self._show(index)

    def _selected_indices(self) -> list[int]:
        return sorted(int(i) for i in self.tree.selection())

    def _selected(self, _event: object) -> None:
        focus = self.tree.focus()
        chosen = self._selected_indices()
        self._show(self.screen.frame_for_selection(chosen, int(focus) if focus else None))
        self._report("selected", selected=chosen)

    def _task_chosen(self, _event: object) -> None:
        self._task_id = self.task_pick.get() or None
        self._fill_task()

    # -- other sessions ----------------------------------------------------------------------------

    def _session_chosen(self, _event: object) -> None:
        index = self.sessions.current()
        chosen = self.screen.sessions
        self._open(chosen[index].id if 0 <= index < len(chosen) else None)

    def _open(self, session_id: str | None) -> None:
        """Show session ``session_id`` in this window (loaded in the background)."""
        screen = self.screen
        if session_id is None or (session_id == screen.review.session_id and not screen.deleted):
            self._show_sessions()
            return
        outcome = screen.open(session_id)
        if outcome.error:
            self._show_sessions()
            self._done(outcome)
            return
        self.session_id = session_id
        self.root.title(f"optin review — {session_id} (loading…)")
        self._task_id = None
        self.tree.delete(*self.tree.get_children())
        self.canvas.delete("all")
        self.counts.configure(text="Loading…")
        for label in (self.redacted, self.loss, self.approval_label, self.frame_label, self.marks):
            label.configure(text="")
        self.task_panel.grid_remove()
        self._show_sessions()
        self._set_status(outcome.status)
        self._report(outcome.state)
        self._work("load", "Reading screens", screen.review.load, lambda _r: self._ready())

    # -- actions: the presenter decides, the window shows the outcome ------------------------------

    def _press(self, name: str) -> str:
        button = self.buttons.get(name)  # Upload exists only when the study names an intake
        if button is not None and button.instate(["!disabled"]):
            button.invoke()
        else:
            self.root.bell()
        return "break"

    def _done(self, outcome: Outcome) -> None:
        if outcome.redraw:
            self._render(rebuild=outcome.rebuild)
        else:
            self._show_sessions()
            self._set_buttons()
        self._set_status(outcome.status, error=outcome.error)
        self._report(outcome.state, **outcome.extra)

    def _apply(self) -> None:
        screen = self.screen
        if not screen.review.cuts or not confirm_cut(
            self.root, screen.confirm_text(), heading=screen.confirm_heading(), report=self._report
        ):
            self._done(screen.nothing_cut())
            return
        self._set_status(screen.start_cut())
        self._work("cut", "Reading screens", screen.cut_job(), lambda r: self._done(screen.cut_done(r)))

    def _export(self) -> None:
        screen = self.screen
        self._set_status("Exporting: the session is redacted again, packed and encrypted…")
        self._work(
            "export",
            "Exporting: reading screens",
            screen.export_job(),
            lambda r: self._done(screen.exported(r)),
        )

    def _upload(self) -> None:
        screen = self.screen
        self._set_status("Uploading the export to the study's intake…")
        self._work(
            "upload", "Uploading: bytes", screen.upload_job(), lambda r: self._done(screen.uploaded(r))
        )

    def _change_folder(self) -> None:
        from tkinter import filedialog

        out_dir = self.screen.out_dir
        start = out_dir if out_dir.is_dir() else Path.home()
        chosen = filedialog.askdirectory(
            parent=self.root, initialdir=str(start), title="optin — where should exports go?", mustexist=False
        )
        if chosen:
            status = self.screen.folder_chosen(Path(chosen))
            self.folder.configure(text=self.screen.folder_text())
            self._set_status(status)
