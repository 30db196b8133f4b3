"""The gRPC contracts as Python: stubs that `make proto` generates into `csr_api.v1` from
proto/csr_api/v1/*.proto (proto package `csr.v1`). Only the services and tools import them;
the core never does."""
