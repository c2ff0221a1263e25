"""optin: a consent-first recorder of computer-use demonstrations.

The public surface is deliberately tiny; everything else is reached through the
``optin`` command (:mod:`agent.cli`).
"""

__version__ = "0.3.0"

__all__ = ["__version__"]
