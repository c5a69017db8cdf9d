"""`autodidact serve`: a model with its hallucination gate behind an OpenAI-compatible HTTP
API (`/v1/chat/completions`, `/v1/models`, `/health`).

- `gate`: the model with its probe, refine strategy and thresholds, answering a batch of
  questions (each answer with its risk and route);
- `batching`: requests queued and answered in dynamic batches by one worker thread (a full
  queue refuses the next request);
- `protocol`: the OpenAI request and response shapes this server speaks (a subset), and
  the `autodidact` extension field (risk, route);
- `app`: the FastAPI application over them.
"""
