"""The OpenAI-compatible local server over a chat session, and exports for serving elsewhere (vLLM)."""
