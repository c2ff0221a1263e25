"""The version manifest and ``CURRENT`` of a dataset (docs/dataset.md: The version manifest, CURRENT).

Written as canonical JSON (:mod:`agent.canonical_json`) and read back strictly: exactly the canonical
bytes, every key, every type, and every path against the grammar and against the name its role gives it
(a part's shard is ``shards/ingest_date=<its date>/<its id>.tar``, a card is under ``cards/v<this
version>/``), so a forged manifest can neither point a reader outside the layout nor at another
version's objects. Refusals are :class:`~agent.dataset.layout.LayoutError` naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from agent.canonical_json import canonical
from agent.dataset.dest import ObjectKeyRefused, check_key
from agent.dataset.layout import (
    FORMAT,
    GC_PREFIXES,
    HEX32,
    HEX64,
    PART_TABLES,
    PLOT,
    LayoutError,
    card_dir,
    day,
    index_path,
    parse_utc,
    shard_path,
    table_path,
    version_path,
    wids_path,
)

_LEDGER = re.compile(r"tables/ledger/ingest_date=\d{4}-\d{2}-\d{2}/[0-9a-f]{32}\.parquet", re.ASCII)
_REGISTER = re.compile(r"register/[0-9a-f]{32}\.jsonl", re.ASCII)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_MAX_INT = 2**63 - 1
_MAX_TEXT = 1024


# --- strict reading -----------------------------------------------------------------------------------


class JsonReader:
    """Checks one JSON document's values; every refusal names the document and the key."""

    def __init__(self, doc: str) -> None:
        self.doc = doc

    def refuse(self, where: str, problem: str) -> NoReturn:
        """:raises LayoutError: naming the document, the key and the fix."""
        msg = (
            f"refused {self.doc}: {where} {problem}. Fix: DEST holds a file optin did not write (or a "
            "damaged one); restore DEST from a copy or rebuild it"
        )
        raise LayoutError(msg) from None

    def obj(
        self, value: Any, where: str, keys: Iterable[str], optional: Iterable[str] = ()
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.refuse(where, "is not an object")
        required, allowed = set(keys), set(keys) | set(optional)
        missing, extra = sorted(required - set(value)), sorted(set(value) - allowed)
        if missing or extra:
            shown = ", ".join(
                [*(f"missing {k!r}" for k in missing), *(f"unknown {ascii(k)[:40]}" for k in extra)]
            )
            self.refuse(where, f"has the wrong keys ({shown})")
        return value

    def integer(self, value: Any, where: str, *, low: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= _MAX_INT:
            self.refuse(where, f"is not an integer >= {low}")
        return value

    def text(self, value: Any, where: str, pattern: re.Pattern[str] | None = None) -> str:
        if not isinstance(value, str) or not 0 < len(value) <= _MAX_TEXT or not value.isprintable():
            self.refuse(where, f"is not a printable string of 1 to {_MAX_TEXT} characters")
        if pattern is not None and not pattern.fullmatch(value):
            self.refuse(where, f"is not of the form {pattern.pattern}")
        return value

    def path(self, value: Any, where: str, expected: str | re.Pattern[str] | None = None) -> str:
        if not isinstance(value, str):
            self.refuse(where, "is not a path")
        if isinstance(expected, str) and value == expected:
            return value  # ``expected`` was built by layout's names, so it is checked already
        try:
            check_key(value)
        except ObjectKeyRefused:
            self.refuse(where, f"is {ascii(value)[:80]}, not a path of the layout")
        if isinstance(expected, str) and value != expected:
            self.refuse(where, f"is {value}, not {expected} (the name its role gives it)")
        if isinstance(expected, re.Pattern) and not expected.fullmatch(value):
            self.refuse(where, f"is {value}, not of the form {expected.pattern}")
        return value

    def items(self, value: Any, where: str) -> list[Any]:
        if not isinstance(value, list):
            self.refuse(where, "is not a list")
        return value

    def sorted_texts(self, value: Any, where: str, pattern: re.Pattern[str] | None = None) -> tuple[str, ...]:
        out = tuple(self.text(v, f"{where}[{i}]", pattern) for i, v in enumerate(self.items(value, where)))
        if list(out) != sorted(set(out)):
            self.refuse(where, "is not sorted, or repeats an entry")
        return out


def load_json(data: bytes, doc: str) -> Any:
    """``data`` as canonical JSON (no duplicate keys, no NaN, exactly the canonical bytes)."""
    reader = JsonReader(doc)

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(items)
        if len(out) != len(items):
            reader.refuse("an object", "repeats a key")
        return out

    def constant(name: str) -> Any:
        reader.refuse("a number", f"is {name}")

    try:
        value = json.loads(data.decode("utf-8"), object_pairs_hook=pairs, parse_constant=constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        reader.refuse("the file", "is not UTF-8 JSON")
    if canonical(value) != data:
        reader.refuse("the file", "is not canonical JSON (sorted keys, no spaces)")
    return value


# --- the manifest's objects ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FileObject:
    """An object a version lists: its path, size, SHA-256 (hex) and, for Parquet, its row count."""

    path: str
    size: int
    sha256: str
    rows: int | None = None

    @classmethod
    def of(cls, path: str, data: bytes, *, rows: int | None = None) -> FileObject:
        """The file object of ``data`` stored under ``path``."""
        return cls(check_key(path), len(data), hashlib.sha256(data).hexdigest(), rows)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "size": self.size, "sha256": self.sha256}
        if self.rows is not None:
            out["rows"] = self.rows
        return out

    @classmethod
    def _parse(
        cls,
        r: JsonReader,
        value: Any,
        where: str,
        path: str | re.Pattern[str] | None = None,
        *,
        rows: bool = False,
    ) -> FileObject:
        keys = ("path", "size", "sha256", "rows") if rows else ("path", "size", "sha256")
        d = r.obj(value, where, keys)
        return cls(
            r.path(d["path"], f"{where}.path", path),
            r.integer(d["size"], f"{where}.size"),
            r.text(d["sha256"], f"{where}.sha256", HEX64),
            r.integer(d["rows"], f"{where}.rows") if rows else None,
        )


_PART_KEYS = (
    "id",
    "ingest_date",
    "build_version",
    "bundles",
    "sessions",
    "steps",
    "shard",
    "index",
    "tables",
)
_SIGNING_KEY = re.compile(r"[A-Za-z0-9+/]{43}=", re.ASCII)
_PSEUDONYM = re.compile(r"[A-Za-z0-9_-]{1,128}", re.ASCII)


@dataclass(frozen=True)
class PartObject:
    """One part of a version: its shard, index and five table files, all named after its id and date."""

    id: str
    ingest_date: str
    build_version: int
    bundles: int
    sessions: int
    steps: int
    shard: FileObject
    index: FileObject
    tables: Mapping[str, FileObject]
    volunteers: tuple[str, ...]
    signing_keys: tuple[str, ...]
    #: Samples whose step has no frame (the placeholder image): what totals need without the tables.
    samples_without_image: int = 0

    def files(self) -> list[FileObject]:
        """The part's objects: shard, index, then the tables in :data:`PART_TABLES` order."""
        return [self.shard, self.index, *(self.tables[t] for t in PART_TABLES)]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ingest_date": self.ingest_date,
            "build_version": self.build_version,
            "bundles": self.bundles,
            "sessions": self.sessions,
            "steps": self.steps,
            "shard": self.shard.to_json(),
            "index": self.index.to_json(),
            "tables": {t: self.tables[t].to_json() for t in sorted(self.tables)},
            "volunteers": list(self.volunteers),
            "signing_keys": list(self.signing_keys),
            "samples_without_image": self.samples_without_image,
        }

    @classmethod
    def _parse(cls, r: JsonReader, value: Any, where: str) -> PartObject:
        d = r.obj(value, where, (*_PART_KEYS, "volunteers", "signing_keys", "samples_without_image"))
        pid = r.text(d["id"], f"{where}.id", HEX32)
        date = r.text(d["ingest_date"], f"{where}.ingest_date", _DATE)
        try:
            day(date)
        except LayoutError:
            r.refuse(f"{where}.ingest_date", "is not a date")
        t = r.obj(d["tables"], f"{where}.tables", PART_TABLES)
        part = cls(
            id=pid,
            ingest_date=date,
            build_version=r.integer(d["build_version"], f"{where}.build_version", low=1),
            bundles=r.integer(d["bundles"], f"{where}.bundles", low=1),
            sessions=r.integer(d["sessions"], f"{where}.sessions", low=1),
            steps=r.integer(d["steps"], f"{where}.steps"),
            shard=FileObject._parse(r, d["shard"], f"{where}.shard", shard_path(date, pid)),
            index=FileObject._parse(r, d["index"], f"{where}.index", index_path(date, pid)),
            tables={
                name: FileObject._parse(
                    r, t[name], f"{where}.tables.{name}", table_path(name, date, pid), rows=True
                )
                for name in PART_TABLES
            },
            volunteers=r.sorted_texts(d["volunteers"], f"{where}.volunteers", _PSEUDONYM),
            signing_keys=r.sorted_texts(d["signing_keys"], f"{where}.signing_keys", _SIGNING_KEY),
            samples_without_image=r.integer(d["samples_without_image"], f"{where}.samples_without_image"),
        )
        if part.samples_without_image > part.steps:
            r.refuse(f"{where}.samples_without_image", "is more than its steps")
        return part


@dataclass(frozen=True)
class Change:
    """What a version changed: ``build`` (counts) or ``withdraw`` (the pseudonym)."""

    kind: str
    added_parts: tuple[str, ...] = ()
    removed_parts: tuple[str, ...] = ()
    ingested: int | None = None
    quarantined: int | None = None
    deferred: int | None = None
    volunteer: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "added_parts": list(self.added_parts),
            "removed_parts": list(self.removed_parts),
        }
        if self.kind == "build":
            out.update(ingested=self.ingested, quarantined=self.quarantined, deferred=self.deferred)
        else:
            out["volunteer"] = self.volunteer
        return out

    @classmethod
    def _parse(cls, r: JsonReader, value: Any, where: str) -> Change:
        kind = value.get("kind") if isinstance(value, dict) else None
        lists = ("kind", "added_parts", "removed_parts")
        if kind == "build":
            d = r.obj(value, where, (*lists, "ingested", "quarantined", "deferred"))
            counts = {k: r.integer(d[k], f"{where}.{k}") for k in ("ingested", "quarantined", "deferred")}
            extra: dict[str, Any] = counts
        elif kind == "withdraw":
            d = r.obj(value, where, (*lists, "volunteer"))
            extra = {"volunteer": r.text(d["volunteer"], f"{where}.volunteer", _PSEUDONYM)}
        else:
            r.refuse(f"{where}.kind", "is neither 'build' nor 'withdraw'")
        return cls(
            kind=kind,
            added_parts=r.sorted_texts(d["added_parts"], f"{where}.added_parts", HEX32),
            removed_parts=r.sorted_texts(d["removed_parts"], f"{where}.removed_parts", HEX32),
            **extra,
        )


