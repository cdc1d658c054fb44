"""The status vocabulary: one name for each state a femur side can end in.

Every module that sets or compares a side's status uses :class:`Status` instead of a bare
string, so a typo is an ``AttributeError`` at import time rather than a side that silently
never matches. ``Status`` is a :class:`enum.StrEnum`: each member *is* its string (``Status.OK
== "ok"``, ``json.dumps`` writes ``"ok"``, ``str()`` and f-strings give the value), so result
files, CSV tables and the Slicer module read and write exactly the strings they did before.

Which flag gives which status lives in one table, ``femurscreen.segmentation.flags.FLAGS``.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """A femur side's status, as result.json, the summary CSV and the report show it."""

    OK = "ok"  # segmented and gradeable
    NOT_FOUND = "not_found"  # no proximal femur on this side (or the guard removed a wrong bone)
    IMPLANT = "implant"  # metal in or against the femur: not graded
    TRUNCATED = "truncated"  # femur cut by the scan edge where the ROI needs it: not graded
    ERROR = "error"  # features or classification failed for this side (or the whole case)


# The one status a side is graded by, when several flags apply: the first that applies wins
# (why this order: see ``segmentation.flags``). ``ERROR`` is set after segmentation, by grading.
STATUS_PRECEDENCE: tuple[Status, ...] = (
    Status.NOT_FOUND,
    Status.IMPLANT,
    Status.TRUNCATED,
    Status.OK,
)

# The statuses whose sides are graded (see ``femurscreen.screening`` for why only these).
GRADED_STATUSES: frozenset[Status] = frozenset({Status.OK})

__all__ = ["GRADED_STATUSES", "STATUS_PRECEDENCE", "Status"]
