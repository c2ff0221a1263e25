"""``python -m agent`` is the same as the ``optin`` command.

``optin _dialog ARGS`` runs the dialog process (agent/ui/dialogs.py) and ``optin _element-lookup
ARGS`` the X11 element lookup process (agent/backends/xorg/a11y_child.py), so the packaged app,
which has no ``python -m``, can start them as the agent does.
"""

import sys

if sys.argv[1:2] == ["_dialog"]:
    from agent.ui.dialogs import main as dialog_main

    raise SystemExit(dialog_main(sys.argv[2:]))  # the dialog process hardens itself first (P5)

if sys.argv[1:2] == ["_element-lookup"]:
    from agent.backends.xorg.a11y_child import main as lookup_main

    raise SystemExit(lookup_main(sys.argv[2:]))  # it hardens itself first (P5)

from agent.cli import main

raise SystemExit(main())
