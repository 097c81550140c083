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
    manifest_for,
    read_table,
)

USED = "used"
VIEW_TABLE = "organizations_access"
#: The stage of the errors table that records the Organizations view's failures.
VIEW_STAGE = "organizations_access"
SCP_COLUMNS = ["target_type", "target_id", "target_name", "target_path", "target_ou_path", "policy_id", "policy_name",
               "service_namespace", "service_name", "status", "last_authenticated_at", "days_since_use", "region",
               "last_authenticated_account_id", "total_authenticated_entities", "collected_at", "error_code",
               "error_message"]
ERROR_COLUMNS = ["error_code", "error_message"]


class NoOrganizationsView(AnalysisError):
    """The snapshot was crawled without the Organizations view (``organizations_access.enabled``)."""


def scp_review(root: str | os.PathLike[str], snapshot: dt.date | str | None = None,
               days: float = DEFAULT_DAYS) -> pd.DataFrame:
    """Every (target, SCP or none, service) of the Organizations view, judged over ``days``.

    Status "used" (some account below the target used the service within ``days`` before the
    report completed) or "unused"; plus one "unknown" row per target whose report failed, with
    the error. ``policy_id`` is null for the report of all the SCPs that apply to the target.
    ``days_since_use`` is NaN when no account used the service within the tracking period.
    NoOrganizationsView (an AnalysisError) when the snapshot was crawled without the view.
    """
    window = check_days(days)
    path = os.fspath(root)
    manifest = manifest_for(path, snapshot)
    absent = NoOrganizationsView(f"snapshot {manifest.get('snapshot_date')} under {path} has no Organizations "
                                 "view: crawl with organizations_access.enabled")
    if VIEW_TABLE not in (manifest.get("tables") or {}):
        raise absent  # published before the table existed
    view = read_table(path, manifest, VIEW_TABLE, None, None)
    errors = read_table(path, manifest, "errors", None, ["stage", "entity_arn", "error_code", "error_message"])
    failed = errors[errors["stage"] == VIEW_STAGE]
    if view.empty and failed.empty:
        raise absent
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


SUMMARY_COLUMNS = ["target_type", "target_path", "target_name", "target_ou_path", "policy_id", "policy_name",
                   "services_allowed", "services_used", "services_unused", "share_unused", "error_code"]


def scp_summary(review: pd.DataFrame) -> pd.DataFrame:
    """One row per (target, SCP or none) of :func:`scp_review`: services allowed, used, unused, and the
    share unused (NaN for a report that failed, with its error code), most unused first."""
    keys = ["target_type", "target_path", "target_name", "target_ou_path", "policy_id", "policy_name"]
    plain = review.astype({key: object for key in keys})
    grouped = plain.groupby(keys, dropna=False, sort=False)
    summary = grouped.agg(services_allowed=("status", lambda status: int((status != UNKNOWN).sum())),
                          services_used=("status", lambda status: int((status == USED).sum())),
                          services_unused=("status", lambda status: int((status == UNUSED).sum())),
                          error_code=("error_code", "first")).reset_index()
    allowed = summary["services_allowed"].where(summary["services_allowed"] > 0)
    summary["share_unused"] = summary["services_unused"] / allowed
    ordered = summary.sort_values(["services_unused", "target_path"], ascending=[False, True], kind="stable",
                                  ignore_index=True)
    return categorize(ordered[SUMMARY_COLUMNS])
