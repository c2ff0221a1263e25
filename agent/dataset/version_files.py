"""A version's bookkeeping objects: the ledger, the withdrawal register, totals, the wids descriptor.

What :mod:`agent.dataset.build` and :mod:`agent.dataset.withdraw` read from the current version
before they decide (every ledger row, the withdrawn pseudonyms and signing keys) and what they
hand to :func:`agent.dataset.versions.publish` (the next :class:`~agent.dataset.Version`
with its totals, its card and its wids descriptor). Every object read is checked against the
size and SHA-256 the version manifest lists.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

from agent.dataset import layout, tables
from agent.dataset.dest import Dest
from agent.dataset.manifest import FileObject, Version

#: A register line is small; a register of this many bytes is refused as damaged.
MAX_REGISTER = 64 * 1024 * 1024


def read_listed(dest: Dest, listed: FileObject) -> bytes:
    """The bytes of an object a version lists, refused unless they are its size and SHA-256."""
    data = dest.get(listed.path, max_size=listed.size).data
    if len(data) != listed.size or hashlib.sha256(data).hexdigest() != listed.sha256:
        msg = (
            f"{dest.where(listed.path)} is not the object the version lists (size or SHA-256 differ): DEST "
            "was changed outside optin. Fix: restore it from a backup, or build into a new DEST"
        )
        raise layout.LayoutError(msg)
    return data


def ledger_rows(dest: Dest, current: Version | None) -> list[tables.LedgerRow]:
    """Every ledger row of the current version (none before the first)."""
    if current is None:
        return []
    rows: list[tables.LedgerRow] = []
    for listed in current.ledger:
        rows += tables.read_ledger(read_listed(dest, listed))
    return rows


def register_lines(dest: Dest, current: Version | None) -> list[dict[str, Any]]:
    """The withdrawal register's lines, oldest first."""
    if current is None or current.register is None:
        return []
    data = read_listed(dest, current.register)
    return [json.loads(line) for line in data.splitlines() if line]


def withdrawn_keys(dest: Dest, current: Version | None) -> frozenset[str]:
    """Every withdrawn pseudonym and signing key: a build refuses their bundles."""
    keys: set[str] = set()
    for line in register_lines(dest, current):
        keys.add(str(line.get("volunteer", "")))
        keys.update(str(k) for k in line.get("signing_keys", []))
    keys.discard("")
    return frozenset(keys)


def write_ledger(dest: Dest, number: int, date: str, rows: Sequence[tables.LedgerRow]) -> FileObject:
    """A ledger file of ``rows`` under its name (:func:`agent.dataset.layout.ledger_id`)."""
    data = tables.ledger_bytes(rows)
    path = layout.table_path("ledger", date, layout.ledger_id(number, (r.sha256 for r in rows)))
    with dest.writer(path) as sink:
        sink.write(data)
    return FileObject.of(path, data, rows=len(rows))


def rewrite_ledger(
    dest: Dest,
    current: Version | None,
    number: int,
    keep: Callable[[tables.LedgerRow], tables.LedgerRow | None],
) -> tuple[list[FileObject], list[str]]:
    """The current ledger files, each rewritten under a new name when ``keep`` drops or changes a row.

    ``keep(row)`` gives the row to keep (maybe changed) or None. Returns the files of the next
    version and the paths of the replaced ones.
    """
    files: list[FileObject] = []
    replaced: list[str] = []
    for listed in current.ledger if current else ():
        rows = tables.read_ledger(read_listed(dest, listed))
        kept = [k for r in rows if (k := keep(r)) is not None]
        if kept == rows:
            files.append(listed)
            continue
        replaced.append(listed.path)
        if kept:
            files.append(write_ledger(dest, number, listed.path.split("/")[2], kept))
    return files, replaced


__all__ = [
    "MAX_REGISTER",
    "ledger_rows",
    "read_listed",
    "register_lines",
    "rewrite_ledger",
    "withdrawn_keys",
    "write_ledger",
]
