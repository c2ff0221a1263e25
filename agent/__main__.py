"""``python -m agent`` is the same as the ``optin`` command.

``optin _dialog ARGS`` runs the dialog process (agent/ui/dialogs.py), so the
packaged app, which has no ``python -m``, can start it as the agent does.
"""

import sys

if sys.argv[1:2] == ["_dialog"]:
    from agent.ui.dialogs import main as dialog_main

    raise SystemExit(dialog_main(sys.argv[2:]))  # the dialog process hardens itself first (P5)

from agent.cli import main

raise SystemExit(main())
