"""The catalog schema as SQLAlchemy 2 typed models.

The schema in a database is made only by the Alembic migrations in ``migrations/``; a test checks that
these models and the migrations agree. Times are UTC (timezone-aware on the way in and out). Sizes are
bytes. State columns carry their allowed values in ``comment=`` and are guarded by the tables in
:mod:`tiering.catalog.states`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Stores UTC; SQLite drops the zone, so it is put back on the way out."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the catalog; pass an aware UTC datetime")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {
        dt.datetime: UTCDateTime,
        dict[str, Any]: JSON,
        dict[str, str]: JSON,
    }


class Tier(Base):
    __tablename__ = "tiers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(32), unique=True)
    rank: Mapped[int] = mapped_column(Integer, comment="0 is hottest")
    backend_url: Mapped[str] = mapped_column(String(1024), comment="never holds credentials")
    endpoint: Mapped[str | None] = mapped_column(String(1024))
    archive: Mapped[str] = mapped_column(String(16), default="", comment="'' | packed | glacier")
    capacity_bytes: Mapped[int | None] = mapped_column(BigInteger)
    cost_per_tib_month: Mapped[float] = mapped_column(Float, default=0.0)
    backend_identity: Mapped[str] = mapped_column(
        String(2048), default="", server_default="",
        comment="normalised endpoint+bucket+prefix or directory the catalog's copies are on; never credentials",
    )


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (
        UniqueConstraint("name", "version", name="uq_datasets_name_version"),
        # the adopted prefixes only: a registration looks for one its prefix overlaps
        Index("ix_datasets_adopted_prefix", "location_prefix", sqlite_where=text("location_prefix != ''"),
              postgresql_where=text("location_prefix != ''")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    version: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16), comment="dataset | model")
    owner: Mapped[str] = mapped_column(String(128), default="")
    tags: Mapped[dict[str, str]] = mapped_column(default=dict)
    home_tier_id: Mapped[int] = mapped_column(ForeignKey("tiers.id"), index=True)
    state: Mapped[str] = mapped_column(String(16), default="active", comment="active | moving | deleted")
    #: where members sit relative to the tier root; "" means the standard <kind>/<name>/<version>/ layout
    location_prefix: Mapped[str] = mapped_column(String(1024), default="")
    adopted: Mapped[bool] = mapped_column(Boolean, default=False, comment="registered in place, not copied")
    member_count: Mapped[int] = mapped_column(Integer, default=0)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    content_digest: Mapped[str] = mapped_column(String(32), default="", comment="xxh3-128 over sorted members")
    created_at: Mapped[dt.datetime]
    home_since: Mapped[dt.datetime] = mapped_column(comment="when the dataset arrived on its home tier")
    last_access_at: Mapped[dt.datetime | None]
    #: while state is "registering": the registration that owns the row, and until when (see jobs.register)
    registration_owner: Mapped[str | None] = mapped_column(
        String(128), comment="host:pid:token of the registration under way; NULL once registered"
    )
    registration_lease_until: Mapped[dt.datetime | None] = mapped_column(
        comment="the owner renews it while it uploads; past it, another registration may take over"
    )

    home_tier: Mapped[Tier] = relationship(lazy="joined", innerjoin=True)
    members: Mapped[list[Member]] = relationship(back_populates="dataset", order_by="Member.path")

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"


class Member(Base):
    __tablename__ = "members"
    __table_args__ = (UniqueConstraint("dataset_id", "path", name="uq_members_dataset_path"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(String(1024), comment="relative path inside the dataset")
    size: Mapped[int] = mapped_column(BigInteger)
    xxh3: Mapped[str] = mapped_column(String(32), comment="xxh3-128 hex of the content")
    md5: Mapped[str | None] = mapped_column(String(32))
    sha256: Mapped[str | None] = mapped_column(String(64))
    mode: Mapped[int | None] = mapped_column(
        Integer, comment="permission bits of the registered file (0o644...); null when not known (adopted objects)"
    )
    mtime_ns: Mapped[int | None] = mapped_column(
        BigInteger, comment="modification time of the registered file, ns since the epoch; null when not known"
    )

    dataset: Mapped[Dataset] = relationship(back_populates="members")
    replicas: Mapped[list[Replica]] = relationship(back_populates="member")


class TreeEntry(Base):
    """A directory or symbolic link of a registered dataset: no bytes to move, restored where a tier or an
    output is a directory tree. Every directory is recorded (so empty ones come back), and every link
    whose target stays inside the dataset."""

    __tablename__ = "tree_entries"
    __table_args__ = (UniqueConstraint("dataset_id", "path", name="uq_tree_entries_dataset_path"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(String(1024), comment="relative path inside the dataset")
    kind: Mapped[str] = mapped_column(String(8), comment="dir | link")
    target: Mapped[str | None] = mapped_column(
        String(4096), comment="a link's target, relative to the link's directory and inside the dataset"
    )
    mode: Mapped[int | None] = mapped_column(Integer, comment="a directory's permission bits")
    mtime_ns: Mapped[int | None] = mapped_column(BigInteger, comment="ns since the epoch")


class Replica(Base):
    __tablename__ = "replicas"
    __table_args__ = (UniqueConstraint("member_id", "tier_id", name="uq_replicas_member_tier"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    tier_id: Mapped[int] = mapped_column(ForeignKey("tiers.id"), index=True)
    key: Mapped[str] = mapped_column(String(2048), comment="object key (or shard key) on the tier")
    state: Mapped[str] = mapped_column(
        String(16), comment="copying | verified | live | deleting: only verified and live are trusted"
    )
    shard_offset: Mapped[int | None] = mapped_column(BigInteger, comment="byte offset inside a shard object")
    verified_at: Mapped[dt.datetime | None]
    expires_at: Mapped[dt.datetime | None] = mapped_column(comment="staged restore copies expire")
    #: NULL only while the row is inserted: a trigger copies members.size when the writer does not give it
    size: Mapped[int | None] = mapped_column(
        BigInteger, comment="bytes of the member, copied from members.size on insert; counted in tier_usage"
    )

    member: Mapped[Member] = relationship(back_populates="replicas")
    tier: Mapped[Tier] = relationship()


class TierUsageCounter(Base):
    """Bytes of the copying, verified and live replicas per tier, kept by triggers on ``replicas``.

    The triggers are made by the migration (see ``0001_initial_catalog``), so every writer of replicas keeps
    the counters right, whatever code path or tool it is. A tier's usage is the sum of its rows: on
    PostgreSQL each server backend adds to its own row (``slot`` = its pid), so concurrent writers never
    wait on one another; :func:`tiering.catalog.usage.fold_tier_usage` folds those rows into slot 0.
    SQLite has one writer at a time and only slot 0.
    """

    __tablename__ = "tier_usage"

    tier_id: Mapped[int] = mapped_column(ForeignKey("tiers.id"), primary_key=True)
    slot: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=False, comment="0, or the PostgreSQL backend pid that wrote it"
    )
    used_bytes: Mapped[int] = mapped_column(BigInteger, default=0, comment="may be negative in a slot; sum per tier")


class MoveJob(Base):
    __tablename__ = "move_jobs"
    __table_args__ = (Index("ix_move_jobs_state", "state"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), index=True)
    src_tier_id: Mapped[int] = mapped_column(ForeignKey("tiers.id"))
    dst_tier_id: Mapped[int] = mapped_column(ForeignKey("tiers.id"))
    purpose: Mapped[str] = mapped_column(String(16), default="move", comment="move | restore")
    state: Mapped[str] = mapped_column(
        String(16), comment="planned | running | committed | done | failed | cancelled"
    )
    reason: Mapped[str] = mapped_column(Text, default="", comment="why the move was made (rule, user)")
    actor: Mapped[str] = mapped_column(String(128), default="")
    policy_run_id: Mapped[int | None] = mapped_column(ForeignKey("policy_runs.id"))
    bytes_total: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    finished_at: Mapped[dt.datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)

    steps: Mapped[list[MoveStep]] = relationship(back_populates="job", order_by="MoveStep.id")


class MoveStep(Base):
    __tablename__ = "move_steps"
    __table_args__ = (
        UniqueConstraint("job_id", "member_id", name="uq_move_steps_job_member"),
        Index("ix_move_steps_job_state", "job_id", "state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("move_jobs.id", ondelete="CASCADE"))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    state: Mapped[str] = mapped_column(
        String(16), comment="planned | copying | verified | committed | source_deleted | failed"
    )
    dst_key: Mapped[str] = mapped_column(String(2048), comment="deterministic destination key")
    dst_offset: Mapped[int | None] = mapped_column(
        BigInteger, comment="where the member's bytes start inside the destination shard; NULL: a single object"
    )
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[dt.datetime | None]
    epoch: Mapped[int] = mapped_column(Integer, default=0, comment="bumped by every claim; fences stale workers")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[dt.datetime]

    job: Mapped[MoveJob] = relationship(back_populates="steps")
    member: Mapped[Member] = relationship()


class AccessDaily(Base):
    """Reads per dataset per UTC day: one row a day, not one row a read."""

    __tablename__ = "access_daily"

    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    reads: Mapped[int] = mapped_column(Integer, default=0)


class Pin(Base):
    __tablename__ = "pins"

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    tier_id: Mapped[int] = mapped_column(ForeignKey("tiers.id"), comment="floor: stay on this tier or hotter")
    until: Mapped[dt.datetime]
    reason: Mapped[str] = mapped_column(Text, default="")
    actor: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[dt.datetime]


class PolicyRun(Base):
    __tablename__ = "policy_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    policy_path: Mapped[str] = mapped_column(String(1024))
    run_key: Mapped[str | None] = mapped_column(
        String(64), unique=True, comment="e.g. nightly:2026-11-30; a second scheduler for the same night collides"
    )
    started_at: Mapped[dt.datetime]
    finished_at: Mapped[dt.datetime | None]
    state: Mapped[str] = mapped_column(String(16), comment="running | done | failed | skipped | interrupted")
    planned: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    bytes_moved: Mapped[int] = mapped_column(BigInteger, default=0)
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)


class RestoreRequest(Base):
    __tablename__ = "restore_requests"
    __table_args__ = (Index("ix_restore_requests_state", "state"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), index=True)
    tier_id: Mapped[int] = mapped_column(ForeignKey("tiers.id"), comment="target tier")
    days: Mapped[int] = mapped_column(Integer)
    priority: Mapped[int] = mapped_column(Integer, comment="0 high, 1 normal, 2 low")
    state: Mapped[str] = mapped_column(
        String(16), comment="queued | running | ready | expired | cancelled | failed"
    )
    requested_by: Mapped[str] = mapped_column(String(128), default="")
    move_job_id: Mapped[int | None] = mapped_column(ForeignKey("move_jobs.id"))
    bytes_total: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    started_at: Mapped[dt.datetime | None]
    ready_at: Mapped[dt.datetime | None]
    expires_at: Mapped[dt.datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)


class AuditEntry(Base):
    """Append-only record of every action on data."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(32), comment="register | move | delete_source | restore | ...")
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id", ondelete="SET NULL"), index=True)
    dataset_label: Mapped[str] = mapped_column(String(400), default="")
    from_tier: Mapped[str | None] = mapped_column(String(32))
    to_tier: Mapped[str | None] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    result: Mapped[str] = mapped_column(String(16), comment="ok | failed | skipped")
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class LeaderEpoch(Base):
    """The fencing token of a leader role (``scheduler``): raised by one each time a process takes office.

    Work a leader creates (policy runs, move and restore jobs) is written only while the epoch it took
    office with is still the row's, checked in the same transaction (:mod:`tiering.catalog.leader`).
    """

    __tablename__ = "leader_epochs"

    name: Mapped[str] = mapped_column(String(64), primary_key=True, comment="the role, e.g. scheduler")
    epoch: Mapped[int] = mapped_column(BigInteger, comment="raised by one each time a leader takes office")
    holder: Mapped[str] = mapped_column(String(255), comment="host:pid of the leader that took office last")
    taken_at: Mapped[dt.datetime]
