"""Secret detectors: URL credentials, vendor tokens, JWTs, PEM private keys, prompt secrets.

Every token is synthetic (made of a fixed pattern of characters) except AWS's documented
example key pair.
"""

from __future__ import annotations

import pytest

from agent.redact.detectors import detect, private_keys
from tests.unit.test_detectors_helpers import entities, found

_ALNUM = "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5hJ7kL9nP1qR3tU5wX7zA9cD1eF3"


def alnum(n: int) -> str:
    return (_ALNUM * (n // len(_ALNUM) + 1))[:n]


# ---- URL credentials --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "userinfo"),
    [
        ("https://admin:s3cr3t@db.example.com/x", "admin:s3cr3t"),
        ("postgres://app:Pg-Pass_42@localhost:5432/app", "app:Pg-Pass_42"),
        ("mongodb+srv://svc:Mo%40ngo9@cluster0.example.net/db", "svc:Mo%40ngo9"),
        ("redis://:R3disPass99@cache.example.com:6379", ":R3disPass99"),
        ("ftp://bob:p@ss@files.example.com/", "bob:p@ss"),
        ("https://x-access-token:" + alnum(30) + "@github.com/o/r.git", "x-access-token:" + alnum(30)),
        ("https://" + alnum(40) + "@example.com/o/r.git", alnum(40)),
    ],
)
def test_url_credentials(url: str, userinfo: str) -> None:
    assert ("URL_CREDENTIALS", userinfo) in found(f"clone {url} now")


@pytest.mark.parametrize(
    "text",
    [
        "https://alice@example.com/path",
        "postgres://user:password@localhost/db",
        "https://user:${PASSWORD}@example.com",
        "https://user:<password>@example.com",
        "https://user:****@example.com",
        "http://user:%s@%s/",
        "cvs -d :pserver:anoncvs@cvs.example.org:/cvs",
        "see https://example.com/a@b",
        "http://foo:bar@myhost.example",
    ],
)
def test_url_credentials_not_found(text: str) -> None:
    assert "URL_CREDENTIALS" not in entities(text)


# ---- vendor tokens ----------------------------------------------------------------------

TOKENS = [
    ("AWS_ACCESS_KEY", "AKIAIOSFODNN7EXAMPLE"),
    ("AWS_ACCESS_KEY", "ASIA" + "Y34FZKBOKMUTVV7A"),
    ("AWS_ACCESS_KEY", "AROA" + "3XFRBF535PLBIFPI"),
    ("GOOGLE_API_KEY", "AIza" + alnum(33) + "-_"),
    ("GITHUB_TOKEN", "ghp_" + alnum(36)),
    ("GITHUB_TOKEN", "gho_" + alnum(36)),
    ("GITHUB_TOKEN", "ghs_" + alnum(36)),
    ("GITHUB_TOKEN", "github_pat_11" + alnum(20) + "_" + alnum(59)),
    ("GITLAB_TOKEN", "glpat-" + alnum(20)),
    ("GITLAB_TOKEN", "gldt-" + alnum(24)),
    ("GITLAB_TOKEN", "glrt-" + alnum(24)),
    ("GITLAB_TOKEN", "GR1348941" + alnum(20)),
    ("SLACK_TOKEN", "xoxb-123456789012-1234567890123-" + alnum(24)),
    ("SLACK_TOKEN", "xoxp-123456789012-123456789012-1234567890123-" + alnum(32)),
    ("SLACK_TOKEN", "xapp-1-A0123456789-1234567890123-" + alnum(40)),
    ("SLACK_TOKEN", "https://hooks.slack.com/services/T0123ABCD/B0123ABCD/" + alnum(24)),
    ("STRIPE_KEY", "sk_live_" + alnum(24)),
    ("STRIPE_KEY", "sk_test_" + alnum(24)),
    ("STRIPE_KEY", "rk_live_" + alnum(24)),
    ("STRIPE_KEY", "whsec_" + alnum(32)),
    ("OPENAI_KEY", "sk-" + alnum(48)),
    ("OPENAI_KEY", "sk-proj-" + alnum(60) + "_-" + alnum(20)),
    ("OPENAI_KEY", "sk-ant-api03-" + alnum(90) + "-AA"),
    ("SECRET", "hf_" + alnum(34)),
    ("SECRET", "npm_" + alnum(36)),
]


@pytest.mark.parametrize(("entity", "token"), TOKENS)
def test_token_found(entity: str, token: str) -> None:
    for text in (token, f"key {token} here", f'"{token}",', f"KEY={token}"):
        assert (entity, token) in found(text), text


@pytest.mark.parametrize(("entity", "token"), TOKENS)
def test_token_glued_to_more_token_characters_is_not_that_token(entity: str, token: str) -> None:
    if token.startswith("https://"):
        token = token.removeprefix("https://")
    assert entity not in entities("x" + token + "x")


@pytest.mark.parametrize(
    "text",
    [
        "AKIAIOSFODNN7EXAMPL",  # 19 characters
        "AKIAIOSFODNN7EXAMPLEX",
        "AIzaTooShort",
        "ghp_" + alnum(20),
        "glpat-short",
        "xoxb-short",
        "sk_live_short",
        "pk_live_" + alnum(24),  # publishable, not secret
        "sk-" + "abcdefghijklmnopqrstuvwxyzabcdefghij",  # only lower-case letters
        "task-" + alnum(40),
        "https://hooks.example.com/services/T0/B0/x",
    ],
)
def test_token_negatives(text: str) -> None:
    assert entities(text) & {"AWS_ACCESS_KEY", "GOOGLE_API_KEY", "GITHUB_TOKEN", "GITLAB_TOKEN"} == set()
    assert entities(text) & {"SLACK_TOKEN", "STRIPE_KEY", "OPENAI_KEY"} == set()


AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # noqa: S105 - AWS's documented example


@pytest.mark.parametrize(
    "template",
    [
        "aws_secret_access_key = {}",
        'AWS_SECRET_ACCESS_KEY="{}"',
        '"SecretAccessKey": "{}"',
        "AKIAIOSFODNN7EXAMPLE {}",
    ],
)
def test_aws_secret_key_with_context(template: str) -> None:
    assert ("AWS_SECRET_KEY", AWS_SECRET) in found(template.format(AWS_SECRET))


def test_aws_secret_key_needs_context_and_shape() -> None:
    assert "AWS_SECRET_KEY" not in entities(f"value {AWS_SECRET}")
    sha1 = "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12"
    assert "AWS_SECRET_KEY" not in entities(f"secret sha1 {sha1}")
    assert "AWS_SECRET_KEY" not in entities(
        "arn:aws:iam::*:role/service-role/AmazonSecurityLakeS3ReplicationRole"
    )
    assert "AWS_SECRET_KEY" not in entities(
        "See: http://docs.aws.amazon.com/AmazonS3/latest/dev/UploadingObjects.html"
    )


# ---- JWT --------------------------------------------------------------------------------

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkphbmUgRXhhbXBsZSJ9"
    ".c3ludGhldGljLXNpZ25hdHVyZS1ub3QtcmVhbA"
)


