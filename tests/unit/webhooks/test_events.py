"""
Tests for L{quayd.webhooks.events}: the push payload, field for field as
Quay documents its repository push notification, plus C{event} and
C{manifest_digests}.
"""

from __future__ import annotations

import json

from quayd.errors import JSONValue
from quayd.webhooks.events import PushRecord, push_payload, sample_payload

#: The fields Quay documents for a repository push notification.
QUAY_FIELDS = {
    "pushed_image_count",
    "name",
    "repository",
    "docker_url",
    "updated_tags",
    "namespace",
    "visibility",
    "homepage",
}

MANIFEST_A = "sha256:" + "a" * 64
MANIFEST_B = "sha256:" + "b" * 64
MANIFEST_C = "sha256:" + "c" * 64
CONFIG_A = "1" * 64
CONFIG_B = "2" * 64


def _payload(repository: str, records: list[PushRecord], visibility: str = "private") -> dict[str, JSONValue]:
    """A push payload for C{repository} served at C{registry.example:5000} over https."""
    return push_payload(
        repository=repository,
        hostname="registry.example:5000",
        scheme="https",
        visibility=visibility,
        records=records,
    )


def test_push_payload_has_exactly_quay_fields_plus_extras() -> None:
    """The payload carries Quay's documented fields, C{event} and C{manifest_digests}, nothing else."""
    payload = _payload("acme/app", [PushRecord(manifest_digest=MANIFEST_A, tag="latest", image_id=CONFIG_A)])
    assert set(payload) == QUAY_FIELDS | {"event", "manifest_digests"}


def test_push_payload_values() -> None:
    """Every field has the value Quay gives it for a one-tag push."""
    payload = _payload(
        "acme/app", [PushRecord(manifest_digest=MANIFEST_A, tag="latest", image_id=CONFIG_A)], "public"
    )
    assert payload == {
        "pushed_image_count": 1,
        "name": "app",
        "repository": "acme/app",
        "docker_url": "registry.example:5000/acme/app",
        "updated_tags": {"latest": CONFIG_A},
        "namespace": "acme",
        "visibility": "public",
        "homepage": "https://registry.example:5000/repository/acme/app",
        "event": "push",
        "manifest_digests": [MANIFEST_A],
    }


def test_push_payload_is_json_serialisable() -> None:
    """The payload survives a JSON round trip unchanged."""
    payload = _payload("acme/app", [PushRecord(manifest_digest=MANIFEST_A, tag="v1", image_id=CONFIG_A)])
    assert json.loads(json.dumps(payload)) == payload


def test_push_payload_scheme_in_homepage_only() -> None:
    """The scheme shows in C{homepage}; C{docker_url} never has one."""
    payload = push_payload(
        repository="acme/app",
        hostname="localhost:5000",
        scheme="http",
        visibility="private",
        records=[PushRecord(manifest_digest=MANIFEST_A, tag="v1", image_id=CONFIG_A)],
    )
    assert payload["homepage"] == "http://localhost:5000/repository/acme/app"
    assert payload["docker_url"] == "localhost:5000/acme/app"


def test_push_payload_multi_level_name() -> None:
    """The namespace is the first component; C{name} is all the rest."""
    payload = _payload("acme/team/app", [PushRecord(manifest_digest=MANIFEST_A, tag="v1", image_id=CONFIG_A)])
    assert payload["namespace"] == "acme"
    assert payload["name"] == "team/app"
    assert payload["repository"] == "acme/team/app"
    assert payload["docker_url"] == "registry.example:5000/acme/team/app"
    assert payload["homepage"] == "https://registry.example:5000/repository/acme/team/app"


def test_push_payload_single_component_name_not_empty() -> None:
    """A repository without a namespace component still gets a non-empty C{name}."""
    payload = _payload("app", [PushRecord(manifest_digest=MANIFEST_A, tag="v1", image_id=CONFIG_A)])
    assert payload["name"] == "app"


def test_push_payload_tag_moved_twice_keeps_last_image() -> None:
    """A tag pushed several times in one event reports the image it points to last."""
    records = [
        PushRecord(manifest_digest=MANIFEST_A, tag="latest", image_id=CONFIG_A),
        PushRecord(manifest_digest=MANIFEST_B, tag="latest", image_id=CONFIG_B),
        PushRecord(manifest_digest=MANIFEST_A, tag="latest", image_id=CONFIG_A),
    ]
    payload = _payload("acme/app", records)
    assert payload["updated_tags"] == {"latest": CONFIG_A}
    assert payload["pushed_image_count"] == 2
    assert payload["manifest_digests"] == [MANIFEST_A, MANIFEST_B]


def test_push_payload_tags_in_order_of_last_update() -> None:
    """C{updated_tags} lists tags in the order of their last move."""
    records = [
        PushRecord(manifest_digest=MANIFEST_A, tag="one", image_id=CONFIG_A),
        PushRecord(manifest_digest=MANIFEST_A, tag="two", image_id=CONFIG_A),
        PushRecord(manifest_digest=MANIFEST_B, tag="one", image_id=CONFIG_B),
    ]
    payload = _payload("acme/app", records)
    assert list(payload["updated_tags"]) == ["two", "one"]


def test_push_payload_index_children_counted() -> None:
    """An index pushed with its children counts every distinct manifest; only the index is tagged."""
    index_hex = "d" * 64
    records = [
        PushRecord(manifest_digest=MANIFEST_A, tag=None, image_id=CONFIG_A),
        PushRecord(manifest_digest=MANIFEST_B, tag=None, image_id=CONFIG_B),
        PushRecord(manifest_digest="sha256:" + index_hex, tag="multi", image_id=index_hex),
    ]
    payload = _payload("acme/app", records)
    assert payload["pushed_image_count"] == 3
    assert payload["manifest_digests"] == [MANIFEST_A, MANIFEST_B, "sha256:" + index_hex]
    assert payload["updated_tags"] == {"multi": index_hex}


def test_push_payload_untagged_only() -> None:
    """Untagged manifest writes are counted but report no tags."""
    payload = _payload("acme/app", [PushRecord(manifest_digest=MANIFEST_C, tag=None, image_id=CONFIG_A)])
    assert payload["updated_tags"] == {}
    assert payload["pushed_image_count"] == 1


def test_sample_payload_is_a_test_event() -> None:
    """The sample payload is a push payload for an imaginary C{latest} tag, marked C{test}."""
    payload = sample_payload(
        repository="acme/app", hostname="registry.example", scheme="https", visibility="private"
    )
    assert set(payload) == QUAY_FIELDS | {"event", "manifest_digests"}
    assert payload["event"] == "test"
    assert payload["updated_tags"] == {"latest": "0" * 64}
    assert payload["manifest_digests"] == ["sha256:" + "0" * 64]
    assert payload["pushed_image_count"] == 1
    assert payload["docker_url"] == "registry.example/acme/app"
    assert payload["homepage"] == "https://registry.example/repository/acme/app"
