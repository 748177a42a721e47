"""Broker credentials and ACLs for a site: one user per gateway and per service, least privilege.

``wardwatch broker init STATE_DIR --gateway ward-a/gw-01 [--instance ingest/ingest-2] ...`` writes
(idempotently: existing passwords are kept, new principals are added):

* ``tls/`` a CA and a server certificate for the broker (unless ``--no-tls``),
* ``passwd`` the mosquitto password file, ``acl`` the ACL file,
* ``credentials/<user>.toml`` one ``[mqtt]`` section per principal (mode 0600), ready to include in
  that service's config.

Each gateway may write only its own topics (:func:`wardwatch.core.topics.gateway_acl`); services get
exactly what they read and write; ``operator`` reads the dead letters. The broker must bind sessions to
user names (``use_username_as_clientid true``, as ``deploy/mosquitto/mosquitto.conf`` does), so each
running instance of a service is its own principal (``--instance``). Passwords are random
(``secrets``) and never printed.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from wardwatch.core import topics
from wardwatch.core.errors import ConfigError, WardwatchError
from wardwatch.core.ids import check_id
from wardwatch.core.servers import make_ca_and_server_cert, write_password_file

SERVICE_ACL: Final[dict[str, tuple[str, ...]]] = {
    # ingest stores vitals and status, and dead-letters what it cannot store
    "ingest": (
        f"topic read {topics.ROOT}/{topics.VITALS}/#",
        f"topic read {topics.ROOT}/{topics.DEVICE}/#",
        f"topic read {topics.ROOT}/{topics.GATEWAY}/#",
        f"topic write {topics.ROOT}/{topics.DEADLETTER}/ingest/#",
        f"topic read {topics.ROOT}/{topics.REGISTRY}/#",  # kit bindings: provenance of every sample
        f"topic read {topics.ROOT}/{topics.SCORE}/#",  # NEWS2 as alerting scores it
    ),
    # alerting reads what the gateways say and publishes alarms and pages
    "alerting": (
        f"topic read {topics.ROOT}/{topics.VITALS}/#",
        f"topic read {topics.ROOT}/{topics.DEVICE}/#",
        f"topic read {topics.ROOT}/{topics.GATEWAY}/#",
        f"topic write {topics.ROOT}/{topics.ALARM}/#",
        f"topic write {topics.ROOT}/{topics.SCORE}/#",
        f"topic write {topics.ROOT}/{topics.PAGE}/#",
        f"topic write {topics.ROOT}/{topics.DEADLETTER}/alerting/#",
        f"topic readwrite {topics.ROOT}/{topics.REGISTRY}/#",  # the registry publishes kits; instances read them
    ),
    # the FHIR exporter reads vitals, device status and alarms, and dead-letters what the EHR refuses
    "fhir": (
        f"topic read {topics.ROOT}/{topics.VITALS}/#",
        f"topic read {topics.ROOT}/{topics.DEVICE}/#",
        f"topic read {topics.ROOT}/{topics.ALARM}/#",
        f"topic read {topics.ROOT}/{topics.SCORE}/#",
        f"topic write {topics.ROOT}/{topics.DEADLETTER}/fhir/#",
    ),
    # nurse apps and dashboards read alarms and pages only
    "nurse-app": (
        f"topic read {topics.ROOT}/{topics.ALARM}/#",
        f"topic read {topics.ROOT}/{topics.SCORE}/#",
        f"topic read {topics.ROOT}/{topics.PAGE}/#",
    ),
    # whoever runs the site reads the dead letters of every service (``deadletter/<service>[/<instance>]``)
    "operator": (f"topic read {topics.ROOT}/{topics.DEADLETTER}/#",),
    # a liveness probe (e.g. the compose health check) logs in and subscribes, and may read nothing: its own
    # principal, because sessions are named after user names and a probe would close a real client's session
    "healthcheck": (),
}


@dataclass
class Site:
    """The principals of one broker: gateways (with their ward), services and their extra instances.

    The broker names each session after its user name (``use_username_as_clientid``), so every
    running instance of a service is a principal of its own: ``instances`` maps such a user (e.g.
    ``ingest-2``, sharing the stream with ``ingest``) to the service whose ACL it gets.
    """

    gateways: dict[str, str] = field(default_factory=dict)  # gateway id -> ward
    services: tuple[str, ...] = tuple(SERVICE_ACL)
    extra_users: dict[str, tuple[str, ...]] = field(default_factory=dict)  # user -> ACL lines
    instances: dict[str, str] = field(default_factory=dict)  # user -> service (a key of SERVICE_ACL)

    def __post_init__(self) -> None:
        for user, service in self.instances.items():
            if service not in SERVICE_ACL:
                raise ConfigError(
                    f"instance {user!r}: unknown service {service!r} (one of {', '.join(SERVICE_ACL)})",
                    key="instances",
                )
        users = [*self.services, *self.gateways, *self.extra_users, *self.instances]
        if len(set(users)) != len(users):
            raise ConfigError(f"a user name is used twice among {sorted(users)}", key="users")

    def acl_text(self) -> str:
        """The mosquitto ACL file for every principal of the site."""
        blocks = ["# generated by `wardwatch broker`; each principal gets only what it needs\n"]
        for service in self.services:
            blocks.append("\n".join([f"user {service}", *SERVICE_ACL[service]]) + "\n")
        for user, service in sorted(self.instances.items()):
            blocks.append("\n".join([f"user {user}", *SERVICE_ACL[service]]) + "\n")
        for gateway, ward in sorted(self.gateways.items()):
            blocks.append(topics.gateway_acl(gateway, ward))
        for user, lines in sorted(self.extra_users.items()):
            blocks.append("\n".join([f"user {user}", *lines]) + "\n")
        return "\n".join(blocks)

    @property
    def users(self) -> list[str]:
        """Every username of the site."""
        return [*self.services, *sorted(self.instances), *sorted(self.gateways), *sorted(self.extra_users)]


@dataclass(frozen=True)
class SiteFiles:
    """Where :func:`write_site` put the broker's files."""

    directory: Path
    password_file: Path
    acl_file: Path
    ca_file: Path | None
    server_cert: Path | None
    server_key: Path | None

    def credentials_file(self, user: str) -> Path:
        """The ``[mqtt]`` TOML snippet of one principal."""
        return self.directory / "credentials" / f"{user}.toml"

    def password(self, user: str) -> str:
        """Read back one principal's password (for launching a local stack)."""
        data = tomllib.loads(self.credentials_file(user).read_text(encoding="utf-8"))
        password = data["mqtt"]["password"]
        if not isinstance(password, str):
            raise ConfigError(f"credentials of {user!r} have no password", source=str(self.credentials_file(user)))
        return password


