"""One exception tree for the whole product.

Every error a user can meet is a :class:`TieringError`; the CLI maps it to a one-line message and the
exit code below. Vendor errors (botocore, SQLAlchemy, OS) are translated at the boundary with
``raise ... from exc`` so the cause stays in the traceback for a developer and out of the user's way.

::

    TieringError                         exit 1
    ├── ConfigError                      exit 2   bad or missing tiering.yaml, bad env override
    ├── UsageError                       exit 2   bad argument: name, version, path, option
    │   └── InvalidName
    ├── NotFoundError                    exit 3
    │   ├── DatasetNotFound(name, version)
    │   ├── TierNotFound(name)
    │   ├── PathNotFound(path)
    │   ├── MoveJobNotFound(job_id)
    │   └── RestoreNotFound(request_id)
    ├── ConflictError                    exit 4
    │   ├── DatasetExists(label)                      same name@version, different content
    │   ├── RegistrationInProgress(label)             another registration owns that name@version
    │   ├── PrefixInUse(what, other)                  an adopted prefix overlaps another dataset's objects
    │   ├── MoveInProgress(label, job_id)
    │   ├── LockHeld(name)                            another planner/leader holds the lock
    │   ├── TierBackendChanged(tier, old, new)        the config moved a tier away from its copies
    │   └── DatasetArchived(label, hint)     exit 10  on an archive tier with no staged copy: restore it first
    ├── CatalogError                     exit 5   database unreachable, schema out of date
    ├── BackendError(backend, key)       exit 6
    │   ├── ObjectNotFound
    │   ├── TransientBackendError                      timeouts, 5xx, resets: worth a retry
    │   ├── PermanentBackendError                      4xx other than missing: do not retry
    │   │   ├── AccessDenied                           wrong credentials or no permission
    │   │   └── Unreachable                            endpoint down, DNS, refused
    │   ├── InsufficientStorage                        destination full
    │   └── ArchivedObject                             needs a restore before it can be read
    ├── CopyError(src, dst)              exit 7
    │   ├── CorruptedCopy(src, dst, expected, actual)  destination bytes do not hash to the digest
    │   └── SourceChanged(src, expected, actual)       source bytes differ from the catalog digest
    ├── StateError                       exit 8
    │   ├── IllegalTransition(kind, current, wanted)
    │   ├── LeaseLost(step_id, epoch)                  a newer worker owns the step
    │   └── NotLeader(role, epoch, current)            a newer leader took office: this one is fenced off
    └── PolicyError(file, rule, field)   exit 9
"""

from __future__ import annotations


class TieringError(Exception):
    """Base of every error the product raises on purpose."""

    exit_code = 1
    #: short machine-readable reason recorded in the catalog (``move_steps.last_error``)
    reason = "error"


class ConfigError(TieringError):
    exit_code = 2
    reason = "config"


class UsageError(TieringError):
    exit_code = 2
    reason = "usage"


class InvalidName(UsageError):
    reason = "invalid_name"


class NotFoundError(TieringError):
    exit_code = 3
    reason = "not_found"


class DatasetNotFound(NotFoundError):
    def __init__(self, name: str, version: str | None = None) -> None:
        self.name = name
        self.version = version
        label = f"{name}@{version}" if version else name
        super().__init__(f"dataset {label!r} is not in the catalog (see `tiering ls`)")


class TierNotFound(NotFoundError):
    def __init__(self, name: str, known: list[str] | None = None) -> None:
        self.name = name
        hint = f"; configured tiers: {', '.join(known)}" if known else ""
        super().__init__(f"unknown tier {name!r}{hint}")


class PathNotFound(NotFoundError):
    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"path not found: {path}")


class MoveJobNotFound(NotFoundError):
    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        super().__init__(f"move job {job_id} not found")


class RestoreNotFound(NotFoundError):
    def __init__(self, request_id: int) -> None:
        self.request_id = request_id
        super().__init__(f"restore request {request_id} not found (see `tiering restores --all`)")


class ConflictError(TieringError):
    exit_code = 4
    reason = "conflict"


class DatasetExists(ConflictError):
    def __init__(self, label: str, detail: str = "with different content") -> None:
        self.label = label
        super().__init__(f"dataset {label} is already registered {detail}; register a new version instead")


class RegistrationInProgress(ConflictError):
    """Another registration owns ``label`` (it wrote the catalog row first and keeps its lease)."""

    def __init__(self, label: str, detail: str = "") -> None:
        self.label = label
        super().__init__(
            f"dataset {label} is being registered by another registration{detail}; "
            "wait for it to finish or register another version"
        )


class PrefixInUse(ConflictError):
    """``what`` (an adopted prefix, or a dataset's own prefix) overlaps the objects of dataset ``other``."""

    def __init__(self, what: str, other: str, where: str) -> None:
        self.other = other
        super().__init__(f"{what} overlaps dataset {other} ({where}); a prefix can belong to one dataset only")


