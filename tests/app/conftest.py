"""AppTest fixtures: point the app at a test installation, seeded by the real worker."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import settings as settings_module

ENTRYPOINT = str(Path(__file__).resolve().parents[2] / "app" / "main.py")


class BrowserLikeAppTest(AppTest):
    """An AppTest whose page switches clear the URL's query parameters, as navigating in the browser does
    (Streamlit clears them between pages): a page's ``?line=`` must not follow the user to the next page."""

    def switch_page(self, page_path: str) -> AppTest:
        self.query_params.clear()
        return super().switch_page(page_path)


@pytest.fixture
def app_for(settings, monkeypatch):
    """Make an AppTest of the entry point that reads ``settings``' installation."""
    monkeypatch.setenv("SHADOWLINE_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("SHADOWLINE_MODELS_DIR", str(settings.models_dir))
    # AppTest clicks as soon as a page is drawn: no person looks that fast (see test_review_queue for the guard itself).
    monkeypatch.setenv("SHADOWLINE_REVIEW_MIN_LOOK_S", "0")
    if not settings.database_url.startswith("sqlite"):
        monkeypatch.setenv("SHADOWLINE_DATABASE_URL", settings.database_url)
    settings_module.get_settings.cache_clear()
    from app import state

    state.database.clear()

    def make() -> AppTest:
        return BrowserLikeAppTest(Path(ENTRYPOINT), default_timeout=60)

    yield make
    state.database.clear()
    settings_module.get_settings.cache_clear()
