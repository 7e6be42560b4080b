"""3D object detection finetuning of Point-MoDE (3DETR recipe) and the inference behind `pc3d detect`.

Per training step: augment each scene (cuboid crop, flips, small z rotation with re-fitted boxes),
encode the scene with the scene expert and 32 random normalised blocks with the object expert, decode
FPS-placed queries whose tgt carries the projected block features, and on every decoder layer:
Hungarian-match queries to ground-truth boxes (cost = -p[class] - 2 GIoU), then classification CE
(no-object weight 0.25) + GIoU + 5 x centre L1 + size L1 (normalised), box terms divided by the
number of ground-truth boxes. Evaluation: per-class proposals, per-class NMS (IoU 0.25), VOC AP at
IoU 0.25 / 0.5 through `pc3d.metrics.detection_ap`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from pc3d.engine.device import resolve_device
from pc3d.engine.method import Method, StepState
from pc3d.errors import InputError
from pc3d.models.point_mae import step_generator
from pc3d.models.point_mode import PointMoDEDetector, sample_blocks, to_object_view
from pc3d.ops.boxes import box_corners, generalized_box_iou_3d, hungarian_match, nms_3d

COLOR_MEAN = np.array([109.8, 97.2, 83.8], dtype=np.float32)  # 3DETR ScanNet colour normalisation


def class_names(dataset: str) -> tuple[str, ...]:
    if dataset == "sunrgbd":
        from pc3d.data.readers.sunrgbd import SUNRGBD_CLASSES

        return SUNRGBD_CLASSES
    from pc3d.data.readers.scannet_detection import DET_CLASS_NAMES

    return DET_CLASS_NAMES


# ------------------------------------------------------------------------------------------ data


def rotate_z_refit(points: np.ndarray, boxes: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate points and boxes about z through the origin; each box becomes the axis-aligned box of its
    rotated corners (3DETR's re-fitting for axis-aligned ScanNet boxes)."""
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    points = points @ rot.T
    if len(boxes):
        corners = box_corners(torch.from_numpy(boxes)).numpy() @ rot.T  # (K, 8, 3)
        low, high = corners.min(axis=1), corners.max(axis=1)
        boxes = np.concatenate([(low + high) / 2, high - low], axis=1)
    return points.astype(np.float32), boxes


def crop_aspect_ok(fraction: np.ndarray, aspect: float) -> bool:
    """3DETR check_aspect: some pair of sides (xy, xz or yz) has min/max ratio >= aspect."""
    pairs = ((0, 1), (0, 2), (1, 2))
    return any(min(fraction[i], fraction[j]) / max(fraction[i], fraction[j]) >= aspect for i, j in pairs)


