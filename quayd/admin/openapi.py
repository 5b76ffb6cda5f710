"""
The OpenAPI 3.1 description of the admin API (C{GET /api/v1/openapi.json}).

Written by hand beside the routes in L{quayd.admin.api}; the HTTP tests check
that every Klein route is described and that every response the tests see
matches the schema documented for its status.
"""

from __future__ import annotations

from quayd.errors import JSONValue

Schema = dict[str, JSONValue]

_TIME: Schema = {"type": "string", "format": "date-time", "description": "RFC 3339, UTC"}
_MANAGED: Schema = {
    "type": "boolean",
    "description": "Declared by the configuration file: cannot be changed or deleted through the API.",
}
_NAME: Schema = {
    "type": "string",
    "maxLength": 255,
    "pattern": "^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$",
}
_DESCRIPTION: Schema = {"type": "string", "maxLength": 1000}
_EMAIL: Schema = {"type": ["string", "null"], "maxLength": 254}
_PASSWORD: Schema = {"type": "string", "minLength": 1, "description": "At most 72 bytes (UTF-8)."}


def _ref(name: str) -> Schema:
    """A reference to a component schema."""
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: dict[str, Schema], required: tuple[str, ...] = ()) -> Schema:
    """A closed object schema."""
    schema: Schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    return schema


def _record(properties: dict[str, Schema]) -> Schema:
    """A response object: every property is always present."""
    return _object(properties, tuple(properties))


def _list_of(key: str, item: str) -> Schema:
    """A response object holding one array of C{item}s under C{key}."""
    return _record({key: {"type": "array", "items": _ref(item)}})


_USER: dict[str, Schema] = {
    "name": _NAME,
    "email": _EMAIL,
    "managed": _MANAGED,
    "created_at": _TIME,
    "superuser": {"type": "boolean", "description": "Listed under auth.superusers in the configuration."},
}
_ORGANIZATION: dict[str, Schema] = {"name": _NAME, "email": _EMAIL, "managed": _MANAGED, "created_at": _TIME}
_TEAM: dict[str, Schema] = {
    "organization": _NAME,
    "name": _NAME,
    "role": {"enum": ["member", "creator", "admin"]},
    "description": {"type": "string"},
    "managed": _MANAGED,
    "members": {"type": "array", "items": {"type": "string"}},
}
_ROBOT: dict[str, Schema] = {
    "name": {"type": "string", "description": "The login name, namespace+shortname."},
    "namespace": _NAME,
    "shortname": _NAME,
    "description": {"type": "string"},
    "managed": _MANAGED,
    "created_at": _TIME,
}
_REPOSITORY: dict[str, Schema] = {
    "name": {"type": "string", "description": "namespace/name"},
    "namespace": _NAME,
    "visibility": {"enum": ["private", "public"]},
    "managed": _MANAGED,
    "created_at": _TIME,
}
_PERMISSION: dict[str, Schema] = {
    "repository": {"type": "string"},
    "kind": {"enum": ["user", "team", "robot"]},
    "subject": {
        "type": "string",
        "description": (
            "A user name, a team name of the repository's organization, or a robot's namespace+name."
        ),
    },
    "role": {"enum": ["read", "write", "admin"]},
    "managed": _MANAGED,
}
_TOKEN: dict[str, Schema] = {
    "id": {"type": "string"},
    "repository": {"type": "string"},
    "description": {"type": "string"},
    "role": {"enum": ["read", "write"]},
    "managed": _MANAGED,
    "created_at": _TIME,
}
_SECRET: Schema = {"type": "string", "description": "The secret; store it now, it is a password."}
_WEBHOOK: dict[str, Schema] = {
    "id": {"type": "string"},
    "repository": {"type": "string"},
    "url": {"type": "string", "maxLength": 2048},
    "description": {"type": "string"},
    "has_secret": {
        "type": "boolean",
        "description": "Whether deliveries are signed (X-Quayd-Signature-256); the secret is never shown.",
    },
    "managed": _MANAGED,
    "created_at": _TIME,
}
_NULLABLE_TIME: Schema = {"type": ["string", "null"], "format": "date-time", "description": "RFC 3339, UTC"}
_DELIVERY: dict[str, Schema] = {
    "id": {"type": "string", "description": "Sent as X-Quayd-Delivery, the same on every retry."},
    "webhook": {"type": "string"},
    "event": {"enum": ["push", "test"]},
    "state": {
        "enum": ["pending", "delivered", "failed"],
        "description": "failed: the receiver refused it for longer than webhooks.max_age, or the "
        "target is not allowed.",
    },
    "attempts": {"type": "integer"},
    "next_attempt_at": {**_NULLABLE_TIME, "description": "When a pending delivery is tried next."},
    "last_status": {"type": ["integer", "null"], "description": "The last answer's HTTP status."},
    "last_error": {"type": ["string", "null"], "description": "Why the last attempt failed."},
    "created_at": _TIME,
    "finished_at": _NULLABLE_TIME,
}

