"""Preset schemas of Point-MoDE (issue 7): block-to-scene pretraining, scene detection, scene semseg."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from pc3d.config.base import DataConfig, OptimConfig, PresetBase, StrictModel, TrainConfig, check_heads_divide_dim
from pc3d.config.object_ssl import BackboneConfig
from pc3d.config.registry import register_schema

SceneDataset = Literal["scannet_detection", "scannet_pointcept", "sunrgbd"]


class SceneExpertConfig(StrictModel):
    """3DETR-sized scene expert: PointNet++ tokenizer, 3 encoder + 8 decoder layers (spec §1)."""

    dim: int = Field(256, ge=8)
    heads: int = Field(4, ge=1)
    encoder_layers: int = Field(3, ge=1)
    decoder_layers: int = Field(8, ge=1)
    encoder_ffn: int = Field(128, ge=1)
    decoder_ffn: int = Field(256, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    tokens: int = Field(2048, ge=1, description="scene tokens: FPS centres of the tokenizer")
    radius: float = Field(0.2, gt=0, description="ball-query radius of the tokenizer (metres)")
    samples: int = Field(64, ge=1, description="points grouped per token")
    tokenizer_hidden: tuple[int, ...] = Field((64, 128), description="shared-MLP widths before the last (= dim)")
    head_dropout: float = Field(0.3, ge=0, lt=1)
    use_color: bool = Field(False, description="feed normalised RGB to the tokenizer (3DETR's colour input)")
    pos_scale: float = Field(1.0, gt=0, description="std of the Fourier matrix B on [0,1]-normalised xyz (3DETR "
                             "gauss_scale 1); larger = finer positional resolution in the decoder's attention")
    encoder_pos: bool = Field(False, description="add the tokens' Fourier encoding to the encoder input (3DETR's "
                              "vanilla encoder has none: position reaches it only through the decoder's keys)")

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> SceneExpertConfig:
        check_heads_divide_dim(self.dim, self.heads, "scene.")
        return self


class ObjectExpertConfig(BackboneConfig):
    """The shared object expert: a Point-MAE (official sizes by default)."""

    weights: str | None = Field(None, description="initialise from a Point-MAE checkpoint: official pretrain.pth, "
                                                  "a pc3d point-mae/geomask3d run, or hf://owner/repo[/file]; "
                                                  "'none' = from scratch on purpose (Point-MoDE Table 7 'Scratch'). "
                                                  "Point-MoDE pretraining refuses to start while it is unset")
    mask_ratio: float = Field(0.6, gt=0, lt=1)
    loss: Literal["cdl2", "cdl1"] = "cdl2"


class BlockConfig(StrictModel):
    """The object view of a scene: K random kNN blocks of N_o points each."""

    count: int = Field(32, ge=1, description="blocks per scene (K_o)")
    points: int = Field(2048, ge=8, description="points per block (N_o)")
    rotation: Literal["so3", "z", "none"] = Field("z", description="random rotation of each normalised block: "
                                                  "about the up (z) axis by U[0, 2 pi) - Point-MoDE section 4.1 "
                                                  "'simple rotation' - or uniform over SO(3)")
    centre: Literal["mean", "bbox"] = Field("mean", description="box-target centre: mean of the block's points "
                                                               "(paper) or the middle of its extent")


class SceneSourceConfig(StrictModel):
    dataset: SceneDataset
    root: str


class SceneDataConfig(DataConfig):
    """Scenes: the embedded synthetic rooms, or ScanNet (3DETR or Pointcept layout) / SUN RGB-D folders."""

    num_points: int = Field(50_000, ge=16, description="points sampled per scene")
    # le=100_000: the synthetic splits start 100_000 generator indices apart (train 0, val 100_000, test
    # 200_000; scene_detection / scene_semseg), so a larger count would let two splits share scenes
    synthetic_count: int = Field(64, ge=1, le=100_000, description="training scenes generated when "
                                 "source=synthetic")
    synthetic_val_count: int = Field(16, ge=1, le=100_000, description="validation scenes generated when "
                                     "source=synthetic (they select the best checkpoint)")
    synthetic_test_count: int = Field(16, ge=0, le=100_000, description="finetuning, source=synthetic: test "
                                      "scenes of their own, scored once with the checkpoint val selected (0: none). "
                                      "Folders keep their official protocol: ScanNet / S3DIS report val")
    synthetic_points: int = Field(50_000, ge=16, description="points each synthetic scene is sampled with")
    dataset: SceneDataset = Field("scannet_detection", description="reader used when source=folder")
    extra: list[SceneSourceConfig] = Field(default_factory=list,
                                           description="more scene folders pooled into the training set")


class LossConfig(StrictModel):
    """L = chamfer * L_rec + giou * L_GIoU (+ optional 3DETR-style L1 terms on normalised boxes)."""

    chamfer: float = Field(1.0, ge=0, description="lambda_1 of the object reconstruction")
    giou: float = Field(1.0, ge=0, description="lambda_2 of the block-box GIoU")
    center_l1: float = Field(0.0, ge=0)
    size_l1: float = Field(0.0, ge=0)


class AblationConfig(StrictModel):
    """The switches of the paper's Tables 5/6 (all on = full Point-MoDE)."""

    scene_regression: bool = Field(True, description="scene block-box regression (off = object-only)")
    object_reconstruction: bool = Field(True, description="object masked reconstruction (off = scene-only)")
    coord_transform: bool = Field(True, description="scene-to-object coordinate transform of the blocks")
    joint_projection: bool = Field(True, description="block features projected into the scene queries")
    stop_gradient: bool = Field(True, description="the box loss does not reach the object expert")

    @model_validator(mode="after")
    def _some_loss(self) -> AblationConfig:
        if not (self.scene_regression or self.object_reconstruction):
            raise ValueError("ablation: at least one of scene_regression and object_reconstruction must be on")
        return self


