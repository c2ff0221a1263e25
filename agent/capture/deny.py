r"""Deny rules at the source (P4): windows whose input is never stored and whose pixels are masked.

What: a :class:`DenyRule` names windows by application class (a glob) and/or
title (a regular expression).  :data:`DEFAULT_RULES` covers password managers,
private browser windows, password prompts and screen lockers; a study file and
"Exclude this app" (:func:`rule_for_app`) add more.  Why: the safest secret is
one that is never written down, so these windows are minimised *at the source*,
before anything reaches the encrypted store, not only at export.

Two pure stages use the rules:

* :func:`filter_events`, on the recorder's ordered event stream, a state machine
  like :mod:`agent.capture.coalesce`:

  - A :class:`~agent.events.WindowFocus` that matches a rule is **not stored**
    (its title and class may be sensitive); a ``deny`` marker
    ``{"active": True, "label": rule.label}`` is stored instead.  When the focus
    leaves it (for a window of another label, an allowed or an unknown window),
    a ``deny`` marker ``{"active": False, "label", "seconds", "events_left_out"}``
    closes the gap.  A focus change between two windows of the same label
    continues the gap silently.
  - While a denied window has focus, every key, button, scroll and pointer move
    is left out and counted.  Frames, markers and everything else pass
    unchanged: frames are masked by the screen watcher (below), not dropped.
  - **Late input**: an input event that arrives after the gap closed but is
    stamped no later than the moment it closed (hooks run on several threads)
    is left out too; it is counted in :attr:`DenyState.left_out_total`, not in
    the closed gap's marker, which was already stored.
  - **Unknown focus** (no focus seen yet, or a focus with neither class nor
    title): key events are kept without their character and key code, and
    with their name only for non-character keys (``enter``, ``ctrl``), so
    nothing typed can be spelled back (fail closed).  Pointer events are kept.
  - :func:`flush` closes an open gap at pause/stop (``"at_stop": True``); the
    matched rule is kept, so input that arrives later with the same state is
    still left out (under a new gap) until a focus event says otherwise.
  - :func:`refocus` re-judges the focused window after the rules changed
    ("Exclude this app" takes effect at once, not at the next focus change).

  The state carries across calls: filtering batch by batch gives exactly the
  output of filtering the whole stream at once.

* :func:`mask_rects` and :func:`apply_masks`, for the screen watcher: the
  rectangles of every matching window (focused or not, on any monitor: all are
  in the one virtual screen) are painted solid grey in a *copy* of the raw
  BGRA grab.  A matching window whose geometry is unknown masks the whole shot
  (fail closed).

Matching: ``app_class`` is a case-insensitive :mod:`fnmatch` glob over the
whole :attr:`~agent.events.WindowFocus.app_class` (the WM_CLASS class on X11,
``keepassxc``; the executable name on Windows, ``KeePassXC.exe``; the bundle id
on macOS, ``org.keepassxc.keepassxc``, or the owner name when there is none);
``title`` is a case-insensitive regular expression *searched* in the title.
When a rule gives both, both must match; a rule never matches a field the OS
did not tell (None).

Time is bounded, whatever the rule and the title (P3: a rule must never stall
the agent).  Title patterns are compiled by RE2 (the ``google-re2`` package),
an engine without backtracking: a search takes time linear in the title, so a
pattern such as ``(a+)+$`` that makes a backtracking engine run for minutes on
``aaa…a!`` is harmless here.  RE2's syntax is Python's minus the features that
need backtracking (lookarounds, backreferences, atomic groups) and ``\Z``
(written ``\z``); such a pattern is refused with the fix, as is a pattern longer
than :data:`MAX_PATTERN` characters or whose compiled program exceeds
:data:`MAX_PROGRAM` instructions.  ``\b``, ``\w``, ``\s`` and ``\d`` are ASCII
classes in RE2; case-insensitivity covers Unicode letters.  Class globs are
translated by :mod:`fnmatch`, whose patterns cannot backtrack catastrophically.
Both are matched against at most :data:`MATCH_HEAD` + :data:`MATCH_TAIL`
characters: a longer title or class is judged on its head and its tail, joined
by a line break (the default rules look at the start, the end, or a coined word
such as "Incognito" that browsers put near the end).

Titles and generic words: the default rules never match ordinary words such as
"password", "secret" or "login" anywhere in a title.  A title is mostly content
the volunteer or a web page chose (``password.txt - vim``, "Forgot your
password? - Mozilla Firefox", a page *about* private browsing), so such words
would mask ordinary work: the demonstrations volunteers donate would lose
exactly the everyday tasks they show, and volunteers would learn to switch the
rules off.  Default title patterns match only what the software itself writes:
the private-mode suffix of a browser's window title (at the end, where the
browser puts it), the coined mode names "Incognito" and "InPrivate", and a
whole title that is nothing but a password request ("Authenticate",
"Password").  Secrets typed elsewhere are protected by the secure-input watch
(password fields, where the OS tells), by export redaction (no typed character
leaves), and by "Exclude this app".

Known gaps: title patterns are English plus a few common locales; a browser
that writes no private-mode suffix (Chrome on macOS, whose window-list title
has none) is caught only on its "New Incognito Tab" page; a screen locker that
grabs the keyboard without taking the focus (override-redirect X11 lockers
such as i3lock) is not seen by the focus watch.

No threads, no I/O, no logging, no global state.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import re2  # type: ignore[import-untyped]  # google-re2 ships no type information

from agent.events import (
    ButtonPress,
    ButtonRelease,
    Event,
    KeyPress,
    KeyRelease,
    Marker,
    Paste,
    PointerMove,
    Scroll,
    WindowFocus,
)

#: The marker this module emits; it must be one of :data:`agent.events.MARKERS`.
DENY_MARKER = "deny"

#: The colour masked rectangles are painted with, one BGRA pixel (mid grey, opaque).
MASK_BGRA = b"\x80\x80\x80\xff"

#: Input events left out while a denied window has focus.
INPUT_TYPES: tuple[type, ...] = (KeyPress, KeyRelease, Paste, PointerMove, ButtonPress, ButtonRelease, Scroll)

_JSON_KEYS = frozenset({"label", "app_class", "title"})
#: Longest label a rule may have (it is stored in every deny marker).
MAX_LABEL = 200
#: Longest class glob or title pattern a rule may have (characters).
MAX_PATTERN = 1024
#: Largest compiled title pattern (RE2 program instructions): bounds the cost of one search.
MAX_PROGRAM = 4096
#: A title or class longer than MATCH_HEAD + MATCH_TAIL characters is judged on its first
#: MATCH_HEAD and last MATCH_TAIL characters, joined by a line break.
MATCH_HEAD = 512
MATCH_TAIL = 512

#: RE2's refusals, by the start of its message (RE2 names no position): what is wrong, and the fix.
_RE2_FIXES = (
    (
        "invalid perl operator",
        "it uses a construct that needs backtracking (a lookaround such as (?=…), (?!…), (?<=…), "
        "a backreference (?P=name), an atomic group or a conditional), which optin's regex engine "
        "(RE2, linear time) does not run",
        "rewrite the pattern without it",
    ),
    (
        "invalid escape sequence",
        "it uses an escape RE2 does not know (a backreference such as \\1, or \\Z)",
        "write \\z for the end of the title, and match the text itself instead of a backreference",
    ),
    (
        "invalid repetition size",
        "a counted repetition {n,m} is larger than 1000",
        "use a smaller count, or + or *",
    ),
    (
        "bad repetition operator",
        "a quantifier follows another quantifier (such as ** or +*), or repeats too much in total",
        "remove the extra quantifier",
    ),
    ("missing )", "a group is not closed", "add the missing ) or escape the ( as \\("),
    ("unexpected )", "a ) closes no group", "remove it or escape it as \\)"),
    ("missing ]", "a character class is not closed", "add the missing ] or escape the [ as \\["),
    ("pattern too large", "it is too complex", f"a shorter pattern (at most {MAX_PROGRAM} steps)"),
)
_RE2_OTHER = (
    "it is not in RE2's syntax",
    "check it against RE2's syntax (Python's, without lookarounds and backreferences)",
)

Rect = tuple[int, int, int, int]


@dataclass(frozen=True)
class DenyRule:
    """Windows whose input is left out and whose pixels are masked.

    :ivar label: what the ``deny`` markers say (stored in the session: keep it coarse).
    :ivar app_class: a case-insensitive glob over the whole application class, or None.
    :ivar title: a case-insensitive regular expression (RE2 syntax) searched in the title, or None.
    :raises ValueError: no pattern given, an empty label or pattern, a value that
        is not a string, a pattern longer than :data:`MAX_PATTERN`, or a title that
        RE2 cannot run (the message names the label, what is wrong and the fix,
        never the pattern).
    """

    label: str
    app_class: str | None = None
    title: str | None = None
    _class_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False, default=None)
    _title_re: Any = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        if not isinstance(self.label, str) or not self.label.strip() or len(self.label) > MAX_LABEL:
            msg = f"a deny rule needs a label: a non-empty string of at most {MAX_LABEL} characters"
            raise ValueError(msg)
        for name in ("app_class", "title"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                msg = f"deny rule {self.label!r}: {name} must be a non-empty string or absent"
                raise ValueError(msg)
            if value is not None and len(value) > MAX_PATTERN:
                msg = (
                    f"deny rule {self.label!r}: its {name} has {len(value)} characters; at most "
                    f"{MAX_PATTERN}. Fix: a shorter pattern"
                )
                raise ValueError(msg)
        if self.app_class is None and self.title is None:
            msg = f"deny rule {self.label!r} matches nothing: give app_class, title or both"
            raise ValueError(msg)
        if self.app_class is not None:
            object.__setattr__(
                self, "_class_re", re.compile(fnmatch.translate(self.app_class), re.IGNORECASE)
            )
        if self.title is not None:
            compiled, problem = _compile_title(self.title)
            if problem is not None:
                msg = f"deny rule {self.label!r}: its title {problem}"
                raise ValueError(msg)
            object.__setattr__(self, "_title_re", compiled)

    def matches(self, focus: WindowFocus) -> bool:
        """Whether ``focus`` is a window of this rule (every given pattern matches).

        Bounded time: each field is cut to :data:`MATCH_HEAD` + :data:`MATCH_TAIL`
        characters and titles are searched by RE2 (linear in the title).
        """
        if self._class_re is not None and (
            focus.app_class is None or self._class_re.match(_bounded(focus.app_class)) is None
        ):
            return False
        return self._title_re is None or (
            focus.title is not None and self._title_re.search(_title_bytes(focus.title)) is not None
        )

    def to_json(self) -> dict[str, str]:
        """The rule as a JSON object (absent patterns are left out)."""
        out = {"label": self.label}
        if self.app_class is not None:
            out["app_class"] = self.app_class
        if self.title is not None:
            out["title"] = self.title
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> DenyRule:
        """Inverse of :meth:`to_json`.

        :raises ValueError: not an object, unknown keys (a misspelt key must not
            silently widen or drop a rule), or an invalid rule.
        """
        if not isinstance(obj, Mapping):
            msg = (
                f"a deny rule must be an object with label, app_class and/or title, not {type(obj).__name__}"
            )
            raise ValueError(msg)
        unknown = sorted(str(k)[:40] for k in obj if k not in _JSON_KEYS)
        if unknown:
            label = str(obj.get("label"))[:MAX_LABEL]
            msg = f"deny rule {label!r}: unknown keys {unknown}; expected {sorted(_JSON_KEYS)}"
            raise ValueError(msg)
        return cls(label=obj.get("label", ""), app_class=obj.get("app_class"), title=obj.get("title"))


def title_pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` cannot be a deny rule's title, with the fix; None when it can.

    The sentence continues "the title …" (``"is not a valid regular expression: …"``)
    and never quotes the pattern.  The study file check and ``optin exclude`` use it,
    so both refuse exactly what :class:`DenyRule` refuses.
    """
    if not isinstance(pattern, str) or not pattern:
        return "must be a non-empty string"
    if len(pattern) > MAX_PATTERN:
        return f"has {len(pattern)} characters; at most {MAX_PATTERN}. Fix: a shorter pattern"
    return _compile_title(pattern)[1]


