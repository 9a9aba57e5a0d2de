"""The Debian package and the Ansible role, on this machine and private libvirt daemons."""
