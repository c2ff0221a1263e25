"""The encrypted local session store (format v1, specified in ``docs/format.md``).

:mod:`agent.store.format` is the byte format and the only module that touches
ciphers; :mod:`agent.store.keys` holds the volunteer's key pair;
:mod:`agent.store.writer` records a session; :mod:`agent.store.reader` lists and
decrypts sessions.
"""
