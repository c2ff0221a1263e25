"""The ``optin-upload/1`` protocol's messages, shared by ``optin upload`` and ``optin dataset intake``.

docs/upload.md specifies it; this module is its pure part, with no network code and no store
access: the signed request (:class:`UploadRequest`, :func:`signed_message`, :func:`request_body`),
the intake's checks of a request in the spec's order (:func:`check_request`), the answers
(:func:`answer_body`, :func:`parse_answer`), the part plan (:func:`part_size_for`,
:func:`parts`) and the rule for URLs the client may talk to (:func:`url_problem`, regular
expressions only: the volunteer's side imports no URL library outside agent/upload/).

The signatures themselves are made and checked by :mod:`agent.store.signing` (the only module that
touches Ed25519).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from agent.canonical_json import canonical
from agent.export.recount import json_object
from agent.ipc_protocol import json_depth
from agent.store import signing
from agent.upload_urls import Address, action_url, split_url, url_problem

PROTOCOL = "optin-upload/1"
#: What a request's signature covers comes after this prefix (domain separation).
SIGNED_PREFIX = PROTOCOL.encode("ascii") + b"\x00"
VERSION = 1
ACTIONS = ("begin", "complete", "status")
#: Largest request body the intake reads.
MAX_REQUEST_BYTES = 64 * 1024
#: Largest answer the client reads.
MAX_ANSWER_BYTES = 1024 * 1024
#: Deepest JSON nesting in a request or an answer.
MAX_DEPTH = 4
#: Largest difference between a request's ``time`` and the intake's clock.
CLOCK_SKEW_S = 600
#: S3's smallest part (all but the last) and most parts.
MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PARTS = 10_000
#: The part size an intake offers unless the bundle needs larger parts.
DEFAULT_PART_SIZE = 8 * 1024 * 1024
#: Longest study id a request may carry.
MAX_STUDY_ID = 200
#: Characters of a reason's message the client shows.
SHOWN_MESSAGE = 300

SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,79}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX32 = re.compile(r"[0-9a-f]{32}")

#: reason code → (HTTP status, what the volunteer can do); docs/upload.md, "Reason codes".
REASONS: dict[str, tuple[int, str]] = {
    "bad_request": (400, "update optin: the intake does not understand this version"),
    "request_too_large": (413, "update optin: the intake does not understand this version"),
    "request_timeout": (408, "check the network, then upload again"),
    "wrong_study": (403, "check that the study file is the one the study sent you"),
    "bad_signature": (403, "this request was not signed by its volunteer's key"),
    "stale_request": (403, "set this computer's clock (date and time zone) right, then upload again"),
    "bad_session_id": (400, "export the session again with this version of optin"),
    "bundle_too_large": (413, "cut the session into shorter parts in the review window, then export again"),
    "volunteer_withdrawn": (403, "you withdrew from this study; the study takes no more of your data"),
    "session_delivered": (409, "the study already has another export of this session; ask the study"),
    "sha256_mismatch": (422, "the bytes stored were not the export's; upload again"),
    "size_mismatch": (422, "the bytes stored were not the export's; upload again"),
    "unknown_session": (404, "upload the session"),
    "rate_limited": (429, "wait, then upload again: the intake limits how fast one volunteer sends"),
    "store_unavailable": (503, "try again later: the study's storage did not answer or is full"),
    "internal_error": (500, "try again later; if it keeps failing, tell the study"),
}
#: Reasons a client waits out and tries again (``retry`` answers).
RETRY_REASONS = frozenset({"rate_limited", "store_unavailable", "internal_error"})


class RequestRefused(Exception):
    """The intake refuses a request: ``reason`` is a code of :data:`REASONS`, ``message`` says why
    (never the request's content)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class BadAnswer(Exception):
    """An answer that is not one of the spec's (the message names the rule broken, never the body)."""


@dataclass(frozen=True)
class UploadRequest:
    """One signed request's content (docs/upload.md, "Requests")."""

    action: str
    study: str
    volunteer: str
    signing_key: bytes
    session: str
    size: int
    sha256: str
    time: int

    def document(self) -> dict[str, Any]:
        """The ``request`` object, as signed."""
        return {
            "v": VERSION,
            "action": self.action,
            "study": self.study,
            "volunteer": self.volunteer,
            "signing_key": base64.b64encode(self.signing_key).decode("ascii"),
            "session": self.session,
            "size": self.size,
            "sha256": self.sha256,
            "time": self.time,
        }


def signed_message(request: UploadRequest) -> bytes:
    """The bytes a request's signature covers: ``"optin-upload/1" || 0x00 || canonical(request)``."""
    return SIGNED_PREFIX + canonical(request.document())


def request_body(request: UploadRequest, signature: bytes) -> bytes:
    """The HTTP body of a signed request."""
    return canonical(
        {"request": request.document(), "signature": base64.b64encode(signature).decode("ascii")}
    )


def sign_request(identity: bytes, request: UploadRequest) -> bytes:
    """The body of ``request`` signed with the volunteer's key for its study (derived from ``identity``)."""
    return request_body(request, signing.sign(identity, request.study, signed_message(request)))


def refuse(reason: str, message: str) -> NoReturn:
    """Raise :class:`RequestRefused` (a function: the refusals read as one list of rules)."""
    raise RequestRefused(reason, message)


def _bad(message: str) -> NoReturn:
    raise BadAnswer(message)


def _strict_object(blob: bytes, what: str) -> dict[str, Any]:
    """``blob`` as a JSON object: UTF-8, nesting at most :data:`MAX_DEPTH`, no duplicate keys, no NaN."""
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError:
        refuse("bad_request", f"the {what} is not UTF-8")
    if json_depth(text) > MAX_DEPTH:
        refuse("bad_request", f"the {what} nests deeper than {MAX_DEPTH}")
    value = json_object(blob)
    if value is None:
        refuse("bad_request", f"the {what} is not one JSON object (no repeated keys, no NaN)")
    return value


def _b64(value: object, size: int, what: str) -> bytes:
    if not isinstance(value, str) or len(value) > 4 * size:
        refuse("bad_request", f"{what} is not base64")
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        refuse("bad_request", f"{what} is not base64")
    if len(raw) != size:
        refuse("bad_request", f"{what} is {len(raw)} bytes, not {size}")
    return raw


_MEMBERS: Mapping[str, type] = {
    "v": int,
    "action": str,
    "study": str,
    "volunteer": str,
    "signing_key": str,
    "session": str,
    "size": int,
    "sha256": str,
    "time": int,
}


def _shape(body: bytes, action: str, study: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The body's outer object and its request, members and types checked (no signature yet)."""
    if len(body) > MAX_REQUEST_BYTES:
        refuse("request_too_large", f"a request is at most {MAX_REQUEST_BYTES} bytes")
    outer = _strict_object(body, "request body")
    if set(outer) != {"request", "signature"} or not isinstance(outer["request"], dict):
        refuse("bad_request", "a body is {request, signature}")
    inner: dict[str, Any] = outer["request"]
    if set(inner) != set(_MEMBERS):
        refuse("bad_request", "the request's members are not " + ", ".join(sorted(_MEMBERS)))
    for name, kind in _MEMBERS.items():
        value = inner[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            refuse("bad_request", f"{name} is not a{'n integer' if kind is int else ' string'}")
    if inner["v"] != VERSION:
        refuse("bad_request", f"this intake speaks {PROTOCOL} (v {VERSION})")
    if inner["action"] != action:
        refuse("bad_request", f"the request's action is not this address's ({action})")
    if inner["study"] != study:
        refuse("wrong_study", "the request is for another study than this intake's")
    return outer, inner


def check_request(
    body: bytes, *, action: str, study: str, now: float, max_bundle_size: int
) -> tuple[UploadRequest, bytes]:
    """The intake's checks of one request body, in docs/upload.md's order, up to (not including) the
    rate limits, the withdrawal register and the store.

    :returns: the request and its signature.
    :raises RequestRefused: the first check that fails.
    """
    outer, inner = _shape(body, action, study)
    key = _b64(inner["signing_key"], signing.PUBLIC_KEY_SIZE, "signing_key")
    signature = _b64(outer["signature"], signing.SIGNATURE_SIZE, "signature")
    volunteer = inner["volunteer"]
    if not _HEX32.fullmatch(volunteer):
        refuse("bad_request", "volunteer is not 32 lower-case hex digits")
    request = UploadRequest(
        action=inner["action"],
        study=study,
        volunteer=volunteer,
        signing_key=key,
        session=inner["session"],
        size=inner["size"],
        sha256=inner["sha256"],
        time=inner["time"],
    )
    # The signature covers the request as re-encoded: canonical JSON, so any other spelling of the
    # same members (spaces, key order, escapes) verifies the same and nothing unsigned gets through.
    if signing.id_of_key(study, key) != volunteer or not signing.verify(
        key, signed_message(request), signature
    ):
        refuse("bad_signature", "the signature or the volunteer id does not match the signing key")
    if abs(request.time - int(now)) > CLOCK_SKEW_S:  # integers: a huge time cannot overflow a float
        refuse("stale_request", f"the request's time is more than {CLOCK_SKEW_S} s from the intake's clock")
    if not SESSION_ID.fullmatch(request.session):
        refuse("bad_session_id", "the session id is not 1-80 letters, digits, - and _")
    if not _HEX64.fullmatch(request.sha256):
        refuse("bad_request", "sha256 is not 64 lower-case hex digits")
    if request.size < 1:
        refuse("bad_request", "size is not a positive number of bytes")
    if request.size > max_bundle_size:
        refuse("bundle_too_large", f"this intake takes bundles of at most {max_bundle_size} bytes")
    return request, signature


# --- parts -----------------------------------------------------------------------------------------


def part_size_for(size: int, preferred: int = DEFAULT_PART_SIZE) -> int:
    """The part size for a bundle of ``size`` bytes: ``preferred`` (at least :data:`MIN_PART_SIZE`),
    doubled until the bundle fits in :data:`MAX_PARTS` parts."""
    part = max(preferred, MIN_PART_SIZE)
    while -(-size // part) > MAX_PARTS:
        part *= 2
    return part


def parts(size: int, part_size: int) -> list[tuple[int, int, int]]:
    """``(part number, offset, length)`` of every part of a ``size``-byte bundle, numbered from 1."""
    return [(i // part_size + 1, i, min(part_size, size - i)) for i in range(0, size, part_size)]


# --- answers ---------------------------------------------------------------------------------------


def refusal_body(reason: str, message: str, retry_after: int | None = None) -> tuple[int, bytes]:
    """The HTTP status and body of a ``refused`` (or, for :data:`RETRY_REASONS`, ``retry``) answer."""
    status = REASONS[reason][0]
    if reason in RETRY_REASONS:
        doc: dict[str, Any] = {
            "status": "retry",
            "reason": reason,
            "message": message,
            "retry_after": 60 if retry_after is None else retry_after,
        }
    else:
        doc = {"status": "refused", "reason": reason, "message": message}
    return status, canonical(doc)


@dataclass(frozen=True)
class Part:
    """A part in an ``upload`` answer: to send (``url``) or already held (``etag``)."""

    part: int
    size: int
    url: str = ""
    etag: str = ""


@dataclass(frozen=True)
class Answer:
    """An intake's answer as the client reads it (docs/upload.md, "Answers")."""

    status: str  #: upload | stored | refused | retry
    reason: str = ""
    message: str = ""
    retry_after: int = 0
    part_size: int = 0
    expires: int = 0
    have: tuple[Part, ...] = ()
    send: tuple[Part, ...] = ()
    size: int = 0
    sha256: str = ""
    already: bool = False


def _int(doc: Mapping[str, Any], name: str, low: int = 0) -> int:
    value = doc.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        _bad(f"{name} is not an integer of at least {low}")
    return value


def _text(doc: Mapping[str, Any], name: str, limit: int) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or len(value) > limit:
        _bad(f"{name} is not a string of at most {limit} characters")
    return value


def _parts(doc: Mapping[str, Any], name: str, field: str) -> tuple[Part, ...]:
    items = doc.get(name)
    if not isinstance(items, list) or len(items) > MAX_PARTS:
        _bad(f"{name} is not a list of at most {MAX_PARTS} parts")
    out = []
    for item in items:
        if not isinstance(item, dict):
            _bad(f"an item of {name} is not an object")
        part = Part(_int(item, "part", 1), _int(item, "size", 1))
        if field == "url":
            part = Part(part.part, part.size, url=_text(item, "url", 8192))
            problem = url_problem(part.url)
            if problem:
                _bad(f"a part's address {problem}")
        elif field == "etag":
            part = Part(part.part, part.size, etag=_text(item, "etag", 200))
        out.append(part)
    return tuple(out)


def parse_answer(blob: bytes) -> Answer:
    """An intake's answer body.

    :raises BadAnswer: it is not an answer of this protocol.
    """
    if len(blob) > MAX_ANSWER_BYTES:
        _bad(f"the answer is over {MAX_ANSWER_BYTES} bytes")
    try:
        doc = _strict_object(blob, "answer")
    except RequestRefused as exc:
        _bad(exc.message)
    status = doc.get("status")
    if status == "upload":
        part_size = _int(doc, "part_size", MIN_PART_SIZE)
        return Answer(
            "upload",
            part_size=part_size,
            expires=_int(doc, "expires"),
            have=_parts(doc, "have", "etag"),
            send=_parts(doc, "send", "url"),
        )
    if status == "stored":
        sha = _text(doc, "sha256", 64)
        already = doc.get("already")
        if not _HEX64.fullmatch(sha) or not isinstance(already, bool):
            _bad("a stored answer has no sha256 or already")
        return Answer("stored", size=_int(doc, "size", 1), sha256=sha, already=already)
    if status in ("refused", "retry"):
        reason = _text(doc, "reason", 64)
        message = _text(doc, "message", 4096)
        retry = _int(doc, "retry_after") if status == "retry" else 0
        return Answer(str(status), reason=reason, message=message, retry_after=min(retry, 3600))
    _bad("the answer's status is not upload, stored, refused or retry")


__all__ = [
    "ACTIONS",
    "CLOCK_SKEW_S",
    "MAX_ANSWER_BYTES",
    "MAX_PARTS",
    "MAX_REQUEST_BYTES",
    "MIN_PART_SIZE",
    "PROTOCOL",
    "REASONS",
    "RETRY_REASONS",
    "Address",
    "Answer",
    "BadAnswer",
    "Part",
    "RequestRefused",
    "UploadRequest",
    "action_url",
    "check_request",
    "parse_answer",
    "part_size_for",
    "parts",
    "refusal_body",
    "refuse",
    "request_body",
    "sign_request",
    "signed_message",
    "split_url",
    "url_problem",
]
