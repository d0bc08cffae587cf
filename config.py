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
    log_json: bool = False
    invitation_expiry_days: int = Field(default=30, ge=1, le=365)
    # Where files live by default (see paths_under; the dev server's temporal.db too), and
    # the ports the dev stack (`make run`) serves on.
    data_dir: Path = DEFAULT_DATA_DIR
    ui_port: int = 8233
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    # Files and database (issue #10). Every path left unset goes under data_dir.
    logs_dir: Path = paths_under(DEFAULT_DATA_DIR)["logs_dir"]
    # SQLite's wait for the write lock. At most the transfer heartbeat timeout (15 s,
    # workflows/options.py), or a waiting activity is timed out and retried mid-wait.
    db_busy_timeout_seconds: float = Field(default=10.0, gt=0, le=15)

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
