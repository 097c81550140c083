"""Account lists as table, CSV and JSON: round trips, and hostile names from AWS."""
from __future__ import annotations

import csv
import io
import json
import unicodedata
from datetime import datetime, timezone

import pytest

from crawler.errors import UsageError
from crawler.listing import FIELDS, MAX_CELL_WIDTH, display_width, format_accounts, visible
from crawler.sources.organizations import Account

HOSTILE_NAMES = [
    "two\nlines", "carriage\rreturn", 'say "hi"', "comma, name", "semi;colon", "tab\there", "back\\slash",
    "ünïcödé 名前 🚀", "e\u0301combining", "\x1b[31mred\x1b[0m", "\u202eright-to-left", "line\u2028separator",
    "zero\u200bwidth", "nul\x00byte", "lone\ud800surrogate", "=HYPERLINK(\"x\")", "  padded  ", "", "x" * 5000,
]


def make_account(account_id: str = "000123456789", name: str = "payments-prod", **changes: object) -> Account:
    """An account with every field set."""
    fields: dict[str, object] = dict(
        id=account_id, name=name, email=f"aws+{account_id}@example.com",
        arn=f"arn:aws:organizations::000000000001:account/o-abcdefghij/{account_id}", state="ACTIVE",
        ou_path="Root/Workloads/Prod", ou_path_ids="r-ab12/ou-ab12-aaaaaaaa/ou-ab12-bbbbbbbb",
        joined_at=datetime(2024, 5, 26, 10, 33, 34, tzinfo=timezone.utc), tags=(("env", "prod"), ("team", "web")))
    fields.update(changes)
    return Account(**fields)  # type: ignore[arg-type]


ACCOUNTS = [
    make_account("000123456789", "payments-prod"),
    make_account("100000000000", "management", ou_path="Root", ou_path_ids="r-ab12", tags=()),
    make_account("000000000003", "static", email=None, arn=None, state=None, ou_path=None, ou_path_ids=None,
                 joined_at=None, tags=(("k", "v=1, w"),)),
]


def parse_csv(text: str) -> list[dict[str, str]]:
    """The CSV output read back with the csv module."""
    return list(csv.DictReader(io.StringIO(text, newline="")))


def test_unknown_format_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="table, csv, json"):
        format_accounts(ACCOUNTS, "yaml")


def test_empty_list() -> None:
    assert format_accounts([], "table").splitlines()[0].split() == ["id", "name", "ou_path", "state", "tags"]
    assert parse_csv(format_accounts([], "csv")) == []
    assert json.loads(format_accounts([], "json")) == []


def test_json_round_trip() -> None:
    records = json.loads(format_accounts(ACCOUNTS, "json"))
    assert [record["id"] for record in records] == ["000123456789", "100000000000", "000000000003"]
    assert records[0] == {
        "id": "000123456789", "name": "payments-prod", "email": "aws+000123456789@example.com",
        "arn": "arn:aws:organizations::000000000001:account/o-abcdefghij/000123456789", "state": "ACTIVE",
        "ou_path": "Root/Workloads/Prod", "ou_path_ids": "r-ab12/ou-ab12-aaaaaaaa/ou-ab12-bbbbbbbb",
        "joined_at": "2024-05-26T10:33:34Z", "tags": {"env": "prod", "team": "web"}}
    assert records[2]["state"] is None and records[2]["joined_at"] is None and records[2]["tags"] == {"k": "v=1, w"}


def test_csv_round_trip() -> None:
    rows = parse_csv(format_accounts(ACCOUNTS, "csv"))
    assert [tuple(row) for row in rows] == [FIELDS] * 3
    assert [row["id"] for row in rows] == ["000123456789", "100000000000", "000000000003"]
    assert rows[0]["joined_at"] == "2024-05-26T10:33:34Z"
    assert [json.loads(row["tags"]) for row in rows] == [{"env": "prod", "team": "web"}, {}, {"k": "v=1, w"}]
    assert (rows[2]["state"], rows[2]["email"], rows[2]["ou_path"]) == ("", "", "")


def test_table_columns_are_aligned() -> None:
    states = ["ACTIVE", "SUSPENDED", "PENDING_CLOSURE", "CLOSED"]
    accounts = [make_account(f"00000000000{index}", name, state=state) for index, (name, state) in
                enumerate(zip(["a", "名前-wide", "a-much-longer-account-name", "e\u0301"], states, strict=True))]
    lines = format_accounts([*accounts, ACCOUNTS[2]], "table").splitlines()
    assert len(lines) == len(accounts) + 3
    assert lines[0].split() == ["id", "name", "ou_path", "state", "tags"]
    assert set(lines[1]) == {"-", " "}
    assert len({display_width(line[:line.index(state)]) for line, state in zip(lines[2:6], states, strict=True)}) == 1
    assert len({display_width(line[:line.index("env=prod, team=web")]) for line in lines[2:6]}) == 1
    assert lines[6].split("  ")[0] == "000000000003" and "k=v=1, w" in lines[6]


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=lambda name: repr(name)[:24])
def test_hostile_names(name: str) -> None:
    accounts = [make_account(name=name, ou_path=f"Root/{name}", tags=(("owner", name),)), make_account("999999999999")]
    table = format_accounts(accounts, "table")
    lines = table.split("\n")[:-1]
    assert len(lines) == 4 and table.endswith("\n")
    assert not any(unicodedata.category(character).startswith("C") or character in "\u2028\u2029"
                   for character in table if character != "\n")
    assert all(display_width(line) <= 2 + 12 + 3 * (MAX_CELL_WIDTH + 2) + len("ACTIVE") for line in lines)
    if len(name) < 20:
        assert visible(name) in lines[2]
    assert parse_csv(format_accounts(accounts, "csv"))[0]["name"] == visible(name)
    assert json.loads(format_accounts(accounts, "json"))[0]["name"] == name
    assert json.loads(parse_csv(format_accounts(accounts, "csv"))[0]["tags"]) == {"owner": visible(name)}


def test_csv_escapes_names_as_the_table_does_one_line_per_account() -> None:
    accounts = [make_account(f"{index:012d}", name, ou_path=f"Root/{name}", tags=(("owner", name),))
                for index, name in enumerate(HOSTILE_NAMES)]
    text = format_accounts(accounts, "csv")
    assert text.count("\r\n") == len(text.splitlines()) == len(accounts) + 1, "a header and one line per account"
    assert not [character for character in text.replace("\r\n", "")
                if unicodedata.category(character).startswith("C") or character in "\u2028\u2029"]
    assert [(row["name"], row["ou_path"], json.loads(row["tags"])) for row in parse_csv(text)] == \
        [(visible(name), visible(f"Root/{name}"), {"owner": visible(name)}) for name in HOSTILE_NAMES]


@pytest.mark.parametrize(("text", "shown"), [
    ("plain name", "plain name"), ("a\nb", "a\\nb"), ("a\\nb", "a\\\\nb"), ("\x1b[0m", "\\x1b[0m"),
    ("\u202e", "\\u202e"), ("名前", "名前"), ("\U000e0001", "\\U000e0001"),
])
def test_visible_escapes_like_repr(text: str, shown: str) -> None:
    assert visible(text) == shown


def test_long_cells_are_shortened_in_the_table_only() -> None:
    name = "名" * 100
    table = format_accounts([make_account(name=name)], "table")
    cell = table.splitlines()[2].split("  ")[1]
    assert cell.endswith("\u2026") and display_width(cell) <= MAX_CELL_WIDTH
    assert json.loads(format_accounts([make_account(name=name)], "json"))[0]["name"] == name
