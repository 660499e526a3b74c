"""Streamlit pages of the customer_service app; the hub lists them from the app's AppSpec (``customer_service.plugin``).

Page scripts run as scripts: they import their helpers absolutely (``from customer_service.dashboard... import ...``).
"""
