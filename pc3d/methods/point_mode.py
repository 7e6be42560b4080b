"""Point-MoDE block-to-scene pretraining of a mixture of domain experts.

Per scene of the batch:
 1. rotate the scene randomly about z (the paper's simple scene augmentation);
 2. draw K random centres among the scene's points, take each one's N_o nearest points -> blocks P_k;
 3. box target of block k: axis-aligned box of P_k in scene coordinates (centre = mean of the points,
    size = max - min);
 4. scene-to-object transform of each block: subtract its centroid, scale into [-1, 1], rotate randomly
    (about the up axis by default: section 4.1's "simple rotation");
 5. object expert (Point-MAE): hide 60 % of the block's patches, reconstruct them -> L_rec (Chamfer);
 6. f_k = max-pool of the object expert's visible tokens; stop-gradient; projection -> scene width;
 7. scene expert: tokenise + encode the whole scene; decoder queries q_k = proj(f_k) + e_k (query
    position e_k), cross-attending to the scene tokens;
 8. every decoder layer regresses each block's box (query j <-> block j mod K, no matching needed; with
    more queries than blocks the block features and targets are replicated, section 3.2);
 9. L = lambda_1 L_rec + lambda_2 mean over layers and blocks of (1 - GIoU) (+ optional L1 terms).

The ablation switches of the paper's Tables 5/6 are `ablation.*` in the preset.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from pc3d.engine.method import Method, StepState
from pc3d.errors import ConfigError, InputError
from pc3d.models.point_mae import decode_with_mask_tokens, random_patch_mask, step_generator
from pc3d.models.point_mode import (
    PointMoDE,
    block_boxes,
    replicate_to,
    sample_blocks,
    to_object_view,
)
from pc3d.ops.boxes import box_iou_3d, paired_giou
from pc3d.ops.chamfer import chamfer_distance
from pc3d.ops.transforms import random_rotation


class ScenePoints(Dataset):
    """`num_points` random points of each scene (with repetition only when a scene has fewer)."""

    def __init__(self, records: Any, num_points: int) -> None:
        self.records = records
        self.num_points = num_points

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        points = self.records[index].points
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ())))  # follows the engine's seeded torch RNG
        n = len(points)
        pick = rng.permutation(n)[: self.num_points] if n >= self.num_points else rng.choice(n, self.num_points)
        return {"points": torch.from_numpy(np.ascontiguousarray(points[pick], dtype=np.float32))}


def rotate_scenes_z(points: Tensor, generator: torch.Generator) -> Tensor:
    """A random rotation about the z axis per scene (B,N,3), about the scene's centroid."""
    mats = torch.stack([random_rotation(generator, "z") for _ in range(points.shape[0])]).to(points)
    centre = points.mean(dim=1, keepdim=True)
    return torch.bmm(points - centre, mats.transpose(1, 2)) + centre


