"""The customer-service bot: guardrails -> memory -> intent -> retrieval -> grounded answer -> handoff.

A bot directory is a knowledge-base directory (see :mod:`customer_service.kb`) plus::

    bot.sqlite      sessions, turns, handoff tickets, feedback
    bot.json        optional settings: {"intents": DIR, "templates": FILE, "llm": SPEC, thresholds...}

The intent model follows the model registry (``$VERTICORE_HOME/registry``, app ``customer_service``,
model ``intent``): when a ``production`` version exists, :meth:`Bot.open` loads it instead of the
``intents`` folder and swaps to each newly promoted version without a restart (requests already
running finish on the model they started with). Without one, the ``intents`` folder is used.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from verticore.errors import DataError, VerticoreError
from verticore.io import atomic_write_json, read_json

from . import answer as _answer
from .guardrails import MAX_MESSAGE_CHARS, detect_injection, sentiment, validate_message, wants_human
from .intents import IntentModel, IntentResult
from .kb import KnowledgeBase, RetrievedChunk
from .store import BotStore
from .templates import AnswerTemplate, TemplateSet, extract_slots

log = logging.getLogger(__name__)
#: the registry entry the bot's intent model follows (``verticore retrain --app customer_service --model intent``)
REGISTRY_APP, REGISTRY_MODEL = "customer_service", "intent"


@dataclass
class BotConfig:
    """Bot thresholds and behaviour (saved in ``bot.json``)."""

    evidence_threshold: float = 0.40
    """Minimum query-passage cosine similarity for a passage to count as evidence."""
    confident_intent: float = 0.55
    """Minimum intent probability to answer from the intent's template."""
    top_k: int = 3
    retrieval_mode: str = "hybrid"
    max_failures: int = 2
    """Consecutive failed turns (no answer, refused) before handing over."""
    max_message_chars: int = MAX_MESSAGE_CHARS
    history_turns: int = 3
    llm: str | None = None
    intents: str | None = None
    templates: str | None = None
    handoff_message: str = ("I'm handing this conversation to a human colleague (ticket {ticket_id}). They can see our "
                            "conversation, so you won't need to repeat yourself; you'll get a reply within one business day.")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BotConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise DataError(f"unknown bot setting(s) {unknown}; known: {sorted(names)}")
        return cls(**data)


@dataclass
class BotReply:
    """The bot's answer to one message, with everything the UI and logs need."""

    session_id: str
    text: str
    status: str  # answered | needs_info | no_answer | escalated | refused | rejected
    turn_id: int | None = None
    intent: str | None = None
    confidence: float | None = None
    out_of_scope: bool = False
    escalated: bool = False
    ticket_id: str | None = None
    reason: str | None = None
    citations: list[_answer.Citation] = field(default_factory=list)
    rewritten_query: str | None = None
    evidence: float | None = None
    latency_ms: float = 0.0
    generator: str = "extractive"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["citations"] = [c.to_dict() for c in self.citations]
        return d


_FOLLOW_UP = re.compile(r"^\s*(and|also|what about|how about|but|so|then|ok(ay)?,?)\b|\b(it|that|this|those|these|they|them|there|one|same)\b",
                        re.IGNORECASE)


def rewrite_query(message: str, history: list[dict[str, Any]]) -> str:
    """Make a follow-up self-contained by prefixing the previous question (short, anaphoric messages only)."""
    if not history:
        return message
    words = message.split()
    if len(words) > 10 or not _FOLLOW_UP.search(message):
        return message
    prev = next((t for t in reversed(history) if t.get("status") in {"answered", "needs_info"}), None)
    if prev is None:
        return message
    base = prev.get("rewritten_query") or prev.get("user_text") or ""
    return f"{base} {message}".strip() if base else message


