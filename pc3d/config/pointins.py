"""Preset schemas of scene-level SSL (issue 8): Sonata-style pretraining, PointINS, and scene probing."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, model_validator

from pc3d.config.base import DataConfig, OptimConfig, PresetBase, StrictModel, TrainConfig
from pc3d.config.registry import register_schema

Curve = Literal["z", "z-trans", "hilbert", "hilbert-trans"]
FeatKey = Literal["coord", "color", "normal"]
# the input channels a model section implies when it names none: Sonata's feat_keys (9) and PTv3 v3m1's (6)
FEAT_KEYS_BY_CHANNELS: dict[int, tuple[str, ...]] = {9: ("coord", "color", "normal"), 6: ("color", "normal")}


class PTv3Config(StrictModel):
    """PTv3 encoder sizes; the defaults are the paper's ~38M default model (presets set the others)."""

    in_channels: int = Field(9, ge=3, description="coord(3) + colour(3) + normal(3)")
    depths: tuple[int, ...] = (2, 2, 2, 6, 2)
    channels: tuple[int, ...] = (32, 64, 128, 256, 512)
    heads: tuple[int, ...] = (2, 4, 8, 16, 32)
    patch_size: int = Field(1024, ge=2, description="points per attention patch")
    mlp_ratio: float = Field(4.0, gt=0)
    drop_path: float = Field(0.3, ge=0, lt=1)
    orders: tuple[Curve, ...] = ("z", "z-trans", "hilbert", "hilbert-trans")
    shuffle_orders: bool = True
    grid_size: float = Field(0.02, gt=0, description="grid-sampling cell edge in metres")
    stem: Literal["linear", "sparse-conv"] = Field(
        "linear", description="embedding: Linear + norm + GELU (Sonata) or a k5 sparse conv + norm + GELU (PTv3 v3m1)")
    down_norm: Literal["layer", "batch"] = Field(
        "layer", description="norm of the embedding and the pooling: LayerNorm (Sonata) or BatchNorm (PTv3 v3m1)")
    layer_scale: float | None = Field(None, gt=0, description="initial per-channel residual scale; null = none "
                                      "(Sonata's released encoder has none)")
    # input rules: they belong to the weights (a checkpoint only works with the inputs it was trained on); null =
    # the rule of the checkpoint family, resolved when the run starts and written into its saved config
    pooled_depth: Literal["own", "parent"] | None = Field(
        None, description="serialisation depth of a pooled level: from its own cells (Sonata / PTv3 v3m2) or the "
        "parent's - 1 (PTv3 v3m1); null = the family of model.stem (linear: own, sparse-conv: parent)")
    color_norm: Literal["unit", "signed"] | None = Field(
        None, description="colour feature: 'unit' = colour / 255 (Sonata, Pointcept >= 1.6), 'signed' = "
        "colour / 127.5 - 1 (older Pointcept PTv3, pc3d's pretraining before issue 19); null = the checkpoint's family "
        "(pretraining: unit)")
    center_precision: Literal["float32", "float64"] | None = Field(
        None, description="arithmetic of CenterShift: float32 as the official transform (whose rounding moves some "
        "points of mm-grid clouds into other cells), float64 = pc3d's pretraining before issue 19; null = the "
        "checkpoint's family (pretraining: float32)")
    feat_keys: tuple[FeatKey, ...] | None = Field(
        None, description="input channels in order, 3 each; null = coord, color, normal for in_channels 9 "
        "(Sonata) and color, normal for 6 (PTv3 v3m1)")

    @model_validator(mode="after")
    def _stages(self) -> PTv3Config:
        if not len(self.depths) == len(self.channels) == len(self.heads) or not self.depths:
            raise ValueError("model.depths, model.channels and model.heads need one entry per stage")
        bad = [(c, h) for c, h in zip(self.channels, self.heads, strict=True) if c % h]
        if bad:
            raise ValueError(f"model.channels {bad[0][0]} is not divisible by its heads {bad[0][1]}")
        if self.feat_keys is None and self.in_channels not in FEAT_KEYS_BY_CHANNELS:
            raise ValueError(f"model.in_channels {self.in_channels}: set model.feat_keys (coord / color / normal, "
                             "3 channels each) to say which inputs they are")
        if self.feat_keys is not None:
            if len(set(self.feat_keys)) != len(self.feat_keys) or 3 * len(self.feat_keys) != self.in_channels:
                raise ValueError(f"model.feat_keys {list(self.feat_keys)} must name distinct inputs of 3 channels "
                                 f"each, adding up to model.in_channels {self.in_channels}")
        return self

    def input_feat_keys(self) -> tuple[str, ...]:
        """The input channels the encoder reads, in order (explicit feat_keys, else implied by in_channels)."""
        return tuple(self.feat_keys) if self.feat_keys is not None else FEAT_KEYS_BY_CHANNELS[self.in_channels]


