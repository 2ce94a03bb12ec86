"""Object keys map to datasets by prefix; reads fold into one count per dataset and UTC day."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from tiering.access.formats import AccessEvent, IngestStats, ObjectRead, iter_events, iter_object_reads, parse_lines
from tiering.access.keys import DatasetPrefixError, DatasetPrefixIndex, ReadBatch, ReadCounter
from tiering.errors import UsageError

DATA = Path(__file__).resolve().parent.parent / "data" / "access"
TRAINER_ARN = "arn:aws:iam::123456789012:user/trainer"

IMAGENET = 1
FRAUD = 2
IMAGENET_WARM = 3


def _index() -> DatasetPrefixIndex[int]:
    return DatasetPrefixIndex(
        [
            ("ml-hot", "hot/dataset/imagenet-mini/2024.1/", IMAGENET),
            ("ml-hot", "hot/model/fraud/v3/", FRAUD),
            ("ml-warm", "warm/dataset/imagenet-mini/2024.1/", IMAGENET_WARM),
        ]
    )


def _read(key: str, at: datetime, *, bucket: str = "ml-hot", principal: str | None = None) -> AccessEvent:
    return AccessEvent(bucket, key, at, "GET", "jsonl", principal=principal)


def _at(day: int, hour: int = 12) -> datetime:
    return datetime(2025, 2, day, hour, 0, 0, tzinfo=UTC)


# --- DatasetPrefixIndex ----------------------------------------------------------------------------


def test_lookup_finds_the_dataset_whose_prefix_holds_the_key() -> None:
    index = _index()
    assert index.lookup("ml-hot", "hot/dataset/imagenet-mini/2024.1/train/class 01/img_é.jpeg") == IMAGENET
    assert index.lookup("ml-hot", "hot/model/fraud/v3/weights+final.safetensors") == FRAUD
    assert index.lookup("ml-warm", "warm/dataset/imagenet-mini/2024.1/train/part-00000.tar") == IMAGENET_WARM
    assert len(index) == 3


@pytest.mark.parametrize(
    ("bucket", "key"),
    [
        ("ml-warm", "hot/dataset/imagenet-mini/2024.1/a.bin"),  # right key, other bucket
        ("ml-cold", "hot/dataset/imagenet-mini/2024.1/a.bin"),  # bucket with no datasets
        ("ml-hot", "hot/dataset/imagenet-mini/2024.10/a.bin"),  # prefix ends at a "/" boundary
        ("ml-hot", "hot/dataset/imagenet-mini/2024.1"),  # the prefix itself without its "/"
        ("ml-hot", "hot/dataset/imagenet-mini/"),  # shorter than any prefix
        ("ml-hot", ""),
    ],
)
def test_lookup_misses_keys_outside_every_prefix(bucket: str, key: str) -> None:
    assert _index().lookup(bucket, key) is None


def test_prefix_is_normalised_to_no_leading_and_one_trailing_slash() -> None:
    index: DatasetPrefixIndex[str] = DatasetPrefixIndex([("b", "/hot/dataset/x/1", "x@1")])
    assert index.lookup("b", "hot/dataset/x/1/data.bin") == "x@1"
    assert index.match("b", "hot/dataset/x/1/data.bin") == ("x@1", len("hot/dataset/x/1/"))


def test_a_prefix_added_after_a_lookup_is_seen_by_the_next_lookup() -> None:
    index = _index()
    key = "hot/dataset/new/1/train/a.bin"
    assert index.match("ml-hot", key) is None
    index.add("ml-hot", "hot/dataset/new/1/", 7)
    assert index.match("ml-hot", key) == (7, len("hot/dataset/new/1/"))
    index.add("ml-hot", "hot/dataset/new/1/train/", 8)
    assert index.lookup("ml-hot", key) == 8
    assert index.lookup("ml-hot", "hot/dataset/new/1/b.bin") == 7


def test_keys_of_one_directory_with_and_without_a_trailing_name_match_alike() -> None:
    index = _index()
    assert index.match("ml-hot", "hot/model/fraud/v3/") == (FRAUD, len("hot/model/fraud/v3/"))
    assert index.match("ml-hot", "hot/model/fraud/v3/w.bin") == (FRAUD, len("hot/model/fraud/v3/"))
    assert index.match("ml-hot", "hot/model/fraud/v3") is None
    assert index.match("ml-hot", "hot/model/fraud/v3x/w.bin") is None


def test_prefixes_of_different_depths_in_one_bucket_prefer_the_longest() -> None:
    index = DatasetPrefixIndex(
        [
            ("b", "dataset/a/1/", 10),  # tier prefix ""
            ("b", "tiers/hot/dataset/a/1/", 11),  # tier prefix "tiers/hot"
            ("b", "dataset/a/1/nested/x/", 12),
        ]
    )
    assert index.lookup("b", "dataset/a/1/f") == 10
    assert index.lookup("b", "tiers/hot/dataset/a/1/f") == 11
    assert index.lookup("b", "dataset/a/1/nested/x/f") == 12
    assert index.lookup("b", "dataset/a/1/nested/y/f") == 10


def test_adding_the_same_prefix_twice_for_the_same_dataset_is_harmless() -> None:
    index = _index()
    index.add("ml-hot", "hot/model/fraud/v3/", FRAUD)
    assert len(index) == 3


def test_a_prefix_claimed_by_two_datasets_is_refused_with_both_ids() -> None:
    index = _index()
    with pytest.raises(DatasetPrefixError) as caught:
        index.add("ml-hot", "hot/model/fraud/v3", 99)
    assert isinstance(caught.value, UsageError)
    assert "ml-hot" in str(caught.value)
    assert "dataset 2, cannot also be 99" in str(caught.value)
    assert index.lookup("ml-hot", "hot/model/fraud/v3/w.bin") == FRAUD


@pytest.mark.parametrize("prefix", ["", "/", "//"])
def test_an_empty_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(DatasetPrefixError):
        DatasetPrefixIndex([("b", prefix, 1)])


def test_lookup_stays_exact_with_a_hundred_thousand_prefixes() -> None:
    entries = [(f"tier-{n % 3}", f"t{n % 3}/dataset/set-{n // 10}/v{n % 10}/", n) for n in range(100_000)]
    index = DatasetPrefixIndex(entries)
    assert len(index) == 100_000
    for n in (0, 9, 10, 54_321, 99_999):
        assert index.lookup(f"tier-{n % 3}", f"t{n % 3}/dataset/set-{n // 10}/v{n % 10}/shard/000.tar") == n
    assert index.lookup("tier-0", "t0/dataset/set-10000/v0/x") is None


# --- ReadCounter -----------------------------------------------------------------------------------


def test_reads_fold_into_one_count_per_dataset_and_utc_day() -> None:
    counter = ReadCounter(_index())
    for hour in (0, 13, 23):
        counter.add(_read("hot/dataset/imagenet-mini/2024.1/a.bin", _at(6, hour)))
    counter.add(_read("hot/dataset/imagenet-mini/2024.1/b.bin", _at(7, 0)))
    counter.add(_read("hot/model/fraud/v3/w.bin", _at(6)))
    assert counter.counts() == {
        (IMAGENET, date(2025, 2, 6)): 3,
        (IMAGENET, date(2025, 2, 7)): 1,
        (FRAUD, date(2025, 2, 6)): 1,
    }
    assert len(counter) == 3
    assert counter.counted == 5


def test_manifest_reads_are_ours_and_not_counted_but_a_member_dir_named_alike_is() -> None:
    counter = ReadCounter(_index())
    assert counter.add(_read("hot/dataset/imagenet-mini/2024.1/_tiering/manifest.json", _at(6))) is None
    assert counter.add(_read("hot/dataset/imagenet-mini/2024.1/sub/_tiering/x.bin", _at(6))) == IMAGENET
    assert (counter.internal, counter.counted) == (1, 1)


def test_reads_by_an_ignored_principal_are_left_out() -> None:
    counter = ReadCounter(_index(), ignore_principals=["tiering-mover"])
    counter.add(_read("hot/model/fraud/v3/w.bin", _at(6), principal="tiering-mover"))
    counter.add(_read("hot/model/fraud/v3/w.bin", _at(6), principal="notebook-7"))
    counter.add(_read("hot/model/fraud/v3/w.bin", _at(6)))
    assert counter.counts() == {(FRAUD, date(2025, 2, 6)): 2}
    assert counter.ignored_principal == 1


def test_keys_and_labels_without_a_dataset_count_as_unmatched() -> None:
    counter = ReadCounter(_index())
    counter.add(_read("scratch/tmp.bin", _at(6)))
    counter.add(AccessEvent("", "", _at(6), "GET", "jsonl", dataset="imagenet-mini@2024.1"))
    assert counter.counts() == {}
    assert counter.unmatched == 2


def test_direct_dataset_reads_resolve_their_label() -> None:
    labels = {"imagenet-mini@2024.1": IMAGENET}
    counter = ReadCounter(_index(), resolve_label=labels.get)
    assert counter.add(AccessEvent("", "", _at(6), "GET", "jsonl", dataset="imagenet-mini@2024.1")) == IMAGENET
    assert counter.add(AccessEvent("", "", _at(6), "GET", "jsonl", dataset="unknown@1")) is None
    assert counter.counts() == {(IMAGENET, date(2025, 2, 6)): 1}
    assert counter.unmatched == 1


def test_drain_hands_over_counts_and_latest_reads_then_starts_empty() -> None:
    counter = ReadCounter(_index())
    counter.add(_read("hot/model/fraud/v3/w.bin", _at(6, 9)))
    counter.add(_read("hot/model/fraud/v3/w.bin", _at(6, 21)))
    counter.add(_read("hot/model/fraud/v3/w.bin", _at(6, 3)))
    batch = counter.drain()
    assert batch == ReadBatch({(FRAUD, date(2025, 2, 6)): 3}, {FRAUD: _at(6, 21)})
    assert counter.counts() == {}
    assert counter.drain() == ReadBatch({}, {})
    assert counter.counted == 3


def test_sample_access_log_rolls_up_to_two_dataset_days() -> None:
    with (DATA / "s3-access.log").open(encoding="utf-8") as lines:
        events, _ = parse_lines(lines, "s3-access-log")
    counter = ReadCounter(_index())
    counter.add_all(events)
    assert counter.counts() == {(IMAGENET, date(2025, 2, 6)): 2, (FRAUD, date(2025, 2, 6)): 1}
    assert (counter.counted, counter.internal, counter.unmatched) == (3, 1, 0)


# --- the fast path: ObjectRead tuples -----------------------------------------------------------------

OWN_KEY = "AKIATIERINGOWN"


def _log_line(
    op: str,
    key: str,
    status: str = "200",
    *,
    bucket: str = "ml-hot",
    stamp: str = "06/Feb/2025:10:00:00 +0000",
    requester: str = TRAINER_ARN,
    request: str | None = None,
    agent: str = '"aws-cli/2.15.0"',
) -> str:
    uri = request if request is not None else f'"GET /{bucket}/{key} HTTP/1.1"'
    return (
        f"79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be {bucket} [{stamp}] 192.0.2.3 "
        f"{requester} REQ1 {op} {key} {uri} {status} - 10 10 1 1 \"-\" {agent} - hostid= SigV4"
    )


def _mixed_s3_access_log() -> list[str]:
    """The sample log, then more of what a real log holds, ten times over (so caches are hit and missed)."""
    member = "hot/dataset/imagenet-mini/2024.1/train/part-00001.tar"
    extra = [
        _log_line("REST.GET.OBJECT", member, stamp="06/Feb/2025:23:59:59 +0000"),
        _log_line("REST.GET.OBJECT", member, "206", stamp="07/Feb/2025:01:00:00 +0200"),  # 23:00 UTC, 6 Feb
        _log_line("REST.GET.OBJECT", member, stamp="07/Feb/2025:00:00:00 -0100"),  # 01:00 UTC, 7 Feb
        _log_line("REST.GET.OBJECT", member, requester=OWN_KEY),  # tiering's own copy
        _log_line("REST.GET.OBJECT", member, requester="-"),
        _log_line("REST.GET.OBJECT", "hot/dataset/imagenet-mini/2024.1/train/a%2520b%252Bc.bin"),
        _log_line("REST.GET.OBJECT", "hot/model/fraud/v3/w%2Bx+y.bin"),  # encoded once: "w x y.bin"
        _log_line("REST.GET.OBJECT", "hot/dataset/imagenet-mini/2024.1/_tiering/manifest.json"),
        _log_line("REST.GET.OBJECT", "hot/dataset/imagenet-mini/2024.10/x.bin"),  # no dataset
        _log_line("REST.GET.OBJECT", member, bucket="ml-cold"),  # no dataset in that bucket
        _log_line("REST.GET.OBJECT", "scratch/notes.txt"),
        _log_line("REST.HEAD.OBJECT", member),
        _log_line("REST.GET.BUCKET", "-", request='"GET /ml-hot?list-type=2 HTTP/1.1"'),
        _log_line("REST.COPY.OBJECT_GET", member),
        _log_line("REST.GET.OBJECT", member, "404"),
        _log_line("REST.GET.OBJECT", member, "304"),
        _log_line("REST.GET.OBJECT", member, "403", request=f'"GET /ml-hot/{member}?a=" 200 HTTP/1.1"'),
        # the first " HTTP/" is in the query: the status follows the second one
        _log_line("REST.GET.OBJECT", member, request=f'"GET /ml-hot/{member}?q=a HTTP/z" x HTTP/1.1"'),
        _log_line("REST.GET.OBJECT", member, agent='"curl/8 \" 500 x"'),
        _log_line("REST.GET.OBJECT", member, request="-"),  # no request-URI at all, status follows
        _log_line("REST.GET.OBJECT", member, request='"GET /ml-hot/x HTTP/1.1" 2OO'),  # no status: malformed
        _log_line("REST.GET.OBJECT", "-"),  # malformed: no key
        _log_line("REST.GET.OBJECT", member, stamp="06/Feb/2025:10:00:60 +0000"),  # malformed: bad time
        _log_line("GETOBJECT", member),  # malformed: not an operation
        "  " + _log_line("REST.GET.OBJECT", member) + "  ",
        "",
        "garbage",
    ]
    sample = (DATA / "s3-access.log").read_text(encoding="utf-8").splitlines()
    return (sample + extra) * 10


def _count_s3_access_log(lines: list[str], *, fast: bool) -> tuple[IngestStats, tuple[int, ...], ReadBatch[int]]:
    stats = IngestStats()
    counter = ReadCounter(_index(), ignore_principals=[OWN_KEY])
    if fast:
        counter.add_object_reads(iter_object_reads(lines, "s3-access-log", stats))
    else:
        counter.add_all(iter_events(lines, "s3-access-log", stats))
    totals = (counter.counted, counter.internal, counter.ignored_principal, counter.unmatched)
    return stats, totals, counter.drain()


def test_object_reads_count_exactly_what_events_count_on_a_mixed_log() -> None:
    lines = _mixed_s3_access_log()
    fast = _count_s3_access_log(lines, fast=True)
    general = _count_s3_access_log(lines, fast=False)
    assert fast == general
    stats, (counted, internal, ignored, unmatched), batch = fast
    assert (stats.lines, stats.events, stats.skipped_non_read, stats.malformed, stats.blank) == (440, 200, 130, 90, 20)
    assert [m.line_no for m in stats.malformed_examples][:9] == [13, 14, 15, 17, 38, 39, 40, 41, 44]
    assert (counted, internal, ignored, unmatched) == (140, 20, 10, 30)
    assert batch.counts == {
        (IMAGENET, date(2025, 2, 6)): 110,
        (IMAGENET, date(2025, 2, 7)): 10,
        (FRAUD, date(2025, 2, 6)): 20,
    }
    assert batch.last_seen == {
        IMAGENET: datetime(2025, 2, 7, 1, tzinfo=UTC),
        FRAUD: datetime(2025, 2, 6, 23, 59, 59, tzinfo=UTC),
    }


def test_object_reads_counted_before_the_log_breaks_off_are_kept() -> None:
    def reads() -> Iterator[ObjectRead]:
        yield "ml-hot", "hot/model/fraud/v3/w.bin", _at(6), None
        yield "ml-hot", "scratch/x", _at(6), None
        raise OSError("connection reset")

    counter = ReadCounter(_index())
    with pytest.raises(OSError):
        counter.add_object_reads(reads())
    assert (counter.counted, counter.unmatched) == (1, 1)
    assert counter.counts() == {(FRAUD, date(2025, 2, 6)): 1}
