"""
C{quayd-admin}: operator commands that work without a running daemon.

    quayd-admin --config /etc/quayd/quayd.yaml set-password alice < password.txt

creates the user C{alice} (or changes her password), reading the password
from standard input, so that a fresh install gets its first superuser
(listed under C{auth.superusers}) without any default password.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import bcrypt
from twisted.internet.defer import Deferred
from twisted.internet.task import react

from quayd.auth.policy import MAX_PASSWORD_BYTES
from quayd.config import ConfigError, load_config
from quayd.db.identity import IdentityStore
from quayd.db.migrations import migrate
from quayd.types import RepositoryName

#: bcrypt work factor for new password hashes.
BCRYPT_ROUNDS = 12


def hash_password(password: str) -> str:
    """
    Hash a password with bcrypt (blocking: call it off the reactor thread in the daemon).

    @raise ValueError: If it is empty or longer than bcrypt accepts.
    """
    data = password.encode()
    if not data:
        raise ValueError("the password is empty")
    if len(data) > MAX_PASSWORD_BYTES:
        raise ValueError(f"the password is longer than {MAX_PASSWORD_BYTES} bytes")
    return bcrypt.hashpw(data, bcrypt.gensalt(BCRYPT_ROUNDS)).decode("ascii")


async def _set_password(
    reactor: object, config_path: str, name: str, email: str | None, password: str
) -> None:
    from quayd.service import open_database

    config = load_config(config_path)
    RepositoryName.parse(name)  # user names follow the namespace grammar
    database = open_database(config.database, reactor)
    await database.open()
    try:
        await migrate(database)
        identity = IdentityStore(database, reactor)  # type: ignore[arg-type]  # the global reactor
        password_hash = hash_password(password)
        existing = await identity.get_account(name)
        if existing is None:
            await identity.create_user(name, email, password_hash)
            sys.stdout.write(f"created user {name}\n")
        elif existing.kind != "user":
            raise SystemExit(f"{name} is an organization, not a user")
        else:
            await identity.update_user(name, email=email, password_hash=password_hash)
            sys.stdout.write(f"changed the password of {name}\n")
    finally:
        await database.close()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of C{quayd-admin}."""
    parser = argparse.ArgumentParser(
        prog="quayd-admin", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--config", default="/etc/quayd/quayd.yaml", help="the YAML configuration file")
    commands = parser.add_subparsers(dest="command", required=True)
    set_password = commands.add_parser(
        "set-password", help="create a user or set a password (read from stdin)"
    )
    set_password.add_argument("name")
    set_password.add_argument("--email")
    args = parser.parse_args(argv)
    password = sys.stdin.readline().rstrip("\r\n")
    try:
        load_config(args.config)
        hash_password(password)
    except (ConfigError, ValueError) as e:
        raise SystemExit(f"quayd-admin: {e}") from None

    def run(reactor: object) -> Deferred[None]:
        return Deferred.fromCoroutine(_set_password(reactor, args.config, args.name, args.email, password))

    react(run)
