"""Shadowline's Streamlit entry point: page config and navigation (no business logic here)."""

from __future__ import annotations

import streamlit as st

st.set_page_config(page_title="Shadowline", page_icon=":material/visibility:", layout="wide")

pages = [
    st.Page("../pages/live_line.py", title="Live line", icon=":material/conveyor_belt:", url_path="live", default=True),
]
st.navigation(pages).run()
