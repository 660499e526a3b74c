"""Streamlit pages the finance_sentiment app contributes to the Verticore hub."""
from __future__ import annotations

from pathlib import Path

PAGES = [{"title": "Finance sentiment monitor", "path": str(Path(__file__).parent / "monitor_page.py"),
          "icon": ":material/monitoring:"}]
