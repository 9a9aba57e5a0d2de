"""One module per ``libvirt-bridge`` subcommand."""
