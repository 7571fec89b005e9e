import os

import cv2
import numpy as np
import pytest

from fer_bench.data import (
    FER2013_CLASSES,
    DatasetError,
    load_class_folders,
    load_dataset,
    load_fer2013_csv,
    load_fer2013_folders,
    stratified_split,
    to_face,
    write_fer2013_csv,
)
from conftest import write_kaggle_layout


def test_label_order_is_fer2013s():
    assert FER2013_CLASSES == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def test_kaggle_layout_gives_canonical_split(kaggle_dir, tmp_path):
    dataset = load_fer2013_folders(kaggle_dir, cache_dir=tmp_path / "cache")
    assert [s.name for s in dataset.splits] == ["Training", "PublicTest", "PrivateTest"]
    assert [len(s) for s in dataset.splits] == [21, 21, 21]
    for split in dataset.splits:
        assert split.X.shape == (21, 48, 48) and split.X.dtype == np.uint8
        assert np.bincount(split.y, minlength=7).tolist() == [3] * 7
    # the class is written into the top rows, so labels match folders
    assert np.all(dataset.train.X[:, 0, 0] == dataset.train.y * 30)
    assert "canonical" in dataset.split_method


def test_csv_and_folders_load_to_identical_split_and_arrays(kaggle_dir, tmp_path):
    folders = load_fer2013_folders(kaggle_dir, cache_dir=False)
    csv_path = tmp_path / "fer2013.csv"
    write_fer2013_csv(folders, csv_path)
    assert csv_path.read_text().splitlines()[0] == "emotion,pixels,Usage"
    from_csv = load_fer2013_csv(csv_path, cache_dir=False)
    for a, b in zip(folders.splits, from_csv.splits):
        assert a.name == b.name
        np.testing.assert_array_equal(a.X, b.X)
        np.testing.assert_array_equal(a.y, b.y)


def test_real_fer2013_subset_round_trips_through_csv(fer2013, tmp_path):
    """The same real images written out as the original CSV load to the same split and arrays."""
    from fer_bench.data import Dataset, Split

    subset = Dataset(
        "fer2013", "subset", fer2013.classes,
        *(Split(s.name, s.X[::97], s.y[::97]) for s in fer2013.splits),
        split_method="subset", content_key="x",
    )
    path = tmp_path / "fer2013.csv"
    write_fer2013_csv(subset, path)
    loaded = load_dataset(path, cache_dir=False)
    for a, b in zip(subset.splits, loaded.splits):
        assert a.name == b.name
        np.testing.assert_array_equal(a.X, b.X)
        np.testing.assert_array_equal(a.y, b.y)


def test_real_fer2013_split_sizes(fer2013):
    assert [(s.name, len(s)) for s in fer2013.splits] == [
        ("Training", 28709), ("PublicTest", 3589), ("PrivateTest", 3589)
    ]
    assert fer2013.train.class_counts(7).tolist() == [3995, 436, 4097, 7215, 4830, 3171, 4965]
    assert fer2013.test.class_counts(7).tolist() == [491, 55, 528, 879, 594, 416, 626]


def test_folders_without_usage_prefix_get_seeded_stratified_split(tmp_path):
    root = write_kaggle_layout(tmp_path / "plain", per_class=10, prefixes=False)
    first = load_fer2013_folders(root, cache_dir=False, seed=3)
    again = load_fer2013_folders(root, cache_dir=False, seed=3)
    assert [s.name for s in first.splits] == ["train", "validation", "test"]
    assert (len(first.train), len(first.val), len(first.test)) == (63, 7, 140)
    assert "seed=3" in first.split_method
    np.testing.assert_array_equal(first.train.X, again.train.X)


def test_csv_without_usage_gets_stratified_split(tmp_path):
    path = tmp_path / "nousage.csv"
    rows = ["emotion,pixels"] + [f"{i % 7},{' '.join(['7'] * 2304)}" for i in range(70)]
    path.write_text("\n".join(rows) + "\n")
    dataset = load_fer2013_csv(path, cache_dir=False)
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (56, 7, 7)
    assert dataset.test.class_counts(7).tolist() == [1] * 7


