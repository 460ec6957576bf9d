"""The composition root: builds adapters from settings and serves the `pmkeeper` command."""
