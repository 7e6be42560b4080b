"""Preset schemas of PartSTAD (issue 10): text-prompted part segmentation and few-shot weight training."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from pc3d.config.base import OptimConfig, PresetBase, StrictModel, TrainConfig
from pc3d.config.registry import register_schema

# PartSLIP / PartSTAD render_pc.py: (elevation, azimuth) in degrees
SPEC_VIEWS: tuple[tuple[float, float], ...] = (
    (10, 0), (10, 90), (10, 180), (10, 270), (40, 0), (40, 120), (40, 240), (-20, 60), (-20, 180), (-20, 300))
# PartSLIP bbox2seg: parts that win whenever their score passes the threshold
SMALL_PARTS: tuple[str, ...] = ("handle", "button", "wheel", "knob", "switch", "bulb", "shaft", "touchpad", "camera",
                                "screw")


class RenderConfig(StrictModel):
    """PyTorch3D-style perspective point rendering of the unit-sphere-normalised cloud."""

    image_size: int = Field(800, ge=16)
    distance: float = Field(2.2, gt=0)
    fov: float = Field(60.0, gt=0, lt=180, description="field of view in degrees")
    point_radius: float = Field(0.005, ge=0, description="splat radius in NDC units (1 = half the image)")
    shading: Literal["headlight", "flat"] = Field(
        "headlight", description="clouds without colours: headlight: Lambertian shading by estimated normals, light "
                                 "at the camera; flat: one grey (a silhouette). Coloured clouds render their colours")
    views: list[tuple[float, float]] = Field(default_factory=lambda: [tuple(v) for v in SPEC_VIEWS],
                                             description="(elevation, azimuth) in degrees, y up")


class DetectorConfig(StrictModel):
    kind: Literal["grounding-dino", "owlv2", "oracle"] = Field(
        "grounding-dino", description="oracle: boxes of the true parts (needs per-point part labels in the input)")
    model: str = Field("hf://IDEA-Research/grounding-dino-tiny", description="folder or hf://owner/repo[@rev]")
    tiny_random: bool = Field(False, description="first save a tiny random-weight model of `kind` into the hub "
                                                 "cache and use it (offline runs; its labels are meaningless)")
    weights: str | None = Field(None, description="detector adapted by `pc3d finetune partstad-detector`: its run "
                                "folder (runs/partstad-detector/<time> or .../latest) or the detector/ folder in "
                                "it; replaces `model` and `tiny_random` (PartSLIP's few-shot detector)")
    threshold: float = Field(0.3, ge=0, le=1, description="keep boxes with score >= threshold (GLIP: 0.5)")
    nms_iou: float = Field(0.5, gt=0, le=1)
    max_boxes: int = Field(50, ge=1, description="boxes kept per view")
    batch_views: int = Field(10, ge=1, description="views per forward pass")
    oracle_label_noise: float = Field(0.0, ge=0, le=1, description="oracle: chance a box names a wrong part")
    oracle_jitter: float = Field(0.0, ge=0, description="oracle: box corner noise, fraction of the box size")
    oracle_extra: float = Field(0.0, ge=0, description="oracle: expected spurious boxes per view")
    oracle_score_signal: float = Field(
        0.0, ge=0, description="oracle: how far confidence separates right from wrong boxes: score = 0.5 + 0.5 u, "
                               "u ~ Beta(1+s, 1) right, Beta(1, 1+s) wrong label or spurious (0: uniform for every "
                               "box, no signal; 1: a right box outscores a wrong one 5 times in 6). Only the score "
                               "weighting ablation reads it: the weight network never sees the score")
    oracle_seed: int = 0

    @model_validator(mode="after")
    def _weights_need_a_model(self) -> DetectorConfig:
        if self.weights and self.kind == "oracle":
            raise ValueError("detector.weights names an adapted detector; the oracle has none (set detector.kind)")
        return self


class SamConfig(StrictModel):
    enabled: bool = Field(True, description="vote with SAM masks of the boxes (false: the boxes themselves)")
    # PartSTAD's release runs SAM ViT-H (sam_vit_h_4b8939.pth, src/sam_pred.py); facebook/sam-vit-huge is that
    # checkpoint in transformers' format. hf://facebook/sam-vit-base is the lighter variant (~4x faster on CPU)
    model: str = Field("hf://facebook/sam-vit-huge", description="SAM as released (ViT-H); variant: "
                       "hf://facebook/sam-vit-base")
    tiny_random: bool = Field(False, description="save a tiny random-weight SAM into the hub cache and use it")
    batch_views: int = Field(4, ge=1)


class SuperpointConfig(StrictModel):
    """PartSLIP gen_superpoint.py numbers."""

    normal_radius: float = Field(0.1, gt=0)
    normal_max_nn: int = Field(30, ge=3)
    knn: int = Field(10, ge=1, description="neighbours per point in the adjacency graph")
    color_weight: float = Field(0.3, ge=0, description="node features = [normal, color_weight * rgb]")
    method: Literal["cut-pursuit", "cut-pursuit-py", "region-growing"] = Field(
        "region-growing", description="region-growing: Felzenszwalb-Huttenlocher on PartSLIP's graph (default: "
        "measured better here); cut-pursuit: PartSLIP's L0 cut pursuit, which pc3d's solver runs further than libcp "
        "and so fragments curved regions (partstad-oracle mean mIoU of 8 synthetic 1024-point chairs: 0.67 vs "
        "0.76); cut-pursuit-py: the same problem solved by the compiled `cut-pursuit-py` package (pip install "
        "cut-pursuit-py==1.0.12)")
    reg: float = Field(0.05, gt=0, description="cut pursuit regularisation strength as PartSLIP passes it to libcp "
                                               "(gen_superpoint.py reg=0.05): larger = fewer, bigger superpoints")
    scale: float = Field(3.0, gt=0, description="region-growing granularity: larger = fewer, bigger superpoints")
    min_size: int = Field(10, ge=0, description="components of <= min_size points join their nearest neighbour")


class VotingConfig(StrictModel):
    weighting: Literal["network", "none", "score"] = Field(
        "network", description="network: PartSTAD box weights (trained or tau everywhere); none: PartSLIP voting; "
                               "score: PartSLIP voting with each box's vote weighted by its detector confidence")
    threshold: float = Field(0.5, ge=0, le=1, description="assign a part when its score / probability >= this")
    whole_object: float = Field(0.98, gt=0, le=1, description="PartSLIP voting ignores boxes covering this "
                                                              "share of all projected points")
    small_parts: list[str] = Field(default_factory=lambda: list(SMALL_PARTS))


class NetworkConfig(StrictModel):
    """PartSTAD WeightPredNetworkCNe."""

    num_freqs: int = Field(10, ge=0, description="positional encoding frequencies 2^0 .. 2^(n-1)")
    tau: float = Field(10.0, description="box weight = ReLU(tau + output)")
    null_init: float = Field(10.0, description="initial null-label weight (learnable)")
    init_std: float = Field(1e-4, gt=0)


class PartstadSections(StrictModel):
    render: RenderConfig = Field(default_factory=RenderConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    sam: SamConfig = Field(default_factory=SamConfig)
    superpoints: SuperpointConfig = Field(default_factory=SuperpointConfig)
    voting: VotingConfig = Field(default_factory=VotingConfig)
    network: NetworkConfig = Field(default_factory=NetworkConfig)


@register_schema
class PartstadSegmentPreset(PresetBase, PartstadSections):
    entry: ClassVar[str] = "pc3d.methods.partstad:segment"
    command: Literal["segment"] = "segment"
    method: Literal["partstad"] = "partstad"
    weights: str | None = Field(None, description="trained weight network (pc3d checkpoint, path or hf://); "
                                                  "--checkpoint overrides; none: untrained / voting")
    instances: bool = Field(False, description="also merge superpoints into part instances (PartSLIP)")
    num_points: int = Field(8192, ge=16, description="points sampled from a mesh input")
    sheet_tile: int = Field(256, ge=32, description="pixels per view in the contact sheet")


class FewShotDataConfig(StrictModel):
    source: Literal["synthetic", "folder"] = Field("synthetic", description="default: folder when root is set")
    root: str | None = Field(None, description="PartNet-Ensembled folder (holds PartNetE_meta.json, data/)")
    category: str = "Chair"
    synthetic_count: int = Field(24, ge=4, description="synthetic chairs (8 few-shot, the rest test/val)")
    synthetic_points: int = Field(2048, ge=64)
    max_test: int | None = Field(None, ge=1, description="evaluate on at most this many test shapes")
    cache_dir: str | None = Field(None, description="2D-output cache (default: <run.out>/partstad-cache)")

    @model_validator(mode="before")
    @classmethod
    def _folder_when_root(cls, data: Any) -> Any:
        """`--set data.root=ROOT` alone means the PartNetE folder at ROOT."""
        if isinstance(data, dict) and data.get("root") and "source" not in data:
            data = {**data, "source": "folder"}
        return data

    @model_validator(mode="after")
    def _root_when_folder(self) -> FewShotDataConfig:
        if self.source == "folder" and not self.root:
            raise ValueError("data.root is required when data.source is 'folder'")
        return self


@register_schema
class PartstadFewShotPreset(PresetBase, PartstadSections):
    entry: ClassVar[str] = "pc3d.methods.partstad:finetune"
    command: Literal["finetune"] = "finetune"
    method: Literal["partstad-fewshot"] = "partstad-fewshot"
    data: FewShotDataConfig = Field(default_factory=FewShotDataConfig)
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(
        lr=1e-4, weight_decay=0.01, warmup_epochs=0, warmup_start_lr=1e-4, min_lr=1e-4))
    null_lr: float = Field(0.05, gt=0, description="AdamW lr of the null-label weight (network: optim.lr)")
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(
        epochs=400, batch_size=2, best_metric="miou", best_mode="max", log_every=4, keep_last=1))