SCHEMAS: dict[str, Schema] = {
    "Error": _record(
        {
            "errors": {
                "type": "array",
                "minItems": 1,
                "items": _object(
                    {"code": {"type": "string"}, "message": {"type": "string"}, "detail": {}},
                    ("code", "message"),
                ),
            }
        }
    ),
    "User": _record(_USER),
    "UserList": _list_of("users", "User"),
    "UserCreate": _object({"name": _NAME, "email": _EMAIL, "password": _PASSWORD}, ("name",)),
    "UserUpdate": _object({"email": _EMAIL, "password": _PASSWORD}),
    "Organization": _record(_ORGANIZATION),
    "OrganizationList": _list_of("organizations", "Organization"),
    "OrganizationCreate": _object({"name": _NAME, "email": _EMAIL}, ("name",)),
    "Team": _record(_TEAM),
    "TeamList": _list_of("teams", "Team"),
    "TeamPut": _object(
        {"role": {"enum": ["member", "creator", "admin"]}, "description": _DESCRIPTION},
    ),
    "Robot": _record(_ROBOT),
    "RobotWithToken": _record({**_ROBOT, "token": _SECRET}),
    "RobotList": _list_of("robots", "Robot"),
    "RobotCreate": _object({"description": _DESCRIPTION}),
    "Repository": _record(_REPOSITORY),
    "RepositoryList": _list_of("repositories", "Repository"),
    "RepositoryCreate": _object(
        {
            "namespace": _NAME,
            "name": {"type": "string", "description": "The name within the namespace (may contain '/')."},
            "visibility": {"enum": ["private", "public"], "default": "private"},
        },
        ("namespace", "name"),
    ),
    "RepositoryUpdate": _object({"visibility": {"enum": ["private", "public"]}}, ("visibility",)),
    "Permission": _record(_PERMISSION),
    "PermissionList": _list_of("permissions", "Permission"),
    "PermissionPut": _object({"role": {"enum": ["read", "write", "admin"]}}, ("role",)),
    "Token": _record(_TOKEN),
    "TokenWithSecret": _record({**_TOKEN, "token": _SECRET}),
    "TokenList": _list_of("tokens", "Token"),
    "TokenCreate": _object(
        {"description": _DESCRIPTION, "role": {"enum": ["read", "write"]}}, ("description", "role")
    ),
    "TokenUpdate": _object({"description": _DESCRIPTION, "role": {"enum": ["read", "write"]}}),
    "Webhook": _record(_WEBHOOK),
    "WebhookList": _list_of("webhooks", "Webhook"),
    "WebhookCreate": _object(
        {
            "url": {
                "type": "string",
                "maxLength": 2048,
                "description": "http or https, without credentials. Loopback, private, link-local "
                "and metadata addresses are refused unless webhooks.allow_loopback or "
                "webhooks.allow_private allow them (checked here for IP addresses, and after DNS "
                "resolution on every delivery).",
            },
            "secret": {
                "type": ["string", "null"],
                "minLength": 1,
                "description": "Signs each body (HMAC-SHA256, X-Quayd-Signature-256); at most "
                "1024 bytes. Never shown again.",
            },
            "description": _DESCRIPTION,
        },
        ("url",),
    ),
    "Delivery": _record(_DELIVERY),
    "DeliveryList": _list_of("deliveries", "Delivery"),
    "Empty": _object({}),
    "AuditEntry": _record(
        {
            "id": {"type": "integer"},
            "at": _TIME,
            "actor": {"type": "string", "description": "user:NAME, robot:NS+NAME or token:ID"},
            "client": {"type": "string", "description": "The client's address."},
            "action": {"type": "string", "description": "For example user.create or permission.set."},
            "target": {"type": "string"},
            "detail": {"type": "object"},
        }
    ),
    "AuditPage": _record(
        {
            "entries": {"type": "array", "items": _ref("AuditEntry")},
            "next": {
                "type": ["integer", "null"],
                "description": "Pass as before= for the next (older) page; null on the last page.",
            },
        }
    ),
    "OpenAPI": {"type": "object", "description": "This document."},
}

