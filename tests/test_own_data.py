"""Tasks read from the user's own files (issue 18): CSV, Parquet, image folders, .npz; their encoding, split and
normalization from training rows alone, their checksums in the provenance and the cell identity, a changed file
refused on resume, and every bad input as one line naming the file and the column or key."""

import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import subprocess_env

from dropbench.cli import main
from dropbench.data import load_task_data, prepare_task
from dropbench.data.tables import MAX_CATEGORIES, encode_splits, infer_kind
from dropbench.errors import UserError
from dropbench.executors import LocalExecutor
from dropbench.runner import run_suite
from dropbench.suite import load_suite

FAST = ["--epochs", "1", "--jobs", "1", "-q"]


def table(rows=120, seed=0):
    """A small table: two numbers, a category, a regression target and a class, some values missing."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=rows), rng.normal(size=rows)
    color = rng.choice(["red", "green", "blue"], size=rows)
    price = 3 * x1 - x2 + 2 * (color == "red") + rng.normal(scale=0.3, size=rows)
    frame = pd.DataFrame({"x1": x1, "x2": x2, "color": color, "price": price})
    frame["label"] = np.where(price > np.median(price), "high", "low")
    frame.loc[::11, "x1"] = np.nan
    frame.loc[::13, "color"] = None
    return frame


def suite(folder, tasks, top="seeds = 1\nkeep_rates = [1.0]\nepochs = 1\nmodel = { kind = 'mlp', hidden = [8] }\n"):
    """A suite file in `folder` with the given [[task]] bodies."""
    text = top + "".join(f"\n[[task]]\n{body}\n" for body in tasks)
    path = folder / "s.toml"
    path.write_text(text, encoding="utf-8")
    return path


def one_task(folder, body):
    return load_suite(str(suite(folder, [body]))).tasks[0]


@pytest.fixture
def housing(tmp_path):
    table().to_csv(tmp_path / "housing.csv", index=False)
    return tmp_path


# ---------------------------------------------------------------- tables


def test_a_csv_task_is_split_encoded_and_standardized_on_its_training_rows(housing):
    body = "name = 'housing'\npath = 'housing.csv'\ntarget = 'price'\nfeatures = ['x1', 'x2', 'color']"
    task = one_task(housing, body)
    assert task.data.format == "csv" and task.data.path == str((housing / "housing.csv").resolve())
    data = load_task_data(task.key)
    assert data.name == "housing" and not data.classification and data.sizes() == (72, 24, 24)
    # x1, x2, x1's missing indicator, and the colours seen in training with 'missing': 3 + 4 columns.
    assert data.input_shape == (7,)
    numeric = data.x_train[:, :3].double()
    torch.testing.assert_close(numeric.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(numeric.std(0, unbiased=False), torch.ones(3, dtype=torch.float64), atol=1e-5, rtol=0)
    one_hot = data.x_train[:, 3:]
    assert set(one_hot.unique().tolist()) == {0.0, 1.0} and (one_hot.sum(1) == 1).all()
    assert data.y_train.mean().abs() < 1e-6  # the target standardized on the training rows too


def test_the_encoder_learns_from_training_rows_only():
    train = pd.DataFrame({"n": [1.0, np.nan, 3.0, 5.0], "c": ["a", "b", None, "a"], "f": [True, False, True, True]})
    val = pd.DataFrame({"n": [np.nan], "c": ["z"], "f": [False]})  # 'z' was never seen in training
    test = pd.DataFrame({"n": [100.0], "c": ["b"], "f": [True]})
    x_train, x_val, x_test = encode_splits(train, val, test)
    # n, f, n's missing indicator (n has a missing training value; f has none), then missing, a, b.
    assert x_train.shape == (4, 6) and x_train.dtype == np.float32
    n_mean, n_std = np.mean([1, 3, 3, 5]), np.std([1, 3, 3, 5])  # the missing one imputed with the median, 3
    assert x_val[0, 0] == pytest.approx((3 - n_mean) / n_std)
    assert x_val[0, 2] > 0 and x_test[0, 2] < 0  # missing at validation: the indicator is on
    np.testing.assert_array_equal(x_val[0, 3:], [0, 0, 0])  # an unseen category: all zeros
    np.testing.assert_array_equal(x_test[0, 3:], [0, 0, 1])
    np.testing.assert_array_equal(x_train[2, 3:], [1, 0, 0])  # missing text is a category of its own


@pytest.mark.parametrize(
    ("values", "kind"),
    [
        (["a", "b", "a"], "classification"),
        ([True, False, True], "classification"),
        ([0, 1, 2, 1], "classification"),
        ([1.0, 2.0, 2.0], "classification"),
        (list(range(21)), "regression"),  # more than 20 whole numbers
        ([0.5, 1.5, 2.0], "regression"),
    ],
)
def test_the_kind_is_inferred_from_the_target(values, kind):
    assert infer_kind(pd.Series(values)) == kind


def test_the_suite_may_override_the_inferred_kind(tmp_path):
    frame = table()
    frame["grade"] = np.arange(len(frame)) % 5  # whole numbers, 5 values: a classification by the rule
    frame.to_csv(tmp_path / "g.csv", index=False)
    inferred = one_task(tmp_path, "name = 'g'\npath = 'g.csv'\ntarget = 'grade'")
    assert load_task_data(inferred.key).classification and load_task_data(inferred.key).n_outputs == 5
    declared = one_task(tmp_path, "name = 'g'\npath = 'g.csv'\ntarget = 'grade'\nkind = 'regression'")
    assert not load_task_data(declared.key).classification


def test_a_parquet_file_gives_the_same_task_as_the_csv_of_its_rows(tmp_path):
    pytest.importorskip("pyarrow")
    frame = table()
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_parquet(tmp_path / "t.parquet")
    common = "target = 'label'\nfeatures = ['x1', 'x2', 'color']"
    csv = one_task(tmp_path, f"name = 't'\npath = 't.csv'\n{common}")
    parquet = one_task(tmp_path, f"name = 't'\npath = 't.parquet'\n{common}")
    assert parquet.data.format == "parquet"
    a, b = load_task_data(csv.key), load_task_data(parquet.key)
    assert a.classification and a.n_outputs == 2 and a.input_shape == (7,)
    for which in ("train", "val", "test"):
        for x, y in zip(a.split(which), b.split(which)):
            torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_a_test_file_is_the_test_set_and_only_validation_is_carved_out(tmp_path):
    table(seed=0).to_csv(tmp_path / "train.csv", index=False)
    table(rows=30, seed=1).to_csv(tmp_path / "test.csv", index=False)
    task = one_task(tmp_path, "name = 't'\npath = 'train.csv'\ntest_path = 'test.csv'\ntarget = 'label'")
    assert task.data.test is None and task.data.test_path is not None
    assert load_task_data(task.key).sizes() == (96, 24, 30)


def test_a_relative_path_is_relative_to_the_suite_file(housing, tmp_path, monkeypatch):
    (housing / "sub").mkdir()
    shutil.move(housing / "housing.csv", housing / "sub" / "housing.csv")
    monkeypatch.chdir(tmp_path.parent)  # anywhere but the suite's folder
    task = one_task(housing, "name = 'h'\npath = 'sub/housing.csv'\ntarget = 'price'")
    assert task.data.path == str((housing / "sub" / "housing.csv").resolve())


# ---------------------------------------------------------------- images and arrays


def image_folder(root, classes=("cat", "dog", "owl"), per_class=12, size=(6, 5), mode="RGB", seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            channels = 3 if mode == "RGB" else 1
            pixels = (rng.integers(0, 60, size=(*size, channels)) + 60 * k).astype(np.uint8)
            Image.fromarray(pixels if mode == "RGB" else pixels[..., 0], mode=mode).save(root / name / f"{i}.png")
    (root / classes[0] / "notes.txt").write_text("not an image")  # skipped, as ImageFolder skips it
    return root


def test_an_image_folder_is_a_classification_of_uint8_images_normalized_per_channel(tmp_path):
    image_folder(tmp_path / "pets")
    task = one_task(tmp_path, "name = 'pets'\npath = 'pets'\nmodel = { kind = 'cnn', channels = [4], hidden = [8] }")
    assert task.data.format == "images"
    data = load_task_data(task.key)
    assert data.classification and data.n_outputs == 3 and data.input_shape == (3, 6, 5)
    assert data.x_train.dtype == torch.uint8 and data.sizes() == (22, 7, 7)
    assert data.input_mean is not None and data.input_mean.shape == (1, 3, 1, 1)
    expected = data.x_train.double().mean(dim=(0, 2, 3))  # the training split's, nothing else
    torch.testing.assert_close(data.input_mean.flatten().double(), expected, rtol=1e-6, atol=1e-4)


def test_grayscale_is_inferred_and_a_declared_size_resizes(tmp_path):
    image_folder(tmp_path / "g", mode="L", size=(9, 7))
    gray = load_task_data(one_task(tmp_path, "name = 'g'\npath = 'g'").key)
    assert gray.input_shape == (1, 9, 7)
    resized = load_task_data(one_task(tmp_path, "name = 'g'\npath = 'g'\nsize = [4, 4]\ncolor = 'rgb'").key)
    assert resized.input_shape == (3, 4, 4)


def test_an_image_test_folder_keeps_the_training_classes(tmp_path):
    image_folder(tmp_path / "train")
    image_folder(tmp_path / "test", classes=("cat", "owl"), per_class=3, seed=1)
    data = load_task_data(one_task(tmp_path, "name = 'p'\npath = 'train'\ntest_path = 'test'").key)
    assert data.sizes() == (29, 7, 6) and data.n_outputs == 3
    assert sorted(set(data.y_test.tolist())) == [0, 2]  # cat and owl keep the training folder's numbers


def test_an_npz_of_channels_last_images_and_one_of_a_table(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "img.npz", x=rng.integers(0, 255, size=(50, 8, 8, 3), dtype=np.uint8), y=np.arange(50) % 2)
    images = load_task_data(one_task(tmp_path, "name = 'i'\npath = 'img.npz'").key)
    assert images.input_shape == (3, 8, 8) and images.x_train.dtype == torch.uint8 and images.classification
    np.savez(tmp_path / "tab.npz", inputs=rng.normal(size=(50, 4)), outputs=rng.normal(size=50))
    body = "name = 't'\npath = 'tab.npz'\narrays = { x = 'inputs', y = 'outputs' }"
    tab = load_task_data(one_task(tmp_path, body).key)
    assert tab.input_shape == (4,) and not tab.classification
    np.savez(tmp_path / "float.npz", x=rng.normal(size=(50, 1, 4, 4)), y=np.arange(50) % 3)
    floats = load_task_data(one_task(tmp_path, "name = 'f'\npath = 'float.npz'").key)
    assert floats.x_train.dtype == torch.float32 and floats.input_mean is None  # standardized once
    assert floats.x_train.mean().abs() < 1e-5


# ---------------------------------------------------------------- bad input: one line naming the file and the key


def bad_table(folder, name, frame=None, text=None):
    path = folder / name
    if text is not None:
        path.write_text(text)
    else:
        frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("make", "body", "expected"),
    [
        (None, "path = 'absent.csv'\ntarget = 'y'", r"absent.csv: no such file or folder"),
        ("empty", "path = 'd.csv'\ntarget = 'y'", r"d.csv: empty file"),
        ("header", "path = 'd.csv'\ntarget = 'y'", r"d.csv: no rows \(a header only\)"),
        ("table", "path = 'd.csv'\ntarget = 'cost'", r"d.csv: no column 'cost' \(the target\); columns: x1, x2"),
        ("table", "path = 'd.csv'\ntarget = 'price'\nfeatures = ['x1', 'size']", r"no column 'size' \(a feature\)"),
        ("free-text", "path = 'd.csv'\ntarget = 'price'", r"d.csv: column 'note' is text with 120 distinct values"),
        ("one-class", "path = 'd.csv'\ntarget = 'label'", r"column 'label' \(the target\) has a single class"),
        ("missing-target", "path = 'd.csv'\ntarget = 'price'", r"'price' \(the target\) has 2 missing values"),
        ("table", "path = 'd.csv'\ntarget = 'label'\nkind = 'regression'", r"'label' \(the target\) is not numeric"),
        ("tiny", "path = 'd.csv'\ntarget = 'label'", r"d.csv: too few rows for the split \(4 rows, 2 classes"),
        ("dates", "path = 'd.npz'", r"d.npz: no array 'x'; it holds when, y"),
        (None, "path = 'd.txt'\ntarget = 'y'", r"cannot tell the format of .*d.txt from its name"),
    ],
)
def test_bad_data_is_one_line_naming_the_file_and_the_column(tmp_path, make, body, expected):
    frame = table()
    if make == "empty":
        bad_table(tmp_path, "d.csv", text="")
    elif make == "header":
        bad_table(tmp_path, "d.csv", text="x1,x2,y\n")
    elif make == "table":
        bad_table(tmp_path, "d.csv", frame)
    elif make == "free-text":
        bad_table(tmp_path, "d.csv", frame.assign(note=[f"comment number {i}" for i in range(len(frame))]))
    elif make == "one-class":
        bad_table(tmp_path, "d.csv", frame.assign(label="same"))
    elif make == "missing-target":
        bad_table(tmp_path, "d.csv", frame.assign(price=[np.nan, np.nan, *frame["price"][2:]]))
    elif make == "tiny":
        bad_table(tmp_path, "d.csv", frame.head(4).assign(label=["a", "b", "a", "b"]))
    elif make == "dates":
        np.savez(tmp_path / "d.npz", when=np.arange(4), y=np.arange(4))
    (tmp_path / "d.txt").write_text("x")
    path = suite(tmp_path, [f"name = 'd'\n{body}"])
    with pytest.raises(UserError, match=expected) as error:
        prepare_task(load_suite(str(path)).tasks[0].key)
    assert "\n" not in str(error.value)


def test_many_categories_are_refused_with_the_threshold_named(tmp_path):
    frame = pd.DataFrame({"city": [f"c{i % (MAX_CATEGORIES + 1)}" for i in range(400)], "y": np.arange(400) % 2})
    bad_table(tmp_path, "d.csv", frame)
    with pytest.raises(
        UserError, match=rf"'city' is text with {MAX_CATEGORIES + 1} distinct .* at most {MAX_CATEGORIES}"
    ):
        prepare_task(one_task(tmp_path, "name = 'd'\npath = 'd.csv'\ntarget = 'y'").key)


def test_mixed_image_sizes_and_a_single_class_folder_are_refused(tmp_path):
    image_folder(tmp_path / "mixed", classes=("a", "b"))
    from PIL import Image

    Image.new("RGB", (3, 3)).save(tmp_path / "mixed" / "b" / "odd.png")
    with pytest.raises(UserError, match=r"odd.png: 3x3 pixels, but .* is 6x5; .* declare size = \[H, W\]"):
        prepare_task(one_task(tmp_path, "name = 'm'\npath = 'mixed'").key)
    image_folder(tmp_path / "one", classes=("a",))
    with pytest.raises(UserError, match=r"one: a single class folder \('a'\)"):
        prepare_task(one_task(tmp_path, "name = 'o'\npath = 'one'").key)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("name = 'd'\ntarget = 'price'", r"task\[0\].target: for a task read from files; give its path"),
        ("name = 'd'\npath = 'd.csv'", r"task\[0\]: a table needs target = "),
        ("name = 'd'\npath = 'd.csv'\ntarget = 'price'\nsize = [4, 4]", r"task\[0\].size: applies to images tasks"),
        ("name = 'wine'\npath = 'd.csv'\ntarget = 'price'", r"'wine' is a registered task"),
        ("name = 'd'\npath = 'd.csv'\ntarget = 'price'\nsplit = { val = 0.5, test = 0.5 }", r"leaving none to train"),
        ("name = 'd'\npath = 'd.csv'\ntarget = 'price'\nsplit = { val = 1.5 }", r"split.val: a fraction of the rows"),
        ("name = 'd'\npath = 'd.csv'\ntarget = 'price'\nfeatures = ['price']", r"'price' is the target"),
        ("name = 'd'\npath = 'd.csv'\ntarget = 'price'\nkind = 'ordinal'", r"kind: unknown value 'ordinal'"),
        ("name = 'd.csv'\ntarget = 'price'", r"give its path"),
        ("name = 'mydata.csv'", r"unknown task 'mydata.csv'; to read a file, declare a task with a name and path"),
    ],
)
def test_bad_file_task_keys_are_refused_when_the_suite_is_read(tmp_path, body, expected):
    table().to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(UserError, match=expected):
        load_suite(str(suite(tmp_path, [body])))


def test_bad_data_on_the_command_line_is_exit_2_and_one_line(tmp_path, capsys):
    table().to_csv(tmp_path / "d.csv", index=False)
    path = suite(tmp_path, ["name = 'd'\npath = 'd.csv'\ntarget = 'cost'"])
    assert main(["run", str(path), "--out", str(tmp_path / "r.csv"), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "d.csv: no column 'cost' (the target)" in err and "Traceback" not in err


# ---------------------------------------------------------------- checksums, identity, resume


def test_checksums_are_in_the_provenance_and_the_cell_identity(housing):
    path = suite(housing, ["name = 'housing'\npath = 'housing.csv'\ntarget = 'label'"])
    resolved = load_suite(str(path))
    run_suite(resolved, housing / "r.csv", executor=LocalExecutor(threads=1))
    meta = json.loads((housing / "r.json").read_text())
    csv_file = str((housing / "housing.csv").resolve())
    sha = hashlib.sha256((housing / "housing.csv").read_bytes()).hexdigest()
    assert meta["data_files"]["housing"] == {csv_file: sha}
    assert meta["suite"]["tasks"][0]["data"]["sha256"] == sha
    cell = resolved.cells()[0]
    assert cell.identity()["data"]["sha256"] == sha
    rows = pd.read_csv(housing / "r.csv")
    assert rows["status"].tolist() == ["ok"] and rows["cell_id"].tolist() == [cell.cell_id]


def test_a_moved_file_is_the_same_data_a_changed_one_other_cells(housing, tmp_path):
    body = "name = 'housing'\npath = 'housing.csv'\ntarget = 'price'"
    before = load_suite(str(suite(housing, [body]))).cells()[0]
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.copy(housing / "housing.csv", moved / "housing.csv")
    assert load_suite(str(suite(moved, [body]))).cells()[0].cell_id == before.cell_id
    with (moved / "housing.csv").open("a") as stream:
        stream.write("0.1,0.2,red,1.5,high\n")
    changed = load_suite(str(suite(moved, [body]))).cells()[0]
    assert changed.cell_id != before.cell_id and changed.setup_id != before.setup_id


def test_resuming_with_a_changed_file_is_refused_with_a_clear_line(housing, capsys):
    path = suite(housing, ["name = 'housing'\npath = 'housing.csv'\ntarget = 'price'"])
    out = housing / "r.csv"
    assert main(["run", str(path), "--out", str(out), *FAST]) == 0
    with (housing / "housing.csv").open("a") as stream:
        stream.write("0.1,0.2,red,1.5,high\n")
    capsys.readouterr()
    assert main(["run", str(path), "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert "the data of task 'housing' changed since its cells there were trained" in err
    assert "housing.csv had sha256" in err and "--fresh" in err and err.count("\n") == 1
    assert len(pd.read_csv(out)) == 1  # nothing was added beside the old cell
    assert main(["run", str(path), "--out", str(out), "--fresh", *FAST]) == 0


def test_without_the_sidecar_a_changed_file_is_still_refused(housing):
    path = suite(housing, ["name = 'housing'\npath = 'housing.csv'\ntarget = 'price'"])
    out = housing / "r.csv"
    run_suite(load_suite(str(path)), out, executor=LocalExecutor(threads=1))
    (housing / "r.json").unlink()
    with (housing / "housing.csv").open("a") as stream:
        stream.write("0.1,0.2,red,1.5,high\n")
    with pytest.raises(UserError, match=r"another setup .*did a file change\?"):
        run_suite(load_suite(str(path)), out, executor=LocalExecutor(threads=1))


def test_a_worker_that_reads_other_bytes_than_the_suite_stops(housing):
    task = one_task(housing, "name = 'housing'\npath = 'housing.csv'\ntarget = 'price'")
    stale = replace(task.data, sha256="0" * 64)
    with pytest.raises(UserError, match=r"housing.csv: changed since the suite was read \(sha256 000000000000…"):
        load_task_data(stale)


def test_a_file_task_may_be_chosen_with_task_and_beside_a_bundled_one(housing, tmp_path):
    path = suite(housing, ["name = 'housing'\npath = 'housing.csv'\ntarget = 'label'"])
    out = tmp_path / "r.csv"
    assert main(["run", str(path), "--task", "housing,wine", "--out", str(out), *FAST]) == 0
    assert sorted(pd.read_csv(out)["task"]) == ["housing", "wine"]


# ---------------------------------------------------------------- workers


@pytest.mark.slow
def test_file_tasks_train_alike_in_pool_workers_and_in_process(housing, tmp_path):
    image_folder(housing / "pets")
    path = suite(
        housing,
        [
            "name = 'housing'\npath = 'housing.csv'\ntarget = 'label'",
            "name = 'pets'\npath = 'pets'\nmodel = { kind = 'cnn', channels = [4], hidden = [8] }",
        ],
        top="seeds = 2\nkeep_rates = [0.5, 1.0]\nepochs = 2\nmodel = { kind = 'mlp', hidden = [8] }\n",
    )
    frames = []
    for jobs in ("1", "2"):
        out = tmp_path / f"jobs{jobs}.csv"
        command = [sys.executable, "-m", "dropbench", "run", str(path), "--out", str(out), "--jobs", jobs, "-q"]
        done = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        frames.append(pd.read_csv(out).set_index("cell_id").sort_index())
    assert len(frames[0]) == 8 and (frames[0]["status"] == "ok").all()
    figures = ["train_loss", "val_loss", "test_loss", "test_acc"]
    pd.testing.assert_frame_equal(frames[0][figures], frames[1][figures])


@pytest.mark.slow
def test_file_tasks_run_on_ray_as_they_do_locally(housing, tmp_path):
    pytest.importorskip("ray")
    from dropbench.ray_executor import RayExecutor

    path = suite(housing, ["name = 'housing'\npath = 'housing.csv'\ntarget = 'label'"], top="seeds = 2\nepochs = 2\n")
    resolved = load_suite(str(path))
    run_suite(resolved, tmp_path / "local.csv", executor=LocalExecutor(threads=1))
    run_suite(resolved, tmp_path / "ray.csv", executor=RayExecutor())
    local, remote = (pd.read_csv(tmp_path / f"{n}.csv").set_index("cell_id").sort_index() for n in ("local", "ray"))
    assert len(local) == 6 and (remote["status"] == "ok").all()
    pd.testing.assert_frame_equal(local[["val_loss", "test_acc"]], remote[["val_loss", "test_acc"]])


def test_a_test_file_whose_numbers_are_text_is_refused(tmp_path):
    table().to_csv(tmp_path / "train.csv", index=False)
    table(rows=20, seed=1).assign(x2="unknown").to_csv(tmp_path / "test.csv", index=False)
    body = "name = 't'\npath = 'train.csv'\ntest_path = 'test.csv'\ntarget = 'label'"
    with pytest.raises(
        UserError, match=r"test.csv: column 'x2' is not numeric \(e.g. 'unknown'\), as it is in .*train.csv"
    ):
        prepare_task(one_task(tmp_path, body).key)