def test_jwt_found() -> None:
    assert found(JWT) == [("JWT", JWT)]
    assert found(f"Authorization: Bearer {JWT}") == [("JWT", JWT)]
    unsigned = JWT.rsplit(".", 1)[0] + "."
    assert found(f"token {unsigned} end") == [("JWT", unsigned)]


@pytest.mark.parametrize(
    "text",
    [
        "eyJhbGciOiJIUzI1NiJ9.notjson.sig",
        "eyJhbGciOiJIUzI1NiJ9",
        "xeyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
        "eyJ.eyJ.x",
    ],
)
def test_jwt_negatives(text: str) -> None:
    assert "JWT" not in entities(text)


# ---- PEM private keys -------------------------------------------------------------------

BODY = "\n".join(
    [
        "MIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4",
        "WGeKLs1Pt8QuKUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQ==",
    ]
)


@pytest.mark.parametrize(
    "kind",
    ["RSA ", "EC ", "DSA ", "OPENSSH ", "ENCRYPTED ", ""],
)
def test_private_key_block(kind: str) -> None:
    block = f"-----BEGIN {kind}PRIVATE KEY-----\n{BODY}\n-----END {kind}PRIVATE KEY-----"
    assert found(f"here:\n{block}\nthanks") == [("PRIVATE_KEY", block)]


