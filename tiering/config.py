"""Typed configuration: ``tiering.yaml`` validated once, then passed down.

Where the file is found: ``--config PATH``, else ``$TIERING_CONFIG``, else ``./tiering.yaml``.
Environment overrides (applied after the file): ``TIERING_CATALOG`` (catalog URL),
``TIERING_TRANSFER_WORKERS``, ``TIERING_TRANSFER_PART_SIZE``, ``TIERING_TRANSFER_VERIFY``.

Credentials are never written in this file nor given on the command line. A tier names where they come
from: ``credentials: {env: HOT}`` reads ``HOT_ACCESS_KEY_ID`` / ``HOT_SECRET_ACCESS_KEY``;
``credentials: {file: /etc/tiering/hot.ini, profile: hot}`` reads an AWS-style credentials file;
no ``credentials`` uses boto3's default chain (``AWS_*`` variables, ``~/.aws``, instance roles).
Secrets are held as :class:`Secret`, whose ``repr`` and ``str`` are redacted.
"""

from __future__ import annotations

import configparser
import ipaddress
import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import SplitResult, unquote, urlparse, urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tiering.config_yaml import YamlRefused, load_yaml, read_yaml_text
from tiering.errors import ConfigError

DEFAULT_CONFIG_NAME = "tiering.yaml"

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
    "t": 10**12, "tb": 10**12, "p": 10**15, "pb": 10**15,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "pib": 2**50,
}
_SIZE_RE = re.compile(r"^\s*([0-9]{1,30}(?:\.[0-9]{1,30})?)\s*([a-zA-Z]*)\s*$")
#: the largest size anything accepts (bytes): what a signed 64-bit catalog column holds
MAX_SIZE = 2**63 - 1


def parse_size(value: int | float | str) -> int:
    """Bytes from ``1073741824``, ``"1GiB"``, ``"50 TiB"``, ``"1.5TB"``, at most :data:`MAX_SIZE`.

    Raises ``ValueError`` (never ``OverflowError``) for anything else, infinities and NaN included.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a size like 10GiB, got {value!r}")
    if isinstance(value, int | float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"expected a finite size, got {value}")
        if value < 0:
            raise ValueError(f"size must not be negative, got {value}")
        if value > MAX_SIZE:
            raise ValueError(f"expected a size of at most 2**63-1 bytes (8 EiB), got {value:g}")
        return int(value)
    m = _SIZE_RE.match(str(value))
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"expected a size like 512MiB or 2TB, got {value!r}")
    size = float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]
    if size > MAX_SIZE:
        raise ValueError(f"expected a size of at most 2**63-1 bytes (8 EiB), got {value!r}")
    return int(size)


def format_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


class Secret:
    """A string that never shows itself in ``repr``, ``str``, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: Secret
    session_token: Secret | None = None

    def __repr__(self) -> str:
        return "Credentials(access_key_id='***', secret_access_key='***')"


def redact_userinfo(url: str) -> str:
    """``url`` with any ``user:password@`` before its host shown as ``***@``; safe to print."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(a URL that cannot be parsed)" if "@" in url else url
    if "@" not in parts.netloc:
        return url
    return SplitResult(parts.scheme, "***@" + parts.netloc.rpartition("@")[2], parts.path, parts.query,
                       parts.fragment).geturl()


def _refuse_userinfo(url: str, what: str) -> None:
    """Credentials come from ``credentials:`` only: a URL carrying them would be stored in the catalog,
    printed in errors and sent along with every request."""
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        netloc = url.partition("://")[2].partition("/")[0]
    if "@" in netloc:
        raise ValueError(
            f"{what} may not carry a user name or password ({redact_userinfo(url)}); "
            "give the tier's keys with `credentials: {env: PREFIX}` or `credentials: {file: PATH}`"
        )


_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalise_endpoint(url: str) -> str:
    """An S3 endpoint as one string for comparison: lower-case scheme and host, the port written out
    (80, 443 by default), every loopback address as ``localhost``, no trailing slash."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    try:
        address = ipaddress.ip_address(host)
        host = "localhost" if address.is_loopback else address.compressed
    except ValueError:
        host = "localhost" if host == "localhost" else host
    if ":" in host:
        host = f"[{host}]"
    port = parts.port or _DEFAULT_PORTS.get(scheme, 0)
    path = posixpath.normpath("/" + unquote(parts.path)).rstrip("/")
    return f"{scheme}://{host}:{port}{path}"


