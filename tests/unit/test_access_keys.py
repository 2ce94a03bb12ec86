"""Object keys map to datasets by prefix; reads fold into one count per dataset and UTC day."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from tiering.access_formats import AccessEvent, parse_lines
from tiering.access_keys import DatasetPrefixError, DatasetPrefixIndex, ReadBatch, ReadCounter
from tiering.errors import UsageError

DATA = Path(__file__).resolve().parent.parent / "data" / "access"

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
