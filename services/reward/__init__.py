"""The reward service: CLIP image-relevance scores R_I over gRPC and HTTP.

Modules: settings (environment), models (open_clip and Hugging Face backends), scorer
(decode, cache, batch, score), batcher, cache, grpc_server, http_api, worker (both APIs in
one process), client (round-robin, retries, image-hash protocol).
"""
