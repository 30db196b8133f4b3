"""The CSR system around the pure core `csr`: the three services (reward, generator, trainer),
the runtime they share (services.runtime), and `csr up` (services.stack)."""
