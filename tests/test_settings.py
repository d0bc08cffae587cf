"""Settings a newcomer can trust: one data dir moves every default path, explicit values
win, and the README's Settings table lists every setting there is."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from config import ROOT, Settings
from workflows.options import TRANSFER


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("INVITES_"):
            monkeypatch.delenv(name)


def load(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


def sqlite_file(settings: Settings) -> Path:
    assert settings.database_url.startswith("sqlite:///")
    return Path(settings.database_url.removeprefix("sqlite:///"))


def test_two_data_dirs_share_no_file(tmp_path: Path) -> None:
    one, two = load(data_dir=tmp_path / "one"), load(data_dir=tmp_path / "two")
    for s, root in ((one, tmp_path / "one"), (two, tmp_path / "two")):
        assert sqlite_file(s) == root / "platform.db"
        assert s.recordings_dir == root / "recordings"
        assert s.maildir == root / "mail"
        assert s.logs_dir == root / "logs"
    paths = [sqlite_file(one), one.recordings_dir, one.maildir, one.logs_dir]
    assert not set(paths) & {sqlite_file(two), two.recordings_dir, two.maildir, two.logs_dir}


def test_the_environment_moves_them_and_explicit_values_win(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INVITES_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("INVITES_MAILDIR", str(tmp_path / "elsewhere" / "mail"))
    s = load()
    assert s.data_dir == tmp_path / "env"
    assert sqlite_file(s) == tmp_path / "env" / "platform.db"
    assert s.maildir == tmp_path / "elsewhere" / "mail"
    pg = "postgresql+psycopg://invites@db.internal/invites"
    assert load(database_url=pg, recordings_dir="/srv/rec").database_url == pg
    assert load(recordings_dir="/srv/rec").recordings_dir == Path("/srv/rec")


def test_defaults_live_in_the_checkout_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/")  # not the working directory's
    s = load()
    assert s.data_dir == ROOT / ".data"
    assert sqlite_file(s) == ROOT / ".data" / "platform.db"


def test_the_busy_wait_never_outlasts_the_heartbeat_timeout() -> None:
    limit = [m.le for m in Settings.model_fields["db_busy_timeout_seconds"].metadata
             if hasattr(m, "le")]
    assert limit and limit[0] <= TRANSFER["heartbeat_timeout"].total_seconds()
    with pytest.raises(ValueError, match="db_busy_timeout_seconds"):
        load(db_busy_timeout_seconds=60)


def readme_settings() -> set[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return {name for row in rows for name in re.findall(r"`(INVITES_[A-Z_]+)`", row)}


def test_the_readme_lists_every_setting() -> None:
    fields = {f"INVITES_{name.upper()}" for name in Settings.model_fields}
    listed = readme_settings()
    assert sorted(fields - listed) == [], "missing from README.md's Settings table"
    assert sorted(listed - fields) == [], "in README.md's Settings table, not in Settings"