def _compile_title(pattern: str) -> tuple[Any, str | None]:
    """``(compiled, None)``, or ``(None, why with the fix)``: RE2, case-insensitive, no captures."""
    options = re2.Options()
    options.case_sensitive = False
    options.log_errors = False  # RE2 would print the pattern on stderr
    options.never_capture = True  # only whether it matches is asked
    try:
        compiled = re2.compile(pattern, options)
    except re2.error as exc:
        raw = exc.args[0] if exc.args else b""
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        what, fix = next(((w, f) for prefix, w, f in _RE2_FIXES if text.startswith(prefix)), _RE2_OTHER)
        syntax = _python_syntax_error(pattern)
        if syntax is not None:  # a plain syntax error: Python's parser says where
            return None, f"is not a valid regular expression: {syntax}. Fix: {fix}"
        return None, f"is not a valid regular expression for optin: {what}. Fix: {fix}"
    except (TypeError, UnicodeError):
        return None, "is not text that optin can compile. Fix: write it as plain UTF-8 text"
    if compiled.programsize > MAX_PROGRAM:
        return None, (
            f"is too complex: it compiles to {compiled.programsize} steps; at most {MAX_PROGRAM}. "
            "Fix: smaller counted repetitions {n,m} or fewer alternatives"
        )
    return compiled, None


