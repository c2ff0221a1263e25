"""Entry point of the packaged optin app: the same as ``python -m agent``."""

import runpy

runpy.run_module("agent", run_name="__main__", alter_sys=True)
