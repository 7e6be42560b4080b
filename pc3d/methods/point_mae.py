"""Point-MAE (Pang et al., ECCV 2022): masked autoencoding of point patches.

Per step: group the cloud into G patches (FPS + kNN), hide int(0.6 G) of them at random, encode
the visible patch tokens, decode them together with mask tokens, predict the hidden patches'
local coordinates and score them with Chamfer-L2 against the true patches.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pc3d.engine.method import Method, StepState
from pc3d.models.convert import is_official_layout, load_state, official_to_pc3d, strip_wrappers
from pc3d.models.point_mae import PointMAE, random_patch_mask, step_generator
from pc3d.ops.chamfer import chamfer_distance
from pc3d.ops.transforms import scale_and_translate


def build_point_mae(model_cfg: Any, mask_ratio: float = 0.6) -> PointMAE:
    """A PointMAE network from a preset's `model` section."""
    return PointMAE(dim=model_cfg.dim, depth=model_cfg.depth, heads=model_cfg.heads,
                    decoder_depth=model_cfg.decoder_depth, decoder_heads=model_cfg.heads,
                    drop_path=model_cfg.drop_path, num_groups=model_cfg.num_groups,
                    group_size=model_cfg.group_size, mask_ratio=mask_ratio)


def pooled_features(encoder_tokens: Tensor) -> Tensor:
    """Global descriptor of a cloud for the linear-SVM probe: [max, mean] over patch tokens."""
    return torch.cat([encoder_tokens.max(dim=1).values, encoder_tokens.mean(dim=1)], dim=-1)


class PointMAEPretraining(Method):
    def __init__(self, config: Any) -> None:
        super().__init__()
        self.model = build_point_mae(config.model, config.mask_ratio)
        self.chamfer_variant = "l2" if config.loss == "cdl2" else "l1"
        self.augment = config.data.augment

    def reconstruction_loss(self, points: Tensor, generator: torch.Generator | None = None) -> Tensor:
        neighborhood, center = self.model.grouper(points)
        mask = random_patch_mask(center.shape[0], center.shape[1], self.model.mask_ratio, center.device,
                                 generator)
        predicted = self.model(neighborhood, center, mask)  # (B, Nm, M, 3)
        target = neighborhood[mask].reshape(predicted.shape)
        m = self.model.group_size
        return chamfer_distance(predicted.reshape(-1, m, 3), target.reshape(-1, m, 3),
                                variant=self.chamfer_variant)

    def training_step(self, batch: dict[str, Tensor], state: StepState) -> dict[str, Tensor]:
        points = batch["points"]
        if self.augment:
            points = scale_and_translate(points, step_generator())
        return {"chamfer": self.reconstruction_loss(points)}

    @torch.no_grad()
    def validation_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        # a fixed mask per batch so validation losses are comparable across epochs
        generator = torch.Generator(device=batch["points"].device).manual_seed(0)
        out = {"chamfer": self.reconstruction_loss(batch["points"], generator)}
        if "probe_split" in batch:
            out.update(probe_outputs(self.model, batch))
        return out

    def validation_epoch_end(self, outputs: list[dict]) -> dict[str, float]:
        return summarize_validation(outputs)

    def load_pretrained(self, weights: dict[str, Tensor], source: str = "weights") -> dict[str, Any]:
        """Official `pretrain.pth` keys or a pc3d Point-MAE run (`model.*`)."""
        weights = strip_wrappers(weights)
        unmapped: list[str] = []
        if is_official_layout(weights):
            weights, unmapped = official_to_pc3d(weights)
        elif any(k.startswith("model.") for k in weights):
            unmapped = [k for k in weights if not k.startswith("model.")]
            weights = {k[len("model."):]: v for k, v in weights.items() if k.startswith("model.")}
        report = load_state(self.model, weights)
        return {"loaded": report.loaded, "skipped": [*report.unexpected, *unmapped], "missing": report.missing}


@torch.no_grad()
def probe_outputs(model: PointMAE, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """Frozen features of the probe set (all patches visible), for the SVM at epoch end."""
    neighborhood, center = model.grouper(batch["points"])
    tokens = model.encoder(neighborhood, center)
    return {"probe/features": pooled_features(tokens), "probe/label": batch["label"],
            "probe/split": batch["probe_split"]}


def summarize_validation(outputs: list[dict]) -> dict[str, float]:
    """Mean of the scalar values; linear-SVM accuracy when probe features were collected."""
    from pc3d.models.linear_svm import svm_probe_accuracy

    result: dict[str, float] = {}
    scalars: dict[str, list[float]] = {}
    for output in outputs:
        for key, value in output.items():
            if not key.startswith("probe/"):
                scalars.setdefault(key, []).append(float(value))
    result.update({key: sum(values) / len(values) for key, values in scalars.items()})
    if outputs and "probe/features" in outputs[0]:
        feats = torch.cat([o["probe/features"] for o in outputs]).float().cpu()
        labels = torch.cat([o["probe/label"] for o in outputs]).cpu()
        split = torch.cat([o["probe/split"] for o in outputs]).cpu()
        if (split == 0).any() and (split == 1).any():
            result["svm_acc"] = svm_probe_accuracy(feats[split == 0], labels[split == 0],
                                                       feats[split == 1], labels[split == 1])
    return result


def build(config: Any, rank: int) -> Any:
    from pc3d.data.readers.objects import pretrain_sets
    from pc3d.engine.trainer import TrainingSetup

    torch.manual_seed(config.run.seed)
    train_set, val_set = pretrain_sets(config)
    return TrainingSetup(method=PointMAEPretraining(config), train_set=train_set, val_set=val_set)


def run(request: Any) -> dict:
    from pc3d.engine.trainer import fit

    return fit(request, build)
