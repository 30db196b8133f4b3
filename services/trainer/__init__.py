"""The trainer service: DPO with LoRA (TRL, PEFT) from the pair stream, adapters published to
the shared store, CSR iterations advanced.

Modules: dpo (one update, the base model kept across updates, images read at collate time),
service (the loop) and parts (its collaborators), observe (metrics, TensorBoard, plots),
settings, main (`csr train`).
"""
