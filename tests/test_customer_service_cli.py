"""The customer-service CLI: kb ingest/list/search/delete, ask (answer, citations, intent, escalation),
tickets, feedback, stats, and one-line errors for bad input."""
import json
import sys

from customer_service.cli import main


def run(capsys, monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", ["customer-service", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_end_to_end(tmp_path, capsys, monkeypatch):
    kb = tmp_path / "kb"
    doc = tmp_path / "returns.md"
    doc.write_text("# Returns\n\n## Return window\nYou can return items within 30 days of delivery for a full refund.\n")
    bad = tmp_path / "broken.pdf"
    bad.write_bytes(b"%PDF-1.7 this is not a pdf")
    code, out, err = run(capsys, monkeypatch, "kb", "ingest", doc, bad, "--kb", kb)
    assert code == 0 and "added" in out and "returns.md" in out
    assert "error: broken.pdf is not a readable PDF" in err  # the good file was still ingested
    code, out, _ = run(capsys, monkeypatch, "kb", "list", "--kb", kb)
    assert "returns.md" in out and "chunks=1" in out
    dev = tmp_path / "dev.csv"
    dev.write_text("question,doc_id\nhow long can I send things back,returns.md\n")
    code, out, _ = run(capsys, monkeypatch, "kb", "calibrate", dev, "--kb", kb, "--match", "doc_id")
    assert code == 0 and "fusion:" in out and "dev hit@1 1.0000" in out
    assert json.loads((kb / "kb.json").read_text())["fusion"]["calibrated_on"] == 1
    code, _, err = run(capsys, monkeypatch, "kb", "calibrate", dev, "--kb", kb, "--match", "intent")
    assert code == 3 and "intent" in err

    code, out, _ = run(capsys, monkeypatch, "ask", "--kb", kb, "How many days do I have to return something?")
    assert code == 0 and "30 days" in out and "[1] Returns - Return window (returns.md)" in out
    assert "intent: -" in out and "escalated: no" in out
    code, out, _ = run(capsys, monkeypatch, "ask", "--kb", kb, "--json", "I need a human")
    reply = json.loads(out)
    assert reply["escalated"] and reply["reason"] == "human_requested"
    code, out, _ = run(capsys, monkeypatch, "tickets", "--kb", kb)
    assert reply["ticket_id"] in out
    code, out, _ = run(capsys, monkeypatch, "feedback", "1", "up", "--kb", kb)
    assert code == 0 and "stored" in out
    code, out, _ = run(capsys, monkeypatch, "stats", "--kb", kb)
    assert json.loads(out)["feedback"]["up"] == 1

    code, out, err = run(capsys, monkeypatch, "kb", "delete", "nope.md", "--kb", kb)
    assert code == 3 and err.startswith("error: no document 'nope.md'")
    code, out, _ = run(capsys, monkeypatch, "kb", "delete", "returns.md", "--kb", kb)
    assert code == 0
    code, out, _ = run(capsys, monkeypatch, "ask", "--kb", kb, "How many days to return?")
    assert "escalated: yes" in out and "empty_knowledge_base" in out


def test_cli_bad_input(tmp_path, capsys, monkeypatch):
    code, _, err = run(capsys, monkeypatch, "ask", "--kb", tmp_path / "missing", "hello")
    assert code == 3 and err.startswith("error: knowledge base directory not found")
    code, _, err = run(capsys, monkeypatch, "feedback", "5", "sideways", "--kb", tmp_path)
    assert code == 3 and err.startswith("error: rating must be up/down")
