"""Token classification (NER): IOB2 spans and entity F1, windowing, training + loading an artifact."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from verticore.errors import ArtifactError, DataError, VerticoreError
from verticore.finetune.token_classifier import (
    TokenClassifierTrainingConfig,
    align_labels,
    clean_tagged_rows,
    label_list,
    read_conll,
    train_token_classifier,
)
from verticore.inference.token_classifier import (
    TokenClassifier,
    entities_from_tags,
    entity_f1,
    iob2_spans,
    most_central,
    split_words,
    window_starts,
)

DATA = Path(__file__).parent / "data" / "tiny_ner.conll"


# -- spans and F1, hand-computed ------------------------------------------------------------------
def test_iob2_spans_follow_conlleval_conventions():
    tags = ["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC", "I-ORG", "O", "B-MISC"]
    # I- after O starts an entity; B- after the same type starts a new one; I- of another type too.
    assert iob2_spans(tags) == [("PER", 0, 2), ("LOC", 3, 5), ("LOC", 5, 6), ("ORG", 6, 7), ("MISC", 8, 9)]
    assert iob2_spans([]) == [] and iob2_spans(["O", "O"]) == []
    with pytest.raises(DataError, match="tag #1"):
        iob2_spans(["O", "PER"])


def test_entity_f1_hand_computed():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-PER"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O", "O"]]
    # gold: PER(0,0-2) LOC(0,3) ORG(1,0) PER(1,2) = 4; pred: PER(0,0-2) ORG(0,3) ORG(1,0) = 3; correct 2
    m = entity_f1(gold, pred)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 4)
    assert m["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert m["per_type"]["PER"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert m["per_type"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["per_type"]["ORG"]["precision"] == 0.5 and m["per_type"]["ORG"]["recall"] == 1.0
    # a boundary error is wrong twice over (one false positive, one false negative)
    m = entity_f1([["B-PER", "I-PER"]], [["B-PER", "O"]])
    assert (m["precision"], m["recall"], m["f1"]) == (0.0, 0.0, 0.0)
    with pytest.raises(DataError, match="sentence #0"):
        entity_f1([["O"]], [["O", "O"]])


def test_entity_f1_matches_seqeval_on_random_tags():
    seqeval = pytest.importorskip("seqeval.metrics")
    rng = random.Random(3)
    tags = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-ORG", "B-ORG"]
    gold = [[rng.choice(tags) for _ in range(rng.randint(1, 12))] for _ in range(300)]
    pred = [[t if rng.random() < 0.7 else rng.choice(tags) for t in row] for row in gold]
    m = entity_f1(gold, pred)
    assert m["f1"] == pytest.approx(seqeval.f1_score(gold, pred))
    assert m["precision"] == pytest.approx(seqeval.precision_score(gold, pred))
    rep = seqeval.classification_report(gold, pred, output_dict=True)
    for typ in ("PER", "LOC", "ORG"):
        assert m["per_type"][typ]["f1"] == pytest.approx(rep[typ]["f1-score"])
        assert m["per_type"][typ]["support"] == rep[typ]["support"]


# -- words, windows, alignment -----------------------------------------------------------------------
def test_split_words_keeps_conll_style_tokens_and_offsets():
    text = "Peter Blackburn of the U.S. said (AP) on 1996-08-22 that Germany. AT&T"
    words = [text[a:b] for a, b in split_words(text)]
    assert words == ["Peter", "Blackburn", "of", "the", "U.S.", "said", "(", "AP", ")", "on", "1996-08-22",
                     "that", "Germany", ".", "AT&T"]
    ents = entities_from_tags(text, split_words(text), ["B-PER", "I-PER"] + ["O"] * 10 + ["B-LOC", "O", "B-ORG"],
                              [0.9, 0.7] + [1.0] * 10 + [0.8, 1.0, 0.6])
    assert [(e.text, e.type, e.start, e.end) for e in ents] == [("Peter Blackburn", "PER", 0, 15),
                                                                ("Germany", "LOC", 57, 64), ("AT&T", "ORG", 66, 70)]
    assert ents[0].score == pytest.approx(0.8)
    assert all(text[e.start:e.end] == e.text for e in ents)
    text = "Mr. Cook of Apple Inc. spoke. Taco.Co."
    assert [text[a:b] for a, b in split_words(text)] == ["Mr.", "Cook", "of", "Apple", "Inc.", "spoke", ".", "Taco.Co", "."]


def test_windows_cover_every_token_and_pick_the_most_central():
    assert window_starts(10, 16, 4) == [0]
    starts = window_starts(50, 16, 6)
    assert starts[0] == 0 and starts[-1] + 16 == 50 and all(b - a <= 10 for a, b in zip(starts, starts[1:]))
    choice = most_central(starts, 16, 50)
    assert (choice >= 0).all()
    for t, k in enumerate(choice):
        s = starts[k]
        assert s <= t < s + 16
        # no other covering window gives the token more context on its nearer side
        def ctx(s2: int) -> int:
            left = t - s2 if s2 > 0 else 50
            right = s2 + 15 - t if s2 + 16 < 50 else 50
            return min(left, right)
        assert all(ctx(s2) <= ctx(s) for s2 in starts if s2 <= t < s2 + 16)
    assert choice[0] == 0 and choice[-1] == len(starts) - 1


def test_align_labels_marks_only_the_first_subtoken():
    index = {"O": 0, "B-PER": 1, "I-PER": 2}
    assert align_labels([None, 0, 0, 1, 2, 2, None], ["B-PER", "I-PER", "O"], index) == [-100, 1, -100, 2, 0, -100, -100]
    assert label_list([["O", "B-PER"], ["I-LOC"]]) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def test_bad_training_rows_name_the_row():
    with pytest.raises(DataError, match="row 1 has 2 tokens but 1 tags"):
        clean_tagged_rows([["a"], ["b", "c"]], [["O"], ["O"]], "training data")
    with pytest.raises(DataError, match="row 0, tag 1: 'PERSON' is not an IOB2 tag"):
        clean_tagged_rows([["a", "b"]], [["O", "PERSON"]], "training data")
    with pytest.raises(DataError, match="dev data row 0, tag 0: 'B-DATE' not seen in training"):
        clean_tagged_rows([["a"]], [["B-DATE"]], "dev data", known=["O", "B-PER", "I-PER"])
    with pytest.raises(DataError, match="row 0 has no tokens"):
        clean_tagged_rows([[]], [[]], "training data")
    with pytest.raises(DataError, match="training data row 0, word 1"):
        clean_tagged_rows([["a", " "]], [["O", "O"]], "training data")
    with pytest.raises(DataError, match="no entities"):
        train_token_classifier([["a"], ["b"]], [["O"], ["O"]], [["a"]], [["O"]], "/nonexistent/never-written")


def test_read_conll(tmp_path):
    tokens, tags = read_conll(DATA)
    assert len(tokens) == 32 and tokens[0][:2] == ["Maria", "Garcia"] and tags[0][:2] == ["B-PER", "I-PER"]
    bad = tmp_path / "bad.conll"
    bad.write_text("Peter B-PER\nlonely\n", encoding="utf-8")
    with pytest.raises(DataError, match="bad.conll:2"):
        read_conll(bad)


# -- training and loading a real artifact ----------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_ner(tmp_path_factory):
    tokens, tags = read_conll(DATA)
    out = tmp_path_factory.mktemp("ner") / "model"
    cfg = TokenClassifierTrainingConfig(epochs=1, max_steps=40, batch_size=8, learning_rate=3e-4, warmup_ratio=0.05,
                                        device="cpu", eval_max_length=64)
    result = train_token_classifier(tokens[:26], tags[:26], tokens[26:], tags[26:], out, cfg,
                                    test_tokens=tokens[28:], test_tags=tags[28:], show_progress=False)
    return result, tokens, tags


def test_artifact_loads_back_and_finds_entities_with_offsets(tiny_ner):
    result, tokens, tags = tiny_ner
    art = result.artifact_dir
    for f in ("labels.json", "verticore.json", "metrics.json", "training_config.json", "README.md", "model.safetensors"):
        assert (art / f).exists(), f
    meta = json.loads((art / "verticore.json").read_text())
    assert meta["kind"] == "token_classifier" and meta["entity_types"] == ["LOC", "ORG", "PER"]
    assert json.loads((art / "labels.json").read_text())["labels"] == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    assert "TokenClassifier" in (art / "README.md").read_text()
    metrics = json.loads((art / "metrics.json").read_text())
    assert metrics["dev"]["f1"] >= 0.8, metrics["dev"]  # the tiny data is learnable in 40 steps
    ner = TokenClassifier(art, device="cpu")
    assert ner.entity_types == ["LOC", "ORG", "PER"]
    # the loaded artifact reproduces the metrics written at training time
    assert entity_f1(tags[26:], ner.predict_words(tokens[26:]))["f1"] == pytest.approx(metrics["dev"]["f1"])
    text = "Alice Smith works at Acme Corp in Paris."
    ents = ner.predict(text)
    got = {(e.text, e.type) for e in ents}
    assert got == {("Alice Smith", "PER"), ("Acme Corp", "ORG"), ("Paris", "LOC")}, got
    for e in ents:
        assert text[e.start:e.end] == e.text and 0.0 < e.score <= 1.0
    assert ents[0].to_dict().keys() == {"text", "type", "start", "end", "score"}
    # batch form, and empty / whitespace-only text gives no entities
    batch = ner.predict([text, "", "   "])
    assert [len(b) for b in batch] == [3, 0, 0]
    assert ner.predict("") == []
    with pytest.raises(DataError, match="text #1"):
        ner.predict(["ok", None])


def test_word_level_aggregation_uses_the_first_subtoken(tiny_ner):
    result, _, _ = tiny_ner
    ner = TokenClassifier(result.artifact_dir, device="cpu")
    # "Vandelay" is several word pieces; the whole word gets one tag and one entity
    words = ["Vandelay", "Industries", "hired", "Emma", "Wilson", "last", "week", "."]
    tags, probs = ner.predict_words_with_scores([words])
    assert len(tags[0]) == len(words) and probs[0].shape == (len(words),)
    assert tags[0][:2] == ["B-ORG", "I-ORG"] and tags[0][3:5] == ["B-PER", "I-PER"]
    assert len(ner._tagger.tokenizer.tokenize("Vandelay")) > 1


def test_long_text_is_windowed_and_finds_entities_at_both_ends(tiny_ner):
    result, _, _ = tiny_ner
    ner = TokenClassifier(result.artifact_dir, device="cpu", max_length=24, stride=8)
    filler = " The weather was cold and the market was quiet ." * 12
    text = "Alice Smith flew to Paris on Monday ." + filler + " Omar Khan flew to Berlin on Monday ."
    assert len(ner.predict_words([text.split()])[0]) == len(text.split())
    n_tokens = len(ner._tagger.tokenizer(text, add_special_tokens=False)["input_ids"])
    assert n_tokens > 5 * 22  # many windows
    ents = ner.predict(text)
    got = [(e.text, e.type) for e in ents]
    assert got[:2] == [("Alice Smith", "PER"), ("Paris", "LOC")] and got[-2:] == [("Omar Khan", "PER"), ("Berlin", "LOC")], got
    assert all(text[e.start:e.end] == e.text for e in ents)
    assert ents[-1].start > len(text) - 20


def test_bad_backend_and_not_a_token_classifier(tiny_ner, tmp_path):
    result, _, _ = tiny_ner
    with pytest.raises(VerticoreError, match="cannot run a token classifier"):
        TokenClassifier(result.artifact_dir, backend="onnx")
    with pytest.raises(VerticoreError, match="not found"):
        TokenClassifier(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "config.json").write_text("{}")
    (tmp_path / "plain" / "model.safetensors").write_bytes(b"")
    with pytest.raises(ArtifactError, match="not a token classifier"):
        TokenClassifier(tmp_path / "plain")


def test_int8_backend_agrees_with_fp32(tiny_ner):
    result, tokens, _ = tiny_ner
    fp32 = TokenClassifier(result.artifact_dir, device="cpu").predict_words(tokens)
    int8 = TokenClassifier(result.artifact_dir, device="cpu", backend="torch-int8").predict_words(tokens)
    agree = np.mean([a == b for r, q in zip(fp32, int8) for a, b in zip(r, q)])
    assert agree >= 0.95


def test_lora_trains_and_saves_adapter(tmp_path):
    tokens, tags = read_conll(DATA)
    cfg = TokenClassifierTrainingConfig(method="lora", max_steps=3, batch_size=8, device="cpu", eval_max_length=64)
    r = train_token_classifier(tokens[:20], tags[:20], tokens[20:24], tags[20:24], tmp_path / "lora", cfg, show_progress=False)
    assert (r.artifact_dir / "adapter").is_dir() and r.metrics["steps"] == 3
    assert len(TokenClassifier(r.artifact_dir, device="cpu").predict_words(tokens[:2])[0]) == len(tokens[0])


# -- the case feature: capitals reach an uncased model ---------------------------------------------------
def _case_only_rows(seed: int, n: int) -> tuple[list[list[str]], list[list[str]]]:
    """Sentences whose only entity cue is a capital: "Rose" is a person, "rose" a flower."""
    names = ["Rose", "Hope", "Bill", "Grace", "Mark", "Faith", "Joy", "Sky", "Amber", "Iris"]
    rng = random.Random(seed)
    rows, tags = [], []
    for i in range(n):
        word, cap = rng.choice(names), i % 2 == 0
        rows.append(["we", "saw", word if cap else word.lower(), "again"])
        tags.append(["O", "O", "B-PER" if cap else "O", "O"])
    return rows, tags


def test_case_feature_lets_an_uncased_model_see_capitals(tmp_path):
    from verticore.finetune.token_classifier import resolve_case_feature

    tr_x, tr_y = _case_only_rows(0, 160)
    dv_x, dv_y = _case_only_rows(1, 40)
    f1 = {}
    for feature in ("token_type", "none"):
        cfg = TokenClassifierTrainingConfig(max_steps=60, batch_size=16, learning_rate=5e-4, warmup_ratio=0.05,
                                            device="cpu", eval_max_length=32, case_feature=feature, eval_every=20)
        res = train_token_classifier(tr_x, tr_y, dv_x, dv_y, tmp_path / feature, cfg, show_progress=False)
        assert json.loads((res.artifact_dir / "verticore.json").read_text())["case_feature"] == feature
        ner = TokenClassifier(res.artifact_dir, device="cpu")
        assert ner.case_feature == feature
        f1[feature] = entity_f1(dv_y, ner.predict_words(dv_x))["f1"]
        if feature == "token_type":
            assert [e.text for e in ner.predict("we saw Grace again")] == ["Grace"]
            assert ner.predict("we saw grace again") == []
    # Without the feature both spellings are the same tokens: at best F1 2/3 (tag every one).
    assert f1["none"] <= 0.67 and f1["token_type"] >= 0.95, f1
    # auto picks the feature for the uncased default model; an unknown value is refused
    model = type("M", (), {"config": type("C", (), {"type_vocab_size": 2})()})()
    tok = TokenClassifier(res.artifact_dir)
    tok.warm_up()
    assert resolve_case_feature("auto", tok._tagger.tokenizer, model) == "token_type"
    with pytest.raises(DataError, match="case_feature"):
        resolve_case_feature("capitals", tok._tagger.tokenizer, model)
    bad = tmp_path / "bad"
    import shutil

    shutil.copytree(res.artifact_dir, bad)
    meta = json.loads((bad / "verticore.json").read_text())
    (bad / "verticore.json").write_text(json.dumps({**meta, "case_feature": "shouting"}))
    with pytest.raises(ArtifactError, match="unknown case_feature"):
        TokenClassifier(bad)
