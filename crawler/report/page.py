"""The review as one self-contained HTML page: inline style, inline SVG charts, a small inline script.

Nothing on the page refers to anything outside it (no CDN, font, image or script), and its
Content-Security-Policy forbids loading anything: the file can be mailed, archived with the
review and opened offline years later. Every string from the dataset is escaped by
:func:`crawler.report.markup.text`.
"""
from __future__ import annotations

import datetime as dt

from crawler import __version__
from crawler.analysis import TRACKING_PERIOD_DAYS
from crawler.report import charts
from crawler.report.assets import SCRIPT, STYLE, content_security_policy
from crawler.report.findings import Findings, column_kind
from crawler.report.markup import Column, definition_list, is_missing, sortable_table, text

#: Rows shown per table on the page (the workbook and the CSV files have every row).
PAGE_ROWS = 500
TOP_SERVICES = 25
SECTIONS = (("organization", "Organization"), ("charts", "Charts"), ("accounts", "Accounts"),
            ("unused-services", "Unused services"), ("stale-entities", "Stale users and roles"),
            ("widest-gaps", "Widest gaps"), ("scps", "Service control policies"),
            ("limits", "What this data cannot say"))
#: Shown only for a snapshot crawled with the Organizations view.
SCP_SECTION = SECTIONS[-2]
#: What the page says of a snapshot that holds no account (a crawl that selected none).
NO_ACCOUNTS = ("This snapshot holds no account: the crawl that published it selected none, so there is nothing "
               "to review.")


def render_page(findings: Findings, generated_at: dt.datetime) -> str:
    """The whole report page for ``findings``."""
    body = "".join((_organization(findings), _charts(findings), _accounts(findings), _unused_services(findings),
                    _stale_entities(findings), _widest_gaps(findings), _scps(findings), _limits(findings)))
    title = f"Access review: snapshot {findings.snapshot_date.isoformat()}"
    return ("<!DOCTYPE html>\n"
            f'<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{text(content_security_policy())}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="generator" content="access-crawler {text(__version__)}">'
            f"<title>{text(title)}</title><style>{STYLE}</style></head><body>"
            f"{_header(findings, title, generated_at)}<main>{body}</main>{_footer(findings, generated_at)}"
            f"<script>{SCRIPT}</script></body></html>\n")


def _header(findings: Findings, title: str, generated_at: dt.datetime) -> str:
    links = "".join(f'<a href="#{anchor}">{text(label)}</a>' for anchor, label in SECTIONS
                    if anchor != SCP_SECTION[0] or findings.scps is not None)
    return (f"<header><h1>{text(title)}</h1>"
            f'<p class="meta">Dataset <code>{text(findings.root)}</code>; unused means not used in the '
            f"{findings.days} days before each entity's data was collected; generated "
            f"{text(generated_at.strftime('%Y-%m-%d %H:%M UTC'))}.</p><nav>{links}</nav></header>")


def _footer(findings: Findings, generated_at: dt.datetime) -> str:
    return (f"<footer>access-crawler {text(__version__)} report of snapshot {findings.snapshot_date.isoformat()}, "
            f"generated {text(generated_at.isoformat(timespec='seconds'))}. Every figure comes from "
            "<code>crawler.analysis</code>.</footer>")


def _section(anchor: str, heading: str, content: str) -> str:
    return f'<section id="{anchor}"><h2>{text(heading)}</h2>{content}</section>'


def _columns(*fields: tuple[str, str]) -> list[Column]:
    return [Column(label, field, column_kind(field)) for field, label in fields]


def _organization(findings: Findings) -> str:
    figures = dict((label, value) for label, value, _ in findings.summary)
    unused, granted = figures["granted services unused"], figures["granted services (entity x service)"]
    share = figures["share of granted services unused"]
    headline = (f'<p class="headline">{text(f"{unused:,}")} of {text(f"{granted:,}")} granted (entity, service) '
                f"pairs were not used in the {findings.days} days before collection"
                + ("" if is_missing(share) else f" ({text(charts.share(float(share)))})") + ".</p>")
    if findings.accounts.empty:
        headline = f'<p class="headline">{text(NO_ACCOUNTS)}</p>'
    return _section("organization", "Organization", headline + definition_list("summary", findings.summary))


