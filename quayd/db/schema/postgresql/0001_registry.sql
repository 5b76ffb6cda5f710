-- PostgreSQL form of the same schema step as ../sqlite/ (DOUBLE PRECISION times, BYTEA content,
-- identity keys, "C" collation where the API promises lexical order).
-- Repositories, blobs, manifests, tags and upload sessions.
CREATE TABLE repository (
    name        TEXT COLLATE "C" PRIMARY KEY,
    created_at  DOUBLE PRECISION NOT NULL
);

-- A committed blob; storage_key names it in the blob store.
CREATE TABLE blob (
    digest       TEXT PRIMARY KEY,
    size         BIGINT NOT NULL,
    storage_key  TEXT NOT NULL,
    created_at   DOUBLE PRECISION NOT NULL
);

-- A blob is visible in a repository only through this link.
CREATE TABLE repository_blob (
    repository  TEXT NOT NULL REFERENCES repository (name) ON DELETE CASCADE,
    digest      TEXT NOT NULL REFERENCES blob (digest),
    created_at  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (repository, digest)
);
CREATE INDEX repository_blob_digest ON repository_blob (digest);

CREATE TABLE manifest (
    repository     TEXT NOT NULL REFERENCES repository (name) ON DELETE CASCADE,
    digest         TEXT NOT NULL,
    media_type     TEXT NOT NULL,
    content        BYTEA NOT NULL,
    size           BIGINT NOT NULL,
    artifact_type  TEXT,
    subject        TEXT,
    config_digest  TEXT,
    created_at     DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (repository, digest)
);
CREATE INDEX manifest_subject ON manifest (repository, subject);

-- Blobs (config and layers) a manifest references. A blob may be unlinked from the
-- repository while a manifest still names it (the spec allows deleting it); the row keeps
-- the reference for garbage collection.
CREATE TABLE manifest_blob (
    repository       TEXT NOT NULL,
    manifest_digest  TEXT NOT NULL,
    blob_digest      TEXT NOT NULL REFERENCES blob (digest),
    PRIMARY KEY (repository, manifest_digest, blob_digest),
    FOREIGN KEY (repository, manifest_digest) REFERENCES manifest (repository, digest) ON DELETE CASCADE
);
CREATE INDEX manifest_blob_blob ON manifest_blob (repository, blob_digest);

-- Child manifests an index or manifest list references.
CREATE TABLE manifest_child (
    repository    TEXT NOT NULL,
    parent_digest TEXT NOT NULL,
    child_digest  TEXT NOT NULL,
    PRIMARY KEY (repository, parent_digest, child_digest),
    FOREIGN KEY (repository, parent_digest) REFERENCES manifest (repository, digest) ON DELETE CASCADE,
    FOREIGN KEY (repository, child_digest) REFERENCES manifest (repository, digest)
);
CREATE INDEX manifest_child_child ON manifest_child (repository, child_digest);

CREATE TABLE tag (
    repository       TEXT NOT NULL,
    name             TEXT COLLATE "C" NOT NULL,
    manifest_digest  TEXT NOT NULL,
    updated_at       DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (repository, name),
    FOREIGN KEY (repository, manifest_digest) REFERENCES manifest (repository, digest)
);
CREATE INDEX tag_manifest ON tag (repository, manifest_digest);

-- An upload session: staged bytes in the blob store, committed_size of them fsynced.
CREATE TABLE upload (
    id              TEXT PRIMARY KEY,
    repository      TEXT NOT NULL REFERENCES repository (name) ON DELETE CASCADE,
    committed_size  BIGINT NOT NULL,
    created_at      DOUBLE PRECISION NOT NULL,
    updated_at      DOUBLE PRECISION NOT NULL
);
CREATE INDEX upload_updated ON upload (updated_at);
