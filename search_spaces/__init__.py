"""Per-engine search spaces, by engine name (the `engine.name` of a study)."""
from search_spaces import sglang, vllm
from search_spaces.space import Knob, Space

SPACES: dict[str, Space] = {"vllm": vllm.SPACE, "sglang": sglang.SPACE}

__all__ = ["Knob", "SPACES", "Space"]