def _existing_passwords(credentials: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for path in credentials.glob("*.toml"):
        try:
            password = tomllib.loads(path.read_text(encoding="utf-8"))["mqtt"]["password"]
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            continue
        if isinstance(password, str):
            found[path.stem] = password
    return found


def write_site(
    directory: Path,
    site: Site,
    *,
    tls: bool = True,
    host: str = "localhost",
    port: int = 8883,
    server_names: tuple[str, ...] = ("localhost",),
    server_ips: tuple[str, ...] = ("127.0.0.1",),
    cert_days: int = 825,
) -> SiteFiles:
    """Write (or update) the broker files of ``site`` under ``directory``; existing passwords are kept."""
    for gateway, ward in site.gateways.items():
        check_id(gateway, "gateway id")
        check_id(ward, "ward id")
    for user in site.users:
        check_id(user, "username")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    credentials = directory / "credentials"
    credentials.mkdir(exist_ok=True, mode=0o700)
    passwords = _existing_passwords(credentials)
    ca_file = server_cert = server_key = None
    if tls:
        tls_dir = directory / "tls"
        if not (tls_dir / "server.crt").exists():
            make_ca_and_server_cert(
                tls_dir, dns_names=server_names, ip_addresses=server_ips, client_name="wardwatch-client", days=cert_days
            )
        ca_file, server_cert, server_key = tls_dir / "ca.crt", tls_dir / "server.crt", tls_dir / "server.key"
    for user in site.users:
        password = passwords.setdefault(user, secrets.token_urlsafe(24))
        lines = [
            "[mqtt]",
            f'host = "{host}"',
            f"port = {port}",
            f"tls = {'true' if tls else 'false'}",
            f"username = {json.dumps(user)}",
            f"password = {json.dumps(password)}",
        ]
        if ca_file is not None:
            lines.append(f"ca_file = {json.dumps(str(ca_file.resolve()))}")
        target = credentials / f"{user}.toml"
        target.write_text("\n".join(lines) + "\n", encoding="utf-8")
        target.chmod(0o600)
    password_file = write_password_file(directory / "passwd", {u: passwords[u] for u in site.users})
    password_file.chmod(0o600)
    acl_file = directory / "acl"
    acl_file.write_text(site.acl_text(), encoding="utf-8")
    return SiteFiles(directory, password_file, acl_file, ca_file, server_cert, server_key)


def broker_main(argv: list[str]) -> int:
    """``wardwatch broker init DIR --ward W --gateway G [--gateway G2 ...]``: write credentials and ACL."""
    parser = argparse.ArgumentParser(prog="wardwatch broker", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    init = sub.add_parser("init", help="create or update a site's broker credentials, ACL and TLS files")
    init.add_argument("directory", type=Path)
    init.add_argument(
        "--gateway",
        action="append",
        default=[],
        metavar="WARD/GATEWAY",
        help="a gateway and its ward, e.g. ward-a/gw-01 (repeatable)",
    )
    init.add_argument(
        "--instance",
        action="append",
        default=[],
        metavar="SERVICE/USER",
        help="one more instance of a service as its own principal, e.g. ingest/ingest-2 (repeatable)",
    )
    init.add_argument("--host", default="localhost", help="broker host name the clients use")
    init.add_argument("--port", type=int, default=8883)
    init.add_argument("--no-tls", action="store_true", help="plain TCP (only for a loopback-only broker)")
    args = parser.parse_args(argv)
    gateways: dict[str, str] = {}
    for spec in args.gateway:
        ward, sep, gateway = spec.partition("/")
        if not sep:
            print(f"wardwatch broker: --gateway {spec!r}: write it as WARD/GATEWAY, e.g. ward-a/gw-01", file=sys.stderr)
            return 2
        gateways[gateway] = ward
    instances: dict[str, str] = {}
    for spec in args.instance:
        service, sep, user = spec.partition("/")
        if not sep:
            print(
                f"wardwatch broker: --instance {spec!r}: write it as SERVICE/USER, e.g. ingest/ingest-2",
                file=sys.stderr,
            )
            return 2
        instances[user] = service
    try:
        files = write_site(
            args.directory,
            Site(gateways=gateways, instances=instances),
            tls=not args.no_tls,
            host=args.host,
            port=args.port,
            # the certificate must name the host clients connect to, or their TLS hostname check fails
            server_names=tuple(dict.fromkeys(("localhost", args.host))),
        )
    except WardwatchError as exc:
        print(f"wardwatch broker: {exc}", file=sys.stderr)
        return 2
    print(
        json.dumps(
            {
                "password_file": str(files.password_file),
                "acl_file": str(files.acl_file),
                "ca_file": str(files.ca_file) if files.ca_file else None,
                "credentials": str(files.directory / "credentials"),
            },
            indent=2,
        )
    )
    return 0