def _python_syntax_error(pattern: str) -> str | None:
    """``"missing ), unterminated subpattern at position 7"`` when Python's parser finds a plain
    syntax error too, else None (RE2 names no position; compiling, never matching, with
    :mod:`re` costs time linear in the pattern)."""
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"{exc.msg} at position {exc.pos}" if exc.pos is not None else exc.msg
    except (RecursionError, OverflowError, ValueError):
        return None
    return None


def _bounded(text: str) -> str:
    """``text``, or its head and tail joined by a line break when it is longer than the bound."""
    if len(text) <= MATCH_HEAD + MATCH_TAIL:
        return text
    return f"{text[:MATCH_HEAD]}\n{text[-MATCH_TAIL:]}"


def _title_bytes(title: str) -> bytes:
    """The bounded title as UTF-8 for RE2 (a lone surrogate an OS string may carry becomes ``?``)."""
    return _bounded(title).encode("utf-8", "replace")


def rule_for_app(app_class: str, *, label: str | None = None) -> DenyRule:
    """The rule "Exclude this app" adds: exactly this application class (glob characters escaped)."""
    if not app_class:
        msg = "cannot exclude an application whose class the OS did not tell"
        raise ValueError(msg)
    return DenyRule(label=label or app_class, app_class=re.sub(r"([*?\[])", r"[\1]", app_class))


