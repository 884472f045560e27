"""Settings from the environment: defaults, and a clear refusal of a bad value."""

from __future__ import annotations

import pytest

from core.settings import SettingsError, load_settings


def test_defaults_and_overrides(tmp_path) -> None:
    settings = load_settings({"SHADOWLINE_DATA_DIR": str(tmp_path)})
    assert settings.database_url == f"sqlite:///{tmp_path / 'shadowline.db'}"
    assert (settings.plant_timezone, settings.max_training_jobs) == ("UTC", 1)
    assert load_settings({"SHADOWLINE_DATA_DIR": str(tmp_path), "SHADOWLINE_MAX_TRAINING_JOBS": "2"}).max_training_jobs == 2


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_a_bad_training_job_limit_is_refused_with_its_name(tmp_path, value) -> None:
    with pytest.raises(ValueError, match="SHADOWLINE_MAX_TRAINING_JOBS"):
        load_settings({"SHADOWLINE_DATA_DIR": str(tmp_path), "SHADOWLINE_MAX_TRAINING_JOBS": value})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SHADOWLINE_MAX_IMAGE_MB", "0"),
        ("SHADOWLINE_MAX_IMAGE_MB", "-1"),
        ("SHADOWLINE_MAX_IMAGE_MB", "lots"),
        ("SHADOWLINE_MAX_IMAGE_MB", "inf"),
        ("SHADOWLINE_MAX_IMAGE_MB", "100000"),
        ("SHADOWLINE_TIMEZONE", "Mars/Olympus"),
        ("SHADOWLINE_TIMEZONE", "../../etc/passwd"),
    ],
)
def test_a_bad_setting_is_refused_with_its_name(tmp_path, name, value) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings({"SHADOWLINE_DATA_DIR": str(tmp_path), name: value})


def test_the_image_size_limit() -> None:
    assert load_settings({}).max_image_mb == 50 and load_settings({}).max_image_bytes == 50 * 1024 * 1024
    assert load_settings({"SHADOWLINE_MAX_IMAGE_MB": "0.5"}).max_image_bytes == 512 * 1024
