"""What the tests share: a bridge called as libvirt calls it (``harness``), a host's
confdir and commands (``hosts``), and the shipped hooks run in isolation (``hooks``)."""
