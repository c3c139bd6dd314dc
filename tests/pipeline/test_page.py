"""The page form (``pipeline.Page``): the flat vectors the parser fills and the aggregator reads,
and the mapping everyone else reads them as."""

from __future__ import annotations

import pytest

from pipeline import EMPTY_PAGE, Page, Target, TargetHealth, TargetScrape


def test_lines_read_in_order_become_runs_of_their_families() -> None:
    page = Page.from_lines(["a 1", "a{x=\"1\"}", "b"], [1.0, 2.0, 3.0], [("a", 0), ("b", 2)])
    assert page.series == ("a 1", 'a{x="1"}', "b")
    assert page.numbers == (1.0, 2.0, 3.0)
    assert page.runs == (("a", 2), ("b", 1))
    assert isinstance(page.series, tuple) and isinstance(page.numbers, tuple)


def test_a_family_that_comes_back_is_grouped_where_it_first_appeared() -> None:
    page = Page.from_lines(["a1", "b1", "a2", "c1", "b2"], [1.0, 2.0, 3.0, 4.0, 5.0],
                           [("a", 0), ("b", 1), ("a", 2), ("c", 3), ("b", 4)])
    assert page.runs == (("a", 2), ("b", 2), ("c", 1))
    assert page.series == ("a1", "a2", "b1", "b2", "c1")
    assert page.numbers == (1.0, 3.0, 2.0, 5.0, 4.0)


def test_no_lines_is_an_empty_page() -> None:
    page = Page.from_lines([], [], [])
    assert (page.series, page.numbers, page.runs) == ((), (), ())
    assert page == {} and len(page) == 0 and not page


def test_it_reads_as_a_mapping_of_family_to_samples() -> None:
    page = Page.of({"a": [("a", 1.0), ('a{x="1"}', 2.0)], "empty": [], "b": [("b", 3.0)]})
    assert list(page) == ["a", "b"]                 # families without samples left out
    assert page["b"] == [("b", 3.0)]
    assert page == {"a": [("a", 1.0), ('a{x="1"}', 2.0)], "b": [("b", 3.0)]}
    assert dict(page.items())["a"] == [("a", 1.0), ('a{x="1"}', 2.0)]
    assert sum(map(len, page.values())) == len(page.series) == 3
    assert page.get("missing") is None and "a" in page and "missing" not in page
    with pytest.raises(KeyError):
        page["missing"]
    page["a"].pop()                                 # a lookup is a copy: the page is unchanged
    assert len(page["a"]) == 2
    assert Page.of(page) is page


def test_a_scrape_keeps_any_mapping_of_samples_in_the_page_form() -> None:
    health = TargetHealth(up=True, scraped_at=1.0)
    scrape = TargetScrape(Target("10.0.0.1:61678"), health, families={"a": [("a", 1.0)]})
    assert type(scrape.families) is Page
    assert scrape.families.runs == (("a", 1),)
    assert TargetScrape(Target("10.0.0.1:61678"), health).families is EMPTY_PAGE
    page = Page.of({"b": [("b", 2.0)]})
    assert TargetScrape(Target("10.0.0.1:61678"), health, families=page).families is page
