"""A task from a CSV or Parquet table: a target column, feature columns, encoded on the training rows alone.

What a tabular user expects, and what dropbench does:
- The kind: a non-numeric target (text, categories, booleans) is a classification; so is a numeric one whose
  values are all whole numbers with at most MAX_INFERRED_CLASSES distinct values; any other is a regression.
  `kind = "classification"` or `"regression"` in the suite overrides the rule.
- Numeric (and boolean) features: missing values are imputed with the training split's median, and a 0/1
  indicator column is added for each feature that has missing values among the training rows; then every
  column is standardized with the training split's mean and std.
- Text (categorical) features: one-hot encoded with the categories of the training rows; a missing value is a
  category of its own; a category first seen in validation or test rows encodes as all zeros. A text column
  with more than MAX_CATEGORIES distinct values, or a different value in every row, is free text or an
  identifier, not a category: refused, naming the column.
- Refused, one line naming the file and the column: an empty file, a missing target or feature column, a missing
  target value, a single class, a constant regression target, a column of another type (dates, say).
"""

import io
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api import types as ptypes
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from ..errors import UserError
from .filetask import FileTask, compression, read_verified
from .splits import RawTask

MAX_INFERRED_CLASSES = 20  # a numeric target of whole numbers with more distinct values is a regression
MAX_CATEGORIES = 100  # distinct values a text column may have to be one-hot encoded
MISSING = "\x00missing"  # the category of a missing text value: no value of a real column looks like it


def read_table(path: str, sha256: str, format: str) -> pd.DataFrame:
    """The table at `path` (verified against its checksum), with at least one column and one row."""
    data = read_verified(path, sha256)
    try:
        if format == "parquet":
            frame = _read_parquet(path, data)
        else:
            sep = "\t" if ".tsv" in (suffix.lower() for suffix in Path(path).suffixes) else ","
            frame = pd.read_csv(io.BytesIO(data), sep=sep, compression=compression(path), low_memory=False)
    except pd.errors.EmptyDataError:
        raise UserError(f"{path}: empty file; a table needs a header row and data rows") from None
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - pandas' and pyarrow's parse errors are many; each is one line here
        lines = str(error).strip().splitlines()
        raise UserError(f"{path}: cannot read as {format}: {lines[0] if lines else type(error).__name__}") from None
    frame.columns = [str(column) for column in frame.columns]
    if frame.shape[1] == 0:
        raise UserError(f"{path}: empty file; a table needs a header row and data rows")
    if len(frame) == 0:
        raise UserError(f"{path}: no rows (a header only)")
    return frame


def _read_parquet(path: str, data: bytes) -> pd.DataFrame:
    try:
        import pyarrow  # noqa: F401 - pandas reads Parquet through it
    except ImportError:
        raise UserError(f"{path}: reading Parquet needs pyarrow: pip install 'dropbench[parquet]'") from None
    return pd.read_parquet(io.BytesIO(data))


def load_table_task(task: FileTask) -> RawTask:
    """The table's feature columns (a DataFrame, encoded later on the training split) and its encoded target."""
    if task.target is None:
        raise ValueError(f"file task {task.name} reads a table but names no target")
    frame = read_table(task.path, task.sha256, task.format)
    features = _feature_columns(frame, task, task.path)
    test = None
    if task.test_path is not None and task.test_sha256 is not None:
        test = read_table(task.test_path, task.test_sha256, task.format)
        _feature_columns(test, task, task.test_path)  # the same columns must be there, of the same sort
        for column in features:
            if _numeric(frame[column].dtype) and not _numeric(test[column].dtype):
                example = test[column].dropna().iloc[0] if test[column].notna().any() else None
                raise UserError(
                    f"{task.test_path}: column '{column}' is not numeric (e.g. {example!r}), as it is in {task.path}"
                )
    y = frame[task.target]
    kind = task.kind or infer_kind(y)
    _check_target(y, kind, task.path)
    if test is not None:
        _check_target(test[task.target], kind, task.test_path or "", test_set=True)
    for column in features:
        check_feature(frame[column], task.path)
    y_all = y if test is None else pd.concat([y, test[task.target]], ignore_index=True)
    codes = encode_target(y_all, kind)
    x_test = None if test is None else test[features]
    y_test = None if test is None else codes[len(y) :]
    return RawTask(
        frame[features],
        codes[: len(y)],
        x_test,
        y_test,
        classification=kind == "classification",
        transform=encode_splits,
    )


def _feature_columns(frame: pd.DataFrame, task: FileTask, path: str) -> list[str]:
    """The feature columns: as declared, or every column but the target; each present in `frame`."""
    target = task.target or ""
    columns = list(frame.columns)
    if target not in columns:
        raise UserError(f"{path}: no column '{target}' (the target); columns: {_listed(columns)}")
    features = list(task.features) if task.features is not None else [c for c in columns if c != target]
    missing = [c for c in features if c not in columns]
    if missing:
        raise UserError(f"{path}: no column '{missing[0]}' (a feature); columns: {_listed(columns)}")
    if not features:
        raise UserError(f"{path}: no feature column besides the target '{target}'")
    return features


