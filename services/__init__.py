"""The three CSR services (reward, generator, trainer): thin edges around the pure core `csr`."""
