"""Preset schemas of Affinity3D (issue 9): zero-shot LiDAR pseudo-labels and SPVCNN zero-shot segmentation."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from pc3d.config.base import DataConfig, OptimConfig, PresetBase, StrictModel, TrainConfig
from pc3d.config.registry import register_schema

SCALE_DEFAULT = 10.0  # s_a (see AffinityConfig)
QUEUE_DEFAULT = 1024  # instance-queue size (see AffinityConfig)
KITTI_TRAIN = ["00", "01", "02", "03", "04", "05", "06", "07", "09", "10"]


class KittiDataConfig(DataConfig):
    """SemanticKITTI folder (`--data ROOT`), or synthetic LiDAR frames generated into the run folder."""

    setting: Literal["gzs", "annotation-free"] = Field(
        "gzs", description="gzs: seen-class labels available (unseen -> ignore); annotation-free: no labels")
    sequences: list[str] = Field(default_factory=lambda: list(KITTI_TRAIN), description="sequences to use")
    val_sequences: list[str] = Field(default_factory=lambda: ["08"], description="evaluation sequences")
    max_frames: int | None = Field(None, ge=1, description="use only the first N frames (smoke runs)")
    synthetic_count: int = Field(20, ge=1, description="synthetic frames (10 per sequence) when source=synthetic")
    synthetic_rays: int = Field(64 * 1800, ge=64, description="LiDAR rays per synthetic scan")
    synthetic_image: tuple[int, int] = Field((375, 1242), description="synthetic camera image (height, width)")


class SuperpointConfig(StrictModel):
    method: Literal["auto", "dbscan", "bpss"] = Field(
        "auto", description="auto: DBSCAN on non-seen points (gzs), BPSS supervoxels (annotation-free)")
    eps: float = Field(0.5, gt=0, description="DBSCAN radius (m)")
    min_samples: int = Field(10, ge=1, description="DBSCAN core-point neighbours (self included)")
    resolution: float = Field(1.0, gt=0, description="BPSS resolution R (m): target count and distance scale")
    k: int = Field(15, ge=2, description="BPSS neighbours for normals and adjacency")
    # section 3.2 drops superpoints with fewer than 2 points (a single point gives no shape and a degenerate crop)
    min_points: int = Field(2, ge=1, description="drop superpoints with fewer points than this (paper 3.2: 2)")


class FeatureConfig(StrictModel):
    source: Literal["clip", "oracle"] = Field(
        "clip", description="clip: CLIP crop features; oracle: CLIP-like features of the class each crop shows "
                            "(pc3d.methods.affinity3d_oracle; studies without CLIP)")
    model: str = Field("hf://openai/clip-vit-base-patch32", description="CLIP folder or hf://owner/repo[@rev]")
    build_tiny_random: bool = Field(False, description="save a tiny random-weight CLIP as `model` into the HF "
                                                      "cache first (offline tests; labels are meaningless)")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    logit_scale: float | None = Field(None, gt=0, description="s_t of softmax(s_t F EMB^T); null = CLIP's own")
    candidates: Literal["auto", "unseen", "all"] = Field(
        "auto", description="classes a superpoint may take: auto = unseen (gzs) or all (annotation-free)")
    min_crop: int = Field(30, ge=1, description="crops are enlarged to at least this many pixels per side")
    batch_size: int = Field(64, ge=1, description="crops per CLIP forward pass")
    oracle_radius: int = Field(2, ge=0, description="oracle: splat radius (px) of the rendered label image")
    noise: float = Field(0.0, ge=0, le=10, description="oracle: norm of a crop's appearance noise relative to its "
                                                       "class prototype (seeded by run.seed)")
    confusion: float = Field(0.0, ge=0, le=1, description="oracle: chance that a crop looks partly like a similar "
                                                          "class (its prototype mixed 30-70 % toward it)")
    oracle_dim: int = Field(512, ge=20, description="oracle: feature width (CLIP ViT-B/32: 512)")


class AffinityConfig(StrictModel):
    enabled: bool = True
    # s_a is not given by the paper. W includes each node's self-similarity (1), so a neighbour at cosine c weighs
    # exp(beta s_a (c - 1)) against the node itself: with s_a = 100 only near-duplicates (c > ~0.97) count and the
    # walk is the identity. 10 is what scripts/study_affinity3d.py picks on its validation sequence with the CLIP-like
    # oracle (best validation accuracy for 2 of 3 seeds and on average; 5 for the third); not checked on real CLIP
    scale: float = Field(SCALE_DEFAULT, gt=0, description="s_a of W = row-softmax(s_a F F^T)")
    beta: float = Field(2.0, gt=0, description="element-wise power of W")
    # section 3.4's instance queue: superpoints of consecutive frames (later ones included) are refined together;
    # the size is counted in instances, not frames (the reference spec gives no number: pc3d's choice)
    queue_size: int = Field(QUEUE_DEFAULT, ge=0, description="instances the queue holds; 0 = each frame alone")


class VisibilityConfig(StrictModel):
    enabled: bool = True
    threshold: float = Field(0.5, gt=0, description="visible iff depth - min depth of its superpixel < this (m)")
    n_segments: int = Field(1000, ge=1, description="SLIC superpixels per image")
    compactness: float = Field(10.0, gt=0)


@register_schema
class Affinity3DPseudoLabelPreset(PresetBase):
    entry: ClassVar[str] = "pc3d.methods.affinity3d:run"
    command: Literal["pseudolabel"] = "pseudolabel"
    method: Literal["affinity3d"] = "affinity3d"
    data: KittiDataConfig = Field(default_factory=KittiDataConfig)
    labeler: Literal["superpoint", "dense"] = Field(
        "superpoint", description="superpoint: Affinity3D; dense: MaskCLIP-style per-pixel labels (baseline)")
    superpoints: SuperpointConfig = Field(default_factory=SuperpointConfig)
    features: FeatureConfig = Field(default_factory=FeatureConfig)
    affinity: AffinityConfig = Field(default_factory=AffinityConfig)
    visibility: VisibilityConfig = Field(default_factory=VisibilityConfig)
    confidence: float = Field(0.0, ge=0, lt=1, description="annotation-free: keep a pseudo label only if the max "
                                                           "refined score (over all classes) > this")
    # GZS: the candidates are only the 4 unseen classes, so the softmax cannot say "none of them" and max >= 0.25;
    # 0 (<= 0.25 is the same) assigns every non-seen cluster an unseen class, which is what the paper describes
    # (section 3: each superpoint takes the argmax of its refined scores; no threshold is given). The summary's
    # `unscored_points` / `rejected_points` show what that costs (clusters of GT 'unlabeled' points get a class).
    gzs_threshold: float = Field(0.0, ge=0, lt=1, description="GZS: a non-seen cluster gets an unseen label only if "
                                                              "its max refined score > this; 0 = always (paper)")
    resume: bool = Field(True, description="skip frames whose label and visibility files exist")


class SPVCNNConfig(StrictModel):
    """SPVCNN widths (2DPASS: cs = [32, 32, 64, 128, 256, 256, 128, 96, 96])."""

    channels: list[int] = Field(default_factory=lambda: [32, 32, 64, 128, 256, 256, 128, 96, 96])
    voxel_size: float = Field(0.05, gt=0)
    dropout: float = Field(0.3, ge=0, lt=1)
    text_classifier: bool = Field(True, description="logits = scale * normalised features . EMB (CLIP text); "
                                                    "also the per-scale MSFSKD heads (Eqs. 13-14)")
    head_features: Literal["concat", "last"] = Field(
        "concat", description="classifier input: concat = the 4 encoder-scale features F_3D^s (MSFSKD's) and the "
                              "last layer (Eq. 17); last = the last layer only")

    @model_validator(mode="after")
    def _nine(self) -> SPVCNNConfig:
        if len(self.channels) != 9:
            raise ValueError(f"model.channels needs 9 widths, got {len(self.channels)}")
        return self


class Image2DConfig(StrictModel):
    """The 2D branch (training only): ResNet-34-style FCN and the MSFSKD fusion."""

    enabled: bool = True
    widths: list[int] = Field(default_factory=lambda: [64, 128, 256, 512])
    blocks: list[int] = Field(default_factory=lambda: [3, 4, 6, 3])
    hidden: int = Field(64, ge=4, description="per-scale fusion width")
    crop: tuple[int, int] | None = Field((320, 480), description="random bottom crop (H, W) in training; null = "
                                                                "the whole image")
    lambda_seg2d: float = Field(1.0, ge=0)
    lambda_xm: float = Field(0.05, ge=0)


class SegDataConfig(KittiDataConfig):
    pseudo_labels: str | None = Field(None, description="folder written by `pc3d pseudolabel` (sequences/XX/...); "
                                                        "null on synthetic data: run `pseudo_preset` first")
    pseudo_preset: str = Field("affinity3d-oracle", description="pseudolabel preset used when pseudo_labels is null")
    augment: bool = True
    # section 4.2's augmentation (it replaces 2DPASS's rotation / flips / N(0, 0.1) shift / 20 % dropout)
    translate: float = Field(0.5, ge=0, description="random shift U[-t, t] per axis (m) (paper 4.2: 0.5)")
    scale: tuple[float, float] = Field((0.95, 1.05), description="random x, y scaling range (paper 4.2 gives no "
                                                                 "range: 2DPASS's)")
    keep_ratio: float = Field(0.7, gt=0, le=1, description="random downsampling: share of the points kept per "
                                                           "training scan (paper 4.2: 70 %)")
    image_flip: float = Field(0.5, ge=0, le=1, description="chance of a horizontal image flip")
    color_jitter: float = Field(0.4, ge=0, lt=1, description="brightness / contrast / saturation jitter strength "
                                                             "(2DPASS's ColorJitter(0.4, 0.4, 0.4))")
    # section 4.1 (following TCKZ) scores the front view only: the points inside the camera image
    eval_front_view: bool = Field(True, description="evaluate on the camera's field of view (paper 4.1); false = "
                                                    "the full 360-degree scan")


@register_schema
class Affinity3DSegPreset(PresetBase):
    entry: ClassVar[str] = "pc3d.methods.zeroshot_seg:run"
    command: Literal["finetune"] = "finetune"
    method: Literal["affinity3d-seg"] = "affinity3d-seg"
    data: SegDataConfig = Field(default_factory=SegDataConfig)
    model: SPVCNNConfig = Field(default_factory=SPVCNNConfig)
    image: Image2DConfig = Field(default_factory=Image2DConfig)
    clip_model: str = Field("hf://openai/clip-vit-base-patch32", description="text encoder of the classifier")
    build_tiny_random: bool = False
    lovasz_weight: float = Field(2.0, ge=0, description="alpha of Eq. 19 (alpha Lovasz + weighted CE) on the "
                                                         "final prediction (paper 4.2: 2.0)")
    tta: int = Field(0, ge=0, description="test-time augmentation passes (flips / rotations); 0 = none")
    eval_convention: Literal["semantickitti", "scannet"] = "semantickitti"
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=2e-3, weight_decay=1e-4, warmup_epochs=1,
                                                                   min_lr=1e-5))
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=64, batch_size=8, best_metric="hiou"))
