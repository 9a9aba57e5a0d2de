"""What the tests share: a bridge called as libvirt calls it (``harness``), the probe
script every test installs and the readers of its records (``probes``), the one wait on
something observable (``waits``), the end-to-end tests' sandboxes probed (``e2e``), a
host's confdir and commands (``hosts``), and the shipped hooks run in isolation
(``hooks``)."""
