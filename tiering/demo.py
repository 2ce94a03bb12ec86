"""`tiering demo`: the whole story on local directory tiers in a throwaway workspace, no server needed."""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tiering import datasets, registration
from tiering.app import App
from tiering.config import config_from_dict, format_size
from tiering.errors import DatasetArchived


def _make_dataset(root: Path, *, files: int, seed: int) -> None:
    rng = random.Random(seed)
    for i in range(files):
        split = "train" if i % 10 else "val"
        p = root / split / f"{i:05d}.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rng.randbytes(rng.randint(1_000, 200_000)))
    (root / "labels.csv").write_text("".join(f"{i},{i % 7}\n" for i in range(files)))


def _make_model(root: Path, *, seed: int) -> None:
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "weights.safetensors").write_bytes(rng.randbytes(8 * 2**20))
    (root / "config.json").write_text('{"arch": "resnet50", "classes": 7}\n')


def _restore_expiry(app: App, label: str) -> str:
    """When the newest ready restore of ``label`` expires, for display."""
    from tiering.restore.requests import list_restores

    ends = [r.expires_at for r in list_restores(app) if r.dataset == label and r.expires_at is not None]
    return max(ends).strftime("%Y-%m-%d %H:%M UTC") if ends else "-"


def run_demo(workdir: str | None, *, echo: Callable[[str], None] = print) -> None:
    keep = workdir is not None
    base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="tiering-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    step = 0

    def say(title: str) -> None:
        nonlocal step
        step += 1
        echo(f"\n[{step}] {title}")

    config = config_from_dict(
        {
            "catalog": f"sqlite:///{base / 'catalog.db'}",
            "tiers": {
                "hot": {"rank": 0, "backend": (base / "tiers/hot").as_uri(), "capacity": "1GiB",
                        "cost_per_tib_month": 80},
                "warm": {"rank": 1, "backend": (base / "tiers/warm").as_uri(), "capacity": "10GiB",
                         "cost_per_tib_month": 20},
                "cold": {"rank": 2, "backend": (base / "tiers/cold").as_uri(), "cost_per_tib_month": 2,
                         "archive": "packed", "pack_threshold": "1MiB", "shard_size": "16MiB"},
            },
            "transfer": {"workers": 4},
        },
        source="demo",
        base_dir=str(base),
    )
    echo(f"workspace: {base}")
    echo("tiers: hot, warm, cold are local directories; catalog: SQLite")
    app = App.open(config, create=True)
    try:
        say("generate a synthetic dataset (300 files) and a model (2 files)")
        _make_dataset(base / "src/imagenet-mini", files=300, seed=1)
        _make_model(base / "src/fraud-v3", seed=2)

        say("register both on hot: every file hashed (xxh3-128), uploaded, verified at the destination")
        for src, name, version, kind in (("imagenet-mini", "imagenet-mini", "2024-01", "dataset"),
                                          ("fraud-v3", "fraud", "v3", "model")):
            r = registration.register(app, str(base / "src" / src), name=name, version=version, kind=kind, tier="hot",
                              owner="demo", tags={"team": "vision"})
            echo(f"    {r.label}: {r.members} files, {format_size(r.bytes)} on {r.tier} ({r.seconds:.2f} s)")

        say("register the same content again: a no-op, not a duplicate")
        r = registration.register(app, str(base / "src/fraud-v3"), name="fraud", version="v3", kind="model", tier="hot")
        echo(f"    already registered: {r.already_registered}")

        say("resolve: where to read it now (counts as a read)")
        where = datasets.resolve(app, "imagenet-mini")
        echo(f"    {where.label} is on {where.tier}: {where.url}")

        say("move imagenet-mini hot -> warm: copy, verify, commit, then delete the source")
        o = datasets.move(app, "imagenet-mini@2024-01", to="warm")
        echo(f"    job {o.job_id}: {o.state}, {o.members} files, {format_size(o.bytes)} in {o.seconds:.2f} s")
        echo(f"    files left on hot: {sum(1 for _ in (base / 'tiers/hot').rglob('*.bin'))}")

        say("move it back warm -> hot")
        o = datasets.move(app, "imagenet-mini@2024-01", to="hot")
        echo(f"    job {o.job_id}: {o.state}")

        say("verify: re-read every copy and compare with the catalog digests")
        for label in ("imagenet-mini", "fraud@v3"):
            rep = datasets.verify(app, label)
            echo(f"    {rep.label}: {rep.replicas_checked} copies, {'OK' if rep.ok else rep.problems}")

        say("tiers now")
        for t in datasets.tier_usage(app):
            echo(f"    {t.name:5} rank {t.rank}  datasets {t.datasets}  used {format_size(t.used_bytes)}"
                 f"  cost/month ${t.cost_per_month:.4f}")

        say("history of imagenet-mini@2024-01")
        for h in datasets.show(app, "imagenet-mini@2024-01").history:
            route = f"{h['from'] or '':5}-> {h['to'] or '':5}"
            echo(f"    {h['action']:9} {route} {format_size(h['bytes']):>10}  {h['result']}")

        say("archive imagenet-mini to cold (a tape tier): small files are packed into tar shards")
        o = datasets.move(app, "imagenet-mini@2024-01", to="cold")
        cold_objects = [p for p in (base / "tiers/cold").rglob("*") if p.is_file() and "_tiering" not in p.parts]
        shards = [p for p in cold_objects if "_shards" in p.parts]
        echo(f"    job {o.job_id}: {o.state}; {o.members} files became {len(cold_objects)} objects on cold "
             f"({len(shards)} shards)")
        try:
            datasets.resolve(app, "imagenet-mini")
        except DatasetArchived as exc:
            echo(f"    resolve now says: {exc}")

        say("restore it to hot for 7 days: verified, unpacked to its paths; cold stays the master")
        from tiering.restore.dispatch import dispatch_restores
        from tiering.restore.requests import request_restore

        request_restore(app, "imagenet-mini@2024-01", to="hot", days=7)
        for g in dispatch_restores(app).groups:
            echo(f"    {g.dataset} -> {g.target}: {g.state}, {format_size(g.bytes)} in {g.seconds:.2f} s")
        where = datasets.resolve(app, "imagenet-mini")
        echo(f"    {where.label} is readable on {where.tier} until "
             f"{_restore_expiry(app, where.label)}; its home stays {datasets.show(app, where.label).dataset.tier}")
    finally:
        app.close()
        if not keep:
            shutil.rmtree(base, ignore_errors=True)
    echo(f"\ndemo finished in {time.monotonic() - started:.1f} s" + (f"; workspace kept in {base}" if keep else ""))
