"""Length-sorted batching and long-text chunking shared by the embedder and the classifier."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np


@dataclass
class Chunked:
    """Token-id chunks for a batch of texts; ``owner[i]`` is the text index of chunk ``i``."""

    input_ids: list[list[int]]
    owner: np.ndarray
    n_texts: int

    def chunks_per_text(self) -> np.ndarray:
        return np.bincount(self.owner, minlength=self.n_texts)


DEFAULT_MAX_CHUNKS = 64


def chunk_texts(tokenizer, texts: Sequence[str], max_length: int, stride: int = 32,
                max_chunks: int = DEFAULT_MAX_CHUNKS) -> Chunked:
    """Tokenise without truncation and split texts longer than the window into overlapping chunks.

    Each chunk gets its own [CLS]/[SEP], so every chunk is a valid model input: a 5,000-token
    article becomes ~20 chunks that are aggregated afterwards. A text may become at most
    ``max_chunks`` chunks (about 14k tokens at the default window): beyond that, chunks evenly
    spaced over the whole text are kept (start, middle and end all count), so one huge request
    costs bounded compute instead of taking the model for minutes.
    """
    if max_chunks < 1:
        raise ValueError("max_chunks must be at least 1")
    prefix, suffix = special_tokens(tokenizer)
    body = max_length - len(prefix) - len(suffix)
    if body <= 0:
        raise ValueError(f"max_length {max_length} leaves no room for text")
    stride = min(stride, body // 2)
    enc = tokenizer(list(texts), add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    ids: list[list[int]] = []
    owner: list[int] = []
    for i, toks in enumerate(enc):
        if len(toks) <= body:
            pieces = [toks]
        else:
            step = body - stride
            starts = list(range(0, max(len(toks) - stride, 1), step))
            if len(starts) > max_chunks:
                keep = np.unique(np.linspace(0, len(starts) - 1, max_chunks).round().astype(int))
                starts = [starts[k] for k in keep]
            pieces = [toks[s : s + body] for s in starts]
        for p in pieces:
            ids.append(prefix + list(p) + suffix)
            owner.append(i)
    return Chunked(ids, np.asarray(owner, dtype=np.int64), len(texts))


def special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """The special ids a tokenizer puts before and after one sequence (e.g. [CLS] / [SEP])."""
    cached = getattr(tokenizer, "_verticore_specials", None)
    if cached is not None:
        return cached
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    start = next(i for i in range(len(full)) if full[i : i + len(plain)] == plain)
    result = (list(full[:start]), list(full[start + len(plain) :]))
    try:
        tokenizer._verticore_specials = result
    except Exception:  # some tokenizers forbid new attributes; recompute then
        pass
    return result


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[np.ndarray]:
    """Yield index batches in order of decreasing length, so each batch pads little."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    for s in range(0, len(order), batch_size):
        yield order[s : s + batch_size]


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token ids; returns (input_ids, attention_mask) as int64 arrays."""
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = s
        mask[r, : len(s)] = 1
    return ids, mask


def aggregate_mean(values: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """Mean of chunk rows per owning text."""
    out = np.zeros((n, values.shape[1]), dtype=np.float64)
    np.add.at(out, owner, values)
    counts = np.bincount(owner, minlength=n).astype(np.float64)
    return (out / counts[:, None]).astype(np.float32)