def _path_parts(path: str) -> tuple[str, ...]:
    """``"/a//b/./c/../d/"`` -> ``("a", "b", "d")`` (``..`` above the top stays at the top)."""
    return tuple(part for part in posixpath.normpath("/" + path).split("/") if part)


@dataclass(frozen=True)
class BackendIdentity:
    """Where a tier's objects live, normalised, never with credentials.

    ``store`` is what must be equal for two tiers to share objects (an S3 endpoint and bucket, the local
    filesystem, a memory store); ``path`` is the tier's place inside it (S3 prefix, directory), in parts.
    """

    store: str
    path: tuple[str, ...] = ()

    def __str__(self) -> str:
        inside = "/".join(self.path)
        if self.store == "file://":
            return f"file:///{inside}"
        return f"{self.store}/{inside}" if inside else self.store

    def overlaps(self, other: BackendIdentity) -> bool:
        """True when the two are the same place, or one lies inside the other."""
        if self.store != other.store:
            return False
        shorter = min(len(self.path), len(other.path))
        return self.path[:shorter] == other.path[:shorter]


def backend_identity(name: str, tier: TierConfig) -> BackendIdentity:
    """The normalised place of tier ``name``: symlinks of a directory resolved, S3 endpoint host and port
    normalised (see :func:`normalise_endpoint`; no endpoint means AWS, where bucket names are global)."""
    parsed = urlparse(tier.backend)
    if parsed.scheme == "file":
        return BackendIdentity("file://", Path(unquote(parsed.path)).resolve().parts[1:])
    if parsed.scheme == "s3":
        where = normalise_endpoint(tier.endpoint) if tier.endpoint else "s3:/"
        return BackendIdentity(f"{where}/{parsed.netloc.lower()}", _path_parts(unquote(parsed.path)))
    # memory://NAME: backends of one NAME share one store (see tiering.storage.open_backend)
    return BackendIdentity(f"{parsed.scheme}://{(parsed.netloc + parsed.path).strip('/') or name}")


def _refuse_shared_backends(tiers: dict[str, TierConfig]) -> None:
    """Two tiers on one place (or one inside the other) would make a move's copy its own source: it
    "verifies", then the source delete removes the only copy."""
    seen: list[tuple[str, BackendIdentity]] = []
    for name, tier in tiers.items():
        identity = backend_identity(name, tier)
        for other, other_identity in seen:
            if identity.overlaps(other_identity):
                how = "the same place" if identity == other_identity else "places inside one another"
                raise ValueError(
                    f"tiers {other!r} and {name!r} are on {how} ({other_identity} and {identity}): "
                    "each tier needs its own bucket, prefix or directory"
                )
        seen.append((name, identity))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CredentialsSource(_Strict):
    """Where a tier's S3 credentials come from (never the secrets themselves)."""

    env: str | None = Field(default=None, description="prefix P: reads P_ACCESS_KEY_ID and P_SECRET_ACCESS_KEY")
    file: str | None = Field(default=None, description="an AWS-style credentials file")
    profile: str = "default"

    @model_validator(mode="after")
    def _one_source(self) -> CredentialsSource:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of 'env' (a variable prefix) or 'file' (a credentials file)")
        return self

    def resolve(self, tier: str) -> Credentials:
        if self.env is not None:
            key = os.environ.get(f"{self.env}_ACCESS_KEY_ID")
            secret = os.environ.get(f"{self.env}_SECRET_ACCESS_KEY")
            if not key or not secret:
                raise ConfigError(
                    f"tier {tier!r}: credentials from env prefix {self.env!r} need "
                    f"{self.env}_ACCESS_KEY_ID and {self.env}_SECRET_ACCESS_KEY to be set"
                )
            token = os.environ.get(f"{self.env}_SESSION_TOKEN")
            return Credentials(key, Secret(secret), Secret(token) if token else None)
        assert self.file is not None
        parser = configparser.ConfigParser()
        path = os.path.expanduser(self.file)
        if not parser.read(path):
            raise ConfigError(f"tier {tier!r}: credentials file {path} cannot be read")
        if not parser.has_section(self.profile):
            raise ConfigError(f"tier {tier!r}: credentials file {path} has no profile [{self.profile}]")
        section = parser[self.profile]
        try:
            return Credentials(
                section["aws_access_key_id"],
                Secret(section["aws_secret_access_key"]),
                Secret(section["aws_session_token"]) if "aws_session_token" in section else None,
            )
        except KeyError as exc:
            raise ConfigError(f"tier {tier!r}: credentials file {path} [{self.profile}] lacks {exc}") from None


