"""Bridges to third-party frameworks (imported lazily; each needs its own optional package).

* :mod:`verticore.integrations.langchain` -- ``VerticoreEmbeddings`` and ``VerticoreRetriever``
  for LangChain (``langchain-core``).
"""
from __future__ import annotations

__all__: list[str] = []