class MoveInProgress(ConflictError):
    """``label`` has an unfinished job; ``purpose`` is that job's (``move`` or ``restore``), which says what
    finishes it: `tiering resume` for a move, the restore dispatcher for a restore."""

    def __init__(self, label: str, job_id: int, *, purpose: str = "move") -> None:
        self.label = label
        self.job_id = job_id
        self.purpose = purpose
        if purpose == "restore":
            what = ("a restore is under way; wait for it (`tiering restores`) or finish it now with "
                    "`tiering restores --dispatch`")
        else:
            what = "run `tiering resume` first"
        super().__init__(f"dataset {label} has an unfinished {purpose} job {job_id}; {what}")


class LockHeld(ConflictError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"lock {name!r} is held by another process")


class TierBackendChanged(ConflictError):
    """The config points tier ``tier`` at another place than the one the catalog's copies are on."""

    reason = "tier_changed"

    def __init__(self, tier: str, old: str, new: str) -> None:
        self.tier = tier
        self.old = old
        self.new = new
        super().__init__(
            f"tier {tier!r} now points at {new} but the catalog's copies on it are at {old}: point it back in the "
            f"config, or copy the data there and run `tiering tiers --accept-change {tier}`"
        )


class DatasetArchived(ConflictError):
    """The dataset's home is an archive tier and no restored (staged) copy is readable.

    ``hint`` says what to do: the restore command, or the restore already under way and its ETA.
    """

    exit_code = 10
    reason = "archived"

    def __init__(self, label: str, hint: str) -> None:
        self.label = label
        self.hint = hint
        super().__init__(f"dataset {label} is archived and has no restored copy: {hint}")


class CatalogError(TieringError):
    exit_code = 5
    reason = "catalog"


class BackendError(TieringError):
    exit_code = 6
    reason = "backend"

    def __init__(self, message: str, *, backend: str = "", key: str = "") -> None:
        self.backend = backend
        self.key = key
        where = f"{backend}: " if backend else ""
        super().__init__(f"{where}{message}")


class ObjectNotFound(BackendError):
    reason = "object_not_found"

    def __init__(self, key: str, *, backend: str = "") -> None:
        super().__init__(f"object not found: {key}", backend=backend, key=key)


class TransientBackendError(BackendError):
    reason = "transient"


class PermanentBackendError(BackendError):
    reason = "permanent"


class DigestRefused(PermanentBackendError):
    """The store refused a write: the bytes it received do not match the checksum sent with them."""


class AccessDenied(PermanentBackendError):
    reason = "access_denied"


class Unreachable(PermanentBackendError):
    reason = "unreachable"


class InsufficientStorage(BackendError):
    reason = "insufficient_storage"


class ArchivedObject(BackendError):
    reason = "archived"


class CopyError(TieringError):
    exit_code = 7
    reason = "copy"


class CorruptedCopy(CopyError):
    reason = "checksum_mismatch"

    def __init__(self, src: str, dst: str, expected: str, actual: str) -> None:
        self.src = src
        self.dst = dst
        self.expected = expected
        self.actual = actual
        super().__init__(f"checksum mismatch copying {src} -> {dst}: expected {expected}, got {actual}")


class SourceChanged(CopyError):
    reason = "source_changed"

    def __init__(self, src: str, expected: str, actual: str) -> None:
        self.src = src
        self.expected = expected
        self.actual = actual
        super().__init__(f"source changed: {src} hashes to {actual}, catalog says {expected}")


class StateError(TieringError):
    exit_code = 8
    reason = "state"


class IllegalTransition(StateError):
    reason = "illegal_transition"

    def __init__(self, kind: str, current: str, wanted: str) -> None:
        self.kind = kind
        self.current = current
        self.wanted = wanted
        super().__init__(f"illegal {kind} transition {current} -> {wanted}")


class LeaseLost(StateError):
    reason = "lease_lost"

    def __init__(self, step_id: int, epoch: int) -> None:
        self.step_id = step_id
        self.epoch = epoch
        super().__init__(f"step {step_id}: lease at epoch {epoch} was taken over by another worker")


class NotLeader(StateError):
    """Work offered under leader epoch ``epoch`` of ``role`` while the catalog's is ``current``."""

    reason = "not_leader"

    def __init__(self, role: str, epoch: int, current: int | None) -> None:
        self.role = role
        self.epoch = epoch
        self.current = current
        super().__init__(f"{role} leader epoch {epoch} is no longer current (the catalog's is {current}): "
                         f"another {role} took office; this one must not act")


class PolicyError(TieringError):
    exit_code = 9
    reason = "policy"

    def __init__(self, message: str, *, file: str = "", rule: str = "", field: str = "") -> None:
        self.file = file
        self.rule = rule
        self.field = field
        parts = [p for p in (file, f"rule {rule!r}" if rule else "", f"field {field!r}" if field else "") if p]
        where = ": ".join(parts)
        super().__init__(f"{where}: {message}" if where else message)
