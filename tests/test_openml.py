"""OpenML tasks without the network: fetch_openml is replaced, or reads a cache laid out as sklearn lays it out."""

import gzip
import json
import shutil
import urllib.error
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sklearn
import sklearn.datasets
from sklearn.utils import Bunch

from dropbench.data.openml import (
    OPENML_SHORTCUTS,
    encode_target,
    fetch_openml_frame,
    make_preprocessor,
    parse_openml_name,
    target_kind,
    transform_splits,
)
from dropbench.errors import UserError

SKLEARN_FIXTURE = Path(sklearn.__file__).parent / "datasets" / "tests" / "data" / "openml" / "id_1590"


def make_frame(n=200, seed=0):
    """Two numeric columns (one with NaNs), a 3-level categorical, a 2-class target and a numeric target."""
    rng = np.random.default_rng(seed)
    with_nans = rng.normal(10.0, 2.0, n)
    with_nans[::10] = np.nan
    x = pd.DataFrame(
        {
            "age": rng.normal(40.0, 5.0, n),
            "income": with_nans,
            "colour": pd.Categorical(rng.choice(["red", "green", "blue"], n)),
        }
    )
    y_class = pd.Series(pd.Categorical(rng.choice(["no", "yes"], n)), name="class")
    y_reg = pd.Series(rng.normal(size=n), name="price")
    return x, y_class, y_reg


def fake_fetch(calls, x, y):
    """Stands in for sklearn.datasets.fetch_openml: records its arguments, returns what it returns as_frame."""

    def fetch(**kwargs):
        calls.append(kwargs)
        return Bunch(
            data=x,
            target=y,
            frame=pd.concat([x, y], axis=1),
            categories=None,
            feature_names=list(x.columns),
            target_names=[y.name],
            DESCR="fixture",
            details={"id": str(kwargs["data_id"])},
            url=f"https://www.openml.org/d/{kwargs['data_id']}",
        )

    return fetch


def write_cache(data_home, data_id, file_id=999):
    """The four files fetch_openml reads, where sklearn caches them (gzip, ".gz" appended to the URL path)."""
    root = data_home / "openml" / "openml.org"
    url = f"https://api.openml.org/data/v1/download/{file_id}/fixture.arff"
    files = {
        f"api/v1/json/data/{data_id}.gz": json.dumps({"data_set_description": {"id": str(data_id), "url": url}}),
        f"api/v1/json/data/features/{data_id}.gz": "{}",
        f"api/v1/json/data/qualities/{data_id}.gz": "{}",
        f"data/v1/download/{file_id}/fixture.arff.gz": "@relation fixture\n",
    }
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(gzip.compress(text.encode()))
    return root


def test_shortcuts_and_openml_ids_parse():
    assert OPENML_SHORTCUTS == {"adult": 1590, "covertype": 1596, "higgs": 23512, "california-housing": 537}
    assert parse_openml_name("adult") == 1590
    assert parse_openml_name("openml:1590") == 1590
    assert parse_openml_name("openml:44129") == 44129
    for other in ("mnist", "digits", "Adult", "openml", "openml1590", ""):
        assert parse_openml_name(other) is None


@pytest.mark.parametrize("name", ["openml:abc", "openml:-3", "openml:0", "openml:", "openml:1.5", "openml:²"])
def test_bad_openml_ids_are_user_errors(name):
    with pytest.raises(UserError) as err:
        parse_openml_name(name)
    assert repr(name) in str(err.value) and "openml:<positive integer id>" in str(err.value)


def test_target_kind():
    _, y_class, y_reg = make_frame()
    assert target_kind(y_class) == "classification"
    assert target_kind(y_class.astype(object)) == "classification"
    assert target_kind(y_class.astype("string")) == "classification"
    assert target_kind(pd.Series([True, False])) == "classification"
    assert target_kind(y_reg) == "regression"
    assert target_kind(pd.Series([1, 2, 3])) == "regression"


def test_encode_target():
    y = pd.Series(pd.Categorical(["yes", "no", "maybe", "no"], categories=["yes", "no", "maybe", "never"]))
    codes = encode_target(y, "classification")
    np.testing.assert_array_equal(codes, [2, 1, 0, 1])  # sorted: maybe < no < yes; the unused level is not a class
    assert codes.dtype == np.int64
    values = encode_target(pd.Series([1, 2.5, -3]), "regression")
    assert values.dtype == np.float32
    np.testing.assert_array_equal(values, [1, 2.5, -3])
    with pytest.raises(UserError, match="missing"):
        encode_target(pd.Series(["a", None]), "classification")
    with pytest.raises(UserError, match="not numeric"):
        encode_target(pd.Series(["a", "b"]), "regression")


