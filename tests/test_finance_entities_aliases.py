"""finance_sentiment watchlist aliases (issue #15): every mention form links to one entity, names with
regex metacharacters match literally, a shared alias is refused at load, discovered-entity keys."""
from __future__ import annotations

import pytest

from finance_sentiment.entities import WatchEntry, Watchlist, discovered_key, entity_kind
from verticore.errors import DataError

WATCH = ("ticker,name,aliases\n"
         "AAPL,Apple Inc.,Apple Computer|iPhone maker\n"
         "MSFT,Microsoft Corporation,Microsoft;Redmond giant\n")


@pytest.fixture()
def wl() -> Watchlist:
    return Watchlist.from_csv_text(WATCH)


@pytest.mark.parametrize("text", ["Apple Inc. beats estimates", "Apple beats estimates", "APPLE beats estimates",
                                  "Apple's quarter", "Apple\u2019s quarter", "$AAPL up 3%", "$aapl up 3%",
                                  "NASDAQ:AAPL up", "AAPL shares rise", "Apple Corp. said", "Apple Ltd said",
                                  "the iPhone maker said", "apple computer reports"])
def test_every_mention_form_links_to_the_one_entity(wl, text):
    assert wl.tickers_in(text) == ["AAPL"]


def test_aliases_column_accepts_pipe_and_semicolon_and_round_trips(wl, tmp_path):
    assert wl.get("MSFT").aliases == ["Microsoft", "Redmond giant"]
    assert sorted(wl.tickers_in("the Redmond giant and the iPhone maker")) == ["AAPL", "MSFT"]
    wl.save(tmp_path / "w.csv")
    again = Watchlist.load(tmp_path / "w.csv")
    assert again.get("AAPL").aliases == ["Apple Computer", "iPhone maker"] and again.tickers_in("Microsoft Corp") == ["MSFT"]


def test_one_match_per_entity_however_often_it_is_named(wl):
    assert wl.tickers_in("Apple Inc. (AAPL): Apple's shares; $AAPL") == ["AAPL"]


def test_bare_lowercase_or_short_words_are_not_tickers():
    wl = Watchlist([WatchEntry("IT", "Gartner"), WatchEntry("AAPL", "Apple Inc.")])
    assert wl.tickers_in("it is a good day for aapl fans") == []  # lower-case "aapl" is no ticker mention
    assert wl.tickers_in("IT spending rises") == []  # 2-letter tickers only as $IT / exchange prefix
    assert wl.tickers_in("$IT rises") == ["IT"]


@pytest.mark.parametrize("name,text", [("AT&T", "AT&T cuts prices"), ("AT&T", "at & t cuts prices"),
                                       ("C3.ai", "C3.ai jumps"), ("C3.ai", "c3 ai jumps"),
                                       ("S&P 500", "the S&P 500 fell"), ("Yahoo!", "Yahoo! sold"),
                                       ("Yahoo!", "Yahoo sold"), ("(Foo)", "news about (Foo) today"),
                                       ("(Foo)", "Foo today"), ("Ca$h [Co]*", "Ca$h [Co]* today"),
                                       ("a+b?", "A+B? rallies"), ("\\d+ Corp", "\\d+ Corp")])
def test_names_with_regex_metacharacters_match_literally(name, text):
    wl = Watchlist([WatchEntry("XX", name)])
    assert wl.tickers_in(text) == ["XX"]
    assert wl.tickers_in("nothing here at all 123") == []


def test_metacharacter_names_never_match_everything():
    with pytest.raises(DataError, match="no letters or digits"):
        Watchlist([WatchEntry("XX", ".*")])
    wl = Watchlist([WatchEntry("XX", "A.B")])
    assert wl.tickers_in("AxB and AB") == []  # "." is not a wildcard


def test_alias_shared_by_two_companies_is_refused_naming_both_rows():
    text = "ticker,name,aliases\nAAPL,Apple Inc.,Apple\nAPLE,Apple Hospitality REIT,Apple\n"
    with pytest.raises(DataError) as exc:
        Watchlist.from_csv_text(text, origin="w.csv")
    msg = str(exc.value)
    assert "\n" not in msg and "w.csv" in msg and "APLE" in msg and "AAPL" in msg and "'Apple'" in msg
    # differing only by suffix or case is the same phrase
    with pytest.raises(DataError, match="already names AAPL"):
        Watchlist.from_csv_text("ticker,name,aliases\nAAPL,Apple Inc.,\nAPLX,APPLE Corp,\n")
    # the same alias twice on one row is harmless
    assert Watchlist.from_csv_text("ticker,name,aliases\nAAPL,Apple Inc.,Apple|apple|APPLE\n").tickers == ["AAPL"]


def test_lookup_links_an_organisation_name_to_its_entry(wl):
    for name in ["Apple", "Apple Inc", "apple inc.", "Apple's", "AAPL", "$AAPL", "Microsoft Corp.", "Redmond giant"]:
        assert wl.lookup(name) in ("AAPL", "MSFT"), name
    assert wl.lookup("Apple") == "AAPL" and wl.lookup("Microsoft Corp.") == "MSFT"
    for name in ["Apple Hospitality", "Orange", "", "!!!", "aapl"]:
        assert wl.lookup(name) is None, name


def test_discovered_keys_are_normalised_and_distinct_from_tickers():
    assert discovered_key("Acme Widgets Ltd.") == discovered_key("ACME widgets") == "org:acme widgets"
    assert discovered_key("Acme's") == "org:acme"
    assert discovered_key("AT&T") == "org:at and t"
    assert discovered_key("!!!") is None
    assert entity_kind("org:acme") == "discovered" and entity_kind("AAPL") == "watchlist"
