"""
Push event payloads, in the format Quay documented for its repository push
notifications (field for field), plus a few extra fields.
"""

from __future__ import annotations

from dataclasses import dataclass

from quayd.errors import JSONValue


@dataclass(frozen=True, slots=True, kw_only=True)
class PushRecord:
    """
    One manifest write of a push.

    @ivar image_id: What C{updated_tags} reports: the hex of the image config
        digest for an image manifest, of the index digest for an index.
    """

    manifest_digest: str
    tag: str | None
    image_id: str


def push_payload(
    *, repository: str, hostname: str, scheme: str, visibility: str, records: list[PushRecord]
) -> dict[str, JSONValue]:
    """
    The JSON body of one (coalesced) push event.

    @param records: The manifest writes in the order they happened.
    """
    namespace, _, rest = repository.partition("/")
    name = rest or repository
    updated_tags: dict[str, str] = {}
    digests: list[str] = []
    for record in records:
        if record.manifest_digest not in digests:
            digests.append(record.manifest_digest)
        if record.tag is not None:
            updated_tags.pop(record.tag, None)
            updated_tags[record.tag] = record.image_id
    return {
        "pushed_image_count": len(digests),
        "name": name,
        "repository": repository,
        "docker_url": f"{hostname}/{repository}",
        "updated_tags": updated_tags,
        "namespace": namespace,
        "visibility": visibility,
        "homepage": f"{scheme}://{hostname}/repository/{repository}",
        "event": "push",
        "manifest_digests": digests,
    }


def sample_payload(*, repository: str, hostname: str, scheme: str, visibility: str) -> dict[str, JSONValue]:
    """The body of a test event: a push payload for an imaginary C{latest} tag."""
    payload = push_payload(
        repository=repository,
        hostname=hostname,
        scheme=scheme,
        visibility=visibility,
        records=[PushRecord(manifest_digest="sha256:" + "0" * 64, tag="latest", image_id="0" * 64)],
    )
    payload["event"] = "test"
    return payload
