"""One place for every setting: environment variables prefixed INVITES_, or a .env file.

Temporal connection details (address, namespace, TLS, API key) come from the standard
`temporalio.envconfig` profile (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY,
temporal.toml ...); our settings only fill in what that profile leaves unset.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

TASK_QUEUE = "invitations"
ROOT = Path(__file__).resolve().parent
DEFAULT_DATA_DIR = ROOT / ".data"


def paths_under(data_dir: Path) -> dict[str, Any]:
    """Where each file setting lives by default: all of them under one data dir."""
    return {
        "database_url": f"sqlite:///{data_dir / 'platform.db'}",
        "recordings_dir": data_dir / "recordings",
        "maildir": data_dir / "mail",
        "logs_dir": data_dir / "logs",
    }


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INVITES_", env_file=".env", extra="ignore")

    database_url: str = paths_under(DEFAULT_DATA_DIR)["database_url"]  # see _under_data_dir
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_profile: str | None = None
    task_queue: str = TASK_QUEUE
    recordings_dir: Path = paths_under(DEFAULT_DATA_DIR)["recordings_dir"]
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    mail_from: str = "Invitations <invitations@meet.example>"
    maildir: Path = paths_under(DEFAULT_DATA_DIR)["maildir"]
    link_secret: SecretStr = SecretStr("dev-only-change-me")
    public_base_url: str = "http://127.0.0.1:8000"
    metrics_port: int | None = 9464
    # Worker processes `python worker.py` runs on this machine (0: one per CPU it may use).
    # A Python worker runs its workflows and local activities on one CPU (the GIL); each
    # process polls the same task queue, and process i serves metrics on metrics_port + i.
    worker_processes: int = Field(default=0, ge=0, le=64)
    log_json: bool = False
    invitation_expiry_days: int = Field(default=30, ge=1, le=365)
    # Where files live by default (see paths_under; the dev server's temporal.db too), and
    # the ports the dev stack (`make run`) serves on.
    data_dir: Path = DEFAULT_DATA_DIR
    ui_port: int = 8233
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    # The admin side (issue #15): console and REST API, one app (admin/app.py).
    admin_port: int = 8100
    admin_base_url: str = "http://127.0.0.1:8100"
    # The console's sign-in (admin/sessions.py): a mailed link's life, a session's life, and
    # how many links one address may ask for per hour.
    admin_signin_link_minutes: int = Field(default=15, ge=1, le=1440)
    admin_session_hours: int = Field(default=12, ge=1, le=720)
    admin_signin_per_hour: int = Field(default=5, ge=1, le=100)
    # How long the REST API keeps an Idempotency-Key's first answer (admin/idempotency.py).
    api_idempotency_hours: int = Field(default=24, ge=1, le=720)
    # Files and database (issue #10). Every path left unset goes under data_dir.
    logs_dir: Path = paths_under(DEFAULT_DATA_DIR)["logs_dir"]
    # SQLite's wait for the write lock (another process holding it). At most the
    # heartbeat timeouts (10 s, workflows/options.py): a longer wait could outlast them.
    db_busy_timeout_seconds: float = Field(default=8.0, gt=0, le=10)

    @model_validator(mode="before")
    @classmethod
    def _under_data_dir(cls, data: Any) -> Any:
        """The database, recordings, Maildir and logs default to paths under data_dir, so
        two stacks with two data dirs never share a file. Values given explicitly win."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        data["data_dir"] = Path(data.get("data_dir") or DEFAULT_DATA_DIR).expanduser().absolute()
        for name, default in paths_under(data["data_dir"]).items():
            if data.get(name) in (None, ""):
                data[name] = default
        return data

    # Trust (README "Secrets"): link_secret signs; these still verify, comma-separated.
    link_secrets_previous: SecretStr = SecretStr("")
    dev_mode: bool = False  # INVITES_DEV_MODE=1: the dev secret is allowed (`make run`)
    # Payload encryption: "id1:base64key,id2:base64key" (32-byte AES keys); the first
    # encrypts, all decrypt. Unset: payloads are stored as plain JSON.
    payload_keys: SecretStr = SecretStr("")
    codec_auth_token: SecretStr = SecretStr("")  # Bearer token the codec endpoint requires
    codec_cors_origins: str = ""  # comma-separated origins, e.g. the Web UI's
    # Associated domains and SSO (issue #14, domains/). The resolver TXT records are read
    # from ("host" or "host:port"; empty: the system's), and how often verified domains are
    # re-checked (the worker's Temporal schedule, workflows/domain_check.py).
    dns_resolver: str = ""
    dns_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    domain_recheck_interval_seconds: int = Field(default=3600, ge=60)
    # The company IdP (OIDC ID tokens, RS256/ES256): its public key as PEM text or a path to
    # a PEM file; the `iss` and `aud` its tokens must carry. Unset key: SSO is off.
    sso_idp_public_key: str = ""
    sso_issuer: str = ""
    sso_audience: str = ""
    sso_inviter: str = ""  # who invites SSO users with an individual account (default: owner)
    sso_nonce_ttl_seconds: int = Field(default=600, ge=30, le=3600)
    # Webhooks (issue #15, webhooks/urls.py): loopback/private/link-local endpoints only when
    # allowed (development, tests); plain http only to these comma-separated hosts.
    webhook_allow_private: bool = False
    webhook_http_hosts: str = ""
    webhook_poll_seconds: float = Field(default=5.0, gt=0, le=3600)  # outbox check, idle


