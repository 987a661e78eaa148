"""`vist2 serve`: an OpenAI-compatible server where every stream keeps its context as pages.

protocol (request/response models), kvbatch (the batch cache with per-row eviction), batcher
(continuous batching), app (FastAPI + SSE), metrics (Prometheus), cli, loadtest. See docs/serve.
"""
