"""llm-router: an OpenAI-compatible gateway that routes between a self-hosted mid tier and a flagship API."""
