"""``libvirt-bridge start|pause|resume|save|restore|migrate|destroy``: the verbs.

Each runs the VDSM "before" event that libvirt has no hook for, then makes the libvirt
call (see ``libvirt_bridge.verbs``); one module, because the seven differ only in their
arguments and the call they make.
"""

from __future__ import annotations

import argparse

from ..runner import LIBVIRT_ENV_TEXT
from ..verbs import Verbs
from . import options
from .options import AddParser

HELP = {
    "start": (
        "run before_vm_start, then boot the XML its scripts leave (this boot only)",
        "Run before_vm_start on the domain's persistent XML, then start the domain from "
        "the XML the scripts leave: their changes apply to this boot only, the persistent "
        "definition is untouched (as with VDSM). A failing script stops the start, and "
        "before_vm_destroy then after_vm_destroy fire, as when libvirt's prepare hook "
        "refuses a virsh start, so scripts can give back what earlier ones took. "
        "before_vm_start does not run a second time in libvirt's prepare hook. A domain "
        "with a managed save image is restored instead (before_vm_dehibernate).",
        "libvirt-bridge start vm1",
    ),
    "pause": (
        "run before_vm_pause, then pause the domain",
        "Run before_vm_pause (a failing script stops the pause), then pause the domain; "
        "after_vm_pause comes from the listener, as for virsh suspend.",
        "libvirt-bridge pause vm1",
    ),
    "resume": (
        "run before_vm_cont, then resume the domain",
        "Run before_vm_cont (a failing script stops it), then resume the domain; "
        "after_vm_cont comes from the listener, as for virsh resume.",
        "libvirt-bridge resume vm1",
    ),
    "save": (
        "run before_vm_hibernate, then save the domain (to FILE, or a managed save)",
        "Run before_vm_hibernate (a failing script stops the save), then save the domain's "
        "memory to FILE, or as a managed save without FILE; after_vm_hibernate comes from "
        "libvirt's hook, as for virsh save.",
        "libvirt-bridge save vm1 /var/lib/libvirt/save/vm1.img",
    ),
    "restore": (
        "restore a saved domain (before_vm_dehibernate comes from libvirt's hook)",
        "Restore a domain saved to FILE. libvirt has a hook for this one: "
        "before_vm_dehibernate and after_vm_dehibernate fire as for virsh restore.",
        "libvirt-bridge restore /var/lib/libvirt/save/vm1.img",
    ),
    "migrate": (
        "run before_vm_migrate_source, then migrate the domain to DEST_URI",
        "Run before_vm_migrate_source (a failing script stops the migration), then "
        "migrate the domain to DEST_URI; the destination's before_vm_migrate_destination "
        "and the after_* events fire as for virsh migrate.",
        "libvirt-bridge migrate --live vm1 qemu+ssh://host2/system",
    ),
    "destroy": (
        "run before_vm_destroy, then destroy (power off) the domain",
        "Run before_vm_destroy (never a veto, as in VDSM), then destroy the domain; it "
        "does not run again in libvirt's stopped hook; after_vm_destroy fires as for "
        "virsh destroy.",
        "libvirt-bridge destroy vm1",
    ),
}


# Operators may expect a variable exported in their shell to reach the scripts: it does not.
ENVIRONMENT = (
    f"The scripts get the environment libvirt gives its hooks ({LIBVIRT_ENV_TEXT}), not "
    "the caller's, plus the VM's custom properties and vmId, as under virsh."
)


def add_parser(add: AddParser) -> None:
    for verb, (short, long, example) in HELP.items():
        # restore runs no script itself: libvirt's hook does.
        text = long if verb == "restore" else f"{long} {ENVIRONMENT}"
        parser = options.add_command(
            add,
            verb,
            summary=short,
            description=text,
            epilog=options.examples(example),
            parents=[options.CONNECT],
        )
        if verb == "restore":
            parser.add_argument("file", help="the file written by save")
        else:
            parser.add_argument("domain", help="the domain's name, UUID or id")
        if verb == "start":
            parser.add_argument("--paused", action="store_true", help="leave its CPUs paused")
        if verb == "save":
            parser.add_argument("file", nargs="?", help="where to save; omit for a managed save")
        if verb == "migrate":
            parser.add_argument("dest_uri", help="the destination's libvirt URI")
            parser.add_argument("--live", action="store_true", help="live migration")
            parser.add_argument("--migrateuri", help="the migration data URI, e.g. tcp://host2")
        parser.set_defaults(func=main, verb=verb)


def main(args: argparse.Namespace) -> int:
    verbs = Verbs(options.load_config(args), args.connect)
    try:
        if args.verb == "start":
            verbs.start(args.domain, args.paused)
        elif args.verb == "save":
            verbs.save(args.domain, args.file)
        elif args.verb == "restore":
            verbs.restore(args.file)
        elif args.verb == "migrate":
            verbs.migrate(args.domain, args.dest_uri, args.live, args.migrateuri)
        else:
            getattr(verbs, args.verb)(args.domain)
    finally:
        verbs.close()
    return 0