DEV_LINK_SECRET = "dev-only-change-me"
MIN_SECRET_LENGTH = 32


class InsecureConfiguration(SystemExit):
    """A process refuses to start: its message names the setting and how to fix it."""


def link_verify_secrets(settings: Settings) -> list[str]:
    """The current link secret first (it signs), then the previous ones (they only verify)."""
    previous = settings.link_secrets_previous.get_secret_value().split(",")
    return [settings.link_secret.get_secret_value(), *(p.strip() for p in previous if p.strip())]


def require_production_secrets(settings: Settings, process: str) -> None:
    """Outside dev mode, refuse the repo's dev secret and short secrets: a link forged with
    a known key opens anyone's invitation and accepts it on their behalf."""
    if settings.dev_mode:
        return
    fix = (f"set it to a random value of at least {MIN_SECRET_LENGTH} characters (python -c "
           "'import secrets; print(secrets.token_urlsafe(32))'), or set INVITES_DEV_MODE=1 on "
           "a development machine")
    for name, secret in [("INVITES_LINK_SECRET", settings.link_secret.get_secret_value()),
                         *(("INVITES_LINK_SECRETS_PREVIOUS", s)
                           for s in link_verify_secrets(settings)[1:])]:
        if secret == DEV_LINK_SECRET:
            raise InsecureConfiguration(f"{process} refuses to start: {name} is the "
                                        f"development default; {fix}.")
        if len(secret) < MIN_SECRET_LENGTH:
            raise InsecureConfiguration(f"{process} refuses to start: {name} is empty or "
                                        f"shorter than {MIN_SECRET_LENGTH} characters; {fix}.")
    codec_token = settings.codec_auth_token.get_secret_value()
    if codec_token and len(codec_token) < MIN_SECRET_LENGTH:
        raise InsecureConfiguration(f"{process} refuses to start: INVITES_CODEC_AUTH_TOKEN is "
                                    f"shorter than {MIN_SECRET_LENGTH} characters; {fix}.")


def secrets_to_mask(settings: Settings) -> list[str]:
    """Every secret a log line must never show: link secrets, codec token, payload keys."""
    keys = settings.payload_keys.get_secret_value()
    return [*link_verify_secrets(settings), settings.codec_auth_token.get_secret_value(),
            keys, *(k.partition(":")[2].strip() for k in keys.split(","))]


@lru_cache
def get_settings() -> Settings:
    return Settings()


async def connect_temporal(settings: Settings | None = None, runtime=None):  # -> Client
    """The one way every process connects: envconfig profile (TLS, API key, address from
    TEMPORAL_* / temporal.toml) completed by our settings, pydantic data converter."""
    from temporalio.client import Client
    from temporalio.envconfig import ClientConfigProfile

    settings = settings or get_settings()
    profile = ClientConfigProfile.load(profile=settings.temporal_profile)
    connect: dict[str, Any] = dict(profile.to_client_connect_config())
    target = connect.pop("target_host", None) or settings.temporal_address
    connect.setdefault("namespace", settings.temporal_namespace)
    if runtime is not None:
        connect["runtime"] = runtime
    return await Client.connect(target, data_converter=data_converter(settings), **connect)


def data_converter(settings: Settings):  # -> DataConverter
    """The pydantic converter, encrypting payloads when INVITES_PAYLOAD_KEYS is set."""
    from temporalio.contrib.pydantic import pydantic_data_converter

    from payload_codec import encrypting_converter

    keys = settings.payload_keys.get_secret_value()
    return encrypting_converter(pydantic_data_converter, keys) if keys else pydantic_data_converter