def test_preprocessor_is_fit_on_the_training_rows_only():
    x, _, _ = make_frame()
    x_train, x_val, x_test = x.iloc[:120].copy(), x.iloc[120:160].copy(), x.iloc[160:].copy()
    x_test["colour"] = x_test["colour"].cat.add_categories("purple")
    x_test.iloc[0, x_test.columns.get_loc("colour")] = "purple"  # a level the training rows never show
    train, val, test = transform_splits(x_train, x_val, x_test)

    assert train.shape == (120, 2 + 3) and val.shape == (40, 5) and test.shape == (40, 5)
    for array in (train, val, test):
        assert array.dtype == np.float32 and array.flags.c_contiguous and np.isfinite(array).all()
    # The scaler's statistics are the training split's (median-imputed) ones, not those of all rows.
    imputed = x_train[["age", "income"]].fillna(x_train[["age", "income"]].median())
    expected = (imputed - imputed.mean()) / imputed.std(ddof=0)
    np.testing.assert_allclose(train[:, :2], expected.to_numpy(), rtol=1e-5, atol=1e-5)
    # Test rows, NaNs included, are imputed with the training median and scaled with the training statistics.
    assert x_test["income"].isna().any()
    raw_test = x_test[["age", "income"]].fillna(x_train["income"].median())
    np.testing.assert_allclose(test[:, :2], ((raw_test - imputed.mean()) / imputed.std(ddof=0)).to_numpy(), atol=1e-5)
    # An unseen level is an all-zero one-hot row; every other row has exactly one level set.
    np.testing.assert_array_equal(test[0, 2:], 0)
    np.testing.assert_array_equal(test[1:, 2:].sum(axis=1), 1)
    np.testing.assert_array_equal(train[:, 2:].sum(axis=1), 1)


def test_preprocessor_handles_missing_categories_bools_and_constants():
    x = pd.DataFrame(
        {
            "n": [1.0, 2.0, np.nan, 4.0],
            "flag": [True, False, True, True],
            "text": pd.array(["a", pd.NA, "b", "a"], dtype="string"),
            "constant": [7, 7, 7, 7],
        }
    )
    out = make_preprocessor(x).fit_transform(x)
    assert out.dtype == np.float32 and out.shape == (4, 2 + 2 + 2)  # constant kept: n, constant, flag x2, text x2
    np.testing.assert_array_equal(out[1, 4:], [1, 0])  # the missing text takes the most frequent level, "a"
    with pytest.raises(UserError, match="unsupported"):
        make_preprocessor(pd.DataFrame({"when": pd.to_datetime(["2020-01-01", "2021-01-01"])}))


def test_fetch_returns_features_and_target(monkeypatch, tmp_path):
    x, y, _ = make_frame()
    calls = []
    monkeypatch.setattr(sklearn.datasets, "fetch_openml", fake_fetch(calls, x, y))
    got_x, got_y = fetch_openml_frame(1590, tmp_path)
    assert got_x is x and got_y is y
    assert calls == [{"data_id": 1590, "as_frame": True, "parser": "auto", "data_home": str(tmp_path)}]


