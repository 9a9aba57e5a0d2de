"""The property schema: the custom properties a host accepts, as oVirt's engine had them.

Per scope (``vm``, or a device element's name), each declared name with the regular
expressions its whole value must match; ``screening`` applies it, ``config`` reads it
from the config's ``[properties]`` and the drop-in files of ``properties_dir``.

On the hook's path nothing heavy is imported. ``import re`` alone costs a third of an
interpreter start (it imports enum, functools and collections), so the schema's regular
expressions are compiled once, when the config is parsed, and what ``re`` compiled them
to is kept in the config's cache (:func:`prepare`); a hook call builds the pattern from
it with the C module ``_sre``, and uses ``re`` only when that is not at hand.
"""

from __future__ import annotations

from .screening import VM

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

# Elements of libvirt's <devices> (formatdomain), each a scope a schema may declare.
DEVICE_SCOPES = (
    "audio",
    "channel",
    "console",
    "controller",
    "crypto",
    "disk",
    "filesystem",
    "graphics",
    "hostdev",
    "hub",
    "input",
    "interface",
    "iommu",
    "lease",
    "memballoon",
    "memory",
    "nvram",
    "panic",
    "parallel",
    "pstore",
    "redirdev",
    "redirfilter",
    "rng",
    "serial",
    "shmem",
    "smartcard",
    "sound",
    "tpm",
    "video",
    "vsock",
    "watchdog",
)
SCOPES = (VM, *DEVICE_SCOPES)


# What ``_sre.compile`` takes besides the pattern, as ``re`` computes it; with the
# interpreter it is valid for (``_sre.MAGIC``, ``sys.hexversion``).
Prepared = tuple[int, int, tuple[object, ...]]


def prepare(pattern: str) -> Prepared | None:
    """What ``re`` compiles ``pattern`` to, for :class:`Schema` to build it without ``re``;
    None when this Python's ``re`` does not work as expected (then ``re`` compiles it)."""
    import _sre  # type: ignore[import-not-found]
    import re
    import sys

    try:
        from re import _compiler, _parser  # type: ignore[attr-defined]

        parsed = _parser.parse(pattern, 0)
        code = _compiler._code(parsed, 0)
        groupindex = dict(parsed.state.groupdict)
        indexgroup: list[str | None] = [None] * parsed.state.groups
        for name, index in groupindex.items():
            indexgroup[index] = name
        # Plain ints: the code holds re's named constants, which marshal cannot keep.
        args = (
            int(parsed.state.flags),
            [int(op) for op in code],
            parsed.state.groups - 1,
            {name: int(index) for name, index in groupindex.items()},
            tuple(indexgroup),
        )
        # Patterns compare by their pattern, flags and code: this is exactly re's.
        if _sre.compile(pattern, *args) != re.compile(pattern):
            return None
    except Exception:
        return None
    return (_sre.MAGIC, sys.hexversion, args)


class Schema:
    """The properties a host accepts: per scope, each name with its regular expressions.

    A name declared more than once (in the config and in drop-in files) must match each
    of its declarations. A scope without a declared name accepts nothing. ``prepared``:
    :func:`prepare`'s result per pattern, where the config's cache has it.
    """

    __slots__ = ("_compiled", "prepared", "tables")

    def __init__(
        self,
        tables: Mapping[str, Mapping[str, Iterable[str]]],
        prepared: Mapping[str, Prepared | None] | None = None,
    ) -> None:
        self.tables = {scope: {n: list(p) for n, p in t.items()} for scope, t in tables.items()}
        self.prepared = dict(prepared or {})
        self._compiled: dict[str, object] = {}

    def refusal(self, scope: str, name: str, value: str) -> str | None:
        """Why this schema refuses ``name=value`` in ``scope``; None when it accepts it."""
        patterns = self.tables.get(scope, {}).get(name)
        if patterns is None:
            where = "the VM" if scope == VM else f"a <{scope}>"
            return f"not declared for {where} in the property schema"
        for pattern in patterns:
            if not self._matches(pattern, value):
                return f"its value does not match the schema's regular expression {pattern!r}"
        return None

    def _matches(self, pattern: str, value: str) -> bool:
        compiled = self._compiled.get(pattern)
        if compiled is None:
            compiled = self._compiled[pattern] = self._compile(pattern)
        return compiled.fullmatch(value) is not None  # type: ignore[attr-defined]

    def _compile(self, pattern: str) -> object:
        import _sre
        import sys

        prepared = self.prepared.get(pattern)
        if prepared is not None and prepared[:2] == (_sre.MAGIC, sys.hexversion):
            try:
                return _sre.compile(pattern, *prepared[2])
            except Exception:
                pass  # not what this _sre takes after all: re compiles it
        import re

        return re.compile(pattern)
