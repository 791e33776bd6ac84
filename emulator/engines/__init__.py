"""Serving engines: managed environments (envs.py) and, later, the adapters that start them."""
