"""Staging files of recordings: what release and undo remove (activities/recording_files)."""

from __future__ import annotations

from pathlib import Path

from activities.recording_files import TEMP_SUFFIX, remove_staging_files, staged_rel_path


def _staged(root: Path, org: int, inv: str, name: str) -> Path:
    path = root / staged_rel_path(org, inv, 1, "x.mp4").parent / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_release_removes_only_the_temporary_files_of_its_organisations_directory(
    tmp_path: Path,
) -> None:
    inv = "acme:paula@example.com"
    kept = _staged(tmp_path, 7, inv, "1-x.mp4")
    temp = _staged(tmp_path, 7, inv, f"1-x.mp4.e1-a1-ab{TEMP_SUFFIX}")
    elsewhere = _staged(tmp_path, 8, inv, f"1-x.mp4.e1-a1-cd{TEMP_SUFFIX}")
    assert remove_staging_files(tmp_path, inv, temp_only=True, org_account_id=7) == 1
    assert kept.exists() and not temp.exists() and elsewhere.exists()


def test_without_the_organisation_every_accounts_directory_is_cleared(tmp_path: Path) -> None:
    inv = "acme:paula@example.com"
    files = [_staged(tmp_path, 7, inv, "1-x.mp4"), _staged(tmp_path, 8, inv, "2-y.mp4")]
    assert remove_staging_files(tmp_path, inv) == 2
    assert not any(f.exists() for f in files)
    assert not any(f.parent.exists() for f in files)


def test_an_organisation_without_staged_files_is_nothing_to_do(tmp_path: Path) -> None:
    assert remove_staging_files(tmp_path, "acme:nobody@example.com", temp_only=True,
                                org_account_id=7) == 0
