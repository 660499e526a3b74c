"""Data-parallel fine-tuning: ``verticore finetune --nproc N`` through ``torchrun``.

The CLI validates the job, writes it as JSON and relaunches itself as
``python -m torch.distributed.run --standalone --nproc_per_node N -m verticore.finetune.distributed job.json``
(localhost only, a free port). Every rank runs the usual recipe
(:func:`verticore.finetune.classifier.train_classifier`) with a :class:`DataParallel`:

- the same seed gives every rank the same global batch order as a single process; rank ``r``
  trains on its slice of each global batch, so ``--batch-size`` stays the effective batch and
  each rank gets ``batch_size / N`` rows;
- each rank's loss is weighted by its share of the global batch's loss mass (rows, or class
  weights) and gradients are summed across ranks, so the update is the single-process update
  on the whole batch (up to float summation order);
- parameters are broadcast from rank 0 after initialisation (the linear-probe head is fitted on
  rank 0 only); rank 0 alone evaluates on dev and broadcasts the score, so all ranks take the
  same early-stopping decision, and rank 0 alone writes the artifact (atomically, as always).

Backend: gloo on CPU, NCCL on CUDA with one GPU per rank (gloo when there are fewer GPUs than ranks).
Dropout masks differ between a 1- and an N-process run (each rank draws its own), so the runs
agree exactly only with dropout off; with dropout on they agree in distribution.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import VerticoreError

#: A rank waits this long for the others (e.g. while rank 0 evaluates a large dev set).
COLLECTIVE_TIMEOUT = timedelta(minutes=60)


@dataclass
class DataParallel:
    """This process's place in a data-parallel run and the collectives the training loop needs."""

    rank: int
    world_size: int
    backend: str
    device: str

    @property
    def is_main(self) -> bool:
        """Rank 0: evaluates, keeps the best checkpoint, writes the artifact and prints."""
        return self.rank == 0

    def shard(self, idx: np.ndarray) -> np.ndarray:
        """This rank's contiguous slice of a global batch (sizes differ by at most one row)."""
        return np.array_split(np.asarray(idx), self.world_size)[self.rank]

    def sync_parameters(self, model, seed: int) -> None:
        """Broadcast every parameter and buffer from rank 0, then give ranks > 0 their own
        dropout stream (rank 0 keeps the single-process stream)."""
        import torch
        import torch.distributed as dist

        with torch.no_grad():
            for tensor in model.state_dict().values():
                if tensor.is_contiguous():
                    dist.broadcast(tensor, src=0)
                else:
                    buf = tensor.contiguous()
                    dist.broadcast(buf, src=0)
                    tensor.copy_(buf)
        if self.rank:
            torch.manual_seed(seed + 1000 * self.rank)

    def _sum(self, value: float) -> float:
        import torch
        import torch.distributed as dist

        t = torch.tensor(value, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t)

    def backward_shard(self, model, idx: np.ndarray, batch: Callable[[np.ndarray], tuple[Any, Any, Any]],
                       loss: Callable[[Any, Any], Any], autocast, scaler, grad_accum: int):
        """Forward and backward this rank's slice of the global batch ``idx``, its loss scaled by its
        share of the batch's loss mass; returns that (detached) share of the batch loss / ``grad_accum``."""
        import torch

        from .loop import model_inputs

        local = self.shard(idx)
        ids = mask = target = None
        mass = 0.0
        if len(local):
            ids, mask, target = batch(local)
            mass = loss_mass(loss, target)
        total = self._sum(mass)  # every rank takes part, an empty slice included
        if not len(local) or total <= 0:
            return torch.zeros((), device=self.device)
        with autocast:
            logits = model(**model_inputs(ids), attention_mask=mask).logits
        value = loss(logits.float(), target) * (mass / total) / grad_accum
        (scaler.scale(value) if scaler else value).backward()
        return value.detach()

    def all_reduce_gradients(self, model) -> None:
        """Sum the gradients of all ranks in place. A parameter no rank touched keeps ``grad=None``
        (AdamW skips it, as in a single process: no weight decay on an unused pooler)."""
        import torch
        import torch.distributed as dist

        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            return
        has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=self.device)
        dist.all_reduce(has_grad)
        by_dtype: dict[Any, list[Any]] = {}
        for p, touched in zip(params, has_grad.tolist()):
            if not touched:
                p.grad = None
                continue
            if p.grad is None:  # this rank's slice was empty or did not reach it
                p.grad = torch.zeros_like(p)
            by_dtype.setdefault(p.grad.dtype, []).append(p)
        for group in by_dtype.values():  # one collective per dtype, not one per tensor
            flat = torch.cat([p.grad.reshape(-1) for p in group])
            dist.all_reduce(flat)
            offset = 0
            for p in group:
                n = p.grad.numel()
                p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
                offset += n

    def global_loss(self, value):
        """The whole batch's loss from the ranks' shares (what a single process would report)."""
        import torch
        import torch.distributed as dist

        total = value.detach().clone().to(torch.float64)
        dist.all_reduce(total)
        return total

    def broadcast_score(self, evaluate: Callable[[], float]) -> float:
        """Rank 0 evaluates; every rank gets its score (and so the same early-stopping decision)."""
        import torch
        import torch.distributed as dist

        score = torch.tensor(float(evaluate()) if self.is_main else 0.0, dtype=torch.float64, device=self.device)
        dist.broadcast(score, src=0)
        return float(score)


