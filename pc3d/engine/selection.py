"""Model selection on val, test scored once: the shared tail of the scene finetuning tasks.

`fit` keeps `checkpoints/best` by the validation metric (`train.best_metric`) and never sees a test split.
After it returns, `score_selected` rebuilds the method, loads that selected checkpoint (else `last`), and
scores it once on val and, where the task has one, once on test. The result gains `val`, `test` and
`selection` (which metric, split, epoch and checkpoint chose the weights), so a reported number never
comes from the split that picked it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from pc3d.engine.data import default_collate, to_device
from pc3d.engine.device import resolve_device
from pc3d.engine.method import Method
from pc3d.errors import InputError


def selected_checkpoint(result: dict[str, Any]) -> tuple[str, str]:
    """(kind, path) of the weights `fit` selected: `best` when a best metric chose one, else `last`."""
    checkpoints = result.get("checkpoints") or {}
    if checkpoints.get("best"):
        return "best", str(checkpoints["best"])
    return "last", str(checkpoints["last"])


def load_selected(method: Method, result: dict[str, Any]) -> str:
    """Load the selected checkpoint into `method` (every weight of the model must be in it); returns its kind."""
    from pc3d.engine.checkpoint import load_weights
    from pc3d.models.convert import load_state

    kind, path = selected_checkpoint(result)
    report = load_state(method, load_weights(path))
    if report.missing:
        raise InputError(f"checkpoint {path} lacks {len(report.missing)} weights of the model "
                         f"(e.g. {report.missing[0]})")
    return kind


@torch.no_grad()
def score(method: Method, dataset: Dataset, batch_size: int, device: torch.device | None = None) -> dict[str, float]:
    """The method's own validation metrics (validation_step + validation_epoch_end) on `dataset`, in order and
    with the batch size training validated with, so scoring val here repeats the trainer's number exactly."""
    device = device or next(method.parameters()).device
    was_training = method.training
    method.eval()
    outputs = []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=default_collate):
        out = method.validation_step(to_device(batch, device))
        outputs.append({k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in out.items()})
    method.train(was_training)
    return {k: float(v) for k, v in method.validation_epoch_end(outputs).items()}


def score_selected(config: Any, result: dict[str, Any], method: Method, val: Dataset, test: Dataset | None,
                   *, reported: str) -> dict[str, Any]:
    """Load the selected checkpoint into `method`, score val and test (once each) and return `result` with
    `val`, `test` (None without a test split) and `selection` added.

    reported: the split whose numbers a paper table would quote ("test" for the synthetic splits; "val" for
    ScanNet / S3DIS, whose official protocol reports val, the benchmarks' test labels being hidden)."""
    device = resolve_device(config.run.device)
    method.to(device)
    kind = load_selected(method, result)
    local_batch = max(config.train.batch_size // config.train.accumulate, 1)  # what the trainer validated with
    val_scores = score(method, val, local_batch, device)
    test_scores = score(method, test, local_batch, device) if test is not None else None
    best = result.get("best") or {}
    selection = {"metric": best.get("metric"), "mode": config.train.best_mode, "split": "val",
                 "value": best.get("value"), "epoch": best.get("epoch"), "step": best.get("step"),
                 "checkpoint": kind, "reported": reported,
                 "val_samples": len(val), "test_samples": len(test) if test is not None else 0}  # type: ignore[arg-type]
    return {**result, "val": val_scores, "test": test_scores, "selection": selection}


def fit_and_score(request: Any, build: Any, test_split: Any) -> dict[str, Any]:
    """Train with `build`, then score the selected checkpoint once on val and once on `test_split(config)`
    (None: no test split, val is the reported split). The method and val set are rebuilt after training
    because the trainer may have run in worker processes and keeps neither. Under torchrun / SLURM every rank
    trains; only rank 0 scores (the others' results are not shown)."""
    from pc3d.engine.distributed import outside_rank
    from pc3d.engine.trainer import fit

    result = fit(request, build)
    if outside_rank() != 0:
        return result
    config = request.config
    setup = build(config, 0)
    test = test_split(config)
    return score_selected(config, result, setup.method, setup.val_set, test,
                          reported="test" if test is not None else "val")
