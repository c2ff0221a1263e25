"""Benchmarks: ``make bench`` (``python -m tests.benchmarks``); not collected by pytest.

Each benchmark runs the bare library and optin's path side by side in one run
and prints the ratio.  Record results with the machine in docs/performance.md.
"""
