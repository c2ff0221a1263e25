"""What a keystroke means, stated once: key names and classes, the hotkey grammar, the typed-text replay.

Pure: no I/O, no display, no pynput, no logging.  Everything above it reads keys
through this package: the hooks (:mod:`agent.capture.input`) and the screen watcher
(:mod:`agent.capture.screen`) while recording, the study file's check
(:mod:`agent.study`), and, over stored records only, redaction (:mod:`agent.redact`)
and the steps of an export (:mod:`agent.steps`).

- :mod:`agent.keyboard.names`: modifier and lock key names, the key classes, the paste chord.
- :mod:`agent.keyboard.hotkey`: the pause hotkey, as the study file states it and as the recorder matches it.
- :mod:`agent.keyboard.replay`: typed-text reconstruction: which key does what, field boundaries, provenance.
- :mod:`agent.keyboard.editing`: a field being typed into: caret, selection, deletions, the key tables.
"""
