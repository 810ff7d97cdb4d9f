"""The operator's settings: the Go operator's environment variables and flags, validated.

Where the Go operator silently falls back or crashes on a bad value, opsync refuses to start with a message
that names the setting (``POLLING_INTERVAL: must be a whole number of seconds greater than 0, got "0"``).
Flags of the Go operator that opsync does not implement are accepted, so existing manifests keep working, and
ignored with a warning:

- ``--metrics-secure`` (and the metrics certificate flags): opsync serves ``/metrics`` over plain HTTP; protect
  it with a NetworkPolicy or a proxy. ``--metrics-secure=false`` matches opsync and is not reported.
- ``--enable-http2``, ``--zap-devel``, ``--zap-stacktrace-level``, ``--zap-time-encoding``.

1Password is reached through Connect (``OP_CONNECT_HOST`` with ``OP_CONNECT_TOKEN`` or ``OP_CONNECT_TOKEN_FILE``)
or a service account (``OP_SERVICE_ACCOUNT_TOKEN`` or ``OP_SERVICE_ACCOUNT_TOKEN_FILE``), by the Go operator's
rules: a service-account token with a complete Connect configuration is an error, a service-account token
otherwise selects the SDK (a lone ``OP_CONNECT_HOST`` or Connect token is then ignored, with a warning).

Tokens are never part of an error message or of ``repr(settings)``.

Over 400 lines on purpose: every setting is validated in one place, once, at start-up (its environment
variable, its flag, its Go default and its error message side by side), so that no other module reads the
environment or re-checks a value.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from controllers.constants import (
    DEFAULT_HEALTH_PROBE_BIND_ADDRESS,
    DEFAULT_LEADER_ELECTION_ID,
    DEFAULT_METRICS_BIND_ADDRESS,
    DEFAULT_POLLING_INTERVAL,
)
from controllers.restarts import parse_bool
from opsync.health import parse_bind_address
from opsync.http2 import CLIENT_GO_HEALTH_CHECK, HealthCheck
from opsync.labels import InvalidSelectorError, validate_selector_string
from opsync.logging import parse_level

DEFAULT_WORKERS = 4
_NAMESPACE = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?")
_LEVEL_NAMES = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn"}
_IGNORED_FLAGS = (
    "metrics_secure",
    "metrics_cert_path",
    "metrics_cert_name",
    "metrics_cert_key",
    "enable_http2",
    "zap_devel",
    "zap_stacktrace_level",
    "zap_time_encoding",
)

# field -> the name a user sets it by, for error messages
_SETTING_NAMES = {
    "connect_host": "OP_CONNECT_HOST",
    "connect_token": "OP_CONNECT_TOKEN",
    "service_account_token": "OP_SERVICE_ACCOUNT_TOKEN",
    "watch_namespaces": "WATCH_NAMESPACE",
    "watch_namespace_selector": "WATCH_NAMESPACE_SELECTOR",
    "polling_interval": "POLLING_INTERVAL",
    "auto_restart": "AUTO_RESTART",
    "manage_connect": "MANAGE_CONNECT",
    "disable_http2": "DISABLE_HTTP2",
    "http2_read_idle_timeout": "HTTP2_READ_IDLE_TIMEOUT_SECONDS",
    "http2_ping_timeout": "HTTP2_PING_TIMEOUT_SECONDS",
    "allow_empty_values": "--allow-empty-values",
    "enable_annotations": "--enable-annotations",
    "leader_elect": "--leader-elect",
    "leader_election_namespace": "--leader-election-namespace",
    "leader_election_id": "--leader-election-id",
    "metrics_bind_address": "--metrics-bind-address",
    "health_probe_bind_address": "--health-probe-bind-address",
    "log_level": "--log-level",
    "log_format": "--log-format",
    "kubeconfig": "--kubeconfig",
    "workers": "--workers",
    "access_policy": "--access-policy",
}


class ConfigError(Exception):
    """A setting with a bad value; ``str()`` is ``"<setting>: <message>"``."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting
        self.message = message