def test_stratified_split_keeps_proportions_and_is_seeded():
    y = np.repeat(np.arange(3), [50, 30, 20])
    parts = stratified_split(y, (0.8, 0.1, 0.1), seed=1)
    assert sorted(np.concatenate(parts).tolist()) == list(range(100))
    assert np.bincount(y[parts[0]]).tolist() == [40, 24, 16]
    assert all(np.array_equal(a, b) for a, b in zip(parts, stratified_split(y, (0.8, 0.1, 0.1), seed=1)))


def test_class_folders_any_size_and_colour(tmp_path):
    root = tmp_path / "faces"
    for name, colour in (("happy", (0, 200, 0)), ("sad", (200, 0, 0)), ("contempt", (0, 0, 200))):
        (root / name / "deeper").mkdir(parents=True)
        for i in range(10):
            image = np.zeros((120 + i, 90, 3), np.uint8)
            image[:] = colour
            cv2.imwrite(str(root / name / "deeper" / f"{i}.jpg"), image)
    dataset = load_class_folders(root, cache_dir=False)
    assert dataset.classes == ("happy", "sad", "contempt")  # FER names first, in FER order
    assert dataset.train.X.shape[1:] == (48, 48)
    assert len(dataset.train) + len(dataset.val) + len(dataset.test) == 30


def test_to_face_converts_colour_and_size():
    face = to_face(np.full((100, 80, 3), 128, np.uint8))
    assert face.shape == (48, 48) and face.dtype == np.uint8 and face[0, 0] == 128


def test_cache_makes_second_load_skip_decoding_and_invalidates_on_change(kaggle_dir, tmp_path, monkeypatch):
    import fer_bench.data as datasets

    cache = tmp_path / "cache"
    first = load_fer2013_folders(kaggle_dir, cache_dir=cache)
    assert len(list(cache.glob("arrays-*.npz"))) == 1

    def no_decoding(paths):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(datasets, "_decode_all", no_decoding)
    second = load_fer2013_folders(kaggle_dir, cache_dir=cache)
    np.testing.assert_array_equal(first.train.X, second.train.X)

    # a changed file changes the key: the cache is not trusted
    target = next((kaggle_dir / "train" / "happy").iterdir())
    cv2.imwrite(str(target), np.zeros((48, 48), np.uint8))
    os.utime(target, ns=(1, 1))
    with pytest.raises(AssertionError, match="decoded again"):
        load_fer2013_folders(kaggle_dir, cache_dir=cache)


# ----------------------------------------------------------------------------- errors


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match=r"no such folder.*--data PATH"):
        load_dataset(tmp_path / "nowhere")


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty"):
        load_dataset(tmp_path / "empty")


def test_missing_test_folder_is_named(tmp_path):
    (tmp_path / "d" / "train" / "happy").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"no test/ folder"):
        load_fer2013_folders(tmp_path / "d")


def test_unknown_class_folder_names_the_folder_and_valid_names(kaggle_dir):
    (kaggle_dir / "train" / "bored").mkdir()
    with pytest.raises(DatasetError, match=r"train/bored: unknown class folder 'bored'.*angry, disgust"):
        load_fer2013_folders(kaggle_dir, cache_dir=False)


def test_corrupt_and_empty_images_are_reported_with_their_paths(kaggle_dir):
    bad = kaggle_dir / "train" / "sad" / "Training_99999998.jpg"
    bad.write_bytes(b"this is not a jpeg")
    empty = kaggle_dir / "test" / "fear" / "PrivateTest_99999999.png"
    empty.write_bytes(b"")
    with pytest.raises(DatasetError, match=r"2 image file\(s\) could not be decoded") as info:
        load_fer2013_folders(kaggle_dir, cache_dir=False)
    assert str(bad) in str(info.value) and str(empty) in str(info.value)


