"""The encrypted local session store (format v2, specified in ``docs/format.md``).

:mod:`agent.store.format` is the byte format's cryptography and, with
:mod:`agent.store.keyfile` and :mod:`agent.store.signing`, the only module that
touches ciphers; :mod:`agent.store.segment_layout` is the rest of the byte format
(constants, names, header parsing, the keyless framing scan);
:mod:`agent.store.keys` holds the volunteer's key pair (with
:mod:`agent.store.key_files`, :mod:`agent.store.keyring_store`,
:mod:`agent.store.recipient_file` and :mod:`agent.store.key_report`);
:mod:`agent.store.writer` records a session; :mod:`agent.store.reader` lists and
decrypts sessions, checking them with :mod:`agent.store.chain`;
:mod:`agent.store.recovery` seals what a killed recorder left (public key only);
:mod:`agent.store.verify` reads everything and reports every problem;
:mod:`agent.store.retention` deletes for real (crypto-shredding): the budget,
the retention, ``delete-last``, ``sessions delete`` and ``purge``.
"""
