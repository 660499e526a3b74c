"""customer_service: a retrieval-augmented customer-service bot on the Verticore core.

Public API::

    from customer_service import Bot, BotConfig, KnowledgeBase, IntentModel, TemplateSet
    bot = Bot.open("kb_dir")
    reply = bot.ask("How do I return an item?")
"""
from __future__ import annotations

from .bot import Bot, BotConfig, BotReply, rewrite_query
from .guardrails import detect_injection, redact_pii, sentiment, validate_message, wants_human
from .intents import IntentModel, IntentResult, calibrate_threshold, train_intent_model
from .kb import KnowledgeBase, RetrievedChunk, rrf_fuse
from .templates import AnswerTemplate, TemplateSet, extract_slots

__all__ = ["Bot", "BotConfig", "BotReply", "rewrite_query", "KnowledgeBase", "RetrievedChunk", "rrf_fuse",
           "IntentModel", "IntentResult", "calibrate_threshold", "train_intent_model", "AnswerTemplate",
           "TemplateSet", "extract_slots", "detect_injection", "redact_pii", "sentiment", "validate_message", "wants_human"]
