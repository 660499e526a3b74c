"""Retrieval components: BM25, dense, their fusion and its calibration.

Each component stores only JSON-serialisable settings in ``__init__`` (heavy state on
``warm_up()`` or first use) and round-trips them with ``to_dict()``/``from_dict()`` and
``save(dir)``/``load(dir)``::

    from verticore.retrieval import BM25Retriever, DenseRetriever, HybridRetriever

    hybrid = HybridRetriever(DenseRetriever("default"), BM25Retriever(), method="rrf", dense_weight=0.8)
    hybrid.add(["faq-1", "faq-2"], ["How do I reset my password?", "Where is my parcel?"])
    hybrid.search("forgot password", k=1)          # [HybridHit(key="faq-1", score=..., ...)]

* :class:`BM25Retriever` -- ``bm25s`` with its tokenizer and a PyStemmer (Snowball) stemmer.
* :class:`DenseRetriever` -- an ``Embedder`` over a ``VectorIndex``.
* :class:`RRF`, :class:`ConvexFusion` -- fusion of ranked lists; :func:`two_way_fusion` for a
  (dense, BM25) pair weighted by one ``dense_weight``.
* :class:`HybridRetriever` -- candidates from both retrievers, scored by both, fused.
* :class:`FusionCalibrator` -- picks the fusion method and weight on labelled dev queries.

Retriever kinds live in :data:`retrievers` (entry-point group ``verticore.retrievers``) and
fusion kinds in :data:`fusions` (``verticore.fusions``).
"""
from __future__ import annotations

from .base import RetrievalComponent, RetrievalHit, Retriever, fusions, retrievers
from .bm25 import QUESTION_STOPWORDS, BM25Retriever, tokenize
from .calibration import DEFAULT_WEIGHTS, FusionCalibrator
from .dense import DenseRetriever
from .fusion import FUSION_METHODS, RRF, ConvexFusion, Fusion, rrf_fuse, two_way_fusion
from .hybrid import MODES, Candidates, HybridHit, HybridRetriever

__all__ = ["RetrievalComponent", "RetrievalHit", "Retriever", "retrievers", "fusions", "BM25Retriever",
           "QUESTION_STOPWORDS", "tokenize", "DenseRetriever", "Fusion", "RRF", "ConvexFusion", "FUSION_METHODS",
           "two_way_fusion", "rrf_fuse", "HybridRetriever", "HybridHit", "Candidates", "MODES",
           "FusionCalibrator", "DEFAULT_WEIGHTS"]
