"""The optin-upload/1 messages (agent/upload_protocol.py; docs/upload.md): the known answers, the
intake's checks in the spec's order, the answers the client accepts, the part plan and the URL rule."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest

from agent import upload_protocol as up
from agent.canonical_json import canonical
from agent.store import signing

# Known answers (docs/upload.md, "Known answers"): identity bytes 00..1f, study "kat-study".
IDENTITY = bytes(range(32))
STUDY = "kat-study"
KEY_B64 = "AHCH+Ok1AUJ7wSdS/FPMVIl5oZGJ0eu9vvYryvg0FXg="
VOLUNTEER = "56d9ec19e37ec6bfb09f1bfce4b73d7e"
SESSION = "20261206T120000Z-0a1b2c3d"
SHA = hashlib.sha256(b"optin").hexdigest()
TIME = 1765022400
SIGNATURE_B64 = "Yrwm67ERmN5acpuO7EqG8x2lxTgi7S31uhpDqLi4c33Zpc7LzIRT4m6CjFgvIjISV5U/TYC1ILSjBRAwafLbCQ=="
BODY_SHA256 = "9d1ecd755f4268ef98eb86538c56ed995a06706342f450f0a6e27dfbb7899945"
MAX = 8 * 1024**3


def request(**changes: Any) -> up.UploadRequest:
    fields: dict[str, Any] = {
        "action": "begin",
        "study": STUDY,
        "volunteer": VOLUNTEER,
        "signing_key": base64.b64decode(KEY_B64),
        "session": SESSION,
        "size": 1234567,
        "sha256": SHA,
        "time": TIME,
    }
    fields.update(changes)
    return up.UploadRequest(**fields)


def check(
    body: bytes, *, action: str = "begin", now: float = TIME + 1.5, max_size: int = MAX
) -> up.UploadRequest:
    return up.check_request(body, action=action, study=STUDY, now=now, max_bundle_size=max_size)[0]


def refused(body: bytes, **kw: Any) -> str:
    with pytest.raises(up.RequestRefused) as info:
        check(body, **kw)
    assert info.value.reason in up.REASONS
    return info.value.reason


def test_known_answers() -> None:
    key = signing.public_signing_key(IDENTITY, STUDY)
    assert base64.b64encode(key).decode() == KEY_B64
    assert signing.id_of_key(STUDY, key) == VOLUNTEER
    message = up.signed_message(request())
    assert message.startswith(b'optin-upload/1\x00{"action":"begin","session":')
    body = up.sign_request(IDENTITY, request())
    assert json.loads(body)["signature"] == SIGNATURE_B64
    assert hashlib.sha256(body).hexdigest() == BODY_SHA256
    assert signing.verify(key, message, base64.b64decode(SIGNATURE_B64))


def test_a_signed_request_is_accepted_and_read_back_exactly() -> None:
    for action in up.ACTIONS:
        got = check(up.sign_request(IDENTITY, request(action=action)), action=action)
        assert got == request(action=action)


def test_the_same_members_spelt_otherwise_verify_the_same() -> None:
    """The signature covers the canonical re-encoding: spaces, key order and escapes change nothing."""
    doc = json.loads(up.sign_request(IDENTITY, request()))
    spaced = json.dumps(
        {"signature": doc["signature"], "request": dict(reversed(doc["request"].items()))}, indent=3
    )
    assert check(spaced.encode()) == request()


def test_every_member_is_signed() -> None:
    doc = json.loads(up.sign_request(IDENTITY, request()))
    for name, other in (
        ("session", "20261206T120000Z-ffffffff"),
        ("size", 1234568),
        ("sha256", "0" * 64),
        ("time", TIME + 1),
        ("action", "complete"),
    ):
        forged = json.loads(json.dumps(doc))
        forged["request"][name] = other
        action = other if name == "action" else "begin"
        assert refused(canonical(forged), action=action) == "bad_signature", name


def test_another_volunteers_id_or_key_is_a_forgery() -> None:
    doc = json.loads(up.sign_request(IDENTITY, request()))
    other_key = signing.public_signing_key(bytes(32), STUDY)
    for member, value in (
        ("volunteer", signing.id_of_key(STUDY, other_key)),  # my signature, their id
        ("signing_key", base64.b64encode(other_key).decode()),  # their key, my id and signature
    ):
        forged = json.loads(json.dumps(doc))
        forged["request"][member] = value
        assert refused(canonical(forged)) == "bad_signature"
    # a key of the same person for another study gives another id
    theirs = request(study="other-study")
    body = up.sign_request(IDENTITY, theirs)
    assert refused(body) == "wrong_study"


def test_the_checks_run_in_the_spec_order() -> None:
    good = json.loads(up.sign_request(IDENTITY, request()))
    assert refused(b"x" * (up.MAX_REQUEST_BYTES + 1)) == "request_too_large"
    assert refused(b"\xff\xfe") == "bad_request"
    assert refused(b"[" * 50 + b"]" * 50) == "bad_request"
    assert refused(b'{"request": {}, "request": {}, "signature": ""}') == "bad_request"
    assert refused(b'{"request": {"v": NaN}, "signature": ""}') == "bad_request"
    for name in ("v", "size", "time"):
        for wrong in ("1", 1.0, True, None):
            doc = json.loads(json.dumps(good))
            doc["request"][name] = wrong
            assert refused(canonical(doc)) == "bad_request", (name, wrong)
    doc = json.loads(json.dumps(good))
    doc["request"]["extra"] = 1
    assert refused(canonical(doc)) == "bad_request"
    doc = json.loads(json.dumps(good))
    doc["request"]["v"] = 2
    assert refused(canonical(doc)) == "bad_request"
    assert refused(canonical(good), action="complete") == "bad_request"  # the path's action
    for bad_key in ("", "!!!!", base64.b64encode(bytes(31)).decode(), "A" * 10_000):
        doc = json.loads(json.dumps(good))
        doc["request"]["signing_key"] = bad_key
        assert refused(canonical(doc)) == "bad_request"
    assert refused(canonical(good), now=TIME + up.CLOCK_SKEW_S + 1) == "stale_request"
    assert refused(canonical(good), now=TIME - up.CLOCK_SKEW_S - 1) == "stale_request"
    assert check(canonical(good), now=TIME + up.CLOCK_SKEW_S) == request()
    assert refused(up.sign_request(IDENTITY, request(session="../x"))) == "bad_session_id"
    assert refused(up.sign_request(IDENTITY, request(session="a" * 81))) == "bad_session_id"
    assert refused(up.sign_request(IDENTITY, request(sha256=SHA.upper()))) == "bad_request"
    assert refused(up.sign_request(IDENTITY, request(size=0))) == "bad_request"
    assert refused(up.sign_request(IDENTITY, request(size=MAX + 1))) == "bundle_too_large"
    assert check(up.sign_request(IDENTITY, request(size=MAX))).size == MAX


def test_huge_numbers_are_refused_not_crashed_on() -> None:
    doc = json.loads(up.sign_request(IDENTITY, request()))
    doc["request"]["time"] = 10**300  # breaks the signature first: no float conversion anywhere
    assert refused(canonical(doc)) == "bad_signature"
    assert refused(up.sign_request(IDENTITY, request(time=10**300))) == "stale_request"
    assert refused(up.sign_request(IDENTITY, request(size=10**300))) == "bundle_too_large"


def test_refusal_bodies_are_answers_the_client_reads() -> None:
    for reason, (status, fix) in up.REASONS.items():
        assert 400 <= status < 600 and fix
        code, body = up.refusal_body(reason, "why")
        assert code == status
        answer = up.parse_answer(body)
        assert answer.reason == reason and answer.message == "why"
        assert answer.status == ("retry" if reason in up.RETRY_REASONS else "refused")
        if answer.status == "retry":
            assert answer.retry_after == 60


def test_answers_the_client_accepts_and_refuses() -> None:
    upload = {
        "status": "upload",
        "part_size": up.DEFAULT_PART_SIZE,
        "expires": TIME + 3600,
        "have": [{"part": 1, "size": up.DEFAULT_PART_SIZE, "etag": '"abc"'}],
        "send": [{"part": 2, "size": 5, "url": "https://s3.example.org/b/k?partNumber=2&X-Amz-Signature=00"}],
    }
    got = up.parse_answer(canonical(upload))
    assert got.have == (up.Part(1, up.DEFAULT_PART_SIZE, etag='"abc"'),)
    assert got.send[0].part == 2 and got.send[0].url.startswith("https://")
    stored = {"status": "stored", "size": 5, "sha256": SHA, "already": True}
    assert up.parse_answer(canonical(stored)).already
    bad: list[Any] = [
        {**upload, "part_size": 1024},  # under S3's minimum
        {
            **upload,
            "send": [{"part": 2, "size": 5, "url": "http://evil.example.org/x"}],
        },  # plain http elsewhere
        {**upload, "send": [{"part": 0, "size": 5, "url": "https://a/"}]},
        {**upload, "have": "all"},
        {**stored, "already": "yes"},
        {**stored, "sha256": "x"},
        {"status": "retry", "reason": "rate_limited", "message": "m"},  # no retry_after
        {"status": "done"},
        [upload],
    ]
    for doc in bad:
        with pytest.raises(up.BadAnswer):
            up.parse_answer(canonical(doc))
    with pytest.raises(up.BadAnswer):
        up.parse_answer(b" " * (up.MAX_ANSWER_BYTES + 1))
    with pytest.raises(up.BadAnswer):
        up.parse_answer(b"[" * 10_000)
    retry = up.parse_answer(
        canonical({"status": "retry", "reason": "x", "message": "m", "retry_after": 10**9})
    )
    assert retry.retry_after == 3600  # a hostile intake cannot park the client for ever


def test_part_plan() -> None:
    assert up.part_size_for(1) == up.DEFAULT_PART_SIZE
    assert up.part_size_for(100, preferred=1) == up.MIN_PART_SIZE
    big = up.DEFAULT_PART_SIZE * up.MAX_PARTS + 1
    assert up.part_size_for(big) == 2 * up.DEFAULT_PART_SIZE
    assert -(-big // up.part_size_for(big)) <= up.MAX_PARTS
    assert up.parts(0, 5) == []
    assert up.parts(12, 5) == [(1, 0, 5), (2, 5, 5), (3, 10, 2)]
    assert up.parts(10, 5) == [(1, 0, 5), (2, 5, 5)]


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://intake.example.org/", True),
        ("https://intake.example.org:8443/study/", True),
        ("HTTPS://intake.example.org/", True),
        ("http://127.0.0.1:8080/", True),
        ("http://[::1]:8080/", True),
        ("http://intake.example.org/", False),
        ("http://127.0.0.2/", False),
        ("http://localhost/", False),
        ("ftp://intake.example.org/", False),
        ("https://user:pw@intake.example.org/", False),
        ("https://intake.example.org/#x", False),
        ("https://intake.example.org/ x", False),
        ("https://intake.example.org/\u202e", False),
        ("https:///path", False),
        ("https://host:99999/", False),
        ("https://host:0/", False),
        ("intake.example.org", False),
    ],
)
def test_url_rule(url: str, ok: bool) -> None:
    problem = up.url_problem(url)
    assert (problem is None) is ok, problem
    if problem:
        assert url not in problem  # never quoted: a presigned URL holds a signature
        with pytest.raises(ValueError, match=r"^(?!.*example)"):
            up.split_url(url)


def test_split_url_and_queries() -> None:
    assert up.split_url("https://a.example.org/p/") == up.Address(True, "a.example.org", 443, "/p/")
    assert up.split_url("http://127.0.0.1:9/v1/begin") == up.Address(False, "127.0.0.1", 9, "/v1/begin")
    assert up.split_url("http://[::1]/") == up.Address(False, "[::1]", 80, "/")
    assert up.split_url("https://a.example.org") == up.Address(True, "a.example.org", 443, "/")
    assert up.url_problem("https://a.example.org/p?x=1") is None
    assert up.url_problem("https://a.example.org/p?x=1", query=False) is not None
    assert up.action_url("https://a.example.org/s", "begin") == "https://a.example.org/s/v1/begin"
    assert up.action_url("https://a.example.org/s/", "status") == "https://a.example.org/s/v1/status"


def test_the_study_files_upload_settings_are_checked_with_the_fix() -> None:
    """``[upload] url`` and ``[retention] after_upload`` as a study file states them (the address every
    volunteer's client will talk to): only what the client may use, never quoted back."""
    from pyrage import x25519

    from agent.errors import StudyError
    from agent.study import demo_study_toml, parse_study

    base = demo_study_toml(str(x25519.Identity.generate().to_public()))
    good = parse_study(
        base + '[upload]\nurl = "https://intake.example.org/s/"\n[retention]\nafter_upload = "delete"\n'
    )
    assert good.upload_url == "https://intake.example.org/s/" and good.deletes_after_upload
    assert (
        parse_study(base).terms() == parse_study(base + "").terms()
        and "upload" not in parse_study(base).terms()
    )
    for extra, said in (
        ('[upload]\nurl = "http://intake.example.org/"\n', "only https:// is allowed"),
        ('[upload]\nurl = "https://user:pw@intake.example.org/"\n', "user name or password"),
        ('[upload]\nurl = "https://intake.example.org/?token=secret"\n', "has a query"),
        ('[upload]\nurl = "https://intake\u202e.example.org/"\n', "U+202E"),
        ("[upload]\nurl = 7\n", "must be a string"),
        ("[upload]\n", "upload needs url"),
        ('[upload]\nurl = "https://i.example.org/"\nkey = "x"\n', "unknown key upload.key"),
        ('[retention]\nafter_upload = "delete"\n', "has no [upload] url"),
        (
            '[upload]\nurl = "https://i.example.org/"\n[retention]\nafter_upload = "burn"\n',
            '"keep", "delete"',
        ),
    ):
        with pytest.raises(StudyError) as info:
            parse_study(base + extra, source="s.toml")
        assert said in str(info.value) and "secret" not in str(info.value) and "pw@" not in str(info.value), (
            extra
        )
