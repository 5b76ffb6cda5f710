"""
The oras-py SDK (the C{oras} package on PyPI) as a small typed helper for the
end-to-end tests.

oras-py ships no type information, and the typing environment does not
install it, so it is imported at run time with L{importlib} and what it
returns is read through the protocols here. A missing C{oras} makes the test
skip, or fail under CI (see L{tests.support.clients.skip_or_fail}).

oras-py reads credentials from C{~/.docker/config.json} on every push and pull
(besides the file it is given), so a test points C{HOME} at a scratch
directory: the host's file is then neither read nor written.

The client authenticates with oras-py's C{basic} backend: Basic credentials,
resent after each 401, which quayd accepts on the C{/v2} routes. oras-py's
default C{token} backend cannot push to a registry that scopes its tokens (as
the distribution token spec does): it keeps the first token it gets, granted
for the C{pull} scope of the opening C{HEAD}, and on the next 401 (its
challenge asks for C{pull,push} with C{error="insufficient_scope"}) it resends
that same token instead of fetching one for the new scope (oras 0.2.43,
C{TokenAuth.authenticate_request}).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Protocol

from tests.support.clients import Descriptor, JSONValue, skip_or_fail
from tests.support.identity import Login


class _Response(Protocol):
    """
    The parts of a C{requests.Response} the helper reads.
    """

    status_code: int
    headers: Mapping[str, str]
    content: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class _OrasModules:
    """
    The oras-py modules the helper uses.

    @ivar client: C{oras.client}, with C{OrasClient}.
    @ivar oci: C{oras.oci}, with C{Subject} and C{NewLayer}.
    """

    client: ModuleType
    oci: ModuleType


def _import_oras() -> _OrasModules:
    """
    Import oras-py, or skip (fail under CI) the test when it is not installed.

    @return: The modules the helper needs.
    """
    try:
        return _OrasModules(
            client=importlib.import_module("oras.client"), oci=importlib.import_module("oras.oci")
        )
    except ImportError as error:
        skip_or_fail(f"the oras Python package is not installed ({error})")


def require_oras() -> None:
    """
    Skip (fail under CI) the test unless oras-py can be imported; a fixture
    calls it before any quayd is started, so a skip costs nothing.
    """
    _import_oras()


class OrasError(Exception):
    """
    oras-py got an unexpected answer from the registry.
    """


@dataclass(frozen=True, slots=True, kw_only=True)
class PushedManifest:
    """
    What the registry answered to a manifest C{PUT} that oras-py sent.

    @ivar status: The HTTP status (201 on success).
    @ivar digest: The C{Docker-Content-Digest} header, if any.
    @ivar subject: The C{OCI-Subject} header (the subject's digest), if any.
    @ivar body: The response body, for failure messages.
    """

    status: int
    digest: str | None
    subject: str | None
    body: bytes


class OrasRegistry:
    """
    An oras-py client for one plain-HTTP registry, with a credentials file of its own.
    """

    def __init__(self, hostport: str, auth_file: Path) -> None:
        """
        @param hostport: The registry's C{host:port}; spoken to over plain HTTP
            (C{insecure=True}).
        @param auth_file: The Docker-style config file that L{login} writes
            the credentials to and that every push and pull reads them from.
        """
        modules = _import_oras()
        self.hostport = hostport
        self.auth_file = auth_file
        self._oci = modules.oci
        self._client = modules.client.OrasClient(hostname=hostport, insecure=True, auth_backend="basic")

    def login(self, login: Login) -> None:
        """
        Log in as oras-py does: keep the credentials for this client and store
        them in L{auth_file} (without the docker SDK, oras-py writes the file
        itself; nothing is sent to the registry).

        @param login: The credentials.
        """
        self.auth_file.parent.mkdir(parents=True, exist_ok=True)
        self._client.login(
            username=login.username,
            password=login.password,
            hostname=self.hostport,
            config_path=str(self.auth_file),
        )

    def push(
        self,
        reference: str,
        files: Sequence[tuple[Path, str]],
        *,
        config: tuple[Path, str] | None = None,
        subject: Descriptor | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> PushedManifest:
        """
        C{oras push}: upload files as layers and a config, then an image manifest.

        oras-py writes the manifest itself. It can set C{subject} and
        annotations but not C{artifactType}, so the type of an artifact pushed
        this way is its config's media type, which the referrers API reports
        in its place.

        @param reference: C{name:tag} in this registry (without the host).
        @param files: Each layer's file and media type.
        @param config: The config's file and media type; without it, oras-py's
            empty config (C{{}}, C{application/vnd.unknown.config.v1+json}).
        @param subject: The manifest the pushed one refers to.
        @param annotations: Annotations of the pushed manifest.
        @return: The registry's answer to the manifest C{PUT}.
        """
        response: _Response = self._client.push(
            target=f"{self.hostport}/{reference}",
            config_path=str(self.auth_file),
            disable_path_validation=True,
            files=[f"{path}:{media_type}" for path, media_type in files],
            manifest_config=None if config is None else f"{config[0]}:{config[1]}",
            manifest_annotations=dict(annotations) if annotations is not None else None,
            subject=None if subject is None else self._subject(subject),
            quiet=True,
        )
        return self._pushed(response)

    def push_manifest(
        self, reference: str, manifest: Mapping[str, JSONValue], blobs: Sequence[Path]
    ) -> PushedManifest:
        """
        Upload blobs, then a manifest the caller wrote, with oras-py's lower-level
        calls (C{upload_blob}, C{upload_manifest}): the way to push the fields
        that L{push} cannot set, such as C{artifactType}.

        @param reference: C{name:tag} in this registry (without the host).
        @param manifest: The OCI image manifest; oras-py sends it as JSON.
        @param blobs: The file of every blob the manifest references.
        @return: The registry's answer to the manifest C{PUT}.
        @raise OrasError: If a blob upload is refused.
        """
        container = self._client.get_container(f"{self.hostport}/{reference}")
        self._client.auth.load_configs(container, configs=[str(self.auth_file)])
        for path in blobs:
            layer = self._oci.NewLayer(str(path))
            uploaded: _Response = self._client.upload_blob(str(path), container, layer)
            if uploaded.status_code not in (200, 201):
                raise OrasError(
                    f"uploading {path} answered {uploaded.status_code}: {uploaded.content[:500]!r}"
                )
        response: _Response = self._client.upload_manifest(dict(manifest), container)
        return self._pushed(response)

    def pull(self, reference: str, outdir: Path) -> list[Path]:
        """
        C{oras pull}: download every layer of a manifest into a directory, each
        named by its C{org.opencontainers.image.title} annotation.

        @param reference: C{name:tag} or C{name@digest} in this registry.
        @param outdir: Where the files go.
        @return: The files written.
        """
        files: list[str] = self._client.pull(
            target=f"{self.hostport}/{reference}", config_path=str(self.auth_file), outdir=str(outdir)
        )
        return [Path(name) for name in files]

    def _subject(self, descriptor: Descriptor) -> object:
        """
        @param descriptor: The subject manifest's descriptor.
        @return: oras-py's C{oras.oci.Subject} for it.
        """
        subject: object = self._oci.Subject(
            mediaType=descriptor.media_type, digest=descriptor.digest, size=descriptor.size
        )
        return subject

    @staticmethod
    def _pushed(response: _Response) -> PushedManifest:
        """
        @param response: The C{requests.Response} of a manifest C{PUT}.
        @return: Its status, digest and subject headers, and body.
        """
        return PushedManifest(
            status=response.status_code,
            digest=response.headers.get("Docker-Content-Digest"),
            subject=response.headers.get("OCI-Subject"),
            body=response.content,
        )
