"""Installation assets (launcher template, service files, default config)."""