@dataclass(frozen=True)
class Study:
    """The study a DEST holds (bound by its first build)."""

    id: str
    name: str


@dataclass(frozen=True)
class Card:
    """A version's card under ``cards/vN/``: README.md, features.json (if any) and plots/*.png."""

    readme: FileObject
    features: FileObject | None
    plots: tuple[FileObject, ...]

    def files(self) -> list[FileObject]:
        return [self.readme, *([self.features] if self.features else []), *self.plots]

    def to_json(self) -> dict[str, Any]:
        return {
            "readme": self.readme.to_json(),
            "features": self.features.to_json() if self.features else None,
            "plots": [p.to_json() for p in self.plots],
        }


TOTALS = ("volunteers", "sessions", "steps", "samples_without_image", "tasks", "events", "bytes")


@dataclass(frozen=True)
class Totals:
    """A version's totals."""

    volunteers: int = 0
    sessions: int = 0
    steps: int = 0
    samples_without_image: int = 0
    tasks: int = 0
    events: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class Version:
    """A version manifest (docs/dataset.md, The version manifest). ``published_at``, ``card`` and ``wids``
    are filled by :func:`agent.dataset.versions.publish`; :meth:`successor` makes the next one."""

    version: int
    parent: int | None
    change: Change
    study: Study
    tool: str
    parts: tuple[PartObject, ...] = ()
    ledger: tuple[FileObject, ...] = ()
    register: FileObject | None = None
    pending_purge: tuple[str, ...] = ()
    totals: Totals = Totals()
    published_at: str = ""
    card: Card | None = None
    wids: FileObject | None = None
    format: str = FORMAT

    @classmethod
    def successor(
        cls,
        parent: Version | None,
        *,
        change: Change,
        tool: str,
        parts: Iterable[PartObject],
        ledger: Iterable[FileObject],
        register: FileObject | None,
        totals: Totals,
        pending_purge: Iterable[str] = (),
        study: Study | None = None,
    ) -> Version:
        """Version N+1 made from ``parent`` (version 1 when None): its study unless ``study`` is given,
        parts sorted by id, ledger by path, ``pending_purge`` sorted; not yet published."""
        if study is None:
            if parent is None:
                msg = "the first version needs its study. Fix: this is a bug in the caller"
                raise LayoutError(msg)
            study = parent.study
        return cls(
            version=1 if parent is None else parent.version + 1,
            parent=None if parent is None else parent.version,
            change=change,
            study=study,
            tool=tool,
            parts=tuple(sorted(parts, key=lambda p: p.id)),
            ledger=tuple(sorted(ledger, key=lambda f: f.path)),
            register=register,
            pending_purge=tuple(sorted(set(pending_purge))),
            totals=totals,
        )

    def paths(self) -> set[str]:
        """Every object this version lists (itself and its wids descriptor included)."""
        out = {version_path(self.version)}
        files = [f for p in self.parts for f in p.files()] + list(self.ledger)
        files += [*([self.register] if self.register else []), *([self.wids] if self.wids else [])]
        files += self.card.files() if self.card else []
        out.update(f.path for f in files)
        return out

    def to_json(self) -> dict[str, Any]:
        if self.card is None or self.wids is None or not self.published_at:
            msg = (
                f"version {self.version} has no card, wids descriptor or publication time yet. Fix: this "
                "is a bug; publish() fills them"
            )
            raise LayoutError(msg)
        return {
            "format": self.format,
            "version": self.version,
            "parent": self.parent,
            "published_at": self.published_at,
            "change": self.change.to_json(),
            "study": {"id": self.study.id, "name": self.study.name},
            "tool": {"optin": self.tool},
            "parts": [p.to_json() for p in self.parts],
            "ledger": [f.to_json() for f in self.ledger],
            "register": self.register.to_json() if self.register else None,
            "card": self.card.to_json(),
            "wids": self.wids.to_json(),
            "pending_purge": list(self.pending_purge),
            "totals": dataclasses.asdict(self.totals),
        }

    def to_bytes(self) -> bytes:
        """Canonical JSON, checked by :meth:`parse` (a version that would not read back is refused)."""
        data = canonical(self.to_json())
        if Version.parse(data, f"version {self.version} as written") != self:
            msg = f"version {self.version} does not read back as written. Fix: this is a bug"
            raise LayoutError(msg)
        return data

    @classmethod
    def parse(cls, data: bytes, doc: str = "a version manifest") -> Version:
        """A manifest's bytes read strictly. :raises LayoutError: naming ``doc`` and the bad key."""
        r = JsonReader(doc)
        keys = ("format", "version", "parent", "published_at", "change", "study", "tool", "parts")
        d = r.obj(
            load_json(data, doc),
            "the manifest",
            (*keys, "ledger", "register", "card", "wids", "pending_purge", "totals"),
        )
        if d["format"] != FORMAT:
            r.refuse("format", f"is {ascii(d['format'])[:40]}, not {FORMAT} (a newer optin? upgrade optin)")
        n = r.integer(d["version"], "version", low=1)
        parent = None if d["parent"] is None else r.integer(d["parent"], "parent", low=1)
        if parent is not None and parent >= n:
            r.refuse("parent", "is not older than the version")
        parse_published = d["published_at"]
        try:
            parse_utc(parse_published)
        except LayoutError:
            r.refuse("published_at", "is not a UTC timestamp")
        study = r.obj(d["study"], "study", ("id", "name"))
        tool = r.obj(d["tool"], "tool", ("optin",))
        parts = tuple(
            PartObject._parse(r, p, f"parts[{i}]") for i, p in enumerate(r.items(d["parts"], "parts"))
        )
        if [p.id for p in parts] != sorted({p.id for p in parts}):
            r.refuse("parts", "is not sorted by id, or repeats a part")
        ledger = tuple(
            FileObject._parse(r, f, f"ledger[{i}]", _LEDGER, rows=True)
            for i, f in enumerate(r.items(d["ledger"], "ledger"))
        )
        if [f.path for f in ledger] != sorted({f.path for f in ledger}):
            r.refuse("ledger", "is not sorted by path, or repeats a file")
        register = (
            None if d["register"] is None else FileObject._parse(r, d["register"], "register", _REGISTER)
        )
        c = r.obj(d["card"], "card", ("readme", "features", "plots"))
        base = card_dir(n)
        plots = tuple(
            FileObject._parse(r, p, f"card.plots[{i}]", re.compile(re.escape(base + "/") + PLOT.pattern))
            for i, p in enumerate(r.items(c["plots"], "card.plots"))
        )
        if [p.path for p in plots] != sorted({p.path for p in plots}):
            r.refuse("card.plots", "is not sorted by path, or repeats a plot")
        features = c["features"]
        card = Card(
            FileObject._parse(r, c["readme"], "card.readme", f"{base}/README.md"),
            None
            if features is None
            else FileObject._parse(r, features, "card.features", f"{base}/features.json"),
            plots,
        )
        purge = tuple(
            r.path(p, f"pending_purge[{i}]")
            for i, p in enumerate(r.items(d["pending_purge"], "pending_purge"))
        )
        if list(purge) != sorted(set(purge)):
            r.refuse("pending_purge", "is not sorted, or repeats a path")
        for i, path in enumerate(purge):
            if not path.startswith(GC_PREFIXES):
                r.refuse(f"pending_purge[{i}]", f"is {path}, not a data object (only those are purged)")
        t = r.obj(d["totals"], "totals", TOTALS)
        version = cls(
            version=n,
            parent=parent,
            change=Change._parse(r, d["change"], "change"),
            study=Study(r.text(study["id"], "study.id"), r.text(study["name"], "study.name")),
            tool=r.text(tool["optin"], "tool.optin"),
            parts=parts,
            ledger=ledger,
            register=register,
            pending_purge=purge,
            totals=Totals(**{k: r.integer(t[k], f"totals.{k}") for k in TOTALS}),
            published_at=parse_published,
            card=card,
            wids=FileObject._parse(r, d["wids"], "wids", wids_path(n)),
        )
        if not version.paths().isdisjoint(purge):
            r.refuse("pending_purge", "names an object this version lists")
        return version


