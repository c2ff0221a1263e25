"""What a detector reports: a span of text and the kind of entity in it.

Entity names are part of the export format (``[EMAIL]`` placeholders, counts in
the manifest) and of ``optin redact-text --json``: add names, never rename one.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Every entity a detector may report, with the family it is measured in.
ENTITIES: dict[str, str] = {
    "EMAIL": "email",
    "PHONE": "phone",
    "CREDIT_CARD": "card",
    "IBAN": "iban",
    "US_SSN": "ssn",
    "URL_CREDENTIALS": "url_credentials",
    "AWS_ACCESS_KEY": "token",
    "AWS_SECRET_KEY": "token",
    "GOOGLE_API_KEY": "token",
    "GITHUB_TOKEN": "token",
    "GITLAB_TOKEN": "token",
    "SLACK_TOKEN": "token",
    "STRIPE_KEY": "token",
    "OPENAI_KEY": "token",
    "JWT": "token",
    "PRIVATE_KEY": "private_key",
    "PASSWORD": "prompt_secret",
    "SECRET": "prompt_secret",
    "HOSTNAME": "local_names",
    "USER_NAME": "local_names",
    "HOME_PATH": "local_names",
    "MAC_ADDRESS": "local_names",
}

#: The families, in the order reports list them.
FAMILIES: tuple[str, ...] = tuple(dict.fromkeys(ENTITIES.values()))


@dataclass(frozen=True, slots=True, order=True)
class Span:
    """``text[start:end]`` is an ``entity`` (one of :data:`ENTITIES`)."""

    start: int
    end: int
    entity: str

    def __post_init__(self) -> None:
        if self.entity not in ENTITIES:
            msg = f"unknown entity {self.entity!r}; expected one of {sorted(ENTITIES)}"
            raise ValueError(msg)
        if not 0 <= self.start < self.end:
            msg = f"a span must have 0 <= start < end; got {self.start}..{self.end}"
            raise ValueError(msg)

    @property
    def family(self) -> str:
        return ENTITIES[self.entity]

    def placeholder(self) -> str:
        """What replaces the span's text: ``[EMAIL]``."""
        return f"[{self.entity}]"
