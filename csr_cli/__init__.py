"""The `csr` command: the user's entry point to every part of the system (see csr_cli.main)."""
