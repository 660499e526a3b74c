"""``customer-service`` command line: knowledge base, asking, chatting, intents, tickets, feedback.

Every user mistake ends as ``error: <one line>`` with exit code 3 (never a stack trace); usage errors
exit 2 and Ctrl-C 130 (see verticore.cli_support).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import typer

from verticore.cli_support import VerticoreGroup, add_version_option, choice_option, fail, run_app
from verticore.errors import VerticoreError

app = typer.Typer(add_completion=False, no_args_is_help=True, cls=VerticoreGroup,
                  help="Retrieval-augmented customer-service bot: answer from your knowledge base, hand over when unsure.")
kb_app = typer.Typer(no_args_is_help=True, help="Manage the knowledge base (ingest, list, delete, reindex, search).")
app.add_typer(kb_app, name="kb")
add_version_option(app)

KB_OPT = typer.Option(..., "--kb", help="knowledge-base directory (also holds the bot's conversations and tickets)",
                      envvar="CUSTOMER_SERVICE_KB")
INTENTS_OPT = typer.Option(None, help="intent model directory (overrides bot.json)")
TEMPLATES_OPT = typer.Option(None, help="answer templates YAML/JSON (overrides bot.json)")
LLM_OPT = typer.Option(None, help="openai:MODEL@URL, ollama:MODEL or hf:/path (default: extractive)")


def _fail(msg: str) -> None:
    fail(msg)  # one line on stderr, exit code 3


def _open_bot(kb: Path, intents: Optional[Path] = None, templates: Optional[Path] = None, llm: Optional[str] = None):
    from .bot import Bot

    return Bot.open(kb, intents=intents, templates=templates, llm=llm)


@kb_app.command("ingest")
def kb_ingest(paths: List[Path] = typer.Argument(..., help="files or directories (md, txt, html, csv/jsonl FAQ, pdf)"),
              kb: Path = KB_OPT, embedder: Optional[str] = typer.Option(None, help="embedder for a new KB (default model)"),
              max_file_mb: float = typer.Option(20.0, min=0.001, help="refuse files larger than this many MiB")) -> None:
    """Add or update documents; re-ingesting a changed file replaces its chunks.

    Links leading outside an ingested folder and files over --max-file-mb are refused with a message.
    """
    from .kb import KnowledgeBase

    base = KnowledgeBase(kb, embedder=embedder)
    base.max_file_bytes = int(max_file_mb * 2**20)
    for p in paths:
        try:
            reports = base.ingest_dir(p, show_progress=True) if p.is_dir() else [base.ingest(p, show_progress=True)]
        except VerticoreError as exc:  # one bad file does not stop the others
            typer.echo(f"error: {exc}", err=True)
            continue
        for r in reports:
            typer.echo(f"{r.status:<9} {r.doc_id}  chunks={r.chunks} embedded={r.embedded} removed={r.removed}")
    typer.echo(f"knowledge base {kb}: {len(base.documents())} documents, {base.chunk_count()} chunks")


@kb_app.command("list")
def kb_list(kb: Path = KB_OPT) -> None:
    """List documents with their chunk counts and dates."""
    from .kb import KnowledgeBase

    docs = KnowledgeBase(kb).documents()
    if not docs:
        typer.echo("the knowledge base is empty; add documents with `customer-service kb ingest`")
    for d in docs:
        typer.echo(f"{d['doc_id']:<32} {d['kind']:<8} chunks={d['n_chunks']:<4} updated={d['updated_at']}  {d['title']}")


@kb_app.command("delete")
def kb_delete(doc_id: str = typer.Argument(..., help="document id (see `kb list`)"), kb: Path = KB_OPT) -> None:
    """Remove a document and its chunks."""
    from .kb import KnowledgeBase

    n = KnowledgeBase(kb).delete(doc_id)
    typer.echo(f"deleted {doc_id} ({n} chunks)")


@kb_app.command("reindex")
def kb_reindex(kb: Path = KB_OPT, embedder: Optional[str] = typer.Option(None, help="switch to this embedder")) -> None:
    """Re-embed every chunk (after changing the embedder or to repair the index)."""
    from .kb import KnowledgeBase

    base = KnowledgeBase(kb, embedder=embedder, strict=False)
    n = base.reindex(show_progress=True)
    typer.echo(f"re-indexed {n} chunks with {base.embedder.model}")


@kb_app.command("calibrate")
def kb_calibrate(dev: Path = typer.Argument(..., help="CSV/JSONL of labelled dev questions"), kb: Path = KB_OPT,
                 query_col: str = typer.Option("question", help="column with the question"),
                 match: str = typer.Option(..., help="column whose value a relevant chunk's metadata (or doc_id) must equal, "
                                                     "e.g. intent or doc_id"),
                 leave_one_out: bool = typer.Option(False, help="the dev questions are the KB's own FAQ questions: "
                                                                "leave each one's own entry out")) -> None:
    """Pick the hybrid fusion (RRF or convex, dense weight) on labelled dev questions; stored in kb.json."""
    from verticore.io import read_table

    from .kb import KnowledgeBase

    df = read_table(dev, [query_col, match])
    base = KnowledgeBase(kb)
    queries = df[query_col].astype(str).tolist()
    wanted = df[match].astype(str).tolist()
    exclude = None
    if leave_one_out:
        own: dict[str, str] = {}
        for cid, emb in base.conn.execute("SELECT chunk_id, embed_text FROM chunks"):
            own.setdefault(emb, cid)
        exclude = [own.get(q.strip()) for q in queries]

    def relevant(i: int, chunk) -> bool:
        value = chunk.doc_id if match == "doc_id" else chunk.meta.get(match)
        return str(value) == wanted[i]

    cal = base.calibrate_fusion(queries, relevant, exclude=exclude, show_progress=True)
    c = cal["chosen"]
    typer.echo(f"fusion: {c['method']} dense_weight={c['dense_weight']} (dev hit@1 {c['dev_hit1']:.4f}, "
               f"MRR {c['dev_mrr']:.4f} on {c['calibrated_on']} questions; dense alone {c['dev_dense_only_hit1']:.4f}, "
               f"BM25 alone {c['dev_bm25_only_hit1']:.4f}); saved to {kb / 'kb.json'}")


@kb_app.command("search")
def kb_search(query: str = typer.Argument(..., help="search text"), kb: Path = KB_OPT,
              k: int = typer.Option(5, help="number of chunks"),
              mode: str = choice_option("hybrid", ("bm25", "dense", "hybrid"), "--mode", help="retriever"),
              source: Optional[str] = typer.Option(None, help="only this source file")) -> None:
    """Show the raw retrieval results for a query."""
    from .kb import KnowledgeBase

    hits = KnowledgeBase(kb).search(query, k=k, mode=mode, filters={"source": source} if source else None)
    if not hits:
        typer.echo("no results (is the knowledge base empty?)")
    for i, h in enumerate(hits, 1):
        ds = f"{h.dense_score:.3f}" if h.dense_score is not None else "-"
        typer.echo(f"{i}. [{h.source} > {h.section or h.title}] score={h.score:.4f} cosine={ds}\n   {h.text[:160]!r}")


def _print_reply(reply, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(reply.to_dict(), ensure_ascii=False, indent=2))
        return
    typer.echo(reply.text)
    for c in reply.citations:
        typer.echo(f"  {c.label()}")
    conf = f"{reply.confidence:.2f}" if reply.confidence is not None else "-"
    typer.echo(f"intent: {reply.intent or ('out of scope' if reply.out_of_scope else '-')}  confidence: {conf}  "
               f"status: {reply.status}  escalated: {'yes (' + str(reply.ticket_id) + ', ' + str(reply.reason) + ')' if reply.escalated else 'no'}"
               f"  turn: {reply.turn_id}  session: {reply.session_id}  {reply.latency_ms:.0f} ms")


@app.command()
def ask(question: str = typer.Argument(..., help="the customer's message"), kb: Path = KB_OPT,
        session: Optional[str] = typer.Option(None, help="continue this conversation"),
        intents: Optional[Path] = INTENTS_OPT, templates: Optional[Path] = TEMPLATES_OPT, llm: Optional[str] = LLM_OPT,
        as_json: bool = typer.Option(False, "--json", help="print the full reply as JSON")) -> None:
    """Answer one question: prints the answer, citations, intent, confidence and whether it escalated."""
    bot = _open_bot(kb, intents, templates, llm)
    _print_reply(bot.ask(question, session_id=session), as_json)


@app.command()
def chat(kb: Path = KB_OPT, intents: Optional[Path] = INTENTS_OPT, templates: Optional[Path] = TEMPLATES_OPT,
         llm: Optional[str] = LLM_OPT) -> None:
    """Interactive chat in the terminal (+/- rates the last answer, 'quit' ends)."""
    bot = _open_bot(kb, intents, templates, llm)
    bot.warm_up()
    sid, last = None, None
    typer.echo("Type your question ('quit' to end, '+'/'-' to rate the last answer).")
    for line in sys.stdin:
        msg = line.rstrip("\n")
        if msg.strip().lower() in {"quit", "exit"}:
            break
        if msg.strip() in {"+", "-"} and last is not None:
            bot.feedback(last, 1 if msg.strip() == "+" else -1)
            typer.echo("thanks for the feedback")
            continue
        reply = bot.ask(msg, session_id=sid)
        sid, last = reply.session_id, reply.turn_id
        _print_reply(reply, False)


@app.command("train-intents")
def train_intents(train: Path = typer.Option(..., help="CSV/JSONL with text,label"),
                  dev: Path = typer.Option(..., help="CSV/JSONL with text,label"),
                  out: Path = typer.Option(..., help="output model directory"),
                  oos_dev: Optional[Path] = typer.Option(None, help="CSV/JSONL with out-of-scope texts (column text)"),
                  epochs: int = typer.Option(5, help="passes over the training data"),
                  max_steps: Optional[int] = typer.Option(None, help="stop after N optimiser steps"),
                  learning_rate: float = typer.Option(1e-4, help="learning rate"),
                  method: str = choice_option("max_prob", ("max_prob", "energy"), "--method",
                                              help="out-of-scope score: max probability or free energy"),
                  ensemble: bool = typer.Option(False, help="train the core ensemble (2 fine-tunes + frozen-embedding "
                                                            "probe + TF-IDF probe): more accurate, 2x the training time"),
                  kb: Optional[Path] = typer.Option(None, help="register the model in this bot's bot.json")) -> None:
    """Fine-tune the intent classifier with the core and calibrate the out-of-scope threshold on dev."""
    from verticore.finetune import ClassifierTrainingConfig
    from verticore.io import read_table

    from .intents import train_intent_model

    tr, dv = read_table(train, ["text", "label"]), read_table(dev, ["text", "label"])
    # optional input: a header-only file means "no out-of-scope examples", like no file
    oos = (read_table(oos_dev, ["text"], allow_empty=True)["text"].astype(str).tolist() or None) if oos_dev else None
    cfg = ClassifierTrainingConfig(epochs=epochs, max_steps=max_steps, learning_rate=learning_rate, max_length=64,
                                   batch_size=16 if len(tr) < 500 else 32)
    model, metrics = train_intent_model(tr["text"].astype(str).tolist(), tr["label"].astype(str).tolist(),
                                        dv["text"].astype(str).tolist(), dv["label"].astype(str).tolist(), out, cfg,
                                        oos_dev_texts=oos, oos_method=method, ensemble=ensemble)
    o = metrics["oos"]
    typer.echo(f"saved {out}: {len(model.labels)} intents; OOS {o['method']} threshold {o['threshold']:.3f} "
               f"(dev false-reject {o['dev_false_reject_rate']:.3f})")
    if kb is not None:
        from .bot import Bot

        bot = Bot.open(kb, intents=out.resolve())
        bot.save_config()
        typer.echo(f"registered in {kb / 'bot.json'}")


@app.command()
def tickets(kb: Path = KB_OPT, status: Optional[str] = typer.Option(None, help="open, claimed or resolved"),
            resolve: Optional[str] = typer.Option(None, help="mark this ticket id resolved")) -> None:
    """The handoff queue."""
    from .store import BotStore

    store = BotStore(kb / "bot.sqlite")
    if resolve:
        store.set_ticket_status(resolve, "resolved")
        typer.echo(f"resolved {resolve}")
        return
    rows = store.tickets(status)
    if not rows:
        typer.echo("no tickets")
    for t in rows:
        typer.echo(f"{t['ticket_id']}  {t['status']:<11} {t['created_at']}  {t['reason']:<20} {t['summary'][:80]}")


@app.command()
def feedback(turn: int = typer.Argument(..., help="turn id printed by `ask`"), rating: str = typer.Argument(..., help="up or down"),
             kb: Path = KB_OPT, comment: Optional[str] = typer.Option(None, help="free-text remark")) -> None:
    """Thumbs up/down for one answer."""
    from .store import BotStore

    BotStore(kb / "bot.sqlite").add_feedback(turn, rating, comment)
    typer.echo("feedback stored")


@app.command()
def stats(kb: Path = KB_OPT) -> None:
    """Analytics: intent mix, deflection, escalations, feedback, latency."""
    from .store import BotStore

    typer.echo(json.dumps(BotStore(kb / "bot.sqlite").analytics(), indent=2, ensure_ascii=False))


@app.command()
def serve(kb: Path = KB_OPT, host: str = typer.Option("127.0.0.1", help="interface to listen on (0.0.0.0: all)"),
          port: int = typer.Option(8000, help="TCP port"),
          insecure_no_auth: bool = typer.Option(False, "--insecure-no-auth",
                                                help="serve WITHOUT API keys (trusted local machine only)"),
          keys_db: Optional[Path] = typer.Option(None, help="API keys database (default $VERTICORE_HOME/serving/keys.db; "
                                                           "create keys with `verticore keys create`)"),
          usage_db: Optional[Path] = typer.Option(None, help="usage database (default $VERTICORE_HOME/serving/usage.db)"),
          intents: Optional[Path] = INTENTS_OPT, templates: Optional[Path] = TEMPLATES_OPT,
          llm: Optional[str] = LLM_OPT) -> None:
    """Serve the bot's HTTP API under /v1/support (chat, handoff queue, agent replies) and the
    embeddable chat widget at /v1/support/widget#key=PUBLIC_CHAT_KEY. API keys are required
    (scopes support:chat for customers and the widget, support:agent for agents)."""
    import uvicorn

    from verticore.serving import ServingSettings
    from verticore.serving.observability import configure_json_logging

    from .api import API_PREFIX, create_app

    if not (kb / "kb.json").exists():
        _fail(f"no knowledge base at {kb}; create it with `customer-service kb ingest --kb {kb} FILES` "
              "or `customer-service demo`")
    configure_json_logging()
    bot = _open_bot(kb, intents, templates, llm)
    bot.warm_up()
    settings = ServingSettings(keys_db=keys_db, usage_db=usage_db, insecure_no_auth=insecure_no_auth)
    server = create_app(bot, settings, close_bot=True)
    typer.echo(f"serving {kb} on http://{host}:{port}{API_PREFIX} (auth {'DISABLED' if insecure_no_auth else 'on'}); "
               f"widget: http://{host}:{port}{API_PREFIX}/widget#key=PUBLIC_CHAT_KEY", err=True)
    uvicorn.run(server, host=host, port=port, log_config=None, timeout_graceful_shutdown=30)


@app.command()
def demo(home: Path = typer.Option(Path(".verticore"), help="demo home (VERTICORE_HOME)")) -> None:
    """Prepare the demo bot (sample knowledge base + small intent model) under HOME/customer_service."""
    from .demo import prepare_demo

    prepare_demo(home, show_progress=True)
    typer.echo(f"demo ready: customer-service ask --kb {home / 'customer_service' / 'kb'} \"How long does delivery take?\"")


def main() -> None:
    """Console entry point (exit codes: see verticore.cli_support)."""
    run_app(app)


if __name__ == "__main__":
    main()
