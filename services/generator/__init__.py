"""The generator service (in progress, issue #4): token-level expansion for the core's search."""
