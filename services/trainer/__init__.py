"""The trainer service: DPO with LoRA (TRL, PEFT) from the pair stream, adapters published to
the shared store, CSR iterations advanced.

Modules: dpo (one update), service (the loop), observe (metrics, TensorBoard, plots), main
(`csr train`).
"""