# ---------------------------------------------------------------------------------------------------
# The default rules.  Data only: each rule is (label, class glob and/or title regex).  Class globs
# are matched case-insensitively against the whole class: X11 WM_CLASS class, Windows exe name,
# macOS bundle id (or owner name).  A glob with a leading "*" also catches the vendor's bundle id
# ("com.bitwarden.desktop") and exe ("Bitwarden.exe"); it is used only for names distinctive enough
# that any application carrying them is that product.

#: Every rule optin applies unless a study or the volunteer adds more (none can be removed).
DEFAULT_RULES: tuple[DenyRule, ...] = (
    # -- Password managers: the whole application is a vault; its window shows and its keys are secrets.
    # KeePass family: KeePassXC (keepassxc, KeePassXC.exe, org.keepassxc.keepassxc), KeePass 2
    # (KeePass.exe, KeePass2 under Mono), KeePassX, KeePassium.
    DenyRule("password manager (KeePass)", app_class="*keepass*"),
    # 1Password: X11 and owner name "1Password", 1Password.exe, com.1password.1password (8);
    # com.agilebits.onepassword7 / -osx (7 and older).
    DenyRule("password manager (1Password)", app_class="*1password*"),
    DenyRule("password manager (1Password)", app_class="com.agilebits.onepassword*"),
    # Bitwarden (Bitwarden, Bitwarden.exe, com.bitwarden.desktop), LastPass (LastPass.exe,
    # com.lastpass.LastPass), Dashlane (Dashlane.exe, com.dashlane.*).
    DenyRule("password manager (Bitwarden)", app_class="*bitwarden*"),
    DenyRule("password manager (LastPass)", app_class="*lastpass*"),
    DenyRule("password manager (Dashlane)", app_class="*dashlane*"),
    # Enpass: Enpass, Enpass.exe; in.sinew.Enpass-Desktop on macOS.
    DenyRule("password manager (Enpass)", app_class="enpass*"),
    DenyRule("password manager (Enpass)", app_class="in.sinew.enpass*"),
    # Others with distinctive names: Proton Pass, NordPass, RoboForm, Keeper, Password Safe, QtPass.
    DenyRule("password manager (Proton Pass)", app_class="proton*pass*"),
    DenyRule("password manager (Proton Pass)", app_class="me.proton.pass*"),
    DenyRule("password manager (NordPass)", app_class="*nordpass*"),
    DenyRule("password manager (RoboForm)", app_class="*roboform*"),
    DenyRule("password manager (Keeper)", app_class="keeperpasswordmanager*"),
    DenyRule("password manager (Keeper)", app_class="com.keepersecurity.*"),
    DenyRule("password manager (Password Safe)", app_class="*pwsafe*"),
    DenyRule("password manager (Password Safe)", app_class="*passwordsafe*"),
    DenyRule("password manager (QtPass)", app_class="qtpass*"),
    # Desktop keyrings: GNOME Seahorse ("Passwords and Keys": seahorse, org.gnome.seahorse.Application),
    # GNOME Secrets, KDE KWallet (kwalletmanager5, org.kde.kwalletmanager, kwalletd5/6 prompts),
    # macOS Keychain Access and Passwords.
    DenyRule("keyring (Seahorse)", app_class="*seahorse*"),
    DenyRule("keyring (Seahorse)", title=r"^\s*Passwords and Keys\s*$"),
    DenyRule("keyring (GNOME Secrets)", app_class="org.gnome.world.secrets*"),
    DenyRule("keyring (KWallet)", app_class="*kwallet*"),
    DenyRule("keyring (macOS Keychain)", app_class="com.apple.keychainaccess"),
    DenyRule("keyring (macOS Keychain)", app_class="keychain access"),
    DenyRule("keyring (macOS Passwords)", app_class="com.apple.passwords"),
    # -- Private browser windows: the browser marks them only in the window title, so these are
    # title patterns, in the place each browser writes its mark.  Firefox and its forks end the
    # title with "Private Browsing" (browser.ftl: "... — Mozilla Firefox Private Browsing", older
    # "... - Mozilla Firefox (Private Browsing)", macOS "... — Private Browsing").  Chromium-based
    # browsers write "(Incognito)" ("... - Google Chrome (Incognito)", new tab "New Incognito Tab"),
    # Edge writes "InPrivate", Brave and others "(Private)" or "Private Window" at the end.
    # "Incognito" and "InPrivate" are coined mode names, rare in ordinary titles, so they match
    # anywhere; the generic word "private" matches only in those end positions.
    DenyRule("private browser window", title=r"\bprivate browsing\)?\s*$"),
    DenyRule("private browser window", title=r"\bincognito\b"),
    DenyRule("private browser window", title=r"\binprivate\b"),
    DenyRule("private browser window", title=r"(?:\(private\)|\bprivate window|\bprivate tab)\s*$"),
    # A few common locales (Firefox browser.ftl, Chrome's translations), best effort.
    DenyRule(
        "private browser window",
        title=r"\b(?:privater modus|navigation privée|navegación privada|navigazione anonima)\)?\s*$",
    ),
    DenyRule("private browser window", title=r"\b(?:inkognito|incógnito)\b"),
    # Browsers that are private in every window: Tor Browser (X11 class "Tor Browser", macOS
    # org.torproject.torbrowser; on Windows the exe is firefox.exe, so its title suffix) and
    # Mullvad Browser.
    DenyRule("private browser window (Tor Browser)", app_class="tor browser*"),
    DenyRule("private browser window (Tor Browser)", app_class="org.torproject.torbrowser"),
    DenyRule("private browser window (Tor Browser)", title=r"\bTor Browser\s*$"),
    DenyRule("private browser window (Mullvad Browser)", app_class="mullvad browser*"),
    DenyRule("private browser window (Mullvad Browser)", app_class="net.mullvad.mullvadbrowser"),
    DenyRule("private browser window (Mullvad Browser)", title=r"\bMullvad Browser\s*$"),
    # -- Password prompts: short-lived windows that exist to take a password or passphrase.
    # GnuPG pinentry (pinentry-gtk-2 -> "Pinentry-gtk-2", pinentry-qt, pinentry-mac, pinentry-w32.exe).
    DenyRule("password prompt (pinentry)", app_class="*pinentry*"),
    # SSH/sudo askpass helpers: ssh-askpass, x11-ssh-askpass, ksshaskpass, lxqt-openssh-askpass.
    DenyRule("password prompt (askpass)", app_class="*askpass*"),
    # GNOME keyring unlock and GCR prompts (Gcr-prompter), run-as-root front ends.
    DenyRule("password prompt (keyring)", app_class="gcr*prompter*"),
    DenyRule("password prompt (su)", app_class="kdesu*"),
    DenyRule("password prompt (su)", app_class="gksu*"),
    DenyRule("password prompt (git credentials)", app_class="git-credential-manager*"),
    # Polkit agents: polkit-gnome-authentication-agent-1, polkit-mate-authentication-agent-1,
    # polkit-kde-authentication-agent-1, lxpolkit, xfce-polkit, lxqt-policykit-agent.
    DenyRule("password prompt (polkit)", app_class="*polkit*"),
    DenyRule("password prompt (polkit)", app_class="*policykit*"),
    # A whole title that is nothing but a password request: polkit dialogs ("Authenticate",
    # "Authentication Required") of agents whose class is not above, zenity/kdialog/yad
    # prompts titled "Password" or "sudo".  Anchored at both ends: "password.txt - vim" does
    # not match.
    DenyRule(
        "password prompt",
        title=(
            r"^\s*(?:\[sudo\]\s*)?(?:authenticate|authentication required|authorization required"
            r"|(?:enter |type your )?(?:password|passphrase)(?: required| for \S+)?"
            r"|sudo(?: password)?)\s*:?\s*$"
        ),
    ),
    # Script dialogs (zenity, kdialog, yad) that ask for a password say so in their title.
    DenyRule(
        "password prompt (dialog)", app_class="zenity", title=r"pass(?:word|phrase)|\bsudo\b|\bauthenti"
    ),
    DenyRule(
        "password prompt (dialog)", app_class="kdialog", title=r"pass(?:word|phrase)|\bsudo\b|\bauthenti"
    ),
    DenyRule("password prompt (dialog)", app_class="yad", title=r"pass(?:word|phrase)|\bsudo\b|\bauthenti"),
    # Windows: UAC consent and the "Windows Security" credential dialog.  macOS: SecurityAgent
    # (authorisation and keychain password dialogs).
    DenyRule("password prompt (Windows)", app_class="consent.exe"),
    DenyRule("password prompt (Windows)", app_class="credentialuibroker.exe"),
    DenyRule("password prompt (macOS)", app_class="com.apple.securityagent"),
    DenyRule("password prompt (macOS)", app_class="securityagent"),
    # -- Screen lockers: the unlock password is typed into them.  "*screensaver*" covers
    # xscreensaver, gnome-, mate-, cinnamon- and xfce4-screensaver and macOS ScreenSaverEngine
    # (com.apple.ScreenSaver.Engine); Windows screensavers run as NAME.scr.
    DenyRule("screen locker", app_class="*screensaver*"),
    DenyRule("screen locker", app_class="light-locker*"),
    DenyRule("screen locker", app_class="i3lock*"),
    DenyRule("screen locker", app_class="xsecurelock*"),
    DenyRule("screen locker", app_class="kscreenlocker*"),
    DenyRule("screen locker", app_class="slock"),
    DenyRule("screen locker", app_class="xlock*"),
    DenyRule("screen locker", app_class="xtrlock*"),
    DenyRule("screen locker", app_class="lockapp.exe"),
    DenyRule("screen locker", app_class="logonui.exe"),
    DenyRule("screen locker", app_class="*.scr"),
    DenyRule("screen locker", app_class="com.apple.loginwindow"),
    DenyRule("screen locker", app_class="loginwindow"),
)


