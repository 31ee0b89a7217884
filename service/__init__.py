"""The control plane: HTTP API, job store, CLI. Reaches workers only via ``runner``."""
