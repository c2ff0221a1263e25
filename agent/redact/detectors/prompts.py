"""Secrets typed after a prompt or a key (``PASSWORD``, ``SECRET``): the backstop.

Passwords typed into real password fields never reach the disk (P4); this catches what is
typed or pasted as ordinary text.  The span is the value only, never the prompt.

``PASSWORD`` after password words (password, passwd, pwd, pw, pass, passphrase, passcode,
Passwort, Kennwort, mot de passe, contraseña, senha, wachtwoord, parola, lösenord, hasło...):

* ``password: X``, ``Password = X``, ``DB_PASSWORD="X"``, ``PGPASSWORD=X``, ``MYSQL_PWD=X``,
  ``"password": "X"``, ``Password=X;`` (connection strings), ``?password=X&`` (URLs),
  ``[sudo] password for alice: X``, ``Enter passphrase for key '/k': X``;
* ``--password X``, ``--password=X``, ``--db-password X``; ``mysql -pX`` (and mariadb,
  mysqldump...), ``sshpass -p X``, ``curl -u user:X`` / ``--user user:X`` (and wget, http),
  ``htpasswd -b file user X`` / ``-nb user X``, ``docker login -p X``, ``redis-cli -a X``,
  ``zip -P X``, ``7z -pX``, ``openssl … pass:X``, ``smbclient -U user%X``;
* prose: "the password is X", "my wifi password: X", "password was changed to X".

``SECRET`` after token and key words (token, secret, api_key, apikey, X-Api-Key,
client_secret, access_token, secret_key, private_key...; ``--token X``): such values must
look random (letters with digits, or 16+ characters of three kinds, not CamelCase words);
and in ``Authorization: Bearer X`` / ``Basic X`` / ``Bearer X`` (8+ characters with a digit,
or 16+).

Refused as values (these are code, templates or prose, not secrets): nothing, ``None``,
``null``, type names (``password: str``, ``private_key: KeyTypes,``), variables and
attributes (``password=password``, ``password=self.password``, ``password = new_password``,
``user, password = "u", "p"`` gives the first name's value), calls (``getpass()``),
subscripts, templates (``{{ vault }}``, ``${PASS}``, ``$1``, ``%s``, ``<password>``,
f-strings, ``PASSWORD`` metavars), masks (``****``), common English words and sentences
("password is required", "pam_unix_passwd: got rid of..."), constants
(``GNUTLS_E_DECRYPTION_FAILED``), placeholders (``secret``, ``changeme``, ``example``), paths
(``PWD=/home/x``), docstring fields (``:param password: ...``), ARN parts
(``...:secret:name``) and URL userinfo (left to :mod:`.url_credentials`).

Knowingly misses: passwords typed without any prompt, word-only passwords where code is
likely (``password = hunter`` reads as a variable; ``PGPASSWORD=hunter`` is kept), lower-case
word passwords in running prose ("the password is sunshine and..."), passphrases with
spaces unless quoted, values split over lines, and secrets after keys this module does not
know.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from agent.redact.detectors._common import caseless, folded, looks_random, scan
from agent.redact.spans import Span

NAME = "prompts"

_PW_LONG = (
    r"pass(?:word|wd|phrase|code)|passwort|kennwort|wachtwoord|mot[ \t]de[ \t]passe|contrase[ñn]a|senha|"
    r"parola|l[öo]senord|has[łl]o|salasana|heslo|jelsz[óo]|пароль|パスワード|密码|密碼|비밀번호"
)
_PW_SHORT = r"pass|pwd|pw"
_CREDENTIAL_WORDS = (
    r"tokens?|secrets?|api[_-]?keys?|(?:access|secret|private|auth|app|signing|encryption|master|"
    r"license|service|account|subscription|client)[_-]?keys?"
)
#: Every key this module knows holds one of these (the key starts at most 14 characters earlier).
_ANCHOR = caseless(
    r"pass|pw|wort|woord|contrase|senha|parola|senord|has[łl]o|salasana|heslo|jelsz|пароль|パスワード|"
    r"密[码碼]|비밀번호|token|secret|key"
)
#: A key ending in a password or secret word, then ``:``/``=`` (``for alice:`` allowed after password words).
_KEY_VALUE = caseless(
    rf"(?:(?P<pw>{_PW_LONG})|(?P<short>{_PW_SHORT})|(?P<secret>{_CREDENTIAL_WORDS}))\d*"
    r"(?P<for>[ \t]+for[ \t]+(?:key[ \t]+)?(?:'[^'\n]{1,200}'|\"[^\"\n]{1,200}\"|[^\s:]{1,64}))?"
    r"(?P<q>[\"'`]?)(?P<sep_at_key>(?=[:=]))?[ \t]*(?P<sep>:=|=>|=(?!=)|:(?![:\\]))[ \t]*"
)
_PROSE = caseless(
    r"(?P<det>(?<![\w-])(?:the|my|your|our|his|her|their|wi-?fi|wlan|router|network|new|temporary|temp|"
    r"default|initial|admin|root|guest|account|email|vpn|ssh|db|database)[ \t]+(?:[\w-]+[ \t]+)?)?"
    rf"(?<![\w-])(?P<key>{_PW_LONG}|pwd|pw|pin|wi-?fi[ \t]key|network[ \t]key)[ \t]+"
    r"(?:is|was|will[ \t]be|would[ \t]be|has[ \t]been[ \t](?:changed|set|reset)[ \t]to|"
    r"(?:changed|set|reset)[ \t]to)[ \t]*:?[ \t]+(?:now[ \t]+|still[ \t]+)?"
)
_FLAG = caseless(
    r"(?<![\w-])(?:--(?:[\w]+[_-])*?(?:(?P<pw>password|passwd|pass|pw|passphrase)|(?P<secret>token|secret|"
    r"api-?key|apikey|access-key|secret-key|auth-token|client-secret))|"
    r"-(?P<pw1>password|passwd|passphrase|storepass|keypass|srcstorepass|deststorepass)|-(?P<secret1>token|secret))"
    r"(?P<sep>=|[ \t]+)"
)
#: (the flag, one of the tool names, the pattern): the flag and a tool name must both be in the
#: lower-cased text before the pattern runs.
_TOOLS: tuple[tuple[str, tuple[str, ...], re.Pattern[str]], ...] = (
    ("-p", ("mysql", "mariadb"), re.compile(
        r"\b(?:mysql|mariadb|mysqldump|mysqladmin|mysqlimport|mysqlshow|mysqlcheck|mysqlslap|mysqlsh)\b"
        r"[^\n|;&]{0,200}?[ \t]-p(?P<v>[^\s-]\S*)")),
    ("-p", ("sshpass",), re.compile(r"\bsshpass\b[^\n|;&]{0,200}?[ \t]-p[ \t]*(?P<v>\S+)")),
    ("-u", ("curl", "wget", "http", "xh"), re.compile(
        r"\b(?:curl|wget|https?|xh|httpie)\b[^\n|;&]{0,200}?[ \t](?:-u|--user)(?:[ \t]+|=)"
        r"[\"']?[^\s:\"']+:(?P<v>[^\s\"']+)")),
    ("-p", ("login",), re.compile(
        r"\b(?:docker|podman|helm)[ \t]+(?:registry[ \t]+)?login\b[^\n|;&]{0,200}?[ \t]-p[ \t]+(?P<v>\S+)")),
    ("-a", ("redis-cli",), re.compile(r"\bredis-cli\b[^\n|;&]{0,200}?[ \t]-a[ \t]+(?P<v>\S+)")),
    ("-p", ("zip",), re.compile(r"\b(?:zip|unzip|zipcloak)\b[^\n|;&]{0,200}?[ \t]-P[ \t]+(?P<v>\S+)")),
    ("-p", ("7z", "rar"), re.compile(r"\b(?:7z|7za|7zr|rar|unrar)\b[^\n|;&]{0,200}?[ \t]-p(?P<v>[^\s-]\S*)")),
    ("pass:", ("-pass",), re.compile(r"(?<![\w-])-pass(?:in|out|word)?[ \t]+pass:(?P<v>\S+)")),
    ("-u", ("smb", "rpcclient", "cifs"), re.compile(
        r"\b(?:smbclient|rpcclient|smbmap|smbget|mount\.cifs)\b[^\n|;&]{0,200}?-U[ \t]*[^\s%]+%(?P<v>\S+)")),
)  # fmt: skip
_HTPASSWD = re.compile(r"\bhtpasswd\b(?P<args>[^\n|;&]{0,300})")
_AUTH = caseless(
    r"\b(?:proxy-)?authorization[\"']?[ \t]*[:=][ \t]*[\"']?"
    r"(?:(?:bearer|basic|token|digest|apikey|api-key|negotiate|ntlm|aws4-hmac-sha256)[ \t]+)?"
    r"(?P<v>[A-Za-z0-9._~+/=,:-]+)"
)
_BEARER = caseless(r"(?<![\w-])bearer[ \t]+(?P<v>[A-Za-z0-9._~+/-]+=*)")

_STOP_WORDS = """
    none null nil true false undefined nan str string bytes bytearray int integer bool boolean
    object any optional union list dict text char varchar secretstr sensitive hidden required
    optional empty blank default value values self cls this args kwargs arg param params
    password passwd pass pwd pw passphrase passcode secret secrets token tokens key apikey
    the a an is are was be been to of for in on at by with and or not no your my our their
    his her its this that these those it you we they must should can cannot will would may
    might shall enter type set use using used see same new old current field prompt input
    here there below above following as if when then than from into only also just yet still
    again please sorry incorrect invalid wrong correct missing expired changed reset sent
    stored saved hashed encrypted provided given needed supplied accepted rejected protected
    ignored mandatory too case length minimum maximum least characters chars optional
    changeme example sample test testing dummy fake mock foo bar baz qux xyz abc redacted
    masked omitted removed unknown tbd todo fixme n/a na none* unset unchanged same
    authentication auth login user username users account accounts file files path
    bad good ok okay fine weak strong short long valid denied option options flag flags argument
    arguments parameter parameters switch instead only following but expire expires compat files
    systemd ldap nis nisplus sss winbind db dns
    """
_STOP = frozenset(_STOP_WORDS.split())
_TEMPLATE = re.compile(
    r"\{\{|\}\}|\$\{|\$\(|\A\$\w|\A%\(?\w*\)?[sdr]?\Z|\A%\w+%\Z|\A<[^>]*>?\Z|\A\{[^}]*\}?\Z|<%|%>|"
    r"\A\*+\Z|\A[xX•·.]{3,}\Z|\A!(?:vault|Ref|Sub|GetAtt|ImportValue|env|secret)\b|\AENC\[|\A@@|\A\?\Z|\A:\w"
)
_DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")
_IDENT = re.compile(r"[A-Za-z_]\w*")
_CAMEL = re.compile(r"[A-Z][a-z]+(?:[A-Z][a-z]*)+")
_PROSE_SUFFIX = re.compile(r"[A-Za-z][a-z]{2,}(?:ed|ing|ly|tion|ment|ness)")
_CONSTANT = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
_NEXT_WORD = re.compile(r" [A-Za-z]")
_IN_USERINFO = re.compile(r"://[^\s/@]*\Z")
_BARE = re.compile(r"\S{1,200}")
_NEXT_PARAM = re.compile(r"&[\w.-]+=")
_STOPWORD_RUN = re.compile(r"(?i)\b(?:the|to|of|for|your|you|is|be|this|that|with|and|or|not|in|on|if)\b")
_TRAIL = ".,;:)]}>'\"`"
_BRACED = re.compile(r"\{\w*\}")  # an f-string or format field
_WORDS = re.compile(r"[a-z]+(?:[-_][a-z]+)+")  # no-password-required, use_ssl
_UNARY = re.compile(r"[-+!~]?[A-Za-z_]\w*")
_DOC_PARAM = re.compile(r"[:@](?:param|arg|type|ivar|cvar|var|keyword|kwarg)\s+(?:\w+\s+)?\Z")
_PROSE_BEFORE_FLAG = re.compile(r"(?i)\b(?:and|or|the|with|use|using|via|a|an|of|or)\s+\Z")
_TUPLE_BEFORE = re.compile(r",[ \t]*\Z")
_TUPLE_AFTER = re.compile(r"[ \t]*,[ \t]*(?![\w]+[ \t]*=)\S")


def _quoted(text: str, pos: int) -> tuple[int, int] | None:
    """The inside of a quoted string starting at ``pos`` (``"x"``, ``'x'``, ``b"x"``), on one line."""
    if pos < len(text) and text[pos] in "bruBRUfF" and pos + 1 < len(text) and text[pos + 1] in "\"'":
        pos += 1
    if pos >= len(text) or text[pos] not in "\"'`":
        return None
    quote = text[pos]
    close = text.find(quote, pos + 1, pos + 202)
    newline = text.find("\n", pos + 1, pos + 202)
    if close < 0 or (0 <= newline < close):
        return (pos + 1, pos + 1)  # unterminated (on this line, within 200 characters): not a literal
    return (pos + 1, close)


def _bare(text: str, pos: int) -> tuple[int, int]:
    """A bare value: up to whitespace, ``&`` or ``;`` before another ``key=``, minus trailing punctuation."""
    bare = _BARE.match(text, pos)
    if bare is None:
        return pos, pos
    end = bare.end()
    value = bare.group()
    amp = _NEXT_PARAM.search(value)
    if amp is not None and amp.start() > 0:
        end = pos + amp.start()
    semi = re.search(r";\s*[\w ]+=", text[pos:end])
    if semi is not None and semi.start() > 0:
        end = pos + semi.start()
    while end > pos and text[end - 1] in _TRAIL:
        end -= 1
    return pos, end


def _prose_follows(text: str, value: str, end: int) -> bool:
    """A word value followed by another word: a sentence ("pam_unix_passwd: got rid of..."), not a secret."""
    return value.replace("'", "").isalpha() and _NEXT_WORD.match(text, end) is not None


def _stem(key: str) -> str:
    return re.sub(r"[^a-z]", "", key.lower())


def _plain_ok(value: str, key: str) -> bool:
    """Checks every value passes: not a template, placeholder, stop word, call or attribute."""
    if not value or len(value) > 200:
        return False
    low = value.lower()
    if low in _STOP or _TEMPLATE.search(value):
        return False
    if value[0] in "([{<$%&@#|\\" or "(" in value or "[" in value or "`" in value:
        return False
    if not any(ch.isalnum() for ch in value) or _BRACED.search(value) or _WORDS.fullmatch(value):
        return False
    if _DOTTED.fullmatch(value):
        return False
    stem = _stem(value)
    key_stem = _stem(key)
    variable = _IDENT.fullmatch(value) and not any(ch.isdigit() for ch in value)
    return not (variable and stem and key_stem and (stem in key_stem or key_stem in stem))


def _password_ok(
    text: str, start: int, end: int, *, key: str, sep: str, quoted: bool, key_quoted: bool
) -> bool:
    """A plausible password at ``text[start:end]`` after ``key`` and ``sep``."""
    value = text[start:end]
    if not _plain_ok(value, key):
        return False
    if quoted:
        message = " " in value and (_STOPWORD_RUN.search(value) is not None or value.count(" ") > 5)
        return len(value) >= 4 and value == value.strip() and not message
    return len(value) >= 3 and not _bare_refused(
        text, end, key=key, sep=sep, key_quoted=key_quoted, value=value
    )


def _bare_refused(text: str, end: int, *, key: str, sep: str, key_quoted: bool, value: str) -> bool:
    """An unquoted value that is a count, prose, a constant, a path or a variable."""
    stem = _stem(key)
    if stem in ("pass", "pw") and (value.isdigit() or (value.isalpha() and value.islower())):
        return True  # "pass: 12" is a test count, "first pass: determine" a comment
    if sep == ":" and (_prose_follows(text, value, end) or _CONSTANT.fullmatch(value)):
        return True
    if value.startswith(("/", "~")) and (stem == "pwd" or value.count("/") > 1):
        return True  # PWD=/home/alice, password: /run/secrets/db
    return _variable(value, key=key, sep=sep, key_quoted=key_quoted, after=text[end : end + 1].strip())


def _variable(value: str, *, key: str, sep: str, key_quoted: bool, after: str) -> bool:
    """A bare word without digits that names a variable or type rather than a password."""
    if not _UNARY.fullmatch(value) or any(ch.isdigit() for ch in value):
        return False
    code_like = sep != ":" or key_quoted or (after != "" and after in ",)}]")
    if code_like and not (key.isupper() and sep == "="):  # PGPASSWORD=hunter is shell, not code
        return True
    return "_" in value or _CAMEL.fullmatch(value) is not None or _PROSE_SUFFIX.fullmatch(value) is not None


def _secret_ok(value: str, key: str) -> bool:
    if not _plain_ok(value, key) or "://" in value or value.startswith(("/", "~/", "./")):
        return False
    if value.endswith("*"):
        return False  # a wildcard pattern
    if value.isupper() and _IDENT.fullmatch(value):
        return False  # a metavar or constant name: TOKEN, API_KEY
    return looks_random(value)


def _value_at(text: str, pos: int) -> tuple[int, int, bool]:
    """(start, end, quoted) of the value starting at ``pos``."""
    q = _quoted(text, pos)
    if q is not None:
        return q[0], q[1], True
    start, end = _bare(text, pos)
    return start, end, False


def _key_before(text: str, start: int) -> tuple[str, bool]:
    """The whole key name ending at ``start`` (``DB_`` + ``PASSWORD``) and whether it was quoted."""
    i = start
    while i > 0 and (text[i - 1].isalnum() or text[i - 1] in "_.-") and start - i < 60:
        i -= 1
    return text[i:start], i > 0 and text[i - 1] in "\"'`"


def _key_value_matches(text: str, low: str | None) -> Iterator[re.Match[str]]:
    """:data:`_KEY_VALUE` matches, searched only near an :data:`_ANCHOR` (ten times faster)."""
    source, pattern = (low, _KEY_VALUE[0]) if low is not None else (text, _KEY_VALUE[1])
    done = 0
    for anchor in scan(_ANCHOR, text, low):
        if anchor.start() < done:
            continue
        for pos in range(max(done, anchor.start() - 14), anchor.start() + 1):
            m = pattern.match(source, pos)
            if m is not None:
                done = m.end()
                yield m
                break


def _key_values(text: str, low: str | None, spans: list[Span]) -> None:
    for m in _key_value_matches(text, low):
        prefix, key_quoted = _key_before(text, m.start())
        if m.group("short") and ((prefix and prefix[-1].isalpha()) or m.group("sep_at_key") is None):
            continue  # bypass, compass, cwd...; "Pass :meth:" is prose
        key_start = m.start() - len(prefix)
        if text[key_start - 1 : key_start] == ":" or _DOC_PARAM.search(
            text, max(0, key_start - 40), key_start
        ):
            continue  # arn:...:secret:name, ":param password: the password"
        if _IN_USERINFO.search(text, max(0, key_start - 200), key_start):
            continue  # https://x-access-token:...@host is url_credentials' business
        if m.group("q") and not key_quoted:
            continue  # 'password': inside a string that opened before the key
        kind = "pw" if m.group("pw") else "short" if m.group("short") else "secret"
        key = prefix + text[m.start(kind) : m.end(kind)]
        start, end, quoted = _value_at(text, m.end())
        if end <= start:
            continue
        if _TUPLE_BEFORE.search(text, max(0, m.start() - len(prefix) - 4), m.start() - len(prefix)) and (
            _TUPLE_AFTER.match(text, end + quoted)
        ):
            continue  # user, password = "wile", "coyote": the value belongs to the first name
        value = text[start:end]
        if m.group("secret"):
            if not quoted and text[end : end + 1] in (",", ")", "]", "="):
                continue  # private_key: PKCS7PrivateKeyTypes, -- a parameter's type
            if _secret_ok(value, key):
                spans.append(Span(start, end, "SECRET"))
        elif _password_ok(
            text, start, end, key=key, sep=m.group("sep"), quoted=quoted, key_quoted=key_quoted
        ):
            spans.append(Span(start, end, "PASSWORD"))


def _prose(text: str, low: str | None, spans: list[Span]) -> None:
    for m in scan(_PROSE, text, low):
        start, end, quoted = _value_at(text, m.end())
        if end <= start:
            continue
        value = text[start:end]
        key = m.group("key").lower()
        if key == "pin":
            if value.isdigit() and 4 <= len(value) <= 8:
                spans.append(Span(start, end, "PASSWORD"))
            continue
        if not _plain_ok(value, key) or len(value) < 3 or _PROSE_SUFFIX.fullmatch(value):
            continue
        if _CONSTANT.fullmatch(value):
            continue  # "password is GNUTLS_E_DECRYPTION_FAILED"
        after = text[end + quoted : end + quoted + 2]
        plain_word = value.replace("'", "").isalpha()
        at_clause_end = after == "" or after[0] in ".,;!?)\n" or (after[0] == " " and after[1:2] in ("", "("))
        # "my password is sunshine." counts; "password set to expire." and "password is bad for" do not
        if quoted or not plain_word or (m.group("det") and at_clause_end):
            spans.append(Span(start, end, "PASSWORD"))


def _flags(text: str, low: str | None, spans: list[Span]) -> None:
    for m in scan(_FLAG, text, low):
        start, end, _ = _value_at(text, m.end())
        if end <= start:
            continue
        value = text[start:end]
        if value.startswith("-") or (value.isupper() and _IDENT.fullmatch(value)):
            continue  # the next flag, or a metavar in usage text
        if _PROSE_BEFORE_FLAG.search(text, max(0, m.start() - 12), m.start()):
            continue  # "the --username and --password options"
        key = text[m.start() : m.end()].strip()
        if not _plain_ok(value, key) or _PROSE_SUFFIX.fullmatch(value) or _prose_follows(text, value, end):
            continue
        if m.group("secret") or m.group("secret1"):
            if len(value) >= 8:
                spans.append(Span(start, end, "SECRET"))
        elif len(value) >= 3:
            spans.append(Span(start, end, "PASSWORD"))


def _tools(text: str, low: str, spans: list[Span]) -> None:
    for flag, names, pattern in _TOOLS:
        if flag not in low or not any(name in low for name in names):
            continue
        for m in pattern.finditer(text):
            start, end, _ = _value_at(text, m.start("v"))
            value = text[start:end]
            if end > start and _plain_ok(value, "password"):
                spans.append(Span(start, end, "PASSWORD"))
    if "htpasswd" not in low:
        return
    for m in _HTPASSWD.finditer(text):
        args = list(re.finditer(r"\S+", m.group("args")))
        flags = "".join(a.group() for a in args if a.group().startswith("-"))
        positional = [a for a in args if not a.group().startswith("-")]
        if "b" not in flags:
            continue
        want = 2 if "n" in flags else 3
        if len(positional) >= want:
            arg = positional[want - 1]
            if _plain_ok(arg.group(), "password"):
                spans.append(Span(m.start("args") + arg.start(), m.start("args") + arg.end(), "PASSWORD"))


def _authorization(text: str, low: str | None, spans: list[Span]) -> None:
    for pattern in (_AUTH, _BEARER):
        for m in scan(pattern, text, low):
            start, end = m.span("v")
            while end > start and text[end - 1] in _TRAIL:
                end -= 1
            value = text[start:end]
            strong = len(value) >= 8 and (any(ch.isdigit() for ch in value) or len(value) >= 16)
            if strong and _plain_ok(value, "authorization") and not (value.isalpha() and value.islower()):
                spans.append(Span(start, end, "SECRET"))


_CUES = (
    "pass", "pwd", "pw", "wort", "woord", "mot de", "contrase", "senha", "parola", "senord", "salasana",
    "heslo", "jelsz", "пароль", "パスワード", "密", "비밀번호", "token", "secret", "key", "credential",
    "auth", "bearer", "pin", "hasł", "haslo", "-p", "-u", "-a",
)  # fmt: skip


def find(text: str) -> list[Span]:
    """Every value typed after a password, token or secret prompt in ``text``."""
    lowered = text.lower()
    if not any(cue in lowered for cue in _CUES):
        return []
    low = folded(text)
    spans: list[Span] = []
    _key_values(text, low, spans)
    _prose(text, low, spans)
    if "-" in text:
        _flags(text, low, spans)
        _tools(text, lowered, spans)
    if "auth" in lowered or "bearer" in lowered:
        _authorization(text, low, spans)
    return spans
