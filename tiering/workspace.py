"""`tiering init`: a starter config and a catalog with the current schema."""

from __future__ import annotations

from pathlib import Path

import yaml

from tiering.catalog.db import create_catalog_engine, migrate, redact_url, schema_status
from tiering.config import load_config

STARTER_HEADER = """\
# tiering configuration. Reference: README.md, section "Configuration".
# Tiers are ranked hot (0) to cold. A tier's backend is one of:
#   file:///abs/path              a POSIX directory (NVMe, NFS, LTFS mount)
#   s3://bucket/prefix            any S3-compatible endpoint; add endpoint:, region:, credentials:
# Credentials never go in this file: `credentials: {env: HOT}` reads HOT_ACCESS_KEY_ID and
# HOT_SECRET_ACCESS_KEY from the environment; without it boto3's default chain is used.
"""


def starter_config(base: Path, *, catalog: str | None, tiers_dir: str | None) -> dict[str, object]:
    root = (base / (tiers_dir or "tiers")).resolve()
    return {
        "catalog": catalog or "sqlite:///tiering.db",
        "tiers": {
            "hot": {"rank": 0, "backend": (root / "hot").as_uri(), "capacity": "1TiB", "cost_per_tib_month": 80},
            "warm": {"rank": 1, "backend": (root / "warm").as_uri(), "capacity": "10TiB", "cost_per_tib_month": 20},
            "cold": {"rank": 2, "backend": (root / "cold").as_uri(), "cost_per_tib_month": 2, "archive": "packed"},
        },
        "transfer": {"workers": 8, "verify": "readback"},
        "schedule": {"nightly": "0 2 * * *"},
    }


def init_workspace(path: Path, *, catalog: str | None = None, tiers_dir: str | None = None) -> str:
    """Write ``path`` when missing, then migrate the catalog it names. Returns a summary line."""
    lines = []
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        data = starter_config(path.resolve().parent, catalog=catalog, tiers_dir=tiers_dir)
        path.write_text(STARTER_HEADER + yaml.safe_dump(data, sort_keys=False))
        lines.append(f"wrote {path} with local tiers hot/warm/cold")
    elif catalog or tiers_dir:
        lines.append(f"{path} exists; --catalog/--tiers-dir ignored (edit the file instead)")
    config = load_config(path)
    for name, tier in config.tiers.items():
        if tier.scheme == "file":
            Path(tier.backend[len("file://"):]).mkdir(parents=True, exist_ok=True)
        else:  # a kind whose objects live in a bucket (S3) makes it here
            from tiering.storage import Buckets, find_capability, open_backend

            backend = open_backend(name, tier, config.transfer)
            buckets = find_capability(backend, Buckets)
            if buckets is not None:
                buckets.ensure_bucket()
            backend.close()
    engine = create_catalog_engine(config.catalog_url())
    migrate(engine)
    current, _ = schema_status(engine)
    engine.dispose()
    lines.append(f"catalog {redact_url(config.catalog_url())} ready (schema {current}); tiers: "
                 + ", ".join(config.tiers_by_rank()))
    return "\n".join(lines)