_ERROR_TEXT = {
    "400": "Malformed JSON, a field of the wrong type, or an invalid name.",
    "401": "No or wrong credentials; the WWW-Authenticate header names the token endpoint.",
    "403": "The caller may not do this.",
    "404": "The object does not exist.",
    "409": "The object exists, the change would leave an organization without administrators, "
    "or (code DENIED) the object is managed by the configuration file.",
    "413": "The request body is too large.",
    "429": "Too many failed logins from this client or for this account.",
    "503": "Password hashing is overloaded (retry later), or push webhooks are not enabled.",
}


def _error(status: str) -> JSONValue:
    """A reference to the error response of C{status}."""
    return {"$ref": f"#/components/responses/E{status}"}


def _param(name: str, description: str, schema: Schema | None = None) -> Schema:
    """A required path parameter."""
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema if schema is not None else {"type": "string"},
    }


def _query(name: str, description: str, schema: Schema) -> Schema:
    """An optional query parameter."""
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


_USER_NAME = _param("name", "The user name.")
_ORG = _param("org", "The organization.")
_TEAM_NAME = _param("team", "The team within the organization.")
_MEMBER = _param("user", "The member's user name.")
_NAMESPACE = _param("namespace", "A user or organization.")
_ROBOT_NAME = _param("name", "The robot's short name (without the namespace+).")
_REPO = _param(
    "repository",
    "namespace/name; it may contain '/', which is not percent-encoded. A repository whose path ends "
    "with /permissions, /tokens or /webhooks (and what follows them) is reached by those sub-resources.",
)
_KIND = _param("kind", "What the subject is.", {"enum": ["user", "team", "robot"]})
_SUBJECT = _param("subject", "A user name, a team name of the repository's organization, or ns+robot.")
_TOKEN_ID = _param("token_id", "The token's id.")
_WEBHOOK_ID = _param("webhook_id", "The webhook's id.")
_DELIVERY_ID = _param("delivery_id", "The delivery's id (its X-Quayd-Delivery header).")


def _operation(
    operation_id: str,
    summary: str,
    tag: str,
    ok: tuple[int, str, str | None],
    errors: tuple[int, ...],
    parameters: tuple[Schema, ...] = (),
    body: str | None = None,
    creates: bool = False,
    body_required: bool = True,
) -> Schema:
    """
    One operation.

    @param ok: Status, description and schema name (C{None}: no body) of success.
    @param errors: Error statuses beyond 401, 403 and 429, which every operation may answer.
    @param creates: Whether a C{PUT} may also answer 201 (it created the object).
    @param body_required: Whether the request body (C{body}) must be sent.
    """
    status, description, schema = ok
    responses: dict[str, JSONValue] = {}
    for code, text in ((status, description), *(((201, "Created."),) if creates else ())):
        success: Schema = {"description": text}
        if schema is not None:
            success["content"] = {"application/json": {"schema": _ref(schema)}}
        if code == 201:
            success["headers"] = {
                "Location": {"schema": {"type": "string"}, "description": "The new object."}
            }
        responses[str(code)] = success
    for code in sorted({401, 403, 429, *errors, *((400, 413) if body is not None else ())}):
        responses[str(code)] = _error(str(code))
    operation: Schema = {
        "operationId": operation_id,
        "summary": summary,
        "tags": [tag],
        "responses": responses,
    }
    if parameters:
        operation["parameters"] = list(parameters)
    if body is not None:
        operation["requestBody"] = {
            "required": body_required,
            "content": {"application/json": {"schema": _ref(body)}},
        }
    return operation


