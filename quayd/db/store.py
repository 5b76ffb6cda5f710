"""
The metadata store: use-case-level operations, each one transaction.

Records returned are frozen; no cursor ever leaves this module. The SQL is the
subset SQLite and PostgreSQL share, with C{?} placeholders.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from quayd.db.interfaces import IDatabase, Row, Transaction
from quayd.errors import ManifestBlobUnknown, ManifestReferenced, ManifestUnknown
from quayd.registry.manifests import ParsedManifest
from quayd.types import Digest, RepositoryName, Tag


class ManifestChildUnknown(ManifestUnknown):
    """An index or manifest list names a child manifest the repository lacks."""

    status = 400


@dataclass(frozen=True, slots=True, kw_only=True)
class BlobRecord:
    """A committed blob as the database knows it."""

    digest: Digest
    size: int
    storage_key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadRecord:
    """An upload session; C{committed_size} bytes of it are durably staged."""

    id: str
    repository: RepositoryName
    committed_size: int
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ManifestRecord:
    """A stored manifest with its exact bytes."""

    digest: Digest
    media_type: str
    content: bytes
    size: int
    artifact_type: str | None
    subject: Digest | None


def _blob(row: Row) -> BlobRecord:
    return BlobRecord(digest=Digest.parse(row[0]), size=int(row[1]), storage_key=str(row[2]))


def _upload(row: Row) -> UploadRecord:
    return UploadRecord(
        id=row[0],
        repository=RepositoryName(row[1]),
        committed_size=int(row[2]),
        created_at=float(row[3]),
        updated_at=float(row[4]),
    )


def _manifest(row: Row) -> ManifestRecord:
    return ManifestRecord(
        digest=Digest.parse(row[0]),
        media_type=row[1],
        content=bytes(row[2]),
        size=int(row[3]),
        artifact_type=row[4],
        subject=Digest.parse(row[5]) if row[5] else None,
    )


_MANIFEST_COLUMNS = "digest, media_type, content, size, artifact_type, subject"
#: The same columns of the table aliased C{m}.
_M_MANIFEST_COLUMNS = ", ".join(f"m.{column}" for column in _MANIFEST_COLUMNS.split(", "))
_UPLOAD_COLUMNS = "id, repository, committed_size, created_at, updated_at"

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: Most lookups one coalesced query answers.
LOOKUP_BATCH = 200


class Coalescer(Generic[K, V]):
    """
    Answers concurrent lookups with one query per batch.

    A lookup joins the batch that has not started yet; while one batch's query
    runs, new lookups queue for the next one, which starts as soon as the
    running one is answered. So a lookup is always answered by a query that
    started after it was asked: it sees every change committed before, in
    this process or any other, exactly as its own query would. Nothing is
    remembered between batches. Under load, one query answers many requests
    (and a key asked for several times in one batch is looked up once); an
    idle server runs each lookup at once, as before.
    """

    def __init__(
        self, fetch: Callable[[Sequence[K]], Awaitable[Mapping[K, V]]], limit: int = LOOKUP_BATCH
    ) -> None:
        """
        @param fetch: Looks up distinct keys in one query; returns the values
            found (keys not found are absent).
        @param limit: Most keys per query.
        """
        self._fetch = fetch
        self._limit = limit
        self._queued: dict[K, list[Deferred[V | None]]] = {}
        self._running = False

    def get(self, key: K) -> Deferred[V | None]:
        """
        Look C{key} up in the next batch.

        @return: A Deferred firing with the value, or C{None} if there is none.
        """
        d: Deferred[V | None] = Deferred()
        self._queued.setdefault(key, []).append(d)
        if not self._running:
            self._running = True
            Deferred.fromCoroutine(self._drain())
        return d

    async def _drain(self) -> None:
        """Run batches until no lookup is queued."""
        try:
            while self._queued:
                keys = list(self._queued)[: self._limit]
                batch = {key: self._queued.pop(key) for key in keys}
                try:
                    found = await self._fetch(keys)
                except BaseException:
                    failure = Failure()
                    for waiters in batch.values():
                        for d in waiters:
                            if not d.called:  # not cancelled
                                d.errback(failure)
                    continue
                for key, waiters in batch.items():
                    value = found.get(key)
                    for d in waiters:
                        if not d.called:  # not cancelled
                            d.callback(value)
        finally:
            self._running = False


#: A manifest lookup: by tag (C{True}) or digest, repository name, and the tag or digest.
_ManifestKey = tuple[bool, str, str]


def _manifest_lookup_sql(keys: Sequence[_ManifestKey]) -> tuple[str, list[object]]:
    """
    One statement finding the manifests of C{keys}, by digest and by tag
    (through the tag row, so a tag resolves to the manifest it names when the
    statement runs). Each row starts with the lookup's key.
    """
    groups: tuple[dict[str, list[str]], dict[str, list[str]]] = ({}, {})
    for by_tag, repository, reference in keys:
        groups[by_tag].setdefault(repository, []).append(reference)
    parts: list[str] = []
    args: list[object] = []
    for kind, group in enumerate(groups):
        if not group:
            continue
        conditions: list[str] = []
        for repository, references in group.items():
            marks = ", ".join("?" for _ in references)
            if kind:
                conditions.append(f"(t.repository = ? AND t.name IN ({marks}))")
            else:
                conditions.append(f"(m.repository = ? AND m.digest IN ({marks}))")
            args.append(repository)
            args.extend(references)
        where = " OR ".join(conditions)
        if kind:
            parts.append(
                f"SELECT 1, t.repository, t.name, {_M_MANIFEST_COLUMNS} FROM tag t JOIN manifest m "
                f"ON m.repository = t.repository AND m.digest = t.manifest_digest WHERE {where}"
            )
        else:
            parts.append(
                f"SELECT 0, m.repository, m.digest, {_M_MANIFEST_COLUMNS} FROM manifest m WHERE {where}"
            )
    return " UNION ALL ".join(parts), args


class MetadataStore:
    """
    Registry metadata over an L{IDatabase}.
    """

    def __init__(self, database: IDatabase, clock: IReactorTime) -> None:
        self._db = database
        self._clock = clock
        self._manifests: Coalescer[_ManifestKey, ManifestRecord] = Coalescer(self._find_manifests)

    async def _ensure_repository(self, txn: Transaction, repo: RepositoryName) -> None:
        await txn.execute(
            "INSERT INTO repository (name, created_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
            (str(repo), self._clock.seconds()),
        )

    # Uploads

    async def create_upload(self, repo: RepositoryName, upload_id: str) -> UploadRecord:
        """Record a new, empty upload session (creating the repository if needed)."""
        now = self._clock.seconds()

        async def body(txn: Transaction) -> UploadRecord:
            await self._ensure_repository(txn, repo)
            rows = await txn.execute(
                f"INSERT INTO upload ({_UPLOAD_COLUMNS}) VALUES (?, ?, 0, ?, ?) RETURNING {_UPLOAD_COLUMNS}",
                (upload_id, str(repo), now, now),
            )
            return _upload(rows[0])

        return await self._db.run_interaction(body)

    async def get_upload(self, repo: RepositoryName, upload_id: str) -> UploadRecord | None:
        """Find an upload session of C{repo}."""

        rows = await self._db.execute(
            f"SELECT {_UPLOAD_COLUMNS} FROM upload WHERE id = ? AND repository = ?", (upload_id, str(repo))
        )
        return _upload(rows[0]) if rows else None

    async def advance_upload(self, upload_id: str, expected_size: int, new_size: int) -> bool:
        """
        Record that the session's staged bytes now durably reach C{new_size}.

        @return: C{False} if the session is gone or was advanced by someone else.
        """

        rows = await self._db.execute(
            "UPDATE upload SET committed_size = ?, updated_at = ? "
            "WHERE id = ? AND committed_size = ? RETURNING id",
            (new_size, self._clock.seconds(), upload_id, expected_size),
        )
        return bool(rows)

    async def delete_upload(self, upload_id: str) -> bool:
        """Forget an upload session; C{False} if it did not exist."""

        rows = await self._db.execute("DELETE FROM upload WHERE id = ? RETURNING id", (upload_id,))
        return bool(rows)

    async def stale_uploads(self, older_than: float) -> list[UploadRecord]:
        """Upload sessions not touched since C{older_than} (reactor seconds)."""

        rows = await self._db.execute(
            f"SELECT {_UPLOAD_COLUMNS} FROM upload WHERE updated_at < ? ORDER BY updated_at", (older_than,)
        )
        return [_upload(r) for r in rows]

    async def existing_uploads(self, upload_ids: list[str]) -> set[str]:
        """Which of C{upload_ids} have a session row."""
        found: set[str] = set()
        for start in range(0, len(upload_ids), 500):
            batch = upload_ids[start : start + 500]
            marks = ", ".join("?" for _ in batch)
            rows = await self._db.execute(f"SELECT id FROM upload WHERE id IN ({marks})", batch)
            found.update(r[0] for r in rows)
        return found

    # Blobs

    async def commit_blob(
        self,
        repo: RepositoryName,
        digest: Digest,
        size: int,
        storage_key: str,
        upload_id: str | None = None,
    ) -> BlobRecord:
        """
        Record a committed blob, link it to C{repo} and end the upload session.

        If the blob was already known, the existing record wins (its storage
        key stays).
        """
        now = self._clock.seconds()

        async def body(txn: Transaction) -> BlobRecord:
            await self._ensure_repository(txn, repo)
            await txn.execute(
                "INSERT INTO blob (digest, size, storage_key, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (digest) DO NOTHING",
                (str(digest), size, storage_key, now),
            )
            await txn.execute(
                "INSERT INTO repository_blob (repository, digest, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (repository, digest) DO NOTHING",
                (str(repo), str(digest), now),
            )
            if upload_id is not None:
                await txn.execute("DELETE FROM upload WHERE id = ?", (upload_id,))
            rows = await txn.execute(
                "SELECT digest, size, storage_key FROM blob WHERE digest = ?", (str(digest),)
            )
            return _blob(rows[0])

        return await self._db.run_interaction(body)

    async def stat_blob(self, repo: RepositoryName, digest: Digest) -> BlobRecord | None:
        """A blob linked to C{repo}, or C{None}."""

        rows = await self._db.execute(
            "SELECT b.digest, b.size, b.storage_key FROM repository_blob rb "
            "JOIN blob b ON b.digest = rb.digest WHERE rb.repository = ? AND rb.digest = ?",
            (str(repo), str(digest)),
        )
        return _blob(rows[0]) if rows else None

    async def find_blob(self, digest: Digest) -> BlobRecord | None:
        """A committed blob in any repository, or C{None}."""

        rows = await self._db.execute(
            "SELECT digest, size, storage_key FROM blob WHERE digest = ?", (str(digest),)
        )
        return _blob(rows[0]) if rows else None

    # Manifests and tags

    async def put_manifest(
        self,
        repo: RepositoryName,
        manifest: ParsedManifest,
        content: bytes,
        tag: Tag | None,
        principal: str = "anonymous",
    ) -> bool:
        """
        Store a manifest and move C{tag} to it, in one transaction; if the
        repository has webhooks, the same transaction queues the push in the
        outbox, so an acknowledged push is never lost.

        @param principal: Who pushed (push events are coalesced per principal).
        @return: Whether a push event was queued.

        @raise ManifestBlobUnknown: If a referenced blob is not linked to C{repo}.
        @raise ManifestChildUnknown: If a referenced child manifest is not in C{repo}.
        """
        now = self._clock.seconds()
        digest = str(manifest.digest)
        name = str(repo)

        async def body(txn: Transaction) -> bool:
            await self._ensure_repository(txn, repo)
            for blob in dict.fromkeys(manifest.required_blobs):
                rows = await txn.execute(
                    "SELECT 1 FROM repository_blob WHERE repository = ? AND digest = ?", (name, str(blob))
                )
                if not rows:
                    raise ManifestBlobUnknown(
                        f"blob {blob} is not in repository {name}", detail={"digest": str(blob)}
                    )
            for child in dict.fromkeys(manifest.required_manifests):
                rows = await txn.execute(
                    "SELECT 1 FROM manifest WHERE repository = ? AND digest = ?", (name, str(child))
                )
                if not rows:
                    raise ManifestChildUnknown(
                        f"manifest {child} is not in repository {name}", detail={"digest": str(child)}
                    )
            inserted = await txn.execute(
                "INSERT INTO manifest (repository, digest, media_type, content, size, artifact_type, "
                "subject, config_digest, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (repository, digest) DO NOTHING RETURNING digest",
                (
                    name,
                    digest,
                    manifest.media_type,
                    content,
                    len(content),
                    manifest.artifact_type,
                    str(manifest.subject.digest) if manifest.subject is not None else None,
                    str(manifest.config.digest) if manifest.config is not None else None,
                    now,
                ),
            )
            if inserted:
                for blob in dict.fromkeys(manifest.required_blobs):
                    await txn.execute(
                        "INSERT INTO manifest_blob (repository, manifest_digest, blob_digest) "
                        "VALUES (?, ?, ?)",
                        (name, digest, str(blob)),
                    )
                for child in dict.fromkeys(manifest.required_manifests):
                    await txn.execute(
                        "INSERT INTO manifest_child (repository, parent_digest, child_digest) "
                        "VALUES (?, ?, ?)",
                        (name, digest, str(child)),
                    )
            if tag is not None:
                await txn.execute(
                    "INSERT INTO tag (repository, name, manifest_digest, updated_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (repository, name) DO UPDATE SET "
                    "manifest_digest = excluded.manifest_digest, updated_at = excluded.updated_at",
                    (name, str(tag), digest, now),
                )
            hooks = await txn.execute("SELECT 1 FROM webhook WHERE repository = ? LIMIT 1", (name,))
            if not hooks:
                return False
            visibility = await txn.execute("SELECT visibility FROM repository WHERE name = ?", (name,))
            image = manifest.config.digest if manifest.config is not None else manifest.digest
            await txn.execute(
                "INSERT INTO push_outbox (repository, principal, manifest_digest, tag, image_id, visibility, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    name,
                    principal,
                    digest,
                    None if tag is None else str(tag),
                    image.hex,
                    visibility[0][0],
                    now,
                ),
            )
            return True

        return await self._db.run_interaction(body)

    async def get_manifest_by_digest(self, repo: RepositoryName, digest: Digest) -> ManifestRecord | None:
        """
        The manifest with C{digest} in C{repo}, or C{None}.

        Concurrent lookups (by digest and by tag) share one query; see L{Coalescer}.
        """
        return await self._manifests.get((False, str(repo), str(digest)))

    async def get_manifest_by_tag(self, repo: RepositoryName, tag: Tag) -> ManifestRecord | None:
        """
        The manifest C{tag} points to in C{repo}, or C{None}.

        Concurrent lookups (by digest and by tag) share one query; see L{Coalescer}.
        """
        return await self._manifests.get((True, str(repo), str(tag)))

    async def _find_manifests(self, keys: Sequence[_ManifestKey]) -> dict[_ManifestKey, ManifestRecord]:
        """Look manifests up by digest and by tag, in one statement."""
        sql, args = _manifest_lookup_sql(keys)
        rows = await self._db.execute(sql, args)
        return {(bool(row[0]), str(row[1]), str(row[2])): _manifest(row[3:]) for row in rows}

    async def repository_exists(self, repo: RepositoryName) -> bool:
        """Whether C{repo} is known."""

        rows = await self._db.execute("SELECT 1 FROM repository WHERE name = ?", (str(repo),))
        return bool(rows)

    async def list_tags(
        self, repo: RepositoryName, last: str | None = None, n: int | None = None
    ) -> list[str]:
        """
        Tags of C{repo} in lexical order, after C{last}, at most C{n}.
        """

        async def body(txn: Transaction) -> list[str]:
            sql = "SELECT name FROM tag WHERE repository = ?"
            args: list[object] = [str(repo)]
            if last is not None:
                sql += " AND name > ?"
                args.append(last)
            sql += " ORDER BY name"
            if n is not None:
                sql += " LIMIT ?"
                args.append(n)
            rows = await txn.execute(sql, args)
            return [r[0] for r in rows]

        return await self._db.run_interaction(body)

    async def list_repositories(self, last: str | None = None, n: int | None = None) -> list[str]:
        """Repository names in lexical order, after C{last}, at most C{n}."""
        sql = "SELECT name FROM repository"
        args: list[object] = []
        if last is not None:
            sql += " WHERE name > ?"
            args.append(last)
        sql += " ORDER BY name"
        if n is not None:
            sql += " LIMIT ?"
            args.append(n)
        rows = await self._db.execute(sql, args)
        return [r[0] for r in rows]

    async def repositories_with_blob(self, digest: Digest, limit: int = 20) -> list[RepositoryName]:
        """Some repositories the blob C{digest} is linked to."""
        rows = await self._db.execute(
            "SELECT repository FROM repository_blob WHERE digest = ? ORDER BY repository LIMIT ?",
            (str(digest), limit),
        )
        return [RepositoryName(r[0]) for r in rows]

    async def referrers(self, repo: RepositoryName, subject: Digest) -> list[ManifestRecord]:
        """Manifests of C{repo} whose C{subject} is C{subject}, oldest first."""
        rows = await self._db.execute(
            f"SELECT {_MANIFEST_COLUMNS} FROM manifest WHERE repository = ? AND subject = ? "
            "ORDER BY created_at, digest",
            (str(repo), str(subject)),
        )
        return [_manifest(r) for r in rows]

    async def delete_manifest(self, repo: RepositoryName, digest: Digest) -> bool:
        """
        Delete a manifest and every tag pointing at it.

        @return: C{False} if there was no such manifest.
        @raise ManifestReferenced: If an index in C{repo} still lists it.
        """
        name = str(repo)

        async def body(txn: Transaction) -> bool:
            parents = await txn.execute(
                "SELECT parent_digest FROM manifest_child WHERE repository = ? AND child_digest = ? LIMIT 1",
                (name, str(digest)),
            )
            if parents:
                raise ManifestReferenced(
                    f"manifest {digest} is referenced by index {parents[0][0]}; delete the index first",
                    detail={"index": parents[0][0]},
                )
            await txn.execute(
                "DELETE FROM tag WHERE repository = ? AND manifest_digest = ?", (name, str(digest))
            )
            rows = await txn.execute(
                "DELETE FROM manifest WHERE repository = ? AND digest = ? RETURNING digest",
                (name, str(digest)),
            )
            return bool(rows)

        return await self._db.run_interaction(body)

    async def delete_tag(self, repo: RepositoryName, tag: Tag) -> bool:
        """Delete a tag (the manifest stays); C{False} if there was no such tag."""
        rows = await self._db.execute(
            "DELETE FROM tag WHERE repository = ? AND name = ? RETURNING name", (str(repo), str(tag))
        )
        return bool(rows)

    async def unlink_blob(self, repo: RepositoryName, digest: Digest) -> bool:
        """
        Remove a blob from C{repo}; its bytes stay until garbage collection.

        Manifests that still name it keep their reference (the spec lets a
        client delete a blob regardless); pulling such a manifest's blob then
        answers C{BLOB_UNKNOWN}.

        @return: C{False} if the blob was not linked to C{repo}.
        """
        rows = await self._db.execute(
            "DELETE FROM repository_blob WHERE repository = ? AND digest = ? RETURNING digest",
            (str(repo), str(digest)),
        )
        return bool(rows)
