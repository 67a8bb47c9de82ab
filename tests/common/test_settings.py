"""Settings precedence (.env < environment < CLI), path resolution, and secret hygiene."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from common import settings as settings_module
from common.cli import UserError, run, scrub
from common.fileio import atomic_path, write_json_atomic
from common.settings import REPO_ROOT, load_settings


@pytest.fixture
def env_file(tmp_path, monkeypatch):
    path = tmp_path / "test.env"
    monkeypatch.setenv("REEFSEG_ENV_FILE", str(path))
    for key in ("LABEL_TAXONOMY", "DATA_ROOT", "MEDIA_DIR", "SEED", "CVAT_PASSWORD"):
        monkeypatch.delenv(key, raising=False)
    return path


def test_defaults_without_env_file(env_file):
    s = load_settings()
    assert s.gt_field_name == "gt_polylines"
    assert s.label_taxonomy == "finegrained"
    assert s.data_root == REPO_ROOT / "data"
    assert s.media_dir == REPO_ROOT / "data" / "media"


def test_precedence_env_file_then_environment_then_cli(env_file, monkeypatch):
    env_file.write_text("LABEL_TAXONOMY=extended\nSEED=7\n")
    assert load_settings().label_taxonomy == "extended"
    assert load_settings().seed == 7
    monkeypatch.setenv("LABEL_TAXONOMY", "main_families")
    assert load_settings().label_taxonomy == "main_families"
    assert load_settings(label_taxonomy="agnostic").label_taxonomy == "agnostic"
    assert load_settings(label_taxonomy=None).label_taxonomy == "main_families"


def test_env_file_paths_are_relative_to_repo_root_whatever_the_cwd(env_file, tmp_path, monkeypatch):
    env_file.write_text("DATA_ROOT=somewhere/data\n")
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert s.data_root == REPO_ROOT / "somewhere" / "data"
    assert s.media_dir == REPO_ROOT / "somewhere" / "data" / "media"  # follows DATA_ROOT when not set


def test_bad_integer_names_the_key(env_file):
    env_file.write_text("SEED=abc\n")
    with pytest.raises(ValueError, match="SEED"):
        load_settings()


def test_redacted_masks_secrets(env_file):
    env_file.write_text("CVAT_PASSWORD=hunter2\n")
    s = load_settings()
    assert s.cvat_password == "hunter2"
    assert "hunter2" not in str(s.redacted())
    assert scrub("login failed for hunter2", s.secrets) == "login failed for ***"


def test_fiftyone_keys_from_env_file_reach_the_environment(env_file, monkeypatch):
    monkeypatch.setenv("FIFTYONE_DATABASE_NAME", "")  # so monkeypatch restores the original (absent) value afterwards
    monkeypatch.delenv("FIFTYONE_DATABASE_NAME")
    env_file.write_text("FIFTYONE_DATABASE_NAME=team_db\n")
    settings_module.export_fiftyone_env()
    assert os.environ["FIFTYONE_DATABASE_NAME"] == "team_db"
    monkeypatch.setenv("FIFTYONE_DATABASE_NAME", "from_env")
    settings_module.export_fiftyone_env()
    assert os.environ["FIFTYONE_DATABASE_NAME"] == "from_env"


def test_user_error_is_one_line_without_traceback_and_scrubbed(monkeypatch, capsys):
    def fail():
        raise UserError("cannot log in as bob with password s3cret; check CVAT_PASSWORD")

    monkeypatch.setattr(sys, "argv", ["prog"])
    with pytest.raises(SystemExit) as exit_info:
        run(fail, secrets=["s3cret"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["error: cannot log in as bob with password ***; check CVAT_PASSWORD"]


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "out.json"
    write_json_atomic(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text().strip().startswith("{")
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_settings_module_reads_env_file_from_any_cwd(env_file, tmp_path):
    env_file.write_text("GT_FIELD_NAME=my_polys\n")
    code = "from common.settings import load_settings; print(load_settings().gt_field_name)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        check=True,
    )
    assert out.stdout.strip() == "my_polys"


def test_database_uri_password_is_masked(env_file, monkeypatch):
    monkeypatch.setenv("FIFTYONE_DATABASE_URI", "mongodb://reef:pa55word@db.example:27017")
    s = load_settings()
    assert s.redacted()["fiftyone_database_uri"] == "mongodb://reef:***@db.example:27017"
    assert "pa55word" in s.secrets


def test_dino_weights_path_in_env_file_is_relative_to_repo_root_but_hub_names_are_kept(env_file, tmp_path, monkeypatch):
    monkeypatch.delenv("DINO_WEIGHTS", raising=False)
    monkeypatch.chdir(tmp_path)
    env_file.write_text("DINO_WEIGHTS=weights/dinov2_vits14_pretrain.pth\n")
    assert load_settings().dino_weights == str(REPO_ROOT / "weights" / "dinov2_vits14_pretrain.pth")
    env_file.write_text("DINO_WEIGHTS=hf:facebook/dinov2-small\n")
    assert load_settings().dino_weights == "hf:facebook/dinov2-small"