def match(rules: Iterable[DenyRule], focus: WindowFocus | None) -> DenyRule | None:
    """The first rule ``focus`` matches, or None (also for no focus)."""
    if focus is None or (focus.app_class is None and focus.title is None):
        return None
    for rule in rules:
        if rule.matches(focus):
            return rule
    return None


# ---------------------------------------------------------------------------------------------------
# The source filter.


@dataclass(frozen=True, slots=True)
class DenyState:
    """What :func:`filter_events` remembers between batches; start with ``DenyState()``.

    :ivar focus: the latest focus event (kept in memory only; None before the first).
    :ivar rule: the rule the focused window matches (None: allowed or unknown).
    :ivar since_ns: when the open gap began (None: no gap is open).
    :ivar left_out: input events left out in the open gap.
    :ivar closed_ns: when the last gap closed: input stamped no later arrives late and is left out.
    :ivar last_ns: the latest ``t_ns`` seen (the default time of :func:`flush`).
    :ivar left_out_total: every input event left out so far (in gaps and late).
    :ivar stripped_total: key events whose character, code or name was removed (unknown focus).
    """

    focus: WindowFocus | None = field(default=None, repr=False)  # its title must not reach a log
    rule: DenyRule | None = None
    since_ns: int | None = None
    left_out: int = 0
    closed_ns: int | None = None
    last_ns: int | None = None
    left_out_total: int = 0
    stripped_total: int = 0

    @property
    def denied(self) -> bool:
        """Whether input is being left out now."""
        return self.rule is not None

    @property
    def focus_known(self) -> bool:
        """Whether the focused window has a class or a title (else keys lose their characters)."""
        return focus_known(self.focus)


