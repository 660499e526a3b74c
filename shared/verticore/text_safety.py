"""Escaping for text that comes from users, feeds or config before it reaches a renderer.

* :func:`escape_markdown` for Streamlit ``st.markdown`` / captions / labels: ASCII punctuation
  (all but ``_``) is backslash-escaped (CommonMark renders ``\\x`` as a literal ``x``), so a title such
  as ``![x](http://evil/t.png)`` or ``<img src=x>`` shows as text instead of loading an image,
  making a link, raw HTML, LaTeX (``$``) or a Streamlit colour directive (``:red[...]``).
* :func:`escape_html` for the rare ``unsafe_allow_html`` snippet.
* :func:`escape_slack` / :func:`slack_link` for Slack ``mrkdwn``: ``&``, ``<``, ``>`` escaped and
  bare ``scheme://`` broken so a title cannot create a link.
"""
from __future__ import annotations

import html
import re
import string
from urllib.parse import quote, urlsplit

# all ASCII punctuation except "_" (emphasis at worst, and identifiers like min_count stay readable)
_MD_SPECIAL = frozenset(string.punctuation) - {"_"}
_WS = re.compile(r"\s+")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):(//)")


def escape_markdown(text: object, *, inline: bool = True) -> str:
    """Literal text for Markdown. ``inline`` (default) also folds newlines and runs of whitespace into
    one space, so a value cannot start a heading, list or code block of its own."""
    s = "" if text is None else str(text)
    if inline:
        s = _WS.sub(" ", s).strip()
    return "".join("\\" + c if c in _MD_SPECIAL else c for c in s)


def escape_html(text: object) -> str:
    """HTML-escaped text (quotes included), for attribute or element content."""
    return html.escape("" if text is None else str(text), quote=True)


def escape_slack(text: object, *, defang_urls: bool = True) -> str:
    """Text for Slack ``mrkdwn``: ``& < >`` escaped (no ``<url|text>`` links, mentions or
    ``<!channel>``), newlines folded, and ``scheme://`` broken with a zero-width space so Slack does
    not auto-link URLs inside the text."""
    s = _WS.sub(" ", "" if text is None else str(text)).strip()
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if defang_urls:
        s = _SCHEME.sub("\\1:\u200b\\2", s)
    return s


def slack_link(url: object, text: object) -> str:
    """``<url|text>`` for an ``http(s)`` URL (characters that would end the link encoded);
    just the escaped text when the URL is anything else."""
    label = escape_slack(text)
    u = "" if url is None else str(url).strip()
    try:
        scheme = urlsplit(u).scheme.lower()
    except ValueError:
        scheme = ""
    if scheme not in ("http", "https") or any(ord(c) < 33 for c in u):
        return label
    # percent-encode what would end the link (< > |, quotes, non-ASCII); Slack wants & as &amp;
    safe = quote(u, safe=":/?#[]@!$&'()*+,;=%-._~").replace("&", "&amp;")
    return f"<{safe}|{label or escape_slack(u)}>"
