"""Scene semantic segmentation from the Point-MoDE scene expert (S3DIS Area-5 protocol).

The scene expert's tokenizer + encoder (+ encoder-to-decoder projection) turn the room into tokens;
PointNet++ feature propagation (3-NN inverse-distance weights) carries the token features back to
every point, which a 1x1-conv MLP classifies from [propagated feature, colour, normalised xyz].
Loss: cross-entropy (ignore -1). Validation: mIoU / mAcc / OA through `pc3d.metrics.semseg_metrics`.
The spec gives no recipe for this head (shared/reference/point-mode.md §3): this is our inference.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from pc3d.engine.method import Method, StepState
from pc3d.models.detr3d import apply_conv_mlp, conv_mlp
from pc3d.models.point_mae import three_nn_interpolate
from pc3d.models.point_mode import SceneExpert

# synthetic rooms carry NYU40 ids; their S3DIS stand-ins (clutter for classes S3DIS does not have)
SYNTHETIC_TO_S3DIS = {1: 2, 2: 1, 3: 12, 4: 12, 5: 8, 6: 9, 7: 7, 8: 6, 9: 5, 10: 10, 11: 11}


class SyntheticRooms:
    """Embedded synthetic rooms as S3DIS-like samples (coord, color, segment in the 13 S3DIS classes)."""

    def __init__(self, count: int, seed: int, points: int, offset: int = 0) -> None:
        from pc3d.data.synthetic.scenes import generate_scene, scene_rng

        self.samples = []
        for i in range(count):
            scene = generate_scene(scene_rng(seed, offset + i), points)
            segment = np.array([SYNTHETIC_TO_S3DIS.get(int(c), 12) for c in scene.semantic], np.int64)
            self.samples.append({"coord": scene.points, "color": scene.colors.astype(np.float32),
                                 "segment": segment})

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.samples[index]


class RoomPoints(Dataset):
    """`num_points` points per room (random in training, fixed per room in evaluation)."""

    def __init__(self, rooms: Any, num_points: int, train: bool) -> None:
        self.rooms, self.num_points, self.train = rooms, num_points, train

    def __len__(self) -> int:
        return len(self.rooms)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        room = self.rooms[index]
        n = len(room["coord"])
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ())) if self.train else index)
        pick = rng.permutation(n)[: self.num_points] if n >= self.num_points else rng.choice(n, self.num_points)
        coord = room["coord"][pick].astype(np.float32)
        if self.train:  # rotation about z and flips: the usual indoor semseg augmentation
            angle = rng.uniform(0, 2 * np.pi)
            c, s = np.cos(angle), np.sin(angle)
            coord = coord @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], np.float32).T
        return {"points": torch.from_numpy(np.ascontiguousarray(coord)),
                "colors": torch.from_numpy(room["color"][pick].astype(np.float32) / 127.5 - 1.0),
                "segment": torch.from_numpy(room["segment"][pick].astype(np.int64))}


class SceneSegmenter(nn.Module):
    def __init__(self, scene_cfg: Any, num_classes: int) -> None:
        super().__init__()
        self.scene = SceneExpert(scene_cfg)
        dim = scene_cfg.dim
        self.head = conv_mlp([dim + 6, dim, dim, num_classes], dropout=0.3)

    def forward(self, points: Tensor, colors: Tensor) -> Tensor:
        """points (B,N,3), colors (B,N,3) -> logits (B,N,C)."""
        scene = self.scene.encode(points, colors)
        feats = three_nn_interpolate(points, scene.xyz, scene.features)
        extent = (scene.high - scene.low).clamp_min(1e-6)[:, None]
        unit = (points - scene.low[:, None]) / extent
        return apply_conv_mlp(self.head, torch.cat([feats, colors, unit], dim=-1))

    def encode_scene(self, points: Tensor, colors: Tensor) -> Any:
        """The scene tokens of `points` (B,N,3) / `colors` (B,N,3), for `classify` (what `forward` computes first)."""
        return self.scene.encode(points, colors)

    def classify(self, scene: Any, points: Tensor, colors: Tensor) -> Tensor:
        """Logits (B,M,C) of any points (B,M,3) of an encoded scene: `forward`'s head, with the queried points
        free to differ from the encoded ones (`pc3d predict` labels every input point from a sampled encoding).
        classify(encode_scene(p, c), p, c) equals forward(p, c)."""
        feats = three_nn_interpolate(points, scene.xyz, scene.features)
        extent = (scene.high - scene.low).clamp_min(1e-6)[:, None]
        unit = (points - scene.low[:, None]) / extent
        return apply_conv_mlp(self.head, torch.cat([feats, colors, unit], dim=-1))


class SceneSemseg(Method):
    def __init__(self, config: Any, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.model = SceneSegmenter(config.scene, num_classes)

    def training_step(self, batch: dict[str, Tensor], state: StepState) -> dict[str, Tensor]:
        logits = self.model(batch["points"], batch["colors"])
        return {"ce": F.cross_entropy(logits.reshape(-1, self.num_classes), batch["segment"].reshape(-1),
                                      ignore_index=-1)}

    @torch.no_grad()
    def validation_step(self, batch: dict[str, Tensor]) -> dict[str, Any]:
        from pc3d.metrics import semantic_confusion

        pred = self.model(batch["points"], batch["colors"]).argmax(dim=-1)
        return {"confusion": semantic_confusion(pred.cpu().numpy().reshape(-1),
                                                batch["segment"].cpu().numpy().reshape(-1),
                                                self.num_classes, ignore_index=-1)}

    def validation_epoch_end(self, outputs: list[dict]) -> dict[str, float]:
        from pc3d.metrics import semseg_metrics

        confusion = sum(o["confusion"] for o in outputs)
        metrics = semseg_metrics(confusion)
        return {key: metrics[key] for key in ("miou", "macc", "oa")}

    def load_pretrained(self, weights: dict[str, Tensor], source: str = "weights") -> dict[str, Any]:
        """The scene expert's tokenizer, encoder and projection from a Point-MoDE run (pretraining or detection)."""
        scene = {k: v for k, v in weights.items() if k.startswith("model.scene.")}
        return self.load_matching(scene, source, "expected a Point-MoDE checkpoint")


