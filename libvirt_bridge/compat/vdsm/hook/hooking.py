"""``from vdsm.hook import hooking`` for hook scripts: the very objects of ``hooking``.

``vdsm`` and ``vdsm/hook`` are namespace packages (no ``__init__.py``) on purpose: a real
vdsm installation is a regular package, which the import system prefers wherever it sits
on ``sys.path``, so this fallback never shadows it.
"""

# Scripts have this module's grandparent directory on PYTHONPATH, which makes ``hooking``
# a top-level module; mypy checks this file as part of libvirt_bridge and cannot see that.
from hooking import *  # type: ignore[import-not-found]  # noqa: F403
