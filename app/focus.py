"""Never leave keyboard focus on a decision button: a stray Enter or Space must not decide the next phone.

A Streamlit button keeps focus after a click, and Enter on a focused button clicks it again, on
whatever phone is shown by then. :func:`blur_after_click` mounts a tiny component (no visible
content) whose script blurs a button inside the given widget keys right after it is clicked, and a
select of those keys once an option is chosen (so the page's shortcut keys work at once).
"""

from __future__ import annotations

import streamlit as st

_JS = """
export default function (component) {
  window.__shadowlineBlurKeys = component.data.classes || [];
  if (window.__shadowlineBlurInstalled) return;
  window.__shadowlineBlurInstalled = true;
  const inside = (element, suffix) =>
    element instanceof Element && (window.__shadowlineBlurKeys || []).some((c) => element.closest("." + c + suffix));
  const later = (element) => setTimeout(() => element.blur(), 50);
  // A keyed button that was clicked (mouse, touch, or a shortcut key's synthetic click).
  document.addEventListener(
    "click",
    (event) => {
      if (inside(event.target, " button")) later(event.target.closest("button"));
    },
    true,
  );
  // A keyed select whose option was just chosen: its input keeps the focus and would swallow the
  // next shortcut key. The option list chooses on pointer-up and is gone before a click.
  document.addEventListener(
    "pointerup",
    (event) => {
      const chosen = event.target instanceof Element && event.target.closest('[role="option"]');
      if (chosen && inside(document.activeElement, "")) later(document.activeElement);
    },
    true,
  );
  document.addEventListener(
    "keydown",
    (event) => {
      const active = document.activeElement;
      if (event.key === "Enter" && active?.getAttribute("aria-expanded") === "true" && inside(active, "")) later(active);
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
    """Blur the buttons with these widget keys as soon as they are clicked (mouse, touch or keyboard), and their selects once an option is chosen."""
    _COMPONENT(key=key, data={"classes": [_css_class(k) for k in keys]})