def loss_mass(loss, target) -> float:
    """What ``loss`` (a mean) divides by on ``target``: the summed class weights of the counted rows
    for a (weighted) cross-entropy, the element count for BCE, else the row count."""
    import torch

    if isinstance(loss, torch.nn.CrossEntropyLoss) and target.dim() == 1:
        valid = target[target != loss.ignore_index]
        return float(loss.weight[valid].sum()) if loss.weight is not None else float(valid.numel())
    if isinstance(loss, torch.nn.BCEWithLogitsLoss):
        return float(target.numel())
    return float(len(target))


def init_data_parallel(device: str) -> DataParallel:
    """Join the process group that ``torchrun`` set up (``RANK``/``WORLD_SIZE`` in the environment):
    NCCL when every local rank has its own GPU, else gloo. Returns this rank's :class:`DataParallel`
    whose ``device`` is the one the rank trains on (``cuda:<local rank>`` on GPUs)."""
    import torch
    import torch.distributed as dist

    from ..models import resolve_device

    if not dist.is_available():
        raise VerticoreError("--nproc > 1 needs torch.distributed, which this PyTorch build lacks")
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    except KeyError:
        raise VerticoreError("not started by torchrun (RANK/WORLD_SIZE unset); use `verticore finetune --nproc N`") from None
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    resolved = resolve_device(device)
    if resolved.startswith("cuda"):
        n_gpus = torch.cuda.device_count()
        resolved = f"cuda:{local_rank % n_gpus}"
        torch.cuda.set_device(resolved)
        backend = "nccl" if n_gpus >= local_world else "gloo"  # NCCL refuses two ranks on one GPU
    elif resolved == "cpu":
        backend = "gloo"
    else:
        raise VerticoreError(f"--nproc > 1 runs on CPU (gloo) or CUDA (NCCL), not on {resolved!r}; pass --device cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
    return DataParallel(rank=rank, world_size=world, backend=backend, device=resolved)


@dataclass
class FinetuneJob:
    """What ``verticore finetune --nproc N`` hands to its ranks (files are re-read by each rank)."""

    train: str
    dev: str
    out: str
    config: dict[str, Any]
    test: str | None = None
    text_col: str = "text"
    label_col: str = "label"
    label_sep: str | None = None  # multi-label separator, None for single-label

    def read(self) -> tuple[list[str], list[Any], list[str], list[Any], list[str] | None, list[Any] | None]:
        """``(train texts, train labels, dev texts, dev labels, test texts, test labels)``, read as the CLI does."""
        from ..io import read_table

        cols = [self.text_col, self.label_col]

        def labels(values: Sequence[Any]) -> list[Any]:
            return [v.split(self.label_sep) for v in values] if self.label_sep else list(values)

        tr, dv = read_table(Path(self.train), cols), read_table(Path(self.dev), cols)
        te = read_table(Path(self.test), cols, allow_empty=True) if self.test else None
        te = None if te is not None and te.empty else te  # an empty test set = no test set
        return (tr[self.text_col].tolist(), labels(tr[self.label_col]), dv[self.text_col].tolist(),
                labels(dv[self.label_col]), te[self.text_col].tolist() if te is not None else None,
                labels(te[self.label_col]) if te is not None else None)

    def training_config(self):
        from .config import ClassifierTrainingConfig

        return ClassifierTrainingConfig(**self.config)


def launch(job: FinetuneJob, nproc: int) -> int:
    """Validate ``job`` here (one-line errors before any process starts), then run it on ``nproc``
    local processes through ``torchrun``; returns 0 or raises :class:`VerticoreError`."""
    import torch.distributed as dist

    from ..models import resolve_device, resolve_model
    from .classifier import prepare_data

    if nproc < 1:
        raise VerticoreError(f"--nproc must be at least 1, got {nproc}")
    if not dist.is_available():
        raise VerticoreError("--nproc > 1 needs torch.distributed, which this PyTorch build lacks")
    cfg = job.training_config()
    resolve_model(cfg.base)  # a missing model or device fails here, once, not in every rank
    device = resolve_device(cfg.device)
    if device != "cpu" and not device.startswith("cuda"):
        raise VerticoreError(f"--nproc > 1 runs on CPU (gloo) or CUDA (NCCL), not on {cfg.device!r}; pass --device cpu")
    train_texts, train_labels, dev_texts, dev_labels, test_texts, test_labels = job.read()
    prepare_data(train_texts, train_labels, dev_texts, dev_labels, cfg.multi_label, test_texts, test_labels)
    env = dict(os.environ)
    # torchrun would pin each rank to 1 thread (with a warning); share the cores instead
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    with tempfile.TemporaryDirectory(prefix="verticore-ddp-") as tmp:
        spec = Path(tmp) / "job.json"
        spec.write_text(json.dumps(asdict(job)), encoding="utf-8")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "verticore.finetune.distributed", str(spec)]
        code = subprocess.run(cmd, env=env).returncode
    if code:
        raise VerticoreError(f"distributed fine-tuning failed (torchrun exited with status {code}); "
                             "the ranks' errors are above")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """A rank's entry point (started by :func:`launch` through torchrun): train, and on rank 0 print
    the summary and write the artifact."""
    import torch.distributed as dist

    from .classifier import train_classifier

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m torch.distributed.run ... -m verticore.finetune.distributed JOB.json", file=sys.stderr)
        return 2
    job = FinetuneJob(**json.loads(Path(args[0]).read_text(encoding="utf-8")))
    dp: DataParallel | None = None
    try:
        cfg = job.training_config()
        dp = init_data_parallel(cfg.device)
        cfg.device = dp.device
        train_texts, train_labels, dev_texts, dev_labels, test_texts, test_labels = job.read()
        res = train_classifier(train_texts, train_labels, dev_texts, dev_labels, job.out, cfg, test_texts=test_texts,
                               test_labels=test_labels, show_progress=dp.is_main, data_parallel=dp)
        if dp.is_main:
            summary = {k: res.metrics[k] for k in ("dev", "test") if k in res.metrics}
            numbers = {s: {m: v for m, v in d.items() if isinstance(v, (int, float))} for s, d in summary.items()}
            print(json.dumps(numbers, indent=2))
            print(f"artifact written to {res.artifact_dir} ({dp.world_size} processes, {dp.backend})")
    except VerticoreError as exc:
        if dp is None or dp.is_main:
            print(f"error: {exc}", file=sys.stderr)
        return 3
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
