"""The questions of a quarterly access review, answered in pandas over the published dataset.

Every read starts from a published run manifest (``runs/<run_id>.json`` with status
"published"): only the files it lists, only the columns asked for and only that run's rows are
read, so a snapshot still being written, or one whose run never published, is never seen.

"Unused" is exact, never a guess: a service is unused only when the entity's access-advisor
job completed and the service's last use is older than ``days`` before that job's completion
(``collected_at``, not today). An entity younger than the window is "too_new" (it has not been
watched for ``days`` yet); an entity whose job did not complete is "unknown" (no data is not
"unused"). ``days`` may not exceed access advisor's 400-day tracking period, beyond which a
missing last use proves nothing. ``docs/analysis.md`` is the analyst's guide.

The parts: :mod:`~crawler.analysis.read` (the dataset, snapshots, example SQL),
:mod:`~crawler.analysis.review` (the review's questions), :mod:`~crawler.analysis.policy`
(least privilege), :mod:`~crawler.analysis.scp` (SCP reviews over the Organizations view).
"""
from crawler.analysis.policy import LeastPrivilege, least_privilege
from crawler.analysis.read import (
    CHANGES,
    COMPLETED,
    DEFAULT_DAYS,
    STALE,
    TOO_NEW,
    TRACKING_PERIOD_DAYS,
    UNKNOWN,
    UNUSED,
    AnalysisError,
    Snapshot,
    example_queries,
    example_setup,
    load,
    open_snapshot,
    snapshots,
)
from crawler.analysis.review import account_summary, compare, stale_entities, unused_services, widest_gaps
from crawler.analysis.scp import NoOrganizationsView, scp_review, scp_summary

__all__ = ["CHANGES", "COMPLETED", "DEFAULT_DAYS", "STALE", "TOO_NEW", "TRACKING_PERIOD_DAYS", "UNKNOWN", "UNUSED",
           "AnalysisError", "LeastPrivilege", "NoOrganizationsView", "Snapshot", "account_summary", "compare",
           "example_queries", "example_setup", "least_privilege", "load", "open_snapshot", "scp_review",
           "scp_summary", "snapshots", "stale_entities", "unused_services", "widest_gaps"]
