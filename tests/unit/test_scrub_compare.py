"""The scrub's comparison is pure: facts and a time in, findings out."""

from __future__ import annotations

import datetime as dt

from tiering.scrub import (
    DatasetFact,
    JobFact,
    PrefixFact,
    ReplicaFact,
    TierFacts,
    compare_objects,
    compare_uploads,
    compare_work,
)
from tiering.storage.base import IncompleteUpload, ObjectInfo

NOW = dt.datetime(2026, 5, 1, 12, tzinfo=dt.UTC)
OLD = NOW - dt.timedelta(days=1)


def obj(key: str, size: int = 10, modified: dt.datetime | None = OLD) -> ObjectInfo:
    return ObjectInfo(key=key, size=size, modified=modified)


def facts(**prefixes: PrefixFact) -> TierFacts:
    return TierFacts(
        "warm",
        replicas=[
            ReplicaFact("dataset/a/1/x", "live", 10, "d", None, "a@1", "x"),
            ReplicaFact("dataset/a/1/_shards/shard-00000.tar", "live", 10, "d", 512, "a@1", "y"),
            ReplicaFact("dataset/a/1/z", "copying", 10, "d", None, "a@1", "z"),
        ],
        prefixes={"dataset/a/1/": PrefixFact("dataset/a/1/", "a@1", replicas_here=True), **prefixes},
        live_step_keys=frozenset({"dataset/b/1/being-written"}),
    )


def test_objects_a_replica_a_manifest_or_a_live_step_owns_are_not_orphans() -> None:
    found = compare_objects(facts(), [
        obj("dataset/a/1/x"), obj("dataset/a/1/_shards/shard-00000.tar", 1024), obj("dataset/a/1/z", 3),
        obj("dataset/a/1/_tiering/manifest.json"), obj("dataset/b/1/being-written"),
    ], now=NOW, older_than=3600)
    assert found == []


def test_a_manifest_of_a_dataset_with_no_replica_on_the_tier_is_an_orphan() -> None:
    found = compare_objects(facts(**{"dataset/b/1/": PrefixFact("dataset/b/1/", "b@1")}),
                            [obj("dataset/a/1/x"), obj("dataset/a/1/_shards/shard-00000.tar", 1024),
                             obj("dataset/b/1/_tiering/manifest.json")], now=NOW, older_than=3600)
    assert [(f.kind, f.key, f.dataset, f.fixable) for f in found] == [
        ("orphan_object", "dataset/b/1/_tiering/manifest.json", "b@1", True)]


def test_orphans_inside_adopted_prefixes_busy_prefixes_or_younger_than_the_grace_are_kept() -> None:
    f = facts(**{
        "incoming/": PrefixFact("incoming/", "c@1", replicas_here=True, adopted=True),
        "dataset/b/1/": PrefixFact("dataset/b/1/", "b@1", busy=True),
    })
    found = compare_objects(f, [
        obj("dataset/a/1/x"), obj("dataset/a/1/_shards/shard-00000.tar", 1024),
        obj("incoming/extra.csv"), obj("dataset/b/1/leftover"), obj("dataset/q/1/new", modified=NOW),
        obj("dataset/q/1/unknown-age", modified=None), obj("dataset/q/1/old"),
    ], now=NOW, older_than=3600)
    kept = {x.key: x.kept for x in found}
    assert kept["incoming/extra.csv"].startswith("inside the prefix c@1 was adopted at")
    assert kept["dataset/b/1/leftover"] == "a job of b@1 towards this tier is unfinished"
    assert kept["dataset/q/1/new"] == kept["dataset/q/1/unknown-age"] == "younger than 3600 s"
    assert kept["dataset/q/1/old"] == ""
    assert [x.key for x in found if x.fixable] == ["dataset/q/1/old"]


def test_trusted_replicas_whose_object_is_missing_or_too_short_are_reported_but_copying_ones_are_not() -> None:
    found = compare_objects(facts(), [obj("dataset/a/1/x", 11), obj("dataset/a/1/_shards/shard-00000.tar", 521)],
                            now=NOW, older_than=0)
    assert [(x.kind, x.path) for x in found] == [("size_mismatch", "x"), ("size_mismatch", "y")]
    found = compare_objects(facts(), [], now=NOW, older_than=0)
    assert [(x.kind, x.path, x.fixable) for x in found] == [("missing_object", "x", False),
                                                           ("missing_object", "y", False)]


def test_an_upload_a_live_step_writes_or_a_young_one_is_kept_an_old_one_is_removable() -> None:
    found = compare_uploads(facts(), [
        IncompleteUpload("dataset/b/1/being-written", "u1", OLD),
        IncompleteUpload("dataset/a/1/big", "u2", NOW - dt.timedelta(minutes=5)),
        IncompleteUpload("dataset/a/1/big", "u3", OLD),
    ], now=NOW, older_than=3600)
    assert [(x.upload_id, x.fixable, x.kept) for x in found] == [
        ("u1", False, "a step with a live lease is writing it"), ("u2", False, "younger than 3600 s"),
        ("u3", True, "")]


def test_work_no_worker_drives_is_stale_and_work_with_a_live_lease_is_not() -> None:
    found = compare_work(
        [DatasetFact("r@1", "registering", OLD, False), DatasetFact("n@1", "registering", NOW, False),
         DatasetFact("m@1", "moving", OLD, False), DatasetFact("k@1", "moving", OLD, True)],
        [JobFact(1, "k@1", "move", "running", "warm", OLD, 0), JobFact(2, "j@1", "move", "running", "warm", OLD, 3),
         JobFact(3, "s@1", "restore", "planned", "hot", OLD, 0)],
        now=NOW, older_than=3600,
    )
    assert [(x.kind, x.dataset) for x in found] == [
        ("stale_registering", "r@1"), ("stale_moving", "m@1"), ("stale_job", "k@1"), ("stale_job", "s@1")]
    assert "tiering restores --dispatch" in found[-1].detail