def object_state(weights: dict[str, Tensor]) -> dict[str, Tensor]:
    """Point-MAE weights named like pc3d's PointMAE (`encoder.*`, `decoder.*`, ...) from an official
    pretrain.pth, a pc3d point-mae run (`model.*`), a GeoMask3D run or a Point-MoDE run (`model.object.*`)."""
    from pc3d.models.convert import backbone_state, is_official_layout, official_to_pc3d, strip_wrappers

    weights = strip_wrappers(weights)
    if is_official_layout(weights):
        return official_to_pc3d(weights)[0]
    for prefix in ("model.object.", "object.", "model."):
        if any(k.startswith(prefix + "encoder.tokenizer.") for k in weights):
            return {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
    return backbone_state(weights)


class PointMoDEPretraining(Method):
    def __init__(self, config: Any) -> None:
        super().__init__()
        self.model = PointMoDE(config.scene, config.object, config.blocks.count, config.num_queries)
        self.blocks = config.blocks
        self.losses = config.loss
        self.ablation = config.ablation
        self.scene_rotation = config.scene_rotation
        self.object_lr_scale = config.object_lr_scale
        self.chamfer_variant = "l2" if config.object.loss == "cdl2" else "l1"
        full = self.ablation.scene_regression and self.ablation.object_reconstruction
        # ablations leave modules without gradients: DDP must look for them
        self.find_unused_parameters = not (full and self.ablation.joint_projection)

    # ---- the two experts

    def object_pass(self, blocks: Tensor, reconstruct: bool,
                    generator: torch.Generator | None) -> tuple[Tensor | None, Tensor]:
        """Object expert on (N,M,3) blocks: Chamfer loss of the masked patches (or None) and the
        max-pooled tokens (N,C) of the same pass (visible tokens; all tokens without reconstruction)."""
        mae = self.model.object
        neighborhood, center = mae.grouper(blocks)
        if not reconstruct:
            return None, mae.encoder(neighborhood, center).max(dim=1).values
        mask = random_patch_mask(center.shape[0], center.shape[1], mae.mask_ratio, center.device, generator)
        visible = mae.encoder(neighborhood, center, mask)
        num_mask = int(mask[0].sum())
        decoded = decode_with_mask_tokens(mae.decoder, mae.decoder_pos_embed, visible, center, mask,
                                          mae.mask_token, last=num_mask)
        predicted = mae.patches_from_tokens(decoded)
        target = neighborhood[mask].reshape(predicted.shape)
        m = mae.group_size
        loss = chamfer_distance(predicted.reshape(-1, m, 3), target.reshape(-1, m, 3), variant=self.chamfer_variant)
        return loss, visible.max(dim=1).values

    def scene_pass(self, points: Tensor, block_features: Tensor | None) -> tuple[Tensor, Tensor]:
        """Boxes (L,B,Q,6) in scene coordinates and normalised (L,B,Q,6) for every decoder layer."""
        scene = self.model.scene.encode(points)
        tgt, query_pos = self.model.block_queries(block_features, points.shape[0])
        outputs = self.model.scene.decode(tgt, query_pos, scene)
        return self.model.predict_boxes(outputs, scene)

    # ---- one step

    def block_losses(self, points: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        ab = self.ablation
        b = points.shape[0]
        blocks = sample_blocks(points, self.blocks.count, self.blocks.points, generator)  # (B,K,M,3)
        targets = block_boxes(blocks, self.blocks.centre)  # (B,K,6) scene coordinates
        object_view = to_object_view(blocks, self.blocks.rotation, generator) if ab.coord_transform else blocks
        object_view = object_view.reshape(-1, *object_view.shape[2:])
        terms: dict[str, Tensor] = {}
        features = None
        need_features = ab.scene_regression and ab.joint_projection
        if ab.object_reconstruction:
            rec, features = self.object_pass(object_view, True, generator)
            terms["chamfer"] = self.losses.chamfer * rec
        elif need_features:
            with torch.set_grad_enabled(not ab.stop_gradient and torch.is_grad_enabled()):
                _, features = self.object_pass(object_view, False, generator)
        if not ab.scene_regression:
            return terms
        if need_features:
            features = features.reshape(b, self.blocks.count, -1)
            if ab.stop_gradient:  # the box loss must not reach the object expert
                features = features.detach()
        else:
            features = None
        boxes, boxes_norm = self.scene_pass(points, features)
        layers, _, queries, _ = boxes.shape
        target = replicate_to(targets, queries).unsqueeze(0).expand(layers, -1, -1, -1)
        giou = paired_giou(boxes.reshape(-1, 6).float(), target.reshape(-1, 6).float())
        terms["giou"] = self.losses.giou * (1 - giou).mean()
        if self.losses.center_l1 > 0 or self.losses.size_l1 > 0:
            extent = (points.amax(dim=1) - points.amin(dim=1)).clamp_min(1e-6)[None, :, None]
            low = points.amin(dim=1)[None, :, None]
            target_centre = (target[..., :3] - low) / extent
            target_size = target[..., 3:] / extent
            if self.losses.center_l1 > 0:
                terms["center_l1"] = self.losses.center_l1 * (boxes_norm[..., :3] - target_centre).abs().sum(-1).mean()
            if self.losses.size_l1 > 0:
                terms["size_l1"] = self.losses.size_l1 * (boxes_norm[..., 3:] - target_size).abs().sum(-1).mean()
        with torch.no_grad():
            last = boxes[-1].reshape(-1, 6).float()
            iou = box_iou_3d(last, target[-1].reshape(-1, 6).float()).diagonal()
            terms["metric/block_iou"] = iou.mean()
        return terms

    def training_step(self, batch: dict[str, Tensor], state: StepState) -> dict[str, Tensor]:
        generator = step_generator()
        points = batch["points"]
        if self.scene_rotation == "z":
            points = rotate_scenes_z(points, generator)
        return self.block_losses(points, generator)

    def param_groups(self, weight_decay: float) -> list[dict]:
        """The engine's decay / no-decay groups, split again so the object expert can have its own lr."""
        groups = []
        for group in super().param_groups(weight_decay):
            own = [(n, p) for n, p in zip(group["param_names"], group["params"], strict=True)]
            for is_object in (False, True):
                part = [(n, p) for n, p in own if n.startswith("model.object.") == is_object]
                if part:
                    groups.append({"params": [p for _, p in part], "param_names": [n for n, _ in part],
                                   "weight_decay": group["weight_decay"],
                                   "lr_scale": self.object_lr_scale if is_object else 1.0})
        return groups

    def load_object_expert(self, weights: dict[str, Tensor], source: str) -> dict[str, Any]:
        from pc3d.models.convert import load_state

        report = load_state(self.model.object, object_state(weights))
        if not report.loaded:
            raise InputError(f"{source}: no tensor fits the object expert (Point-MAE)")
        return {"loaded": report.loaded, "skipped": report.unexpected, "missing": report.missing}

    def load_pretrained(self, weights: dict[str, Tensor], source: str = "weights") -> dict[str, Any]:
        """A Point-MoDE run (everything) or any Point-MAE / GeoMask3D checkpoint (the object expert)."""
        if any(k.startswith("model.scene.") for k in weights):
            return super().load_pretrained(weights, source)
        return self.load_object_expert(weights, source)


def build(config: Any, rank: int) -> Any:
    from pc3d.data.readers.detection_scenes import scene_records
    from pc3d.engine.trainer import TrainingSetup

    torch.manual_seed(config.run.seed)
    records = scene_records(config.data, "train", config.run.seed)
    method = PointMoDEPretraining(config)
    if object_weights(config) is not None:
        from pc3d.engine.checkpoint import load_weights

        method.load_object_expert(load_weights(config.object.weights), config.object.weights)
    return TrainingSetup(method=method, train_set=ScenePoints(records, config.data.num_points))


SCRATCH = "none"


def object_weights(config: Any) -> str | None:
    """The object-expert checkpoint to start from, or None for the deliberate from-scratch run."""
    weights = config.object.weights
    return None if weights is None or weights.strip().lower() == SCRATCH else weights


def check_object_init(config: Any, request: Any) -> None:
    """Section 3.2 starts the object expert from a ShapeNet Point-MAE; a run that says nothing about it would
    silently be Table 7's 'Scratch' row, so it must name its weights or ask for scratch explicitly."""
    ab = config.ablation
    uses_object = ab.object_reconstruction or (ab.scene_regression and ab.joint_projection)
    resuming = request.resume or request.resume_auto or request.resume_checkpoint
    if uses_object and config.object.weights is None and not request.init_from and not resuming:
        raise ConfigError("point-mode: the object expert needs initial weights (section 3.2): set "
                          "object.weights=<official Point-MAE pretrain.pth or a pc3d point-mae run>, or "
                          f"object.weights={SCRATCH} to train it from scratch (Table 7's Scratch row)")


def check_request(request: Any) -> None:
    """Run by the CLI before the dataset check: a missing object-expert choice is the first thing to fix."""
    check_object_init(request.config, request)


def run(request: Any) -> dict:
    from pc3d.engine.trainer import fit

    check_object_init(request.config, request)
    return fit(request, build)
