"""The one Marker paginator every IAM listing of the crawl goes through."""
from __future__ import annotations

from typing import Any

import pytest

from crawler.calls import MalformedAnswer, marker_pages


def pages_of(answers: list[dict[str, Any]]) -> tuple[Any, list[dict[str, Any]]]:
    """A ``call`` that answers ``answers`` in turn, and the arguments it was called with."""
    asked: list[dict[str, Any]] = []

    def call(operation: str, **arguments: Any) -> dict[str, Any]:
        asked.append({"operation": operation, **arguments})
        return answers[len(asked) - 1]

    return call, asked


def test_pages_are_followed_by_marker_not_by_counts() -> None:
    call, asked = pages_of([{"Items": [1], "IsTruncated": True, "Marker": "a"},
                            {"Items": [], "IsTruncated": True, "Marker": "b"},
                            {"Items": [2, 3]}])
    pages = list(marker_pages(call, "list_things", MaxItems=1000))
    assert [item for page in pages for item in page["Items"]] == [1, 2, 3]
    assert asked == [{"operation": "list_things", "MaxItems": 1000},
                     {"operation": "list_things", "MaxItems": 1000, "Marker": "a"},
                     {"operation": "list_things", "MaxItems": 1000, "Marker": "b"}]


def test_a_page_already_read_is_not_read_again() -> None:
    call, asked = pages_of([{"Items": [2]}])
    pages = list(marker_pages(call, "list_things", {"Items": [1], "IsTruncated": True, "Marker": "a"}, JobId="j"))
    assert [page["Items"] for page in pages] == [[1], [2]]
    assert asked == [{"operation": "list_things", "JobId": "j", "Marker": "a"}]


def test_a_repeated_marker_is_a_malformed_answer_not_an_endless_loop() -> None:
    call, _ = pages_of([{"IsTruncated": True, "Marker": "a"}, {"IsTruncated": True, "Marker": "a"}])
    with pytest.raises(MalformedAnswer, match="repeated a Marker"):
        list(marker_pages(call, "list_things"))
