"""The core's settings: one model, mapped onto ``--flags`` and ``RESOTOCORE_*`` environment variables."""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from resotocore.scheduler.cron import validate_cron, validate_timezone
from resotolib.auth import Psk


def is_loopback(host: str) -> bool:
    """Whether only this machine reaches `host`: ``localhost`` or an address in 127.0.0.0/8 or ::1 (also
    written as an IPv4-mapped IPv6 address). Any other name may resolve to an address others reach."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return (mapped or address).is_loopback


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("resotocore"))


DB_SCHEMES = ("arangodb", "arangodbs", "arangodb+ssl", "http", "https")


def validate_db(value: str) -> str:
    """'' and 'sqlite' select the embedded store; a URL with an ArangoDB scheme and a host selects ArangoDB."""
    value = value.strip()
    if value in ("", "sqlite"):
        return "sqlite"
    scheme, _, rest = value.partition("://")
    if scheme not in DB_SCHEMES or not rest.strip("/"):
        raise ValueError(f"use sqlite or arangodb://HOST:PORT, not {value!r}")
    try:
        urlsplit(value).port  # noqa: B018 - reading it checks it
    except ValueError:
        raise ValueError(f"invalid port in {value!r}") from None
    return value


class _EncryptedKey(Exception):
    """The key file asks for a password: the core cannot ask for one."""


def _no_password() -> bytes:
    raise _EncryptedKey


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """The server context of this certificate (chain) and key; ssl.SSLError or OSError when they do not load."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key, password=_no_password)
    return context


def _readable(path: Path) -> Path:
    try:
        with path.open("rb"):
            return path
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from None


def validate_tls_cert(path: Path | None) -> Path | None:
    """A readable file holding at least one PEM certificate."""
    if path is None:
        return None
    try:
        ssl.create_default_context().load_verify_locations(cafile=_readable(path))
    except ssl.SSLError:
        raise ValueError(f"{path} holds no PEM certificate") from None
    return path


def validate_tls_key(path: Path | None, cert: Path | None) -> Path | None:
    """A readable file holding the unencrypted PEM private key of ``cert`` (when ``cert`` is valid)."""
    if path is None:
        return None
    _readable(path)
    if cert is None:
        return path
    try:
        tls_context(cert, path)
    except _EncryptedKey:
        raise ValueError(f"{path} holds an encrypted private key; give it unencrypted") from None
    except ssl.SSLError as e:
        if e.reason == "KEY_VALUES_MISMATCH":
            raise ValueError(f"{path} is not the private key of the certificate in --tls-cert {cert}") from None
        raise ValueError(f"{path} holds no PEM private key") from None
    return path


class CoreConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8900, ge=0, le=65535, description="Port to listen on (0: any free port).")
    data_dir: Path = Field(default_factory=default_data_dir, description="Directory of the embedded database.")
    schedule: str = Field("0 * * * *", description="Cron schedule of the collect_and_cleanup workflow.")
    timezone: str = Field("UTC", description="IANA timezone the schedule is read in, e.g. Europe/Berlin.")
    catch_up: Literal["latest", "none"] = Field(
        "latest", description="Runs missed while the core was down: 'latest' runs once at start-up, 'none' skips."
    )
    durability: Literal["normal", "full"] = Field(
        "normal", description="'normal' survives a killed process; 'full' also survives power loss (slower)."
    )
    db: str = Field(
        "sqlite",
        description="Storage: 'sqlite' (embedded, under --data-dir) or an ArangoDB server, arangodb://HOST:8529 "
        "(arangodbs:// or https:// for TLS).",
    )
    db_name: str = Field("resoto", min_length=1, description="ArangoDB database (created when missing).")
    db_user: str = Field("root", description="ArangoDB user.")
    db_password: str = Field("", repr=False, description="ArangoDB password.")
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="Log lines as JSON, for humans, or JSON unless on a terminal."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Lowest level logged.")
    max_frame_size: int = Field(4 * 1024 * 1024, ge=1024, description="Largest websocket frame accepted, in bytes.")
    queue_size: int = Field(1000, ge=1, description="Messages queued per websocket before it counts as too slow.")
    heartbeat: float = Field(
        30.0,
        gt=0,
        allow_inf_nan=False,
        description="Seconds between websocket pings; a peer silent for long is dropped.",
    )
    shutdown_timeout: float = Field(
        5.0, ge=0, allow_inf_nan=False, description="Seconds to finish requests on shutdown."
    )
    psk: Psk = Field(
        None, repr=False, description="Pre-shared key: every request must carry a JWT signed with it (see the README)."
    )
    tls_cert: Path | None = Field(
        None, description="PEM certificate (chain) to serve HTTPS and WSS (with --tls-key); checked at start-up."
    )
    tls_key: Path | None = Field(None, description="Unencrypted PEM private key of --tls-cert.")
    allow_insecure: bool = Field(
        False, description="Allow listening on a non-loopback address without --psk (anyone could send actions)."
    )
    max_subscriptions: int = Field(100, ge=1, description="Subscriptions one subscriber may hold.")
    max_line_size: int = Field(16 * 1024 * 1024, ge=1024, description="Largest NDJSON line in a merge, in bytes.")
    max_merge_size: int = Field(8 * 1024 * 1024 * 1024, ge=1024, description="Largest merge request body, in bytes.")
    max_body_size: int = Field(
        64 * 1024 * 1024, ge=1024, description="Largest request body of other requests, in bytes."
    )

    _check_schedule = field_validator("schedule")(classmethod(lambda cls, v: validate_cron(v)))
    _check_timezone = field_validator("timezone")(classmethod(lambda cls, v: validate_timezone(v)))
    _check_db = field_validator("db")(classmethod(lambda cls, v: validate_db(v)))
    _check_tls_cert = field_validator("tls_cert")(classmethod(lambda cls, v: validate_tls_cert(v)))

    @field_validator("tls_key")
    @classmethod
    def _check_tls_key(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        return validate_tls_key(path, info.data.get("tls_cert"))  # absent when --tls-cert itself was refused

    @model_validator(mode="after")
    def _check_exposure(self) -> CoreConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if not self.psk and not self.allow_insecure and not is_loopback(self.host):
            raise ValueError(
                f"refusing to listen on {self.host} without --psk: anyone who reaches it could subscribe to "
                "cleanup or start workflows; set --psk (recommended) or --allow-insecure"
            )
        return self

    def ssl_context(self) -> ssl.SSLContext | None:
        """The server's TLS context with --tls-cert and --tls-key (checked when the settings were read)."""
        if self.tls_cert is None or self.tls_key is None:
            return None
        return tls_context(self.tls_cert, self.tls_key)

    @property
    def database(self) -> Path:
        return self.data_dir / "resotocore.db"

    @property
    def arango_url(self) -> str | None:
        """The ArangoDB server when --db selects one, else None (embedded SQLite)."""
        return None if self.db == "sqlite" else self.db
