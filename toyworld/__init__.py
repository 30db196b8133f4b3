"""The toy world: synthetic shape scenes with exact truth, the toy CLIP and VLM trained on
them, their evaluation (CHAIR, POPE), and whole CSR experiments through `csr up`."""
