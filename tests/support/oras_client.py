"""
The oras-py SDK (the C{oras} package on PyPI) as a small typed helper for the
end-to-end tests.

oras-py ships no type information, and the typing environment does not
install it, so it is imported at run time with L{importlib} and every value it
returns is converted to a typed one here. A missing C{oras} makes the test
skip, or fail under CI (see L{tests.support.clients.skip_or_fail}).

oras-py reads credentials from C{~/.docker/config.json} on every push and pull,
and writes them there on login; a test points C{HOME} at a scratch directory
so that the host's file is neither read nor written.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from tests.support.clients import Descriptor, JSONValue, skip_or_fail
from tests.support.identity import Login


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
        return _OrasModules(client=importlib.import_module("oras.client"), oci=importlib.import_module("oras.oci"))
    except ImportError as error:
        skip_or_fail(f"the oras Python package is not installed ({error})")


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
    An oras-py client for one plain-HTTP registry, with credentials in a file of its own.
    """

    def __init__(self, hostport: str, auth_file: Path, *, auth_backend: str = "token") -> None:
        """
        @param hostport: The registry's C{host:port}; plain HTTP (C{insecure=True}).
        @param auth_file: The Docker-style config file L{login} writes the
            credentials to and every push and pull reads them from.
        @param auth_backend: oras-py's authentication backend: C{token} (Bearer
            tokens fetched from the challenge's realm) or C{basic} (Basic
            credentials resent after each 401).
        """
        modules = _import_oras()
        self.hostport = hostport
        self.auth_file = auth_file
        self._oci = modules.oci
        self._client = modules.client.OrasClient(hostname=hostport, insecure=True, auth_backend=auth_backend)

    def login(self, login: Login) -> None:
        """
        Log in as oras-py does: keep the credentials for the client and store
        them in L{auth_file} (there is no docker SDK here, so its manual login
        writes the file).

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

        oras-py builds the manifest itself; it can set C{subject} and
        annotations, but not C{artifactType}, so the artifact's type is the
        config's media type (which the referrers API reports in its place).

        @param reference: C{name:tag} in this registry (without the host).
        @param files: Each layer's file and media type.
        @param config: The config's file and media type; oras-py's empty
            config (C{{}}, C{application/vnd.unknown.config.v1+json}) without it.
        @param subject: The manifest the pushed one refers to.
        @param annotations: Annotations of the pushed manifest.
        @return: The registry's answer to the manifest C{PUT}.
        """
        response = self._client.push(
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
        Upload blobs and then a manifest written by the caller, with oras-py's
        lower-level calls (C{upload_blob}, C{upload_manifest}): the way to push
        fields that L{push} cannot set, such as C{artifactType}.

        @param reference: C{name:tag} or C{name@digest} in this registry.
        @param manifest: The OCI image manifest to push (oras-py sends it as
            JSON with its default separators).
        @param blobs: Files of every blob the manifest references.
        @return: The registry's answer to the manifest C{PUT}.
        """
        container = self._client.get_container(f"{self.hostport}/{reference}")
        self._client.auth.load_configs(container, configs=[str(self.auth_file)])
        for path in blobs:
            layer = self._oci.NewLayer(str(path))
            response = self._client.upload_blob(str(path), container, layer)
            if response.status_code not in (200, 201):
                raise AssertionError(f"uploading {path} answered {response.status_code}: {response.content!r}")
        return self._pushed(self._client.upload_manifest(dict(manifest), container))

    def pull(self, reference: str, outdir: Path) -> list[Path]:
        """
        C{oras pull}: download every layer of a manifest into a directory,
        named by its C{org.opencontainers.image.title} annotation.

        @param reference: C{name:tag} or C{name@digest} in this registry.
        @param outdir: Where the files go.
        @return: The files written.
        """
        files = self._client.pull(
            target=f"{self.hostport}/{reference}", config_path=str(self.auth_file), outdir=str(outdir)
        )
        return [Path(str(name)) for name in files]

    def manifest(self, reference: str) -> JSONValue:
        """
        @param reference: C{name:tag} or C{name@digest} in this registry.
        @return: The decoded manifest oras-py fetches.
        """
        return self._client.get_manifest(f"{self.hostport}/{reference}")

    def _subject(self, descriptor: Descriptor) -> object:
        """
        @param descriptor: The subject manifest's descriptor.
        @return: oras-py's C{Subject} for it.
        """
        return self._oci.Subject(mediaType=descriptor.media_type, digest=descriptor.digest, size=descriptor.size)

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
