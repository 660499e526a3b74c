"""Streamlit pages of the recommender app, discovered by the Verticore hub."""
from pathlib import Path

PAGES = [{"title": "Recommender", "path": str(Path(__file__).parent / "recommender_page.py"),
          "icon": ":material/recommend:", "url_path": "recommender"}]
