"""Modules that hook scripts import; this directory is put on their PYTHONPATH."""
