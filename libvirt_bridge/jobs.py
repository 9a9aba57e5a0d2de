"""One queued async event, as a job file of a queue (``asyncq``) holds it."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .runner import EventProperties


class Job:
    """One queued event: what to run and on what.

    ``props``: the scripts' custom properties, for an event whose XML is not the domain's
    (a device event's); None: they are read from ``xml``. ``per_device``: the event fires
    once per device of the domain ``xml`` that has custom properties (``per_device``);
    the runner finds them, so that the hook call that queues it parses nothing.
    """

    __slots__ = ("event", "name", "path", "per_device", "props", "source", "uuid", "xml")

    def __init__(
        self,
        event: str,
        name: str,
        uuid: str,
        xml: bytes,
        path: str = "",
        props: EventProperties | None = None,
        per_device: bool = False,
        source: str = "",
    ) -> None:
        self.event = event
        self.name = name
        self.uuid = uuid
        self.xml = xml
        self.path = path
        self.props = props
        self.per_device = per_device
        # What fired it (``mapping.Row.source``), for the runs' records.
        self.source = source

    def encode(self) -> bytes:
        # The name is hex-encoded: a domain name may hold newlines or any other character.
        header = f"event={self.event}\nname={self.name.encode().hex()}\nuuid={self.uuid}\n"
        if self.props is not None:
            import json  # not at import: the hook's jobs carry no properties (fast path)

            header += f"properties={json.dumps(self.props.to_json()).encode().hex()}\n"
        if self.per_device:
            header += "per_device=1\n"
        if self.source:
            header += f"source={self.source}\n"
        return header.encode() + b"\n" + self.xml

    @classmethod
    def decode(cls, blob: bytes, path: str) -> Job:
        header, _, xml = blob.partition(b"\n\n")
        fields = dict(line.split("=", 1) for line in header.decode().splitlines() if "=" in line)
        name = bytes.fromhex(fields.get("name", "")).decode("utf-8", "replace")
        props = None
        if "properties" in fields or "props" in fields:
            import json  # not at import, as in encode

            from .runner import EventProperties

            if "properties" in fields:
                props = EventProperties.from_json(json.loads(bytes.fromhex(fields["properties"])))
            else:  # queued by an earlier version: the device's and the VM's, merged
                props = EventProperties(json.loads(bytes.fromhex(fields["props"])))
        per_device = fields.get("per_device") == "1"
        return cls(
            fields.get("event", ""),
            name,
            fields.get("uuid", ""),
            xml,
            path,
            props,
            per_device,
            fields.get("source", ""),
        )
