"""Zero-shot LiDAR segmentation (Affinity3D stage 2): SPVCNN trained on seen GT + Affinity3D pseudo-labels.

Training step (paper section 3.5 on 2DPASS's recipe, spec §5):
  features   = [F_3D^1, .., F_3D^4, last layer] concatenated (Eq. 17; model.head_features = last: last layer only)
  logits     = s * normalise(P(features)) . EMB^T  (text-embedding classifier; EMB = CLIP prompt ensembles)
  L_main     = weighted CE (ignore 0) + alpha Lovasz-softmax on seen GT u pseudo labels (Eq. 19, alpha = 2)
  MSFSKD     Eqs. 11-16, see pc3d.methods.affinity3d_fusion (residual gated fusion, text-embedding heads per
             scale, KL over every visible point, per-scale 3-D losses summed). The 2-D branch is training-only.
Augmentation (section 4.2): shift U[-0.5, 0.5] m per axis, x/y scaling, 70 % random downsampling; image flip and
colour jitter (plus 2DPASS's random bottom crop of the image).
Evaluation: mIoU seen / unseen / all and hIoU (pc3d.metrics.zeroshot_metrics) on the camera's field of view
(section 4.1, following TCKZ; data.eval_front_view = false scores the 360-degree scan), optional flip TTA.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pc3d import console as con
from pc3d.data.readers.semantickitti import (
    CLASS_NAMES,
    IGNORE,
    NUM_CLASSES,
    UNSEEN_CLASSES,
    SemanticKITTI,
    class_weights,
    map_labels,
    zero_shot_labels,
)
from pc3d.engine.method import Method, StepState
from pc3d.errors import InputError
from pc3d.io.atomic import write_text_atomic

# ------------------------------------------------------------------------------------------ losses


def lovasz_grad(gt_sorted: Tensor) -> Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss w.r.t. errors sorted in decreasing order."""
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if gt_sorted.numel() > 1:
        jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return jaccard


def lovasz_softmax(probas: Tensor, labels: Tensor, ignore: int | None = IGNORE) -> Tensor:
    """Lovasz-softmax (Berman et al. 2018) over classes present in `labels`: probas (P, C), labels (P,)."""
    if ignore is not None:
        keep = labels != ignore
        probas, labels = probas[keep], labels[keep]
    if labels.numel() == 0:
        return probas.sum() * 0.0
    losses = []
    for c in torch.unique(labels).tolist():
        fg = (labels == c).to(probas.dtype)
        errors = (fg - probas[:, c]).abs()
        errors_sorted, order = torch.sort(errors, descending=True)
        losses.append(torch.dot(errors_sorted, lovasz_grad(fg[order])))
    return torch.stack(losses).mean()


def seg_loss(logits: Tensor, labels: Tensor, weights: Tensor | None, lovasz_weight: float = 1.0) -> Tensor:
    """CE (class weights, ignore 0) + Lovasz-softmax, 2DPASS's `seg_loss`."""
    if not bool((labels != IGNORE).any()):
        return logits.sum() * 0.0
    ce = F.cross_entropy(logits, labels, weight=weights, ignore_index=IGNORE)
    return ce + lovasz_weight * lovasz_softmax(F.softmax(logits, dim=1), labels)


# ------------------------------------------------------------------------------------------ data

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


@dataclass(frozen=True)
class Augmentation:
    """Training augmentation of section 4.2 (defaults = the paper's / 2DPASS's where the paper gives no value)."""

    translate: float = 0.5  # U[-t, t] per axis (m)
    scale: tuple[float, float] = (0.95, 1.05)  # x, y scaling (2DPASS's range; 4.2 names scaling only)
    keep_ratio: float = 0.7  # random downsampling: share of points kept
    image_flip: float = 0.5
    color_jitter: float = 0.4  # brightness, contrast, saturation factors U[1 - j, 1 + j] (2DPASS ColorJitter)

    @classmethod
    def of(cls, data: Any) -> Augmentation:
        return cls(data.translate, tuple(data.scale), data.keep_ratio, data.image_flip, data.color_jitter)


