"""The whole system as local processes: `csr up` (an embedded Redis, reward workers, generators
and the trainer, started in order, supervised, stopped in order) and `csr status`.

Modules: config (the `csr up` file), supervisor (process lifetimes), up (the run), status
(what a running stack is doing), cli (the commands).
"""