@register_schema
class PointMoDEPreset(PresetBase):
    entry: ClassVar[str] = "pc3d.methods.point_mode:run"
    command: Literal["pretrain"] = "pretrain"
    method: Literal["point-mode"] = "point-mode"
    scene: SceneExpertConfig = Field(default_factory=SceneExpertConfig)
    object: ObjectExpertConfig = Field(default_factory=ObjectExpertConfig)
    blocks: BlockConfig = Field(default_factory=BlockConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    ablation: AblationConfig = Field(default_factory=AblationConfig)
    queries: int | None = Field(None, ge=1, description="decoder queries; null = blocks.count. Query j carries "
                                "block j mod K (features and box target): section 3.2 replicates the block "
                                "features when queries and blocks differ")
    scene_rotation: Literal["z", "none"] = Field("z", description="random rotation of each scene about z")
    object_lr_scale: float = Field(1.0, gt=0, description="object-expert lr = optim.lr x this")
    data: SceneDataConfig = Field(default_factory=SceneDataConfig)
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=5e-4, weight_decay=0.1, warmup_epochs=10))
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=200, batch_size=8))

    @property
    def num_queries(self) -> int:
        return self.queries if self.queries is not None else self.blocks.count

    @model_validator(mode="after")
    def _sizes_fit(self) -> PointMoDEPreset:
        if self.queries is not None and self.queries < self.blocks.count:
            raise ValueError(f"queries {self.queries} is below blocks.count {self.blocks.count}: every block needs "
                             "a query (section 3.2 replicates blocks to fill extra queries, it never drops one)")
        if self.blocks.points > self.data.num_points:
            raise ValueError(f"blocks.points {self.blocks.points} exceeds data.num_points {self.data.num_points}")
        if self.object.num_groups > self.blocks.points or self.object.group_size > self.blocks.points:
            raise ValueError("object.num_groups and object.group_size must not exceed blocks.points")
        if self.scene.tokens > self.data.num_points:
            raise ValueError(f"scene.tokens {self.scene.tokens} exceeds data.num_points {self.data.num_points}")
        return self


