"""The service catalog and what policy documents grant."""
from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from crawler.sim.catalog import load_catalog
from crawler.sim.policies import grants_of_document, merge_grants

CATALOG = load_catalog()


def document(*actions: str, effect: str = "Allow") -> dict:
    return {"Version": "2012-10-17", "Statement": [{"Effect": effect, "Action": list(actions), "Resource": "*"}]}


def test_catalog_namespaces_are_sorted_unique_lowercase() -> None:
    namespaces = list(CATALOG.namespaces)
    assert namespaces == sorted(set(namespaces))
    assert all(ns == ns.lower() for ns in namespaces)
    assert len(namespaces) >= 300
    assert CATALOG.source.startswith("botocore ")


@pytest.mark.parametrize("namespace", ["s3", "ec2", "iam", "lambda"])
def test_the_first_action_tracking_services_track_actions(namespace: str) -> None:
    assert CATALOG.get(namespace).tracks_actions


def test_star_grants_every_service_and_tracked_action() -> None:
    grants = grants_of_document(document("*"), CATALOG)
    assert set(grants) == set(CATALOG.namespaces)
    assert grants["s3"] == frozenset(CATALOG.get("s3").tracked_actions)


@pytest.mark.parametrize(("action", "expected"), [
    ("s3:*", lambda s3: set(s3)),
    ("s3:Get*", lambda s3: {a for a in s3 if a.startswith("Get")}),
    ("S3:get*", lambda s3: {a for a in s3 if a.startswith("Get")}),
    ("s3:NoSuchAction", lambda s3: set()),
])
def test_action_patterns_select_tracked_actions(action: str, expected) -> None:
    grants = grants_of_document(document(action), CATALOG)
    assert grants["s3"] == frozenset(expected(CATALOG.get("s3").tracked_actions))


def test_deny_statements_and_unknown_services_grant_nothing() -> None:
    assert grants_of_document(document("s3:*", effect="Deny"), CATALOG) == {}
    assert grants_of_document(document("notaservice:*"), CATALOG) == {}


def test_url_encoded_json_documents_are_read() -> None:
    text = quote(json.dumps(document("sqs:*", "ec2:DescribeInstances")))
    assert set(grants_of_document(text, CATALOG)) == {"sqs", "ec2"}


def test_single_statement_and_single_action_forms_are_read() -> None:
    text = json.dumps({"Statement": {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"}})
    assert set(grants_of_document(text, CATALOG)) == {"kms"}


def test_merge_is_a_union() -> None:
    merged = merge_grants([grants_of_document(document("s3:Get*"), CATALOG),
                           grants_of_document(document("s3:Put*", "sqs:*"), CATALOG)])
    s3 = CATALOG.get("s3").tracked_actions
    assert merged["s3"] == frozenset(a for a in s3 if a.startswith(("Get", "Put")))
    assert "sqs" in merged
