"""``python -m agent`` is the same as the ``optin`` command."""

from agent.cli import main

raise SystemExit(main())