def _quoted(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _go_bool(value: object) -> object:
    """Strings are parsed as Go booleans (any case), empty meaning false; other values pass through."""
    if not isinstance(value, str):
        return value
    parsed = parse_bool(value) if value else False
    if parsed is None:
        raise ValueError(f"must be true or false, got {_quoted(value)}")
    return parsed


class Settings(BaseModel):
    """Everything ``opsync run`` is configured with. Build it with ``load_settings``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    connect_host: str | None = None
    """The Connect server's base URL without a trailing slash (``OP_CONNECT_HOST``); None with a service account."""
    connect_token: SecretStr | None = None
    """From ``OP_CONNECT_TOKEN_FILE`` (read at start-up, and again whenever it changes) or ``OP_CONNECT_TOKEN``."""
    connect_token_file: Path | None = None
    """``OP_CONNECT_TOKEN_FILE``, watched for a rotated token."""
    service_account_token: SecretStr | None = None
    """From ``OP_SERVICE_ACCOUNT_TOKEN_FILE`` or ``OP_SERVICE_ACCOUNT_TOKEN``: 1Password is then reached through
    the SDK, without Connect. Whether the SDK accepts it is checked when opsync starts (it needs the SDK)."""
    service_account_token_file: Path | None = None
    """``OP_SERVICE_ACCOUNT_TOKEN_FILE``, watched for a rotated token."""
    connect_ca_file: Path | None = None
    """CA bundle to verify Connect's certificate with (``OP_CONNECT_CA_FILE``, else ``SSL_CERT_FILE``)."""
    watch_namespaces: tuple[str, ...] = ()
    """``WATCH_NAMESPACE``: the namespaces to watch; empty means all (or those ``watch_namespace_selector``
    selects)."""
    watch_namespace_selector: str | None = None
    """``WATCH_NAMESPACE_SELECTOR``: a label selector; watch the namespaces whose labels match it, followed as
    labels change (``controllers.watch.SelectedNamespaces``). Excludes ``WATCH_NAMESPACE``."""
    polling_interval: int = Field(DEFAULT_POLLING_INTERVAL, gt=0)
    """``POLLING_INTERVAL``: seconds between polls of 1Password."""
    auto_restart: bool = False
    """``AUTO_RESTART``: restart workloads when their Secrets change, unless annotations say otherwise."""
    manage_connect: bool = False
    """``MANAGE_CONNECT``: create Connect's Service and Deployment when absent (``controllers.connect_setup``)."""
    disable_http2: bool = False
    """``DISABLE_HTTP2`` (client-go's name): talk to the API server over HTTP/1.1, a connection per watch and per
    request in flight, instead of over one HTTP/2 connection (``opsync.http2``)."""
    http2_read_idle_timeout: int = Field(int(CLIENT_GO_HEALTH_CHECK.read_idle), ge=0)
    """``HTTP2_READ_IDLE_TIMEOUT_SECONDS`` (client-go's): seconds without a frame from the API server before a PING
    asks whether the connection lives; 0 turns the health check off."""
    http2_ping_timeout: int = Field(int(CLIENT_GO_HEALTH_CHECK.ping_timeout), ge=0)
    """``HTTP2_PING_TIMEOUT_SECONDS`` (client-go's): seconds that PING may go unanswered before the connection is
    dropped; 0 is the default, 15, as in Go."""
    allow_empty_values: bool = False
    enable_annotations: bool = False
    leader_elect: bool = False
    leader_election_namespace: str | None = None
    """None: the namespace opsync runs in (the caller finds it)."""
    leader_election_id: str = DEFAULT_LEADER_ELECTION_ID
    metrics_bind_address: str = DEFAULT_METRICS_BIND_ADDRESS
    health_probe_bind_address: str = DEFAULT_HEALTH_PROBE_BIND_ADDRESS
    log_level: str = "info"
    """``debug``, ``info``, ``warn``, ``error`` or ``critical`` (normalised from ``--log-level``)."""
    log_format: Literal["json", "console", "auto"] = "auto"
    kubeconfig: str | None = None
    """``--kubeconfig``, else ``KUBECONFIG``; None: in-cluster configuration."""
    workers: int = Field(DEFAULT_WORKERS, ge=1)
    """Concurrent reconciles per controller (the Go operator runs 1; keys are never reconciled twice at once)."""
    access_policy: Literal["auto", "required"] = "auto"
    """``--access-policy``: ``required`` denies everything while no OnePasswordAccessPolicy exists; ``auto``
    allows everything then, as the Go operator, until a policy has been seen (see ``controllers.access``)."""
    warnings: tuple[str, ...] = ()
    """Accepted but questionable settings, for the caller to log at start-up."""

    @model_validator(mode="after")
    def _one_way_to_1password(self) -> Self:
        if self.service_account_token is None and (self.connect_host is None or self.connect_token is None):
            raise ValueError("give connect_host and connect_token, or service_account_token")
        return self

    @property
    def http2_health(self) -> HealthCheck:
        """The HTTP/2 health check's timers (``opsync.http2``)."""
        ping_timeout = self.http2_ping_timeout or CLIENT_GO_HEALTH_CHECK.ping_timeout
        return HealthCheck(read_idle=self.http2_read_idle_timeout, ping_timeout=ping_timeout)

    @property
    def auth_method(self) -> Literal["connect", "service-account"]:
        """How 1Password is reached: ``connect`` (a Connect server) or ``service-account`` (the SDK)."""
        return "service-account" if self.service_account_token is not None else "connect"

    @field_validator(
        "auto_restart",
        "manage_connect",
        "disable_http2",
        "allow_empty_values",
        "enable_annotations",
        "leader_elect",
        mode="before",
    )
    @classmethod
    def _bool(cls, value: object) -> object:
        return _go_bool(value)

    @field_validator("connect_host", mode="before")
    @classmethod
    def _url(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        url = urlsplit(value.strip())
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(
                f"must be an http:// or https:// URL such as http://onepassword-connect:8080, got {_quoted(value)}"
            )
        if url.username is not None or url.password is not None:
            raise ValueError(
                "must not contain credentials; give the token in OP_CONNECT_TOKEN or OP_CONNECT_TOKEN_FILE"
            )
        # urlsplit lets these through; the client would then fail (a backslash) or call a wrong address
        if any(char.isspace() or not char.isprintable() or char == "\\" for char in value.strip()):
            raise ValueError(f"must not contain spaces, backslashes or control characters, got {_quoted(value)}")
        if url.query or url.fragment:
            raise ValueError(f"must not have a query or a fragment, got {_quoted(value)}")
        try:
            port = url.port  # raises for a port out of range or not a number
        except ValueError:
            port = 0
        if port == 0:
            raise ValueError(f"has an invalid port, got {_quoted(value)}")
        return value.strip().rstrip("/")

    @field_validator("watch_namespaces", mode="before")
    @classmethod
    def _namespaces(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        names = tuple(dict.fromkeys(name.strip() for name in value.split(",") if name.strip()))
        for name in names:
            if len(name) > 63 or not _NAMESPACE.fullmatch(name):
                raise ValueError(f"{_quoted(name)} is not a namespace name (lowercase letters, digits and '-')")
        return names

    @field_validator("watch_namespace_selector", mode="before")
    @classmethod
    def _namespace_selector(cls, value: object, info: ValidationInfo) -> object:
        if not isinstance(value, str):
            return value
        if not value.strip():
            return None
        if info.data.get("watch_namespaces"):
            # Which of the two would win is not obvious to a reader of the manifest: refuse both.
            raise ValueError(
                "cannot be combined with WATCH_NAMESPACE; set WATCH_NAMESPACE (a namespace list) or "
                "WATCH_NAMESPACE_SELECTOR (a label selector on namespaces), not both"
            )
        try:
            return validate_selector_string(value)
        except InvalidSelectorError as error:
            raise ValueError(f"{_quoted(value)} is not a label selector: {error}") from None

    @field_validator("polling_interval", "http2_read_idle_timeout", "http2_ping_timeout", mode="before")
    @classmethod
    def _seconds(cls, value: object, info: ValidationInfo) -> object:
        if not isinstance(value, str):
            return value
        text, name = value.strip(), str(info.field_name)
        if not text:
            return cls.model_fields[name].default  # unset in the environment
        positive = name == "polling_interval"  # 0 has a meaning for client-go's two timers
        if not re.fullmatch(r"\+?[0-9]+", text) or (positive and int(text) == 0):
            bound = "seconds greater than 0" if positive else "seconds, 0 or more"
            raise ValueError(f"must be a whole number of {bound}, got {_quoted(value)}")
        return int(text)

    @field_validator("metrics_bind_address", "health_probe_bind_address")
    @classmethod
    def _bind_address(cls, value: str) -> str:
        try:
            address = parse_bind_address(value)
            valid = address is None or address[1] <= 65535
        except ValueError:
            valid = False
        if not valid:
            raise ValueError(f"must be host:port (':8080', '127.0.0.1:0') or 0 to disable, got {_quoted(value)}")
        return value

    @field_validator("workers", mode="before")
    @classmethod
    def _count(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        if not re.fullmatch(r"\+?[0-9]+", value.strip()) or int(value) < 1:
            raise ValueError(f"must be a whole number greater than 0, got {_quoted(value)}")
        return int(value)

    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, value: object) -> object:
        try:
            level = parse_level(value) if isinstance(value, str | int) else None
        except ValueError:
            level = None
        if level is None:
            raise ValueError(f"must be debug, info, warn or error, got {_quoted(str(value))}")
        return _LEVEL_NAMES.get(level, logging.getLevelName(level).lower())

    @field_validator("access_policy", mode="before")
    @classmethod
    def _access_policy(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() not in ("auto", "required"):
            raise ValueError(f"must be auto or required, got {_quoted(value)}")
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _format(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() not in ("json", "console", "auto"):
            raise ValueError(f"must be json, console or auto, got {_quoted(value)}")
        return value.strip().lower() if isinstance(value, str) else value


def _go_bool_flag(parser: argparse.ArgumentParser, flag: str, help_text: str) -> None:
    """A Go-style boolean flag: ``--flag`` or ``--flag=true|false``."""
    parser.add_argument(flag, nargs="?", const="true", metavar="BOOL", help=help_text)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the operator's flags (the Go operator's names; defaults apply when a flag is not given)."""
    _go_bool_flag(parser, "--allow-empty-values", "write empty field values as empty keys")
    _go_bool_flag(parser, "--enable-annotations", "copy OnePasswordItem annotations to their Secrets")
    _go_bool_flag(parser, "--leader-elect", "run the controllers only in the replica holding the Lease")
    parser.add_argument("--leader-election-namespace", help="namespace of the Lease (default: opsync's own)")
    parser.add_argument("--leader-election-id", help=f"name of the Lease (default {DEFAULT_LEADER_ELECTION_ID})")
    parser.add_argument(
        "--metrics-bind-address", help=f"host:port for /metrics, 0 to disable (default {DEFAULT_METRICS_BIND_ADDRESS})"
    )
    parser.add_argument(
        "--health-probe-bind-address",
        help=f"host:port for /healthz and /readyz, 0 to disable (default {DEFAULT_HEALTH_PROBE_BIND_ADDRESS})",
    )
    parser.add_argument("--log-level", "--zap-log-level", dest="log_level", help="debug, info, warn or error")
    parser.add_argument("--log-format", "--zap-encoder", dest="log_format", help="json, console or auto")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: KUBECONFIG, else in-cluster)")
    parser.add_argument("--workers", help=f"concurrent reconciles per controller (default {DEFAULT_WORKERS})")
    parser.add_argument(
        "--access-policy", help="auto (no OnePasswordAccessPolicy: allow all) or required (none: deny all)"
    )
    for dest in _IGNORED_FLAGS:
        flag = "--" + dest.replace("_", "-")
        if dest in ("metrics_secure", "enable_http2", "zap_devel"):
            parser.add_argument(flag, nargs="?", const="true", help=argparse.SUPPRESS)
        else:
            parser.add_argument(flag, help=argparse.SUPPRESS)


def _token(environ: Mapping[str, str], variable: str = "OP_CONNECT_TOKEN") -> str:
    """A token from ``<variable>_FILE`` or ``<variable>`` (exactly one of them): the Connect token, or the
    service account's (``OP_SERVICE_ACCOUNT_TOKEN``), read the same way."""
    file_variable = variable + "_FILE"
    path, value = environ.get(file_variable, ""), environ.get(variable, "")
    if path and value:
        raise ConfigError(file_variable, f"set either {file_variable} or {variable}, not both")
    setting = file_variable if path else variable
    if path:
        try:
            value = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            detail = error.strerror if isinstance(error, OSError) and error.strerror else "not a UTF-8 text file"
            raise ConfigError(setting, f"cannot read {path}: {detail}") from None
    value = value.strip()
    if not value:
        needed = "a Connect token" if variable == "OP_CONNECT_TOKEN" else "a service-account token"
        raise ConfigError(setting, f"{path} is empty" if path else f"not set; opsync needs {needed}")
    if any(char.isspace() or not char.isprintable() for char in value):  # as ConnectClient and the SDK require
        raise ConfigError(setting, "the token must be a single word (no spaces, line breaks or control characters)")
    return value


def _ca_file(environ: Mapping[str, str]) -> Path | None:
    for setting in ("OP_CONNECT_CA_FILE", "SSL_CERT_FILE"):
        if environ.get(setting):
            path = Path(environ[setting])
            if not path.is_file():
                raise ConfigError(setting, f"{path} is not a readable file")
            return path
    return None


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _warnings(settings: Settings, args: argparse.Namespace) -> tuple[str, ...]:
    found = []
    url = urlsplit(settings.connect_host or "")
    if url.scheme == "http" and not _is_loopback(url.hostname or ""):
        found.append(
            f"OP_CONNECT_HOST: {settings.connect_host} is plain HTTP; the Connect token crosses the network "
            "unencrypted (acceptable only inside a trusted cluster network; prefer https)"
        )
    for dest in _IGNORED_FLAGS:
        value = getattr(args, dest, None)
        if value is None or (dest == "metrics_secure" and parse_bool(value) is False):
            continue
        flag = "--" + dest.replace("_", "-")
        if dest == "metrics_secure":
            found.append(f"{flag}: ignored; opsync serves /metrics over plain HTTP (restrict it with a NetworkPolicy)")
        else:
            found.append(f"{flag}: accepted for compatibility with 1Password's operator and ignored")
    return tuple(found)


def load_settings(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """The validated settings from parsed flags (``configure_parser``) and environment variables.

    Raises ``ConfigError`` naming the first bad setting. Reads the token file and checks that a CA file exists;
    otherwise no I/O.
    """
    raw: dict[str, Any] = {
        **_credentials(environ),
        "connect_ca_file": _ca_file(environ),
        "watch_namespaces": environ.get("WATCH_NAMESPACE", ""),
        "watch_namespace_selector": environ.get("WATCH_NAMESPACE_SELECTOR", ""),
        "polling_interval": environ.get("POLLING_INTERVAL", ""),
        "auto_restart": environ.get("AUTO_RESTART", ""),
        "manage_connect": environ.get("MANAGE_CONNECT", ""),
        "disable_http2": environ.get("DISABLE_HTTP2", ""),
        "http2_read_idle_timeout": environ.get("HTTP2_READ_IDLE_TIMEOUT_SECONDS", ""),
        "http2_ping_timeout": environ.get("HTTP2_PING_TIMEOUT_SECONDS", ""),
        "kubeconfig": getattr(args, "kubeconfig", None) or environ.get("KUBECONFIG") or None,
    }
    for name in _SETTING_NAMES:
        value = getattr(args, name, None)
        if name not in raw and value is not None:
            raw[name] = value
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        cause = (first.get("ctx") or {}).get("error")
        message = str(cause) if isinstance(cause, ValueError) else first["msg"]
        raise ConfigError(_SETTING_NAMES.get(str(first["loc"][0]), str(first["loc"][0])), message) from None
    return settings.model_copy(update={"warnings": _warnings(settings, args) + _ignored_connect(settings, environ)})


def _credentials(environ: Mapping[str, str]) -> dict[str, str]:
    """Connect's host and token, or the service account's token, by the Go operator's rules."""
    host = environ.get("OP_CONNECT_HOST", "").strip()
    connect_token = any(environ.get(v) for v in ("OP_CONNECT_TOKEN", "OP_CONNECT_TOKEN_FILE"))
    if any(environ.get(v) for v in ("OP_SERVICE_ACCOUNT_TOKEN", "OP_SERVICE_ACCOUNT_TOKEN_FILE")):
        if host and connect_token:
            raise ConfigError(
                "OP_SERVICE_ACCOUNT_TOKEN",
                "Either Connect or Service Account credentials should be set, not both "
                "(OP_CONNECT_HOST and a Connect token are set too)",
            )
        found = {"service_account_token": _token(environ, "OP_SERVICE_ACCOUNT_TOKEN")}
        if environ.get("OP_SERVICE_ACCOUNT_TOKEN_FILE"):
            found["service_account_token_file"] = environ["OP_SERVICE_ACCOUNT_TOKEN_FILE"]
        return found
    if not host:
        raise ConfigError(
            "OP_CONNECT_HOST",
            "not set; opsync needs the URL of a 1Password Connect server (with OP_CONNECT_TOKEN), "
            "or a service account's OP_SERVICE_ACCOUNT_TOKEN",
        )
    found = {"connect_host": environ["OP_CONNECT_HOST"], "connect_token": _token(environ)}
    if environ.get("OP_CONNECT_TOKEN_FILE"):
        found["connect_token_file"] = environ["OP_CONNECT_TOKEN_FILE"]
    return found


def _ignored_connect(settings: Settings, environ: Mapping[str, str]) -> tuple[str, ...]:
    """With a service account, half a Connect configuration is ignored (the Go operator does so silently)."""
    if settings.auth_method != "service-account":
        return ()
    given = [v for v in ("OP_CONNECT_HOST", "OP_CONNECT_TOKEN", "OP_CONNECT_TOKEN_FILE") if environ.get(v)]
    return tuple(
        f"{v}: ignored; OP_SERVICE_ACCOUNT_TOKEN is set, so 1Password is reached without Connect" for v in given
    )


def print_error(error: ConfigError) -> None:
    """The one line a bad setting gets on stderr: ``opsync: invalid configuration: <setting>: <message>``."""
    sys.stderr.write(f"opsync: invalid configuration: {error}\n")


def settings_or_exit(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """``load_settings``, or print ``opsync: invalid configuration: <message>`` to stderr and exit with 2."""
    try:
        return load_settings(args, environ)
    except ConfigError as error:
        print_error(error)
        raise SystemExit(2) from None
