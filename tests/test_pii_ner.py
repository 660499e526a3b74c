"""customer_service PII redaction with the optional NER pass (issue #15): person names and locations /
street addresses from a token classifier on top of the pattern rules (a fake tagger stands in)."""
from __future__ import annotations

import pytest

from customer_service.guardrails import PiiNer, configure_pii_ner, redact_pii


class FakeTagger:
    """Tags fixed surface strings wherever they occur (like verticore.TokenClassifier: character offsets)."""

    def __init__(self, spans: dict[str, tuple[str, float]]) -> None:
        self.spans = spans
        self.calls = 0

    def predict(self, texts):
        self.calls += 1
        out = []
        for t in texts:
            row = []
            for surface, (typ, score) in self.spans.items():
                i = t.find(surface)
                if i >= 0:
                    row.append({"text": surface, "type": typ, "start": i, "end": i + len(surface), "score": score})
            out.append(row)
        return out


TAGS = {"Maria Lopez": ("PER", 0.99), "Baker Street": ("LOC", 0.95), "London": ("LOC", 0.9),
        "Acme": ("ORG", 0.99), "Dr Who": ("PER", 0.2)}


@pytest.fixture()
def ner():
    yield configure_pii_ner(FakeTagger(TAGS))
    configure_pii_ner(None)


def test_without_a_tagger_only_the_pattern_rules_apply():
    configure_pii_ner(None)
    text = "I am Maria Lopez, mail maria@example.com"
    assert redact_pii(text) == "I am Maria Lopez, mail [EMAIL]"


def test_names_and_street_addresses_are_redacted_when_a_tagger_is_configured(ner):
    out = redact_pii("I am Maria Lopez, I live at 221B Baker Street, London; my order at Acme is late")
    assert out == "I am [NAME], I live at [ADDRESS], [ADDRESS]; my order at Acme is late"  # ORG is kept


def test_pattern_rules_still_apply_and_run_first(ner):
    out = redact_pii("Maria Lopez here: card 4111 1111 1111 1111, phone +44 20 7946 0958, maria@example.com")
    assert out == "[NAME] here: card [CARD], phone [PHONE], [EMAIL]"


def test_low_confidence_spans_and_unknown_types_are_left(ner):
    assert redact_pii("Ask Dr Who at Acme") == "Ask Dr Who at Acme"


def test_spans_over_a_placeholder_are_ignored():
    # the tagger reads "[EMAIL]" as part of a name: the pattern placeholder stays intact
    tagger = FakeTagger({"Bob [EMAIL]": ("PER", 0.9)})
    assert redact_pii("write Bob bob@example.com", ner=PiiNer(tagger, {"PER": "[NAME]"})) == "write Bob [EMAIL]"


def test_overlapping_spans_and_bad_offsets_never_crash():
    class Messy:
        def predict(self, texts):
            t = texts[0]
            return [[{"type": "PER", "start": 0, "end": 9, "score": 1.0}, {"type": "LOC", "start": 5, "end": 14},
                     {"type": "PER", "start": 50, "end": 400}, {"type": "PER", "start": None, "end": 3},
                     {"type": "PER", "start": 7, "end": 2}] if t else []]

    out = redact_pii("Anna Berg in Oslo", ner=PiiNer(Messy(), {"PER": "[NAME]", "LOC": "[ADDRESS]"}))
    assert out == "[NAME] in Oslo"


def test_empty_text_skips_the_tagger(ner):
    assert redact_pii("") == "" and ner.tagger.calls == 0


def test_configure_opens_an_artifact_path_and_refuses_a_missing_one(tmp_path):
    with pytest.raises(Exception, match="ner"):
        configure_pii_ner(tmp_path / "ner")
    assert redact_pii("Maria Lopez") == "Maria Lopez"  # a failed configure leaves the NER pass off
