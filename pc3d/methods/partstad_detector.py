"""PartSLIP's few-shot detector adaptation (`pc3d finetune partstad-detector`), the detector PartSTAD builds on.

PartSLIP finetunes GLIP-L per category on the rendered views of the 8 few-shot shapes, with the parts' 2-D boxes
as targets, and runs it at threshold 0.5; PartSTAD takes those boxes. pc3d does the same with Grounding DINO
through transformers' own training loss (`GroundingDinoDetector.training_loss`):
  1. render every few-shot shape with the views `pc3d segment` uses (`partstad_render.render_views`);
  2. a part instance's ground-truth box in a view is the rendered footprint of its visible points: the box of
     their projected pixels grown by the splat radius (`footprint_boxes`); instances whose points win fewer than
     `adapt.min_visible_fraction` of the image's pixels get no box (too small for the detector's finest cells);
  3. AdamW on the parameters `adapt.tune` leaves trainable; the adapted model, tokenizer and image processor are
     saved as a transformers folder (safetensors) `<run>/detector/` with pc3d's sidecar, which `segment` and
     `partstad-fewshot` load with `--detector RUN` / `--set detector.weights=RUN`;
  4. box AP50 and recall (IoU >= 0.5, same part) on the held-out val and test shapes, zero-shot vs adapted.
OWLv2 is not adapted: transformers has no training loss for it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pc3d import console as con
from pc3d.config.partstad_detector import AdaptConfig, PartstadDetectorPreset
from pc3d.errors import InputError
from pc3d.methods.partstad_render import Views, normalize_unit_sphere, render_views
from pc3d.runs import RunRequest

BOX_IOU = 0.5  # a detection finds a ground-truth box at IoU >= 0.5 with the same part (VOC / PartSLIP mAP50)


@dataclass
class ShapeViews:
    """One shape's rendered views and their ground-truth part boxes."""

    shape_id: str
    images: np.ndarray  # (V,H,W,3) uint8
    boxes: list[np.ndarray]  # per view (K,4) float64 xyxy pixels
    labels: list[np.ndarray]  # per view (K,) int64 part index


def min_pixels(cfg: AdaptConfig, height: int, width: int) -> int:
    """Pixels a part instance must win in a view to get a training box."""
    return max(cfg.min_visible_pixels, math.ceil(cfg.min_visible_fraction * height * width))