# --- CURRENT -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Current:
    """``CURRENT``: which version is published, and its manifest's SHA-256."""

    version: int
    manifest_sha256: str
    published_at: str

    @property
    def manifest(self) -> str:
        return version_path(self.version)

    def to_bytes(self) -> bytes:
        doc = {
            "format": FORMAT,
            "manifest": self.manifest,
            "manifest_sha256": self.manifest_sha256,
            "published_at": self.published_at,
            "version": self.version,
        }
        return canonical(doc)

    @classmethod
    def parse(cls, data: bytes, doc: str = "CURRENT") -> Current:
        """``CURRENT``'s bytes read strictly (its size is bounded by the caller's read)."""
        r = JsonReader(doc)
        keys = ("format", "manifest", "manifest_sha256", "published_at", "version")
        d = r.obj(load_json(data, doc), "the pointer", keys)
        if d["format"] != FORMAT:
            r.refuse("format", f"is {ascii(d['format'])[:40]}, not {FORMAT} (a newer optin? upgrade optin)")
        n = r.integer(d["version"], "version", low=1)
        r.path(d["manifest"], "manifest", version_path(n))
        try:
            parse_utc(d["published_at"])
        except LayoutError:
            r.refuse("published_at", "is not a UTC timestamp")
        return cls(n, r.text(d["manifest_sha256"], "manifest_sha256", HEX64), d["published_at"])