def test_csv_wrong_header(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("label,image,split\n0,1 2 3,Training\n")
    with pytest.raises(DatasetError, match=r"wrong CSV header 'label,image,split'; expected 'emotion,pixels,Usage'"):
        load_fer2013_csv(path)


def test_csv_row_with_wrong_pixel_count_names_the_line(tmp_path):
    path = tmp_path / "bad.csv"
    good = " ".join(["1"] * 2304)
    path.write_text(f"emotion,pixels,Usage\n0,{good},Training\n3,{' '.join(['1'] * 2303)},PublicTest\n")
    with pytest.raises(DatasetError, match=r"line 3: 2303 pixels, expected 2304"):
        load_fer2013_csv(path, cache_dir=False)


def test_csv_bad_emotion_and_usage(tmp_path):
    good = " ".join(["1"] * 2304)
    path = tmp_path / "bad.csv"
    path.write_text(f"emotion,pixels,Usage\n9,{good},Training\n")
    with pytest.raises(DatasetError, match=r"line 2: emotion 9 is outside 0..6"):
        load_fer2013_csv(path, cache_dir=False)
    path.write_text(f"emotion,pixels,Usage\n1,{good},Testing\n")
    with pytest.raises(DatasetError, match=r"line 2: Usage is 'Testing'; every row needs Training, PublicTest"):
        load_fer2013_csv(path, cache_dir=False)


def test_non_csv_file_is_refused(tmp_path):
    path = tmp_path / "faces.zip"
    path.write_bytes(b"PK")
    with pytest.raises(DatasetError, match="not a CSV"):
        load_dataset(path)


def test_content_key_survives_a_fresh_copy_and_follows_the_pixels(kaggle_dir, tmp_path):
    import shutil

    original = load_fer2013_folders(kaggle_dir, cache_dir=tmp_path / "cache")
    # The same images copied anew (new modification times, another folder): same key, cached or not.
    copy = tmp_path / "copy"
    shutil.copytree(kaggle_dir, copy)
    for path in copy.rglob("*.jpg"):
        os.utime(path, ns=(10**18, 10**18))
    assert load_fer2013_folders(copy, cache_dir=False).content_key == original.content_key
    assert load_fer2013_folders(copy, cache_dir=tmp_path / "cache").content_key == original.content_key
    assert load_fer2013_folders(kaggle_dir, cache_dir=tmp_path / "cache").content_key == original.content_key
    # Other pixels, or a face moved to another class: another key.
    target = next((copy / "train" / "happy").iterdir())
    cv2.imwrite(str(target), np.full((48, 48), 7, np.uint8))
    assert load_fer2013_folders(copy, cache_dir=False).content_key != original.content_key
    moved = tmp_path / "moved"
    shutil.copytree(kaggle_dir, moved)
    source = next((moved / "train" / "happy").iterdir())
    source.rename(moved / "train" / "sad" / source.name)
    assert load_fer2013_folders(moved, cache_dir=False).content_key != original.content_key


def test_cache_files_without_a_record_of_their_arrays_are_rebuilt(kaggle_dir, tmp_path):
    from fer_bench._core import CacheWarning

    cache = tmp_path / "cache"
    fresh = load_fer2013_folders(kaggle_dir, cache_dir=cache)
    (path,) = cache.glob("arrays-*.npz")
    with np.load(path) as archive:
        np.savez(path, X=archive["X"], content_key=np.array(fresh.content_key))  # as the cache was written before
    with pytest.warns(CacheWarning, match="no record of its arrays"):
        assert load_fer2013_folders(kaggle_dir, cache_dir=cache).content_key == fresh.content_key
    with np.load(path) as archive:
        assert "_meta" in archive.files  # rebuilt with its record


# ----------------------------------------------------------------------------- recorded splits, own split folders


def _class_tree(root, counts: dict, seed: int = 0):
    """``root/<class>/img_<i>.png`` with ``counts[class]`` distinct gray faces each; returns root."""
    rng = np.random.default_rng(seed)
    for name, count in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            cv2.imwrite(str(root / name / f"img_{i:03d}.png"), rng.integers(0, 255, (48, 48), dtype=np.uint8))
    return root


def test_class_folder_split_is_reproducible_and_recorded(tmp_path):
    from fer_bench.experiment.harness import split_record

    root = _class_tree(tmp_path / "lab", {"anger": 20, "happiness": 30, "contempt": 10})
    first, again = load_dataset(root, cache_dir=False), load_dataset(root, cache_dir=False, seed=0)
    for a, b in zip(first.splits, again.splits):
        assert a.files == b.files and np.array_equal(a.X, b.X)
    other = load_dataset(root, cache_dir=False, seed=1)
    assert other.test.files != first.test.files
    assert first.split_settings == {"seed": 0, "fractions": [0.8, 0.1, 0.1]}
    assert first.describe()["split_settings"] == first.split_settings
    record = split_record(first)
    assert record["seed"] == 0 and record["fractions"] == [0.8, 0.1, 0.1]
    assert record["per_class"]["test"] == {"anger": 2, "contempt": 1, "happiness": 3}
    assert record["per_class"]["train"] == {"anger": 16, "contempt": 8, "happiness": 24}
    # each face's file is named beside it
    assert cv2.imread(first.test.files[0], cv2.IMREAD_GRAYSCALE).tolist() == first.test.X[0].tolist()


def test_own_split_folders_are_kept(tmp_path):
    from fer_bench.data import has_own_split, load_split_folders

    root = tmp_path / "raf"
    _class_tree(root / "train", {"Anger": 8, "happiness": 6}, seed=1)
    _class_tree(root / "val", {"anger": 2, "happiness": 2}, seed=2)
    _class_tree(root / "test", {"anger": 3, "happiness": 4, "contempt": 1}, seed=3)
    assert has_own_split(root)
    dataset = load_dataset(root, cache_dir=False)
    assert dataset.classes == ("anger", "contempt", "happiness")
    assert [(s.name, len(s)) for s in dataset.splits] == [("train", 14), ("val", 4), ("test", 8)]
    assert all(f.startswith(str(root / "val")) for f in dataset.val.files)
    assert "own split folders" in dataset.split_method and dataset.split_settings == {}
    assert load_split_folders(root, cache_dir=False).content_key == dataset.content_key


def test_own_train_and_test_folders_without_val_carve_a_recorded_validation_split(tmp_path):
    root = tmp_path / "ck"
    _class_tree(root / "train", {"anger": 10, "sadness": 10})
    _class_tree(root / "test", {"anger": 2, "sadness": 2}, seed=4)
    dataset = load_dataset(root, cache_dir=False, seed=3)
    assert [(s.name, len(s)) for s in dataset.splits] == [("train", 18), ("validation", 2), ("test", 4)]
    assert dataset.split_settings == {"seed": 3, "fractions": [0.9, 0.1], "fractions_of": "train/"}
    assert all("/test/" in f for f in dataset.test.files)


def test_fer2013_class_names_in_train_and_test_stay_the_kaggle_layout(kaggle_dir):
    from fer_bench.data import has_own_split

    assert not has_own_split(kaggle_dir)
    assert load_dataset(kaggle_dir, cache_dir=False).test.name == "PrivateTest"


def test_split_folders_without_test_are_named(tmp_path):
    from fer_bench.data import load_split_folders

    _class_tree(tmp_path / "d" / "train", {"anger": 2})
    _class_tree(tmp_path / "d" / "val", {"anger": 2})
    with pytest.raises(DatasetError, match=r"no test/ folder; a dataset with its own split holds train/<class>/"):
        load_split_folders(tmp_path / "d")


def test_the_canonical_split_has_one_key_for_every_seed_and_a_seeded_split_one_per_seed(tmp_path):
    """Models trained with other seeds on FER-2013's own split are compared and averaged on one dataset key."""
    canonical = write_kaggle_layout(tmp_path / "canonical", per_class=3)
    keys = {seed: load_fer2013_folders(canonical, cache_dir=tmp_path / "cache", seed=seed).content_key
            for seed in (0, 1, 2)}
    assert len(set(keys.values())) == 1
    csv_path = tmp_path / "fer2013.csv"
    write_fer2013_csv(load_fer2013_folders(canonical, cache_dir=False), csv_path)
    assert len({load_fer2013_csv(csv_path, cache_dir=tmp_path / "cache", seed=seed).content_key
                for seed in (0, 1)}) == 1

    seeded = write_kaggle_layout(tmp_path / "seeded", per_class=12, prefixes=False)
    zero, one = (load_fer2013_folders(seeded, cache_dir=tmp_path / "cache", seed=seed) for seed in (0, 1))
    assert zero.content_key != one.content_key and zero.split_settings["seed"] == 0
    assert not np.array_equal(zero.val.X, one.val.X)  # the seed chose another validation split
