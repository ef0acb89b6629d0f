"""An OpenAI-compatible chat endpoint over the models of the local model store, and a client for such
endpoints (ours, or an on-premise vLLM server): judges of judged leaderboards and arena models.

protocol.py is the wire format (requests parsed once at the edge, the records both sides share);
models.py which models are served and loading them (transformers, never remote code, safetensors only);
generation.py the decoding loop (greedy or seeded sampling, stop sequences, logprobs); app.py the ASGI app;
client.py the client (timeouts, bounded concurrency, retries with backoff).
"""
