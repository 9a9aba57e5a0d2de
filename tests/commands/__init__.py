"""install, uninstall, status, list, props and run."""
