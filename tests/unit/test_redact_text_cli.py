"""`optin redact-text`: operators run the detectors on their own lines, as a pipe."""

from __future__ import annotations

import json
import subprocess
import sys

SAMPLE = (
    "write to alice.canary@example.com about order 1234\n"
    "card 4111 1111 1111 1111, thanks\n"
    "nothing here\n"
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
    "-----END RSA PRIVATE KEY-----\n"
    "after the key\n"
)


def run(*args: str, stdin: bytes = SAMPLE.encode()) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "redact-text", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )


def test_lines_come_back_redacted_in_order() -> None:
    out = run()
    assert out.returncode == 0, out.stderr
    lines = out.stdout.decode().splitlines()
    assert lines[0] == "write to [EMAIL] about order 1234"
    assert lines[1] == "card [CREDIT_CARD], thanks"
    assert lines[2] == "nothing here"
    assert lines[3:6] == ["[PRIVATE_KEY]"] * 3  # the key block is followed across lines
    assert lines[6] == "after the key"
    assert b"alice" not in out.stdout and b"4111" not in out.stdout


def test_json_gives_spans_and_entities_never_the_values() -> None:
    out = run("--json")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.decode().splitlines()]
    assert [r["line"] for r in rows] == list(range(1, 8))
    assert rows[0]["spans"] == [{"start": 9, "end": 33, "entity": "EMAIL"}]
    assert rows[0]["redacted"] == "write to [EMAIL] about order 1234"
    assert rows[2]["spans"] == []
    assert b"alice" not in out.stdout


def test_bad_bytes_and_empty_input_do_not_stop_it() -> None:
    out = run(stdin=b"caf\xe9 bob@example.org\n\xff\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().splitlines() == ["caf\ufffd [EMAIL]", "\ufffd"]
    assert run(stdin=b"").stdout == b""
