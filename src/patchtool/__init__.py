"""patchtool: per-device patch series against upstream vLLM."""

__version__ = "0.1.0"
