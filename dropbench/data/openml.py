"""OpenML tabular tasks (`openml:<id>` or a shortcut): fetched through scikit-learn into the data dir, then
imputed, scaled and one-hot encoded by a preprocessor fit on the training rows alone."""

import gzip
import json
import urllib.error
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd
from pandas.api import types as ptypes
from sklearn import datasets
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from ..errors import UserError

# The four sets, at the sizes, of Gorishniy et al. 2021 ("Revisiting deep learning models for tabular data"),
# not the re-processed (balanced, subsampled) copies of Grinsztajn et al. 2022 (44xxx ids).
# Name, rows and target as OpenML lists them.
OPENML_SHORTCUTS: dict[str, int] = {
    "adult": 1590,  # "adult": 48,842 rows, 14 features (6 numeric, 8 nominal, some missing), target "class" (2)
    "covertype": 1596,  # "covertype": 581,012 rows, 54 numeric features, target "class" (7 cover types)
    "higgs": 23512,  # "higgs" (Higgs small): 98,050 rows, 28 numeric features, target "class" (2)
    "california-housing": 537,  # "houses": 20,640 rows, 8 numeric features, target "median_house_value"
}
_PREFIX = "openml:"


def parse_openml_name(name: str) -> int | None:
    """The OpenML data id of `openml:<id>` or a shortcut; None for a name that is neither."""
    if name in OPENML_SHORTCUTS:
        return OPENML_SHORTCUTS[name]
    if not name.startswith(_PREFIX):
        return None
    value = name.removeprefix(_PREFIX)
    if not (value.isascii() and value.isdigit() and int(value) > 0):  # isascii: isdigit alone accepts "²"
        raise UserError(f"invalid OpenML task {name!r}: expected openml:<positive integer id>")
    return int(value)


def _is_cached(data_id: int, data_home: Path) -> bool:
    """Whether every file fetch_openml reads for `data_id` is in sklearn's cache, so it needs no network.

    sklearn mirrors each URL path under <data_home>/openml/openml.org/ with ".gz" appended: the description
    api/v1/json/data/<id>, its features/ and qualities/, and the ARFF file named by the description's url,
    data/v1/download/<file_id>/<name>.arff, whose folder is the file id, not the data id.
    """
    root = data_home / "openml" / "openml.org"
    description = root / f"api/v1/json/data/{data_id}.gz"
    try:
        with gzip.open(description, "rt", encoding="utf-8") as f:
            url = json.load(f)["data_set_description"]["url"]
    except (OSError, EOFError, ValueError, KeyError, TypeError):
        return False  # absent or damaged: sklearn would download it again
    needed = [f"api/v1/json/data/{kind}/{data_id}.gz" for kind in ("features", "qualities")]
    needed.append(urlparse(url).path.lstrip("/") + ".gz")
    return all((root / path).is_file() for path in needed)


def fetch_openml_frame(data_id: int, data_home: Path, *, offline: bool = False) -> tuple[pd.DataFrame, pd.Series]:
    """Features and default target of an OpenML data set, cached under `data_home` (OpenML's column types)."""
    data_home = Path(data_home).expanduser()
    if offline and not _is_cached(data_id, data_home):
        raise UserError(
            f"openml:{data_id} is not in the cache at {data_home} and --offline forbids downloading; "
            f"run 'dropbench download openml:{data_id}' where the network is reachable"
        )
    try:
        bunch = datasets.fetch_openml(data_id=data_id, as_frame=True, parser="auto", data_home=str(data_home))
    except (urllib.error.URLError, OSError, ValueError) as exc:  # ValueError: unknown id, bad file, sparse data
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        message = " ".join(str(reason).split()) or type(exc).__name__
        raise UserError(f"openml:{data_id}: cannot fetch from OpenML: {message}") from None
    if not isinstance(bunch.target, pd.Series):  # None: no default target; DataFrame: several
        raise UserError(f"openml:{data_id} has no single default target column; only such data sets are supported")
    return bunch.data, bunch.target


def _categorical(dtype: object) -> bool:
    kinds = (ptypes.is_bool_dtype, ptypes.is_object_dtype, ptypes.is_string_dtype)
    return isinstance(dtype, pd.CategoricalDtype) or any(is_kind(dtype) for is_kind in kinds)


def target_kind(y: pd.Series) -> str:
    """'classification' for a categorical, object, bool or string target, else 'regression'."""
    return "classification" if _categorical(y.dtype) else "regression"


def encode_target(y: pd.Series, kind: str) -> np.ndarray:
    """Class codes 0..K-1 in sorted class order (int64), or float32 values for regression."""
    if y.isna().any():
        raise UserError(f"target {y.name!r} has {int(y.isna().sum())} missing values")
    if kind == "classification":
        # Sort the observed values, not a categorical's declared levels: K counts only classes that occur.
        codes, _ = pd.factorize(pd.Series(y.to_numpy(dtype=object)), sort=True)
        return codes.astype(np.int64)
    try:
        return y.to_numpy(dtype=np.float32)
    except (TypeError, ValueError):
        raise UserError(f"regression target {y.name!r} is not numeric (dtype {y.dtype})") from None


def _as_object(x: pd.DataFrame) -> pd.DataFrame:
    # SimpleImputer refuses bool columns and does not see pd.NA: object columns with np.nan suit it always.
    x = x.astype(object)
    return x.where(x.notna(), np.nan)


def make_preprocessor(x_train: pd.DataFrame) -> ColumnTransformer:
    """Median-impute and standardize numeric columns, mode-impute and one-hot the others; dense float32.

    Every column is kept, constant or empty ones included, so the width is the numeric column count plus
    the categorical levels seen in training. Levels first seen later encode as all zeros.
    """
    numeric, categorical, other = [], [], []
    for i, (name, dtype) in enumerate(x_train.dtypes.items()):
        if _categorical(dtype):
            categorical.append(i)
        elif ptypes.is_numeric_dtype(dtype):
            numeric.append(i)
        else:
            other.append(f"{name} ({dtype})")
    if other:
        raise UserError(f"unsupported feature column types: {', '.join(other)}")
    if not numeric and not categorical:
        raise UserError("the data set has no feature columns")
    numeric_steps = make_pipeline(
        SimpleImputer(strategy="median", keep_empty_features=True),
        StandardScaler(),
        # float32 here and in the encoder, so the stacked output is float32 without a float64 copy.
        FunctionTransformer(partial(np.asarray, dtype=np.float32), feature_names_out="one-to-one"),
    )
    categorical_steps = make_pipeline(
        FunctionTransformer(_as_object, feature_names_out="one-to-one"),
        SimpleImputer(strategy="most_frequent", keep_empty_features=True),
        OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float32),
    )
    # Positions, not names: a list of integer column names would be read as positions anyway.
    return ColumnTransformer(
        [("numeric", numeric_steps, numeric), ("categorical", categorical_steps, categorical)],
        sparse_threshold=0.0,
    )


def transform_splits(
    x_train: pd.DataFrame, x_val: pd.DataFrame, x_test: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit the preprocessor on the training rows only; return the three splits as float32 C-contiguous arrays."""
    preprocessor = make_preprocessor(x_train).fit(x_train)
    train, val, test = (np.ascontiguousarray(preprocessor.transform(x), np.float32) for x in (x_train, x_val, x_test))
    return train, val, test
