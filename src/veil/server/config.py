"""Server settings: embedded defaults, overridden by a TOML file, then by the command line.

The TOML file is a flat table whose keys are the field names of :class:`ServerConfig`
(``registration = "invite"``, ``max_envelope_bytes = 65536``, ...). Unknown keys and
wrong types are configuration errors, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from veil.core.attachments import ciphertext_length
from veil.protocol import Limits
from veil.server.errors import ConfigError
from veil.server.protection.settings import (
    SECTIONS,
    AdminSettings,
    AuditSettings,
    LimitSettings,
    NetworkSettings,
    RuleSettings,
    WebhookSettings,
)

REGISTRATION_MODES = ("open", "invite", "pow")
SYNCHRONOUS_MODES = ("full", "normal")


@dataclass(frozen=True)
class ServerConfig:
    """Every tunable of one server process. Every limit is finite on purpose."""

    data_dir: Path = field(default_factory=lambda: Path("veil-data"))
    host: str = "127.0.0.1"
    port: int = 8470
    # Accounts.
    registration: str = "open"
    unrestricted_sealed_default: bool = False
    max_devices_per_account: int = 16
    # Linking devices (docs/devices.md): anonymous provisioning channels live
    # provisioning_ttl_s, at most max_provisioning_channels at once, each holding one
    # message of at most max_provisioning_bytes; a reader waits up to
    # provisioning_wait_max_s per request for it.
    provisioning_ttl_s: int = 600
    max_provisioning_channels: int = 1000
    max_provisioning_bytes: int = 768 * 1024
    provisioning_wait_max_s: int = 30
    # Request and frame limits.
    max_body_bytes: int = 1 << 20
    max_envelope_bytes: int = 256 * 1024
    max_ws_frame_bytes: int = 512 * 1024
    max_connections: int = 50_000
    # Sealed sockets need no credentials, so strangers could otherwise take every slot:
    # they get a smaller share of max_connections and are closed when idle.
    max_sealed_connections: int = 1000
    sealed_idle_timeout_s: float = 30.0
    # Sends and acknowledgements of one socket awaiting the database (back-pressure).
    max_inflight_sends_per_connection: int = 32
    # Key directory.
    max_prekeys_per_upload: int = 200
    max_prekeys_stored: int = 1000
    prekey_low_threshold: int = 10
    # MLS KeyPackage directory (issue 11 §1): bounded uploads and stock, checked
    # lifetimes; the owner hears mls_keys_low below the threshold.
    max_key_packages_per_upload: int = 100
    max_key_packages_stored: int = 500
    max_key_package_bytes: int = 16 * 1024
    max_key_package_lifetime_s: int = 400 * 24 * 3600
    key_package_low_threshold: int = 10
    # Group mailboxes (the MLS Delivery Service): one stored copy per group message,
    # deleted after group_message_ttl_s; per-group quotas; groups nobody wrote to for
    # group_idle_ttl_s go with their verifiers.
    # Creation is anonymous: max_groups bounds what strangers can make (rate limits per
    # address come with the protection layers); the worst case on disk is
    # max_groups x max_group_bytes, which an operator sizes to the machine.
    max_groups: int = 20_000
    max_group_message_bytes: int = 256 * 1024
    max_group_bytes: int = 256 << 20
    max_group_messages: int = 100_000
    group_message_ttl_s: int = 30 * 24 * 3600
    group_idle_ttl_s: int = 180 * 24 * 3600
    group_fetch_limit: int = 100
    max_group_subscriptions_per_connection: int = 512
    expiry_interval_s: float = 600.0
    # Message queue.
    max_queue_per_device: int = 10_000
    # Retention (issue 12 §4): a queued envelope is deleted envelope_ttl_s after it was
    # stored, delivered or not (the retention job, every expiry_interval_s); an account's
    # queued envelopes, over all its devices, total at most max_queued_bytes_per_account
    # (429 queue_quota_exceeded beyond). 256 MiB is a thousand full-size envelopes, far
    # above what a person's devices queue while offline, and it bounds what strangers
    # with an access key can park on the disk per account.
    envelope_ttl_s: int = 30 * 24 * 3600
    max_queued_bytes_per_account: int = 256 << 20
    fetch_limit: int = 100
    # A GET /v1/messages page stops once its envelopes total this many bytes (at least
    # one envelope is always returned), so a page of large envelopes stays bounded.
    fetch_max_bytes: int = 8 << 20
    push_window: int = 256
    # Sender certificates.
    sender_certificate_ttl_s: int = 24 * 3600
    # Storage: SQLite under data_dir, or PostgreSQL when database_url is set
    # ("postgresql://user@host:5432/db", needs the asyncpg package).
    database_url: str = ""
    sqlite_synchronous: str = "full"
    group_commit_window_ms: float = 0.0
    # Event loop: uvloop if it is installed (the server works without it).
    use_uvloop: bool = True
    # Logging: a file under data_dir/logs as well as standard error.
    log_to_file: bool = True
    log_level: str = "INFO"
    # The log file rotates when it reaches log_max_bytes; log_backups older files are
    # kept (server.log.1 ... server.log.N), so the logs never take more than
    # (log_backups + 1) * log_max_bytes of disk.
    log_max_bytes: int = 10 << 20
    log_backups: int = 5
    # --- attachments' blobs (docs/attachments.md, issue 12 §1 and §4) ---
    # tus 1.0 uploads into data_dir/blobs: each at most max_blob_bytes (Tus-Max-Size);
    # per account at most blob_quota_bytes and max_blobs_per_account, unfinished uploads
    # counted at their declared length. A complete blob is deleted blob_ttl_s after it
    # completed, an unfinished upload blob_upload_ttl_s after its creation (checked on
    # every access and by the job every expiry_interval_s). A PATCH that sends nothing for
    # blob_idle_timeout_s is ended, keeping what arrived.
    # A 100 MiB file, once padded and sealed by the client (veil.core.attachments):
    # the limit people read is the file's, and the blob is 25 KiB longer.
    max_blob_bytes: int = ciphertext_length(100 << 20)
    blob_quota_bytes: int = 1 << 30
    max_blobs_per_account: int = 10_000
    blob_ttl_s: int = 30 * 24 * 3600
    blob_upload_ttl_s: int = 24 * 3600
    blob_idle_timeout_s: int = 60
    # --- end of attachments' blobs ---
    # TLS 1.3 on the listener (docs/operations.md): a certificate and key in PEM files,
    # or tls_self_signed, which makes one under data_dir/tls and keeps it. Without TLS
    # the server listens only on loopback unless insecure_public is set.
    tls_cert: str = ""
    tls_key: str = ""
    tls_self_signed: bool = False
    insecure_public: bool = False
    # The protection layers, one TOML section each (protection/settings.py).
    network: NetworkSettings = field(default_factory=NetworkSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    rules: RuleSettings = field(default_factory=RuleSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    webhook: WebhookSettings = field(default_factory=WebhookSettings)

    def __post_init__(self) -> None:
        if self.registration not in REGISTRATION_MODES:
            raise ConfigError(f"registration must be one of {REGISTRATION_MODES}")
        if self.sqlite_synchronous not in SYNCHRONOUS_MODES:
            raise ConfigError(f"sqlite_synchronous must be one of {SYNCHRONOUS_MODES}")
        if not 0 <= self.port <= 65535:
            raise ConfigError("port must be between 0 and 65535")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "int" and value <= 0 and f.name != "port":
                raise ConfigError(f"{f.name} must be positive")
        if self.database_url and not self.database_url.startswith(
            ("postgresql://", "postgres://")
        ):
            raise ConfigError("database_url must be a postgresql:// URL")
        if self.group_commit_window_ms < 0 or self.group_commit_window_ms > 100:
            raise ConfigError("group_commit_window_ms must be between 0 and 100")
        if self.max_sealed_connections >= self.max_connections:
            # Otherwise strangers could again hold every slot a device needs.
            raise ConfigError("max_sealed_connections must be below max_connections")
        if not 0 < self.sealed_idle_timeout_s <= 3600:
            raise ConfigError("sealed_idle_timeout_s must be above 0 and at most 3600")
        if self.expiry_interval_s <= 0:
            raise ConfigError("expiry_interval_s must be positive")
        if self.max_ws_frame_bytes < self.max_envelope_bytes:
            raise ConfigError("max_ws_frame_bytes must be at least max_envelope_bytes")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("tls_cert and tls_key go together")
        if self.tls_cert and self.tls_self_signed:
            raise ConfigError("give tls_cert and tls_key or tls_self_signed, not both")
        if self.max_queued_bytes_per_account < self.max_envelope_bytes:
            # Otherwise a recipient could not be sent one full-size envelope at all.
            raise ConfigError("max_queued_bytes_per_account must be at least "
                              "max_envelope_bytes")

    def replace(self, **changes: Any) -> ServerConfig:
        return dataclasses.replace(self, **changes)

    def wire_limits(self) -> Limits:
        """The bounds of the wire formats this configuration sets (veil.protocol)."""
        return Limits(
            max_envelope_bytes=self.max_envelope_bytes,
            max_devices_per_account=self.max_devices_per_account,
            max_prekeys_per_upload=self.max_prekeys_per_upload,
            max_body_bytes=self.max_body_bytes,
            max_group_message_bytes=self.max_group_message_bytes,
            max_provisioning_bytes=self.max_provisioning_bytes,
        )


_TYPES: dict[str, type] = {"int": int, "str": str, "bool": bool, "float": float}


def load_config(path: Path | None = None, **overrides: Any) -> ServerConfig:
    """Defaults, then the TOML file at ``path``, then non-``None`` ``overrides``."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            with path.open("rb") as fh:
                raw = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
        values.update(_check(raw))
    values.update({k: v for k, v in overrides.items() if v is not None})
    if "data_dir" in values:
        values["data_dir"] = Path(values["data_dir"])
    try:
        return ServerConfig(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid configuration: {exc}") from exc


def _section(name: str, raw: Any) -> Any:
    """A ``[name]`` table as its settings class (protection/settings.py)."""
    cls = SECTIONS[name]
    if not isinstance(raw, dict):
        raise ConfigError(f"config key {name!r} must be a table ([{name}])")
    return cls(**_check(raw, cls, f"{name}."))


def _typed_list(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"config key {key!r} must be a list of strings")
    return tuple(value)


def _typed_table(key: str, value: Any, item: type) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"config key {key!r} must be a table")
    out: dict[str, Any] = {}
    for name, v in value.items():
        if item is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if not isinstance(v, item) or isinstance(v, bool):
            raise ConfigError(f"config key {key}.{name} must be of type {item.__name__}")
        out[name] = v
    return out


def _check(raw: dict[str, Any], cls: type = ServerConfig, prefix: str = "") -> dict[str, Any]:
    known = {f.name: f.type for f in fields(cls)}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"unknown config key {prefix + key!r}")
        type_name = str(known[key])
        if not prefix and key in SECTIONS:
            out[key] = _section(key, value)
            continue
        if type_name == "tuple[str, ...]":
            out[key] = _typed_list(prefix + key, value)
            continue
        if type_name.startswith("dict[str, "):
            out[key] = _typed_table(prefix + key, value,
                                    _TYPES[type_name.removeprefix("dict[str, ")[:-1]])
            continue
        if type_name == "Path":
            if not isinstance(value, str):
                raise ConfigError(f"config key {key!r} must be a string path")
        else:
            expected = _TYPES[type_name]
            ok = isinstance(value, expected) and not (
                expected is not bool and isinstance(value, bool)
            )
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                ok, value = True, float(value)
            if not ok:
                raise ConfigError(f"config key {prefix + key!r} must be of type {type_name}")
        out[key] = value
    return out

__all__ = [
    "ServerConfig",
    "load_config",
]