def _charts(findings: Findings) -> str:
    accounts = findings.accounts
    bars = [charts.Bar(_account_label(account_id, name),
                       None if is_missing(share) else float(share), f"{name} ({account_id})")
            for account_id, name, share in zip(accounts["account_id"], accounts["account_name"],
                                               accounts["share_unused"], strict=True)]
    ages = [charts.Bar(label, float(count)) for label, count in
            zip(findings.last_use_ages["last_used_ago"], findings.last_use_ages["services"], strict=True)]
    parts = ['<h3>Share of granted services unused, per account</h3>',
             charts.horizontal_bars(bars, "Share of granted services unused per account"),
             "<h3>Days since each granted service was last used (entity x service pairs)</h3>",
             charts.columns(ages, "Days since last use of granted services", highlight_last=True),
             "<h3>Share unused across snapshots</h3>", _trend_chart(findings)]
    return _section("charts", "Charts", "".join(parts))


def _account_label(account_id: str, name: object) -> str:
    return account_id if is_missing(name) or not str(name) else f"{name} ({account_id})"


def _trend_chart(findings: Findings) -> str:
    if len(findings.trend) < 2:
        return ('<p class="note">One snapshot so far: the trend appears once a second snapshot is '
                "published.</p>")
    points = [charts.Bar(day.isoformat(), None if is_missing(share) else float(share))
              for day, share in zip(findings.trend["snapshot_date"], findings.trend["share_unused"], strict=True)]
    return charts.trend_line(points, "Share of granted services unused per snapshot")


def _accounts(findings: Findings) -> str:
    columns = _columns(("account_id", "account id"), ("account_name", "name"), ("outcome", "outcome"),
                       ("entities", "entities"), ("entities_unknown", "without data"),
                       ("services_granted", "granted"), ("services_used", "used"), ("services_unused", "unused"),
                       ("services_too_new", "too new"), ("share_unused", "share unused"),
                       ("stale_entities", "stale users and roles"))
    note = ('<p class="note">Granted, used and unused count (entity, service) pairs of entities whose data was '
            "collected. Click a column header to sort.</p>")
    return _section("accounts", "Accounts", note + sortable_table("accounts-table", columns, findings.accounts))


def _unused_services(findings: Findings) -> str:
    columns = _columns(("service_namespace", "namespace"), ("service_name", "service"),
                       ("entities", "entities holding it unused"), ("accounts", "accounts"))
    note = (f'<p class="note">Services granted but not used in {findings.days} days, by how many entities hold '
            f"them unused (entities younger than {findings.days} days are not counted).</p>")
    table = sortable_table("unused-services-table", columns, findings.unused_services, TOP_SERVICES)
    return _section("unused-services", "Top unused services", note + table)


def _stale_entities(findings: Findings) -> str:
    columns = _columns(("account_id", "account id"), ("account_name", "account"), ("entity_type", "type"),
                       ("entity_name", "name"), ("entity_arn", "ARN"), ("create_date", "created"),
                       ("last_used", "last service use"), ("role_last_used", "role last used"),
                       ("services_granted", "services granted"))
    note = (f'<p class="note">Users and roles that used none of their services in {findings.days} days (a role '
            "whose RoleLastUsed falls in the window is in use). Service-linked roles are left out.</p>")
    table = sortable_table("stale-entities-table", columns, findings.stale_entities, PAGE_ROWS)
    return _section("stale-entities", "Stale users and roles", note + table)


def _widest_gaps(findings: Findings) -> str:
    columns = _columns(("account_id", "account id"), ("entity_type", "type"), ("entity_name", "name"),
                       ("entity_arn", "ARN"), ("services_granted", "granted"), ("services_used", "used"),
                       ("unused", "unused"), ("too_new", "too new"))
    note = ('<p class="note">The entities with the most granted services they did not use: the first candidates '
            "for narrower policies. &quot;too new&quot;: created within the window, so not proven yet.</p>")
    return _section("widest-gaps", "Widest gaps between granted and used",
                    note + sortable_table("widest-gaps-table", columns, findings.widest_gaps))