class SceneDataConfig(DataConfig):
    """Scene datasets: embedded synthetic rooms (ScanNet-like), a ScanNet / ScanNet200 / S3DIS folder (Pointcept
    npy), SemanticKITTI, or nuScenes-lidarseg (its own files, pc3d.data.readers.nuscenes)."""

    dataset: Literal["scannet", "scannet200", "s3dis", "semantickitti", "nuscenes"] = Field(
        "scannet", description="scannet200: the ScanNet folder's segment200 labels (200 classes, Pointcept layout)")
    num_points: int = Field(8000, ge=64, description="points per synthetic scene")
    synthetic_count: int = Field(16, ge=2, description="synthetic training scenes")
    synthetic_val_count: int = Field(4, ge=1, description="synthetic validation scenes")
    global_views: int = Field(2, ge=1)
    local_views: int = Field(4, ge=0)
    global_scale: tuple[float, float] = (0.4, 1.0)
    local_scale: tuple[float, float] = (0.1, 0.4)
    max_view_points: int = Field(65536, ge=64, description="points kept per view (random subset above)")
    loop: int = Field(1, ge=1, description="passes over the training scenes per epoch")
    train_sequences: tuple[str, ...] = Field(("00", "01", "02", "03", "04", "05", "06", "07", "09", "10"),
                                             description="semantickitti: training sequences")
    val_sequences: tuple[str, ...] = Field(("08",), description="semantickitti: validation sequences")
    max_frames: int | None = Field(None, ge=1, description="semantickitti / nuscenes: frames read per split "
                                   "(null = all)")
    nuscenes_version: str = Field("v1.0-trainval", description="nuscenes: the tables' folder (v1.0-mini: splits "
                                  "mini_train / mini_val are used)")
    nuscenes_sweeps: int = Field(0, ge=0, le=30, description="nuscenes: preceding LIDAR_TOP sweeps merged into each "
                                 "key frame (0 = key frame only, as Pointcept's NuScenesDataset)")


class ViewAugmentConfig(StrictModel):
    """Sonata's per-view augmentations beyond the tracked linear part (rotation, tilt, flip, scale, jitter).

    Values from Pointcept configs/sonata/pretrain-sonata-v1m1-0-base.py and datasets/transform.py: that config
    applies ElasticDistortion and ChromaticTranslation to every view and leaves ChromaticAutoContrast and
    ChromaticJitter commented out, hence the defaults. Elastic distortion happens after the linear part is
    recorded (a non-rigid warp no view transform undoes); cross-view matching keeps using the
    pre-augmentation coordinates."""

    elastic: bool = Field(True, description="ElasticDistortion: smoothed-noise displacement field per view")
    elastic_p: float = Field(0.95, ge=0, le=1, description="probability a view is distorted (all pairs at once)")
    elastic_params: tuple[tuple[float, float], ...] = Field(
        ((0.2, 0.4), (0.8, 1.6)), description="(granularity m, magnitude) pairs applied in turn; the displacement "
        "is magnitude x noise smoothed over nodes `granularity` apart (node std ~0.11)")
    auto_contrast: bool = Field(False, description="ChromaticAutoContrast: blend colours with their min-max "
                                "stretch to [0, 255] (off in Sonata's config)")
    auto_contrast_p: float = Field(0.2, ge=0, le=1)
    auto_contrast_blend: float | None = Field(None, ge=0, le=1, description="stretch weight; null = U(0, 1)")
    color_translation: bool = Field(True, description="ChromaticTranslation: one RGB shift per view, "
                                    "U(-ratio, ratio) x 255, clipped to [0, 255]")
    color_translation_p: float = Field(0.95, ge=0, le=1)
    color_translation_ratio: float = Field(0.05, ge=0)
    color_jitter: bool = Field(False, description="ChromaticJitter: per-point N(0, std x 255) colour noise "
                               "(off in Sonata's config)")
    color_jitter_p: float = Field(0.95, ge=0, le=1)
    color_jitter_std: float = Field(0.05, ge=0)
    shared_global_color: bool = Field(True, description="global views share one colour draw per scene "
                                      "(Sonata's global_shared_transform); local views draw their own")

    @model_validator(mode="after")
    def _elastic_pairs(self) -> ViewAugmentConfig:
        if any(g <= 0 or m < 0 for g, m in self.elastic_params):
            raise ValueError("data.augment.elastic_params: each pair is (granularity > 0, magnitude >= 0)")
        return self