class Bot:
    """Answers customers from a knowledge base; see :meth:`ask`.

    Args:
        kb: the :class:`KnowledgeBase` (its directory also holds ``bot.sqlite``).
        intents: optional :class:`IntentModel` (fine-tuned classifier + OOS threshold).
        templates: optional :class:`TemplateSet` (answers per intent with slots).
        chat_model: optional LangChain chat model; None = extractive answers.
        config: :class:`BotConfig`.
    """

    def __init__(self, kb: KnowledgeBase, intents: IntentModel | None = None, templates: TemplateSet | None = None,
                 chat_model: Any = None, config: BotConfig | None = None, store: BotStore | None = None) -> None:
        self.kb = kb
        self._intents = intents
        self._intent_handle: Any = None  # a verticore.registry.ModelHandle when following the registry
        self._warm = False
        self.templates = templates or TemplateSet()
        self.chat_model = chat_model
        self.config = config or BotConfig()
        self.store = store or BotStore(kb.directory / "bot.sqlite")

    @property
    def intents(self) -> IntentModel | None:
        """The intent model now: the registry's production version when following it (checked at most
        once per watch interval), else the fixed one. Take it once per request."""
        if self._intent_handle is not None:
            return self._intent_handle.get()
        return self._intents

    @intents.setter
    def intents(self, model: IntentModel | None) -> None:
        self._intents, self._intent_handle = model, None

    @property
    def intent_handle(self) -> Any:
        """The :class:`verticore.registry.ModelHandle` the intent model follows (None: a fixed model)."""
        return self._intent_handle

    def follow_registry(self, registry: Any = None, *, interval: float = 2.0) -> bool:
        """Serve the registry's production intent version from now on, following later promotions.

        ``registry``: a :class:`~verticore.registry.ModelRegistry` or its folder (default
        ``$VERTICORE_HOME/registry``). Returns False (and keeps the current model) when the registry
        has no production version for ``customer_service/intent`` or it does not load.
        """
        from verticore.registry.store import ModelRegistry

        reg = registry if isinstance(registry, ModelRegistry) else ModelRegistry(registry)
        try:
            if "production" not in reg.aliases(REGISTRY_APP, REGISTRY_MODEL):
                return False
            handle = reg.watch(REGISTRY_APP, REGISTRY_MODEL, self._load_intents, interval=interval)
            handle.get()  # load now: a broken production version falls back here, not on a customer's question
        except VerticoreError as exc:
            log.warning("intent model: not following the registry (%s); using %s", str(exc).splitlines()[0],
                        getattr(self._intents, "artifact_dir", "no intent model"))
            return False
        self._intent_handle = handle
        log.info("intent model: following %s", handle)
        return True

    def _load_intents(self, artifact_dir: Path) -> IntentModel:
        """The registry watch's loader: a promoted version is warmed up before it is swapped in."""
        model = IntentModel(artifact_dir, embedder=self.kb.embedder)
        if self._warm:
            model.warm_up()
        return model

    @classmethod
    def open(cls, directory: str | Path, *, intents: str | Path | None = None, templates: str | Path | None = None,
             llm: str | None = None, embedder: Any = None, registry: Any = None, watch_interval: float = 2.0,
             **overrides: Any) -> "Bot":
        """Open the bot stored in ``directory`` (settings from ``bot.json``, overridable).

        The intent model is the registry's production version when there is one (``registry``: a
        :class:`~verticore.registry.ModelRegistry` or its folder, default ``$VERTICORE_HOME/registry``;
        ``False`` to ignore it), else the ``intents`` folder. An explicit ``intents`` argument wins.
        """
        directory = Path(directory)
        if not directory.exists():
            raise DataError(f"knowledge base directory not found: {directory}; create it with `customer-service kb ingest --kb {directory} FILES`")
        cfg_file = directory / "bot.json"
        data = read_json(cfg_file, "bot settings") if cfg_file.exists() else {}
        data.update({k: v for k, v in overrides.items() if v is not None})
        if intents is not None:
            data["intents"] = str(intents)
        if templates is not None:
            data["templates"] = str(templates)
        if llm is not None:
            data["llm"] = llm
        config = BotConfig.from_dict(data)
        kb = KnowledgeBase(directory, embedder=embedder)
        intent_model = IntentModel(_rel(directory, config.intents), embedder=kb.embedder) if config.intents else None
        template_set = TemplateSet.load(_rel(directory, config.templates)) if config.templates else TemplateSet()
        bot = cls(kb, intent_model, template_set, _answer.make_chat_model(config.llm), config)
        if intents is None and registry is not False:
            bot.follow_registry(registry, interval=watch_interval)
        return bot

    def save_config(self) -> None:
        atomic_write_json(self.kb.directory / "bot.json", {k: v for k, v in asdict(self.config).items()
                                                           if v != getattr(BotConfig(), k)})

    def warm_up(self) -> None:
        """Load models now so the first answer is not slow."""
        self.kb.embedder.warm_up()
        self._warm = True
        intents = self.intents
        if intents:
            intents.warm_up()
        if self.kb.chunk_count():
            self.kb.search("warm up", k=1)

    # -- main entry ---------------------------------------------------------------------
    def ask(self, message: Any, session_id: str | None = None, filters: dict[str, Any] | None = None) -> BotReply:
        """Answer one customer message. Never raises for bad user input: it replies instead."""
        t0 = time.perf_counter()
        sid = self.store.ensure_session(session_id)
        state = self.store.state(sid)
        try:
            text = validate_message(message, self.config.max_message_chars)
        except DataError as exc:
            raw = message if isinstance(message, str) else repr(message)[:200]
            reply = BotReply(sid, f"Sorry, I couldn't read that: {exc}.", "rejected", reason="invalid_message")
            return self._finish(reply, raw[:500] if raw else "(empty)", state, t0, failed=False)
        history = self.store.history(sid, self.config.history_turns)

        injection = detect_injection(text)
        if injection:
            reply = BotReply(sid, "I can only help with questions about our products and services, and I can't follow "
                                  "instructions that change how I work. What can I help you with?", "refused",
                             reason="prompt_injection")
            return self._finish(reply, text, state, t0, failed=True)
        if wants_human(text):
            return self._escalate(BotReply(sid, "", "escalated"), text, state, t0, "human_requested", history)
        mood = sentiment(text)
        if mood.negative:
            return self._escalate(BotReply(sid, "I'm sorry about this experience.", "escalated"), text, state, t0,
                                  "negative_sentiment", history)

        # a pending template slot ("what's your order number?" -> "12345678")
        pending = state.get("pending")
        if pending:
            tpl = self.templates.get(pending.get("intent"))
            if tpl is not None:
                values = {**pending.get("slots", {}), **extract_slots(text, tpl.slots, tpl.patterns, pending.get("expecting"))}
                if values.get(pending.get("expecting")):
                    state.pop("pending", None)
                    return self._template_reply(sid, text, tpl, values, state, t0, pending.get("confidence"), history)
            state.pop("pending", None)

        query = rewrite_query(text, history)
        # an intent ensemble whose probe shares the KB's embedder: embed the query once for both
        qv = None
        intent: IntentResult | None = None
        intents = self.intents  # once per request: a promotion meanwhile does not change this answer's model
        if intents is not None:
            if getattr(intents, "query_embedder", None) is self.kb.embedder:
                qv = self.kb.embedder.encode([query])[0]
                intent = intents.classify(query, embedding=qv)
            else:
                intent = intents.classify(query)
        if intent and not intent.out_of_scope and intent.confidence >= self.config.confident_intent:
            tpl = self.templates.get(intent.intent)
            if tpl is not None:
                values = {**state.get("slots", {}), **extract_slots(query, tpl.slots, tpl.patterns)}
                return self._template_reply(sid, text, tpl, values, state, t0, intent.confidence, history,
                                            rewritten=query if query != text else None, intent=intent)

        passages = self._retrieve(query, filters, qv)
        evidence = max((p.dense_score for p in passages if p.dense_score is not None), default=None)
        if evidence is None and passages:  # BM25-only mode: any lexical hit counts
            evidence = 1.0
        good = [p for p in passages if p.dense_score is None or p.dense_score >= self.config.evidence_threshold]
        base = BotReply(sid, "", "answered", intent=intent.intent if intent else None,
                        confidence=intent.confidence if intent else None, out_of_scope=bool(intent and intent.out_of_scope),
                        rewritten_query=query if query != text else None, evidence=evidence)
        if not good:
            reason = "empty_knowledge_base" if self.kb.chunk_count() == 0 else (
                "out_of_scope" if intent and intent.out_of_scope else
                "low_confidence" if intent and intent.confidence < self.config.confident_intent else "no_evidence")
            base.text = "I'm sorry, I don't know the answer to that from our help articles, and I'd rather not guess."
            return self._escalate(base, text, state, t0, reason, history)

        answer_text, cited = None, []
        if self.chat_model is not None:
            try:
                answer_text, cited = _answer.compose_llm(self.chat_model, query, good, history)
                base.generator = "llm"
            except VerticoreError:
                answer_text, base.generator = None, "extractive (LLM failed)"
            if answer_text is None and base.generator == "llm":
                base.text = "I'm sorry, our help articles don't answer that, and I'd rather not guess."
                return self._escalate(base, text, state, t0, "no_evidence", history)
        if answer_text is None:
            answer_text, cited = _answer.compose_extractive(query, good)
        base.text = _answer.clean_answer_text(answer_text)
        base.citations = [c for c in _answer.citations_for(good) if c.n in cited]
        state["failures"] = 0
        return self._finish(base, text, state, t0, failed=False)

    # -- helpers ------------------------------------------------------------------------
    def _retrieve(self, query: str, filters: dict[str, Any] | None,
                  query_vector: np.ndarray | None = None) -> list[RetrievedChunk]:
        # KB passages are evidence and are never pattern-matched away (benign phrases like "you are now
        # eligible" used to drop them); the LLM path quotes them as data instead (answer.build_messages)
        return self.kb.search(query, k=self.config.top_k, mode=self.config.retrieval_mode, filters=filters,
                              query_vector=query_vector)

    def _template_reply(self, sid: str, text: str, tpl: AnswerTemplate, values: dict[str, str], state: dict[str, Any],
                        t0: float, confidence: float | None, history: list[dict[str, Any]], rewritten: str | None = None,
                        intent: IntentResult | None = None) -> BotReply:
        state.setdefault("slots", {}).update({k: v for k, v in values.items() if v})
        missing = tpl.missing(values)
        reply = BotReply(sid, "", "answered", intent=tpl.intent, confidence=confidence, rewritten_query=rewritten)
        if missing:
            state["pending"] = {"intent": tpl.intent, "slots": {k: v for k, v in values.items() if v},
                                "expecting": missing[0], "confidence": confidence}
            reply.text, reply.status = tpl.question_for(missing[0]), "needs_info"
            return self._finish(reply, text, state, t0, failed=False)
        reply.text = f"{tpl.render(values)} [1]"
        reply.citations = [_answer.Citation(1, f"template:{tpl.intent}", "answer templates", f"Answer for {tpl.intent}",
                                            "", "", float(confidence or 0.0), tpl.answer[:240])]
        state["failures"] = 0
        if tpl.escalate:
            return self._escalate(reply, text, state, t0, "template_handoff", history)
        return self._finish(reply, text, state, t0, failed=False)

    def _escalate(self, reply: BotReply, text: str, state: dict[str, Any], t0: float, reason: str,
                  history: list[dict[str, Any]]) -> BotReply:
        summary = f"{reason}: {text[:200]}"
        ticket = self.store.open_ticket(reply.session_id, reason, summary, pending=[{"role": "customer", "text": text}])
        handoff = self.config.handoff_message.format(ticket_id=ticket)
        reply.text = f"{reply.text} {handoff}".strip()
        reply.status, reply.escalated, reply.ticket_id, reply.reason = "escalated", True, ticket, reason
        state["failures"] = 0
        state.pop("pending", None)
        return self._finish(reply, text, state, t0, failed=False)

    def _finish(self, reply: BotReply, text: str, state: dict[str, Any], t0: float, failed: bool) -> BotReply:
        if failed:
            state["failures"] = int(state.get("failures", 0)) + 1
            if state["failures"] >= self.config.max_failures:
                prefix = reply.text
                reply.text = prefix
                return self._escalate(reply, text, state, t0, "repeated_failure", [])
        reply.latency_ms = (time.perf_counter() - t0) * 1000.0
        reply.turn_id = self.store.add_turn(
            reply.session_id, text, reply.text, reply.status, rewritten_query=reply.rewritten_query, intent=reply.intent,
            confidence=reply.confidence, evidence=reply.evidence, escalated=reply.escalated, reason=reply.reason,
            citations=[c.to_dict() for c in reply.citations], latency_ms=reply.latency_ms)
        self.store.set_state(reply.session_id, state)
        return reply

    def intent_labels(self) -> list[str]:
        """Labels an agent may give a question: the intent model's, the templates', and ``out_of_scope``."""
        from .store import OUT_OF_SCOPE_LABEL

        labels = set(getattr(self.intents, "labels", None) or []) | set(self.templates.templates)
        return sorted(labels - {OUT_OF_SCOPE_LABEL}) + [OUT_OF_SCOPE_LABEL]

    def feedback(self, turn_id: int, rating: int | str, comment: str | None = None) -> None:
        """Thumbs up/down for one answer."""
        self.store.add_feedback(turn_id, rating, comment)

    def close(self) -> None:
        self.store.close()
        self.kb.close()


def known_intent_labels(directory: str | Path) -> list[str]:
    """:meth:`Bot.intent_labels` of the bot in ``directory``, read from its files without loading models."""
    from verticore.artifact import read_labels

    from .store import OUT_OF_SCOPE_LABEL

    directory = Path(directory)
    cfg_file = directory / "bot.json"
    data = read_json(cfg_file, "bot settings") if cfg_file.exists() else {}
    labels: set[str] = set()
    if data.get("intents"):
        idir = _rel(directory, data["intents"])
        found = read_labels(idir) if idir.is_dir() else None
        if found is None and idir.is_dir():  # an ensemble: its members hold the label files
            found = next((ls for f in sorted(idir.rglob("labels.json")) if (ls := read_labels(f.parent))), None)
        labels |= set(found.labels if found else [])
    if data.get("templates") and _rel(directory, data["templates"]).exists():
        labels |= set(TemplateSet.load(_rel(directory, data["templates"])).templates)
    return sorted(labels - {OUT_OF_SCOPE_LABEL}) + [OUT_OF_SCOPE_LABEL]


def _rel(base: Path, p: str) -> Path:
    path = Path(p)
    return path if path.is_absolute() else base / path
