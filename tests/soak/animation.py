"""A video-like region for the soak: a small Tk window redrawn 25 times a second.

Run as its own process (``python -m tests.soak.animation TITLE``), never inside the agent.  A grid
of cells cycles through colours and a ball bounces across it, so every frame differs over the whole
window, as a playing video does.  The soak stops it (SIGSTOP) for idle stretches and continues it
(SIGCONT) afterwards.
"""

from __future__ import annotations

import colorsys
import sys
import tkinter as tk

COLS, ROWS, CELL = 16, 12, 20
FRAME_MS = 40


def main(title: str) -> None:
    root = tk.Tk()
    root.title(title)
    root.geometry(f"{COLS * CELL}x{ROWS * CELL}+900+420")
    canvas = tk.Canvas(root, width=COLS * CELL, height=ROWS * CELL, highlightthickness=0)
    canvas.pack()
    cells = [
        canvas.create_rectangle(c * CELL, r * CELL, (c + 1) * CELL, (r + 1) * CELL, width=0)
        for r in range(ROWS)
        for c in range(COLS)
    ]
    ball = canvas.create_oval(0, 0, 30, 30, fill="white", outline="black")
    state = {"n": 0, "x": 10.0, "y": 10.0, "dx": 7.0, "dy": 5.0}

    def tick() -> None:
        n = state["n"] = state["n"] + 1
        for i, cell in enumerate(cells):
            r, g, b = colorsys.hsv_to_rgb(((i % COLS) * 0.03 + (i // COLS) * 0.05 + n * 0.01) % 1.0, 0.6, 0.9)
            canvas.itemconfigure(cell, fill=f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}")
        for axis, speed, limit in (("x", "dx", COLS * CELL - 30), ("y", "dy", ROWS * CELL - 30)):
            state[axis] += state[speed]
            if not 0 <= state[axis] <= limit:
                state[speed] = -state[speed]
                state[axis] = min(max(state[axis], 0.0), float(limit))
        canvas.coords(ball, state["x"], state["y"], state["x"] + 30, state["y"] + 30)
        root.after(FRAME_MS, tick)

    root.after(FRAME_MS, tick)
    root.mainloop()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "soak animation")
