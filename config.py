"""One place for every setting: environment variables prefixed INVITES_, or a .env file.

Temporal connection details (address, namespace, TLS, API key) come from the standard
`temporalio.envconfig` profile (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY,
temporal.toml ...); our settings only fill in what that profile leaves unset.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

TASK_QUEUE = "invitations"
ROOT = Path(__file__).resolve().parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INVITES_", env_file=".env", extra="ignore")

    database_url: str = f"sqlite:///{ROOT / '.data' / 'platform.db'}"
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_profile: str | None = None
    task_queue: str = TASK_QUEUE
    recordings_dir: Path = ROOT / ".data" / "recordings"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    mail_from: str = "Invitations <invitations@meet.example>"
    maildir: Path = ROOT / ".data" / "mail"
    link_secret: SecretStr = SecretStr("dev-only-change-me")
    public_base_url: str = "http://127.0.0.1:8000"
    metrics_port: int | None = 9464
    log_json: bool = False
    invitation_expiry_days: int = Field(default=30, ge=1, le=365)
    # Dev stack (`make run`): where its files live and the ports it serves on 127.0.0.1.
    data_dir: Path = ROOT / ".data"
    ui_port: int = 8233
    http_host: str = "127.0.0.1"
    http_port: int = 8000


@lru_cache
def get_settings() -> Settings:
    return Settings()


async def connect_temporal(settings: Settings | None = None, runtime=None):  # -> Client
    """The one way every process connects: envconfig profile (TLS, API key, address from
    TEMPORAL_* / temporal.toml) completed by our settings, pydantic data converter."""
    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.envconfig import ClientConfigProfile

    settings = settings or get_settings()
    profile = ClientConfigProfile.load(profile=settings.temporal_profile)
    connect: dict[str, Any] = dict(profile.to_client_connect_config())
    target = connect.pop("target_host", None) or settings.temporal_address
    connect.setdefault("namespace", settings.temporal_namespace)
    if runtime is not None:
        connect["runtime"] = runtime
    return await Client.connect(target, data_converter=pydantic_data_converter, **connect)
