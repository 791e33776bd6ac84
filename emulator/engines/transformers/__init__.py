"""Hugging Face transformers' continuous batching, the reference engine of `validate`: its adapter
(adapter.py) and the thin OpenAI server it runs behind (server.py). It has no search space."""
