"""The ids of results files (cell_id, setup_id): a hash behind a letter, so that no spreadsheet reads one as a number.

A spreadsheet opening a CSV reads `7893406999e0` as 7893406999 (scientific notation) and `012345678901` as
12345678901, so an id of bare hex digits does not survive a round trip. Since schema 7 an id is a letter and 12
hex digits: `c7893406999e0` for a cell, `s0123456789ab` for a setup. A letter in front cannot begin a number, a
date or a formula in any spreadsheet. Files of schema 6 and before wrote the 12 hex digits alone; reading them
puts the letter in front (`upgrade_id`), so an old file's cells are the same cells.

Torch-free and pandas-free: config.py and the results readers both use it.
"""

import re

ID_PREFIXES: dict[str, str] = {"cell_id": "c", "setup_id": "s"}
_HASH_DIGITS = 12  # the last 12 hex digits of seeding.derive_seed's 64-bit hash: 2^48 ids
_BARE_HASH = re.compile(rf"[0-9a-f]{{{_HASH_DIGITS}}}")


def hash_digits(seed: int) -> str:
    """The 12 hex digits of an id (what schema 6 and before wrote as the whole id)."""
    return f"{seed:016x}"[-_HASH_DIGITS:]


def make_id(column: str, digits: str) -> str:
    """The id written in `column` for a hash of these 12 hex digits: 'c' + digits for cell_id."""
    return ID_PREFIXES[column] + digits


def upgrade_id(column: str, value: str) -> str:
    """An id as this schema writes it: 12 bare hex digits (schema 6 and before) get `column`'s letter; anything
    else (an id already of this schema, an empty cell, a summary's derived key) is returned as it is."""
    return make_id(column, value) if _BARE_HASH.fullmatch(value) else value