class SceneSource(StrictModel):
    """One more dataset whose training scenes join pretraining (outdoor: SemanticKITTI + nuScenes)."""

    dataset: Literal["scannet", "scannet200", "s3dis", "semantickitti", "nuscenes"]
    root: str


class ScenePretrainDataConfig(SceneDataConfig):
    """Scene data of the SSL presets: the scenes plus how each view is augmented."""

    augment: ViewAugmentConfig = Field(default_factory=ViewAugmentConfig)
    also: tuple[SceneSource, ...] = Field((), description="further folder datasets pretrained on together with "
                                          "data.dataset (their own readers, this section's other settings)")


class HeadConfig(StrictModel):
    """Sonata's OnlineCluster heads: MLP -> L2-normalise -> weight-normalised prototypes."""

    hidden: int = Field(4096, ge=8)
    bottleneck: int = Field(256, ge=4)
    prototypes: int = Field(4096, ge=2)
    up_cast_levels: int = Field(2, ge=0, description="coarse levels concatenated onto the head's level")


class SonataLossConfig(StrictModel):
    teacher_temp: tuple[float, float] = Field((0.04, 0.07), description="teacher temperature: start, end of warm-up")
    student_temp: float = Field(0.1, gt=0)
    sinkhorn_iters: int = Field(3, ge=1)
    zipf_alpha: float = Field(0.1, ge=0, description="DOS Zipf-Sinkhorn prior exponent; 0 = uniform (Sonata)")
    mask_size: tuple[float, float] = Field((0.1, 0.4), description="mask patch edge (m): start, end of warm-up")
    mask_ratio: tuple[float, float] = Field((0.3, 0.7), description="masked share of patches: start, end")
    mask_jitter: float = Field(0.01, ge=0, description="sigma of the coordinate noise on masked points")
    warmup: float = Field(0.05, ge=0, le=1, description="share of training over which the schedules ramp")
    match_max_r: float = Field(0.32, gt=0, description="max origin-coordinate distance of a cross-view match")
    weights: tuple[float, float, float] = Field((0.25, 0.25, 0.5), description="mask, roll-mask, unmask")
    layer_decay: float = Field(0.9, gt=0, le=1, description="lr x decay^(blocks above) per encoder block")
    observable_only: bool = Field(False, description="DOS: distil the masked global views only at the points "
                                  "the student saw (mask and roll-mask terms; their Sinkhorn targets are "
                                  "balanced over those points); false = Sonata, every matched point")


# the inputs pc3d's scene pretraining builds by default (pc3d.methods.sonata make_view / view_rules): Sonata's
# rule, colour / 255 and float32 CenterShift. Its runs record the rules in their config so that a probe of them
# feeds what they were trained on; "signed" / "float64" (pc3d's rule before issue 19) can still be chosen.
PRETRAIN_INPUT_RULES: dict[str, object] = {"color_norm": "unit", "center_precision": "float32",
                                           "feat_keys": ("coord", "color", "normal")}


class ScenePretrainPreset(PresetBase):
    command: Literal["pretrain"] = "pretrain"
    model: PTv3Config = Field(default_factory=PTv3Config)
    head: HeadConfig = Field(default_factory=HeadConfig)
    loss: SonataLossConfig = Field(default_factory=SonataLossConfig)
    # warm-up: PointINS Table 9 "warm-up ratio 0.05" (a share of training, so 3000-epoch S3DIS and 50-epoch
    # outdoor runs keep it; Sonata's OneCycleLR pct_start 0.05 is the same share)
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=0.004, weight_decay=0.04, weight_decay_end=0.2,
                                                                   warmup_ratio=0.05, clip_grad=3.0, min_lr=1e-6))
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=800, batch_size=16, ema_momentum=0.994))
    data: ScenePretrainDataConfig = Field(default_factory=ScenePretrainDataConfig)

    @model_validator(mode="before")
    @classmethod
    def _record_input_rules(cls, data: Any) -> Any:
        """Fill the model section's unset input rules with what pretraining does, so the saved config says it."""
        if not isinstance(data, dict):
            return data
        model = data.get("model") or {}
        if isinstance(model, BaseModel):
            model = model.model_dump()
        if not isinstance(model, dict):
            return data  # the field's own validation reports it
        filled = dict(model)
        family_depth = "own" if filled.get("stem", "linear") == "linear" else "parent"
        for key, value in {**PRETRAIN_INPUT_RULES, "pooled_depth": family_depth}.items():
            if filled.get(key) is None:
                filled[key] = value
        return {**data, "model": filled}

    @model_validator(mode="after")
    def _built_input_rules(self) -> ScenePretrainPreset:
        # pretraining builds either colour scale and either centring (the views follow the recorded rule), but
        # only its 9 input channels and the stem family's pooling rule; another value would be ignored
        wanted = {"feat_keys": PRETRAIN_INPUT_RULES["feat_keys"],
                  "pooled_depth": "own" if self.model.stem == "linear" else "parent"}
        for key, value in wanted.items():
            if getattr(self.model, key) != value:
                shown = list(value) if isinstance(value, tuple) else value
                raise ValueError(f"model.{key}: pretraining builds {shown} only")
        return self


