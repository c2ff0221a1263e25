"""``optin upload``: the volunteer's explicit delivery of exported bundles to the study's intake
(docs/upload.md).

The only network code in optin's volunteer side lives in this package, and ``optin run`` never loads
it (tests/unit/test_no_network.py). :mod:`agent.upload.http` speaks HTTP(S) with the standard library
(certificates checked, no redirects, bounded answers); :mod:`agent.upload.sender` sends one bundle:
signed requests, parts with their MD5, resume, verdict.
"""