def _scps(findings: Findings) -> str:
    if findings.scps is None:
        return ""
    columns = _columns(("target_type", "type"), ("target_name", "name"), ("target_ou_path", "OU path"),
                       ("target_path", "entity path"), ("policy_name", "SCP"), ("services_allowed", "allowed"),
                       ("services_used", "used"), ("services_unused", "unused"), ("share_unused", "share unused"),
                       ("error_code", "report error"))
    note = (f'<p class="note">The Organizations view: for the root, each OU and each account, the services its '
            f"SCPs allow (&quot;SCP&quot; empty: all the SCPs that apply to it; otherwise one SCP attached to it) "
            f"and how many no account below it used in {findings.days} days: candidates to deny there. SCPs never "
            "restrict the management account.</p>")
    table = sortable_table("scps-table", columns, findings.scps, PAGE_ROWS)
    return _section(SCP_SECTION[0], SCP_SECTION[1], note + table)


def _limits(findings: Findings) -> str:
    start = findings.snapshot_date - dt.timedelta(days=TRACKING_PERIOD_DAYS)
    items = [
        _failed_accounts_note(findings),
        _unknown_entities_note(findings),
        f"Access advisor tracks the last {TRACKING_PERIOD_DAYS} days only (since about {start.isoformat()}): "
        "&quot;never used&quot; means not used in that period; use before it is not visible.",
        "Action-level data exists only for some services (and only when crawled with "
        "<code>advisor.granularity: ACTION_LEVEL</code>"
        + ("" if findings.granularity is None else f"; this snapshot: {text(findings.granularity)}")
        + "): for the others, a service counts as used when any of its actions was used.",
        "Recent activity can take about 4 hours to appear in access advisor: use in the last hours before "
        "the crawl may be missing.",
        "Unused is not unneeded: break-glass, disaster-recovery and yearly jobs use their permissions rarely. "
        "Ask the owner before removing access.",
    ]
    lists = "".join(f"<li>{item}</li>" for item in items)
    tables = _failed_accounts_table(findings) + _unknown_entities_table(findings)
    return _section("limits", "What this data cannot say", f'<ul class="limits">{lists}</ul>{tables}')


def _failed_accounts_note(findings: Findings) -> str:
    failed = len(findings.failed_accounts)
    if findings.accounts.empty:
        return NO_ACCOUNTS
    if not failed:
        return "Every account was crawled."
    return (f"{failed:,} account(s) were not crawled (failed or skipped): nothing is known about their entities, "
            "and none of them is counted as unused.")


def _unknown_entities_note(findings: Findings) -> str:
    unknown = len(findings.unknown_entities)
    if not unknown:
        return "Every entity's access-advisor job completed."
    return (f"{unknown:,} entit{'y' if unknown == 1 else 'ies'} in crawled accounts have no access data (job failed, "
            "timed out or skipped): unknown, never counted as unused.")


def _failed_accounts_table(findings: Findings) -> str:
    if findings.failed_accounts.empty:
        return ""
    columns = _columns(("account_id", "account id"), ("account_name", "name"), ("outcome", "outcome"),
                       ("error_code", "error"), ("error_message", "message"))
    return "<h3>Accounts not crawled</h3>" + sortable_table("failed-accounts-table", columns,
                                                            findings.failed_accounts, PAGE_ROWS)


def _unknown_entities_table(findings: Findings) -> str:
    if findings.unknown_entities.empty:
        return ""
    columns = _columns(("account_id", "account id"), ("entity_type", "type"), ("entity_name", "name"),
                       ("entity_arn", "ARN"), ("job_outcome", "job outcome"), ("error_code", "error"))
    return "<h3>Entities without data</h3>" + sortable_table("unknown-entities-table", columns,
                                                             findings.unknown_entities, PAGE_ROWS)