@register_schema
class SonataPreset(ScenePretrainPreset):
    entry: ClassVar[str] = "pc3d.methods.sonata:run"
    method: Literal["sonata"] = "sonata"


class OffsetConfig(StrictModel):
    """PointINS: offset head, ODR and SCR (paper Table 9, indoor column by default)."""

    weight: float = Field(0.25, ge=0, description="lambda_off")
    warmup: float = Field(0.1, ge=0, le=1, description="share of training before the offset loss switches on")
    odr: bool = Field(True, description="offset distribution regularisation")
    scr: bool = Field(True, description="spatial clustering regularisation")
    order: Literal["odr-scr", "scr-odr"] = Field("odr-scr", description="paper: ODR then SCR")
    odr_source: Literal["teacher", "student"] = Field(
        "teacher", description="teacher: ODR maps the teacher's offsets onto the priors before SCR (Alg. 1); "
        "student: Table 8's student-side ODR, a KL regulariser on the student's offsets (no ODR in the targets)")
    kl_weight: float = Field(1.0, ge=0, description="odr_source=student: weight of the KL term next to L_off "
                             "(the paper gives none; both inside lambda_off)")
    kl_bins: int = Field(16, ge=2, description="odr_source=student: bins of the soft histograms the KL compares")
    prior: Literal["gamma", "lognormal", "fitted"] = "gamma"
    gamma: tuple[float, float] = Field((0.24, 2.53), description="magnitude prior Gamma(shape, scale)")
    lognormal: tuple[float, float] = Field((0.0, 0.76), description="magnitude prior LogNormal(mu, sigma)")
    # Table 5 fits the prior from HDBSCAN clusters; pc3d approximates them by radius components (no scikit-learn)
    fit_radius: float = Field(0.05, gt=0, description="prior=fitted: radius of the label-free clustering (radius "
                              "components, approximating Table 5's HDBSCAN)")
    fit_min_points: int = Field(30, ge=1, description="prior=fitted: smallest cluster kept")
    fit_scenes: int = Field(8, ge=1, description="prior=fitted: training scenes clustered for the fit")
    kmeans_k: int = Field(20, ge=1)
    kmeans_iters: int = Field(10, ge=0)
    knn: int = Field(150, ge=1, description="k of the kNN graph on predicted centroids")
    radius: float = Field(1.2, gt=0, description="tau_d: edges shorter than this (m) are kept")
    min_points: int = Field(30, ge=1, description="tau_min: smaller components get no target")
    # the paper states the refined centre twice: Eq. 4 (and Alg. 1 line 5) average the component's point
    # coordinates x, the appendix's Alg. 2 averages its predicted centroids x + o; the main text is the default
    centroid: Literal["predicted", "coordinates"] = Field(
        "coordinates", description="SCR component centre: mean of the points' coordinates (Eq. 4, Alg. 1) or of "
        "their predicted centroids (appendix Alg. 2)")
    cross_view: bool = Field(True, description="also distil offsets across views (augmentation inverses)")
    observable_only: bool = Field(
        True, description="student offsets supervised only where the student saw its input (head-level points "
        "with no masked input point; local views are never masked); false = every matched point, masked ones too")


@register_schema
class PointINSPreset(ScenePretrainPreset):
    entry: ClassVar[str] = "pc3d.methods.pointins:run"
    method: Literal["pointins"] = "pointins"
    offset: OffsetConfig = Field(default_factory=OffsetConfig)


