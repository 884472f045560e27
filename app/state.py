"""Process-wide resources of the app: settings and the database, made once (st.cache_resource)."""

from __future__ import annotations

import streamlit as st

from core.settings import Settings, get_settings
from db.bootstrap import open_database
from db.engine import Database


@st.cache_resource(show_spinner=False)
def database() -> Database:
    """The database, upgraded to the latest schema when the app starts."""
    return open_database(get_settings())


def settings() -> Settings:
    return get_settings()