def _listed(columns: list[str], most: int = 20) -> str:
    shown = ", ".join(columns[:most])
    return shown + (f", ... ({len(columns)} in all)" if len(columns) > most else "")


def infer_kind(y: pd.Series) -> str:
    """'classification' for a non-numeric target, or whole numbers with at most MAX_INFERRED_CLASSES distinct
    values; 'regression' otherwise."""
    if ptypes.is_bool_dtype(y.dtype) or not ptypes.is_numeric_dtype(y.dtype):
        return "classification"
    values = y.dropna().to_numpy(dtype=np.float64)
    whole = bool(np.all(np.isfinite(values) & (values == np.round(values))))
    return "classification" if whole and len(np.unique(values)) <= MAX_INFERRED_CLASSES else "regression"


def _check_target(y: pd.Series, kind: str, path: str, test_set: bool = False) -> None:
    where = f"{path}: column '{y.name}' (the target)"
    missing = int(y.isna().sum())
    if missing:
        raise UserError(f"{where} has {missing} missing values; remove those rows or choose another target")
    if kind == "regression":
        if ptypes.is_bool_dtype(y.dtype) or not ptypes.is_numeric_dtype(y.dtype):
            raise UserError(f"{where} is not numeric (e.g. {y.iloc[0]!r}); a regression needs numbers (kind)")
        values = y.to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise UserError(f"{where} has infinite values; a regression needs finite numbers")
        if not test_set and np.ptp(values) == 0:
            raise UserError(f"{where} is constant ({values[0]:g}); there is nothing to learn")
    elif not test_set and y.nunique() < 2:
        raise UserError(f"{where} has a single class ({y.iloc[0]!r}); a classification needs two or more")


def encode_target(y: pd.Series, kind: str) -> np.ndarray:
    """Class codes 0..K-1 in sorted class order (numbers by value, text as text), or float32 values."""
    if kind == "regression":
        return y.to_numpy(dtype=np.float32)
    values = y if ptypes.is_numeric_dtype(y.dtype) and not ptypes.is_bool_dtype(y.dtype) else y.astype(str)
    codes, _ = pd.factorize(values, sort=True)
    return np.asarray(codes, dtype=np.int64)


def _numeric(dtype: object) -> bool:
    return ptypes.is_numeric_dtype(dtype)  # booleans included: they encode as 0 and 1


def _text(dtype: object) -> bool:
    return isinstance(dtype, pd.CategoricalDtype) or ptypes.is_object_dtype(dtype) or ptypes.is_string_dtype(dtype)


def check_feature(column: pd.Series, path: str) -> None:
    """A numeric column, or a text column that one-hot encoding can use (see the module's rules)."""
    if _numeric(column.dtype):
        return
    if not _text(column.dtype):
        raise UserError(
            f"{path}: column '{column.name}' has type {column.dtype}; features are numbers, booleans or text "
            "(categories): convert it, or leave it out with features = [...]"
        )
    present = column.dropna()
    distinct = present.astype(str).nunique()
    if distinct > MAX_CATEGORIES or (distinct == len(present) and distinct > 1):
        example = present.iloc[0]
        raise UserError(
            f"{path}: column '{column.name}' is text with {distinct} distinct values in {len(present)} rows (e.g. "
            f"{example!r}): free text or an identifier, not a category (a text column is one-hot encoded when it has "
            f"at most {MAX_CATEGORIES} values and repeats some); leave it out with features = [...] or encode it"
        )


def _as_float(x: pd.DataFrame) -> np.ndarray:
    # Booleans become 0/1, pandas' nullable NA becomes NaN: what SimpleImputer takes.
    return x.astype("float64").to_numpy()


def _as_text(x: pd.DataFrame) -> np.ndarray:
    # Every value as text (a column mixing 1 and "a" stays one column), a missing value as its own category.
    return x.astype(object).where(x.notna(), MISSING).astype(str).to_numpy()


def make_encoder(x_train: pd.DataFrame) -> ColumnTransformer:
    """Numeric columns: median-imputed with missing indicators, then standardized; text columns: one-hot with a
    category for missing values and all zeros for unseen ones. Dense float32."""
    numeric = [i for i, dtype in enumerate(x_train.dtypes) if _numeric(dtype)]
    text = [i for i, dtype in enumerate(x_train.dtypes) if not _numeric(dtype)]
    numeric_steps = make_pipeline(
        FunctionTransformer(_as_float),
        SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
        StandardScaler(),
        FunctionTransformer(partial(np.asarray, dtype=np.float32)),
    )
    text_steps = make_pipeline(
        FunctionTransformer(_as_text),
        OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float32),
    )
    return ColumnTransformer([("numeric", numeric_steps, numeric), ("text", text_steps, text)], sparse_threshold=0.0)


def encode_splits(
    x_train: pd.DataFrame, x_val: pd.DataFrame, x_test: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit the encoder on the training rows only; the three splits as float32 C-contiguous arrays."""
    encoder = make_encoder(x_train).fit(x_train)
    train, val, test = (np.ascontiguousarray(encoder.transform(x), np.float32) for x in (x_train, x_val, x_test))
    return train, val, test