class ProbeConfig(StrictModel):
    """What is trained on top of the pretrained encoder, and the PointGroup clustering of instances.

    The defaults are Sonata's probing protocol (Pointcept configs/sonata/insseg-sonata-v1m1-0{a,b,c}-scannet-pg-*):
    the *student* encoder of a pretraining run, frozen in `linear` / `decoder` mode, and fresh heads on the probe
    features at full (input-grid) resolution."""

    task: Literal["semseg", "insseg", "panoptic", "unsup-insseg"] = "insseg"
    mode: Literal["linear", "decoder", "full"] = "linear"
    # mode=decoder: the PTv3 decoder of Pointcept's insseg-sonata-v1m1-0b-scannet-pg-dec.py (PT-v3m2 dec_*), one
    # entry per unpooling, finest first (so one fewer than the encoder's stages)
    decoder_depths: tuple[int, ...] = Field((2, 2, 2, 2), description="mode=decoder: blocks per decoder stage")
    decoder_channels: tuple[int, ...] = Field((64, 96, 192, 384), description="mode=decoder: decoder stage widths")
    decoder_heads: tuple[int, ...] = Field((4, 6, 12, 24), description="mode=decoder: attention heads per stage")
    decoder_patch_size: int = Field(1024, ge=2, description="mode=decoder: points per attention patch")
    decoder_drop_path: float = Field(0.3, ge=0, lt=1, description="mode=decoder: stochastic depth, linear up to "
                                     "this over the decoder's blocks (Sonata's drop_path 0.3)")
    encoder_source: Literal["student", "teacher"] = Field(
        "student", description="network probed in a pc3d pretraining run: the student (Sonata: CheckpointLoader "
        "keywords 'module.student.backbone') or the EMA teacher; an official file holds one encoder")
    cluster_radius: float = Field(0.03, gt=0, description="BFS radius on shifted points (m); PG: 1.5 voxels")
    cluster_max_neighbors: int = Field(600, ge=1)
    cluster_min_points: int = Field(50, ge=1)
    propose_min_points: int = Field(200, ge=1, description="proposals with fewer points are dropped")
    min_region_size: int = Field(100, ge=1, description="AP protocol: smallest counted region")
    lovasz: bool = Field(True, description="add the Lovasz-softmax loss to cross-entropy")
    up_cast_levels: int = Field(2, ge=0, description="level of the pretrained offset head (= pretraining "
                                "head.up_cast_levels): offset_init pretrained / random, unsup-insseg")
    offset_init: Literal["probe", "pretrained", "random"] = Field(
        "probe", description="insseg/panoptic offset head: 'probe' = Sonata's protocol, a fresh head on the probe "
        "features (the default, the same for every checkpoint); 'pretrained' = warm-start from the checkpoint's "
        "PointINS offset head at its pretraining level (random if it has none: an explicit, non-paper option); "
        "'random' = that head's shape and level, randomly initialised (the control of 'pretrained')")
    augment: bool = Field(True, description="training scenes: random z-rotation, flip, scale")

    @model_validator(mode="after")
    def _decoder(self) -> ProbeConfig:
        sizes = (len(self.decoder_depths), len(self.decoder_channels), len(self.decoder_heads))
        if len(set(sizes)) != 1 or not sizes[0]:
            raise ValueError("probe.decoder_depths, decoder_channels and decoder_heads need one entry per "
                             "decoder stage (the encoder's stages - 1)")
        bad = [(c, h) for c, h in zip(self.decoder_channels, self.decoder_heads, strict=True) if c % h]
        if bad:
            raise ValueError(f"probe.decoder_channels {bad[0][0]} is not divisible by its heads {bad[0][1]}")
        return self


@register_schema
class ScenePreset(PresetBase):
    entry: ClassVar[str] = "pc3d.methods.scene_probe:run"
    command: Literal["finetune"] = "finetune"
    method: Literal["scene-probe"] = "scene-probe"
    model: PTv3Config = Field(default_factory=PTv3Config)
    probe: ProbeConfig = Field(default_factory=ProbeConfig)
    # warm-up: Pointcept's Sonata probes (insseg-sonata-v1m1-0a-scannet-pg-lin.py) use OneCycleLR pct_start 0.05
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=0.002, weight_decay=0.05, warmup_ratio=0.05,
                                                                   clip_grad=3.0))
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=800, batch_size=24, best_metric=None))
    data: SceneDataConfig = Field(default_factory=SceneDataConfig)
    weights: str | None = Field(None, description="pretrained Sonata / PointINS run (also --from)")
    backbone_lr_scale: float = Field(0.1, gt=0, description="mode=full: lr multiplier of the encoder")