def filter_events(
    events: Iterable[Event], state: DenyState, rules: Sequence[DenyRule]
) -> tuple[list[Event], DenyState]:
    """Filter one batch in stream order; returns the events to store and the state for the next batch.

    Passed-through events are the same objects; only ``deny`` markers and key
    events stripped under unknown focus are new.
    """
    focus, rule, since, left_out = state.focus, state.rule, state.since_ns, state.left_out
    closed, last = state.closed_ns, state.last_ns
    total, stripped = state.left_out_total, state.stripped_total
    known = focus_known(focus)
    out: list[Event] = []
    for event in events:
        t = event.t_ns
        if last is None or t > last:
            last = t
        if isinstance(event, INPUT_TYPES):
            if rule is not None:
                if since is None:  # input after flush() in a window still denied: a new gap
                    out.append(_opened(t, rule))
                    since, left_out = t, 0
                left_out += 1
                total += 1
            elif closed is not None and t <= closed:
                total += 1
            elif not known and isinstance(event, (KeyPress, KeyRelease, Paste)):
                bare = _strip(event)
                stripped += bare is not event
                out.append(bare)
            else:
                out.append(event)
        elif isinstance(event, WindowFocus):
            new = match(rules, event)
            markers, since, left_out, closed = _transition(
                rule, new, since=since, left_out=left_out, closed=closed, t=t
            )
            out += markers
            if new is None:
                out.append(event)
            focus, rule, known = event, new, focus_known(event)
        else:
            out.append(event)
    return out, DenyState(focus, rule, since, left_out, closed, last, total, stripped)