class TierConfig(_Strict):
    rank: int = Field(ge=0, description="0 is the fastest tier (hot); larger is colder")
    backend: str = Field(description="s3://bucket/prefix, file:///abs/path or memory://name")
    endpoint: str | None = Field(default=None, description="S3 endpoint URL; None means AWS")
    region: str = "us-east-1"
    credentials: CredentialsSource | None = None
    capacity: int | None = Field(default=None, description="bytes; None means unbounded")
    cost_per_tib_month: float = Field(default=0.0, ge=0)
    archive: Literal[False, "packed", "glacier"] = Field(
        default=False,
        description="packed: small members go into tar shards; glacier: S3 archive protocol (RestoreObject)",
    )
    verify_tls: bool | str = Field(default=True, description="False, True, or a CA bundle path")
    addressing_style: Literal["path", "virtual", "auto"] = "path"
    #: members below this size are packed into shards on an archive tier (bytes)
    pack_threshold: int = 64 * 2**20
    #: target size of a shard object on an archive tier (bytes)
    shard_size: int = 2**30

    @field_validator("capacity", "pack_threshold", "shard_size", mode="before")
    @classmethod
    def _size(cls, v: Any) -> Any:
        return None if v is None else parse_size(v)

    @field_validator("backend")
    @classmethod
    def _backend_url(cls, v: str) -> str:
        _refuse_userinfo(v, "a backend URL")
        shown = redact_userinfo(v)
        scheme = urlparse(v).scheme
        # whether a backend kind serves the scheme is checked when the app opens (tiering.app): the storage
        # package reads this module, so the config cannot ask its registry
        if not scheme or "://" not in v:
            raise ValueError(f"expected a backend URL such as s3://bucket/prefix or file:///path, got {shown!r}")
        if scheme == "s3" and not urlparse(v).netloc:
            raise ValueError(f"an s3:// URL needs a bucket: {shown!r}")
        if scheme == "file" and (urlparse(v).netloc not in ("", "localhost") or not urlparse(v).path.startswith("/")):
            raise ValueError(f"a file:// URL needs an absolute path (file:///abs/path): {shown!r}")
        return v

    @field_validator("endpoint")
    @classmethod
    def _endpoint_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        _refuse_userinfo(v, "an endpoint URL")
        shown = redact_userinfo(v)
        if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in v):
            raise ValueError(f"an endpoint URL holds no spaces or control characters: {shown!r}")
        try:
            parts = urlparse(v)
            parts.port  # noqa: B018 - a port that is not a number raises here, not in every request later
        except ValueError:
            raise ValueError(f"expected an http:// or https:// URL with a host and a numeric port, got {shown!r}") \
                from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL with a host, got {shown!r}")
        return v

    @property
    def scheme(self) -> str:
        return urlparse(self.backend).scheme


