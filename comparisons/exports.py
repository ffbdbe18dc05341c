"""Exports of a run-log frame: CSV (for spreadsheets, formulas neutralised on request) and Parquet (exact); each
read function gives back the frame with the schema's dtypes. A frame outside the run log's schema (the votes:
comparisons.vote_log) passes `kinds`, its column -> kind, and is typed by it instead.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from comparisons.files import atomic_write
from comparisons.schema import ARROW_TYPES, BOOL, DTYPES, INT, STRING, column_kind, conform


def export_parquet(df: pd.DataFrame, path: str | os.PathLike, *, kinds: Mapping[str, str] | None = None) -> None:
    """Write the frame (not its index) to Parquet atomically."""
    table = _arrow_table(df, kinds)
    atomic_write(path, lambda f: pq.write_table(table, f))


def read_parquet(path: str | os.PathLike, *, kinds: Mapping[str, str] | None = None) -> pd.DataFrame:
    """A frame written by `export_parquet`, with the schema's dtypes (or those of `kinds`)."""
    return _typed(pd.read_parquet(path), kinds)


# OWASP's CSV injection advice: a spreadsheet runs a text cell that starts with one of these as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
QUOTE = "'"  # prefixed to such a cell (and to one that starts with it, so the prefix can be taken off again)


def _starts(values: pd.Series, prefixes: tuple[str, ...]) -> pd.Series:
    return values.str.startswith(prefixes).fillna(False).astype(bool)


def _neutralised(values: pd.Series) -> pd.Series:
    """Text cells a spreadsheet shows as text: `'` before a formula start (and before a leading `'`)."""
    return values.mask(_starts(values, (*FORMULA_STARTS, QUOTE)), QUOTE + values)


def _restored(values: pd.Series) -> pd.Series:
    """The inverse of `_neutralised`."""
    rest = values.str[1:]
    return values.mask(_starts(values, (QUOTE,)) & _starts(rest, (*FORMULA_STARTS, QUOTE)), rest)


def _text_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if isinstance(df[c].dtype, pd.StringDtype)]


def export_csv(
    df: pd.DataFrame,
    path: str | os.PathLike,
    *,
    neutralise_formulas: bool = False,
    kinds: Mapping[str, str] | None = None,
) -> None:
    """Write the frame (not its index) to CSV atomically.

    Every value is quoted and a missing one is an empty unquoted field, so an empty prompt
    ("") and a missing one stay apart; timestamps are ISO 8601 in UTC. With `neutralise_formulas`
    (files handed to a browser, which a spreadsheet may open) text cells get `neutralise`d;
    `read_csv(path, neutralised=True)` gives the frame back exactly. Numbers are never touched.
    """
    df = _typed(df, kinds)
    if neutralise_formulas:
        df = df.assign(**{c: _neutralised(df[c]) for c in _text_columns(df)})
    table = _arrow_table(df, kinds)
    options = pa_csv.WriteOptions(quoting_style="all_valid")
    atomic_write(path, lambda f: pa_csv.write_csv(table, f, options))


def read_csv(
    path: str | os.PathLike, *, neutralised: bool = False, kinds: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """A frame written by `export_csv` (`neutralised`: with neutralise_formulas). Dtypes come from the column
    names (`column_kind`, or `kinds` when given); columns outside the schema are read as strings."""
    with open(path, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f), [])
    kind_of = column_kind if kinds is None else kinds.get
    types = {name: ARROW_TYPES[kind_of(name) or STRING] for name in header}
    table = pa_csv.read_csv(
        path,
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(
            column_types=types,
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            true_values=["true"],
            false_values=["false"],
        ),
    )
    mapping = {
        pa.large_string(): DTYPES[STRING],
        pa.string(): DTYPES[STRING],
        pa.int64(): DTYPES[INT],
        pa.bool_(): DTYPES[BOOL],
    }
    df = _typed(table.to_pandas(types_mapper=mapping.get), kinds)
    if neutralised:
        df = df.assign(**{c: _restored(df[c]) for c in _text_columns(df)})
    return df


def _typed(df: pd.DataFrame, kinds: Mapping[str, str] | None) -> pd.DataFrame:
    """`conform`ed to the run log's schema, or each column of `kinds` cast to its kind's dtype."""
    if kinds is None:
        return conform(df)
    try:
        return df.astype({c: DTYPES[kinds[c]] for c in df.columns if c in kinds})
    except (TypeError, ValueError) as err:
        raise ValueError(f"the frame cannot be stored with its columns' kinds: {err}") from err


def _arrow_table(df: pd.DataFrame, kinds: Mapping[str, str] | None = None) -> pa.Table:
    if not df.columns.is_unique or not all(isinstance(c, str) for c in df.columns):
        raise ValueError("a frame to export needs unique string column names")
    df = _typed(df, kinds)
    try:
        return pa.Table.from_pandas(df, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError) as err:
        raise ValueError(f"the frame cannot be exported: {err}") from err
