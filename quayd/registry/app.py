"""
The registry HTTP API (OCI distribution / Docker Registry API v2) as a Klein app.

Handlers are thin: parse the path into value types, authorize through the one
seam, make one service call, render.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import cast
from urllib.parse import urlencode

from klein import Klein
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest
from twisted.web.server import Request
from werkzeug.exceptions import MethodNotAllowed as WerkzeugMethodNotAllowed
from werkzeug.exceptions import NotFound as WerkzeugNotFound
from werkzeug.routing import RequestRedirect

from quayd.auth.endpoint import TokenEndpoint
from quayd.auth.policy import Action, Authorizer
from quayd.db.store import MetadataStore
from quayd.errors import (
    BlobUnknown,
    BlobUploadInvalid,
    ManifestInvalid,
    ManifestUnknown,
    NameUnknown,
    RangeInvalid,
    RegistryError,
    TagInvalid,
    TooLarge,
    Unsupported,
)
from quayd.http.errors import MethodNotAllowed, NotFoundRoute, render_error
from quayd.registry.blobs import BlobProducer
from quayd.registry.manifests import OCI_INDEX, parse_manifest
from quayd.registry.uploads import (
    OpenUpload,
    UploadBodySink,
    UploadService,
    UploadSinkFactory,
    range_header,
    session_location,
)
from quayd.storage.interfaces import IBlobStore
from quayd.types import ByteRange, Digest, Reference, RepositoryName

API_VERSION_HEADER = (b"Docker-Distribution-API-Version", [b"registry/2.0"])
#: Largest C{n} honoured on list endpoints.
MAX_PAGE = 10000


def _client(request: IRequest) -> str:
    """The client's address, for throttling and logs."""
    return str(getattr(request.getClientAddress(), "host", "-"))


def _arg(request: IRequest, name: str) -> str | None:
    values = request.args.get(name.encode())
    return values[0].decode("utf-8", "replace") if values else None


def _mount_source(mount: str | None, source: str | None) -> RepositoryName | None:
    """The repository a mount names in C{from}, when it is a valid name."""
    if mount is None or source is None:
        return None
    try:
        return RepositoryName.parse(source)
    except RegistryError:
        return None


def _set(request: IRequest, name: str, value: str) -> None:
    request.responseHeaders.setRawHeaders(name.encode("latin-1"), [value.encode("latin-1")])


def _json(request: IRequest, document: object, status: int = 200) -> bytes:
    body = json.dumps(document, separators=(",", ":")).encode()
    request.setResponseCode(status)
    _set(request, "Content-Type", "application/json; charset=utf-8")
    _set(request, "Content-Length", str(len(body)))
    return body


class _HeaderProducer:
    """Stand-in producer for bodies that were buffered rather than streamed."""

    def pauseProducing(self) -> None:
        """Nothing to pause: the body is already in memory."""

    def resumeProducing(self) -> None:
        """Nothing to resume."""

    def stopProducing(self) -> None:
        """Nothing to stop."""


