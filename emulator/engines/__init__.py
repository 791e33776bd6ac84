"""Serving engines: their adapters (registry.py names them), the managed environments they run in
(envs.py), and the pieces that run inside an engine (its vGPU plugin, the transformers server)."""