def test_pgp_private_key_block() -> None:
    block = f"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n{BODY}\n=AbCd\n-----END PGP PRIVATE KEY BLOCK-----"
    assert found(block) == [("PRIVATE_KEY", block)]


def test_private_key_without_end_runs_to_end() -> None:
    text = f"-----BEGIN OPENSSH PRIVATE KEY-----\n{BODY}\nand whatever follows"
    assert found(text) == [("PRIVATE_KEY", text)]


def test_private_key_marker_mentioned_in_code_or_prose() -> None:
    marker = "-----BEGIN RSA PRIVATE KEY-----"
    text = f'The file starts with "{marker}" and\nends with the END line.'
    assert found(text) == [("PRIVATE_KEY", marker)]


def test_public_key_and_certificate_are_not_private() -> None:
    for kind in ("PUBLIC KEY", "CERTIFICATE", "RSA PUBLIC KEY"):
        text = f"-----BEGIN {kind}-----\n{BODY}\n-----END {kind}-----"
        assert found(text) == [], kind


def test_opens_block() -> None:
    assert private_keys.opens_block("-----BEGIN EC PRIVATE KEY-----")
    assert private_keys.opens_block("key: -----BEGIN EC PRIVATE KEY----- MIIBOgIBAAJBAKj34GkxFhD90")
    assert not private_keys.opens_block(
        "-----BEGIN EC PRIVATE KEY-----\\nMIIB\\n-----END EC PRIVATE KEY-----"
    )
    assert not private_keys.opens_block('x = "-----BEGIN EC PRIVATE KEY-----"')
    assert not private_keys.opens_block("no key here")


# ---- prompt secrets ---------------------------------------------------------------------

PASSWORDS = [
    ("password: hunter2", "hunter2"),
    ("Password=Tr0ub4dor&3", "Tr0ub4dor&3"),
    ("pwd: abc12345", "abc12345"),
    ("pw: xY9#kq", "xY9#kq"),
    ("Passwort: geheim123", "geheim123"),
    ("mot de passe : Soleil2024", "Soleil2024"),
    ("contraseña: clave2024", "clave2024"),
    ("senha: Cafe2024x", "Cafe2024x"),
    ('DB_PASSWORD="Sup3r-Secret"', "Sup3r-Secret"),
    ("PGPASSWORD=pgpass42 psql -h db", "pgpass42"),
    ("export MYSQL_PWD=sqlpw_77", "sqlpw_77"),
    ("mysql --password Xy7!pass", "Xy7!pass"),
    ("app --password=Xy7!pass", "Xy7!pass"),
    ("mysql -u root -pRootPw99 shop", "RootPw99"),
    ("mysqldump -u root -pRootPw99 shop > dump.sql", "RootPw99"),
    ("sshpass -p 'S3cret!' ssh deploy@host", "S3cret!"),
    ("curl -u admin:Adm1nPw https://example.com", "Adm1nPw"),
    ("curl --user admin:Adm1nPw https://example.com", "Adm1nPw"),
    ("htpasswd -b /etc/nginx/.htpasswd alice Al1cePw", "Al1cePw"),
    ("htpasswd -nb alice Al1cePw", "Al1cePw"),
    ("the password is Pa55word!", "Pa55word!"),
    ("my password is hunter2", "hunter2"),
    ("The wifi password is sunshine.", "sunshine"),
    ("wifi password: CoffeeShop2024", "CoffeeShop2024"),
    ("[sudo] password for alice: hunter22", "hunter22"),
    ("Password for 'https://alice@example.com': gitpw123", "gitpw123"),
    ("Enter passphrase for key '/home/alice/.ssh/id_ed25519': Phr4se!", "Phr4se!"),
    ("Retype new password: N3wPassw0rd", "N3wPassw0rd"),
    ('{"password": "P@55w0rd!"}', "P@55w0rd!"),
    ("password = 'hunter2'", "hunter2"),
    ("Server=db;User Id=sa;Password=SqlPw123;Database=x", "SqlPw123"),
    ("https://example.com/login?user=alice&password=QueryPw1&x=1", "QueryPw1"),
    ("docker login -u alice -p DockerPw1 registry.example.com", "DockerPw1"),
    ("redis-cli -h host -a RedisPw1 ping", "RedisPw1"),
    ("openssl rsa -in k.pem -passin pass:OpenSslPw1", "OpenSslPw1"),
    ("zip -P ZipPw123 out.zip file", "ZipPw123"),
    ("smbclient //server/share -U alice%SmbPw123", "SmbPw123"),
]


