"""Object-level finetuning of a Point-MAE-family encoder: classification (with the 10-vote test),
few-shot n-way k-shot classification (folds, mean +- std), ShapeNetPart part segmentation, and
the linear-SVM probe of frozen features.

Any of these checkpoints can start a run (`--from` or `weights:`): an official Point-MAE
`pretrain.pth` / finetuned classifier / part-segmentation `best_model.pth`, a GeoMask3D checkpoint
(student encoder; `norm_p` -> `norm`), or a pc3d run of point-mae / geomask3d / another object expert
holding `*encoder.tokenizer.*` keys. Besides the encoder, a finetuned classifier's class token and head
(when its class count matches) and a part-segmentation checkpoint's head are used too; the report lists
every tensor of the file that was not used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from pc3d.engine.device import resolve_device
from pc3d.engine.method import Method, StepState
from pc3d.errors import InputError
from pc3d.io.atomic import write_text_atomic
from pc3d.models.convert import load_backbone, load_state
from pc3d.models.point_mae import (
    PatchGrouper,
    PointMAEClassifier,
    PointMAEEncoder,
    PointMAEPartSeg,
    step_generator,
)
from pc3d.ops.transforms import AXES, rotate_about_up, scale_and_translate


def encoder_report(model: torch.nn.Module, weights: dict[str, Tensor]) -> dict[str, Any]:
    """Load the encoder part of any supported checkpoint into `model.encoder`; report what matched
    ('skipped': every tensor of the file that was not used, under the file's names)."""
    return load_backbone(model, weights).as_dict()


# what a classifier takes from a checkpoint besides the encoder (an official finetuned `PointTransformer`
# or a pc3d object-cls run); each part loads whole or not at all (a head for another class count)
CLASSIFIER_PARTS: dict[str, tuple[str, ...]] = {
    "class token (cls_token, cls_pos)": ("cls_token", "cls_pos"),
    "classifier head (cls_head_finetune)": ("head.",),
}
# the same for part segmentation (an official `best_model.pth` of segmentation/main.py, or a pc3d run)
PARTSEG_PARTS: dict[str, tuple[str, ...]] = {
    "segmentation head (label_conv, propagation_0, convs1-3, bns1-2)": ("label_conv.", "propagation.", "seg_head."),
}


# ------------------------------------------------------------------------------------ augmentation


def draw_from_pool(points: Tensor, num_points: int, generator: torch.Generator) -> Tensor:
    """(B,P,3) -> (B,num_points,3): a random subset (no repeats) per cloud, the pool's order kept.

    Point-MAE's finetuning (runner_finetune.py) FPS-samples 1200 points and takes a random 1024 of them
    at every training step and in every test vote; the pool here is that FPS set, read once."""
    b, pool = points.shape[:2]
    if pool <= num_points:
        return points
    keys = torch.rand(b, pool, generator=generator)
    pick = keys.argsort(dim=1)[:, :num_points].sort(dim=1).values.to(points.device)
    return points.gather(1, pick.unsqueeze(-1).expand(-1, -1, points.shape[-1]))


def augment_cloud(points: Tensor, data: Any, generator: torch.Generator) -> Tensor:
    """Training augmentation of a batch by the preset: scale-and-translate and/or the up-axis rotation."""
    if data.augment:
        points = scale_and_translate(points, generator)
    if getattr(data, "rotation", "none") == "up":
        points = rotate_about_up(points, generator, AXES[data.up_axis])
    return points


# ------------------------------------------------------------------------------------ classification


class ObjectClassification(Method):
    def __init__(self, config: Any, num_classes: int) -> None:
        super().__init__()
        m = config.model
        self.num_classes = num_classes
        self.model = PointMAEClassifier(num_classes, m.dim, m.depth, m.heads, m.drop_path, m.num_groups,
                                        m.group_size, config.head.dropout)
        self.data = config.data
        self.augment = config.data.augment
        self.num_points = config.data.num_points  # what the network sees; the reader may hold a larger FPS pool
        self.label_smoothing = config.head.label_smoothing

    def training_step(self, batch: dict[str, Tensor], state: StepState) -> dict[str, Tensor]:
        generator = step_generator()
        points = draw_from_pool(batch["points"], self.num_points, generator)
        points = augment_cloud(points, self.data, generator)
        logits = self.model(points)
        loss = F.cross_entropy(logits, batch["label"], label_smoothing=self.label_smoothing)
        accuracy = (logits.argmax(dim=-1) == batch["label"]).float().mean()
        return {"cross_entropy": loss, "metric/acc": accuracy.detach()}

    def single_pass_points(self, points: Tensor) -> Tensor:
        """The un-voted test input: the pool's first num_points, i.e. FPS to num_points (Point-MAE's
        validate: misc.fps(points, npoints)), since FPS from the same start point is prefix-consistent."""
        return points[:, : self.num_points]

    @torch.no_grad()
    def validation_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        logits = self.model(self.single_pass_points(batch["points"]))
        return {"pred": logits.argmax(dim=-1), "label": batch["label"]}

    def validation_epoch_end(self, outputs: list[dict]) -> dict[str, float]:
        from pc3d.metrics.classification import classification_metrics

        pred = torch.cat([torch.as_tensor(o["pred"]).reshape(-1) for o in outputs]).cpu().numpy()
        gt = torch.cat([torch.as_tensor(o["label"]).reshape(-1) for o in outputs]).cpu().numpy()
        metrics = classification_metrics(pred, gt, self.num_classes)
        return {"oa": metrics["oa"], "macc": metrics["macc"]}  # the engine adds "val/"

    def load_pretrained(self, weights: dict[str, Tensor], source: str = "weights") -> dict[str, Any]:
        """Encoder of any supported checkpoint; class token and head too when the file has them (an
        official finetuned classifier, a pc3d object-cls run), the head only for the same class count."""
        return load_backbone(self.model, weights, CLASSIFIER_PARTS).as_dict()

    @torch.no_grad()
    def vote_logits(self, points: Tensor, votes: int, generator: torch.Generator) -> Tensor:
        """(V, B, C) logits of `votes` copies, each a fresh random draw from the FPS pool (when the reader
        holds one) under a random scale-and-translate (Point-MAE's validate_vote / test_vote)."""
        out = []
        for _ in range(votes):
            drawn = draw_from_pool(points, self.num_points, generator)
            out.append(self.model(scale_and_translate(drawn, generator=generator)))
        return torch.stack(out)


def build_classification(config: Any, rank: int) -> Any:
    from pc3d.data.readers.objects import classification_sets, classification_train_val
    from pc3d.engine.trainer import TrainingSetup

    if getattr(config, "method", "") == "object-fewshot" and config.data.folds:  # Point-BERT's fold files
        from pc3d.data.readers.modelnet40_fewshot import released_fold_sets

        train, test, num_classes = released_fold_sets(reader_data(config.data), config.way, config.shot,
                                                      config.fold)
    elif getattr(config, "method", "") == "object-fewshot":  # the few-shot protocol reports its best test OA
        train, test, num_classes = classification_sets(reader_data(config.data), config.run.seed)
        train, test, num_classes = _fewshot_fold(config, train, test, num_classes)
    else:  # with a val split the test split is not built here: selection (val/oa) never sees it
        train, test, num_classes = classification_train_val(reader_data(config.data), config.run.seed)
    torch.manual_seed(config.run.seed)
    method = ObjectClassification(config, num_classes)
    if config.weights:
        from pc3d.engine.checkpoint import load_weights

        method.load_pretrained(load_weights(config.weights), config.weights)
    return TrainingSetup(method=method, train_set=train, val_set=test)


def reader_data(data: Any) -> Any:
    """The data section the readers get: `fps_pool` points per cloud when the preset asks for a pool."""
    pool = getattr(data, "fps_pool", None)
    return data.model_copy(update={"num_points": pool}) if pool else data


@torch.no_grad()
def evaluate_classifier(method: ObjectClassification, test: Dataset, votes: int, batch_size: int,
                        seed: int = 0, rounds: int = 1) -> dict[str, Any]:
    """Single-pass and (votes > 0) voted OA / mAcc / per-class accuracy on `test`.

    Votes are combined by their mean logits (Point-MAE). With rounds > 1 the voting is repeated with fresh
    draws: "vote" stays the first round, "vote_rounds_oa" lists every round's OA and "vote_best_oa" their
    maximum, which is what Point-MAE's test_net prints (a best-of-N over the test split, so not the
    headline pc3d reports)."""
    from pc3d.metrics.classification import aggregate_votes, classification_metrics

    method.eval()
    device = next(method.parameters()).device
    generator = torch.Generator().manual_seed(seed)  # transforms draw on the CPU
    preds, labels, clouds = [], [], []
    for batch in DataLoader(test, batch_size=batch_size, shuffle=False):
        points = batch["points"].to(device)
        preds.append(method.model(method.single_pass_points(points)).argmax(dim=-1).cpu())
        labels.append(batch["label"])
        clouds.append(points)
    gt = torch.cat(labels).numpy()
    result: dict[str, Any] = {"single": classification_metrics(torch.cat(preds).numpy(), gt, method.num_classes)}
    if votes:
        round_metrics = []
        for _ in range(rounds):
            voted = torch.cat([method.vote_logits(points, votes, generator).cpu() for points in clouds], dim=1)
            vote_pred = aggregate_votes(voted.numpy(), "mean_logits")
            round_metrics.append(classification_metrics(vote_pred, gt, method.num_classes))
        result["vote"] = round_metrics[0]
        if rounds > 1:
            result["vote_rounds_oa"] = [m["oa"] for m in round_metrics]
            result["vote_best_oa"] = max(result["vote_rounds_oa"])
    return result


def _trained_method(config: Any, result: dict[str, Any], build: Any) -> Method:
    """Rebuild the method and load the run's best (else last) checkpoint."""
    from pc3d.engine.checkpoint import load_weights

    setup = build(config, 0)
    checkpoints = result.get("checkpoints", {})
    checkpoint = checkpoints.get("best") or checkpoints["last"]
    report = load_state(setup.method, load_weights(str(checkpoint)))
    if report.missing:
        raise InputError(f"checkpoint {checkpoint} lacks {len(report.missing)} weights of the model")
    return setup.method


def run_classification(request: Any) -> dict[str, Any]:
    """Finetune (the best checkpoint is chosen by val/oa on the val split), then evaluate that checkpoint
    once on the val split (`val_oa`) and once on the test split, plainly and with `votes` votes (`test_oa*`).

    The test split is built only after training, so selection cannot read it. For the synthetic objects
    with `data.synthetic_val_count` > 0 val and test are disjoint; otherwise (the public datasets) val is
    the test split and `selection.split` says "test"."""
    from pc3d.data.readers.objects import classification_splits
    from pc3d.engine.trainer import fit

    config = request.config
    result = fit(request, build_classification)
    method = _trained_method(config, result, build_classification).to(resolve_device(config.run.device))
    _, val, test, _ = classification_splits(reader_data(config.data), config.run.seed)
    separate_val = val is not test
    val_scores = evaluate_classifier(method, val, 0, config.train.batch_size, config.run.seed)
    scores = evaluate_classifier(method, test, config.votes, config.train.batch_size, config.run.seed,
                                 config.vote_rounds)
    best = result.get("best") or {}
    summary: dict[str, Any] = {
        "selection": {"metric": best.get("metric"), "split": "val" if separate_val else "test",
                      "checkpoint": "best" if result.get("checkpoints", {}).get("best") else "last",
                      "epoch": best.get("epoch"),
                      "val_samples": len(val), "test_samples": len(test)},  # type: ignore[arg-type]
        "val_oa": val_scores["single"]["oa"], "val_macc": val_scores["single"]["macc"],
        "test_oa": scores["single"]["oa"], "test_macc": scores["single"]["macc"]}
    if "vote" in scores:
        summary.update(test_oa_vote=scores["vote"]["oa"], test_macc_vote=scores["vote"]["macc"])
    if "vote_best_oa" in scores:
        summary["test_oa_vote_best"] = scores["vote_best_oa"]
    if result.get("run_dir"):
        write_text_atomic(Path(result["run_dir"]) / "test_metrics.json",
                          json.dumps({**scores, "val": val_scores["single"], "selection": summary["selection"]},
                                     indent=2))
    return {**result, **summary}


# ------------------------------------------------------------------------------------------ few-shot


def fewshot_indices(train_labels: np.ndarray, test_labels: np.ndarray, way: int, shot: int, query: int,
                    seed: int, fold: int) -> tuple[list[int], list[int], dict[int, int]]:
    """One fold: `way` random classes; `shot` train and `query` test samples of each, drawn at random.

    Returns train indices, test indices, and the map original class -> 0..way-1."""
    rng = np.random.default_rng([seed, fold])
    classes = np.unique(train_labels)
    if len(classes) < way:
        raise InputError(f"few-shot: {way}-way needs {way} classes, the dataset has {len(classes)}")
    chosen = sorted(rng.choice(classes, way, replace=False).tolist())
    train_idx, test_idx = [], []
    for cls in chosen:
        pool_train = np.flatnonzero(train_labels == cls)
        pool_test = np.flatnonzero(test_labels == cls)
        if len(pool_train) < shot or len(pool_test) < query:
            raise InputError(f"few-shot: class {cls} has {len(pool_train)} train / {len(pool_test)} test "
                             f"samples, a fold needs {shot} / {query}")
        train_idx += rng.choice(pool_train, shot, replace=False).tolist()
        test_idx += rng.choice(pool_test, query, replace=False).tolist()
    return train_idx, test_idx, {cls: i for i, cls in enumerate(chosen)}


def _fewshot_fold(config: Any, train: Dataset, test: Dataset, num_classes: int) -> tuple[Dataset, Dataset, int]:
    if getattr(config, "method", "") != "object-fewshot":
        return train, test, num_classes
    from pc3d.data.readers.objects import Subset, dataset_labels

    train_idx, test_idx, relabel = fewshot_indices(dataset_labels(train), dataset_labels(test), config.way,
                                                   config.shot, config.query, config.run.seed, config.fold)
    return Subset(train, train_idx, relabel), Subset(test, test_idx, relabel), config.way


FOLD_FILE = "fold.json"  # in each fold's run folder: the fold's classes, for `pc3d predict`


def run_fewshot(request: Any) -> dict[str, Any]:
    """`folds` independent finetunings; reports each fold's best test OA and their mean +- std.

    One run folder `<out>/<name>/<time>/` holds the few-shot config, its summary.json and one run per fold
    (`fold<k>/<time>/`, each with its checkpoints and a fold.json naming the fold's classes). A resume
    continues that run folder: every fold from its own latest checkpoint, folds not started yet from scratch."""
    from dataclasses import replace

    from pc3d.data.readers.objects import classification_sets, dataset_labels
    from pc3d.engine.trainer import fit
    from pc3d.runs import RunDir

    config = request.config
    name = config.run.name or Path(request.preset_name).stem
    resuming = bool(request.resume or request.resume_auto or request.resume_run)
    parent = RunDir(Path(request.resume_run)) if request.resume_run else \
        RunDir.latest(config.run.out, name) if resuming else None
    if parent is None:
        if request.resume:
            raise InputError(f"--resume: no earlier run named '{name}' under {config.run.out}/")
        parent = RunDir.create(config.run.out, name, checkpoints=False)
        parent.save_config(config.model_dump(mode="json"))
    else:
        parent.mark_latest()
        if request.resume_changes:  # accepted with --allow-change: the run's config says what runs now
            parent.save_config_only(config.model_dump(mode="json"))
    released = bool(config.data.folds)  # Point-BERT's fold files: their classes are 0..way-1, unnamed
    if not released:
        train_set, test_set, _ = classification_sets(reader_data(config.data), config.run.seed)
        train_labels, test_labels = dataset_labels(train_set), dataset_labels(test_set)
    accuracies, runs = [], []
    for fold in range(config.folds):
        run = config.run.model_copy(update={"out": str(parent.path), "name": f"fold{fold}"})
        fold_config = config.model_copy(update={"fold": fold, "run": run})
        # each fold continues its own latest checkpoint (or starts): the few-shot run's request says nothing
        # about a fold's checkpoint
        fold_request = replace(request, config=fold_config, preset_name=f"fold{fold}", resume=False,
                               resume_auto=resuming, resume_checkpoint=None, resume_run=None)
        result = fit(fold_request, build_classification)
        if released:
            relabel, names = {c: c for c in range(config.way)}, [f"fold_class_{c}" for c in range(config.way)]
        else:
            _, _, relabel = fewshot_indices(train_labels, test_labels, config.way, config.shot, config.query,
                                            config.run.seed, fold)
            names = getattr(train_set, "classes", None)
        classes = [str(names[c]) if names else f"class_{c}" for c in sorted(relabel, key=relabel.__getitem__)]
        write_text_atomic(Path(result["run_dir"]) / FOLD_FILE,
                          json.dumps({"fold": fold, "way": config.way, "shot": config.shot, "classes": classes,
                                      "dataset_class_indices": sorted(relabel, key=relabel.__getitem__)},
                                     indent=1, default=int))
        # the best test OA over epochs, as the few-shot protocol of Point-BERT / Point-MAE reports
        best = result["best"]["value"] if result.get("best") else result["metrics"]["val/oa"]
        accuracies.append(float(best))
        runs.append(str(result.get("run_dir", "")))
    acc = np.array(accuracies) * 100
    return {"run_dir": str(parent.path), "way": config.way, "shot": config.shot, "folds": config.folds,
            "oa_mean": float(acc.mean()), "oa_std": float(acc.std()), "fold_oa": acc.tolist(), "fold_runs": runs}


# ------------------------------------------------------------------------------ part segmentation


class ObjectPartSegmentation(Method):
    def __init__(self, config: Any) -> None:
        super().__init__()
        m = config.model
        self.model = PointMAEPartSeg(50, 16, m.dim, m.depth, m.heads, m.drop_path, m.num_groups, m.group_size)
        self.augment = config.data.augment
        self.rotation_axis = AXES[config.data.up_axis] if config.data.rotation == "up" else None

    def training_step(self, batch: dict[str, Tensor], state: StepState) -> dict[str, Tensor]:
        points = batch["points"]
        generator = step_generator()
        if self.augment:  # Point-MAE segmentation/main.py: random_scale_point_cloud + shift_point_cloud
            points = scale_and_translate(points, generator, scale=(0.8, 1.25), shift=0.1, isotropic=True)
        if self.rotation_axis is not None:
            points = rotate_about_up(points, generator, self.rotation_axis)
        logits = self.model(points, batch["category"])
        loss = F.nll_loss(F.log_softmax(logits, dim=-1).reshape(-1, logits.shape[-1]),
                          batch["part_label"].reshape(-1))
        return {"nll": loss}

    @torch.no_grad()
    def validation_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        from pc3d.metrics.partseg import restrict_to_category

        logits = self.model(batch["points"], batch["category"]).float().cpu().numpy()
        categories = batch["category"].cpu().numpy()
        pred = np.stack([restrict_to_category(lg, int(c)) for lg, c in zip(logits, categories, strict=True)])
        return {"pred": torch.from_numpy(pred), "gt": batch["part_label"].cpu(), "category": batch["category"]}

    def validation_epoch_end(self, outputs: list[dict]) -> dict[str, float]:
        from pc3d.metrics.partseg import shapenetpart_miou

        samples = []
        for o in outputs:
            for cat, pred, gt in zip(o["category"], o["pred"], o["gt"], strict=True):
                samples.append((int(cat), np.asarray(pred), np.asarray(gt)))
        scores = shapenetpart_miou(samples)
        return {"miou_instance": scores["miou_instance"], "miou_category": scores["miou_category"]}

    def load_pretrained(self, weights: dict[str, Tensor], source: str = "weights") -> dict[str, Any]:
        """Encoder of any supported checkpoint; the segmentation head too when the file has one (an
        official part-segmentation checkpoint, a pc3d object-partseg run)."""
        return load_backbone(self.model, weights, PARTSEG_PARTS).as_dict()


def build_partseg(config: Any, rank: int) -> Any:
    from pc3d.data.readers.objects import partseg_sets, partseg_val_set
    from pc3d.engine.trainer import TrainingSetup

    train, test = partseg_sets(config.data, config.run.seed)
    val = partseg_val_set(config.data, config.run.seed)  # with a val split, selection never reads test
    torch.manual_seed(config.run.seed)
    method = ObjectPartSegmentation(config)
    if config.weights:
        from pc3d.engine.checkpoint import load_weights

        method.load_pretrained(load_weights(config.weights), config.weights)
    return TrainingSetup(method=method, train_set=train, val_set=test if val is None else val)


@torch.no_grad()
def evaluate_partseg(method: ObjectPartSegmentation, test: Dataset, batch_size: int) -> dict[str, Any]:
    """mIoU_I, mIoU_c and per-category mIoU of `method` on `test` (predictions restricted to the category)."""
    from pc3d.metrics.partseg import shapenetpart_miou

    method.eval()
    device = next(method.parameters()).device
    samples = []
    for batch in DataLoader(test, batch_size=batch_size, shuffle=False):
        out = method.validation_step({k: v.to(device) for k, v in batch.items()})
        samples += [(int(c), p.numpy(), g.numpy()) for c, p, g in zip(out["category"].cpu(), out["pred"],
                                                                        out["gt"], strict=True)]
    return shapenetpart_miou(samples)


def run_partseg(request: Any) -> dict[str, Any]:
    """Finetune, then score the best checkpoint on the test split (per-category mIoU in test_metrics.json).

    With `data.synthetic_val_count` > 0 (synthetic objects) the best checkpoint is chosen on a val split of its
    own and also scored there (`val_miou_*`); otherwise (ShapeNetPart) val is the test split, as in Point-MAE,
    and `selection.split` says "test"."""
    from pc3d.data.readers.objects import partseg_sets, partseg_val_set
    from pc3d.engine.trainer import fit

    config = request.config
    result = fit(request, build_partseg)
    method = _trained_method(config, result, build_partseg).to(resolve_device(config.run.device))
    _, test = partseg_sets(config.data, config.run.seed)
    val = partseg_val_set(config.data, config.run.seed)
    scores = evaluate_partseg(method, test, config.train.batch_size)
    val_scores = evaluate_partseg(method, val, config.train.batch_size) if val is not None else scores
    best = result.get("best") or {}
    selection = {"metric": best.get("metric"), "split": "val" if val is not None else "test",
                 "checkpoint": "best" if result.get("checkpoints", {}).get("best") else "last",
                 "epoch": best.get("epoch"), "val_samples": len(val if val is not None else test),  # type: ignore[arg-type]
                 "test_samples": len(test)}  # type: ignore[arg-type]
    if result.get("run_dir"):
        write_text_atomic(Path(result["run_dir"]) / "test_metrics.json", json.dumps(scores, indent=2))
    return {**result, "selection": selection, "val_miou_instance": val_scores["miou_instance"],
            "val_miou_category": val_scores["miou_category"], "test_miou_instance": scores["miou_instance"],
            "test_miou_category": scores["miou_category"]}


# ----------------------------------------------------------------------------------- linear-SVM probe


class FrozenEncoder(torch.nn.Module):
    """Grouper + encoder; a cloud's descriptor is [max, mean] over its patch tokens."""

    def __init__(self, m: Any) -> None:
        super().__init__()
        self.grouper = PatchGrouper(m.num_groups, m.group_size)
        self.encoder = PointMAEEncoder(m.dim, m.depth, m.heads, 0.0)

    @torch.no_grad()
    def forward(self, points: Tensor) -> Tensor:
        from pc3d.methods.point_mae import pooled_features

        neighborhood, center = self.grouper(points)
        return pooled_features(self.encoder(neighborhood, center))


@torch.no_grad()
def extract_features(model: FrozenEncoder, dataset: Dataset, batch_size: int,
                     device: torch.device) -> tuple[Tensor, Tensor]:
    feats, labels = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        feats.append(model(batch["points"].to(device)).float().cpu())
        labels.append(batch["label"])
    return torch.cat(feats), torch.cat(labels)


def run_svm(request: Any) -> dict[str, Any]:
    """Frozen-encoder features of train and test, a linear SVM on train, accuracy on test."""
    from pc3d.data.readers.objects import classification_sets
    from pc3d.engine.checkpoint import load_weights
    from pc3d.metrics.classification import classification_metrics
    from pc3d.models.linear_svm import LinearSVM, standardize
    from pc3d.runs import RunDir

    config = request.config
    spec = request.init_from or config.weights
    torch.manual_seed(config.run.seed)
    model = FrozenEncoder(config.model)
    report = encoder_report(model, load_weights(spec)) if spec else {"loaded": 0, "missing": ["(random init)"]}
    device = resolve_device(config.run.device)
    model.to(device).eval()
    train, test, num_classes = classification_sets(config.data, config.run.seed)
    train_x, train_y = extract_features(model, train, config.train.batch_size, device)
    test_x, test_y = extract_features(model, test, config.train.batch_size, device)
    if config.svm_standardize:
        train_x, test_x = standardize(train_x.double(), test_x.double())
    svm = LinearSVM(c=config.svm_c).fit(train_x, train_y)
    metrics = classification_metrics(svm.predict(test_x).numpy(), test_y.numpy(), num_classes)
    run_dir = RunDir.create(config.run.out, config.run.name or "svm")
    run_dir.save_config(config.model_dump(mode="json"))
    write_text_atomic(run_dir.path / "test_metrics.json",
                      json.dumps({"svm": metrics, "weights": spec, "load_report": report}, indent=2))
    return {"svm_oa": metrics["oa"], "svm_macc": metrics["macc"], "encoder_tensors_loaded": report["loaded"],
            "run_dir": str(run_dir.path)}
