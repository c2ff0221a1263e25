"""A small GTK 3 form for the accessibility tests (run with the venv's python, never imported).

``python a11y_form.py TITLE X Y``: a window at (X, Y) with an entry "Username", a password entry
"Password", a check box "Remember me" and a button "Sign in"; once shown it prints one JSON line:
each widget's screen rectangle (x, y, width, height) from its GTK allocation.
With ``OPTIN_TEST_LONG_NAME=N`` the button's accessible name is N letters "N" (a hostile name).
"""

from __future__ import annotations

import json
import os
import sys

import gi

gi.require_version("Gtk", "3.0")
from gi.repository import GLib, Gtk  # noqa: E402 - after require_version


def main() -> None:
    title, x, y = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    window = Gtk.Window(title=title)
    window.move(x, y)
    window.set_default_size(400, 280)
    fixed = Gtk.Fixed()
    window.add(fixed)
    entry = Gtk.Entry()
    entry.set_size_request(300, 34)
    entry.get_accessible().set_name("Username")
    fixed.put(entry, 20, 20)
    password = Gtk.Entry()
    password.set_visibility(False)
    password.set_size_request(300, 34)
    password.get_accessible().set_name("Password")
    fixed.put(password, 20, 80)
    check = Gtk.CheckButton(label="Remember me")
    fixed.put(check, 20, 140)
    button = Gtk.Button(label="Sign in")
    button.set_size_request(120, 40)
    fixed.put(button, 20, 190)
    long_name = int(os.environ.get("OPTIN_TEST_LONG_NAME", "0"))
    if long_name:
        button.get_accessible().set_name("N" * long_name)
    window.connect("destroy", Gtk.main_quit)
    window.show_all()

    def report() -> bool:
        gdk_window = window.get_window()
        if gdk_window is None:
            return True
        _, ox, oy = gdk_window.get_origin()
        rects = {}
        for name, widget in (("entry", entry), ("password", password), ("check", check), ("button", button)):
            wx, wy = widget.translate_coordinates(window, 0, 0)
            alloc = widget.get_allocation()
            rects[name] = [ox + wx, oy + wy, alloc.width, alloc.height]
        sys.stdout.write(json.dumps(rects) + "\n")
        sys.stdout.flush()
        return False

    GLib.timeout_add(400, report)
    Gtk.main()


if __name__ == "__main__":
    main()