class TransferConfig(_Strict):
    """How bytes move. Every default is written here."""

    # 32: small members are latency-bound (2-3 requests of a few ms each); measured on SeaweedFS, 16 KiB members
    # went 183 -> 410 objects/s from 8 to 32. Large members are held back by the copier's byte budget instead.
    workers: int = Field(default=32, ge=1, le=256, description="members copied at once (at most)")
    # 8 MiB: a 1 GiB tier-to-tier copy on SeaweedFS took 6.7 s with 8 MiB parts, 7.3 s with 16, 7.4 with 32 and
    # 8.1 with 64 (4 parts at once; client CPU 1.4 s against 2.0-2.3: large part buffers are fresh memory to fault in)
    part_size: int = Field(default=8 * 2**20, description="multipart part size (bytes)")
    multipart_threshold: int = Field(default=64 * 2**20, description="objects from this size use multipart")
    part_workers: int = Field(default=4, ge=1, le=64, description="parts of one large object moved at once")
    verify: Literal["auto", "readback", "stream"] = Field(
        default="auto",
        description="auto: the destination checks what it stores against the catalog digest (local tiers hash "
                    "what they write; S3 has every request checked by its CRC32 or MD5) and refuses a mismatch, "
                    "else the copy is read back; readback: always re-read the destination and hash it; "
                    "stream: trust the hash of the bytes sent and check the stored size",
    )
    retries: int = Field(default=4, ge=0, le=20, description="attempts after the first for transient errors")
    lean_requests: bool = Field(
        default=True,
        description="S3 on plain http, path-style: small requests signed by hand with UNSIGNED-PAYLOAD "
                    "instead of through botocore (an endpoint that refuses them falls back by itself)",
    )
    connect_timeout_seconds: float = Field(default=5.0, gt=0, description="seconds to open a connection to S3")
    read_timeout_seconds: float = Field(
        default=20.0, gt=0, description="seconds an S3 request waits for an answer before its attempt fails",
    )
    # one overall limit per request (and per operation of a backend, retries included), so an endpoint that
    # accepts connections and never answers costs seconds, not attempts x read timeouts
    request_timeout_seconds: float = Field(
        default=30.0, gt=0, description="seconds one S3 request may take in all, its retries included",
    )
    seconds_per_mib: float = Field(
        default=1.0, ge=0, description="seconds added to a request's limit per MiB of the body it sends or gets",
    )
    lease_seconds: int = Field(default=300, ge=5, description="how long a worker owns a step without renewing")
    delete_grace_seconds: int = Field(default=0, ge=0, description="wait after commit before deleting source")

    def request_budget(self, nbytes: int = 0) -> float:
        """Seconds a request (or a backend operation) moving ``nbytes`` bytes may take in all, retries included."""
        return self.request_timeout_seconds + max(0, nbytes) / 2**20 * self.seconds_per_mib

    @field_validator("part_size", "multipart_threshold", mode="before")
    @classmethod
    def _size(cls, v: Any) -> Any:
        return parse_size(v)

    @field_validator("part_size")
    @classmethod
    def _part_min(cls, v: int) -> int:
        if v < 5 * 2**20:
            raise ValueError("part_size must be at least 5MiB (the S3 minimum)")
        return v


class ScheduleConfig(_Strict):
    nightly: str = Field(default="0 2 * * *", description="cron expression for the nightly cycle")
    timezone: str = Field(default="local")
    restore_every_seconds: int = Field(default=60, ge=1)


class WebhookConfig(_Strict):
    """Where `tiering serve` finds its bearer token: never the token itself, and never the command line."""

    token_env: str = Field(default="TIERING_WEBHOOK_TOKEN", description="the variable that holds the token")
    token_file: str | None = Field(default=None, description="a file holding the token (its first line)")

    def resolve_token(self, config: Config) -> Secret | None:
        """The token: from ``token_file`` when set (``ConfigError`` when unreadable or empty), else from the
        ``token_env`` variable; None when neither gives one."""
        if self.token_file is not None:
            path = config.resolve_path(self.token_file)
            try:
                lines = path.read_text().splitlines()
            except OSError as exc:
                raise ConfigError(f"webhook.token_file: {path} cannot be read: {exc.strerror}") from None
            token = lines[0].strip() if lines else ""
            if not token:
                raise ConfigError(f"webhook.token_file: {path} is empty")
            return Secret(token)
        value = os.environ.get(self.token_env, "").strip()
        return Secret(value) if value else None


