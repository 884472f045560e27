"""Never leave keyboard focus on a decision button: a stray Enter or Space must not decide the next phone.

A Streamlit button keeps focus after a click, and Enter on a focused button clicks it again, on
whatever phone is shown by then. :func:`blur_after_click` mounts a tiny component (no visible
content) whose script blurs a button inside the given widget keys right after it is clicked.
"""

from __future__ import annotations

import streamlit as st

_JS = """
export default function (component) {
  const keys = component.data.classes || [];
  window.__shadowlineBlurKeys = keys;
  if (window.__shadowlineBlurInstalled) return;
  window.__shadowlineBlurInstalled = true;
  const selector = () => (window.__shadowlineBlurKeys || []).map((c) => "." + c + " button").join(", ");
  document.addEventListener(
    "click",
    (event) => {
      const wanted = selector();
      const button = wanted && event.target instanceof Element ? event.target.closest(wanted) : null;
      if (button) setTimeout(() => button.blur(), 0);
    },
    true,
  );
}
"""

_COMPONENT = st.components.v2.component("shadowline_blur_after_click", html="", js=_JS)


def _css_class(key: str) -> str:
    """The class Streamlit gives a keyed widget's container (``st-key-`` and the key, odd characters as ``-``)."""
    return "st-key-" + "".join(c if c.isalnum() or c in "_-" else "-" for c in key.strip())


def blur_after_click(keys: list[str], *, key: str) -> None:
    """Blur the buttons with these widget keys as soon as they are clicked (mouse, touch or keyboard)."""
    _COMPONENT(key=key, data={"classes": [_css_class(k) for k in keys]})