class RegistryApp:
    """
    The C{/v2} routes.
    """

    app = Klein()

    def __init__(
        self,
        *,
        store: MetadataStore,
        blobs: IBlobStore,
        uploads: UploadService,
        authorizer: Authorizer,
        max_manifest_bytes: int,
        delete_enabled: bool = True,
        auto_mount: bool = True,
        token_endpoint: TokenEndpoint | None = None,
        on_push: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._blobs = blobs
        self._uploads = uploads
        self._authorizer = authorizer
        self._max_manifest_bytes = max_manifest_bytes
        self._delete_enabled = delete_enabled
        self._auto_mount = auto_mount
        self._token_endpoint = token_endpoint
        self._on_push = on_push
        self.sink_factory = UploadSinkFactory(uploads, authorizer)

    # Errors

    @app.handle_errors(WerkzeugNotFound)
    def not_found(self, request: IRequest, failure: Failure) -> bytes:
        """Unknown paths answer with a JSON error."""
        request.responseHeaders.setRawHeaders(*API_VERSION_HEADER)
        return render_error(request, Failure(NotFoundRoute(f"no route for {request.path[:200]!r}")))

    @app.handle_errors(WerkzeugMethodNotAllowed)
    def not_allowed(self, request: IRequest, failure: Failure) -> bytes:
        """Known paths with the wrong method answer 405."""
        request.responseHeaders.setRawHeaders(*API_VERSION_HEADER)
        return render_error(request, Failure(MethodNotAllowed()))

    @app.handle_errors(RequestRedirect)
    def redirect(self, request: IRequest, failure: Failure) -> bytes:
        """werkzeug's canonical-URL redirects (a missing or extra slash) become a 308."""
        error = failure.value
        assert isinstance(error, RequestRedirect)
        request.setResponseCode(308)
        _set(request, "Location", error.new_url)
        _set(request, "Content-Length", "0")
        return b""

    @app.handle_errors(Exception)
    def error(self, request: IRequest, failure: Failure) -> bytes:
        """Every other failure goes through the one renderer."""
        request.responseHeaders.setRawHeaders(*API_VERSION_HEADER)
        return render_error(request, failure)

    # Base

    @app.route("/v2/", methods=["GET", "HEAD"], strict_slashes=False)
    async def base(self, request: IRequest) -> bytes:
        """The API version check clients start with."""
        request.responseHeaders.setRawHeaders(*API_VERSION_HEADER)
        await self._authorizer.authenticate(request.requestHeaders, _client(request), required=True)
        return _json(request, {})

    # Token authentication

    @app.route("/v2/auth", methods=["GET", "POST"])
    async def token(self, request: IRequest) -> bytes:
        """The Docker token endpoint (GET) and the OAuth2 password grant (POST)."""
        if self._token_endpoint is None:
            raise NotFoundRoute("this registry does not issue tokens")
        document = await self._token_endpoint.handle(request, _client(request))
        request.setHeader(b"Cache-Control", b"no-store")
        return _json(request, document)

    # Blobs

    @app.route("/v2/<path:name>/blobs/<digest>", methods=["GET", "HEAD"])
    async def get_blob(self, request: IRequest, name: str, digest: str) -> bytes | None:
        """Serve a blob (HEAD, GET, single Range, If-None-Match)."""
        repo = RepositoryName.parse(name)
        blob_digest = Digest.parse(digest)
        await self._authorizer.authorize(
            request.requestHeaders, repo, client=_client(request), actions=frozenset({Action.PULL})
        )
        record = await self._store.stat_blob(repo, blob_digest)
        if record is None:
            raise BlobUnknown(f"blob {blob_digest} is not in {repo}", detail={"digest": str(blob_digest)})
        request.responseHeaders.setRawHeaders(*API_VERSION_HEADER)
        _set(request, "Docker-Content-Digest", str(blob_digest))
        _set(request, "ETag", f'"{blob_digest}"')
        _set(request, "Accept-Ranges", "bytes")
        _set(request, "Cache-Control", "max-age=31536000")
        if request.method == b"HEAD":
            _set(request, "Content-Type", "application/octet-stream")
            _set(request, "Content-Length", str(record.size))
            return b""
        inm = request.getHeader(b"if-none-match")
        if inm is not None and f'"{blob_digest}"' in {v.strip() for v in inm.decode("latin-1").split(",")}:
            request.setResponseCode(304)
            return b""
        reader = await self._blobs.open(record.storage_key)
        offset, length = 0, reader.size
        range_value = request.getHeader(b"range")
        if range_value is not None:
            try:
                resolved = ByteRange.parse_request_range(range_value.decode("latin-1")).resolve(reader.size)
            except RangeInvalid:
                resolved = None
            if resolved is None:
                reader.close()
                raise RangeInvalid(
                    "requested range not satisfiable", headers={"Content-Range": f"bytes */{reader.size}"}
                )
            offset, length = resolved
            request.setResponseCode(206)
            _set(request, "Content-Range", f"bytes {offset}-{offset + length - 1}/{reader.size}")
        _set(request, "Content-Type", "application/octet-stream")
        _set(request, "Content-Length", str(length))
        if length == 0:
            reader.close()
            return b""
        await BlobProducer(cast(Request, request), reader, offset, length).start()
        return None

    # Uploads

    @app.route("/v2/<path:name>/blobs/uploads/", methods=["POST"], strict_slashes=False)
    async def start_upload(self, request: IRequest, name: str) -> bytes:
        """Start an upload session, mount a blob, or take a monolithic upload."""
        request.responseHeaders.setRawHeaders(*API_VERSION_HEADER)
        digest_arg = _arg(request, "digest")
        if digest_arg is not None:
            upload = await self._streamed_body(request)
            repo = upload.record.repository
            try:
                digest = Digest.parse(digest_arg)
            except RegistryError:
                await self._uploads.abandon(upload)
                raise
            try:
                blob = await self._uploads.complete(upload, digest)
            finally:
                self._uploads.release(upload.record.id)
            return self._created(request, repo, blob.digest)
        repo = RepositoryName.parse(name)
        mount = _arg(request, "mount")
        principal = await self._authorizer.authorize(
            request.requestHeaders,
            repo,
            client=_client(request),
            actions=frozenset({Action.PULL, Action.PUSH}),
            mount_from=_mount_source(mount, _arg(request, "from")),
        )
        await self._authorizer.claim(principal, repo)
        if mount is not None:
            mounted = await self._mount(
                request.requestHeaders, repo, Digest.parse(mount), _arg(request, "from"), _client(request)
            )
            if mounted:
                return self._created(request, repo, Digest.parse(mount))
        record = await self._uploads.start(repo)
        return self._accepted(request, repo, record.id, 0)

    async def _mount(
        self, headers: Headers, repo: RepositoryName, digest: Digest, source: str | None, client: str
    ) -> bool:
        if source is not None:
            candidates = [RepositoryName.parse(source)]
        elif self._auto_mount:
            candidates = await self._store.repositories_with_blob(digest)
        else:
            return False
        for candidate in candidates:
            try:
                await self._authorizer.authorize(headers, candidate, frozenset({Action.PULL}), client)
            except RegistryError:
                continue
            record = await self._store.stat_blob(candidate, digest)
            if record is not None:
                await self._store.commit_blob(repo, digest, record.size, record.storage_key)
                return True
        return False

    def _created(self, request: IRequest, repo: RepositoryName, digest: Digest) -> bytes:
        request.setResponseCode(201)
        _set(request, "Location", f"/v2/{repo}/blobs/{digest}")
        _set(request, "Docker-Content-Digest", str(digest))
        _set(request, "Content-Length", "0")
        return b""

    def _accepted(self, request: IRequest, repo: RepositoryName, upload_id: str, size: int) -> bytes:
        request.setResponseCode(202)
        _set(request, "Location", session_location(repo, upload_id))
        _set(request, "Docker-Upload-UUID", upload_id)
        _set(request, "Range", range_header(size))
        _set(request, "Content-Length", "0")
        return b""

    async def _streamed_body(self, request: IRequest) -> OpenUpload:
        """
        The upload the request's body was streamed into.

        Bodies that were buffered instead (for example over HTTP/2) are fed
        through the same sink here.
        """
        sink = getattr(request, "body_sink", None)
        if not isinstance(sink, UploadBodySink):
            factory_sink = self.sink_factory(
                request.method,
                request.uri,
                request.requestHeaders,
                None,
                _HeaderProducer(),  # type: ignore[arg-type]  # structural IPushProducer
            )
            if factory_sink is None:
                raise BlobUploadInvalid("request body could not be attached to an upload")
            sink = factory_sink
            request.content.seek(0)
            while chunk := request.content.read(1 << 20):
                sink.write(chunk)
            sink.finish()
        return await sink.result

    @app.route("/v2/<path:name>/blobs/uploads/<upload_id>", methods=["PATCH"])
    async def patch_upload(self, request: IRequest, name: str, upload_id: str) -> bytes:
        """Append a chunk (or the whole stream) to an upload session."""
        request.responseHeaders.setRawHeaders(*API_VERSION_HEADER)
        upload = await self._streamed_body(request)
        repo = upload.record.repository
        try:
            record = await self._uploads.checkpoint(upload)
        finally:
            self._uploads.release(upload.record.id)
        return self._accepted(request, repo, record.id, record.committed_size)

    @app.route("/v2/<path:name>/blobs/uploads/<upload_id>", methods=["PUT"])
    async def put_upload(self, request: IRequest, name: str, upload_id: str) -> bytes:
        """Finish an upload session (with or without a final chunk)."""
        request.responseHeaders.setRawHeaders(*API_VERSION_HEADER)
        digest_arg = _arg(request, "digest")
        upload = await self._streamed_body(request)
        repo = upload.record.repository
        try:
            if digest_arg is None:
                raise BlobUploadInvalid("the digest query parameter is required to finish an upload")
            digest = Digest.parse(digest_arg)
            record = await self._uploads.complete(upload, digest)
        except BaseException:
            await self._uploads.forget_writer(upload.record.id)
            raise
        finally:
            self._uploads.release(upload.record.id)
        return self._created(request, repo, record.digest)

    @app.route("/v2/<path:name>/blobs/uploads/<upload_id>", methods=["GET"])
    async def upload_status(self, request: IRequest, name: str, upload_id: str) -> bytes:
        """Report how much of an upload session has been received."""
        repo = RepositoryName.parse(name)
        await self._authorizer.authorize(
            request.requestHeaders,
            repo,
            client=_client(request),
            actions=frozenset({Action.PULL, Action.PUSH}),
        )
        record = await self._uploads.status(repo, upload_id)
        request.responseHeaders.setRawHeaders(*API_VERSION_HEADER)
        self._accepted(request, repo, record.id, record.committed_size)
        request.setResponseCode(204)
        return b""

    @app.route("/v2/<path:name>/blobs/uploads/<upload_id>", methods=["DELETE"])
    async def cancel_upload(self, request: IRequest, name: str, upload_id: str) -> bytes:
        """Cancel an upload session."""
        repo = RepositoryName.parse(name)
        await self._authorizer.authorize(
            request.requestHeaders,
            repo,
            client=_client(request),
            actions=frozenset({Action.PULL, Action.PUSH}),
        )
        await self._uploads.cancel(repo, upload_id)
        request.responseHeaders.setRawHeaders(*API_VERSION_HEADER)
        request.setResponseCode(204)
        return b""

    # Manifests

    @app.route("/v2/<path:name>/manifests/<reference>", methods=["GET", "HEAD"])
    async def get_manifest(self, request: IRequest, name: str, reference: str) -> bytes:
        """Serve a manifest's exact bytes by tag or digest."""
        repo = RepositoryName.parse(name)
        try:
            ref = Reference.parse(reference)
        except TagInvalid:
            # No manifest can exist under a name outside the tag grammar.
            raise ManifestUnknown(f"manifest {reference[:200]!r} is not in {repo}") from None
        await self._authorizer.authorize(
            request.requestHeaders, repo, client=_client(request), actions=frozenset({Action.PULL})
        )
        if ref.digest is not None:
            record = await self._store.get_manifest_by_digest(repo, ref.digest)
        else:
            assert ref.tag is not None
            record = await self._store.get_manifest_by_tag(repo, ref.tag)
        if record is None:
            raise ManifestUnknown(f"manifest {ref} is not in {repo}", detail={"reference": str(ref)})
        accepted = _accepted_types(request)
        if accepted is not None and record.media_type not in accepted:
            raise ManifestUnknown(
                f"manifest {ref} is a {record.media_type}, which the Accept header does not include",
                detail={"reference": str(ref), "mediaType": record.media_type},
            )
        request.responseHeaders.setRawHeaders(*API_VERSION_HEADER)
        _set(request, "Content-Type", record.media_type)
        _set(request, "Content-Length", str(record.size))
        _set(request, "Docker-Content-Digest", str(record.digest))
        _set(request, "ETag", f'"{record.digest}"')
        if request.method == b"HEAD":
            return b""
        return record.content

    @app.route("/v2/<path:name>/manifests/<reference>", methods=["PUT"])
    async def put_manifest(self, request: IRequest, name: str, reference: str) -> bytes:
        """Store a manifest and, for a tag reference, point the tag at it."""
        repo = RepositoryName.parse(name)
        ref = Reference.parse(reference)
        principal = await self._authorizer.authorize(
            request.requestHeaders,
            repo,
            client=_client(request),
            actions=frozenset({Action.PULL, Action.PUSH}),
        )
        await self._authorizer.claim(principal, repo)
        if getattr(request, "body_too_large", False):
            raise TooLarge(f"manifest exceeds {self._max_manifest_bytes} bytes")
        content = request.content.read(self._max_manifest_bytes + 1)
        if len(content) > self._max_manifest_bytes:
            raise TooLarge(f"manifest exceeds {self._max_manifest_bytes} bytes")
        content_type = request.getHeader(b"content-type")
        manifest = parse_manifest(content, content_type.decode("latin-1") if content_type else None)
        if ref.digest is not None and ref.digest != manifest.digest:
            if ref.digest.algorithm != manifest.digest.algorithm:
                raise Unsupported(f"manifests are addressed by sha256, not {ref.digest.algorithm}")
            raise ManifestInvalid(
                f"manifest digest {manifest.digest} does not match reference {ref.digest}",
                detail={"expected": str(ref.digest), "actual": str(manifest.digest)},
            )
        queued = await self._store.put_manifest(repo, manifest, content, ref.tag, principal.subject)
        if queued and self._on_push is not None:
            self._on_push()
        request.responseHeaders.setRawHeaders(*API_VERSION_HEADER)
        request.setResponseCode(201)
        _set(request, "Location", f"/v2/{repo}/manifests/{manifest.digest}")
        _set(request, "Docker-Content-Digest", str(manifest.digest))
        _set(request, "Content-Length", "0")
        if manifest.subject is not None:
            _set(request, "OCI-Subject", str(manifest.subject.digest))
        return b""

    # Tags

    @app.route("/v2/<path:name>/tags/list", methods=["GET"])
    async def list_tags(self, request: IRequest, name: str) -> bytes:
        """List tags in lexical order, with C{n}/C{last} pagination and a C{Link} header."""
        repo = RepositoryName.parse(name)
        await self._authorizer.authorize(
            request.requestHeaders, repo, client=_client(request), actions=frozenset({Action.PULL})
        )
        if not await self._store.repository_exists(repo):
            raise NameUnknown(f"repository {repo} is not known", detail={"name": str(repo)})
        n, last = _page(request)
        tags = [] if n == 0 else await self._store.list_tags(repo, last, None if n is None else n + 1)
        more = n is not None and len(tags) > n
        tags = tags[:n] if n is not None else tags
        if more:
            query = urlencode({"n": n, "last": tags[-1]})
            _set(request, "Link", f'</v2/{repo}/tags/list?{query}>; rel="next"')
        request.responseHeaders.setRawHeaders(*API_VERSION_HEADER)
        return _json(request, {"name": str(repo), "tags": tags})

    @app.route("/v2/<path:name>/manifests/<reference>", methods=["DELETE"])
    async def delete_manifest(self, request: IRequest, name: str, reference: str) -> bytes:
        """Delete a manifest by digest (with its tags), or just a tag."""
        repo = RepositoryName.parse(name)
        ref = Reference.parse(reference)
        await self._authorizer.authorize(
            request.requestHeaders, repo, client=_client(request), actions=frozenset({Action.DELETE})
        )
        if not self._delete_enabled:
            raise Unsupported("deletion is disabled on this registry")
        if ref.digest is not None:
            found = await self._store.delete_manifest(repo, ref.digest)
        else:
            assert ref.tag is not None
            found = await self._store.delete_tag(repo, ref.tag)
        if not found:
            raise ManifestUnknown(f"manifest {ref} is not in {repo}", detail={"reference": str(ref)})
        request.responseHeaders.setRawHeaders(*API_VERSION_HEADER)
        request.setResponseCode(202)
        _set(request, "Content-Length", "0")
        return b""

    @app.route("/v2/<path:name>/blobs/<digest>", methods=["DELETE"])
    async def delete_blob(self, request: IRequest, name: str, digest: str) -> bytes:
        """Remove a blob from a repository."""
        repo = RepositoryName.parse(name)
        blob_digest = Digest.parse(digest)
        await self._authorizer.authorize(
            request.requestHeaders, repo, client=_client(request), actions=frozenset({Action.DELETE})
        )
        if not self._delete_enabled:
            raise Unsupported("deletion is disabled on this registry")
        if not await self._store.unlink_blob(repo, blob_digest):
            raise BlobUnknown(f"blob {blob_digest} is not in {repo}", detail={"digest": str(blob_digest)})
        request.responseHeaders.setRawHeaders(*API_VERSION_HEADER)
        request.setResponseCode(202)
        _set(request, "Content-Length", "0")
        return b""

    # Referrers

    @app.route("/v2/<path:name>/referrers/<digest>", methods=["GET"])
    async def referrers(self, request: IRequest, name: str, digest: str) -> bytes:
        """An OCI image index of the manifests whose subject is C{digest}."""
        repo = RepositoryName.parse(name)
        subject = Digest.parse(digest)
        await self._authorizer.authorize(
            request.requestHeaders, repo, client=_client(request), actions=frozenset({Action.PULL})
        )
        wanted = _arg(request, "artifactType")
        descriptors = []
        for record in await self._store.referrers(repo, subject):
            if wanted is not None and record.artifact_type != wanted:
                continue
            descriptor: dict[str, object] = {
                "mediaType": record.media_type,
                "digest": str(record.digest),
                "size": record.size,
            }
            if record.artifact_type is not None:
                descriptor["artifactType"] = record.artifact_type
            annotations = _annotations(record.content)
            if annotations:
                descriptor["annotations"] = annotations
            descriptors.append(descriptor)
        request.responseHeaders.setRawHeaders(*API_VERSION_HEADER)
        if wanted is not None:
            _set(request, "OCI-Filters-Applied", "artifactType")
        body = _json(request, {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors})
        _set(request, "Content-Type", OCI_INDEX)
        return body

    # Catalog

    @app.route("/v2/_catalog", methods=["GET"])
    async def catalog(self, request: IRequest) -> bytes:
        """Repositories the principal may pull, lexically, with C{n}/C{last} pagination."""
        principal = await self._authorizer.authenticate(request.requestHeaders, _client(request))
        n, last = _page(request)
        names: list[str] = []
        cursor = last
        while n != 0 and (n is None or len(names) <= n):
            batch = await self._store.list_repositories(cursor, 500)
            if not batch:
                break
            for candidate in batch:
                if await self._authorizer.may_list(principal, RepositoryName(candidate)):
                    names.append(candidate)
            cursor = batch[-1]
            if n is None and len(batch) < 500:
                break
        more = n is not None and len(names) > n
        names = names[:n] if n is not None else names
        if more:
            query = urlencode({"n": n, "last": names[-1]})
            _set(request, "Link", f'</v2/_catalog?{query}>; rel="next"')
        request.responseHeaders.setRawHeaders(*API_VERSION_HEADER)
        return _json(request, {"repositories": names})

    def resource(self) -> object:
        """The twisted.web resource serving these routes."""
        return self.app.resource()


def _annotations(content: bytes) -> dict[str, str]:
    """The annotations of a stored (already validated) manifest."""
    document = json.loads(content)
    annotations = document.get("annotations") if isinstance(document, dict) else None
    return annotations if isinstance(annotations, dict) else {}


def _accepted_types(request: IRequest) -> set[str] | None:
    """
    The media types the client accepts, or C{None} when it accepts anything
    (no C{Accept} header, or a wildcard).
    """
    values = request.requestHeaders.getRawHeaders(b"accept")
    if not values:
        return None
    types = set()
    for value in values:
        for item in value.decode("latin-1").split(","):
            media_type = item.split(";", 1)[0].strip().lower()
            if media_type in ("*/*", "application/*"):
                return None
            if media_type:
                types.add(media_type)
    return types or None


def _page(request: IRequest) -> tuple[int | None, str | None]:
    """
    Parse C{n} and C{last}.

    @raise RegistryError: 400 C{PAGINATION_NUMBER_INVALID} for a malformed C{n}.
    """
    n_arg = _arg(request, "n")
    n: int | None = None
    if n_arg is not None:
        if not n_arg.isdigit():
            raise PaginationNumberInvalid(f"invalid n {n_arg[:50]!r}")
        n = min(int(n_arg), MAX_PAGE)
    return n, _arg(request, "last")


class PaginationNumberInvalid(RegistryError):
    """The C{n} parameter is not a non-negative integer."""

    code = "PAGINATION_NUMBER_INVALID"
    status = 400
    default_message = "invalid number of results requested"
