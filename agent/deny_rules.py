r"""Deny rules (P4): which windows are never captured, as a study file, the volunteer and optin state them.

What: a :class:`DenyRule` names windows by application class (a glob) and/or
title (a regular expression).  :data:`DEFAULT_RULES` covers password managers,
private browser windows, password prompts and screen lockers; a study file
(:mod:`agent.study`) and "Exclude this app" (:func:`rule_for_app`) add more.
The rules are data every floor shares: the study file check builds them, the
capture filter and the frame masks (:mod:`agent.capture.deny`) apply them.

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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import re2  # type: ignore[import-untyped]  # google-re2 ships no type information

from agent.events import WindowFocus

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


__all__ = [
    "DEFAULT_RULES",
    "MATCH_HEAD",
    "MATCH_TAIL",
    "MAX_LABEL",
    "MAX_PATTERN",
    "MAX_PROGRAM",
    "DenyRule",
    "match",
    "rule_for_app",
    "title_pattern_problem",
]
