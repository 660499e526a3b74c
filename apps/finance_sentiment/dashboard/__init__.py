"""Streamlit pages of the finance_sentiment app; the hub lists them from the app's AppSpec (``finance_sentiment.plugin``).

Page scripts run as scripts: they import their helpers absolutely (``from finance_sentiment.dashboard... import ...``).
"""