def _paths() -> dict[str, JSONValue]:
    """Every route of L{quayd.admin.api.AdminApp}, by path and method."""
    users = "/api/v1/users"
    orgs = "/api/v1/organizations"
    robots = "/api/v1/namespaces/{namespace}/robots"
    repos = "/api/v1/repositories"
    repo = repos + "/{repository}"
    return {
        "/api/v1/openapi.json": {
            "get": _operation(
                "getOpenAPI", "This document.", "meta", (200, "The OpenAPI document.", "OpenAPI"), ()
            )
        },
        users: {
            "get": _operation(
                "listUsers", "Every user (superusers).", "users", (200, "The users.", "UserList"), ()
            ),
            "post": _operation(
                "createUser",
                "Create a user (superusers).",
                "users",
                (201, "Created.", "User"),
                (409, 503),
                body="UserCreate",
            ),
        },
        users + "/{name}": {
            "get": _operation(
                "getUser",
                "A user (superusers, the user themself).",
                "users",
                (200, "The user.", "User"),
                (400, 404),
                (_USER_NAME,),
            ),
            "put": _operation(
                "updateUser",
                "Change e-mail or password (superusers, the user themself).",
                "users",
                (200, "The changed user.", "User"),
                (404, 409, 503),
                (_USER_NAME,),
                "UserUpdate",
            ),
            "delete": _operation(
                "deleteUser",
                "Delete a user with their robots and repositories (superusers).",
                "users",
                (204, "Deleted.", None),
                (400, 404, 409),
                (_USER_NAME,),
            ),
        },
        orgs: {
            "get": _operation(
                "listOrganizations",
                "Every organization (superusers) or the caller's own.",
                "organizations",
                (200, "The organizations.", "OrganizationList"),
                (),
            ),
            "post": _operation(
                "createOrganization",
                "Create an organization; the caller joins its owners team.",
                "organizations",
                (201, "Created.", "Organization"),
                (409,),
                body="OrganizationCreate",
            ),
        },
        orgs + "/{org}": {
            "get": _operation(
                "getOrganization",
                "An organization (its administrators).",
                "organizations",
                (200, "The organization.", "Organization"),
                (400, 404),
                (_ORG,),
            ),
            "delete": _operation(
                "deleteOrganization",
                "Delete an organization with its teams, robots and repositories (its administrators).",
                "organizations",
                (204, "Deleted.", None),
                (400, 404, 409),
                (_ORG,),
            ),
        },
        orgs + "/{org}/teams": {
            "get": _operation(
                "listTeams",
                "The organization's teams and members (its administrators).",
                "teams",
                (200, "The teams.", "TeamList"),
                (400, 404),
                (_ORG,),
            ),
        },
        orgs + "/{org}/teams/{team}": {
            "put": _operation(
                "putTeam",
                "Create a team (201; role required) or change its role or description (200).",
                "teams",
                (200, "Changed.", "Team"),
                (404, 409),
                (_ORG, _TEAM_NAME),
                "TeamPut",
                creates=True,
            ),
            "delete": _operation(
                "deleteTeam",
                "Delete a team and its repository permissions (organization administrators).",
                "teams",
                (204, "Deleted.", None),
                (400, 404, 409),
                (_ORG, _TEAM_NAME),
            ),
        },
        orgs + "/{org}/teams/{team}/members/{user}": {
            "put": _operation(
                "addTeamMember",
                "Add a user to a team (organization administrators).",
                "teams",
                (200, "The team.", "Team"),
                (400, 404, 409),
                (_ORG, _TEAM_NAME, _MEMBER),
            ),
            "delete": _operation(
                "removeTeamMember",
                "Remove a user from a team (organization administrators).",
                "teams",
                (204, "Removed.", None),
                (400, 404, 409),
                (_ORG, _TEAM_NAME, _MEMBER),
            ),
        },
        robots: {
            "get": _operation(
                "listRobots",
                "The namespace's robots, without tokens (namespace administrators).",
                "robots",
                (200, "The robots.", "RobotList"),
                (400, 404),
                (_NAMESPACE,),
            ),
        },
        robots + "/{name}": {
            "get": _operation(
                "getRobot",
                "A robot with its token (namespace administrators).",
                "robots",
                (200, "The robot.", "RobotWithToken"),
                (400, 404),
                (_NAMESPACE, _ROBOT_NAME),
            ),
            "put": _operation(
                "createRobot",
                "Create a robot; the answer holds its token (namespace administrators).",
                "robots",
                (201, "Created.", "RobotWithToken"),
                (404, 409),
                (_NAMESPACE, _ROBOT_NAME),
                "RobotCreate",
            ),
            "delete": _operation(
                "deleteRobot",
                "Delete a robot and its permissions (namespace administrators).",
                "robots",
                (204, "Deleted.", None),
                (400, 404, 409),
                (_NAMESPACE, _ROBOT_NAME),
            ),
        },
        robots + "/{name}/regenerate": {
            "post": _operation(
                "regenerateRobot",
                "Replace a robot's token; the old one stops working at once (namespace administrators).",
                "robots",
                (200, "The robot with its new token.", "RobotWithToken"),
                (400, 404, 409),
                (_NAMESPACE, _ROBOT_NAME),
            ),
        },
        repos: {
            "get": _operation(
                "listRepositories",
                "The repositories the caller may pull.",
                "repositories",
                (200, "The repositories.", "RepositoryList"),
                (400,),
                (_query("namespace", "Only this namespace's repositories.", {"type": "string"}),),
            ),
            "post": _operation(
                "createRepository",
                "Create a repository (namespace owner, organization administrators and creators).",
                "repositories",
                (201, "Created.", "Repository"),
                (404, 409),
                body="RepositoryCreate",
            ),
        },
        repo: {
            "get": _operation(
                "getRepository",
                "A repository (those who may pull it).",
                "repositories",
                (200, "The repository.", "Repository"),
                (400, 404),
                (_REPO,),
            ),
            "put": _operation(
                "updateRepository",
                "Change a repository's visibility (repository administrators).",
                "repositories",
                (200, "The changed repository.", "Repository"),
                (404, 409),
                (_REPO,),
                "RepositoryUpdate",
            ),
            "delete": _operation(
                "deleteRepository",
                "Delete a repository with its tags, permissions and tokens (repository administrators).",
                "repositories",
                (204, "Deleted.", None),
                (400, 404, 409),
                (_REPO,),
            ),
        },
        repo + "/permissions": {
            "get": _operation(
                "listPermissions",
                "The repository's direct roles (repository administrators).",
                "permissions",
                (200, "The permissions.", "PermissionList"),
                (400, 404),
                (_REPO,),
            ),
        },
        repo + "/permissions/{kind}/{subject}": {
            "put": _operation(
                "setPermission",
                "Grant (201) or change (200) a role (repository administrators).",
                "permissions",
                (200, "Changed.", "Permission"),
                (404, 409),
                (_REPO, _KIND, _SUBJECT),
                "PermissionPut",
                creates=True,
            ),
            "delete": _operation(
                "deletePermission",
                "Revoke a role (repository administrators).",
                "permissions",
                (204, "Revoked.", None),
                (400, 404, 409),
                (_REPO, _KIND, _SUBJECT),
            ),
        },
        repo + "/tokens": {
            "get": _operation(
                "listTokens",
                "The repository's tokens, without secrets (repository administrators).",
                "tokens",
                (200, "The tokens.", "TokenList"),
                (400, 404),
                (_REPO,),
            ),
            "post": _operation(
                "createToken",
                "Create a token, used with the user name $token (repository administrators).",
                "tokens",
                (201, "Created; the only time the secret is shown.", "TokenWithSecret"),
                (404,),
                (_REPO,),
                "TokenCreate",
            ),
        },
        repo + "/tokens/{token_id}": {
            "put": _operation(
                "updateToken",
                "Change a token's role or description (repository administrators).",
                "tokens",
                (200, "The changed token.", "Token"),
                (404, 409),
                (_REPO, _TOKEN_ID),
                "TokenUpdate",
            ),
            "delete": _operation(
                "deleteToken",
                "Delete a token; it stops working at once (repository administrators).",
                "tokens",
                (204, "Deleted.", None),
                (400, 404, 409),
                (_REPO, _TOKEN_ID),
            ),
        },
        repo + "/webhooks": {
            "get": _operation(
                "listWebhooks",
                "The repository's push webhooks, without secrets (repository administrators).",
                "webhooks",
                (200, "The webhooks.", "WebhookList"),
                (400, 404, 503),
                (_REPO,),
            ),
            "post": _operation(
                "createWebhook",
                "Add a push webhook (repository administrators).",
                "webhooks",
                (201, "Created.", "Webhook"),
                (404, 409, 503),
                (_REPO,),
                "WebhookCreate",
            ),
        },
        repo + "/webhooks/{webhook_id}": {
            "get": _operation(
                "getWebhook",
                "A push webhook, without its secret (repository administrators).",
                "webhooks",
                (200, "The webhook.", "Webhook"),
                (400, 404, 503),
                (_REPO, _WEBHOOK_ID),
            ),
            "delete": _operation(
                "deleteWebhook",
                "Delete a webhook with its deliveries, pending ones included (repository administrators).",
                "webhooks",
                (204, "Deleted.", None),
                (400, 404, 409, 503),
                (_REPO, _WEBHOOK_ID),
            ),
        },
        repo + "/webhooks/{webhook_id}/test": {
            "post": _operation(
                "testWebhook",
                "Queue a test event (event test, a push payload for an imaginary latest tag) "
                "(repository administrators).",
                "webhooks",
                (202, "Queued; the new delivery.", "Delivery"),
                (404, 503),
                (_REPO, _WEBHOOK_ID),
                "Empty",
                body_required=False,
            ),
        },
        repo + "/webhooks/{webhook_id}/deliveries": {
            "get": _operation(
                "listDeliveries",
                "The webhook's recent deliveries, newest first (repository administrators).",
                "webhooks",
                (200, "The deliveries.", "DeliveryList"),
                (400, 404, 503),
                (
                    _REPO,
                    _WEBHOOK_ID,
                    _query("limit", "Deliveries to list (1-500, default 50).", {"type": "integer"}),
                ),
            ),
        },
        repo + "/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver": {
            "post": _operation(
                "redeliver",
                "Send a delivered or failed delivery's payload again, as a new delivery "
                "(repository administrators); 409 while it is pending.",
                "webhooks",
                (202, "Queued; the new delivery.", "Delivery"),
                (404, 409, 503),
                (_REPO, _WEBHOOK_ID, _DELIVERY_ID),
                "Empty",
                body_required=False,
            ),
        },
        "/api/v1/audit": {
            "get": _operation(
                "getAuditLog",
                "Audit entries, newest first (superusers).",
                "audit",
                (200, "A page of entries.", "AuditPage"),
                (400,),
                (
                    _query("limit", "Entries per page (1-1000, default 100).", {"type": "integer"}),
                    _query(
                        "before",
                        "Only entries with a smaller id (the previous page's next).",
                        {"type": "integer"},
                    ),
                ),
            ),
        },
    }


def openapi_document() -> dict[str, JSONValue]:
    """The OpenAPI 3.1 document describing every route of the admin API."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "quayd admin API",
            "version": "1",
            "description": (
                "Users, organizations, teams, robots, repositories, permissions, repository tokens, "
                "push webhooks and the audit log. Authenticate as on the registry: Basic (user, "
                "namespace+robot, or $token with a repository token) or a bearer token from /v2/auth. "
                "Errors use the "
                'registry\'s format, {"errors": [{"code", "message"}]}. Objects the configuration '
                "file declares (managed) cannot be changed here (409, code DENIED)."
            ),
        },
        "security": [{"basic": []}, {"bearer": []}],
        "paths": _paths(),
        "components": {
            "schemas": SCHEMAS,
            "responses": {
                f"E{status}": {
                    "description": text,
                    "content": {"application/json": {"schema": _ref("Error")}},
                }
                for status, text in _ERROR_TEXT.items()
            },
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic"},
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
        },
    }
