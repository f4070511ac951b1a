"""Server settings, from arguments or `JOBYARD_*` environment variables."""

from __future__ import annotations

import ipaddress

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from jobyard.model import ConfigError

__all__ = ["ServerSettings", "is_loopback"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ServerSettings(BaseSettings):
    """How the HTTP server listens, whom it lets in, and how long it waits for slow clients.

    `api_token` (`JOBYARD_API_TOKEN`): when set, every `/api` call needs
    `Authorization: Bearer <token>`, and so does the dashboard. Without it the server listens on
    loopback only; `host` beyond loopback without a token is refused. A token that no HTTP
    client could present (surrounding spaces, control or non-ASCII characters) is refused here,
    rather than accepted and then never matched.

    `header_timeout`, `body_timeout` and `max_connections` bound what a slow or idle client can
    hold; `auth_failures` and `auth_failure_interval` bound how fast one address can guess the
    token. See docs/configuration.md for what each guarantees.
    """

    model_config = SettingsConfigDict(env_prefix="JOBYARD_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    api_token: SecretStr | None = None
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    header_timeout: float = Field(default=10.0, gt=0, le=3600)
    body_timeout: float = Field(default=30.0, gt=0, le=3600)
    max_connections: int = Field(default=1000, ge=1)
    auth_failures: int = Field(default=10, ge=1)
    auth_failure_interval: float = Field(default=6.0, gt=0, le=86400)

    @field_validator("api_token", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("api_token")
    @classmethod
    def _token_strength(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        secret = value.get_secret_value()
        if secret != secret.strip():
            # HTTP drops the spaces around a header value, so a padded token could never match.
            raise ValueError(
                "must not start or end with spaces or line breaks, which an Authorization "
                "header cannot carry; remove them"
            )
        if not all(" " <= c <= "~" for c in secret):
            raise ValueError(
                "may contain only printable ASCII characters (letters, digits, punctuation, "
                "spaces), which an Authorization header can carry"
            )
        if len(secret) < 16:
            raise ValueError("must be at least 16 characters")
        return value

    def check_exposure(self) -> None:
        """Refuse to listen beyond loopback without a token."""
        if not is_loopback(self.host) and self.api_token is None:
            raise ConfigError(
                f"refusing to listen on {self.host} without JOBYARD_API_TOKEN: anyone who can "
                "reach it could run jobs; set a token or listen on 127.0.0.1"
            )

    @classmethod
    def load(cls, **overrides: object) -> ServerSettings:
        try:
            return cls(**overrides)  # type: ignore[arg-type]  # env fills the rest
        except ValidationError as exc:
            parts = [
                f"JOBYARD_{str(e['loc'][0]).upper()}: {e['msg'].removeprefix('Value error, ')}"
                for e in exc.errors()
            ]
            raise ConfigError("invalid server settings: " + "; ".join(parts)) from None
