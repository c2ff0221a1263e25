"""Deny rules at the source: rule validation, the default rules, the source filter and frame masking."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agent.events
from agent.capture.deny import (
    DENY_MARKER,
    INPUT_TYPES,
    MASK_BGRA,
    DenyState,
    apply_masks,
    filter_events,
    flush,
    mask_rects,
    refocus,
)
from agent.deny_rules import (
    DEFAULT_RULES,
    MATCH_HEAD,
    MATCH_TAIL,
    MAX_PATTERN,
    MAX_PROGRAM,
    DenyRule,
    match,
    rule_for_app,
    title_pattern_problem,
)
from agent.events import (
    ButtonPress,
    ButtonRelease,
    Event,
    Frame,
    KeyPress,
    KeyRelease,
    Marker,
    Paste,
    PointerMove,
    Scroll,
    WindowFocus,
)

MS = 1_000_000
T0 = 7_000_000_000
PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_the_deny_marker_is_a_known_marker() -> None:
    assert DENY_MARKER in agent.events.MARKERS


def focus(app_class: str | None, title: str | None = None, t_ns: int = T0, **geometry: int) -> WindowFocus:
    return WindowFocus(t_ns=t_ns, title=title, app_class=app_class, pid=None, **geometry)


def deny_markers(events: Sequence[Event]) -> list[Marker]:
    return [e for e in events if isinstance(e, Marker) and e.marker == DENY_MARKER]


def same_objects(a: Sequence[object], b: Sequence[object]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


# ---------------------------------------------------------------- rules


def test_a_rule_needs_a_pattern_and_a_label() -> None:
    with pytest.raises(ValueError, match="matches nothing"):
        DenyRule("nothing")
    with pytest.raises(ValueError, match="needs a label"):
        DenyRule("  ", app_class="x")
    with pytest.raises(ValueError, match="app_class must be a non-empty string"):
        DenyRule("empty", app_class="")
    with pytest.raises(ValueError, match="title must be a non-empty string"):
        DenyRule("not a string", title=3)  # type: ignore[arg-type]


def test_a_bad_regex_names_the_label_and_the_error_not_the_pattern() -> None:
    with pytest.raises(ValueError, match="valid regular expression") as info:
        DenyRule("my vault", title="secret-vault-(unclosed")
    message = str(info.value)
    assert "'my vault'" in message and "missing )" in message and "position 13" in message
    assert "secret-vault" not in message


# -- title patterns run in bounded time (P3: a rule never stalls the agent) -------------------------


@pytest.mark.parametrize(
    "pattern",
    [
        r"(a+)+$",  # the rule: minutes of backtracking on 26 a's and a "!" in Python's re
        r"(a|a)*$",
        r"(a|aa)+$",
        r"(.*a){20}$",
        r"(\w+\s?)*$",
        r"^(([a-z])+.)+[A-Z]([a-z])+$",
        r"(x+x+)+y",
        r"(?:a?){30}a{30}",
        r".*.*.*.*=.*",
    ],
)
def test_patterns_that_backtrack_catastrophically_elsewhere_match_in_linear_time(pattern: str) -> None:
    rule = DenyRule("study rule", title=pattern)
    for title in ("a" * 26 + "!", "a" * 5000 + "!", "ab " * 30_000, "x" * 100_000):
        started = time.perf_counter()
        rule.matches(focus("editor", title))
        assert time.perf_counter() - started < 0.5, (pattern, len(title))  # generous: microseconds here


def test_constructs_that_need_backtracking_are_refused_with_the_fix() -> None:
    for pattern, words in [
        (r"secret(?=vault)", "lookaround"),
        (r"(?<!public )vault", "lookaround"),
        (r"(sec)ret\1", "backreference"),
        (r"(?P<n>x)(?P=n)", "backreference"),
        (r"vault\Z", "\\z"),
        (r"a{2000}", "1000"),
        (r"a**", "quantifier"),
    ]:
        problem = title_pattern_problem(pattern)
        assert problem is not None and "Fix:" in problem and words in problem, (pattern, problem)
        with pytest.raises(ValueError, match="Fix:") as info:
            DenyRule("my vault", title=pattern)
        assert problem in str(info.value) and "'my vault'" in str(info.value)
    assert title_pattern_problem(r"\bincognito\b") is None
    assert title_pattern_problem("") is not None


def test_long_and_complex_patterns_are_refused_with_their_bound() -> None:
    assert f"at most {MAX_PATTERN}" in str(title_pattern_problem("a" * (MAX_PATTERN + 1)))
    with pytest.raises(ValueError, match=f"at most {MAX_PATTERN}"):
        DenyRule("long", app_class="a" * (MAX_PATTERN + 1))
    problem = title_pattern_problem(r"[\w\s]{1000}")  # RE2 unrolls counted repeats: a huge program
    assert problem is not None and f"at most {MAX_PROGRAM}" in problem and "Fix:" in problem


def test_a_long_title_is_judged_on_its_head_and_tail() -> None:
    private = match(DEFAULT_RULES, focus("firefox", "x" * 50_000 + " — Mozilla Firefox Private Browsing"))
    assert private is not None and private.label == "private browser window"  # the suffix is kept
    prompt = DenyRule("prompt", title=r"^Authenticate")
    assert prompt.matches(focus("x", "Authenticate" + "y" * 50_000))  # and the head
    middle = DenyRule("middle", title="needle")
    cut = MATCH_HEAD + 10
    assert not middle.matches(focus("x", "h" * cut + "needle" + "t" * cut))  # beyond the bound
    assert middle.matches(focus("x", "h" * (MATCH_HEAD - 10) + "needle" + "t" * MATCH_TAIL * 2))
    # the two ends are joined by a line break: "." never spans the cut
    spans = DenyRule("spans", title=r"^h.*t$")
    assert spans.matches(focus("x", "h" + "m" * 100 + "t"))
    assert not spans.matches(focus("x", "h" + "m" * (MATCH_HEAD + MATCH_TAIL) + "t"))
    long_class = DenyRule("suffix", app_class="*.scr")
    assert long_class.matches(focus("x" * 50_000 + ".scr"))


def test_titles_an_os_decodes_badly_are_still_judged() -> None:
    rule = DenyRule("vault", title="vault")
    assert rule.matches(focus("x", "my \ud800 vault"))  # a lone surrogate (surrogateescape)
    assert not rule.matches(focus("x", "\udcff\udcfe"))
    assert DenyRule("accent", title="incógnito").matches(focus("x", "INCÓGNITO"))  # Unicode case folding


def test_class_is_a_whole_case_insensitive_glob_and_title_a_searched_regex() -> None:
    rule = DenyRule("vault", app_class="keepassxc")
    assert rule.matches(focus("KeePassXC")) and rule.matches(focus("keepassxc"))
    assert not rule.matches(focus("keepassxc-proxy")) and not rule.matches(focus("my-keepassxc"))
    assert not rule.matches(focus(None, "keepassxc"))
    titled = DenyRule("banking", title=r"online banking")
    assert titled.matches(focus("firefox", "My ONLINE Banking — Mozilla Firefox"))
    assert not titled.matches(focus("firefox", None)) and not titled.matches(focus("online banking"))


def test_when_both_are_given_both_must_match() -> None:
    rule = DenyRule("sudo dialog", app_class="Zenity", title="password")
    assert rule.matches(focus("zenity", "sudo password"))
    assert not rule.matches(focus("zenity", "Pick a file"))
    assert not rule.matches(focus("gedit", "password"))
    assert not rule.matches(focus(None, "password")) and not rule.matches(focus("zenity", None))


def test_json_round_trip_and_strictness() -> None:
    for rule in (*DEFAULT_RULES, DenyRule("both", app_class="a*", title="b")):
        assert DenyRule.from_json(rule.to_json()) == rule
    assert DenyRule("x", app_class="a").to_json() == {"label": "x", "app_class": "a"}
    with pytest.raises(ValueError, match="unknown keys"):
        DenyRule.from_json({"label": "x", "app_class": "a", "titel": "typo"})
    with pytest.raises(ValueError, match="must be an object"):
        DenyRule.from_json(["x"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs a label"):
        DenyRule.from_json({"app_class": "a"})


def test_equality_and_hash_ignore_the_compiled_patterns() -> None:
    a, b = DenyRule("x", app_class="a", title="t"), DenyRule("x", app_class="a", title="t")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert "_class_re" not in repr(a)


def test_exclude_this_app_escapes_glob_characters() -> None:
    rule = rule_for_app("Weird[1]*App?")
    assert rule.label == "Weird[1]*App?"
    assert rule.matches(focus("weird[1]*app?"))
    assert not rule.matches(focus("Weird1App")) and not rule.matches(focus("Weird[1]xxAppZ"))
    assert rule_for_app("code", label="Visual Studio Code").label == "Visual Studio Code"
    with pytest.raises(ValueError, match="did not tell"):
        rule_for_app("")


def test_match_returns_the_first_matching_rule_and_none_for_unknown() -> None:
    first, second = DenyRule("first", app_class="app*"), DenyRule("second", app_class="*")
    assert match([first, second], focus("application")) is first
    assert match([first, second], focus("other")) is second
    assert match([first, second], None) is None
    assert match([first, second], focus(None, None)) is None


# ---------------------------------------------------------------- the default rules

DENIED_EXAMPLES = [
    # password managers: X11 class, Windows exe, macOS bundle id
    ("KeePassXC", "Passwords.kdbx - KeePassXC", "KeePass"),
    ("KeePassXC.exe", None, "KeePass"),
    ("org.keepassxc.keepassxc", None, "KeePass"),
    ("KeePass.exe", "Database.kdbx - KeePass", "KeePass"),
    ("1Password", "1Password", "1Password"),
    ("com.1password.1password", None, "1Password"),
    ("com.agilebits.onepassword7", None, "1Password"),
    ("1Password.exe", None, "1Password"),
    ("Bitwarden", "Bitwarden", "Bitwarden"),
    ("com.bitwarden.desktop", None, "Bitwarden"),
    ("LastPass.exe", None, "LastPass"),
    ("Dashlane.exe", None, "Dashlane"),
    ("Enpass", "Enpass", "Enpass"),
    ("in.sinew.Enpass-Desktop", None, "Enpass"),
    ("Seahorse", "Passwords and Keys", "Seahorse"),
    ("org.gnome.seahorse.Application", None, "Seahorse"),
    (None, "Passwords and Keys", "Seahorse"),
    ("kwalletmanager5", "KDE Wallet Manager", "KWallet"),
    ("kwalletd6", "KDE Wallet Service", "KWallet"),
    ("com.apple.keychainaccess", None, "Keychain"),
    # private browser windows, by title
    ("firefox", "Inbox — Mozilla Firefox Private Browsing", "private browser window"),
    ("firefox", "Mozilla Firefox Private Browsing", "private browser window"),
    ("firefox.exe", "Inbox - Mozilla Firefox (Private Browsing)", "private browser window"),
    ("org.mozilla.firefox", "Inbox — Private Browsing", "private browser window"),
    ("LibreWolf", "Start — LibreWolf Private Browsing", "private browser window"),
    ("Google-chrome", "New Incognito Tab - Google Chrome", "private browser window"),
    ("chrome.exe", "Inbox - Google Chrome (Incognito)", "private browser window"),
    ("Chromium", "Docs - Chromium (Incognito)", "private browser window"),
    ("Brave-browser", "New Private Tab - Brave (Private)", "private browser window"),
    ("msedge.exe", "New tab - [InPrivate] - Microsoft\u200b Edge", "private browser window"),
    ("com.apple.Safari", "Safari — Private Window", "private browser window"),
    ("firefox", "Startseite — Mozilla Firefox (Privater Modus)", "private browser window"),
    ("Google-chrome", "Neuer Tab - Google Chrome (Inkognito)", "private browser window"),
    ("Tor Browser", "Explore. Privately. — Tor Browser", "Tor Browser"),
    ("firefox.exe", "Explore. Privately. — Tor Browser", "Tor Browser"),
    ("org.torproject.torbrowser", None, "Tor Browser"),
    ("Mullvad Browser", None, "Mullvad Browser"),
    # password prompts
    ("Pinentry-gtk-2", None, "pinentry"),
    ("pinentry-qt", "pinentry-qt", "pinentry"),
    ("org.gpgtools.pinentry-mac", None, "pinentry"),
    ("ssh-askpass", "OpenSSH", "askpass"),
    ("SshAskpass", None, "askpass"),
    ("ksshaskpass", None, "askpass"),
    ("Gcr-prompter", "Unlock Keyring", "keyring"),
    ("Polkit-gnome-authentication-agent-1", "Authenticate", "polkit"),
    ("Lxpolkit", "Authentication", "polkit"),
    ("polkit-mate-authentication-agent-1", "Authenticate", "polkit"),
    ("org.kde.polkit-kde-authentication-agent-1", "Authentication Required", "polkit"),
    ("lxqt-policykit-agent", None, "polkit"),
    ("some-unknown-agent", "Authenticate", "password prompt"),
    (None, "Authentication Required", "password prompt"),
    ("Zenity", "sudo password", "password prompt"),
    ("Zenity", "Password", "password prompt"),
    ("kdialog", "Enter your backup passphrase", "password prompt"),
    (None, "[sudo] password for alice", "password prompt"),
    (
        "Gedit",
        "Password",
        "password prompt",
    ),  # a whole title that is only a password request is a prompt, whatever its class
    ("kdesu", "Run as root", "su"),
    ("consent.exe", None, "Windows"),
    ("CredentialUIBroker.exe", "Windows Security", "Windows"),
    ("com.apple.SecurityAgent", None, "macOS"),
    # screen lockers
    ("XScreenSaver", None, "screen locker"),
    ("xscreensaver-auth", None, "screen locker"),
    ("light-locker", None, "screen locker"),
    ("i3lock", None, "screen locker"),
    ("xsecurelock", None, "screen locker"),
    ("gnome-screensaver", None, "screen locker"),
    ("kscreenlocker_greet", None, "screen locker"),
    ("xfce4-screensaver-dialog", None, "screen locker"),
    ("slock", None, "screen locker"),
    ("LockApp.exe", None, "screen locker"),
    ("LogonUI.exe", None, "screen locker"),
    ("Ribbons.scr", None, "screen locker"),
    ("loginwindow", None, "screen locker"),
    ("com.apple.loginwindow", None, "screen locker"),
    ("ScreenSaverEngine", None, "screen locker"),
    ("com.apple.ScreenSaver.Engine", None, "screen locker"),
]


@pytest.mark.parametrize(("app_class", "title", "label_part"), DENIED_EXAMPLES)
def test_default_rules_deny_their_examples(app_class: str | None, title: str | None, label_part: str) -> None:
    rule = match(DEFAULT_RULES, focus(app_class, title))
    assert rule is not None, f"{app_class!r} / {title!r} should be denied"
    assert label_part.lower() in rule.label.lower()


#: Near misses.  Generic words in a title never deny by default: a title is mostly content the
#: volunteer or a page chose, and masking every window that mentions "password" would erase the
#: everyday work volunteers donate.  Secrets there are covered by secure-input detection, export
#: redaction and "Exclude this app".
ALLOWED_EXAMPLES = [
    ("firefox", "Mozilla Firefox"),
    ("firefox", "Inbox — Mozilla Firefox"),
    ("firefox", "Private Browsing - Wikipedia — Mozilla Firefox"),  # a page *about* it
    ("firefox", "Forgot your password? — Mozilla Firefox"),
    ("firefox", "Private repositories · GitHub — Mozilla Firefox"),
    ("Google-chrome", "Bitwarden Help Center - Google Chrome"),  # web page, not the app
    ("Google-chrome", "Download Tor Browser | Tor Project - Google Chrome"),
    ("XTerm", "password.txt - vim"),
    ("gnome-terminal-server", "alice@host: ~/secrets"),
    ("Code", "passwords.py - project - Visual Studio Code"),
    ("Zenity", "Choose a file"),
    ("i3bar", None),
    ("Lock-screen-settings", "Screen Lock"),
    ("gnome-control-center", "Privacy"),
    ("thunderbird", "Authentication failed - Mozilla Thunderbird"),
    (None, "Authenticate with GitHub - Google Chrome"),
]


@pytest.mark.parametrize(("app_class", "title"), ALLOWED_EXAMPLES)
def test_default_rules_leave_near_misses_alone(app_class: str | None, title: str | None) -> None:
    assert match(DEFAULT_RULES, focus(app_class, title)) is None


def test_default_rules_are_data_with_labels() -> None:
    assert len(DEFAULT_RULES) >= 40
    assert all(isinstance(r, DenyRule) and r.label for r in DEFAULT_RULES)
    groups = {r.label.split(" (")[0] for r in DEFAULT_RULES}
    assert {
        "password manager",
        "keyring",
        "private browser window",
        "password prompt",
        "screen locker",
    } <= groups


# ---------------------------------------------------------------- the source filter: exact cases

VAULT = focus("KeePassXC", "Passwords.kdbx - KeePassXC")
PINENTRY = focus("Pinentry-gtk-2", None)
EDITOR = focus("Gedit", "notes.txt - gedit")
UNKNOWN = focus(None, None)


def at(event: WindowFocus, t_ns: int) -> WindowFocus:
    return dataclasses.replace(event, t_ns=t_ns)


def run(
    chunks: Sequence[Sequence[Event]], rules: Sequence[DenyRule] = DEFAULT_RULES, *, stop: bool = True
) -> tuple[list[Event], DenyState]:
    state = DenyState()
    out: list[Event] = []
    for chunk in chunks:
        part, state = filter_events(chunk, state, rules)
        out += part
    if stop:
        tail, state = flush(state)
        out += tail
    return out, state


def test_a_denied_window_stores_markers_not_its_focus_or_input() -> None:
    editor, key_a = at(EDITOR, T0), KeyPress(T0 + 1 * MS, "a", None, 97)
    vault = at(VAULT, T0 + 10 * MS)
    secret: list[Event] = [
        KeyPress(T0 + 11 * MS, "s", None, 115),
        KeyRelease(T0 + 12 * MS, "s", None, 115),
        PointerMove(T0 + 13 * MS, 5, 5),
        ButtonPress(T0 + 14 * MS, 5, 5, "left"),
        ButtonRelease(T0 + 15 * MS, 5, 5, "left"),
        Scroll(T0 + 16 * MS, 5, 5, 0, 1),
    ]
    frame = Frame(T0 + 17 * MS, 0, 0, 1, 1, "webp", "click", b"img")
    back = at(EDITOR, T0 + 1510 * MS)
    key_b = KeyPress(T0 + 1511 * MS, "b", None, 98)
    out, state = run([[editor, key_a, vault, *secret, frame, back, key_b]])
    on, off = deny_markers(out)
    assert same_objects([e for e in out if not isinstance(e, Marker)], [editor, key_a, frame, back, key_b])
    assert out.index(on) == 2 and out.index(off) == 4
    assert on.t_ns == vault.t_ns and dict(on.detail) == {
        "active": True,
        "label": "password manager (KeePass)",
    }
    assert off.t_ns == back.t_ns
    assert dict(off.detail) == {
        "active": False,
        "label": "password manager (KeePass)",
        "seconds": 1.5,
        "events_left_out": 6,
    }
    assert not state.denied and state.left_out_total == 6 and state.stripped_total == 0


def test_same_label_continues_the_gap_and_another_label_starts_a_new_one() -> None:
    events: list[Event] = [
        at(VAULT, T0),
        KeyPress(T0 + 1, "x", None, 120),
        focus("KeePassXC", "Unlock Database - KeePassXC", T0 + 2),  # same label: no marker
        KeyPress(T0 + 3, "y", None, 121),
        at(PINENTRY, T0 + 4),  # another label: close and open
        KeyPress(T0 + 5, "z", None, 122),
        at(EDITOR, T0 + 6),
    ]
    out, _ = run([events])
    assert [
        (m.detail["active"], m.detail["label"], m.detail.get("events_left_out")) for m in deny_markers(out)
    ] == [
        (True, "password manager (KeePass)", None),
        (False, "password manager (KeePass)", 2),
        (True, "password prompt (pinentry)", None),
        (False, "password prompt (pinentry)", 1),
    ]
    assert same_objects([e for e in out if not isinstance(e, Marker)], [events[-1]])


def test_rules_of_one_label_share_a_gap_and_time_never_runs_backwards_in_it() -> None:
    one, seven = focus("com.1password.1password", None), focus("com.agilebits.onepassword7", None)
    assert match(DEFAULT_RULES, one) is not match(DEFAULT_RULES, seven)
    events: list[Event] = [
        at(one, T0 + 50 * MS),
        at(seven, T0 + 60 * MS),
        PointerMove(T0 + 61 * MS, 0, 0),
        at(EDITOR, T0 + 40 * MS),  # the focus watcher's clock read before the gap opened (threads)
    ]
    out, _ = run([events])
    on, off = deny_markers(out)
    assert on.t_ns == T0 + 50 * MS and off.t_ns == T0 + 40 * MS
    assert off.detail["seconds"] == 0.0 and off.detail["events_left_out"] == 1


def test_unknown_focus_keeps_keys_without_what_they_spell() -> None:
    keys: list[Event] = [
        KeyPress(T0, "p", None, 112, ("shift",)),
        KeyRelease(T0 + 1, "p", None, 112, ("shift",)),
        KeyPress(T0 + 2, None, "enter", 65293),
        KeyPress(T0 + 3, None, "shift", None),
        KeyPress(T0 + 4, None, "a", 97),  # a one-letter "name" could spell text: dropped too
        KeyPress(T0 + 5, " ", "space", 32),
        PointerMove(T0 + 6, 1, 2),
    ]
    for start in ([], [at(UNKNOWN, T0 - 1)]):  # no focus yet, and a focus the OS could not describe
        out, state = run([[*start, *keys]])
        out = [e for e in out if not isinstance(e, WindowFocus)]
        assert out[0] == KeyPress(T0, None, None, None, ("shift",))
        assert out[1] == KeyRelease(T0 + 1, None, None, None, ("shift",))
        assert out[2] == KeyPress(T0 + 2, None, "enter", None)
        assert out[3] is keys[3]  # nothing to remove: the same object
        assert out[4] == KeyPress(T0 + 4, None, None, None)
        assert out[5] == KeyPress(T0 + 5, None, None, None)
        assert out[6] is keys[6]
        assert state.stripped_total == 5 and not state.focus_known


def test_a_known_allowed_window_passes_everything_unchanged() -> None:
    events: list[Event] = [
        at(EDITOR, T0),
        KeyPress(T0 + 1, "a", None, 97),
        focus(None, "Untitled", T0 + 2),  # a title alone makes the window known
        KeyPress(T0 + 3, "b", None, 98),
        focus("XTerm", None, T0 + 4),  # so does a class alone
        KeyRelease(T0 + 5, "b", None, 98),
    ]
    out, state = run([events])
    assert same_objects(out, events) and state == DenyState(
        focus=cast(WindowFocus, events[4]), last_ns=T0 + 5, left_out_total=0, stripped_total=0
    )


def test_input_arriving_late_from_a_closed_gap_is_left_out() -> None:
    vault, back = at(VAULT, T0), at(EDITOR, T0 + 10 * MS)
    late = KeyPress(T0 + 9 * MS, "s", None, 115)  # typed in the vault, delivered after the focus change
    exactly = KeyRelease(T0 + 10 * MS, "s", None, 115)
    after = KeyPress(T0 + 11 * MS, "a", None, 97)
    out, state = run([[vault, back, late, exactly, after]])
    assert same_objects([e for e in out if not isinstance(e, Marker)], [back, after])
    assert deny_markers(out)[-1].detail["events_left_out"] == 0
    assert state.left_out_total == 2


def test_flush_closes_the_gap_at_stop_and_keeps_the_window_denied() -> None:
    _, state = run([[at(VAULT, T0), KeyPress(T0 + 2 * MS, "s", None, 115)]], stop=False)
    tail, state = flush(state, T0 + 250 * MS)
    (closing,) = deny_markers(tail)
    assert closing.t_ns == T0 + 250 * MS and dict(closing.detail) == {
        "active": False,
        "label": "password manager (KeePass)",
        "seconds": 0.25,
        "events_left_out": 1,
        "at_stop": True,
    }
    assert flush(state) == ([], state)  # nothing open any more
    assert state.denied  # but the vault still has focus
    # capture resumes with the same state, still in the vault: a new gap, input still left out
    resumed = KeyPress(T0 + 300 * MS, "t", None, 116)
    out, state = filter_events([resumed], state, DEFAULT_RULES)
    assert [m.detail["active"] for m in deny_markers(out)] == [True] and resumed not in out
    # without a time, flush closes at the latest event seen (here a frame)
    frame = Frame(T0 + 410 * MS, 0, 0, 1, 1, "webp", "keyframe", b"")
    out, state = filter_events([frame], state, DEFAULT_RULES)
    assert same_objects(out, [frame])
    (closing,) = deny_markers(flush(state)[0])
    assert closing.t_ns == frame.t_ns and closing.detail["events_left_out"] == 1
    assert closing.detail["seconds"] == 0.11


def test_refocus_applies_a_new_rule_at_once_and_a_removed_one_too() -> None:
    out, state = run([[at(EDITOR, T0), KeyPress(T0 + 1, "a", None, 97)]], stop=False)
    exclude = rule_for_app("Gedit")
    rules = (*DEFAULT_RULES, exclude)
    markers, state = refocus(state, rules, T0 + 5)
    assert [dict(m.detail) for m in deny_markers(markers)] == [{"active": True, "label": "Gedit"}]
    assert len(markers) == 1
    out, state = filter_events([KeyPress(T0 + 6, "b", None, 98)], state, rules)
    assert out == [] and state.denied
    back, state = refocus(state, DEFAULT_RULES, T0 + 9)
    assert deny_markers(back)[0].detail["events_left_out"] == 1
    assert back[-1] == at(EDITOR, T0 + 9)  # its focus, never stored while denied, is stored now
    assert refocus(DenyState(), rules, T0) == ([], DenyState())


def test_stripped_keys_keep_their_modifiers_and_time() -> None:
    key = KeyPress(T0, "Ä", None, 196, ("alt_gr", "shift"))
    (out,), _ = filter_events([key], DenyState(), DEFAULT_RULES)
    assert out == KeyPress(T0, None, None, None, ("alt_gr", "shift"))


# ---------------------------------------------------------------- the source filter: properties

FOCI = [
    VAULT,
    focus("KeePassXC", "Unlock Database - KeePassXC"),
    PINENTRY,
    focus("com.1password.1password", None),  # two different rules of one label
    focus("com.agilebits.onepassword7", None),
    focus("firefox", "Inbox — Mozilla Firefox Private Browsing"),
    focus("firefox", "Inbox — Mozilla Firefox"),
    EDITOR,
    focus(None, "Untitled"),
    UNKNOWN,
]
CHARS = st.sampled_from([None, "a", "é", " ", "\n"])
NAMES = st.sampled_from([None, "enter", "shift", "space", "a"])
VKS = st.sampled_from([None, 97, 65293])
MODS = st.sampled_from([(), ("shift",), ("ctrl", "shift")])
T = st.integers(0, 60)


def _event(kind: str, t: int, draw: st.DrawFn) -> Event:
    t_ns = T0 + t * 10 * MS
    if kind == "focus":
        return at(draw(st.sampled_from(FOCI)), t_ns)
    if kind in ("press", "release"):
        cls: type[KeyPress] | type[KeyRelease] = KeyPress if kind == "press" else KeyRelease
        return cls(t_ns, draw(CHARS), draw(NAMES), draw(VKS), draw(MODS))
    makers: dict[str, Callable[[], Event]] = {
        "move": lambda: PointerMove(t_ns, 1, 2),
        "button": lambda: ButtonPress(t_ns, 1, 2, "left"),
        "unbutton": lambda: ButtonRelease(t_ns, 1, 2, "left"),
        "scroll": lambda: Scroll(t_ns, 1, 2, 0, -1),
        "frame": lambda: Frame(t_ns, 0, 0, 1, 1, "webp", "click", b"img"),
        "marker": lambda: Marker(t_ns, "pause"),
    }
    return makers[kind]()


KINDS = st.sampled_from(
    ["focus"] * 3 + ["press"] * 4 + ["release", "move", "button", "unbutton", "scroll"] * 2
)


@st.composite
def streams(draw: st.DrawFn) -> list[Event]:
    """Random streams with random focus changes; time mostly forward, sometimes backward (threads)."""
    t = 0
    events: list[Event] = []
    steps = st.tuples(KINDS | st.sampled_from(["frame", "marker"]), st.integers(-2, 5))
    for kind, step in draw(st.lists(steps, max_size=80)):
        t = max(0, t + step)
        events.append(_event(kind, t, draw))
    return events


def spec(
    events: Sequence[Event], rules: Sequence[DenyRule] = DEFAULT_RULES
) -> tuple[list[str], list[list[Any]]]:
    """What each event should become, written from the issue text, and the gaps [label, on, off, count]."""
    label: str | None = None
    known = False
    closed: int | None = None
    gaps: list[list[Any]] = []
    kinds: list[str] = []
    for e in events:
        if isinstance(e, WindowFocus):
            rule = match(rules, e)
            new = rule.label if rule else None
            if label is not None and new != label:
                gaps[-1][2] = e.t_ns
                closed = e.t_ns if closed is None else max(closed, e.t_ns)
            if new is not None and new != label:
                gaps.append([new, e.t_ns, None, 0])
            label, known = new, (e.app_class is not None or e.title is not None)
            kinds.append("denied focus" if new else "focus")
        elif isinstance(e, INPUT_TYPES):
            if label is not None:
                gaps[-1][3] += 1
                kinds.append("left out")
            elif closed is not None and e.t_ns <= closed:
                kinds.append("late")
            elif not known and isinstance(e, (KeyPress, KeyRelease)):
                kinds.append("stripped")
            else:
                kinds.append("kept")
        else:
            kinds.append("other")
    return kinds, gaps


def stripped(e: KeyPress | KeyRelease) -> KeyPress | KeyRelease:
    name = e.name if e.char is None and e.name is not None and len(e.name) > 1 else None
    return dataclasses.replace(e, char=None, vk=None, name=name)


@PROPERTY_SETTINGS
@given(streams())
def test_no_input_is_stored_while_a_denied_window_has_focus(events: list[Event]) -> None:
    out, state = run([events])
    kinds, _ = spec(events)
    stored = {id(e) for e in out}
    for e, kind in zip(events, kinds, strict=True):
        if kind in ("left out", "late", "denied focus"):
            assert id(e) not in stored
    assert not any(isinstance(e, WindowFocus) and match(DEFAULT_RULES, e) for e in out)
    inputs_out = [e for e in out if isinstance(e, INPUT_TYPES)]
    assert len(inputs_out) == sum(k in ("kept", "stripped") for k in kinds)
    assert state.left_out_total == sum(k in ("left out", "late") for k in kinds)


@PROPERTY_SETTINGS
@given(streams())
def test_every_other_event_passes_unchanged_and_in_order(events: list[Event]) -> None:
    out, _ = run([events])
    kinds, _ = spec(events)
    expected = [e for e, k in zip(events, kinds, strict=True) if k in ("other", "focus")]
    passed = [
        e
        for e in out
        if not isinstance(e, INPUT_TYPES) and not (isinstance(e, Marker) and e.marker == DENY_MARKER)
    ]
    assert same_objects(passed, expected)
    kept = [e for e, k in zip(events, kinds, strict=True) if k == "kept"]
    assert same_objects([e for e in out if any(e is k for k in kept)], kept)


@PROPERTY_SETTINGS
@given(streams())
def test_markers_pair_up_with_their_counts(events: list[Event]) -> None:
    out, state = run([events])
    _, gaps = spec(events)
    markers = deny_markers(out)
    assert [m.detail["active"] for m in markers] == [True, False] * len(gaps)
    last_t = max((e.t_ns for e in events), default=None)
    for (label, on_t, off_t, count), on, off in zip(gaps, markers[::2], markers[1::2], strict=True):
        assert dict(on.detail) == {"active": True, "label": label} and on.t_ns == on_t
        end = off_t if off_t is not None else max(on_t, last_t or on_t)
        assert off.t_ns == end
        assert off.detail["label"] == label and off.detail["events_left_out"] == count
        assert off.detail["seconds"] == round(max(0, end - on_t) / 1e9, 3)
        assert off.detail.get("at_stop", False) is (off_t is None)
    assert state.since_ns is None


@PROPERTY_SETTINGS
@given(streams())
def test_the_whole_output_follows_the_spec(events: list[Event]) -> None:
    out, _ = run([events], stop=False)
    kinds, gaps = spec(events)
    gap_iter = iter(gaps)
    expected: list[Event] = []
    label: str | None = None
    open_gap: list[Any] | None = None
    for e, kind in zip(events, kinds, strict=True):
        if isinstance(e, WindowFocus):
            rule = match(DEFAULT_RULES, e)
            new = rule.label if rule else None
            if label is not None and new != label and open_gap is not None:
                seconds = round((e.t_ns - open_gap[1]) / 1e9, 3)
                detail = {"active": False, "label": label, "seconds": max(seconds, 0.0)}
                expected.append(Marker(e.t_ns, DENY_MARKER, {**detail, "events_left_out": open_gap[3]}))
            if new is not None and new != label:
                open_gap = next(gap_iter)
                expected.append(Marker(e.t_ns, DENY_MARKER, {"active": True, "label": new}))
            label = new
        if kind in ("focus", "kept", "other"):
            expected.append(e)
        elif kind == "stripped":
            assert isinstance(e, (KeyPress, KeyRelease))
            expected.append(stripped(e))
    assert out == expected


@PROPERTY_SETTINGS
@given(streams(), st.lists(st.integers(0, 200), max_size=6))
def test_batches_with_the_state_threaded_equal_the_whole_stream(events: list[Event], cuts: list[int]) -> None:
    bounds = [0, *sorted(min(c, len(events)) for c in cuts), len(events)]
    chunks = [events[a:b] for a, b in pairwise(bounds)]
    whole, whole_state = run([events])
    split, split_state = run(chunks)
    assert split == whole and split_state == whole_state


@PROPERTY_SETTINGS
@given(streams())
def test_keys_under_unknown_focus_never_carry_characters(events: list[Event]) -> None:
    out, _ = run([events])
    kinds, _ = spec(events)
    by_id = {id(e): k for e, k in zip(events, kinds, strict=True)}
    for e in out:
        if isinstance(e, (KeyPress, KeyRelease)) and by_id.get(id(e)) != "kept":
            assert e.char is None and e.vk is None
            assert e.name is None or len(e.name) > 1


# ---------------------------------------------------------------- frame masking

VAULT_AT = focus("KeePassXC", "db - KeePassXC", x=-100, y=-50, width=300, height=200)


def test_mask_rects_clips_to_the_virtual_screen_across_monitors() -> None:
    shot = (-1920, 0, 3840, 1080)  # a monitor left of the primary one
    windows = [
        VAULT_AT,  # partly above the screen
        focus("Gedit", "notes", x=0, y=0, width=500, height=500),  # allowed: not masked
        focus("Pinentry-gtk-2", None, x=1800, y=1000, width=400, height=300),  # past the bottom-right
        focus("firefox", "x — Mozilla Firefox Private Browsing", x=-1920, y=0, width=1920, height=1080),
        focus("XScreenSaver", None, x=5000, y=0, width=10, height=10),  # entirely off the shot
    ]
    assert mask_rects(shot, windows, DEFAULT_RULES) == [
        (-100, 0, 300, 150),
        (1800, 1000, 120, 80),
        (-1920, 0, 1920, 1080),
    ]
    assert mask_rects(shot, windows[1:2], DEFAULT_RULES) == []
    assert mask_rects(shot, [VAULT_AT], DEFAULT_RULES, margin=30) == [(-130, 0, 360, 180)]
    with pytest.raises(ValueError, match="margin"):
        mask_rects(shot, [], DEFAULT_RULES, margin=-1)


def test_a_denied_window_without_geometry_masks_the_whole_shot() -> None:
    shot = (-1280, -200, 3200, 1280)
    windows = [VAULT_AT, focus("LockApp.exe", None)]
    assert mask_rects(shot, windows, DEFAULT_RULES) == [shot]
    assert mask_rects(shot, [focus("Gedit", "x")], DEFAULT_RULES) == []  # allowed: geometry not needed


def test_apply_masks_paints_a_copy() -> None:
    width, height, left, top = 4, 3, -2, 10
    pixels = bytes(range(width * height * 4))
    out = apply_masks(pixels, width, height, left, top, [(-1, 11, 2, 5)])
    assert isinstance(out, bytearray) and out is not pixels
    grid = [
        [bytes(out[(y * width + x) * 4 : (y * width + x) * 4 + 4]) for x in range(width)]
        for y in range(height)
    ]
    masked = {(x, y) for y in range(height) for x in range(width) if grid[y][x] == MASK_BGRA}
    assert masked == {(1, 1), (2, 1), (1, 2), (2, 2)}
    unmasked = apply_masks(bytearray(pixels), width, height, left, top, [])
    assert unmasked == pixels and unmasked is not pixels


def test_apply_masks_checks_its_buffer() -> None:
    with pytest.raises(ValueError, match="BGRA buffer"):
        apply_masks(b"\0" * 15, 2, 2, 0, 0, [])
    with pytest.raises(ValueError, match="4 bytes"):
        apply_masks(b"\0" * 16, 2, 2, 0, 0, [], color=b"\0")


RECTS = st.lists(
    st.tuples(st.integers(-30, 30), st.integers(-30, 30), st.integers(-5, 25), st.integers(-5, 25)),
    max_size=5,
)


@PROPERTY_SETTINGS
@given(
    st.tuples(st.integers(1, 13), st.integers(1, 9), st.integers(-20, 20), st.integers(-20, 20)),
    RECTS,
    st.randoms(use_true_random=False),
)
def test_apply_masks_changes_exactly_the_pixels_inside(
    shot: tuple[int, int, int, int], rects: list[tuple[int, int, int, int]], rnd: Any
) -> None:
    width, height, left, top = shot
    pixels = bytes(rnd.getrandbits(8) for _ in range(width * height * 4))
    original = bytes(pixels)
    buffer = bytearray(pixels)
    out = apply_masks(buffer, width, height, left, top, rects)
    assert buffer == original  # the grab itself is untouched
    for y in range(height):
        for x in range(width):
            vx, vy = x + left, y + top
            inside = any(rx <= vx < rx + rw and ry <= vy < ry + rh for rx, ry, rw, rh in rects)
            got = bytes(out[(y * width + x) * 4 : (y * width + x) * 4 + 4])
            assert got == (MASK_BGRA if inside else original[(y * width + x) * 4 : (y * width + x) * 4 + 4])


@PROPERTY_SETTINGS
@given(st.integers(-40, 40), st.integers(-40, 40), st.integers(1, 30), st.integers(1, 30), st.integers(0, 5))
def test_mask_rects_then_apply_masks_cover_the_visible_part_of_a_window(
    x: int, y: int, w: int, h: int, margin: int
) -> None:
    left, top, width, height = -10, -5, 20, 12
    window = focus("KeePassXC", None, x=x, y=y, width=w, height=h)
    rects = mask_rects((left, top, width, height), [window], DEFAULT_RULES, margin=margin)
    for rx, ry, rw, rh in rects:  # clipped to the shot and never empty
        assert left <= rx and top <= ry and rw > 0 and rh > 0
        assert rx + rw <= left + width and ry + rh <= top + height
    out = apply_masks(bytes(width * height * 4), width, height, left, top, rects)
    for py in range(height):
        for px in range(width):
            vx, vy = px + left, py + top
            inside = x - margin <= vx < x + w + margin and y - margin <= vy < y + h + margin
            i = (py * width + px) * 4
            assert (bytes(out[i : i + 4]) == MASK_BGRA) is inside


def test_masking_a_1080p_shot_is_fast() -> None:
    width, height = 1920, 1080
    pixels = bytes(width * height * 4)
    rects = [(560, 240, 800, 600)]
    best = min(_timed(lambda: apply_masks(pixels, width, height, 0, 0, rects)) for _ in range(7))
    assert best < 0.05, f"masking took {best * 1000:.1f} ms"  # ~1 ms on a laptop; generous for CI


def _timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def test_pasted_text_follows_the_keys() -> None:
    """A paste into a denied window is left out; under unknown focus it loses its text."""
    paste = Paste(T0 + 5, "pasted words")
    out, state = run([[at(VAULT, T0), paste]])
    assert paste not in out and state.left_out_total == 1
    out, state = run([[at(UNKNOWN, T0), paste]])
    assert Paste(T0 + 5, None) in out and state.stripped_total == 1
    out, _ = run([[at(EDITOR, T0), paste]])
    assert out[-1] is paste
