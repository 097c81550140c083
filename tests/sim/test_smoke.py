from crawler.sim import SimulatedOrganization


def test_operator_lists_every_account(small_org: SimulatedOrganization) -> None:
    organizations = small_org.client("organizations")
    pages = organizations.get_paginator("list_accounts").paginate()
    ids = [account["Id"] for page in pages for account in page["Accounts"]]
    assert sorted(ids) == sorted(small_org.model.accounts)


def test_served_org_answers_over_http(served_org: SimulatedOrganization) -> None:
    assert served_org.endpoint_url and served_org.endpoint_url.startswith("http://127.0.0.1:")
    roots = served_org.client("organizations").list_roots()["Roots"]
    assert roots[0]["Id"] == served_org.model.root.id
