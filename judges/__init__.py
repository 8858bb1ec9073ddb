"""LLM judges (built in a later stage; see the issue tracker)."""
