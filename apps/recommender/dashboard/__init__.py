"""Streamlit pages of the recommender app; the hub lists them from the app's AppSpec (``recommender.plugin``).

Page scripts run as scripts: they import their helpers absolutely (``from recommender.dashboard... import ...``).
"""
