"""vLLM as a serving engine under emulation: its adapter (adapter.py), the knobs a study searches
(space.py), and revati-tune's plugin that runs inside vLLM (plugin/)."""
