"""Views over the controller: tray icon (pystray) and dialogs (Tk).

Modules here hold no state of their own; they render :mod:`agent.control`
state and call its methods.  Nothing outside ``agent.ui`` imports a GUI toolkit.
"""
