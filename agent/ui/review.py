"""The review window (``optin review [ID]``): one session exactly as it would be exported.

A thin Tk view over :class:`agent.export.review.Review`: the redacted frames on a timeline
(masks visible), the list of steps (action, window, typed text after redaction) and the
counts; the volunteer marks time ranges to cut (deleted from this computer when applied),
approves the session and exports it.  What is shown, cut, approved and exported is decided
by ``Review``; this module only renders it and calls it.

Threads: Tk is used from the main thread only.  Unlocking the key runs there (it may ask for
the passphrase in a small modal dialog); loading, applying cuts and exporting run on one
background thread at a time, which reports progress through a queue the window polls with
``after()``.  Nothing decrypted is written anywhere: frames are decoded from memory and shown
through an in-memory image; the only files written are the store's own (a cut, the approval)
and the bundle, all by ``Review``.

Keys: Left/Right (Home/End) move through the frames (not while the step list has the focus);
Alt+S starts a cut at the frame shown, Alt+T ends it there, Alt+X cuts the selected steps,
Alt+L clears the marks, Alt+C applies them (after a confirmation whose focus starts on
Cancel), Alt+A approves, Alt+E exports, Alt+F changes the export folder; Escape, Alt+Q or
closing the window closes it.

``OPTIN_DIALOG_DEBUG_GEOMETRY=1`` prints one line ``optin-review-state {json}`` on stderr each
time the window gets ready, an action finishes or a dialog of its own is shown (for the
real-display tests)::

    {"state": "ready" | "marked" | "cancelled" | "cut" | "approved" | "exported" | "error"
              | "passphrase" | "confirm",
     "approval": "approved" | "not approved" | "changed", "frames": n, "steps": n,
     "cuts_marked": n, "cut_start": frame index | null, "frame": index shown, "frames_marked": n,
     "window": [x, y, width, height], "widgets": {name: [x, y]},    # centres, root coordinates
     "message": "..." (error), "bundle": "<id>.optin.tar.age" (exported)}

Counts, indices and error messages only (which never hold captured content); no step text.
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

from agent.errors import EnvironmentProblem, KeyError_, OptinError
from agent.export.review import Review, StepRow
from agent.paths import Dirs
from agent.study import Study
from agent.ui.consent_dialog import (
    _PAD,
    DEBUG_GEOMETRY_ENV,
    TK_PACKAGE,
    _bind_keys,
    _make_root,
    _show_up,
    _wrapping,
)

if TYPE_CHECKING:
    import tkinter as tk
    from tkinter import ttk

    from agent.events import Frame

#: Prefix of the debug lines on stderr (OPTIN_DIALOG_DEBUG_GEOMETRY=1).
STATE_PREFIX = "optin-review-state "
#: The frame is drawn at most this size at first (it follows the window when resized).
FRAME_SIZE = (900, 560)
#: How often the window looks at the background work's queue (milliseconds).
POLL_MS = 50

_RED = "#c4161c"
_GREEN = "#2e7d32"
_AMBER = "#8a4b00"

#: Words for :meth:`Review.approval_state`.
APPROVAL_WORDS = {
    "approved": ("Approved for export", "Good.TLabel"),
    "not approved": ("Not approved for export yet", "Notice.TLabel"),
    "changed": ("Changed since you approved it: approve it again to export it", "Notice.TLabel"),
}


#: Why a frame was taken (agent/capture/screen.py), in words.
TAKEN = {
    "start": "taken when recording started",
    "settled": "taken once the screen settled",
    "keyframe": "taken because the screen changed",
    "click": "taken just before a click",
    "release": "taken just before a button release",
    "scroll": "taken just before a scroll",
    "key": "taken just before typing",
    "hotkey": "taken just before a shortcut or a named key (Enter, Tab…)",
    "focus": "taken when the window changed",
}


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
        root = _make_root(title)
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


def _words(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _home_short(path: Path) -> str:
    """``~/optin-exports`` for a path under the home directory."""
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except ValueError:
        return str(path)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    if n < 1024 * 1024:
        return f"{n / 1024:.0f} kB"
    return f"{n / 1024 / 1024:.1f} MB"


def counts_text(summary: dict[str, Any]) -> str:
    """``6 steps (click 2, type 1) · 5 frames · 12.4 s``: counts only, never content."""
    actions = ", ".join(f"{k} {v}" for k, v in summary.get("by_action", {}).items())
    steps = _words(int(summary.get("steps", 0)), "step") + (f" ({actions})" if actions else "")
    frames = _words(int(summary.get("frames", 0)), "frame")
    return f"{steps} · {frames} · {float(summary.get('duration_s', 0.0)):.1f} s"


def redactions_text(summary: dict[str, Any]) -> str:
    """``Redacted: screen 5, typed 2, titles 1`` (per place), or that nothing was."""
    found = {k: v for k, v in summary.get("redactions", {}).items() if v}
    if not found:
        return "Redacted: nothing found to redact"
    return "Redacted: " + ", ".join(f"{where} {n}" for where, n in found.items())


def loss_text(summary: dict[str, Any]) -> str:
    """What the session lacks (drops, frames left out, a crash), or an empty string."""
    loss = summary.get("loss", {})
    parts = []
    if loss.get("clean_stop") is False:
        parts.append("the recording ended without a clean stop")
    for key, words in (
        ("dropped_events", "events dropped under load"),
        ("frame_failures", "screenshots that failed"),
        ("frames_left_out_ocr_failed", "frames left out (their text could not be read)"),
    ):
        if loss.get(key):
            parts.append(f"{loss[key]} {words}")
    if loss.get("cuts"):
        parts.append(f"{_words(int(loss['cuts']), 'part')} you cut ({float(loss.get('cut_s', 0)):.1f} s)")
    return ("Left out: " + "; ".join(parts)) if parts else ""


class ReviewWindow:
    """The window; ``run()`` shows it until it is closed."""

    def __init__(self, root: tk.Tk, dirs: Dirs, study: Study, session_id: str, out_dir: Path) -> None:
        self.root = root
        self.study = study
        self.session_id = session_id
        self.out_dir = out_dir
        self.review = Review(dirs, study, session_id, ask_passphrase=self._ask_passphrase)
        self.failure: OptinError | None = None  #: raised by run() after the window closed
        self.loaded = False
        self.locked = False  #: the session changed under the window, or is gone: only Close works
        self.busy: str | None = None  #: "load", "cut" or "export" while the background thread works
        self.closed = False
        self._asked = 0
        self._cancelled = False  #: the volunteer cancelled the passphrase dialog
        self._queue: queue.Queue[tuple[Any, ...]] = queue.Queue()
        # what is shown (refreshed from the review when no background work runs)
        self.frames: list[Frame] = []
        self.start_ns = 0  #: the session's first event: times shown are seconds from it
        self.rows: list[StepRow] = []
        self.frame_cut: list[bool] = []
        self.step_frame: list[int | None] = []
        self.step_where: list[tuple[str, int | None, int | None, int | None, int | None]] = []
        self.current = 0
        self.cut_start: int | None = None  #: frame index where a cut starts (Alt+S), until Alt+T
        self.approval = "not approved"
        self._photo: tk.PhotoImage | None = None
        self._moving = False
        self._build()

    # -- layout ----------------------------------------------------------------------------------

    def _build(self) -> None:
        from tkinter import ttk

        root = self.root
        root.report_callback_exception = self._unexpected
        outer = ttk.Frame(root, padding=_PAD)
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
        self.buttons: dict[str, ttk.Button] = {}
        self._build_buttons(outer).grid(row=3, column=0, sticky="ew", pady=(6, 0))
        self._build_folder(outer).grid(row=4, column=0, sticky="ew", pady=(6, 0))
        self.status = ttk.Label(outer, text="", style="TLabel")
        self.status.grid(row=5, column=0, sticky="ew", pady=(6, 0))
        _wrapping(self.marks, outer, 2 * _PAD)
        _wrapping(self.status, outer, 2 * _PAD)
        self._show_folder()
        self._bind()
        self._set_buttons()

    def _build_header(self, parent: tk.Misc) -> ttk.Frame:
        """Study, session, counts, redactions, losses and the approval."""
        from tkinter import ttk

        header = ttk.Frame(parent)
        header.columnconfigure(0, weight=1)
        heading = f"Review before export: {self.study.name}"
        ttk.Label(header, text=heading, style="Heading.TLabel").grid(row=0, column=0, sticky="w")
        about = f"Session {self.session_id} · study {self.study.id} · what you see is what an export holds"
        ttk.Label(header, text=about, style="Small.TLabel").grid(row=1, column=0, sticky="w")
        self.counts = ttk.Label(header, text="Loading…")
        self.counts.grid(row=2, column=0, sticky="w", pady=(4, 0))
        self.redacted = ttk.Label(header, text="", style="Small.TLabel")
        self.redacted.grid(row=3, column=0, sticky="w")
        self.approval_label = ttk.Label(header, text="", style="Section.TLabel")
        self.approval_label.grid(row=0, column=1, rowspan=2, sticky="ne")
        self.loss = ttk.Label(header, text="", style="Notice.TLabel")
        self.loss.grid(row=2, column=1, rowspan=2, sticky="se")
        return header

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

        side = ttk.Frame(parent, padding=(_PAD, 0, 0, 0))
        side.columnconfigure(0, weight=1)
        side.rowconfigure(1, weight=1)
        ttk.Label(side, text="Steps, as exported", style="Section.TLabel").grid(row=0, column=0, sticky="w")
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
        linespace = tkfont.nametofont("TkDefaultFont", self.root).metrics("linespace")
        ttk.Style(self.root).configure("Treeview", rowheight=linespace + 6)
        scroll = ttk.Scrollbar(side, orient="vertical", command=tree.yview)
        tree.configure(yscrollcommand=scroll.set)
        tree.grid(row=1, column=0, sticky="nsew", pady=(4, 0))
        scroll.grid(row=1, column=1, sticky="ns", pady=(4, 0))
        tree.bind("<<TreeviewSelect>>", self._selected)
        hint = "Select a step to see the screen just before it; Ctrl or Shift selects several."
        ttk.Label(side, text=hint, style="Small.TLabel", wraplength=360).grid(
            row=2, column=0, columnspan=2, sticky="w", pady=(4, 0)
        )
        self.tree = tree
        return side

    def _build_buttons(self, parent: tk.Misc) -> ttk.Frame:
        """Cut, clear and apply on the left; approve, export and close on the right."""
        from tkinter import ttk

        bar = ttk.Frame(parent)
        bar.columnconfigure(5, weight=1)
        buttons: tuple[tuple[str, str, int, Callable[[], None]], ...] = (
            ("cut_from", "Cut starts here", 4, self._cut_from),
            ("cut_to", "Cut to here", 4, self._cut_to),
            ("cut_steps", "Cut selected steps", -1, self._cut_steps),
            ("clear", "Clear marks", 1, self._clear),
            ("apply", "Apply cuts…", 6, self._apply),
            ("approve", "Approve", 0, self._approve),
            ("export", "Export", 0, self._export),
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
        keys = {
            "s": "cut_from",
            "t": "cut_to",
            "x": "cut_steps",
            "l": "clear",
            "c": "apply",
            "a": "approve",
            "e": "export",
            "f": "folder",
        }
        for key, name in keys.items():
            for k in (key, key.upper()):
                root.bind(f"<Alt-{k}>", self._presser(name))
        root.bind("<Alt-q>", lambda _e: self._close())
        root.bind("<Alt-Q>", lambda _e: self._close())
        for key, move in (("Left", -1), ("Right", 1), ("Home", -(10**9)), ("End", 10**9)):
            root.bind(f"<{key}>", self._mover(move))
        _bind_keys(root, self._close)

    def _presser(self, name: str) -> Callable[[object], str]:
        return lambda _e: self._press(name)

    def _mover(self, move: int) -> Callable[[object], str | None]:
        return lambda _e: self._arrow(move)

    def _show_folder(self) -> None:
        self.folder.configure(text=f"Export writes to {_home_short(self.out_dir)}")

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
                self.paned.sashpos(0, int(event.width * 0.6))

        root.bind("<Map>", on_map)
        self.paned.bind("<Configure>", place_sash)
        _show_up(root, self.canvas)
        root.mainloop()
        self.closed = True
        if self.failure is not None:
            raise self.failure
        return 0

    def _unlock_and_load(self) -> None:
        if self.closed:
            return
        try:
            self.review.unlock()
        except OptinError as exc:
            if self._cancelled or self.closed:  # no passphrase: the window closes, the command fails
                self.failure = exc
                if not self.closed:
                    self._destroy()
                return
            self._load_failed(exc)
            return
        if self.closed:
            return
        self._work("load", "Reading screens", self.review.load, lambda _r: self._ready())

    def _ready(self) -> None:
        self.loaded = True
        self._refresh(rebuild=True)
        self._show(0)
        self._set_status("Look through the frames and steps, cut what should not leave, then approve.")
        self.root.title(f"optin review — {self.session_id}")
        self._report("ready")

    def _load_failed(self, exc: OptinError) -> None:
        self.failure = exc
        self.locked = True
        self.root.title(f"optin review — {self.session_id} (cannot be shown)")
        self.counts.configure(text="This session cannot be shown.")
        self.canvas.delete("all")
        self.canvas.create_text(
            24,
            24,
            anchor="nw",
            text=str(exc),
            fill="#ffffff",
            width=max(300, self.canvas.winfo_width() - 48),
            font="TkDefaultFont",
        )
        self._set_status("Nothing can be reviewed or exported: close this window (Esc).", error=True)
        self._set_buttons()
        self.buttons["close"].focus_set()
        self._report("error", message=str(exc))

    def _destroy(self) -> None:
        self.closed = True
        self.root.destroy()

    def _close(self) -> None:
        if self.busy in ("cut", "export"):
            doing = "the cut" if self.busy == "cut" else "the export"
            self._set_status(f"Please wait until {doing} has finished: closing now would leave it half done.")
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
        if not self.closed:
            self._set_status(f"Something unexpected went wrong ({exc_type.__name__}).", error=True)

    # -- the passphrase dialog (modal, on the Tk thread) -----------------------------------------

    def _ask_passphrase(self, _prompt: str) -> bytes:
        import tkinter as tk
        from tkinter import ttk

        self._asked += 1
        top = tk.Toplevel(self.root)
        top.title("optin — unlock your recordings")
        top.transient(self.root)
        frame = ttk.Frame(top, padding=_PAD + 4)
        frame.grid(row=0, column=0, sticky="nsew")
        frame.columnconfigure(0, weight=1)
        ttk.Label(frame, text="Unlock your recordings", style="Heading.TLabel").grid(
            row=0, column=0, sticky="w"
        )
        body = (
            "Your passphrase opens this session on this computer. "
            "It is kept in memory only, never written down."
        )
        ttk.Label(frame, text=body, wraplength=420).grid(row=1, column=0, sticky="w", pady=(8, 0))
        if self._asked > 1:
            again = "That passphrase did not unlock your key. Try again."
            ttk.Label(frame, text=again, style="Notice.TLabel").grid(row=2, column=0, sticky="w", pady=(6, 0))
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
        top.resizable(False, False)
        top.wait_visibility()
        top.grab_set()
        top.focus_force()
        entry.focus_set()
        self._report("passphrase", {"entry": entry, "ok": ok_button, "cancel": cancel_button}, top)
        self.root.wait_window(top)
        if not answer:
            self._cancelled = True
            msg = "no passphrase was entered"
            raise KeyError_(msg)
        return answer[0]

    # -- background work ---------------------------------------------------------------------------

    def _work(
        self,
        what: str,
        label: str,
        work: Callable[[Callable[[int, int], None]], Any],
        done: Callable[[Any], None],
    ) -> None:
        """Run ``work(progress)`` on a background thread; ``done(result)`` on the Tk thread."""
        self.busy = what
        self._set_buttons()
        self.progress_label.configure(text=label + "…")
        self.progress.configure(mode="indeterminate", value=0)
        self.progress.grid()
        self.progress.start(15)
        answers = self._queue

        def progress(n: int, total: int) -> None:
            answers.put(("progress", n, total))

        def run() -> None:
            try:
                result = work(progress)
            except BaseException as exc:  # every failure is shown; none may kill the window
                answers.put(("error", exc))
            else:
                answers.put(("done", result))

        threading.Thread(target=run, name=f"optin-review-{what}", daemon=True).start()
        self.root.after(POLL_MS, lambda: self._poll(label, done))

    def _poll(self, label: str, done: Callable[[Any], None]) -> None:
        if self.closed:
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
            what = self.busy
            self.busy = None
            self.progress.stop()
            self.progress.configure(mode="determinate", value=0)
            self.progress.grid_remove()
            self.progress_label.configure(text="")
            if item[0] == "done":
                done(item[1])
            else:
                self._failed(what, item[1])
            self._set_buttons()
            return

    def _failed(self, what: str | None, exc: BaseException) -> None:
        error = exc if isinstance(exc, OptinError) else None
        message = (
            str(exc) if error is not None else f"Something unexpected went wrong ({type(exc).__name__})."
        )
        if what == "load":
            self._load_failed(error or OptinError(message))
            return
        if what == "cut" and not self.review.cuts:
            # the cut was made but the session could not be read again: what is shown is gone
            self.locked = True
            message += " Close the window and open the review again."
        self._set_status(message, error=True)
        self._report("error", message=message)

    # -- what is shown ---------------------------------------------------------------------------

    def _refresh(self, *, rebuild: bool) -> None:
        """Read what to show from the review (never while background work runs)."""
        from agent.events import Frame

        review = self.review
        self.frames = review.frames()
        self.rows = review.rows()
        self.start_ns = review.start_ns
        self.frame_cut = [review.frame_in_cut(f) for f in self.frames]
        prepared = review.prepared
        if prepared is not None and rebuild:
            position: dict[int, int] = {}
            for i, event in enumerate(prepared.events):
                if isinstance(event, Frame):
                    position[i] = len(position)
            self.step_frame = [position.get(s.frame) if s.frame is not None else None for s in prepared.steps]
            self.step_where = [(s.action, s.x, s.y, s.to_x, s.to_y) for s in prepared.steps]
        summary = review.summary()
        self.approval = review.approval_state()
        self.counts.configure(text=counts_text(summary))
        self.redacted.configure(text=redactions_text(summary))
        self.loss.configure(text=loss_text(summary))
        words, style = APPROVAL_WORDS.get(self.approval, (self.approval, "Notice.TLabel"))
        self.approval_label.configure(text=words, style=style)
        self.timeline.configure(to=max(0, len(self.frames) - 1))
        self._fill_tree(rebuild=rebuild)
        self._show_marks()
        self._set_buttons()
        self._show(self.current)

    def _fill_tree(self, *, rebuild: bool) -> None:
        tree = self.tree
        if rebuild or len(tree.get_children()) != len(self.rows):
            tree.delete(*tree.get_children())
            for row in self.rows:
                values = (f"{row.t_s:.1f}", row.action, row.detail, row.window)
                tree.insert("", "end", iid=str(row.index), values=values, tags=("cut",) if row.cut else ())
            return
        for row in self.rows:
            tree.item(str(row.index), tags=("cut",) if row.cut else ())

    def _show(self, index: int) -> None:
        """Show frame ``index`` (clamped) on the canvas, the timeline and the label under it."""
        n = len(self.frames)
        self.current = max(0, min(index, n - 1)) if n else 0
        self._moving = True
        try:
            self.timeline.set(self.current)
        finally:
            self._moving = False
        if not n:
            self.frame_label.configure(text="This session has no frames.")
        else:
            frame = self.frames[self.current]
            t = (frame.t_ns - self.start_ns) / 1e9
            taken = TAKEN.get(frame.reason, f"taken: {frame.reason}")
            text = f"frame {self.current + 1} of {n} · {t:.1f} s · {taken}"
            before = [i for i in self._selected_indices() if self._frame_of(i) == self.current]
            if before:
                text += f" · the screen before step {before[0] + 1} ({self.rows[before[0]].action})"
            if self.frame_cut[self.current]:
                text += "  (marked to cut)"
            self.frame_label.configure(
                text=text, style="Error.TLabel" if self.frame_cut[self.current] else "TLabel"
            )
        self._draw()
        self._draw_strip()

    def _draw(self) -> None:
        """Draw the current frame scaled to the canvas (in memory only), dimmed with a red band when
        it is marked to cut, with the selected step's position."""
        import tkinter as tk

        from PIL import Image

        canvas = self.canvas
        cw, ch = canvas.winfo_width(), canvas.winfo_height()
        if cw < 20 or ch < 20 or self.failure is not None or not self.loaded:
            return
        if not self.frames:
            canvas.delete("all")
            words = "No screenshots: this session did not record the screen."
            canvas.create_text(cw // 2, ch // 2, text=words, fill="#ffffff", font="TkDefaultFont")
            return
        frame = self.frames[self.current]
        with Image.open(io.BytesIO(frame.data)) as opened:
            image = opened.convert("RGB")
        scale = min(cw / image.width, ch / image.height)
        size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
        resample = Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.BILINEAR
        image = image.resize(size, resample)
        cut = self.frame_cut[self.current]
        if cut:
            image = Image.blend(image, Image.new("RGB", size, (20, 20, 20)), 0.6)
        ppm = f"P6 {size[0]} {size[1]} 255\n".encode("ascii") + image.tobytes()
        self._photo = tk.PhotoImage(master=self.root, data=ppm, format="ppm")
        x0, y0 = (cw - size[0]) // 2, (ch - size[1]) // 2
        canvas.delete("all")
        canvas.create_image(x0, y0, image=self._photo, anchor="nw")
        for index in self._selected_indices():
            if self._frame_of(index) == self.current:
                action, x, y, to_x, to_y = self.step_where[index]
                if x is None or y is None:
                    continue
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
        n = len(self.frames)
        width = strip.winfo_width()
        if not n or width < 10:
            return
        cell = width / n
        for i in range(n):
            colour = _RED if self.frame_cut[i] else "#b8b8b8"
            if i == self.cut_start:
                colour = "#e69500"
            strip.create_rectangle(i * cell + 1, 1, (i + 1) * cell - 1, 9, fill=colour, outline="")
        x = self.current * cell
        strip.create_rectangle(x, 0, x + cell, 10, outline="#3465a4", width=2)

    def _show_marks(self) -> None:
        cuts = self.review.cuts
        if self.cut_start is not None and self.frames:
            t = (self.frames[self.cut_start].t_ns - self.start_ns) / 1e9
            text = (
                f"A cut starts at {t:.1f} s (frame {self.cut_start + 1}): go to its last frame "
                "and press Cut to here (Alt+T)."
            )
            style = "Notice.TLabel"
        elif cuts:
            start = self.start_ns
            spans = ", ".join(f"{(a - start) / 1e9:.1f}–{(b - start) / 1e9:.1f} s" for a, b in cuts)
            frames = sum(self.frame_cut)
            steps = sum(1 for r in self.rows if r.cut)
            text = (
                f"Marked to cut: {_words(len(cuts), 'range')} ({spans}): {_words(frames, 'frame')}, "
                f"{_words(steps, 'step')}. Nothing is deleted until you press Apply cuts (Alt+C)."
            )
            style = "Notice.TLabel"
        else:
            text = (
                "To cut a part: show its first frame (← →), press Cut starts here (Alt+S), show its last "
                "frame, press Cut to here (Alt+T); or select steps and press Cut selected steps (Alt+X)."
            )
            style = "Small.TLabel"
        self.marks.configure(text=text, style=style)

    def _set_buttons(self) -> None:
        ready = self.loaded and not self.locked and self.busy is None
        has_cuts = bool(self.review.cuts)
        enabled = {
            "cut_from": ready and bool(self.frames),
            "cut_to": ready and bool(self.frames),
            "cut_steps": ready and bool(self.rows),
            "clear": ready and (has_cuts or self.cut_start is not None),
            "apply": ready and has_cuts,
            "approve": ready and not has_cuts and self.cut_start is None,
            "export": ready and not has_cuts and self.cut_start is None,
            "folder": not self.locked and self.busy != "export",
            "close": True,
        }
        for name, button in self.buttons.items():
            button.state(["!disabled"] if enabled.get(name, False) else ["disabled"])

    def _set_status(self, text: str, *, error: bool = False) -> None:
        self.status.configure(text=text, style="Error.TLabel" if error else "TLabel")

    def _report(
        self, state: str, widgets: dict[str, Any] | None = None, top: Any = None, **extra: Any
    ) -> None:
        """With OPTIN_DIALOG_DEBUG_GEOMETRY=1: one ``optin-review-state`` line on stderr (counts and
        widget centres; never content)."""
        if os.environ.get(DEBUG_GEOMETRY_ENV) != "1" or self.closed:
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
            }
        out = {
            "state": state,
            "approval": self.approval,
            "frames": len(self.frames),
            "steps": len(self.rows),
            "cuts_marked": len(self.review.cuts),
            "cut_start": self.cut_start,
            "frame": self.current,
            "frames_marked": sum(self.frame_cut),
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
        if focus is self.tree or not self.frames:
            return None  # the step list moves its own selection
        self._show(self.current + move)
        return "break"

    def _slid(self, value: str) -> None:
        if self._moving or not self.frames:
            return
        index = round(float(value))
        if index != self.current:
            self._show(index)
        else:
            self._moving = True
            try:
                self.timeline.set(index)
            finally:
                self._moving = False

    def _strip_click(self, event: tk.Event[tk.Canvas]) -> None:
        n = len(self.frames)
        width = self.strip.winfo_width()
        if n and width > 0:
            self._show(int(event.x / width * n))

    def _frame_of(self, step: int) -> int | None:
        return self.step_frame[step] if 0 <= step < len(self.step_frame) else None

    def _selected_indices(self) -> list[int]:
        return sorted(int(i) for i in self.tree.selection())

    def _selected(self, _event: object) -> None:
        chosen = self._selected_indices()
        focus = self.tree.focus()
        index = int(focus) if focus and int(focus) in chosen else (chosen[0] if chosen else None)
        frame = self._frame_of(index) if index is not None else None
        self._show(self.current if frame is None else frame)

    # -- actions ---------------------------------------------------------------------------------

    def _press(self, name: str) -> str:
        button = self.buttons[name]
        if button.instate(["!disabled"]):
            button.invoke()
        else:
            self.root.bell()
        return "break"

    def _marked(self, status: str) -> None:
        self._refresh(rebuild=False)
        self._set_status(status)
        self._report("marked")

    def _cut_from(self) -> None:
        self.cut_start = self.current
        self._marked("Cut start marked. Now show the last frame to cut and press Cut to here (Alt+T).")

    def _cut_to(self) -> None:
        if self.cut_start is None:
            self._set_status("First show where the cut starts and press Cut starts here (Alt+S).", error=True)
            self._report("error", message="no cut start")
            return
        start, end = self.frames[self.cut_start].t_ns, self.frames[self.current].t_ns
        self.review.add_cut(start, end)
        self.cut_start = None
        self._marked("Marked to cut. Press Apply cuts (Alt+C) to delete it from this computer.")

    def _cut_steps(self) -> None:
        try:
            start, end = self.review.step_span(self._selected_indices())
        except OptinError as exc:
            self._set_status(f"Cannot cut steps: {exc}.", error=True)
            self._report("error", message=str(exc))
            return
        self.review.add_cut(start, end)
        self._marked(
            "The selected steps are marked to cut. Apply cuts (Alt+C) deletes them from this computer."
        )

    def _clear(self) -> None:
        self.review.clear_cuts()
        self.cut_start = None
        self._marked("No part is marked to cut any more.")

    def _apply(self) -> None:
        cuts = len(self.review.cuts)
        if not cuts or not self._confirm_apply():
            self._set_status("Nothing was cut.")
            self._report("cancelled")
            return

        def done(report: Any) -> None:
            self._refresh(rebuild=True)
            self._set_status(
                f"Cut {_words(report.ranges, 'range')}: {_words(report.events, 'event')} and "
                f"{_words(report.frames, 'frame')} deleted from this computer."
            )
            self._report("cut")

        self.cut_start = None
        self._set_status("Cutting: the rest of the session is encrypted again and the old copy destroyed…")
        self._work("cut", "Reading screens", self.review.apply_cuts, done)

    def _confirm_apply(self) -> bool:
        """A modal question whose focus starts on Cancel: delete the marked ranges for good?"""
        import tkinter as tk
        from tkinter import ttk

        n = len(self.review.cuts)
        ranges = "marked range" if n == 1 else f"{n} marked ranges"
        frames, steps = sum(self.frame_cut), sum(1 for r in self.rows if r.cut)
        top = tk.Toplevel(self.root)
        top.title("optin — delete the marked parts?")
        top.transient(self.root)
        frame = ttk.Frame(top, padding=_PAD + 4)
        frame.grid(row=0, column=0, sticky="nsew")
        frame.columnconfigure(0, weight=1)
        heading = "Delete the marked parts from this computer?"
        ttk.Label(frame, text=heading, style="Heading.TLabel").grid(row=0, column=0, sticky="w")
        body = (
            f"The {ranges} ({_words(frames, 'frame')} and {_words(steps, 'step')} shown now) will be "
            "deleted from this computer: the rest of the session is encrypted again without them and the "
            "old copy is destroyed. This cannot be undone. What remains must be approved again before "
            "it can be exported."
        )
        ttk.Label(frame, text=body, wraplength=480).grid(row=1, column=0, sticky="w", pady=(8, 0))
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
        top.resizable(False, False)
        top.wait_visibility()
        top.grab_set()
        top.focus_force()
        cancel.focus_set()
        self._report("confirm", {"cancel": cancel, "delete": delete}, top)
        self.root.wait_window(top)
        return bool(answer)

    def _approve(self) -> None:
        try:
            self.review.approve()
        except OptinError as exc:
            self._set_status(str(exc), error=True)
            self._report("error", message=str(exc))
            return
        self._refresh(rebuild=False)
        self._set_status("Approved. Export (Alt+E) writes the encrypted bundle for the study.")
        self._report("approved")

    def _export(self) -> None:
        out = self.out_dir

        def done(result: Any) -> None:
            where = _home_short(result.path)
            text = f"Exported to {where} ({_size(result.bytes)}), encrypted to the study's key."
            if result.deleted_locally:
                self.locked = True
                text += " As the study asks, the session was then deleted from this computer."
            else:
                self.approval = self.review.approval_state()
            self._set_status(text)
            self._report("exported", bundle=result.path.name)

        self._set_status("Exporting: the session is redacted again, packed and encrypted…")
        self._work("export", "Exporting: reading screens", lambda p: self.review.export(out, p), done)

    def _change_folder(self) -> None:
        from tkinter import filedialog

        start = self.out_dir if self.out_dir.is_dir() else Path.home()
        chosen = filedialog.askdirectory(
            parent=self.root, initialdir=str(start), title="optin — where should exports go?", mustexist=False
        )
        if chosen:
            self.out_dir = Path(chosen)
            self._show_folder()
            self._set_status(f"Export will write to {_home_short(self.out_dir)}.")
