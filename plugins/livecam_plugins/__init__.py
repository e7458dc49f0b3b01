"""livecam's built-in plugins: camera backends and transports, each loaded through the
entry-point group ``livecam`` exactly like a third-party plugin (pyproject.toml)."""
