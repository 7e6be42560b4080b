"""Preset schemas of object-level SSL (issue 6): Point-MAE / GeoMask3D pretraining and object finetuning."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from pc3d.config.base import DataConfig, OptimConfig, PresetBase, StrictModel, TrainConfig, check_heads_divide_dim
from pc3d.config.registry import register_schema


class BackboneConfig(StrictModel):
    """Point-MAE transformer sizes (the official numbers are the defaults)."""

    dim: int = Field(384, ge=8)
    depth: int = Field(12, ge=1)
    heads: int = Field(6, ge=1)
    decoder_depth: int = Field(4, ge=1)
    drop_path: float = Field(0.1, ge=0, lt=1)
    num_groups: int = Field(64, ge=2, description="patches per cloud (FPS centres)")
    group_size: int = Field(32, ge=2, description="points per patch (kNN)")

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> BackboneConfig:
        check_heads_divide_dim(self.dim, self.heads)
        return self


class ObjectDataConfig(DataConfig):
    """Object datasets: the embedded synthetic shapes, or a public dataset folder."""

    dataset: Literal["shapenet55", "modelnet40", "scanobjectnn", "shapenetpart"] = Field(
        "modelnet40", description="reader used when source=folder")
    scan_variant: Literal["obj_bg", "obj_only", "pb_t50_rs"] = Field(
        "pb_t50_rs", description="ScanObjectNN split (OBJ-BG, OBJ-ONLY, PB-T50-RS)")
    synthetic_test_count: int = Field(32, ge=1, description="test samples generated when source=synthetic")
    synthetic_val_count: int = Field(0, ge=0, le=1_000_000, description="classification and part "
                                     "segmentation, source=synthetic: "
                                     "validation samples of their own (disjoint from train and test) that pick "
                                     "the best checkpoint; 0: validate on the test split")
    augment: bool = Field(True, description="training: random per-axis scale [2/3,3/2] + translate [-0.2,0.2] "
                          "(part segmentation: one scale U[0.8,1.25] per cloud + shift [-0.1,0.1], as Point-MAE's "
                          "segmentation/main.py)")
    rotation: Literal["none", "up"] = Field("none", description="training: rotate each cloud about `up_axis` by "
                                            "U[0, 2 pi) (ACT / ReCon PointcloudRotate; Point-MoDE's ScanObjectNN "
                                            "recipe); applied after `augment`")
    up_axis: Literal["x", "y", "z"] = Field("y", description="gravity axis of the files (ScanObjectNN h5, "
                                            "ModelNet40, ShapeNet are y-up)")
    folds: str | None = Field(None, description="few-shot only: Point-BERT's released ModelNetFewshot folder "
                              "(<way>way_<shot>shot/<fold>.pkl); its folds replace the ones drawn from data.root")
    fps_pool: int | None = Field(None, ge=16, description="read this many FPS points per cloud; training and "
                                 "every test vote draw a random `num_points` of them, single-pass tests take "
                                 "the first `num_points` (= FPS to num_points). Point-MAE ModelNet40: 1200")

    @model_validator(mode="after")
    def _pool_exceeds_points(self) -> ObjectDataConfig:
        if self.fps_pool is not None and self.fps_pool <= self.num_points:
            raise ValueError(f"data.fps_pool {self.fps_pool} must exceed data.num_points {self.num_points}")
        return self


class PretrainPreset(PresetBase):
    command: Literal["pretrain"] = "pretrain"
    model: BackboneConfig = Field(default_factory=BackboneConfig)
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=1e-3, weight_decay=0.05, min_lr=1e-6))
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=300, batch_size=128))
    data: ObjectDataConfig = Field(default_factory=lambda: ObjectDataConfig(dataset="shapenet55"))
    svm_probe: bool = Field(True, description="linear-SVM accuracy of frozen features at each validation")


@register_schema
class PointMAEPreset(PretrainPreset):
    entry: ClassVar[str] = "pc3d.methods.point_mae:run"
    method: Literal["point-mae"] = "point-mae"
    mask_ratio: float = Field(0.6, gt=0, lt=1, description="int(ratio*G) patches hidden per sample")
    loss: Literal["cdl2", "cdl1"] = "cdl2"


class KDTeacherConfig(StrictModel):
    """The frozen pretrained Point-MAE whose features and decoder give the per-patch targets."""

    weights: str | None = Field(None, description="Point-MAE checkpoint: official pretrain.pth, a pc3d "
                                                  "point-mae run, or hf://owner/repo[/file]")
    bootstrap_steps: int = Field(0, ge=0, description="no weights: pretrain a Point-MAE teacher for this many "
                                                      "steps on the training set first (offline quickstart)")
    bootstrap_lr: float = Field(1e-3, gt=0)


@register_schema
class GeoMask3DPreset(PretrainPreset):
    entry: ClassVar[str] = "pc3d.methods.geomask3d:run"
    method: Literal["geomask3d"] = "geomask3d"
    mask_ratio: float = Field(0.6, gt=0, lt=1, description="G - int(G*(1-ratio)) patches hidden (39 of 64)")
    gc_depth: int = Field(12, ge=1, description="blocks of the GC-predictor decoder")
    max_hard_share: float = Field(0.8, ge=0, le=1, description="hard share of masked patches at the last epoch")
    ema_decay: tuple[float, float] = Field((0.999, 0.9999), description="EMA teacher decay: start, end")
    ema_ramp_epochs: int = Field(100, ge=1, description="epochs of the linear decay ramp")
    loss_switch_epoch: int = Field(15, ge=0, description="from this epoch use `late_weights`")
    late_weights: tuple[float, float] = Field((13.889, 1000.0), description="(feature, chamfer) weights")
    drc_weight: float = Field(1.0, ge=0)
    cd_grad: bool = Field(False, description="let the Chamfer term train the student through the frozen "
                          "teacher decoder (true); the released code computes it under no_grad, so the published "
                          "numbers come from false")
    teacher: KDTeacherConfig = Field(default_factory=KDTeacherConfig)

    @model_validator(mode="after")
    def _teacher_source(self) -> GeoMask3DPreset:
        if self.teacher.weights is None and self.teacher.bootstrap_steps == 0:
            raise ValueError("teacher.weights is required (or set teacher.bootstrap_steps > 0 to pretrain "
                             "a Point-MAE teacher first)")
        return self


class HeadConfig(StrictModel):
    dropout: float = Field(0.5, ge=0, lt=1)
    label_smoothing: float = Field(0.0, ge=0, lt=1)


class FinetunePreset(PresetBase):
    command: Literal["finetune"] = "finetune"
    model: BackboneConfig = Field(default_factory=BackboneConfig)
    head: HeadConfig = Field(default_factory=HeadConfig)
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=5e-4, weight_decay=0.05, clip_grad=10))
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=300, batch_size=32,
                                                                   best_metric="oa"))
    data: ObjectDataConfig = Field(default_factory=ObjectDataConfig)
    weights: str | None = Field(None, description="pretrained weights (also --from); null = from scratch")


@register_schema
class ClassificationPreset(FinetunePreset):
    entry: ClassVar[str] = "pc3d.methods.object_finetune:run_classification"
    method: Literal["object-cls"] = "object-cls"
    votes: int = Field(10, ge=0, description="test-time votes (random scale-and-translate, and a fresh draw "
                       "from the FPS pool when data.fps_pool is set); 0 = none")
    vote_rounds: int = Field(1, ge=1, description="independent voting rounds; test_metrics.json lists each "
                             "round's OA (Point-MAE's test_net reports the best of 299 rounds)")


@register_schema
class FewShotPreset(FinetunePreset):
    entry: ClassVar[str] = "pc3d.methods.object_finetune:run_fewshot"
    method: Literal["object-fewshot"] = "object-fewshot"
    way: int = Field(5, ge=2)
    shot: int = Field(10, ge=1)
    query: int = Field(20, ge=1, description="test samples per class in each fold")
    folds: int = Field(10, ge=1)
    fold: int = Field(0, ge=0, description="which fold this run trains (set by the fold loop)")


@register_schema
class PartSegPreset(FinetunePreset):
    entry: ClassVar[str] = "pc3d.methods.object_finetune:run_partseg"
    method: Literal["object-partseg"] = "object-partseg"
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=300, batch_size=16,
                                                                   best_metric="miou_instance"))

    @model_validator(mode="after")
    def _no_pool(self) -> PartSegPreset:
        # every point carries a label to predict, so the clouds cannot be subsampled per step
        if self.data.fps_pool is not None:
            raise ValueError("data.fps_pool applies to classification only; part segmentation reads num_points")
        return self


@register_schema
class SVMProbePreset(FinetunePreset):
    entry: ClassVar[str] = "pc3d.methods.object_finetune:run_svm"
    method: Literal["object-svm"] = "object-svm"
    svm_c: float = Field(0.01, gt=0, description="SVM regularisation strength C")
    svm_standardize: bool = Field(True, description="z-score features with train statistics before the SVM")
