"""The one reader of cohort CSVs: one row per case, image paths relative to the CSV's folder.

A cohort CSV has a ``case_id`` column and, depending on its use, ``ct``, ``mask``, ``t_score``,
``bone_status``, ``synthetic``... Feature extraction, VB-Net training, classifier training and
the phantom generator all read it here, so that they agree on what a cohort is:

- every cell is text, stripped (so case ``007`` stays ``007``; a UTF-8 byte-order mark from a
  spreadsheet is dropped);
- the columns a use needs (``required``) must be present, and the CSV must have cases;
- ``case_id`` is unique (a repeated case would be counted twice, or leak between folds);
- :meth:`CohortTable.path_of` resolves an image path against the CSV's folder (an absolute
  path stays as it is).

Bad input is an :class:`~femurscreen.errors.InputError` naming the CSV and saying what to fix.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from femurscreen.errors import InputError

if TYPE_CHECKING:  # pandas only for the callers that want a frame
    import pandas as pd

CASE_ID = "case_id"


@dataclass(frozen=True)
class CohortTable:
    """The rows of a cohort CSV (text cells, stripped) and where its relative paths start."""

    path: Path  # the CSV itself
    columns: tuple[str, ...]
    rows: list[dict[str, str]]

    @property
    def folder(self) -> Path:
        """The folder relative image paths are resolved against (the CSV's, absolute)."""
        return self.path.resolve().parent

    @property
    def case_ids(self) -> list[str]:
        return [row[CASE_ID] for row in self.rows]

    def path_of(self, row: dict[str, str], column: str) -> Path:
        """The file a row names in ``column``, resolved against the CSV's folder."""
        return self.folder / row[column]

    def frame(self) -> pd.DataFrame:
        """The rows as a pandas DataFrame of text columns, in CSV order."""
        import pandas as pd

        return pd.DataFrame(self.rows, columns=list(self.columns), dtype=str)


def _short(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def read_cohort_csv(
    path: str | Path,
    required: Sequence[str] = (CASE_ID,),
    *,
    what: str = "cohort CSV",
    case_id_required: bool = True,
) -> CohortTable:
    """Read and check a cohort CSV. ``required``: the columns this use needs (``case_id`` is
    required unless ``case_id_required=False``: then the column and its cells may be missing,
    for a caller that names such a case itself, as the Slicer review does after its CT; the ids
    given are still unique); ``what`` names the file in messages."""
    path = Path(path)
    needed = [c for c in required if c != CASE_ID]
    if case_id_required:
        needed.insert(0, CASE_ID)
    if not path.is_file():
        raise InputError(f"{what} not found", "check the path", path=path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [h.strip() for h in next(reader, [])]
            body = [(reader.line_num, line) for line in reader if any(c.strip() for c in line)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(
            f"cannot read the {what} ({exc})", "give a comma-separated UTF-8 text file", path
        ) from exc
    missing = [c for c in needed if c not in header]
    if missing:
        raise InputError(
            f"the {what} lacks column(s) {', '.join(missing)} (it has "
            f"{_short(header) or 'no header'})",
            f"give one row per case with columns {', '.join(needed)} "
            "(image paths relative to the CSV's folder)",
            path=path,
        )
    long = [str(n) for n, line in body if len(line) > len(header)]
    if long:
        raise InputError(
            f"the {what} has more cells than header columns on line(s) {_short(long)}",
            "quote cells that contain commas, or fix the header",
            path=path,
        )
    rows = [
        {name: (line[i].strip() if i < len(line) else "") for i, name in enumerate(header)}
        for _, line in body
    ]
    if not rows:
        raise InputError(f"the {what} has no cases", "add one row per case", path=path)
    blank = [str(n) for (n, _), row in zip(body, rows, strict=True) if not row.get(CASE_ID)]
    if blank and case_id_required:
        raise InputError(
            f"the {what} has rows without a case_id (line(s) {_short(blank)})",
            "give every row a case_id",
            path=path,
        )
    counts = Counter(row[CASE_ID] for row in rows if row.get(CASE_ID))
    repeated = sorted(case for case, n in counts.items() if n > 1)
    if repeated:
        raise InputError(
            f"repeated case_id(s) in the {what}: {_short(repeated)}",
            "list each case once, with a unique case_id",
            path=path,
        )
    return CohortTable(path, tuple(header), rows)


__all__ = ["CASE_ID", "CohortTable", "read_cohort_csv"]