def random_cuboid(points: np.ndarray, boxes: np.ndarray, rng: np.random.Generator,
                  aug: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """3DETR's RandomCuboid (utils/random_cuboid.py): up to `crop_attempts` cuboids with sides U[crop_size] of the
    scene extent, centred on a random point; one passes when its sides satisfy the aspect check, it holds at
    least crop_min_points (and crop_min_share) points, and some box centre lies within the cropped points'
    min/max ("center" box filter). Returns (point mask, box mask), or None: the scene stays whole."""
    extent = points.max(axis=0) - points.min(axis=0)
    need = max(aug.crop_min_points, aug.crop_min_share * len(points))
    for _ in range(aug.crop_attempts):
        fraction = rng.uniform(*aug.crop_size, size=3)
        if aug.crop_aspect > 0 and not crop_aspect_ok(fraction, aug.crop_aspect):
            continue
        centre = points[rng.integers(len(points))]
        half = extent * fraction / 2
        inside = ((points >= centre - half) & (points <= centre + half)).all(axis=1)
        if inside.sum() < need or not inside.any():
            continue
        if not len(boxes):  # no ground truth to lose (3DETR keeps such a crop too)
            return inside, np.zeros(0, bool)
        low, high = points[inside].min(axis=0), points[inside].max(axis=0)
        keep = ((boxes[:, :3] >= low) & (boxes[:, :3] <= high)).all(axis=1)
        if keep.any():
            return inside, keep
    return None


class DetectionScenes(Dataset):
    """Scenes as fixed-size samples: points (N,3), colors (N,3) normalised, boxes padded to `max_boxes`."""

    def __init__(self, records: Any, num_points: int, max_boxes: int, augment: Any | None = None) -> None:
        self.records = records
        self.num_points = num_points
        self.max_boxes = max_boxes
        self.augment = augment

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        record = self.records[index]
        # training draws from the engine-seeded torch RNG; evaluation is fixed per scene
        seed = int(torch.randint(0, 2**62, ())) if self.augment is not None else index
        rng = np.random.default_rng(seed)
        points = record.points.astype(np.float32)
        colors = (record.colors.astype(np.float32) if record.colors is not None
                  else np.full_like(points, 128.0))
        boxes, labels = record.boxes.astype(np.float64), record.labels.astype(np.int64)
        if self.augment is not None:
            points, colors, boxes, labels = self._augment(points, colors, boxes, labels, rng)
        n = len(points)
        pick = rng.permutation(n)[: self.num_points] if n >= self.num_points else rng.choice(n, self.num_points)
        count = min(len(boxes), self.max_boxes)
        padded = np.zeros((self.max_boxes, 6), np.float32)
        padded[:count] = boxes[:count]
        padded_labels = np.zeros(self.max_boxes, np.int64)
        padded_labels[:count] = labels[:count]
        return {"points": torch.from_numpy(np.ascontiguousarray(points[pick])),
                "colors": torch.from_numpy((colors[pick] - COLOR_MEAN) / 256.0),
                "boxes": torch.from_numpy(padded), "labels": torch.from_numpy(padded_labels),
                "box_mask": torch.arange(self.max_boxes) < count}

    def _augment(self, points: np.ndarray, colors: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        aug = self.augment
        if aug.cuboid_crop:
            crop = random_cuboid(points, boxes, rng, aug)
            if crop is not None:
                inside, keep = crop
                points, colors, boxes, labels = points[inside], colors[inside], boxes[keep], labels[keep]
        if aug.flip:
            for axis in (0, 1):
                if rng.random() < 0.5:
                    points = points.copy()
                    points[:, axis] *= -1
                    boxes = boxes.copy()
                    boxes[:, axis] *= -1
        if aug.rotate_degrees > 0:
            angle = np.deg2rad(rng.uniform(-aug.rotate_degrees, aug.rotate_degrees))
            points, boxes = rotate_z_refit(points, boxes, angle)
        return points, colors, boxes, labels


# ------------------------------------------------------------------------------------------ losses


def normalise_boxes(boxes: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """(B,K,6) scene boxes -> centre in [0,1] of the scene's min/max box, size / scene extent."""
    extent = (high - low).clamp_min(1e-6)[:, None]
    return torch.cat([(boxes[..., :3] - low[:, None]) / extent, boxes[..., 3:] / extent], dim=-1)


def detection_losses(out: dict[str, Tensor], gt_boxes: Tensor, gt_labels: Tensor, gt_mask: Tensor,
                     cfg: Any) -> dict[str, Tensor]:
    """3DETR set loss summed over decoder layers; Hungarian matching per layer and scene."""
    logits, boxes, boxes_norm = out["logits"].float(), out["boxes"].float(), out["boxes_norm"].float()
    layers, batch, queries, classes_plus_bg = logits.shape
    background = classes_plus_bg - 1
    gt_norm = normalise_boxes(gt_boxes.float(), out["low"].float(), out["high"].float())
    num_boxes = gt_mask.sum().float()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(num_boxes)
        num_boxes = num_boxes / torch.distributed.get_world_size()
    num_boxes = num_boxes.clamp_min(1.0)
    weight = torch.ones(classes_plus_bg, device=logits.device)
    weight[background] = cfg.background_weight
    zero = logits.sum() * 0.0
    cls_loss, giou_loss, centre_loss, size_loss = zero, zero, zero, zero
    for layer in range(layers):
        target = torch.full((batch, queries), background, dtype=torch.long, device=logits.device)
        prob = logits[layer].softmax(dim=-1)
        for b in range(batch):
            valid = gt_mask[b]
            if not valid.any():
                continue
            labels, gt, gtn = gt_labels[b][valid], gt_boxes[b][valid].float(), gt_norm[b][valid]
            giou = generalized_box_iou_3d(boxes[layer, b], gt)  # (Q, G)
            cost = -cfg.cost_class * prob[b][:, labels] - cfg.cost_giou * giou
            if cfg.cost_center:
                cost = cost + cfg.cost_center * torch.cdist(boxes_norm[layer, b, :, :3], gtn[:, :3], p=1)
            rows, cols = hungarian_match(cost)
            target[b, rows] = labels[cols]
            giou_loss = giou_loss + (1 - giou[rows, cols]).sum()
            centre_loss = centre_loss + (boxes_norm[layer, b, rows, :3] - gtn[cols, :3]).abs().sum()
            size_loss = size_loss + (boxes_norm[layer, b, rows, 3:] - gtn[cols, 3:]).abs().sum()
        cls_loss = cls_loss + F.cross_entropy(logits[layer].reshape(-1, classes_plus_bg), target.reshape(-1),
                                              weight=weight)
    return {"cls": cfg.loss_class * cls_loss, "giou": cfg.loss_giou * giou_loss / num_boxes,
            "center": cfg.loss_center * centre_loss / num_boxes, "size": cfg.loss_size * size_loss / num_boxes}


# ------------------------------------------------------------------------------------------ predictions


def postprocess(logits: Tensor, boxes: Tensor, threshold: float, nms_iou: float,
                per_class: bool) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Final-layer logits (B,Q,C+1) and boxes (B,Q,6) -> per scene (boxes, labels, scores) after per-class NMS.

    per_class: every (query, class) pair scoring above the threshold is a proposal (3DETR's evaluation);
    otherwise each query proposes only its best class (what `pc3d detect` shows)."""
    probs = logits.float().softmax(dim=-1)[..., :-1]
    results = []
    for b in range(probs.shape[0]):
        if per_class:
            q, c = torch.nonzero(probs[b] > threshold, as_tuple=True)
            scores = probs[b][q, c]
        else:
            scores, c = probs[b].max(dim=-1)
            q = torch.nonzero(scores > threshold).squeeze(1)
            scores, c = scores[q], c[q]
        cand = boxes[b][q].float()
        keep = nms_3d(cand, scores, nms_iou, labels=c)
        results.append((cand[keep].cpu().numpy().astype(np.float64), c[keep].cpu().numpy(),
                        scores[keep].cpu().numpy().astype(np.float64)))
    return results


# ------------------------------------------------------------------------------------------ method


class SceneDetection(Method):
    def __init__(self, config: Any) -> None:
        super().__init__()
        self.names = class_names(config.data.dataset if config.data.source == "folder" else "scannet_detection")
        self.model = PointMoDEDetector(config.scene, config.object if config.use_object_expert else None,
                                       config.queries, len(self.names), config.query_content)
        self.blocks = config.blocks
        self.use_object_expert = config.use_object_expert
        self.use_color = config.scene.use_color
        self.matcher = config.matcher
        self.detect = config.detect

    def forward_scenes(self, batch: dict[str, Tensor], generator: torch.Generator) -> dict[str, Tensor]:
        points = batch["points"]
        blocks = None
        if self.use_object_expert:
            blocks = sample_blocks(points, self.blocks.count, self.blocks.points, generator)
            blocks = to_object_view(blocks, self.blocks.rotation, generator)
        return self.model(points, batch.get("colors") if self.use_color else None, blocks)

    def training_step(self, batch: dict[str, Tensor], state: StepState) -> dict[str, Tensor]:
        out = self.forward_scenes(batch, step_generator())
        return detection_losses(out, batch["boxes"], batch["labels"], batch["box_mask"], self.matcher)

    @torch.no_grad()
    def predict(self, batch: dict[str, Tensor], threshold: float, per_class: bool,
                seed: int = 0) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        out = self.forward_scenes(batch, torch.Generator().manual_seed(seed))  # fixed blocks: repeatable
        return postprocess(out["logits"][-1], out["boxes"][-1], threshold, self.detect.nms_iou, per_class)

    @torch.no_grad()
    def validation_step(self, batch: dict[str, Tensor]) -> dict[str, Any]:
        preds = self.predict(batch, self.detect.eval_threshold, per_class=True)
        gts = [(batch["boxes"][b][batch["box_mask"][b]].cpu().numpy().astype(np.float64),
                batch["labels"][b][batch["box_mask"][b]].cpu().numpy()) for b in range(len(preds))]
        return {"scenes": [(*p, *g) for p, g in zip(preds, gts, strict=True)]}

    def validation_epoch_end(self, outputs: list[dict]) -> dict[str, float]:
        from pc3d.metrics import detection_ap

        samples = [scene for output in outputs for scene in output["scenes"]]
        metrics = detection_ap(samples)
        result = {key: metrics[key] for key in ("ap25", "ap50", "ar25", "ar50")}
        # per-class AP25 of the evaluated classes (those in the ground truth or the predictions): a mean over
        # easy and near-impossible classes says little on its own
        for cls, ap in zip(metrics["classes"], metrics["per_class_ap25"], strict=True):
            result[f"ap25_{self.names[cls].replace(' ', '_')}"] = ap
        return result

    def load_pretrained(self, weights: dict[str, Tensor], source: str = "weights") -> dict[str, Any]:
        """A Point-MoDE pretraining run (experts + projection), a detection run, or Point-MAE weights
        (object expert encoder only). Tensors whose shape differs (query embeddings) are skipped."""
        from pc3d.methods.point_mode import object_state

        if any(k.startswith("model.scene.") for k in weights):
            usable = weights
        elif self.model.object is not None:
            usable = {f"model.object.{k}": v for k, v in object_state(weights).items()}
        else:
            usable = {}
        return self.load_matching(usable, source, "expected a Point-MoDE or Point-MAE checkpoint")


# Synthetic generator indices per split (scene i of a split is scene_rng(seed, offset + i)): train 0.., val
# 100_000.. (detection_scenes.SYNTHETIC_VAL_OFFSET), test 200_000..: ranges 100_000 apart, so no count a
# preset can ask for (SceneDataConfig caps them at 100_000) makes two splits share a scene
SYNTHETIC_TEST_OFFSET = 200_000


def synthetic_test_scenes(config: Any) -> DetectionScenes | None:
    """The held-out test scenes: synthetic ones of their own (never seen by training or selection), or None
    for folders -- ScanNet / SUN RGB-D detection reports val (3DETR's and Point-MoDE's protocol: the
    benchmarks' test labels are hidden), so there val both selects and is reported, as in the papers."""
    from pc3d.data.readers.detection_scenes import SyntheticDetectionScenes

    data = config.data
    if data.source != "synthetic" or data.synthetic_test_count == 0:
        return None
    records = SyntheticDetectionScenes(data.synthetic_test_count, config.run.seed, data.synthetic_points,
                                       SYNTHETIC_TEST_OFFSET)
    return DetectionScenes(records, data.num_points, config.max_boxes, None)


def build(config: Any, rank: int) -> Any:
    """Train and val scenes only: the test split is built after training (`run`), so selection cannot read it."""
    from pc3d.data.readers.detection_scenes import scene_records
    from pc3d.engine.trainer import TrainingSetup

    torch.manual_seed(config.run.seed)
    train = DetectionScenes(scene_records(config.data, "train", config.run.seed), config.data.num_points,
                            config.max_boxes, config.augment)
    val = DetectionScenes(scene_records(config.data, "val", config.run.seed), config.data.num_points,
                          config.max_boxes, None)
    method = SceneDetection(config)
    if config.weights:
        from pc3d.engine.checkpoint import load_weights

        method.load_pretrained(load_weights(config.weights), config.weights)
    return TrainingSetup(method=method, train_set=train, val_set=val)


def run(request: Any) -> dict:
    """`pc3d finetune det-*` trains (checkpoint chosen by val AP25), then scores the chosen checkpoint once on
    val and once on the synthetic test scenes (`val`, `test`, `selection` in the result); `pc3d detect SCENE`
    (request.inputs set) runs inference."""
    if request.inputs is not None:
        return detect(request)
    from pc3d.engine.selection import fit_and_score

    return fit_and_score(request, build, synthetic_test_scenes)


# ------------------------------------------------------------------------------------------ pc3d detect

# corner pairs that differ in exactly one axis bit (see pc3d.ops.boxes.box_corners): the 12 box edges
BOX_EDGES = np.array([(a, a | bit) for a in range(8) for bit in (1, 2, 4) if not a & bit], dtype=np.int32)


def load_detector(spec: str, config: Any) -> tuple[SceneDetection, Any]:
    """A trained detector from a pc3d checkpoint (its own saved model config wins over the preset's,
    so any run's checkpoint loads) or from bare weights that fit the preset's model."""
    from pc3d.config.point_mode import DetectionPreset
    from pc3d.engine.checkpoint import load_weights, read_meta
    from pc3d.engine.hub import resolve_weights
    from pc3d.models.convert import load_state

    path = resolve_weights(spec)
    sidecar = path if path.suffix == ".json" else path.with_suffix(".json")
    if sidecar.is_file():
        saved = read_meta(sidecar).get("config") or {}
        if saved.get("method") not in (None, "point-mode-det"):
            raise InputError(f"{spec}: a '{saved['method']}' checkpoint, not a detector (method point-mode-det); "
                             "train one with `pc3d finetune det-scannet`")
        if saved:
            saved.setdefault("query_content", False)  # runs from before the switch used position-only queries
            merged = {**saved, "command": config.command, "detect": config.detect.model_dump(),
                      "run": config.run.model_dump()}
            config = DetectionPreset.model_validate(merged)
    method = SceneDetection(config)
    report = load_state(method, load_weights(str(path)))
    if report.missing:
        raise InputError(f"{spec}: not a complete detector checkpoint ({len(report.missing)} weights missing, "
                         f"e.g. {report.missing[0]})")
    return method, config


def box_records(boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray, names: tuple[str, ...]) -> list[dict]:
    order = np.argsort(-scores, kind="stable")
    return [{"class": names[int(labels[i])], "label": int(labels[i]), "score": round(float(scores[i]), 4),
             "center": [round(float(v), 4) for v in boxes[i, :3]], "size": [round(float(v), 4) for v in boxes[i, 3:]]}
            for i in order]


def write_box_wireframes(path: Path, boxes: np.ndarray, labels: np.ndarray) -> None:
    """PLY with 8 corner vertices and 12 edges per box, coloured by class (atomic)."""
    from pc3d.io.ply import write_ply
    from pc3d.viz.preview import label_palette

    palette = label_palette(int(labels.max()) + 1 if len(labels) else 1)
    corners = box_corners(torch.from_numpy(boxes.reshape(-1, 6))).numpy().reshape(-1, 3)
    vertex_colors = np.repeat(palette[labels], 8, axis=0) if len(labels) else np.zeros((0, 3), np.uint8)
    edges = (BOX_EDGES[None] + 8 * np.arange(len(boxes))[:, None, None]).reshape(-1, 2)
    edge_colors = np.repeat(palette[labels], len(BOX_EDGES), axis=0) if len(labels) else np.zeros((0, 3), np.uint8)
    write_ply(path, {
        "vertex": {"x": corners[:, 0].astype(np.float32), "y": corners[:, 1].astype(np.float32),
                   "z": corners[:, 2].astype(np.float32), "red": vertex_colors[:, 0], "green": vertex_colors[:, 1],
                   "blue": vertex_colors[:, 2]},
        "edge": {"vertex1": edges[:, 0].astype(np.int32), "vertex2": edges[:, 1].astype(np.int32),
                 "red": edge_colors[:, 0], "green": edge_colors[:, 1], "blue": edge_colors[:, 2]},
    }, comments=("pc3d detect: axis-aligned box wireframes",))


def top_view(points: np.ndarray, colors: np.ndarray | None, boxes: np.ndarray, labels: np.ndarray,
             size: int = 512) -> np.ndarray:
    """Top-down (x right, y up) image of the scene with each box's footprint outlined in its class colour."""
    from pc3d.viz.preview import label_palette

    low = np.minimum(points[:, :2].min(axis=0), boxes[:, :2].min(axis=0) - boxes[:, 3:5].max(axis=0) / 2
                     if len(boxes) else points[:, :2].min(axis=0))
    high = np.maximum(points[:, :2].max(axis=0), boxes[:, :2].max(axis=0) + boxes[:, 3:5].max(axis=0) / 2
                      if len(boxes) else points[:, :2].max(axis=0))
    scale = (size - 16) / max(float((high - low).max()), 1e-6)
    width, height = (np.ceil((high - low) * scale).astype(int) + 16).tolist()
    image = np.full((height, width, 3), 255, np.uint8)

    def pixel(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        col = np.clip(np.round((xy[..., 0] - low[0]) * scale) + 8, 0, width - 1).astype(int)
        row = np.clip(height - 1 - (np.round((xy[..., 1] - low[1]) * scale) + 8), 0, height - 1).astype(int)
        return row, col

    order = np.argsort(points[:, 2])  # higher points drawn last, as seen from above
    shade = colors[order] if colors is not None else np.full((len(order), 3), 150, np.uint8)
    rows, cols = pixel(points[order, :2])
    image[rows, cols] = (0.5 * shade + 0.5 * 255).astype(np.uint8)  # faded, so the boxes stand out
    palette = label_palette(int(labels.max()) + 1 if len(labels) else 1)
    for box, label in zip(boxes, labels, strict=True):
        x0, y0 = box[:2] - box[3:5] / 2
        x1, y1 = box[:2] + box[3:5] / 2
        steps = np.linspace(0, 1, max(int(scale * max(x1 - x0, y1 - y0)) * 2, 2))
        outline = np.concatenate([
            np.stack([x0 + (x1 - x0) * steps, np.full_like(steps, y0)], 1),
            np.stack([x0 + (x1 - x0) * steps, np.full_like(steps, y1)], 1),
            np.stack([np.full_like(steps, x0), y0 + (y1 - y0) * steps], 1),
            np.stack([np.full_like(steps, x1), y0 + (y1 - y0) * steps], 1)])
        r, c = pixel(outline)
        for dr in (0, 1):
            for dc in (0, 1):
                image[np.clip(r + dr, 0, height - 1), np.clip(c + dc, 0, width - 1)] = palette[label]
    return image


def detect_scene(method: SceneDetection, model_config: Any, cloud: Any, threshold: float, seed: int,
                 device: torch.device) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes, labels, scores of one scene: data.num_points points drawn with the run seed (repeatable)."""
    rng = np.random.default_rng(seed)
    n, wanted = len(cloud.points), model_config.data.num_points
    pick = rng.permutation(n)[:wanted] if n >= wanted else rng.choice(n, wanted)
    colors = cloud.colors.astype(np.float32) if cloud.colors is not None else np.full((n, 3), 128.0, np.float32)
    batch = {"points": torch.from_numpy(cloud.points[pick]).unsqueeze(0).to(device),
             "colors": torch.from_numpy((colors[pick] - COLOR_MEAN) / 256.0).unsqueeze(0).to(device)}
    return method.predict(batch, threshold, per_class=False, seed=seed)[0]


def write_detections(stem: Path, source: Path, spec: str, threshold: float, names: tuple[str, ...], cloud: Any,
                     boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray,
                     records: list[dict]) -> dict[str, str]:
    """<stem>.boxes.json / .ply / .npz (for `pc3d eval det`) / .png, each written atomically."""
    from pc3d.io.atomic import atomic_write, write_text_atomic
    from pc3d.io.images import write_image

    # <scene>.boxes.<ext>: never the input's own name, whatever its suffix
    outputs = {ext: str(stem.parent / f"{stem.name}.boxes.{ext}") for ext in ("json", "ply", "npz", "png")}
    summary = {"input": str(source), "checkpoint": spec, "threshold": threshold, "classes": list(names),
               "boxes": records}
    write_text_atomic(outputs["json"], json.dumps(summary, indent=1))
    write_box_wireframes(Path(outputs["ply"]), boxes, labels)
    with atomic_write(outputs["npz"], "wb") as handle:
        np.savez(handle, boxes=boxes, labels=labels.astype(np.int64), scores=scores)
    write_image(outputs["png"], top_view(cloud.points, cloud.colors, boxes, labels))
    return outputs


def detect(request: Any) -> dict[str, Any]:
    """`pc3d detect INPUT...`: boxes of every scene -> rich table, JSON, wireframe PLY, NPZ (for `pc3d eval det`)
    and a top-view PNG per scene under <out>/detect/<time>/ (never next to the inputs, which may be read-only or
    shared, and which a second run would overwrite)."""
    from pc3d import console as con
    from pc3d.io.atomic import write_text_atomic
    from pc3d.io.inputs import expand_inputs, output_stems
    from pc3d.io.pointcloud import read_point_cloud
    from pc3d.runs import RunDir

    config = request.config
    files = expand_inputs(request.inputs["clouds"])  # a missing input fails before the model loads
    spec = request.inputs.get("checkpoint") or request.init_from or config.weights
    if not spec:
        raise InputError("pc3d detect needs a detector: --checkpoint FILE|hf://owner/repo "
                         "(train one with `pc3d finetune det-scannet`)")
    spec = str(spec)
    threshold = config.detect.threshold
    device = resolve_device(config.run.device)
    method: SceneDetection | None = None
    model_config: Any = None
    run_dir: RunDir | None = None
    stems: list[Path] = []
    records: list[dict[str, Any]] = []
    totals: dict[str, int] = {}
    for index, source in enumerate(files):
        cloud = read_point_cloud(source)
        if method is None:
            # loaded after the first scene reads, so an unreadable first input fails before the (slow) model;
            # then once for the whole batch
            method, model_config = load_detector(spec, config)
            method.to(device).eval()
            # the run folder only once something will go into it
            run_dir = RunDir.create(config.run.out, "detect")
            run_dir.checkpoints.rmdir()  # the run-folder convention makes checkpoints/; detect writes none
            stems = output_stems(files, run_dir.path)
        boxes, labels, scores = detect_scene(method, model_config, cloud, threshold, config.run.seed, device)
        boxes_json = box_records(boxes, labels, scores, method.names)
        outputs = write_detections(stems[index], source, spec, threshold, method.names, cloud, boxes, labels,
                                   scores, boxes_json)
        per_class: dict[str, int] = {}
        for r in boxes_json:
            per_class[r["class"]] = per_class.get(r["class"], 0) + 1
            totals[r["class"]] = totals.get(r["class"], 0) + 1
        record: dict[str, Any] = {"input": str(source), "points": len(cloud.points), "detections": len(boxes_json),
                                  "per_class": per_class, "outputs": outputs}
        if con.is_quiet():  # --json: scripts get every box; people see the table
            record["boxes"] = boxes_json
        else:
            _print_boxes(boxes_json, source, threshold)
        records.append(record)
    assert run_dir is not None  # expand_inputs never returns an empty list
    result: dict[str, Any] = {"run_dir": str(run_dir.path), "checkpoint": spec, "threshold": threshold,
                              "detections": sum(r["detections"] for r in records), "per_class": totals,
                              "inputs": records}
    if len(records) == 1:
        # the single-scene keys callers of `pc3d detect SCENE --json` read (input, outputs, boxes) stay at the top
        result.update({k: v for k, v in records[0].items() if k not in result})
    write_text_atomic(run_dir.path / "summary.json", json.dumps(result, indent=1))
    return result


def _print_boxes(records: list[dict], source: Path, threshold: float) -> None:
    from rich.table import Table

    from pc3d import console as con

    table = Table(title=f"{len(records)} boxes in {source.name} (score >= {threshold})")
    for column in ("class", "score", "centre (x, y, z)", "size (dx, dy, dz)"):
        table.add_column(column)
    for r in records:
        table.add_row(r["class"], f"{r['score']:.3f}", ", ".join(f"{v:.2f}" for v in r["center"]),
                      ", ".join(f"{v:.2f}" for v in r["size"]))
    con.console.print(table)