# Synthetic generator indices per split (room i of a split is scene_rng(seed, offset + i)): train 0.., val
# 100_000.., test 200_000.. -- 100_000 apart, so no count a preset asks for makes two splits share a room
SYNTHETIC_VAL_OFFSET = 100_000
SYNTHETIC_TEST_OFFSET = 200_000


def synthetic_test_rooms(config: Any) -> RoomPoints | None:
    """The held-out synthetic test rooms (never seen by training or selection), or None for S3DIS, whose
    Area-5 protocol reports the held-out area that also validates (as the papers do; S3DIS has no other split)."""
    data = config.data
    if data.source != "synthetic" or data.synthetic_test_count == 0:
        return None
    rooms = SyntheticRooms(data.synthetic_test_count, config.run.seed, data.synthetic_points, SYNTHETIC_TEST_OFFSET)
    return RoomPoints(rooms, data.num_points, False)


def build(config: Any, rank: int) -> Any:
    """Train and val rooms only: the test rooms are built after training (`run`), so selection cannot read them."""
    from pc3d.data.readers.s3dis import S3DIS_CLASSES
    from pc3d.engine.trainer import TrainingSetup

    torch.manual_seed(config.run.seed)
    data = config.data
    if data.source == "synthetic":
        train = SyntheticRooms(data.synthetic_count, config.run.seed, data.synthetic_points)
        val = SyntheticRooms(data.synthetic_val_count, config.run.seed, data.synthetic_points, SYNTHETIC_VAL_OFFSET)
    else:
        from pc3d.data.readers.s3dis import S3DISPointcept

        train = S3DISPointcept(data.root, "train", config.test_area)
        val = S3DISPointcept(data.root, "val", config.test_area)
    method = SceneSemseg(config, len(S3DIS_CLASSES))
    if config.weights:
        from pc3d.engine.checkpoint import load_weights

        method.load_pretrained(load_weights(config.weights), config.weights)
    return TrainingSetup(method=method, train_set=RoomPoints(train, data.num_points, True),
                         val_set=RoomPoints(val, data.num_points, False))


def run(request: Any) -> dict:
    """Train (checkpoint chosen by val mIoU), then score the chosen checkpoint once on val and once on the
    synthetic test rooms (`val`, `test`, `selection` in the result)."""
    from pc3d.engine.selection import fit_and_score

    return fit_and_score(request, build, synthetic_test_rooms)
