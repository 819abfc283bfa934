"""llm-internals: LLM internals you can run, check and see."""

__version__ = "0.1.0"