@pytest.mark.parametrize(("text", "value"), PASSWORDS)
def test_password_after_prompt(text: str, value: str) -> None:
    assert ("PASSWORD", value) in found(text)


SECRETS = [
    ("token: 9f8e7d6c5b4a39281706", "9f8e7d6c5b4a39281706"),
    ("secret = a8Fk2LmQ9zX4", "a8Fk2LmQ9zX4"),
    ('api_key: "AbC123dEf456GhI789"', "AbC123dEf456GhI789"),
    ("apikey=abcdef1234567890", "abcdef1234567890"),
    ("client_secret: Zx9Yw8Vu7Ts6", "Zx9Yw8Vu7Ts6"),
    ("access_token=ya29.A0ARrdaM-synthetic123", "ya29.A0ARrdaM-synthetic123"),
    ("X-Api-Key: k3y-abc123def456", "k3y-abc123def456"),
    ("GITHUB_TOKEN=abc123def456ghi789jkl", "abc123def456ghi789jkl"),
    ("--token abc123def456ghi789", "abc123def456ghi789"),
    ("Authorization: Bearer abc123def456ghi789", "abc123def456ghi789"),
    ("Authorization: Basic YWxpY2U6aHVudGVyMg==", "YWxpY2U6aHVudGVyMg=="),
    ('curl -H "Authorization: Bearer abc123def456ghi789" https://x', "abc123def456ghi789"),
]


@pytest.mark.parametrize(("text", "value"), SECRETS)
def test_secret_after_prompt(text: str, value: str) -> None:
    assert found(text) == [("SECRET", value)]


@pytest.mark.parametrize(
    "text",
    [
        "password: str",
        "password=None",
        "password=password",
        "password = getpass()",
        'password = getpass.getpass("Password: ")',
        "password=self.password",
        'password: "{{ vault_db_password }}"',
        "password: ${DB_PASSWORD}",
        'password = os.environ["DB_PASSWORD"]',
        "password is required",
        "The password is required.",
        "password:",
        "[sudo] password for alice:",
        "Enter password:",
        "def login(user: str, password: str | None = None) -> None:",
        "self.password = password",
        'password = kwargs.pop("password", None)',
        "password = new_password",
        "docker login --password-stdin",
        "usage: tool [--password PASSWORD] [--token TOKEN]",
        "use the --username and --password options",
        "token = tokens[0]",
        "token = self.next_token()",
        "token: str",
        "secret = secrets.token_hex(16)",
        "api_key = settings.API_KEY",
        "private_key: PKCS7PrivateKeyTypes,",
        "password_hash = hash_password(password)",
        "password_length: 12",
        "Your password has been changed.",
        "Password: ********",
        "WHERE password = ? AND user = ?",
        "password = %s",
        "password = :password",
        '"password": {"type": "string"}',
        'password = f"{user}-{suffix}"',
        "user, password = 'wile', 'coyote'",
        "bypass = True",
        "first pass: determine the width",
        ":param password: encrypt the key with this",
        "pam_unix_passwd: got rid of a warning",
        "GNUTLS_PKCS_NULL_PASSWORD: Added",
        "decrypt without a password is GNUTLS_E_DECRYPTION_FAILED.",
        "passwd: compat systemd",
        "PWD=/home/alice/src",
        "grep -Pw now works",
        "Bearer tokens are described in RFC 6750",
        "arn:aws:secretsmanager:*:*:secret:AmazonDataZone-*",
    ],
)
def test_prompt_negatives(text: str) -> None:
    assert entities(text) & {"PASSWORD", "SECRET"} == set(), found(text)


def test_an_aws_secret_key_may_start_with_a_slash_after_the_equals_sign() -> None:
    value = "/Fbu" + "WP9OBqXdkWiMRP9GpxvNpkHuSYFPTigV+/fa"
    line = f"export AWS_SECRET_ACCESS_KEY={value}"
    spans = detect(line)
    assert any(s.entity == "AWS_SECRET_KEY" and line[s.start : s.end] == value for s in spans), spans
