"""verticore.text: the one sentence splitter, HTML-to-text, table reader, min-max and UTC helpers."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from verticore import io as vio
from verticore.errors import DataError
from verticore.text import (
    html_to_markdown,
    html_to_text,
    minmax_normalise,
    parse_table,
    read_table,
    split_sentences,
    utc_iso,
    utc_now,
)

ROOT = Path(__file__).resolve().parents[1]


# -- sentences ---------------------------------------------------------------------------------

def test_splitter_keeps_decimals_abbreviations_and_initials():
    text = "Net sales rose 5.2% to EUR 3.1 bn. Acme Inc. said demand was strong. J. Smith left! Did it? Yes"
    assert split_sentences(text) == ["Net sales rose 5.2% to EUR 3.1 bn.", "Acme Inc. said demand was strong.",
                                     "J. Smith left!", "Did it?", "Yes"]
    assert split_sentences(text, max_sentences=2) == split_sentences(text)[:2]
    assert split_sentences("") == [] and split_sentences("   \n ") == []


def test_splitter_keeps_closing_quotes_with_their_sentence():
    assert split_sentences('He said "we beat." Shares rose (a lot.) Then "Fell."') == [
        'He said "we beat."', "Shares rose (a lot.)", 'Then "Fell."']


def test_splitter_line_breaks_mode():
    text = "Steps:\n1. Open the app\n2. Tap Settings. Then tap Reset.\n\n- done"
    assert split_sentences(text, line_breaks=True) == ["Steps:", "1. Open the app", "2. Tap Settings.", "Then tap Reset.",
                                                       "- done"]
    # without it, lines are joined as prose
    assert split_sentences("one line\ncontinues here. Next one.") == ["one line continues here.", "Next one."]


def test_apps_use_the_one_splitter():
    from customer_service import answer
    from finance_sentiment import text as fin_text

    assert fin_text.split_sentences("Acme Inc. rose. It fell.") == ["Acme Inc. rose.", "It fell."]
    assert answer.split_sentences("Reset it. Mr. Smith helps.\nok\n- Call us") == ["Reset it.", "Mr. Smith helps.",
                                                                                   "- Call us"]
    for path in ("apps/finance_sentiment/text.py", "apps/customer_service/answer.py"):
        assert "_SENT" not in (ROOT / path).read_text()


# -- HTML --------------------------------------------------------------------------------------

PAGE = """<html><head><title>Reset &amp; Restore</title><style>p{color:red}</style></head>
<body><nav>Home | Help</nav><h1>Reset</h1><p>Hold the <b>power</b> button&nbsp;for 10 s.</p>
<ul><li>Unplug</li><li>Wait</li></ul><script>alert(1)</script><h2>Notes</h2><p>AT&amp;T users: call us.</p></body></html>"""


def test_html_to_markdown():
    title, text = html_to_markdown(PAGE)
    assert title == "Reset & Restore"
    assert text.startswith("# Reset\n") and "- Unplug\n" in text and "## Notes" in text
    assert "Hold the power button\xa0for 10 s." in text and "AT&T users" in text
    assert not any(w in text for w in ("alert", "color", "Home | Help"))


def test_html_to_text_is_plain():
    text = html_to_text(PAGE)
    assert "#" not in text and "- " not in text and "Unplug\n" in text and "alert" not in text
    assert html_to_text("Shares <b>rose</b> 5% &lt;fast&gt;") == "Shares rose 5% <fast>"
    assert html_to_text("") == "" and html_to_text("EPS < 1.0, plain") == "EPS < 1.0, plain"


# -- tables ------------------------------------------------------------------------------------

def test_table_reader_formats(tmp_path):
    rows = pd.DataFrame({"text": ["a", "b"], "label": ["x", "y"]})
    (tmp_path / "t.csv").write_text("text,label\na,x\n\nb,y\n")
    (tmp_path / "t.tsv").write_text("text\tlabel\na\tx\nb\ty\n")
    (tmp_path / "t.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n')
    (tmp_path / "t.json").write_text('[{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]')
    rows.to_parquet(tmp_path / "t.parquet")
    for suffix in ("csv", "tsv", "jsonl", "json", "parquet"):
        df = read_table(tmp_path / f"t.{suffix}", ["text", "label"])
        assert df[["text", "label"]].values.tolist() == [["a", "x"], ["b", "y"]], suffix
    assert vio.read_table is read_table  # the old import path keeps working


def test_table_reader_errors(tmp_path):
    def err(name: str, data: bytes, required=("text",), **kw) -> str:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError) as info:
            read_table(tmp_path / name, required, **kw)
        assert "\n" not in str(info.value)
        return str(info.value)

    with pytest.raises(DataError, match="file not found"):
        read_table(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="expected a file"):
        read_table(tmp_path)
    assert "has no column 'text'; columns are ['body']" in err("a.csv", b"body\nx\n")
    assert re.search(r"is not UTF-8 \(byte 8: b'\\xe9'\); re-save it as UTF-8", err("b.csv", b"text\ncaf\xe9\n"))
    assert err("c.csv", b"  \n").endswith("c.csv is empty")
    assert err("d.csv", b"text\n").endswith("d.csv has a header but no rows")
    assert "could not be parsed as jsonl" in err("e.jsonl", b"{not json\n")
    assert "could not be parsed as parquet" in err("f.parquet", b"PAR1 garbage")
    assert err("g.parquet", b"").endswith("g.parquet is empty")


def test_empty_optional_file_gives_an_empty_frame(tmp_path):
    (tmp_path / "tags.csv").write_text("userId,movieId,tag,timestamp\n")
    df = read_table(tmp_path / "tags.csv", ["movieId", "tag"], allow_empty=True)
    assert df.empty and {"movieId", "tag"} <= set(df.columns)
    (tmp_path / "blank.csv").write_text("")
    assert list(read_table(tmp_path / "blank.csv", ["movieId"], allow_empty=True).columns) == ["movieId"]
    (tmp_path / "empty.jsonl").write_text("\n")
    assert read_table(tmp_path / "empty.jsonl", ["a"], allow_empty=True).empty
    pd.DataFrame({"movieId": pd.Series([], dtype=str)}).to_parquet(tmp_path / "cold.parquet")
    assert read_table(tmp_path / "cold.parquet", ["movieId"], allow_empty=True).empty
    # an empty optional file still needs the right header when it has one
    (tmp_path / "bad.csv").write_text("user,item\n")
    with pytest.raises(DataError, match="has no column 'movieId'"):
        read_table(tmp_path / "bad.csv", ["movieId"], allow_empty=True)


def test_parse_table_from_upload_bytes():
    df = parse_table("question,answer\nq1,a1\n".encode("utf-8-sig"), "faq.csv", ["question"])
    assert df["answer"].tolist() == ["a1"]
    with pytest.raises(DataError, match="^faq.tsv is not UTF-8"):
        parse_table(b"q\t\xff\n", "faq.tsv")


# -- min-max -----------------------------------------------------------------------------------

def test_minmax_scales_to_unit_range():
    assert minmax_normalise([2.0, 4.0, 3.0]).tolist() == [0.0, 1.0, 0.5]
    assert minmax_normalise(np.array([-1, 1])).dtype == np.float64
    assert minmax_normalise([]).size == 0


@pytest.mark.parametrize("values", [[0.7, 0.7, 0.7], [0.0, 0.0], [5.0]])
def test_minmax_of_equal_inputs_is_all_zero(values):
    """The documented rule: no spread means no preference, so all 0 (never 'all perfect')."""
    assert minmax_normalise(values).tolist() == [0.0] * len(values)


def test_recommender_mmr_uses_the_shared_minmax():
    from recommender.rerank import mmr

    vecs = np.eye(3, dtype=np.float32)
    assert mmr(np.array([0.5, 0.5, 0.5]), vecs, 2) == [0, 1]  # equal relevance: stable order
    assert mmr(np.array([0.1, 0.9, 0.5]), vecs, 3) == [1, 2, 0]
    assert "def minmax" not in (ROOT / "apps/recommender/rerank.py").read_text()


# -- time --------------------------------------------------------------------------------------

def test_utc_helpers():
    now = utc_now()
    assert now.tzinfo is not None and now.utcoffset() == timedelta(0)
    assert utc_iso(0) == "1970-01-01T00:00:00+00:00"
    assert utc_iso(1.5, timespec="milliseconds") == "1970-01-01T00:00:01.500+00:00"
    paris = timezone(timedelta(hours=2))
    assert utc_iso(datetime(2025, 1, 31, 14, 0, tzinfo=paris)) == "2025-01-31T12:00:00+00:00"
    assert utc_iso(datetime(2025, 1, 31, 12, 0)) == "2025-01-31T12:00:00+00:00"  # naive = UTC
    assert utc_iso().endswith("+00:00")
    assert abs(datetime.fromisoformat(utc_iso()) - now) < timedelta(seconds=5)