def footprint_boxes(views: Views, semantic: np.ndarray, instance: np.ndarray, radius: int, min_pixels: int
                    ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per view: (boxes (K,4) xyxy pixels, part indices (K,)) of the part instances (semantic >= 0) seen there.

    The rasteriser paints a point into the (2r+1)^2 pixels around floor(uv), so the footprint of a part's visible
    points is [floor(min uv) - r, floor(max uv) + r + 1) per axis, clipped to the image; an instance whose points
    win fewer than `min_pixels` pixels (the z-buffer's winners, `views.index`) is dropped."""
    height, width = views.images.shape[1:3]
    semantic, instance = np.asarray(semantic, np.int64), np.asarray(instance, np.int64)
    out = []
    for v in range(len(views.images)):
        visible = views.visible[v].numpy()
        uv = views.uv[v].numpy()
        won = views.index[v].numpy()
        won = won[won >= 0]
        keys = np.unique(np.stack([semantic[visible], instance[visible]], 1), axis=0) if visible.any() \
            else np.zeros((0, 2), np.int64)
        boxes, labels = [], []
        for part, inst in keys:
            if part < 0:
                continue
            member = (semantic == part) & (instance == inst)
            if int(member[won].sum()) < min_pixels:
                continue
            pixel = np.floor(uv[member & visible])
            lo, hi = pixel.min(0) - radius, pixel.max(0) + radius + 1
            box = np.array([max(lo[0], 0), max(lo[1], 0), min(hi[0], width), min(hi[1], height)], np.float64)
            if box[2] - box[0] >= 1 and box[3] - box[1] >= 1:
                boxes.append(box)
                labels.append(int(part))
        out.append((np.array(boxes, np.float64).reshape(-1, 4), np.array(labels, np.int64)))
    return out


def render_shapes(records: Sequence[Any], parts: Sequence[str], cfg: PartstadDetectorPreset) -> list[ShapeViews]:
    """Render the shapes as `pc3d segment` does (unit sphere, `cfg.render`) and box their visible parts."""
    from pc3d.io.pointcloud import read_point_cloud
    from pc3d.methods.partstad_io import ground_truth_parts

    size = cfg.render.image_size
    radius = int(round(cfg.render.point_radius * size / 2))  # NDC radius -> pixels, as render_views
    threshold = min_pixels(cfg.adapt, size, size)
    shapes = []
    for record in records:
        cloud = read_point_cloud(record.cloud)
        truth = ground_truth_parts(record.cloud, cloud, parts)
        if truth is None:
            raise InputError(f"{record.cloud}: no part labels (label.npy / PartNetE_meta.json) beside it")
        views = render_views(normalize_unit_sphere(cloud.points), cloud.colors, cfg.render)
        per_view = footprint_boxes(views, truth[0], truth[1], radius, threshold)
        shapes.append(ShapeViews(record.shape_id, views.images, [b for b, _ in per_view],
                                 [c for _, c in per_view]))
    return shapes


# ---------------------------------------------------------------- box metrics


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(A,B) IoU of xyxy boxes."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(hi - lo, 0, None).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def average_precision(scores: np.ndarray, hits: np.ndarray, num_truth: int) -> float:
    """All-point interpolated AP (VOC 2010+): area under the precision envelope of the ranked detections."""
    if num_truth == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(hits[order])
    recall = np.concatenate([[0.0], tp / num_truth])
    precision = np.concatenate([[1.0], tp / np.arange(1, len(order) + 1)])
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum((recall[1:] - recall[:-1]) * envelope[1:]))


def match_detections(boxes: np.ndarray, scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Greedy matching of one view's detections of one part, best score first: a detection hits when its best
    IoU with a not yet matched ground-truth box is >= BOX_IOU (that box is then taken). Returns hits (D,) bool."""
    hits = np.zeros(len(boxes), bool)
    if not len(truth):
        return hits
    iou = box_iou(boxes, truth)
    taken = np.zeros(len(truth), bool)
    for i in np.argsort(-scores, kind="stable"):
        row = np.where(taken, -1.0, iou[i])
        best = int(np.argmax(row))
        if row[best] >= BOX_IOU:
            taken[best] = hits[i] = True
    return hits


def box_metrics(detections: Sequence[Any], truth_boxes: Sequence[np.ndarray], truth_labels: Sequence[np.ndarray],
                num_parts: int, threshold: float) -> dict[str, Any]:
    """AP50 per part and its mean over the parts that have boxes; recall and precision of the detections scoring
    >= threshold. The matching runs best score first, so the detections above the threshold match exactly as
    their prefix of the full ranking does."""
    scores_of: dict[int, list[np.ndarray]] = {c: [] for c in range(num_parts)}
    hits_of: dict[int, list[np.ndarray]] = {c: [] for c in range(num_parts)}
    for det, gt_boxes, gt_labels in zip(detections, truth_boxes, truth_labels, strict=True):
        boxes, scores, labels = det.boxes.numpy(), det.scores.numpy(), det.labels.numpy()
        for c in range(num_parts):
            mine = labels == c
            scores_of[c].append(scores[mine])
            hits_of[c].append(match_detections(boxes[mine], scores[mine], gt_boxes[gt_labels == c]))
    counts = np.bincount(np.concatenate([np.asarray(g, np.int64) for g in truth_labels] or [np.zeros(0, np.int64)]),
                         minlength=num_parts)
    aps, found, kept, total = [], 0, 0, int(counts.sum())
    for c in range(num_parts):
        scores, hits = np.concatenate(scores_of[c] or [np.zeros(0)]), np.concatenate(hits_of[c] or [np.zeros(0, bool)])
        aps.append(average_precision(scores, hits, int(counts[c])))
        above = scores >= threshold
        found += int(hits[above].sum())
        kept += int(above.sum())
    scored = [a for a in aps if not math.isnan(a)]
    return {"ap50": float(np.mean(scored)) if scored else float("nan"),
            "ap50_per_part": [None if math.isnan(a) else round(a, 4) for a in aps],
            "recall": found / total if total else float("nan"),
            "precision": found / kept if kept else float("nan"), "boxes_truth": total, "boxes_kept": kept}


def evaluate_detector(detector: Any, shapes: Sequence[ShapeViews], parts: Sequence[str], threshold: float
                      ) -> dict[str, float]:
    """Box metrics of `detector` on every view of `shapes` (detections of every score, for AP)."""
    if not shapes:
        return {}
    detections = [d for s in shapes for d in detector.detect(s.images, parts, 0.0)]
    truth_boxes = [b for s in shapes for b in s.boxes]
    truth_labels = [c for s in shapes for c in s.labels]
    return box_metrics(detections, truth_boxes, truth_labels, len(parts), threshold)


# ---------------------------------------------------------------- training


def set_trainable(model: torch.nn.Module, tune: str) -> list[str]:
    """Freeze what `tune` keeps fixed; returns the trainable parameter names.

    prompt: only `model.text_projection`, the linear map of the text encoder's features into the fusion width
    (GLIP's prompt tuning v2 trains a linear layer on the language features with everything else frozen);
    heads: everything but the image and text backbones; full: everything."""
    names = []
    for name, param in model.named_parameters():
        if tune == "prompt":
            train = name.startswith("model.text_projection.")
        elif tune == "heads":
            train = not name.startswith(("model.backbone.", "model.text_backbone."))
        else:
            train = True
        param.requires_grad_(train)
        if train:
            names.append(name)
    return names


def adapt_detector(detector: Any, shapes: Sequence[ShapeViews], parts: Sequence[str], cfg: AdaptConfig,
                   seed: int, log: Any = None) -> list[float]:
    """Finetune `detector.model` in place on every view of `shapes` that has a box; returns the mean loss of
    each epoch. `log(record)` receives one record per optimiser step."""
    views = [(s.images[v], s.boxes[v], s.labels[v]) for s in shapes for v in range(len(s.images))
             if len(s.labels[v])]
    if not views:
        raise InputError("no part is visible enough in any rendered few-shot view to make a training box "
                         "(lower adapt.min_visible_fraction or raise render.image_size)")
    model = detector.model
    trainable = set_trainable(model, cfg.tune)
    if not trainable:
        raise InputError(f"adapt.tune={cfg.tune}: this detector has no parameter of that group to train")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout
    model.train()
    epoch_losses, step = [], 0
    try:
        for epoch in range(cfg.epochs):
            order = torch.randperm(len(views), generator=generator).tolist()
            losses = []
            for start in range(0, len(order), cfg.batch_views):
                batch = [views[i] for i in order[start:start + cfg.batch_views]]
                images = np.stack([b[0] for b in batch])
                targets = [(torch.as_tensor(b[1]), torch.as_tensor(b[2])) for b in batch]
                loss, parts_of_loss = detector.training_loss(images, parts, targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
                losses.append(float(loss.detach()))
                step += 1
                if log is not None:
                    log({"epoch": epoch, "step": step, "loss": losses[-1], **parts_of_loss})
            epoch_losses.append(float(np.mean(losses)))
            con.info(f"epoch {epoch + 1}/{cfg.epochs}: loss {epoch_losses[-1]:.4f} ({len(trainable)} tensors "
                     f"trained, tune={cfg.tune})")
    finally:
        model.eval()
        for param in model.parameters():
            param.requires_grad_(False)
    return epoch_losses


def _base_spec(cfg: PartstadDetectorPreset) -> str:
    from pc3d.methods.partstad_detections import detector_spec

    return detector_spec(cfg.detector)


def finetune(request: RunRequest) -> dict[str, Any]:
    """`pc3d finetune partstad-detector --category NAME`: adapt the detector on the few-shot shapes' views, save
    it in the run folder, and report box AP50 / recall on the held-out shapes before and after."""
    from pc3d.engine.device import resolve_device
    from pc3d.foundation.detector import GroundingDinoDetector
    from pc3d.methods.partstad_io import fewshot_splits, partnete_root
    from pc3d.runs import RunDir

    cfg: PartstadDetectorPreset = request.config
    if cfg.detector.kind != "grounding-dino":
        raise InputError(f"detector.kind '{cfg.detector.kind}' cannot be adapted: transformers has a training loss "
                         f"for Grounding DINO only (set detector.kind=grounding-dino)")
    root = partnete_root(cfg)  # type: ignore[arg-type]  (reads cfg.data and cfg.run only)
    parts, splits = fewshot_splits(root, cfg.data.category)
    test_records = splits["test"][:cfg.data.max_test] if cfg.data.max_test else splits["test"]
    spec = _base_spec(cfg)
    device = resolve_device(cfg.run.device)
    detector = GroundingDinoDetector(spec, device=device, batch_size=cfg.detector.batch_views,
                                     nms_iou=cfg.detector.nms_iou, max_boxes=cfg.adapt.eval_max_boxes)
    run = RunDir.create(cfg.run.out, cfg.run.name or "partstad-detector", checkpoints=False)
    run.save_config(cfg.model_dump(mode="json"))
    con.info(f"rendering {len(splits['train'])} few-shot, {len(splits['val'])} val, {len(test_records)} test "
             f"shapes ({cfg.data.category}: {', '.join(parts)})")
    train = render_shapes(splits["train"], parts, cfg)
    held_out = {"val": render_shapes(splits["val"], parts, cfg), "test": render_shapes(test_records, parts, cfg)}
    threshold = cfg.detector.threshold
    zero_shot = {k: evaluate_detector(detector, v, parts, threshold) for k, v in held_out.items()}
    losses = adapt_detector(detector, train, parts, cfg.adapt, cfg.run.seed, run.log_metrics)
    adapted = {k: evaluate_detector(detector, v, parts, threshold) for k, v in held_out.items()}
    folder = detector.save_adapted(run.path / "detector", {
        "base": spec, "category": cfg.data.category, "parts": list(parts), "tune": cfg.adapt.tune,
        "epochs": cfg.adapt.epochs, "render_size": cfg.render.image_size})
    result: dict[str, Any] = {
        "run_dir": str(run.path), "detector": str(folder), "base": spec, "category": cfg.data.category,
        "parts": list(parts), "tune": cfg.adapt.tune, "threshold": threshold,
        "train_views": int(sum(1 for s in train for c in s.labels if len(c))),
        "train_boxes": int(sum(len(c) for s in train for c in s.labels)),
        "loss_first_epoch": losses[0], "loss_last_epoch": losses[-1], "loss_per_epoch": losses,
        "zero_shot": zero_shot, "adapted": adapted,
        "use": f"pc3d segment INPUT --parts \"{','.join(parts)}\" --detector {run.path}",
    }
    run.write_summary(result)
    return result


def load_adapted(path: str | Path, device: str | torch.device = "cpu", **kwargs: Any) -> Any:
    """The adapted Grounding DINO of a `partstad-detector` run folder (or its detector/ folder)."""
    from pc3d.foundation.detector import adapted_detector_folder, build_detector

    return build_detector("grounding-dino", adapted_detector_folder(str(path), "grounding-dino"), device, **kwargs)