class Config(_Strict):
    catalog: str = Field(default="sqlite:///tiering.db", description="SQLAlchemy URL of the catalog")
    tiers: dict[str, TierConfig]
    transfer: TransferConfig = TransferConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    policy: str | None = Field(default=None, description="policy file used by plan/apply/scheduler")
    webhook: WebhookConfig = WebhookConfig()
    #: the directory relative paths in this config are resolved against
    base_dir: str = "."

    @field_validator("tiers")
    @classmethod
    def _tiers(cls, v: dict[str, TierConfig]) -> dict[str, TierConfig]:
        if not v:
            raise ValueError("at least one tier is needed")
        for name in v:
            if not re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", name):
                raise ValueError(f"tier name {name!r} must be lower-case letters, digits, - or _")
        ranks = [t.rank for t in v.values()]
        if len(set(ranks)) != len(ranks):
            raise ValueError("two tiers have the same rank")
        _refuse_shared_backends(v)
        return v

    def tier(self, name: str) -> TierConfig:
        from tiering.errors import TierNotFound

        try:
            return self.tiers[name]
        except KeyError:
            raise TierNotFound(name, list(self.tiers)) from None

    def tiers_by_rank(self) -> list[str]:
        return sorted(self.tiers, key=lambda n: self.tiers[n].rank)

    def resolve_path(self, path: str) -> Path:
        p = Path(os.path.expanduser(path))
        return p if p.is_absolute() else Path(self.base_dir) / p

    def catalog_url(self) -> str:
        """The catalog URL with a relative SQLite path made relative to the config file."""
        url = self.catalog
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            rel = url[len("sqlite:///"):]
            if rel and rel != ":memory:":
                return "sqlite:///" + str(self.resolve_path(rel).resolve())
        return url


#: settings whose value an error may repeat: none can hold a secret (credentials, URLs and unknown keys can)
_SHOWN_TIER_FIELDS = frozenset({"rank", "region", "capacity", "cost_per_tib_month", "archive", "addressing_style",
                                "pack_threshold", "shard_size"})


def _value_may_be_shown(loc: tuple[int | str, ...], kind: str) -> bool:
    if kind == "extra_forbidden":
        return False
    if len(loc) == 2 and loc[0] in ("transfer", "schedule"):
        return True
    return len(loc) == 3 and loc[0] == "tiers" and loc[2] in _SHOWN_TIER_FIELDS


def _format_validation(path: str, exc: ValidationError) -> str:
    """One line per problem: the file, the field path and what was expected.

    The value found is printed only for settings that cannot hold a secret: anything else may be one put in
    the wrong place (a key under ``credentials:``, a password in a URL or the catalog URL). Messages of our
    own validators name a value only where it cannot be one (sizes, tier names, URLs with userinfo redacted).
    """
    lines = []
    for err in exc.errors(include_url=False, include_context=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (not a setting here)"
        shown = (_value_may_be_shown(tuple(err["loc"]), err["type"]) and isinstance(got, str | int | float)
                 and "got " not in msg)
        lines.append(f"{path}: {loc}: {msg}" + (f" (got {got!r})" if shown else ""))
    return "\n".join(lines)


_ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "TIERING_CATALOG": ("catalog",),
    "TIERING_TRANSFER_WORKERS": ("transfer", "workers"),
    "TIERING_TRANSFER_PART_SIZE": ("transfer", "part_size"),
    "TIERING_TRANSFER_VERIFY": ("transfer", "verify"),
    "TIERING_POLICY": ("policy",),
}


def config_from_dict(data: dict[str, Any], *, source: str = "<dict>", base_dir: str = ".") -> Config:
    data = dict(data)
    for var, path in _ENV_OVERRIDES.items():
        if var in os.environ:
            node = data
            for part in path[:-1]:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise ConfigError(f"{source}: {'.'.join(path[:-1])}: expected a mapping")
            node[path[-1]] = os.environ[var]
    data.setdefault("base_dir", base_dir)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation(source, exc)) from None


def find_config_path(explicit: str | None = None) -> Path:
    if explicit:
        return Path(explicit)
    if os.environ.get("TIERING_CONFIG"):
        return Path(os.environ["TIERING_CONFIG"])
    return Path(DEFAULT_CONFIG_NAME)


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read and validate a config file. Raises :class:`ConfigError` naming the file and key."""
    p = find_config_path(str(path) if path is not None else None)
    try:
        text = read_yaml_text(p)
        data = load_yaml(text)
    except FileNotFoundError:
        raise ConfigError(f"{p}: no config file here; run `tiering init` or pass --config PATH") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text") from None
    except YamlRefused as exc:
        where = f" line {exc.line}" if exc.line is not None else ""
        raise ConfigError(f"{p}:{where}: refused: {exc.problem}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}:{where}: not valid YAML") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    return config_from_dict(data, source=str(p), base_dir=str(p.resolve().parent))