def color_jitter(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """torchvision-style ColorJitter(b, c, s) on a uint8 RGB image (torchvision is not a dependency): brightness,
    contrast (around the mean grey) and saturation (against the grey image) factors U[1 - s, 1 + s], random order."""
    if strength <= 0:
        return image
    out = image.astype(np.float32) / 255.0
    grey_weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    for op in rng.permutation(3):
        factor = np.float32(rng.uniform(max(0.0, 1 - strength), 1 + strength))
        if op == 0:
            out = out * factor
        elif op == 1:
            out = (out - (out @ grey_weights).mean()) * factor + (out @ grey_weights).mean()
        else:
            grey = (out @ grey_weights)[..., None]
            out = (out - grey) * factor + grey
        out = np.clip(out, 0.0, 1.0)
    return (out * 255.0 + 0.5).astype(np.uint8)


class SegFrames(torch.utils.data.Dataset):
    """Frames for training (labels = pseudo-label files, or GZS seen labels) or evaluation (labels = all GT)."""

    def __init__(self, kitti: SemanticKITTI, pseudo_root: Path | None, train: bool, augment: bool,
                 crop: tuple[int, int] | None, seed: int = 0, augmentation: Augmentation | None = None) -> None:
        self.kitti, self.pseudo_root, self.train = kitti, pseudo_root, train
        self.augment, self.crop, self.seed = augment and train, crop, seed
        self.augmentation = augmentation or Augmentation()
        self.epoch_draws = 0

    def label_file_labels(self, index: int) -> np.ndarray:
        """The frame's training (or evaluation) labels read from its label file alone: no scan, no image (class
        weights count every frame, and reading images for that doubled the start-up time)."""
        from pc3d.io.kitti import read_kitti_label

        ref = self.kitti.frames[index]
        if self.train and self.pseudo_root is not None:
            path = self.pseudo_root / "sequences" / ref.sequence / "labels" / f"{ref.frame}.label"
            if not path.is_file():
                raise InputError(f"{path}: missing pseudo-label file (run `pc3d pseudolabel` on sequence "
                                 f"{ref.sequence})")
            return map_labels(read_kitti_label(path)[0])
        path = self.kitti.label_path(ref)
        if not path.is_file():
            raise InputError(f"{path}: missing label file")
        gt = map_labels(read_kitti_label(path)[0])
        return zero_shot_labels(gt, self.kitti.unseen) if self.train and self.kitti.setting == "gzs" else gt

    def __len__(self) -> int:
        return len(self.kitti)

    def labels_of(self, index: int, sample: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
        if not self.train:
            return sample["gt"], None
        if self.pseudo_root is None:
            return sample["labels"], None
        from pc3d.io.kitti import read_kitti_label

        ref = self.kitti.frames[index]
        folder = self.pseudo_root / "sequences" / ref.sequence
        path = folder / "labels" / f"{ref.frame}.label"
        if not path.is_file():
            raise InputError(f"{path}: missing pseudo-label file (run `pc3d pseudolabel` on sequence {ref.sequence})")
        raw, _ = read_kitti_label(path, num_points=len(sample["points"]))
        visibility = folder / "visibility" / f"{ref.frame}.npy"
        visible = np.load(visibility) if visibility.is_file() else None
        return map_labels(raw), visible

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.kitti[index]
        labels, visible = self.labels_of(index, sample)
        n = len(sample["points"])
        in_image = np.zeros(n, dtype=bool)
        in_image[sample["fov_index"]] = True
        visible = in_image if visible is None else (visible & in_image)
        rng = np.random.default_rng([self.seed, index, torch.initial_seed() % (2**31)]) if self.augment else None
        image = sample["image"]
        height, width = image.shape[:2]
        pix = np.zeros((n, 2), dtype=np.int64)
        pix[sample["fov_index"]] = np.stack([sample["fov_uv"][:, 1], sample["fov_uv"][:, 0]], 1).astype(np.int64)
        pix = np.clip(pix, 0, [height - 1, width - 1])
        top, left = 0, 0
        if self.train and self.crop is not None:  # random bottom crop (2DPASS), whole image when smaller
            ch, cw = min(self.crop[0], height), min(self.crop[1], width)
            top = height - ch
            left = int(rng.integers(0, width - cw + 1)) if rng is not None else (width - cw) // 2
            image = image[top:top + ch, left:left + cw]
            inside = (pix[:, 0] >= top) & (pix[:, 1] >= left) & (pix[:, 1] < left + cw)
            visible &= inside
            pix = pix - [top, left]
        aug = self.augmentation
        if rng is not None:  # 2-D augmentation of section 4.2: horizontal flip and colour jitter
            if rng.random() < aug.image_flip:
                image = image[:, ::-1]
                pix[:, 1] = image.shape[1] - 1 - pix[:, 1]
            image = color_jitter(image, aug.color_jitter, rng)
        xyz = sample["points"].astype(np.float32).copy()
        intensity = sample["intensity"]
        if rng is not None:  # 3-D augmentation of section 4.2, after the projection (pixels stay true)
            xyz[:, :2] *= rng.uniform(*aug.scale)
            xyz += rng.uniform(-aug.translate, aug.translate, 3).astype(np.float32)
            if aug.keep_ratio < 1 and n > 1:  # random downsampling to keep_ratio of the points
                keep = np.sort(rng.choice(n, max(1, int(round(aug.keep_ratio * n))), replace=False))
                xyz, intensity, labels = xyz[keep], intensity[keep], labels[keep]
                visible, pix = visible[keep], pix[keep]
        image_t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0
        return {"xyz": torch.from_numpy(xyz), "intensity": torch.from_numpy(np.ascontiguousarray(intensity)),
                "labels": torch.from_numpy(labels.astype(np.int64)), "visible": torch.from_numpy(visible),
                "pixels": torch.from_numpy(pix), "image": (image_t - IMAGENET_MEAN) / IMAGENET_STD}


def collate_frames(samples: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Concatenate points (with a batch index); images are padded to the largest size of the batch."""
    out = {key: torch.cat([s[key] for s in samples]) for key in ("xyz", "intensity", "labels", "visible", "pixels")}
    out["batch"] = torch.cat([torch.full((len(s["xyz"]),), i, dtype=torch.long) for i, s in enumerate(samples)])
    height = max(s["image"].shape[1] for s in samples)
    width = max(s["image"].shape[2] for s in samples)
    images = torch.zeros(len(samples), 3, height, width)
    for i, s in enumerate(samples):
        images[i, :, : s["image"].shape[1], : s["image"].shape[2]] = s["image"]
    out["image"] = images
    return out


# ------------------------------------------------------------------------------------------ model


class ZeroShotSeg(Method):
    """SPVCNN + text-embedding classifier over the concatenated layers (Eq. 17), with the MSFSKD 2-D branch
    (pc3d.methods.affinity3d_fusion) during training."""

    def __init__(self, config: Any, text_embeddings: Tensor | None, weights: np.ndarray) -> None:
        super().__init__()
        from pc3d.methods.affinity3d_fusion import MSFSKD, ClassHead
        from pc3d.models.fcn2d import ResNetFCN
        from pc3d.models.spvcnn import SPVCNN

        cfg = config.model
        self.config = config
        self.backbone = SPVCNN(4, cfg.channels, cfg.voxel_size, cfg.dropout)
        img = config.image
        hidden = img.hidden
        # F_3D^s: each encoder stage mapped to `hidden`; these are what MSFSKD distils into, and (Eq. 17) what the
        # classifier reads next to the last layer, so the distilled knowledge reaches the prediction
        self.point_proj = nn.ModuleList([nn.Linear(c, hidden) for c in self.backbone.scale_channels])
        self.concat = cfg.head_features == "concat"
        width = self.backbone.out_channels + (len(self.point_proj) * hidden if self.concat else 0)
        text_dim = None
        if text_embeddings is not None:  # logits over classes 0..19; class 0 is never a target (ignored)
            self.register_buffer("text", F.normalize(text_embeddings.float(), dim=1))
            text_dim = int(text_embeddings.shape[1])
        else:
            self.text = None
        self.classifier = ClassHead(width, text_dim)
        self.register_buffer("class_weights", torch.tensor(weights, dtype=torch.float32))
        self.use_2d = img.enabled
        if self.use_2d:
            self.image_encoder = ResNetFCN(img.widths, img.blocks, hidden)
            self.msfskd = MSFSKD(hidden, len(self.point_proj), text_dim, img.lambda_seg2d, img.lambda_xm)

    def point_features(self, batch: dict[str, Tensor]) -> tuple[Tensor, list[Tensor]]:
        """(classifier input (N, width), the per-scale features F_3D^s (N, hidden))."""
        feats = torch.cat([batch["xyz"], batch["intensity"].unsqueeze(1)], dim=1)
        last, scales = self.backbone(batch["xyz"], batch["batch"], feats)
        per_scale = [proj(f) for proj, f in zip(self.point_proj, scales, strict=True)]
        return (torch.cat([*per_scale, last], dim=1) if self.concat else last), per_scale

    def forward_points(self, batch: dict[str, Tensor]) -> tuple[Tensor, list[Tensor]]:
        features, per_scale = self.point_features(batch)
        return self.classifier(features, self.text), per_scale

    def training_step(self, batch: dict[str, Tensor], state: StepState) -> dict[str, Tensor]:
        labels, weights = batch["labels"], self.class_weights
        logits, per_scale = self.forward_points(batch)
        # Eq. 19: alpha Lovasz + weighted CE on the final prediction (alpha = lovasz_weight = 2.0, section 4.2)
        terms = {"seg_3d": seg_loss(logits, labels, weights, self.config.lovasz_weight)}
        if not self.use_2d:
            return terms
        from pc3d.models.fcn2d import sample

        maps = self.image_encoder(batch["image"])
        visible = batch["visible"]
        image_size = tuple(batch["image"].shape[-2:])
        pixels, frame = batch["pixels"][visible], batch["batch"][visible]
        image_feats = [sample(maps[s], pixels, frame, image_size) for s in range(len(per_scale))]

        def loss(scale_logits: Tensor, scale_labels: Tensor) -> Tensor:
            # MSFSKD's losses are 2DPASS's seg_loss (CE + Lovasz, weight 1): Eq. 19's alpha is the final loss's
            return seg_loss(scale_logits, scale_labels, weights, 1.0)

        terms.update(self.msfskd(per_scale, image_feats, visible, labels, self.text, loss))
        return terms

    @torch.no_grad()
    def predict(self, batch: dict[str, Tensor], tta: int = 0) -> Tensor:
        """Per-point class (1..19): argmax of the summed softmax over the identity and up to `tta` flips."""
        probs = F.softmax(self.forward_points(batch)[0], dim=1)
        flips = [(-1.0, 1.0), (1.0, -1.0), (-1.0, -1.0)]
        for k in range(tta):
            sx, sy = flips[k % 3]
            angle = 2 * math.pi * (k // 3) / max(1, (tta + 2) // 3)
            rot = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]],
                               device=batch["xyz"].device)
            xyz = batch["xyz"].clone()
            xyz[:, :2] = (xyz[:, :2] @ rot.t()) * torch.tensor([sx, sy], device=xyz.device)
            probs = probs + F.softmax(self.forward_points({**batch, "xyz": xyz})[0], dim=1)
        probs[:, IGNORE] = -1
        return probs.argmax(dim=1)

    def validation_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        from pc3d.metrics import semantic_confusion

        pred = self.predict(batch).cpu().numpy()
        confusion = semantic_confusion(pred, batch["labels"].cpu().numpy(), NUM_CLASSES)
        return {"confusion": torch.from_numpy(confusion)}

    def validation_epoch_end(self, outputs: list[dict]) -> dict[str, float]:
        confusion = sum(o["confusion"] for o in outputs).numpy()
        return summarise(confusion, self.config.eval_convention)


def summarise(confusion: np.ndarray, convention: str) -> dict[str, float]:
    from pc3d.metrics import zeroshot_metrics

    metrics = zeroshot_metrics(confusion, UNSEEN_CLASSES, [IGNORE], convention)
    return {"miou": metrics["miou"], "seen_miou": metrics["seen_miou"], "unseen_miou": metrics["unseen_miou"],
            "hiou": metrics["hiou"], "oa": metrics["oa"]}


# ------------------------------------------------------------------------------------------ build / run


def data_folder(config: Any) -> Path:
    """Stable folder for generated synthetic frames and pseudo-labels: <run.out>/<run.name>-data/."""
    return Path(config.run.out) / f"{config.run.name or 'affinity3d-seg'}-data"


def _kitti(config: Any, sequences: list[str], train: bool) -> SemanticKITTI:
    from pc3d.methods.affinity3d import synthetic_root

    data = config.data
    # synthetic frames are generated once, where the pseudo-labeller of `run` writes them
    root = Path(data.root) if data.source == "folder" else synthetic_root(config, pseudo_folder(config) / "synthetic")
    setting = "gzs" if train else "full"
    # section 4.1 (following TCKZ) scores the points in the camera's field of view; training keeps the whole scan
    front = (not train) and data.eval_front_view
    return SemanticKITTI(root, sequences, setting, with_image=True, front_view_only=front,
                         max_frames=data.max_frames)


def _sequences(config: Any) -> tuple[list[str], list[str]]:
    data = config.data
    if data.source == "folder":
        return data.sequences, data.val_sequences
    count = -(-data.synthetic_count // 10)
    if count < 2:
        raise InputError("data.synthetic_count must give at least 2 sequences (>= 11 frames): one to train, one "
                         "to evaluate")
    seqs = [f"{s:02d}" for s in range(count)]
    return seqs[:-1], seqs[-1:]


def pseudo_folder(config: Any) -> Path:
    return data_folder(config) / "pseudo"


def pseudo_root(config: Any) -> Path | None:
    if config.data.pseudo_labels:  # `runs/affinity3d-kitti/latest` may be the text-file form of the link
        from pc3d.runs import resolve_latest

        return resolve_latest(config.data.pseudo_labels)
    if config.data.source == "synthetic":
        return pseudo_folder(config)
    return None


def text_embeddings(config: Any) -> Tensor | None:
    if not config.model.text_classifier:
        return None
    from pc3d.foundation.clip import ClipEncoder, build_tiny_random_clip, tiny_random_cached

    if config.build_tiny_random and not tiny_random_cached(config.clip_model):
        build_tiny_random_clip(config.clip_model)
    encoder = ClipEncoder(config.clip_model)
    return encoder.encode_text(list(CLASS_NAMES)).cpu()


def _label_counts(dataset: SegFrames) -> np.ndarray:
    """Per-class point counts of the training labels, from the label files only (no scans, no images)."""
    counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    for i in range(len(dataset)):
        counts += np.bincount(dataset.label_file_labels(i), minlength=NUM_CLASSES)[:NUM_CLASSES]
    return counts


def _val_set(config: Any) -> SegFrames:
    return SegFrames(_kitti(config, _sequences(config)[1], False), None, False, False, None)


def build(config: Any, rank: int) -> Any:
    from pc3d.engine.trainer import TrainingSetup

    train_seqs, _ = _sequences(config)
    crop = tuple(config.image.crop) if config.image.crop else None
    train = SegFrames(_kitti(config, train_seqs, True), pseudo_root(config), True, config.data.augment, crop,
                      config.run.seed, Augmentation.of(config.data))
    weights = class_weights(_label_counts(train))
    method = ZeroShotSeg(config, text_embeddings(config), weights)
    return TrainingSetup(method, train, _val_set(config), collate_frames)


def _make_pseudo_labels(config: Any) -> None:
    """Synthetic runs without pseudo-labels: run the `pseudo_preset` pipeline on the same frames first."""
    from pc3d.config import load_preset, validate_preset
    from pc3d.methods.affinity3d import pseudolabel

    data = config.data
    preset = load_preset(data.pseudo_preset)
    preset["command"] = "pseudolabel"
    preset.setdefault("data", {}).update({"source": "synthetic", "setting": "gzs", "synthetic_count":
                                          data.synthetic_count, "synthetic_rays": data.synthetic_rays,
                                          "synthetic_image": list(data.synthetic_image), "max_frames": None})
    folder = pseudo_folder(config)
    preset["run"] = {"out": str(folder.parent), "name": folder.name, "seed": config.run.seed}
    summary = pseudolabel(validate_preset(preset, data.pseudo_preset))
    accuracy = summary["pseudo_label"].get("accuracy", float("nan"))
    con.info(f"pseudo-labels ({data.pseudo_preset}): accuracy {accuracy:.3f}")


def evaluate(method: ZeroShotSeg, dataset: SegFrames, tta: int, convention: str) -> dict[str, Any]:
    from pc3d.metrics import semantic_confusion

    method.eval()
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    device = next(method.parameters()).device
    for i in con.track(range(len(dataset)), total=len(dataset), description="evaluate"):
        batch = {k: v.to(device) for k, v in collate_frames([dataset[i]]).items()}
        pred = method.predict(batch, tta).cpu().numpy()
        confusion += semantic_confusion(pred, batch["labels"].cpu().numpy(), NUM_CLASSES)
    region = "camera-fov" if dataset.kitti.front_view_only else "360"
    return {**summarise(confusion, convention), "eval_points": region, "confusion": confusion.tolist()}


def run(request: Any) -> dict[str, Any]:
    """`pc3d finetune affinity3d-semantickitti`: (synthetic: pseudo-label first), train, evaluate with TTA."""
    from pc3d.engine.checkpoint import load_weights
    from pc3d.engine.trainer import fit

    config = request.config
    if not config.run.name:
        config = config.model_copy(update={"run": config.run.model_copy(update={"name": "affinity3d-seg"})})
        request = replace(request, config=config)
    if config.data.source == "synthetic" and not config.data.pseudo_labels:
        root = pseudo_folder(config)
        _make_pseudo_labels(config)
        if not (root / "sequences").is_dir():
            raise InputError(f"{root}: pseudo-labelling wrote no labels")
    result = fit(request, build)
    checkpoint = (result.get("checkpoints") or {}).get("best") or result["checkpoints"]["last"]
    weights = load_weights(str(checkpoint))
    # the model is rebuilt from the checkpoint alone: a second build() would count the class weights again
    text = torch.zeros_like(weights["text"]) if "text" in weights else None
    method = ZeroShotSeg(config, text, np.zeros(NUM_CLASSES, np.float32))
    method.load_state_dict(weights, strict=False)
    val_set = _val_set(config)
    scores = evaluate(method, val_set, config.tta, config.eval_convention)
    write_text_atomic(Path(result["run_dir"]) / "test_metrics.json", json.dumps(scores, indent=2))
    result["eval"] = {k: v for k, v in scores.items() if k != "confusion"}
    return result