def test_offline_without_a_cache_is_a_user_error(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(sklearn.datasets, "fetch_openml", fake_fetch(calls, *make_frame()[:2]))
    # Paths that contain "1590" (features, qualities, 15901's description) but no description of 1590 itself.
    write_cache(tmp_path, 1590)
    root = tmp_path / "openml" / "openml.org" / "api" / "v1" / "json" / "data"
    (root / "1590.gz").rename(root / "15901.gz")
    with pytest.raises(UserError) as err:
        fetch_openml_frame(1590, tmp_path, offline=True)
    message = str(err.value)
    assert "openml:1590" in message and str(tmp_path) in message and "--offline" in message
    assert "dropbench download openml:1590" in message and "\n" not in message
    assert calls == []


def test_offline_with_a_partial_cache_is_a_user_error(monkeypatch, tmp_path):
    monkeypatch.setattr(sklearn.datasets, "fetch_openml", fake_fetch([], *make_frame()[:2]))
    root = write_cache(tmp_path, 42)
    (root / "data" / "v1" / "download" / "999" / "fixture.arff.gz").unlink()  # sklearn would download it
    with pytest.raises(UserError, match="not in the cache"):
        fetch_openml_frame(42, tmp_path, offline=True)


def test_offline_with_a_cache_calls_fetch_openml(monkeypatch, tmp_path):
    x, y, _ = make_frame()
    calls = []
    monkeypatch.setattr(sklearn.datasets, "fetch_openml", fake_fetch(calls, x, y))
    write_cache(tmp_path, 42)
    got_x, _ = fetch_openml_frame(42, tmp_path, offline=True)
    assert got_x is x and calls[0]["data_id"] == 42 and calls[0]["data_home"] == str(tmp_path)


@pytest.mark.skipif(not SKLEARN_FIXTURE.is_dir(), reason="scikit-learn installed without its test data")
def test_offline_reads_a_real_sklearn_cache_without_the_network(monkeypatch, tmp_path):
    # sklearn's own (truncated) adult fixture, placed where fetch_openml caches it: proves the layout we check.
    import sklearn.datasets._openml as sk_openml

    def no_network(*args, **kwargs):
        raise AssertionError("fetch_openml tried the network")

    monkeypatch.setattr(sk_openml, "urlopen", no_network)
    root = tmp_path / "openml" / "openml.org"
    for name, dest in [
        ("api-v1-jd-1590.json.gz", "api/v1/json/data/1590.gz"),
        ("api-v1-jdf-1590.json.gz", "api/v1/json/data/features/1590.gz"),
        ("api-v1-jdq-1590.json.gz", "api/v1/json/data/qualities/1590.gz"),
        ("data-v1-dl-1595261.arff.gz", "data/v1/download/1595261/adult.arff.gz"),
    ]:
        (root / dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SKLEARN_FIXTURE / name, root / dest)
    x, y = fetch_openml_frame(OPENML_SHORTCUTS["adult"], tmp_path, offline=True)
    assert x.shape[1] == 14 and y.name == "class" and target_kind(y) == "classification"
    train, _, _ = transform_splits(x, x, x)
    assert train.dtype == np.float32 and np.isfinite(train).all()


@pytest.mark.parametrize(
    "error",
    [
        urllib.error.URLError("[Errno -3] Temporary failure in name resolution"),
        OSError("connection reset"),
        ValueError("Dataset with data_id 99999999 not found."),
    ],
)
def test_fetch_errors_become_one_line_user_errors(monkeypatch, tmp_path, error):
    def failing(**kwargs):
        raise error

    monkeypatch.setattr(sklearn.datasets, "fetch_openml", failing)
    with pytest.raises(UserError) as err:
        fetch_openml_frame(99999999, tmp_path)
    message = str(err.value)
    assert "openml:99999999" in message and "\n" not in message
    assert str(getattr(error, "reason", error)) in message


def test_a_data_set_without_a_single_target_is_a_user_error(monkeypatch, tmp_path):
    x, _, _ = make_frame()
    monkeypatch.setattr(sklearn.datasets, "fetch_openml", lambda **kwargs: Bunch(data=x, target=None))
    with pytest.raises(UserError, match="openml:7 has no single default target"):
        fetch_openml_frame(7, tmp_path)


def test_an_openml_task_runs_end_to_end(monkeypatch, tmp_path, capsys):
    """Registry, split, ColumnTransformer on the training rows, training and the CSV, without the network."""
    from dropbench.cli import main

    x, y = make_frame(n=300)[:2]
    calls = []
    monkeypatch.setattr(sklearn.datasets, "fetch_openml", fake_fetch(calls, x, y))
    monkeypatch.setenv("DROPBENCH_DATA", str(tmp_path))
    monkeypatch.setenv("DROPBENCH_OFFLINE", "")
    out = tmp_path / "r.csv"
    args = ["run", "--task", "openml:4242", "--keep", "0.5,1.0", "--reg", "none", "--seeds", "1", "--epochs", "2"]
    assert main([*args, "--jobs", "1", "-q", "--out", str(out)]) == 0
    frame = pd.read_csv(out)
    assert len(frame) == 2 and (frame["status"] == "ok").all() and frame["test_acc"].notna().all()
    assert calls and calls[0]["data_id"] == 4242
    assert "openml:4242 · gap_acc" in capsys.readouterr().out
