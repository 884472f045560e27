"""Shadowline's web entry point: Streamlit's ASGI app (``st.App``) with the sign-in routes and gate.

``streamlit run app/asgi.py`` (what ``shadowline up`` runs) serves ``app/main.py`` as usual, plus
``/signin`` (the form that sets the session cookie) and :class:`app.gate.SessionGate` in front of
every page load. ``app/main.py`` stays the Streamlit script (AppTest runs it directly).
"""

from __future__ import annotations

import streamlit as st
from starlette.middleware import Middleware

from app.gate import ROUTES, SessionGate

app = st.App("main.py", routes=ROUTES, middleware=[Middleware(SessionGate)])
