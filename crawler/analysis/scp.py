"""Service control policy reviews over the Organizations view (the ``organizations_access`` table).

A report on a root, OU or account lists every service the SCPs that apply to it allow (or, for a
report on one SCP, that SCP allows) and when any account below it last used each one. A service
no account below a target used within the window is a candidate to deny there. The window ends
at the report's completion (``collected_at``), as everywhere in this package; a target whose
report failed has no rows, only an "unknown" one here: no data is never "unused".
"""
from __future__ import annotations

import datetime as dt
import os

import numpy as np
import pandas as pd

from crawler.analysis.read import (
    DEFAULT_DAYS,
    UNKNOWN,
    UNUSED,
    AnalysisError,
    categorize,
    check_days,
    load,
)

USED = "used"
#: The stage of the errors table that records the Organizations view's failures.
VIEW_STAGE = "organizations_access"
SCP_COLUMNS = ["target_type", "target_id", "target_name", "target_path", "target_ou_path", "policy_id", "policy_name",
               "service_namespace", "service_name", "status", "last_authenticated_at", "days_since_use", "region",
               "last_authenticated_account_id", "total_authenticated_entities", "collected_at", "error_code",
               "error_message"]
ERROR_COLUMNS = ["error_code", "error_message"]


def scp_review(root: str | os.PathLike[str], snapshot: dt.date | str | None = None,
               days: float = DEFAULT_DAYS) -> pd.DataFrame:
    """Every (target, SCP or none, service) of the Organizations view, judged over ``days``.

    Status "used" (some account below the target used the service within ``days`` before the
    report completed) or "unused"; plus one "unknown" row per target whose report failed, with
    the error. ``policy_id`` is null for the report of all the SCPs that apply to the target.
    ``days_since_use`` is NaN when no account used the service within the tracking period.
    AnalysisError when the snapshot has no Organizations view (``organizations_access.enabled``).
    """
    window = check_days(days)
    view = load(root, "organizations_access", snapshot)
    errors = load(root, "errors", snapshot, columns=["stage", "entity_arn", "error_code", "error_message"])
    failed = errors[errors["stage"] == VIEW_STAGE]
    if view.empty and failed.empty:
        raise AnalysisError(f"snapshot {snapshot or 'latest'} under {os.fspath(root)} has no Organizations view: "
                            "crawl with organizations_access.enabled")
    judged = _judge(view, window)
    unknown = failed.rename(columns={"entity_arn": "target_path"}).assign(status=UNKNOWN)
    rows = pd.concat([frame for frame in (judged, unknown) if not frame.empty], ignore_index=True)
    rows = rows.reindex(columns=SCP_COLUMNS)
    rows[ERROR_COLUMNS] = rows[ERROR_COLUMNS].astype(object)  # text, even when no report failed
    rows["status"] = pd.Categorical(rows["status"], categories=(UNUSED, USED, UNKNOWN))
    return categorize(rows.sort_values(["target_path", "policy_id", "service_namespace"], ignore_index=True,
                                       kind="stable", na_position="first"))


def _judge(view: pd.DataFrame, window: pd.Timedelta) -> pd.DataFrame:
    """The view's rows with ``status`` and ``days_since_use``, measured to each report's completion."""
    last = view["last_authenticated_at"]
    used = (last >= view["collected_at"] - window).fillna(False).astype(bool)
    since = (view["collected_at"] - last) / pd.Timedelta(days=1)
    return view.assign(status=np.where(used, USED, UNUSED), days_since_use=since.astype("float64"))