class AugmentConfig(StrictModel):
    """3DETR ScanNet training augmentation."""

    flip: bool = True
    rotate_degrees: float = Field(5.0, ge=0, description="rotation about z by U(-a, a), boxes refitted")
    cuboid_crop: bool = Field(True, description="RandomCuboid crop (3DETR)")
    crop_size: tuple[float, float] = Field((0.5, 1.0), description="crop side / scene extent, per axis")
    crop_min_points: int = Field(30_000, ge=0, description="a crop keeps at least this many points (3DETR ScanNet: "
                                 "30000, counted before the 40k subsample)")
    crop_min_share: float = Field(0.0, ge=0, le=1, description="... and at least this share of the scene's points "
                                  "(for small scenes, where a point count means little)")
    crop_attempts: int = Field(100, ge=1, description="cuboids tried before the scene is left uncropped")
    crop_aspect: float = Field(0.8, ge=0, le=1, description="a crop is tried only if one of its xy / xz / yz side "
                               "ratios (min/max) is at least this (3DETR check_aspect); 0 = no check")


class DetectConfig(StrictModel):
    """Post-processing of `pc3d detect` and of evaluation."""

    threshold: float = Field(0.3, ge=0, le=1, description="`pc3d detect` keeps boxes scoring at least this")
    eval_threshold: float = Field(0.05, ge=0, le=1, description="score threshold before AP (3DETR 0.05)")
    nms_iou: float = Field(0.25, ge=0, le=1, description="per-class NMS IoU threshold")


class DetMatcherConfig(StrictModel):
    """Hungarian cost and loss weights (3DETR scannet_ep1080)."""

    cost_class: float = 1.0
    cost_giou: float = 2.0
    cost_center: float = 0.0
    loss_class: float = 1.0
    background_weight: float = Field(0.25, ge=0, description="CE weight of the no-object class")
    loss_giou: float = 1.0
    loss_center: float = 5.0
    loss_size: float = 1.0


@register_schema
class DetectionPreset(PresetBase):
    entry: ClassVar[str] = "pc3d.methods.scene_detection:run"
    command: Literal["finetune", "detect"] = "finetune"
    method: Literal["point-mode-det"] = "point-mode-det"
    scene: SceneExpertConfig = Field(default_factory=SceneExpertConfig)
    object: ObjectExpertConfig = Field(default_factory=ObjectExpertConfig)
    blocks: BlockConfig = Field(default_factory=BlockConfig)
    use_object_expert: bool = Field(True, description="object expert encodes random blocks for the decoder "
                                                      "queries (Point-MoDE); off = plain 3DETR")
    queries: int = Field(256, ge=1, description="decoder queries (FPS samples of the scene tokens)")
    query_content: bool = Field(True, description="add the encoder feature of each query's token to its tgt "
                                "(two-stage DETR style); off = 3DETR's position-only queries, which on the "
                                "synthetic quickstart reach AP25 0.08 instead of 0.5 in the same 50 epochs")
    max_boxes: int = Field(64, ge=1)
    matcher: DetMatcherConfig = Field(default_factory=DetMatcherConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    detect: DetectConfig = Field(default_factory=DetectConfig)
    data: SceneDataConfig = Field(default_factory=lambda: SceneDataConfig(num_points=40_000))
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=5e-4, weight_decay=0.1, warmup_epochs=9,
                                                                   clip_grad=0.1))
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=1080, batch_size=8, best_metric="ap25"))
    weights: str | None = Field(None, description="pretrained Point-MoDE weights (also --from); null = scratch")

    @model_validator(mode="after")
    def _sizes_fit(self) -> DetectionPreset:
        if self.queries > self.scene.tokens:
            raise ValueError(f"queries {self.queries} exceeds scene.tokens {self.scene.tokens}")
        if self.use_object_expert and self.blocks.points > self.data.num_points:
            raise ValueError(f"blocks.points {self.blocks.points} exceeds data.num_points {self.data.num_points}")
        return self


@register_schema
class SceneSemsegPreset(PresetBase):
    entry: ClassVar[str] = "pc3d.methods.scene_semseg:run"
    command: Literal["finetune"] = "finetune"
    method: Literal["point-mode-semseg"] = "point-mode-semseg"
    scene: SceneExpertConfig = Field(default_factory=SceneExpertConfig)
    data: SceneDataConfig = Field(default_factory=lambda: SceneDataConfig(num_points=40_000))
    test_area: int = Field(5, ge=1, le=6, description="S3DIS area held out for evaluation")
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=5e-4, weight_decay=0.05, warmup_epochs=5))
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=100, batch_size=8, best_metric="miou"))
    weights: str | None = Field(None, description="pretrained Point-MoDE weights (also --from)")
