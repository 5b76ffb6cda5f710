-- PostgreSQL form of the same schema step as ../sqlite/ (DOUBLE PRECISION times, BYTEA content,
-- identity keys, "C" collation where the API promises lexical order).
-- Identity and access: users, organizations, teams, robots, repository permissions and
-- tokens, and the audit log. "managed" marks objects the configuration file declares.

-- Users and organizations share one namespace, as in Quay.
CREATE TABLE account (
    name           TEXT PRIMARY KEY,
    kind           TEXT NOT NULL CHECK (kind IN ('user', 'org')),
    email          TEXT,
    password_hash  TEXT,
    managed        INTEGER NOT NULL DEFAULT 0,
    created_at     DOUBLE PRECISION NOT NULL
);

CREATE TABLE team (
    org         TEXT NOT NULL REFERENCES account (name) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('member', 'creator', 'admin')),
    description TEXT NOT NULL DEFAULT '',
    managed     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (org, name)
);

CREATE TABLE team_member (
    org     TEXT NOT NULL,
    team    TEXT NOT NULL,
    member  TEXT NOT NULL REFERENCES account (name) ON DELETE CASCADE,
    PRIMARY KEY (org, team, member),
    FOREIGN KEY (org, team) REFERENCES team (org, name) ON DELETE CASCADE
);
CREATE INDEX team_member_member ON team_member (member);

-- Robot accounts: "namespace+name"; the token is stored encrypted.
CREATE TABLE robot (
    namespace         TEXT NOT NULL REFERENCES account (name) ON DELETE CASCADE,
    name              TEXT NOT NULL,
    description       TEXT NOT NULL DEFAULT '',
    token_ciphertext  TEXT NOT NULL,
    managed           INTEGER NOT NULL DEFAULT 0,
    created_at        DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (namespace, name)
);

ALTER TABLE repository ADD COLUMN visibility TEXT NOT NULL DEFAULT 'private'
    CHECK (visibility IN ('public', 'private'));
ALTER TABLE repository ADD COLUMN managed INTEGER NOT NULL DEFAULT 0;

-- Direct repository roles for users, teams ("org/team") and robots ("ns+name").
CREATE TABLE repository_permission (
    repository  TEXT NOT NULL REFERENCES repository (name) ON DELETE CASCADE,
    kind        TEXT NOT NULL CHECK (kind IN ('user', 'team', 'robot')),
    subject     TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('read', 'write', 'admin')),
    managed     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (repository, kind, subject)
);
CREATE INDEX repository_permission_subject ON repository_permission (kind, subject);

-- Per-repository access tokens, used with the user name "$token". lookup is a keyed hash
-- of the token for finding the row; the token itself is stored encrypted.
CREATE TABLE repository_token (
    id                TEXT PRIMARY KEY,
    repository        TEXT NOT NULL REFERENCES repository (name) ON DELETE CASCADE,
    description       TEXT NOT NULL,
    role              TEXT NOT NULL CHECK (role IN ('read', 'write')),
    lookup            TEXT NOT NULL UNIQUE,
    token_ciphertext  TEXT NOT NULL,
    managed           INTEGER NOT NULL DEFAULT 0,
    created_at        DOUBLE PRECISION NOT NULL
);
CREATE INDEX repository_token_repository ON repository_token (repository);

CREATE TABLE audit_log (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          DOUBLE PRECISION NOT NULL,
    actor       TEXT NOT NULL,
    client      TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_at ON audit_log (at);
