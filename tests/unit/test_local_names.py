"""This computer's names are found in captured text, as whole words, without eating other words."""

from __future__ import annotations

import socket
from pathlib import Path

from agent.redact.local_names import LocalNames

NAMES = LocalNames(("lab-pc-7", "lab-pc-7.example.org"), ("ada",), ("/home/ada",), ("02:42:ac:11:00:02",))


def _found(text: str, names: LocalNames = NAMES) -> list[tuple[str, str]]:
    return [(text[s.start : s.end], s.entity) for s in names.find(text)]


def test_a_terminal_title() -> None:
    assert _found("ada@lab-pc-7: /home/ada/src") == [
        ("ada", "USER_NAME"),
        ("lab-pc-7", "HOSTNAME"),
        ("/home/ada", "HOME_PATH"),
    ]


def test_the_longest_name_wins_and_case_does_not_matter() -> None:
    assert _found("ssh ADA@Lab-PC-7.example.org") == [
        ("ADA", "USER_NAME"),
        ("Lab-PC-7.example.org", "HOSTNAME"),
    ]


def test_mac_addresses_in_every_common_form() -> None:
    for form in ("02:42:ac:11:00:02", "02-42-AC-11-00-02", "0242ac110002"):
        assert _found(f"ether {form} brd") == [(form, "MAC_ADDRESS")]


def test_whole_words_only() -> None:
    assert _found("Canada, adage, lab-pc-70, /home/adam, ada_lovelace") == []


def test_one_letter_names_are_not_looked_for_and_no_names_find_nothing() -> None:
    assert _found("a b c", LocalNames(("x",), ("a",), (), ())) == []
    assert LocalNames().find("anything at all") == []


def test_this_machine_is_read_without_the_network() -> None:
    here = LocalNames.of_this_machine()
    assert socket.gethostname().split(".")[0] in here.hostnames
    if Path.home() != Path("/"):
        assert str(Path.home()) in here.homes
    assert all(len(mac.split(":")) == 6 for mac in here.macs)
