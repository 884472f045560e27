"""Settings from the environment: defaults, and a clear refusal of a bad value."""

from __future__ import annotations

import pytest

from core.settings import load_settings


def test_defaults_and_overrides(tmp_path) -> None:
    settings = load_settings({"SHADOWLINE_DATA_DIR": str(tmp_path)})
    assert settings.database_url == f"sqlite:///{tmp_path / 'shadowline.db'}"
    assert (settings.plant_timezone, settings.max_training_jobs) == ("UTC", 1)
    assert load_settings({"SHADOWLINE_DATA_DIR": str(tmp_path), "SHADOWLINE_MAX_TRAINING_JOBS": "2"}).max_training_jobs == 2


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_a_bad_training_job_limit_is_refused_with_its_name(tmp_path, value) -> None:
    with pytest.raises(ValueError, match="SHADOWLINE_MAX_TRAINING_JOBS"):
        load_settings({"SHADOWLINE_DATA_DIR": str(tmp_path), "SHADOWLINE_MAX_TRAINING_JOBS": value})
