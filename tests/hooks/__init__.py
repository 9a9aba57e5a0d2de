"""The hooks shipped in hooks.d, each run as VDSM would run it."""
