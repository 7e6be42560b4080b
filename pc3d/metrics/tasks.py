"""`pc3d eval` tasks: read prediction / ground-truth files, run the metric, shape one result dict.

Every task returns {"task", "num_samples", "settings", "summary", "per_class", "mean", "metrics"}:
`summary` holds the headline numbers, `per_class` maps a class name to its numbers, `mean` is the
row under the per-class table, `metrics` is the metric function's full output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pc3d.errors import InputError
from pc3d.metrics import files
from pc3d.metrics.classification import aggregate_votes, classification_metrics
from pc3d.metrics.detection import detection_ap
from pc3d.metrics.instance import instance_ap
from pc3d.metrics.panoptic import panoptic_metrics
from pc3d.metrics.partnet import part_map, partnet_miou
from pc3d.metrics.partseg import NUM_PARTS, PART_TO_CATEGORY, SHAPENETPART_CATEGORIES, category_index, shapenetpart_miou
from pc3d.metrics.semseg import semantic_confusion, semseg_metrics, zeroshot_metrics

TASKS = ("cls", "semseg", "zeroshot", "insseg", "panoptic", "detection", "partseg", "partnet")


@dataclass
class EvalOptions:
    """Task options of `pc3d eval`; None means "the dataset's default" (see each task)."""

    num_classes: int | None = None
    ignore_index: int | None = None
    class_names: list[str] | None = None
    convention: str = "auto"
    unseen: list[int] | None = None
    instance_classes: list[int] | None = None
    min_region_size: int = 100
    thing_classes: list[int] | None = None
    ignore_classes: list[int] | None = None
    min_points: int = 50
    category: str | None = None
    num_parts: int | None = None
    kitti_remap: bool = True


def evaluate(task: str, pred: Path, gt: Path | None, options: EvalOptions) -> dict[str, Any]:
    if task not in TASKS:
        raise InputError(f"unknown eval task '{task}' (one of: {', '.join(TASKS)})")
    if gt is None and task != "partseg":
        raise InputError(f"pc3d eval {task} needs --gt")
    runner = {
        "cls": _cls, "semseg": _semseg, "zeroshot": _semseg, "insseg": _insseg, "panoptic": _panoptic,
        "detection": _detection, "partseg": _partseg, "partnet": _partnet,
    }[task]
    result = runner(task, pred, gt, options)
    result["task"] = task
    return {"task": task, **{k: v for k, v in result.items() if k != "task"}}


def _names(options: EvalOptions, count: int, defaults: Sequence[str] | None = None) -> list[str]:
    if options.class_names is not None:
        if len(options.class_names) < count:
            raise InputError(f"--class-names gives {len(options.class_names)} names but there are {count} classes")
        return list(options.class_names[:count])
    if defaults is not None and len(defaults) == count:
        return list(defaults)
    return [str(i) for i in range(count)]


def _per_class(names: Sequence[str], ids: Sequence[int], columns: dict[str, Sequence[Any]]) -> dict[str, Any]:
    """{name: {column: value}} for the given class ids (values indexed by position in `ids`)."""
    return {names[c] if c < len(names) else str(c): {key: values[i] for key, values in columns.items()}
            for i, c in enumerate(ids)}


# --------------------------------------------------------------------------- classification


def _cls(task: str, pred: Path, gt: Path, options: EvalOptions) -> dict[str, Any]:
    pairs = files.pair_files(pred, gt, (".npy", ".txt", ".json"))
    preds, gts = [], []
    for _, pred_path, gt_path in pairs:
        gt_labels = files.load_class_labels(gt_path)
        if gt_labels.dtype.kind == "f":
            raise files.bad(gt_path, f"ground-truth labels must be integers, got dtype {gt_labels.dtype}")
        scores = files.load_class_labels(pred_path)
        labels = aggregate_votes(scores if scores.ndim == 3 else scores[None]) if scores.dtype.kind == "f" else scores
        if len(labels) != len(gt_labels):
            raise files.bad(pred_path, f"{len(labels)} predictions but {len(gt_labels)} ground-truth labels "
                                       f"in {gt_path}")
        preds.append((pred_path, labels))
        gts.append((gt_path, gt_labels))
    num_classes = options.num_classes or 1 + max(int(a.max(initial=-1)) for _, a in preds + gts)
    for path, labels in preds + gts:
        files.check_range(path, labels, 0, num_classes)
    metrics = classification_metrics(np.concatenate([a for _, a in preds]), np.concatenate([a for _, a in gts]),
                                     num_classes)
    names = _names(options, num_classes)
    present = [c for c in range(num_classes) if metrics["support"][c] > 0]
    return {
        "num_samples": metrics["num_samples"],
        "settings": {"num_classes": num_classes},
        "summary": {"oa": metrics["oa"], "macc": metrics["macc"]},
        "per_class": _per_class(names, present, {"acc": [metrics["per_class_acc"][c] for c in present],
                                                 "samples": [metrics["support"][c] for c in present]}),
        "mean": {"acc": metrics["macc"]},
        "metrics": metrics,
    }


# --------------------------------------------------------------------------- semantic / zero-shot


def _semseg(task: str, pred: Path, gt: Path, options: EvalOptions) -> dict[str, Any]:
    pairs = files.pair_files(pred, gt, (".npy", ".label"))
    kitti = any(g.suffix.lower() == ".label" for _, _, g in pairs)
    loaded = []
    for _, pred_path, gt_path in pairs:
        p = files.load_point_labels(pred_path, options.kitti_remap)
        g = files.load_point_labels(gt_path, options.kitti_remap)
        if p.shape != g.shape:
            raise files.bad(pred_path, f"{len(p)} predicted labels but {gt_path} has {len(g)} points")
        loaded.append((pred_path, p, gt_path, g))
    ignore_index = options.ignore_index if options.ignore_index is not None else (0 if kitti else -1)
    if options.num_classes is not None:
        num_classes = options.num_classes
    elif kitti and options.kitti_remap:
        num_classes = len(files.KITTI_NAMES)
    else:
        num_classes = 1 + max(max(int(p.max(initial=-1)), int(g.max(initial=-1))) for _, p, _, g in loaded)
        num_classes = max(num_classes, ignore_index + 1)
    convention = options.convention
    if convention == "auto":
        convention = "semantickitti" if kitti or task == "zeroshot" else "scannet"
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    in_range_ignore = 0 <= ignore_index < num_classes
    for pred_path, p, gt_path, g in loaded:
        files.check_range(gt_path, g, 0, num_classes, allowed=() if in_range_ignore else (ignore_index,))
        files.check_range(pred_path, p, 0, num_classes)
        confusion += semantic_confusion(p, g, num_classes, ignore_index)
    ignore_classes = [ignore_index] if in_range_ignore else []
    names = _names(options, num_classes, files.KITTI_NAMES if kitti and options.kitti_remap else None)
    settings = {"num_classes": num_classes, "ignore_index": ignore_index, "convention": convention}
    if task == "zeroshot":
        unseen = options.unseen if options.unseen is not None else (list(files.KITTI_UNSEEN) if kitti else None)
        if unseen is None:
            raise InputError("pc3d eval zeroshot needs --unseen (comma-separated class ids)")
        try:
            metrics = zeroshot_metrics(confusion, unseen, ignore_classes, convention)
        except ValueError as exc:
            raise InputError(f"--unseen: {exc}") from exc
        summary = {"hiou": metrics["hiou"], "seen_miou": metrics["seen_miou"],
                   "unseen_miou": metrics["unseen_miou"], "miou": metrics["miou"]}
        settings["unseen"] = metrics["unseen_classes"]
    else:
        metrics = semseg_metrics(confusion, ignore_classes, convention)
        summary = {"miou": metrics["miou"], "macc": metrics["macc"], "oa": metrics["oa"]}
    settings["absent_classes"] = metrics["absent_classes"]
    included = [c for c in range(num_classes) if c not in ignore_classes]
    columns = {"iou": [metrics["per_class_iou"][c] for c in included],
               "acc": [metrics["per_class_acc"][c] for c in included]}
    if task == "zeroshot":
        columns["split"] = ["unseen" if c in metrics["unseen_classes"] else "seen" for c in included]
    metrics["confusion"] = confusion.tolist()
    return {
        "num_samples": len(pairs), "settings": settings, "summary": summary,
        "per_class": _per_class(names, included, columns),
        "mean": {"iou": metrics["miou"], "acc": metrics["macc"]},
        "metrics": metrics,
    }


# --------------------------------------------------------------------------- instance segmentation


def _load_instance_prediction(path: Path, num_points: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    data = files.load_npz(path, ("masks", "labels", "scores"))
    masks = np.asarray(data["masks"])
    if masks.dtype != bool and not np.issubdtype(masks.dtype, np.integer):
        raise files.bad(path, f"'masks' must be bool (or 0/1 integers), got dtype {masks.dtype}")
    if masks.ndim != 2 or masks.shape[1] != num_points:
        if not (masks.size == 0):
            raise files.bad(path, f"'masks' must be (K, {num_points}), got shape {masks.shape}")
        masks = np.zeros((0, num_points), dtype=bool)
    labels = files.npz_labels(path, data, "labels", len(masks))
    scores = files.as_float(path, data, "scores", (len(masks),))
    return masks.astype(bool), labels, scores


def _load_semantic_instance(path: Path, remap: bool = True) -> tuple[np.ndarray, np.ndarray]:
    if path.suffix.lower() == ".label":
        return files.load_kitti(path, remap)
    data = files.load_npz(path, ("semantic", "instance"))
    semantic = files.npz_labels(path, data, "semantic")
    instance = files.npz_labels(path, data, "instance", len(semantic))
    return semantic, instance


def _insseg(task: str, pred: Path, gt: Path, options: EvalOptions) -> dict[str, Any]:
    pairs = files.pair_files(pred, gt, (".npz",))
    ignore_index = options.ignore_index if options.ignore_index is not None else -1
    scenes = []
    for _, pred_path, gt_path in pairs:
        semantic, instance = _load_semantic_instance(gt_path)
        masks, labels, scores = _load_instance_prediction(pred_path, len(semantic))
        scenes.append((pred_path, gt_path, semantic, instance, masks, labels, scores))
    if options.instance_classes is not None:
        classes = sorted(set(options.instance_classes))
    else:  # every class that carries at least one ground-truth instance
        classes = sorted({int(c) for *_, s, i, _m, _l, _s in scenes
                          for c in np.unique(s[(i != -1) & (s != ignore_index)])})
    num_classes = options.num_classes or 1 + max([*classes, *(int(s.max(initial=-1)) for *_, s, _i, _m, _l, _s
                                                               in scenes), 0])
    for pred_path, gt_path, semantic, _, _, labels, _ in scenes:
        files.check_range(gt_path, semantic, 0, num_classes, allowed=(ignore_index,), what="semantic label")
        files.check_range(pred_path, labels, 0, num_classes, what="instance label")
    metrics = instance_ap([(s, i, m, lab, sc) for *_, s, i, m, lab, sc in scenes], classes,
                          options.min_region_size)
    names = _names(options, num_classes)
    return {
        "num_samples": len(pairs),
        "settings": {"instance_classes": classes, "min_region_size": options.min_region_size,
                     "ignore_index": ignore_index},
        "summary": {"ap": metrics["ap"], "ap50": metrics["ap50"], "ap25": metrics["ap25"]},
        "per_class": _per_class(names, classes, {"ap": metrics["per_class_ap"], "ap50": metrics["per_class_ap50"],
                                                 "ap25": metrics["per_class_ap25"]}),
        "mean": {"ap": metrics["ap"], "ap50": metrics["ap50"], "ap25": metrics["ap25"]},
        "metrics": metrics,
    }


# --------------------------------------------------------------------------- panoptic


def _panoptic(task: str, pred: Path, gt: Path, options: EvalOptions) -> dict[str, Any]:
    pairs = files.pair_files(pred, gt, (".npz", ".label"))
    kitti = any(g.suffix.lower() == ".label" for _, _, g in pairs)
    samples = []
    for _, pred_path, gt_path in pairs:
        gs, gi = _load_semantic_instance(gt_path, options.kitti_remap)
        ps, pi = _load_semantic_instance(pred_path, options.kitti_remap)
        if len(ps) != len(gs):
            raise files.bad(pred_path, f"{len(ps)} predicted points but {gt_path} has {len(gs)}")
        samples.append((pred_path, gt_path, ps, pi, gs, gi))
    kitti_ids = kitti and options.kitti_remap
    if options.num_classes is not None:
        num_classes = options.num_classes
    elif kitti_ids:
        num_classes = len(files.KITTI_NAMES)
    else:
        num_classes = 1 + max(max(int(ps.max(initial=-1)), int(gs.max(initial=-1))) for *_, ps, _, gs, _ in samples)
    ignore = options.ignore_classes if options.ignore_classes is not None else ([0] if kitti else [])
    if options.thing_classes is not None:
        things = options.thing_classes
    elif kitti_ids:
        things = list(files.KITTI_THINGS)
    else:  # classes whose ground truth carries instance ids other than 0 / -1
        things = sorted({int(c) for *_, gs, gi in samples for c in np.unique(gs[gi > 0])})
    negative = [c for c in ignore if c < 0]  # -1 = ignore (ScanNet/Pointcept) is a valid label then
    for pred_path, gt_path, ps, pi, gs, gi in samples:
        files.check_range(gt_path, gs, 0, num_classes, allowed=negative, what="semantic label")
        files.check_range(pred_path, ps, 0, num_classes, allowed=negative, what="semantic label")
        files.check_range(gt_path, gi, -1, 2**31, what="instance id")
        files.check_range(pred_path, pi, -1, 2**31, what="instance id")
    metrics = panoptic_metrics([(ps, pi, gs, gi) for *_, ps, pi, gs, gi in samples], num_classes, ignore,
                               things, options.min_points)
    names = _names(options, num_classes, files.KITTI_NAMES if kitti_ids else None)
    included = [c for c in range(num_classes) if c not in metrics["ignore_classes"]]
    return {
        "num_samples": len(pairs),
        "settings": {"num_classes": num_classes, "thing_classes": metrics["thing_classes"],
                     "ignore_classes": metrics["ignore_classes"], "min_points": options.min_points},
        "summary": {k: metrics[k] for k in ("pq", "sq", "rq", "pq_things", "pq_stuff", "pq_dagger", "miou")},
        "per_class": _per_class(names, included, {
            "pq": [metrics["per_class_pq"][c] for c in included], "sq": [metrics["per_class_sq"][c] for c in included],
            "rq": [metrics["per_class_rq"][c] for c in included],
            "iou": [metrics["per_class_iou"][c] for c in included],
            "kind": ["thing" if c in metrics["thing_classes"] else "stuff" for c in included]}),
        "mean": {"pq": metrics["pq"], "sq": metrics["sq"], "rq": metrics["rq"], "iou": metrics["miou"]},
        "metrics": metrics,
    }


# --------------------------------------------------------------------------- detection


def _boxes(path: Path, data: dict[str, np.ndarray]) -> np.ndarray:
    boxes = np.asarray(data["boxes"])
    count = boxes.shape[0] if boxes.ndim >= 1 else 0
    boxes = files.as_float(path, data, "boxes", (count, 6))
    if (boxes[:, 3:] < 0).any():
        raise files.bad(path, "'boxes' sizes (dx, dy, dz) must be >= 0")
    return boxes


def _detection(task: str, pred: Path, gt: Path, options: EvalOptions) -> dict[str, Any]:
    pairs = files.pair_files(pred, gt, (".npz",))
    samples = []
    for _, pred_path, gt_path in pairs:
        g = files.load_npz(gt_path, ("boxes", "labels"))
        p = files.load_npz(pred_path, ("boxes", "labels", "scores"))
        gt_boxes, pred_boxes = _boxes(gt_path, g), _boxes(pred_path, p)
        gt_labels = files.npz_labels(gt_path, g, "labels", len(gt_boxes))
        pred_labels = files.npz_labels(pred_path, p, "labels", len(pred_boxes))
        scores = files.as_float(pred_path, p, "scores", (len(pred_boxes),))
        if options.num_classes is not None:
            files.check_range(gt_path, gt_labels, 0, options.num_classes)
            files.check_range(pred_path, pred_labels, 0, options.num_classes)
        else:
            files.check_range(gt_path, gt_labels, 0, 2**31)
            files.check_range(pred_path, pred_labels, 0, 2**31)
        samples.append((pred_boxes, pred_labels, scores, gt_boxes, gt_labels))
    metrics = detection_ap(samples)
    classes = metrics["classes"]
    names = _names(options, max(classes, default=-1) + 1) if options.class_names or classes else []
    return {
        "num_samples": len(pairs),
        "settings": {"iou_thresholds": metrics["iou_thresholds"], "classes": classes},
        "summary": {"map25": metrics["ap25"], "map50": metrics["ap50"], "ar25": metrics["ar25"],
                    "ar50": metrics["ar50"]},
        "per_class": _per_class(names, classes, {"ap25": metrics["per_class_ap25"], "ap50": metrics["per_class_ap50"],
                                                 "recall25": metrics["per_class_recall25"],
                                                 "recall50": metrics["per_class_recall50"],
                                                 "gt_boxes": metrics["num_gt"]}),
        "mean": {"ap25": metrics["ap25"], "ap50": metrics["ap50"], "recall25": metrics["ar25"],
                 "recall50": metrics["ar50"]},
        "metrics": metrics,
    }


# --------------------------------------------------------------------------- part segmentation


def _category_of(path: Path, data: dict[str, np.ndarray]) -> int | None:
    if "category" not in data:
        return None
    value = np.asarray(data["category"]).reshape(-1)
    if value.size != 1:
        raise files.bad(path, f"'category' must be one value, got {value.size}")
    item = value[0].item()
    try:
        return category_index(item if isinstance(item, str) else int(item))
    except (ValueError, TypeError) as exc:
        raise files.bad(path, str(exc)) from exc


def _part_labels(path: Path, key_options: Sequence[str]) -> tuple[np.ndarray, int | None, dict]:
    if path.suffix.lower() == ".npy":
        return files.load_point_labels(path, False), None, {}
    data = files.load_npz(path, (), ("category", "pred", "label"))
    for key in key_options:
        if key in data:
            return files.npz_labels(path, data, key), _category_of(path, data), data
    raise files.bad(path, f"missing array '{key_options[0]}'")


def _partseg(task: str, pred: Path, gt: Path | None, options: EvalOptions) -> dict[str, Any]:
    samples = []
    if gt is None or gt == pred:  # one file per shape holding pred, label and category
        pairs = files.pair_files(pred, pred, (".npz",))
        for _, path, _ in pairs:
            data = files.load_npz(path, ("pred", "label"), ("category",))
            p = files.npz_labels(path, data, "pred")
            g = files.npz_labels(path, data, "label", len(p))
            samples.append((path, path, _category_of(path, data), p, g))
    else:
        pairs = files.pair_files(pred, gt, (".npz", ".npy"))
        for _, pred_path, gt_path in pairs:
            p, pred_cat, _ = _part_labels(pred_path, ("pred", "label"))
            g, gt_cat, _ = _part_labels(gt_path, ("label", "pred"))
            if len(p) != len(g):
                raise files.bad(pred_path, f"{len(p)} predicted labels but {gt_path} has {len(g)} points")
            samples.append((pred_path, gt_path, gt_cat if gt_cat is not None else pred_cat, p, g))
    checked = []
    for pred_path, gt_path, category, p, g in samples:
        files.check_range(gt_path, g, 0, NUM_PARTS, what="part")
        files.check_range(pred_path, p, 0, NUM_PARTS, what="part")
        if len(g) == 0:
            raise files.bad(gt_path, "shape has no points")
        cat = int(PART_TO_CATEGORY[g[0]]) if category is None else category
        foreign = PART_TO_CATEGORY[g] != cat
        if foreign.any():
            raise files.bad(gt_path, f"part {int(g[foreign][0])} does not belong to {SHAPENETPART_CATEGORIES[cat]}")
        checked.append((cat, p, g))
    metrics = shapenetpart_miou(checked)
    names = list(metrics["per_category_miou"])
    return {
        "num_samples": metrics["num_shapes"],
        "settings": {"absent_part": "IoU 1 when a part is in neither ground truth nor prediction"},
        "summary": {"miou_instance": metrics["miou_instance"], "miou_category": metrics["miou_category"]},
        "per_class": {n: {"miou": metrics["per_category_miou"][n], "shapes": metrics["per_category_shapes"][n]}
                      for n in names},
        "mean": {"miou": metrics["miou_category"]},
        "metrics": metrics,
    }


def _partnet(task: str, pred: Path, gt: Path, options: EvalOptions) -> dict[str, Any]:
    from pc3d.data.labels import PARTNETE_PARTS

    pairs = files.pair_files(pred, gt, (".npz",))
    loaded = []
    for _, pred_path, gt_path in pairs:
        gs, gi = _load_semantic_instance(gt_path)
        data = files.load_npz(pred_path, ("semantic",), ("masks", "labels", "scores"))
        ps = files.npz_labels(pred_path, data, "semantic", len(gs))
        instances = None
        if "masks" in data:
            for key in ("labels", "scores"):
                if key not in data:
                    raise files.bad(pred_path, f"has 'masks' but no '{key}'")
            instances = _load_instance_prediction(pred_path, len(gs))
        loaded.append((pred_path, gt_path, ps, gs, gi, instances))
    part_names = None
    if options.category is not None:
        lookup = {name.lower(): name for name in PARTNETE_PARTS}
        if options.category.lower() in lookup:
            part_names = list(PARTNETE_PARTS[lookup[options.category.lower()]])
    if options.num_parts is not None:
        num_parts = options.num_parts
    elif part_names is not None:
        num_parts = len(part_names)
    else:
        num_parts = 1 + max(max(int(ps.max(initial=-1)), int(gs.max(initial=-1))) for _, _, ps, gs, _, _ in loaded)
    for pred_path, gt_path, ps, gs, _gi, instances in loaded:
        files.check_range(gt_path, gs, 0, num_parts, allowed=(-1,), what="part")
        files.check_range(pred_path, ps, 0, num_parts, allowed=(-1,), what="part")
        if instances is not None:
            files.check_range(pred_path, instances[1], 0, num_parts, what="instance part")
    metrics = partnet_miou([(ps, gs) for _, _, ps, gs, _, _ in loaded], num_parts)
    summary: dict[str, Any] = {"miou": metrics["miou"]}
    columns: dict[str, list] = {"iou": metrics["per_part_iou"], "shapes": metrics["shapes_with_part"]}
    mean: dict[str, Any] = {"iou": metrics["miou"]}
    if any(inst is not None for *_, inst in loaded):
        samples = []
        for _, _, _, gs, gi, inst in loaded:
            masks, labels, scores = inst if inst is not None else (
                np.zeros((0, len(gs)), bool), np.zeros(0, np.int64), np.zeros(0))
            samples.append((np.where(gs >= 0, gs, -1), gi, masks, labels, scores))
        instance_metrics = part_map(samples, num_parts)
        metrics.update(instance_metrics)
        summary["map50_part_aware"] = instance_metrics["map50_part_aware"]
        summary["map50_part_agnostic"] = instance_metrics["map50_part_agnostic"]
        columns["ap50"] = instance_metrics["per_part_ap50"]
        mean["ap50"] = instance_metrics["map50_part_aware"]
    names = part_names if part_names is not None and len(part_names) == num_parts else _names(options, num_parts)
    return {
        "num_samples": len(pairs),
        "settings": {"category": options.category, "num_parts": num_parts},
        "summary": summary,
        "per_class": _per_class(names, list(range(num_parts)), columns),
        "mean": mean,
        "metrics": metrics,
    }
