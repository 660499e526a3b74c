"""Streamlit pages of the customer-service app (joined into the Verticore hub by ``make demo``)."""
from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent

PAGES = [
    {"title": "Support chat", "path": str(_HERE / "chat_page.py"), "icon": ":material/support_agent:"},
    {"title": "Knowledge base", "path": str(_HERE / "kb_page.py"), "icon": ":material/library_books:"},
    {"title": "Support analytics", "path": str(_HERE / "analytics_page.py"), "icon": ":material/analytics:"},
    {"title": "Handoff queue", "path": str(_HERE / "handoff_page.py"), "icon": ":material/assignment_ind:"},
]
