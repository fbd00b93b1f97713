"""The OpenAI endpoints besides chat completions: responses, legacy completions, embeddings.

Each is a raw ASGI endpoint that ``app.GatewayApp`` serves directly, as it does chat completions
(``routes.DIRECT_ENDPOINTS``). Responses and completions are translated
to chat completions and go through the same pipeline as chat (``translated.TranslatedEndpoint``);
embeddings pick an embeddings backend and share the pipeline's attempts, budgets and accounting.
"""
