"""Scene probing of a pretrained PTv3 encoder (Sonata / PointINS protocols) and label-free instance segmentation.

Modes (Sonata's protocol, Pointcept configs/sonata/insseg-sonata-v1m1-0{a,b,c}-scannet-pg-{lin,dec,ft}.py):
- `linear`: the encoder is frozen (no gradient, eval mode) and fresh heads read the concatenation of every
  encoder level carried back to the finest level, i.e. the grid-sampled input points: [level 0, level 1, ...,
  level L-1] in that order, a point taking the features of the cell that contains it at each level (Pointcept
  PG-v1m2's `pooling_parent` loop with the backbone in enc_mode; backbone_out_channels 1232 = 48 + 96 + 192 +
  384 + 512 for Sonata's encoder). Scores are carried from the grid points to every input point.
- `decoder`: the frozen encoder plus the PTv3 decoder (pc3d.models.ptv3_decoder, probe.decoder_*; Sonata:
  depths (2, 2, 2, 2), widths (64, 96, 192, 384)), trained with fresh heads on its finest output.
- `full`: everything trains (encoder at `backbone_lr_scale`, Sonata's 0.1x for `block` params).
Which network: Sonata's probes load the *student* of the pretraining checkpoint (CheckpointLoader keywords
"module.student.backbone"); an official sonata.pth holds one bare encoder (no student / teacher prefix). A pc3d
run is probed at `probe.encoder_source` (default student, as Sonata; `teacher` = the EMA teacher).
Tasks:
- semseg: CE (+ Lovasz-softmax) -> mIoU;
- insseg: PointGroup -- semantic head + offset head (L1 + (-cos) on instance points); inference shifts points
  by their offsets and BFS-clusters them per predicted class (radius, neighbour cap), proposals score the mean
  class probability -> AP / AP50 / AP25 (ScanNet protocol). `probe.offset_init` picks the offset head: `probe`
  (default, Sonata's protocol) is a fresh head on the probe features at full resolution for every checkpoint;
  `pretrained` (an explicit, non-paper option) warm-starts from the checkpoint's PointINS offset head at its
  pretraining level (a checkpoint without one, e.g. Sonata, falls back to a random head of that shape), and
  `random` is that head randomly initialised (its control);
- panoptic: the same heads; thing points are clustered into instances, stuff classes are one segment
  -> PQ / SQ / RQ;
- unsup-insseg: no training; the pretrained PointINS offsets shift the points, BFS clusters them, and
  clusters are Hungarian-matched to ground-truth instances (paper appendix) -> matched mIoU and
  class-agnostic AP.
Predictions are made on grid-sampled points and carried back to every input point for scoring. Synthetic rooms
have a third, disjoint split (generator indices from TEST_INDEX_OFFSET): the checkpoint chosen on val (or the last
one) is scored on it once after training (`test/...` metrics).

Input rules (model.pooled_depth / color_norm / center_precision / feat_keys) belong to the probed weights: unset
ones are resolved when the run starts from the checkpoint's family (an official Sonata / PTv3 file by its stem, a
pc3d run by its saved config) and written into the run's config.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from pc3d.engine.method import Method, StepState
from pc3d.errors import InputError
from pc3d.methods.sonata import OffsetHead, build_encoder, load_scenes
from pc3d.models.ptv3 import Point, PTv3Encoder, expected_upcast_channels, level_inverse, up_cast
from pc3d.models.ptv3_decoder import PTv3Decoder
from pc3d.models.ptv3_inputs import (
    InputRules,
    center_shift,
    input_features,
    resolve_input_rules,
)
from pc3d.ops.clustering import connected_components
from pc3d.ops.grid import grid_sample

# ----------------------------------------------------------------------------- dataset facts


@dataclass(frozen=True)
class SceneLabels:
    num_classes: int
    instance_classes: tuple[int, ...]  # classes whose points belong to instances ("things")
    stuff_classes: tuple[int, ...]


def scene_labels(dataset: str) -> SceneLabels:
    if dataset == "scannet":
        from pc3d.data.readers.scannet import SCANNET_CLASSES, SCANNET_INSTANCE_CLASSES, SCANNET_STUFF

        return SceneLabels(len(SCANNET_CLASSES), SCANNET_INSTANCE_CLASSES, SCANNET_STUFF)
    if dataset == "scannet200":
        from pc3d.data.readers.scannet import SCANNET200_INSTANCE_CLASSES, SCANNET200_NUM_CLASSES, SCANNET200_STUFF

        return SceneLabels(SCANNET200_NUM_CLASSES, SCANNET200_INSTANCE_CLASSES, SCANNET200_STUFF)
    if dataset == "nuscenes":
        from pc3d.data.readers.nuscenes import NUSCENES_CLASSES, NUSCENES_STUFF_CLASSES, NUSCENES_THING_CLASSES

        return SceneLabels(len(NUSCENES_CLASSES), NUSCENES_THING_CLASSES, NUSCENES_STUFF_CLASSES)
    if dataset == "s3dis":
        from pc3d.data.readers.s3dis import S3DIS_CLASSES, S3DIS_INSTANCE_CLASSES

        return SceneLabels(len(S3DIS_CLASSES), S3DIS_INSTANCE_CLASSES, ())
    if dataset == "semantickitti":
        from pc3d.methods.sonata import KITTI_STUFF_CLASSES, KITTI_THING_CLASSES

        return SceneLabels(19, KITTI_THING_CLASSES, KITTI_STUFF_CLASSES)
    raise InputError(f"data.dataset {dataset}: scene probing reads scannet, scannet200, s3dis, semantickitti or "
                     "nuscenes")


def parse_instances(segment: np.ndarray, instance: np.ndarray, stuff: tuple[int, ...]) -> np.ndarray:
    """Pointcept InstanceParser: -1 on stuff and unlabelled points, other instances renumbered 0.."""
    out = np.where(np.isin(segment, stuff) | (segment < 0), -1, instance)
    labelled = out >= 0
    if labelled.any():
        out[labelled] = np.unique(out[labelled], return_inverse=True)[1]
    return out.astype(np.int64)


# ----------------------------------------------------------------------------- data


class ProbeScenes(Dataset):
    """Grid-sampled scenes with labels; training scenes are augmented (z-rotation, flip, scale).

    Each cell keeps its lowest-index point (Pointcept's GridSample(mode="train") keeps a random one)."""

    def __init__(self, scenes: Any, labels: SceneLabels, grid_size: float, train: bool, augment: bool,
                 loop: int = 1, rules: InputRules | None = None) -> None:
        self.scenes, self.labels, self.grid_size = scenes, labels, grid_size
        self.train, self.augment, self.loop = train, augment and train, loop if train else 1
        self.rules = rules or InputRules()

    def __len__(self) -> int:
        return len(self.scenes) * self.loop

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        sample = self.scenes[index % len(self.scenes)]
        coord = center_shift(sample["coord"], self.rules.center_precision)
        normal = np.asarray(sample["normal"], dtype=np.float32)
        if self.augment:
            rng = np.random.default_rng(int(torch.randint(0, 2**62, ())))
            angle = rng.uniform(-math.pi, math.pi)
            c, s = math.cos(angle), math.sin(angle)
            orient = np.diag([-1.0 if rng.random() < 0.5 else 1.0, 1.0, 1.0]) @ np.array(
                [[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
            coord = (rng.uniform(0.9, 1.1) * coord.astype(np.float64) @ orient.T).astype(np.float32)
            normal = (normal.astype(np.float64) @ orient.T).astype(np.float32)
        coord_t = torch.from_numpy(coord)
        cells = grid_sample(coord_t, self.grid_size)
        keep = cells.unique_index
        segment = sample["segment"].astype(np.int64)
        instance = parse_instances(segment, sample["instance"].astype(np.int64), self.labels.stuff_classes)
        feat = torch.from_numpy(input_features(coord, sample["color"], normal, self.rules))
        out = {"coord": coord_t[keep], "grid": cells.grid_coord[keep], "feat": feat[keep],
               "segment": torch.from_numpy(segment)[keep], "instance": torch.from_numpy(instance)[keep]}
        if not self.train:  # full-resolution labels for scoring
            out.update({"full_segment": torch.from_numpy(segment), "full_instance": torch.from_numpy(instance),
                        "full_inverse": cells.inverse, "full_raw_instance": torch.from_numpy(
                            sample["instance"].astype(np.int64))})
        return out


def collate_scenes(samples: list[dict[str, Tensor]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in samples[0]:
        if key.startswith("full_"):
            out[key] = [s[key] for s in samples]
        else:
            out[key] = torch.cat([s[key] for s in samples])
    out["batch"] = torch.cat([torch.full((s["coord"].shape[0],), i, dtype=torch.long) for i, s in enumerate(samples)])
    return out


# ----------------------------------------------------------------------------- networks


def lovasz_softmax(probs: Tensor, labels: Tensor) -> Tensor:
    """Lovasz-softmax (Berman et al. 2018): the Lovasz extension of the Jaccard loss, mean over present classes."""
    losses = []
    for c in torch.unique(labels).tolist():
        fg = (labels == c).float()
        errors = (fg - probs[:, c]).abs()
        errors, order = torch.sort(errors, descending=True)
        fg = fg[order]
        gts = fg.sum()
        intersection = gts - fg.cumsum(0)
        union = gts + (1 - fg).cumsum(0)
        jaccard = 1.0 - intersection / union
        grad = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
        losses.append(torch.dot(errors, grad))
    return torch.stack(losses).mean() if losses else probs.sum() * 0.0


def instance_centroid_offsets(coord: Tensor, instance: Tensor, batch: Tensor) -> tuple[Tensor, Tensor]:
    """Target offsets (instance centroid - x) and the mask of points that have an instance."""
    valid = instance >= 0
    target = torch.zeros_like(coord)
    if valid.any():
        key = batch[valid] * (int(instance.max()) + 1) + instance[valid]
        ids, inverse = torch.unique(key, return_inverse=True)
        sums = torch.zeros(ids.numel(), 3, dtype=coord.dtype, device=coord.device).index_add_(0, inverse, coord[valid])
        counts = torch.bincount(inverse, minlength=ids.numel()).unsqueeze(1).to(coord.dtype)
        target[valid] = (sums / counts)[inverse] - coord[valid]
    return target, valid


def pointgroup_offset_loss(pred: Tensor, target: Tensor) -> Tensor:
    """PointGroup: L1 summed over xyz, mean over points, plus -cos."""
    if pred.shape[0] == 0:
        return pred.sum() * 0.0
    return (pred - target).abs().sum(1).mean() - F.cosine_similarity(pred, target, dim=1, eps=1e-8).mean()


def cluster_proposals(shifted: Tensor, pred_class: Tensor, probs: Tensor, classes: tuple[int, ...], radius: float,
                      max_neighbors: int, min_points: int, propose_points: int) -> tuple[list[Tensor], list[int],
                                                                                          list[float]]:
    """PointGroup clustering: BFS on shifted points within each predicted instance class."""
    masks, labels, scores = [], [], []
    for c in classes:
        members = torch.nonzero(pred_class == c).squeeze(1)
        if members.numel() < max(min_points, 1):
            continue
        comp = connected_components(shifted[members].float(), radius, k=min(max_neighbors, members.numel()),
                                    min_size=min_points)
        for k in range(int(comp.max()) + 1 if (comp >= 0).any() else 0):
            idx = members[comp == k]
            if idx.numel() <= propose_points:
                continue
            masks.append(idx)
            labels.append(c)
            scores.append(float(probs[idx, c].mean()))
    return masks, labels, scores


def lift_offsets(head: Point, offsets: Tensor, depth: int, coord: Tensor) -> Tensor:
    """Offsets predicted `depth` poolings above the input, carried to every input point (coords `coord`).

    A coarse point's offset points from its (mean) coordinate to its centre, so each finer point gets
    `coarse coord + offset - own coord`: all points of a cell share the predicted centre."""
    if depth == 0:
        return offsets
    inverse = level_inverse(head, depth)
    return (head.coord + offsets)[inverse] - coord


def pretrained_offset_head(weights: dict[str, Tensor], network: str = "teacher"
                           ) -> tuple[str, dict[str, Tensor]] | None:
    """(prefix, tensors) of the offset head in a PointINS run (that of `network` preferred, as the encoder's) or a
    probe run; None if absent."""
    other = "student" if network == "teacher" else "teacher"
    for prefix in (f"{network}.", f"{other}.", ""):
        key = prefix + "offset_head."
        tensors = {k[len(key):]: v for k, v in weights.items() if k.startswith(key)}
        if tensors:
            return prefix + "offset_head", tensors
    return None


def probe_feature_width(config: Any) -> int:
    """Width of the features the heads read: the decoder's finest width, else the sum of all encoder widths."""
    if config.probe.mode == "decoder":
        return int(config.probe.decoder_channels[0])
    return int(sum(config.model.channels))


def build_decoder(config: Any) -> PTv3Decoder:
    probe, model = config.probe, config.model
    if len(probe.decoder_depths) != len(model.channels) - 1:
        raise InputError(f"probe.decoder_depths has {len(probe.decoder_depths)} stages; a {len(model.channels)}-"
                         f"stage encoder needs {len(model.channels) - 1} (one per pooling)")
    return PTv3Decoder(tuple(model.channels), tuple(probe.decoder_depths), tuple(probe.decoder_channels),
                       tuple(probe.decoder_heads), probe.decoder_patch_size, model.mlp_ratio, probe.decoder_drop_path,
                       len(model.orders))


def probe_encoder(model: Any, teacher: bool = False) -> PTv3Encoder:
    """The encoder of a model section, serialising pooled levels by its pooled_depth rule (null: the stem's)."""
    encoder = build_encoder(model, teacher)
    encoder.set_pooled_depth(model.pooled_depth)
    return encoder


class SceneProbe(Method):
    def __init__(self, config: Any, labels: SceneLabels) -> None:
        super().__init__()
        self.config, self.labels = config, labels
        probe = config.probe
        self.encoder = probe_encoder(config.model)
        channels = tuple(config.model.channels)
        self.decoder = build_decoder(config) if probe.mode == "decoder" else None
        width = probe_feature_width(config)
        self.seg_head = nn.Linear(width, labels.num_classes)
        self.offset_head: OffsetHead | None = None
        self.offset_levels = probe.up_cast_levels
        if probe.task in ("insseg", "panoptic"):
            if probe.offset_init == "probe":
                self.offset_head = OffsetHead(width)
            else:  # the shape and level of PointINS's pretraining head (up-cast of the last levels+1 stages)
                if self.offset_levels >= len(channels):
                    raise InputError(f"probe.up_cast_levels {self.offset_levels} needs more than {len(channels)} "
                                     "encoder stages")
                self.offset_head = OffsetHead(expected_upcast_channels(channels, self.offset_levels))
        self.offset_init_note = offset_init_note(probe.offset_init, None, self.offset_levels)
        if probe.mode != "full":
            for param in self.encoder.parameters():
                param.requires_grad_(False)

    def train(self, mode: bool = True) -> SceneProbe:
        super().train(mode)
        if self.config.probe.mode != "full":
            self.encoder.eval()  # frozen: no drop-path, no order shuffling
        return self

    def features(self, batch: dict[str, Tensor]) -> tuple[Tensor, Point]:
        """(probe features at full resolution, the encoder's coarsest level)."""
        point = Point(coord=batch["coord"], grid_coord=batch["grid"], batch=batch["batch"], feat=batch["feat"])
        frozen = self.config.probe.mode != "full"
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            top = self.encoder(point)
        if self.decoder is not None:
            return self.decoder(top), top
        # linear / full: every level up-cast onto the finest, concatenated finest-first (see the module doc)
        return up_cast(top, len(self.config.model.channels) - 1).feat, top

    def offsets(self, feat: Tensor, top: Point, coord: Tensor) -> Tensor:
        """Offsets of every input point from the configured offset head."""
        assert self.offset_head is not None
        if self.config.probe.offset_init == "probe":
            return self.offset_head(feat)
        head = up_cast(top, self.offset_levels)
        depth = len(self.config.model.channels) - 1 - self.offset_levels
        return lift_offsets(head, self.offset_head(head.feat), depth, coord)

    def training_step(self, batch: dict[str, Tensor], state: StepState) -> dict[str, Tensor]:
        feat, top = self.features(batch)
        logits = self.seg_head(feat)
        segment = batch["segment"]
        labelled = segment >= 0
        terms = {"ce": F.cross_entropy(logits[labelled], segment[labelled])}
        if self.config.probe.lovasz:
            terms["lovasz"] = lovasz_softmax(F.softmax(logits[labelled].float(), 1), segment[labelled])
        if self.offset_head is not None:
            target, valid = instance_centroid_offsets(batch["coord"], batch["instance"], batch["batch"])
            offsets = self.offsets(feat, top, batch["coord"])
            terms["offset"] = pointgroup_offset_loss(offsets[valid], target[valid])
        return terms

    @torch.no_grad()
    def validation_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        feat, top = self.features(batch)
        probs = F.softmax(self.seg_head(feat).float(), 1)
        offsets = self.offsets(feat, top, batch["coord"]).float() if self.offset_head is not None else None
        probe, out = self.config.probe, {"scenes": []}
        for scene, inverse in enumerate(batch["full_inverse"]):
            sel = torch.nonzero(batch["batch"] == scene).squeeze(1)
            p = probs[sel]
            pred = p.argmax(1)
            record = {"pred": pred[inverse].cpu().numpy(), "segment": batch["full_segment"][scene].cpu().numpy(),
                      "instance": batch["full_instance"][scene].cpu().numpy()}
            if offsets is not None:
                shifted = batch["coord"][sel] + offsets[sel]
                masks, labels, scores = cluster_proposals(
                    shifted, pred, p, self.labels.instance_classes, probe.cluster_radius,
                    probe.cluster_max_neighbors, probe.cluster_min_points, probe.propose_min_points)
                cell_instance = torch.full((sel.numel(),), -1, dtype=torch.long, device=sel.device)
                for k, idx in enumerate(masks):
                    cell_instance[idx] = k
                record.update({"pred_instance": cell_instance[inverse].cpu().numpy(),
                               "pred_labels": np.array(labels, np.int64), "pred_scores": np.array(scores)})
            out["scenes"].append(record)
        return out

    def validation_epoch_end(self, outputs: list[dict]) -> dict[str, float]:
        scenes = [s for o in outputs for s in o["scenes"]]
        return score_scenes(scenes, self.config.probe.task, self.labels, self.config.probe.min_region_size)

    def param_groups(self, weight_decay: float) -> list[dict]:
        groups = super().param_groups(weight_decay)
        if self.config.probe.mode != "full":
            return groups
        split = []
        for group in groups:  # the encoder trains at a smaller lr (Sonata: 0.1x for `block` params)
            for is_encoder in (True, False):
                pairs = [(p, n) for p, n in zip(group["params"], group["param_names"], strict=True)
                         if n.startswith("encoder.") == is_encoder]
                if pairs:
                    split.append({**group, "params": [p for p, _ in pairs], "param_names": [n for _, n in pairs],
                                  "lr_scale": self.config.backbone_lr_scale if is_encoder else 1.0})
        return split

    def load_pretrained(self, weights: dict[str, Tensor], source: str = "weights") -> dict[str, Any]:
        report = load_encoder(self, weights, source, network=self.config.probe.encoder_source)
        report["offset_init"] = self.offset_init_note = self.init_offset_head(weights, source)
        return report

    def init_offset_head(self, weights: dict[str, Tensor], source: str) -> str | None:
        """Load the checkpoint's offset head when `probe.offset_init` is `pretrained` and it has one."""
        mode = self.config.probe.offset_init
        if self.offset_head is None:
            return None
        found = pretrained_offset_head(weights, self.config.probe.encoder_source) if mode == "pretrained" else None
        if found is not None:
            prefix, tensors = found
            own = self.offset_head.state_dict()
            bad = [k for k in own if k not in tensors or tuple(tensors[k].shape) != tuple(own[k].shape)]
            if bad:
                width = tensors.get("net.0.weight", next(iter(tensors.values()))).shape[-1]
                raise InputError(f"{source}: its offset head ({prefix}) takes {width} channels, not the "
                                 f"{own['net.0.weight'].shape[1]} of probe.up_cast_levels {self.offset_levels}; "
                                 "set probe.up_cast_levels to the pretraining head.up_cast_levels")
            self.offset_head.load_state_dict({k: tensors[k] for k in own})
        return offset_init_note(mode, found[0] if found else None, self.offset_levels, checkpoint=True)


def offset_init_note(mode: str, loaded_from: str | None, levels: int | None, checkpoint: bool = False) -> str:
    """One line saying how the probe's offset head started (reported in the run's result)."""
    if mode == "probe":
        return "probe (fresh head on the probe features)"
    if mode == "random":
        return f"random (head of the pretraining shape, up-cast level {levels})"
    if loaded_from is not None:
        return f"pretrained ({loaded_from}, up-cast level {levels})"
    return "random (checkpoint has no offset head)" if checkpoint else "random (no checkpoint)"


def load_encoder(module: nn.Module, weights: dict[str, Tensor], source: str,
                 extra_prefixes: tuple[str, ...] = (), network: str = "teacher") -> dict[str, Any]:
    """Encoder (and `extra_prefixes`) tensors from a Sonata / PointINS run (its `network`, student or teacher,
    preferred over the other), a probe run, or an official Sonata / Pointcept PTv3 checkpoint (mapped by
    pc3d.models.convert_ptv3)."""
    from pc3d.models.convert_ptv3 import is_official_ptv3, load_official_encoder

    if is_official_ptv3(weights):
        if extra_prefixes:
            raise InputError(f"{source}: an official PTv3 / Sonata checkpoint has only the encoder, not "
                             f"{', '.join(p.rstrip('.') for p in extra_prefixes)}")
        return load_official_encoder(module.encoder, weights, source)
    other = "student" if network == "teacher" else "teacher"
    for prefix in (f"{network}.", f"{other}.", ""):
        mapped = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix + "encoder.")
                  or any(k.startswith(prefix + e) for e in extra_prefixes)}
        if mapped:
            break
    own = module.state_dict()
    wanted = [k for k in own if k.startswith("encoder.") or any(k.startswith(e) for e in extra_prefixes)]
    matched = {k: v for k, v in mapped.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    missing = [k for k in wanted if k not in matched]
    if missing:
        raise InputError(f"{source}: does not fit the encoder of this preset ({len(missing)} tensors missing or "
                         f"of another shape, e.g. {missing[0]}); check the model section")
    module.load_state_dict(matched, strict=False)
    return {"loaded": len(matched), "skipped": sorted(set(weights) - set(matched)), "missing": [],
            "network": prefix.rstrip(".") or "weights"}


# ----------------------------------------------------------------------------- scoring


def score_scenes(scenes: list[dict[str, np.ndarray]], task: str, labels: SceneLabels,
                 min_region_size: int) -> dict[str, float]:
    from pc3d.metrics.instance import instance_ap
    from pc3d.metrics.panoptic import panoptic_metrics
    from pc3d.metrics.semseg import semantic_confusion, semseg_metrics

    confusion = sum(semantic_confusion(s["pred"], s["segment"], labels.num_classes, ignore_index=-1) for s in scenes)
    result = {"miou": float(semseg_metrics(confusion)["miou"]), "oa": float(semseg_metrics(confusion)["oa"])}
    if task == "insseg":
        runs = []
        for s in scenes:
            k = len(s["pred_labels"])
            masks = np.stack([s["pred_instance"] == i for i in range(k)]) if k else np.zeros((0, s["pred"].size), bool)
            runs.append((s["segment"], s["instance"], masks, s["pred_labels"], s["pred_scores"]))
        ap = instance_ap(runs, labels.instance_classes, min_region_size)
        result.update({"ap": ap["ap"], "ap50": ap["ap50"], "ap25": ap["ap25"]})
    if task == "panoptic":
        samples = []
        for s in scenes:
            # stuff classes: one segment each (id 0); things: the clustered instances (no cluster: -1)
            pred_inst = np.where(np.isin(s["pred"], labels.stuff_classes), 0,
                                 np.where(s["pred_instance"] >= 0, s["pred_instance"] + 1, -1))
            gt_inst = np.where(np.isin(s["segment"], labels.stuff_classes), 0,
                               np.where(s["instance"] >= 0, s["instance"] + 1, -1))
            gt_sem = np.where(s["segment"] >= 0, s["segment"] + 1, 0)  # 0 = unlabelled, ignored
            samples.append((s["pred"] + 1, pred_inst, gt_sem, gt_inst))
        pq = panoptic_metrics(samples, labels.num_classes + 1, ignore_classes=(0,),
                              thing_classes=[c + 1 for c in labels.instance_classes], min_points=min_region_size)
        result.update({"pq": pq["pq"], "sq": pq["sq"], "rq": pq["rq"]})
    return {k: (float(v) if v is not None else float("nan")) for k, v in result.items()}


# ----------------------------------------------------------------------------- unsupervised instances


class PretrainedOffsets(nn.Module):
    """Teacher encoder + offset head of a PointINS run: offsets for every grid-sampled point."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        from pc3d.models.ptv3 import expected_upcast_channels

        self.levels = config.probe.up_cast_levels
        self.encoder = probe_encoder(config.model, teacher=True)
        self.offset_head = OffsetHead(expected_upcast_channels(tuple(config.model.channels), self.levels))

    @torch.no_grad()
    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        point = Point(coord=batch["coord"], grid_coord=batch["grid"], batch=batch["batch"], feat=batch["feat"])
        top = self.encoder(point)
        head = up_cast(top, self.levels)
        depth = len(self.encoder.stages) - 1 - self.levels  # poolings between the input and the head level
        return lift_offsets(head, self.offset_head(head.feat), depth, batch["coord"])


def match_clusters(pred_instance: np.ndarray, gt_instance: np.ndarray) -> dict[str, float]:
    """Hungarian matching of clusters to ground-truth instances by IoU: mean IoU over GT, matched share."""
    from pc3d.ops.boxes import hungarian_match

    gt_ids = np.unique(gt_instance[gt_instance >= 0])
    pred_ids = np.unique(pred_instance[pred_instance >= 0])
    if gt_ids.size == 0:
        return {"miou": float("nan"), "recall50": float("nan")}
    if pred_ids.size == 0:
        return {"miou": 0.0, "recall50": 0.0}
    gt_index = np.searchsorted(gt_ids, gt_instance)
    pred_index = np.searchsorted(pred_ids, pred_instance)
    both = (gt_instance >= 0) & (pred_instance >= 0)
    inter = np.zeros((gt_ids.size, pred_ids.size))
    np.add.at(inter, (gt_index[both], pred_index[both]), 1)
    gt_size = np.bincount(gt_index[gt_instance >= 0], minlength=gt_ids.size)
    pred_size = np.bincount(pred_index[pred_instance >= 0], minlength=pred_ids.size)
    iou = inter / (gt_size[:, None] + pred_size[None, :] - inter)
    rows, cols = hungarian_match(torch.from_numpy(-iou))
    matched = np.zeros(gt_ids.size)
    matched[rows.numpy()] = iou[rows.numpy(), cols.numpy()]
    return {"miou": float(matched.mean()), "recall50": float((matched > 0.5).mean())}


@torch.no_grad()
def unsupervised_instances(config: Any, weights: dict[str, Tensor], source: str) -> dict[str, Any]:
    """BFS clusters of offset-shifted points, scored against ground truth (Hungarian mIoU, class-agnostic AP)."""
    from pc3d.metrics.instance import instance_ap

    labels = scene_labels(config.data.dataset)
    config = resolve_input_rules(config, weights)
    model = PretrainedOffsets(config)
    report = load_encoder(model, weights, source, extra_prefixes=("offset_head.",))
    model.eval()
    dataset = ProbeScenes(load_scenes(config.data, config.run.seed, "val"), labels, config.model.grid_size,
                          train=False, augment=False, rules=InputRules.of(config.model))
    probe = config.probe
    ious, recalls, runs = [], [], []
    for i in range(len(dataset)):
        batch = collate_scenes([dataset[i]])
        shifted = batch["coord"] + model(batch)
        neighbours = min(probe.cluster_max_neighbors, shifted.shape[0])
        comp = connected_components(shifted, probe.cluster_radius, k=neighbours, min_size=probe.cluster_min_points)
        inverse = batch["full_inverse"][0]
        pred = comp[inverse].numpy()
        gt = batch["full_instance"][0].numpy()
        matched = match_clusters(pred, gt)
        ious.append(matched["miou"])
        recalls.append(matched["recall50"])
        k = int(pred.max()) + 1 if (pred >= 0).any() else 0
        masks = np.stack([pred == j for j in range(k)]) if k else np.zeros((0, pred.size), bool)
        sizes = masks.sum(1).astype(np.float64)
        # class-agnostic: every instance point is class 0, every cluster predicts class 0 scored by its size
        runs.append((np.where(gt >= 0, 0, -1), gt, masks, np.zeros(k, np.int64), sizes / max(sizes.max(), 1)))
    ap = instance_ap(runs, (0,), probe.min_region_size)
    return {"unsup_miou": float(np.nanmean(ious)), "unsup_recall50": float(np.nanmean(recalls)),
            "unsup_ap": ap["ap"], "unsup_ap50": ap["ap50"], "unsup_ap25": ap["ap25"], "scenes": len(dataset),
            "encoder_tensors_loaded": report["loaded"]}


# ----------------------------------------------------------------------------- entry points


def build(config: Any, rank: int) -> Any:
    from pc3d.engine.trainer import TrainingSetup

    labels = scene_labels(config.data.dataset)
    weights = None
    if config.weights:
        from pc3d.engine.checkpoint import load_weights

        weights = load_weights(config.weights)
    config = resolve_input_rules(config, weights)  # `run` has resolved them already; a direct caller may not
    method = SceneProbe(config, labels)
    if weights is not None:
        method.load_pretrained(weights, config.weights)
    grid, rules = config.model.grid_size, InputRules.of(config.model)
    train = ProbeScenes(load_scenes(config.data, config.run.seed, "train"), labels, grid, train=True,
                        augment=config.probe.augment, loop=config.data.loop, rules=rules)
    val = ProbeScenes(load_scenes(config.data, config.run.seed, "val"), labels, grid, train=False, augment=False,
                      rules=rules)
    return TrainingSetup(method=method, train_set=train, val_set=val, collate_fn=collate_scenes)


def run(request: Any) -> dict[str, Any]:
    from dataclasses import replace

    config = request.config
    if request.init_from:  # --from: the encoder to probe
        config = config.model_copy(update={"weights": request.init_from})
        request = replace(request, config=config, init_from=None)
    # the checkpoint's input rules go into the config before the run saves it, so the run records what it fed
    resolved = resolve_input_rules(config)
    if resolved is not config:
        config = resolved
        request = replace(request, config=config)
    if config.probe.task == "unsup-insseg":
        return run_unsupervised(config)
    if config.probe.mode != "full" and not config.weights:
        from pc3d import console as con

        con.info("probing a randomly initialised encoder (no --from / weights given)")
    from pc3d.engine.trainer import fit

    result = fit(request, build)
    result.update(test_scores(config, result))
    m = config.model
    result["input_rules"] = f"{InputRules.of(m).describe()}; pooled depth {m.pooled_depth}"
    if config.probe.task in ("insseg", "panoptic"):
        result["offset_init"] = describe_offset_init(config)
    return result


# synthetic test rooms start here: disjoint from train (0..) and val (pc3d.methods.sonata's 100_000..)
TEST_INDEX_OFFSET = 200_000


def test_scenes(config: Any) -> Any | None:
    """The held-out split of synthetic rooms (as many as val), or None: a folder's val split is its benchmark."""
    if config.data.source != "synthetic":
        return None
    from pc3d.data.readers.scannet import SyntheticScanNet

    data = config.data
    return SyntheticScanNet(data.synthetic_val_count, config.run.seed, data.num_points, index_offset=TEST_INDEX_OFFSET)


@torch.no_grad()
def evaluate(method: SceneProbe, dataset: Dataset, batch_size: int, device: torch.device) -> dict[str, float]:
    """The method's validation metrics on `dataset` (scenes in order, `batch_size` at a time)."""
    from pc3d.engine.data import to_device

    method.eval()
    outputs = []
    for start in range(0, len(dataset), batch_size):
        batch = collate_scenes([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        outputs.append(method.validation_step(to_device(batch, device)))
    return method.validation_epoch_end(outputs)


def test_scores(config: Any, result: dict[str, Any]) -> dict[str, Any]:
    """Score the run's best checkpoint (chosen on val by train.best_metric; else the last) once on the synthetic
    test split; nothing for folder data. Returns `test/...` metrics and how the checkpoint was selected."""
    scenes = test_scenes(config)
    checkpoints = result.get("checkpoints") or {}
    chosen = checkpoints.get("best") or checkpoints.get("last")
    if scenes is None or not chosen or result.get("rank", 0) != 0:
        return {}
    from pathlib import Path

    from pc3d.engine.checkpoint import load_weights
    from pc3d.engine.device import resolve_device
    from pc3d.models.convert import load_state

    if not Path(chosen).is_file():
        return {}
    device = resolve_device(config.run.device)
    method = SceneProbe(config, scene_labels(config.data.dataset))
    report = load_state(method, load_weights(str(chosen)))
    if report.missing:
        raise InputError(f"checkpoint {chosen} lacks {len(report.missing)} weights of the probe")
    method.to(device)
    dataset = ProbeScenes(scenes, method.labels, config.model.grid_size, train=False, augment=False,
                          rules=InputRules.of(config.model))
    metrics = evaluate(method, dataset, config.train.batch_size, device)
    best = result.get("best") or {}
    selection = {"checkpoint": "best" if checkpoints.get("best") else "last", "metric": best.get("metric"),
                 "epoch": best.get("epoch"), "split": "val", "test_scenes": len(scenes)}
    return {"test_metrics": {f"test/{k}": v for k, v in metrics.items()}, "selection": selection}


def describe_offset_init(config: Any) -> str:
    """The offset head's start as `build` chose it (re-read here: training may run in other processes)."""
    probe = config.probe
    if not config.weights:
        return offset_init_note(probe.offset_init, None, probe.up_cast_levels)
    from pc3d.engine.checkpoint import load_weights

    found = (pretrained_offset_head(load_weights(config.weights), probe.encoder_source)
             if probe.offset_init == "pretrained" else None)
    return offset_init_note(probe.offset_init, found[0] if found else None, probe.up_cast_levels, checkpoint=True)


def run_unsupervised(config: Any) -> dict[str, Any]:
    from pc3d.engine.checkpoint import load_weights
    from pc3d.io.atomic import write_text_atomic
    from pc3d.runs import RunDir

    if not config.weights:
        raise InputError("unsup-insseg needs a PointINS checkpoint (--from or weights)")
    torch.manual_seed(config.run.seed)
    metrics = unsupervised_instances(config, load_weights(config.weights), config.weights)
    run_dir = RunDir.create(config.run.out, config.run.name or "unsup-insseg")
    run_dir.save_config(config.model_dump(mode="json"))
    write_text_atomic(run_dir.path / "test_metrics.json", json.dumps({**metrics, "weights": config.weights}, indent=2))
    return {**metrics, "run_dir": str(run_dir.path)}
