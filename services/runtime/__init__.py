"""What the services share, so that no service imports another.

keys (every Redis key and channel), prompts (the prompt stream), prompt_sets (reading prompt
sets), pairs (reading the pair stream), adapters (the adapter format and its validation),
adapter_store (publication on disk), announce (telling generators of a new adapter), vlm
(model loading, the chat prompt, images), settings (the VLM services' shared settings),
algorithm (the algorithm file), bounded (depth and size bounds on user documents), lifeline
(processes that end with their parent), entry, health, docs, embedded_redis, json_rows.
"""