def flush(state: DenyState, t_ns: int | None = None) -> tuple[list[Event], DenyState]:
    """Close an open gap at pause/stop with ``"at_stop": True``.

    :param t_ns: when capture stops; default the latest ``t_ns`` seen.  The rule
        stays matched, so later input in the same state is still left out.
    """
    if state.rule is None or state.since_ns is None:
        return [], state
    t = max(state.since_ns, t_ns if t_ns is not None else (state.last_ns or state.since_ns))
    marker = _closed(t, state.rule, state.since_ns, state.left_out, at_stop=True)
    closed = t if state.closed_ns is None else max(state.closed_ns, t)
    last = t if state.last_ns is None else max(state.last_ns, t)
    return [marker], replace(state, since_ns=None, left_out=0, closed_ns=closed, last_ns=last)


def refocus(state: DenyState, rules: Sequence[DenyRule], t_ns: int) -> tuple[list[Event], DenyState]:
    """Judge the focused window again under ``rules`` (they changed), at ``t_ns``.

    A window that becomes denied opens a gap now; one that is no longer denied
    closes it, and its focus event (not stored while it was denied) is stored
    now, stamped ``t_ns``.
    """
    if state.focus is None:
        return [], state
    new = match(rules, state.focus)
    out, since, left_out, closed = _transition(
        state.rule, new, since=state.since_ns, left_out=state.left_out, closed=state.closed_ns, t=t_ns
    )
    if new is None and state.rule is not None:
        out.append(replace(state.focus, t_ns=t_ns))
    last = t_ns if state.last_ns is None else max(state.last_ns, t_ns)
    return out, replace(state, rule=new, since_ns=since, left_out=left_out, closed_ns=closed, last_ns=last)


def _transition(
    old: DenyRule | None,
    new: DenyRule | None,
    *,
    since: int | None,
    left_out: int,
    closed: int | None,
    t: int,
) -> tuple[list[Event], int | None, int, int | None]:
    """Markers for a focus change from ``old`` to ``new`` at ``t``, and the gap fields after it."""
    out: list[Event] = []
    if old is not None and since is not None and (new is None or new.label != old.label):
        out.append(_closed(t, old, since, left_out))
        closed = t if closed is None else max(closed, t)
        since, left_out = None, 0
    if new is not None and since is None:
        out.append(_opened(t, new))
        since, left_out = t, 0
    return out, since, left_out, closed


def _marker(t_ns: int, detail: dict[str, Any]) -> Marker:
    """The one place a ``deny`` marker is built."""
    return Marker(t_ns=t_ns, marker=DENY_MARKER, detail=detail)


def _opened(t_ns: int, rule: DenyRule) -> Marker:
    return _marker(t_ns, {"active": True, "label": rule.label})


def _closed(t_ns: int, rule: DenyRule, since_ns: int, left_out: int, *, at_stop: bool = False) -> Marker:
    detail: dict[str, Any] = {
        "active": False,
        "label": rule.label,
        "seconds": round(max(0, t_ns - since_ns) / 1e9, 3),
        "events_left_out": left_out,
    }
    if at_stop:
        detail["at_stop"] = True
    return _marker(t_ns, detail)


def focus_known(focus: WindowFocus | None) -> bool:
    """Whether the rules can judge ``focus`` (unknown focus: typed characters are not kept)."""
    return focus is not None and (focus.app_class is not None or focus.title is not None)


def _strip(event: KeyPress | KeyRelease | Paste) -> KeyPress | KeyRelease | Paste:
    """``event`` without anything that spells what was typed (same object if there is nothing)."""
    if isinstance(event, Paste):
        return event if event.text is None else replace(event, text=None)
    name = event.name if event.char is None and event.name is not None and len(event.name) > 1 else None
    if event.char is None and event.vk is None and name == event.name:
        return event
    return replace(event, char=None, vk=None, name=name)


# ---------------------------------------------------------------------------------------------------
# Frame masking.


def mask_rects(
    shot_geometry: Rect, windows: Iterable[WindowFocus], rules: Sequence[DenyRule], *, margin: int = 0
) -> list[Rect]:
    """Rectangles ``(x, y, width, height)`` to mask in a shot of ``shot_geometry``.

    :param shot_geometry: ``(left, top, width, height)`` of the virtual screen grabbed
        (:attr:`agent.capture.screen.Shot.geometry`; ``left``/``top`` may be negative).
    :param windows: every window that may be visible, focused or not, on any monitor;
        leave minimised windows out.  One that matches a rule but whose geometry
        is unknown masks the whole shot (fail closed).
    :param margin: pixels added on every side (e.g. for window decorations the
        geometry leaves out).
    :returns: virtual-screen rectangles clipped to the shot, in ``windows`` order;
        empty when nothing matches.
    """
    if margin < 0:
        msg = f"margin must not be negative, not {margin}"
        raise ValueError(msg)
    left, top, width, height = shot_geometry
    whole = (left, top, width, height)
    rects: list[Rect] = []
    for window in windows:
        if match(rules, window) is None:
            continue
        if window.x is None or window.y is None or window.width is None or window.height is None:
            return [whole] if width > 0 and height > 0 else []
        x0 = max(window.x - margin, left)
        y0 = max(window.y - margin, top)
        x1 = min(window.x + window.width + margin, left + width)
        y1 = min(window.y + window.height + margin, top + height)
        if x0 < x1 and y0 < y1:
            rects.append((x0, y0, x1 - x0, y1 - y0))
    return rects


def apply_masks(  # noqa: PLR0917 - the shot's own fields, in Shot's order
    pixels: bytes | bytearray,
    width: int,
    height: int,
    left: int,
    top: int,
    rects: Iterable[Rect],
    *,
    color: bytes = MASK_BGRA,
) -> bytearray:
    """A copy of the BGRA buffer ``pixels`` with ``rects`` (virtual-screen coordinates) painted ``color``.

    ``pixels`` is never modified (the screen watcher compares raw grabs).  Each
    rectangle is clipped to the buffer and painted row slice by row slice (one
    slice per row is faster than one huge slice, whose temporary pixels cost
    fresh pages: 1 ms against 11 ms for a whole 1080p screen).

    :raises ValueError: ``pixels`` is not ``width * height * 4`` bytes, or ``color`` is not 4 bytes.
    """
    stride = width * 4
    if width < 0 or height < 0 or len(pixels) != stride * height:
        msg = f"a {width}x{height} BGRA buffer has {max(stride * height, 0)} bytes, not {len(pixels)}"
        raise ValueError(msg)
    if len(color) != 4:
        msg = f"the mask colour is one BGRA pixel (4 bytes), not {len(color)} bytes"
        raise ValueError(msg)
    out = bytearray(pixels)
    for x, y, w, h in rects:
        x0, y0 = max(x - left, 0), max(y - top, 0)
        x1, y1 = min(x - left + w, width), min(y - top + h, height)
        if x0 >= x1 or y0 >= y1:
            continue
        row = color * (x1 - x0)
        n = len(row)
        start = y0 * stride + x0 * 4
        for offset in range(start, start + (y1 - y0) * stride, stride):
            out[offset : offset + n] = row
    return out


__all__ = [
    "DEFAULT_RULES",
    "DENY_MARKER",
    "INPUT_TYPES",
    "MASK_BGRA",
    "MATCH_HEAD",
    "MATCH_TAIL",
    "MAX_PATTERN",
    "MAX_PROGRAM",
    "DenyRule",
    "DenyState",
    "apply_masks",
    "filter_events",
    "flush",
    "focus_known",
    "mask_rects",
    "match",
    "refocus",
    "rule_for_app",
    "title_pattern_problem",
]
