"""`pc3d predict CHECKPOINT INPUT...`: apply a trained checkpoint to new scenes or shapes.

The checkpoint's own saved config (its JSON sidecar, else the run's config.yaml) names the task and every input
rule it was trained with, so nothing about preprocessing is asked of the user. Each task's prediction goes through
the code its evaluation runs (the evaluation dataset classes and `validation_step` / `predict` of the method), so
`pc3d predict` labels an input exactly as the run's evaluation would have:

- point-mode-semseg: RoomPoints' evaluation draw of data.num_points points (colour / 127.5 - 1) is encoded once;
  every input point is then classified from that encoding (the head is per point);
- scene-probe (semseg / insseg / panoptic): ProbeScenes' grid sampling, centring, colour rule and feature keys,
  then SceneProbe.validation_step (PointGroup clustering for instances), carried back to every point;
- affinity3d-seg: SPVCNN on xyz + intensity, ZeroShotSeg.predict with the run's flip TTA;
- object-cls: the reader's FPS to data.fps_pool (or data.num_points) points, unit sphere, the single pass and,
  when the run votes, its voting (votes drawn per shape from a generator seeded with run.seed);
- object-partseg: data.num_points points (FPS when the shape has more; labels reach the other points from their
  nearest sampled point), unit sphere, ObjectPartSegmentation.validation_step (restricted to the category).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pc3d import console as con
from pc3d.errors import InputError
from pc3d.io.atomic import write_bytes_atomic, write_text_atomic
from pc3d.io.inputs import expand_inputs, output_stems

# method of the saved config -> what it is and how a user trains one (the message for a wrong checkpoint)
PREDICT_TASKS: dict[str, str] = {
    "point-mode-semseg": "scene semantic segmentation (pc3d finetune semseg-s3dis)",
    "scene-probe": "scene semantic / instance / panoptic segmentation probes (pc3d finetune probe-scannet)",
    "affinity3d-seg": "zero-shot LiDAR semantic segmentation (pc3d finetune affinity3d-semantickitti)",
    "object-cls": "shape classification (pc3d finetune cls-modelnet40)",
    "object-fewshot": "one fold of a few-shot classification run (pc3d finetune fewshot-modelnet40)",
    "object-partseg": "part segmentation (pc3d finetune partseg-shapenetpart)",
}
CLASSIFIERS = ("object-cls", "object-fewshot")  # a few-shot fold's checkpoint is a classifier like any other
QUERY_CHUNK = 65_536  # points classified per step from an encoded scene: bounds the 3-NN distance matrix
NORMAL_RADIUS, NORMAL_NEIGHBOURS = 0.1, 30  # metres: indoor-scene normals for inputs that carry none


def tasks_line() -> str:
    return "; ".join(f"{method}: {what}" for method, what in PREDICT_TASKS.items())


# ------------------------------------------------------------------------------------------ checkpoint


def resolve_checkpoint(spec: str) -> Path:
    """A checkpoint file from CHECKPOINT: a run folder (its checkpoints/best.json, else last.json), `latest`, a
    checkpoints folder, a checkpoint file of the pair, or hf://owner/repo[@rev][/file]."""
    from pc3d.engine.checkpoint import resolve_checkpoint_path
    from pc3d.engine.hub import HF_SCHEME, resolve_weights

    local = resolve_checkpoint_path(spec)
    if not spec.startswith(HF_SCHEME) and not Path(local).exists():
        raise InputError(f"checkpoint not found: {spec}")
    return resolve_weights(local)


def saved_config(spec: str, path: Path) -> dict[str, Any]:
    """The config the checkpoint was trained with: its sidecar's, else its run folder's config.yaml."""
    from pc3d.engine.checkpoint import read_meta

    sidecar = path if path.suffix == ".json" else path.with_suffix(".json")
    if not sidecar.is_file():
        raise InputError(f"{spec}: no JSON sidecar ({sidecar.name}) next to it; pc3d predict reads the task and its "
                         "preprocessing from a pc3d checkpoint (a run's checkpoints/best.json or last.json)")
    saved = read_meta(sidecar).get("config") or {}
    run_config = sidecar.parent.parent / "config.yaml"
    if not saved and run_config.is_file():
        import yaml

        saved = yaml.safe_load(run_config.read_text()) or {}
    if not isinstance(saved, dict) or not saved.get("method"):
        raise InputError(f"{spec}: the checkpoint records no training config, so its task is unknown")
    return saved


def validated_config(spec: str, saved: dict[str, Any]) -> Any:
    from pydantic import ValidationError

    from pc3d.config.registry import schema_for

    method = saved["method"]
    if method == "partstad-fewshot":  # a box-weight network, not a model of points: segment applies it
        raise InputError(f"{spec}: a PartSTAD weight network, which labels parts through 2-D views; apply it with "
                         f"pc3d segment INPUT --parts \"a,b,c\" --weights {spec}")
    if method not in PREDICT_TASKS:
        raise InputError(f"{spec}: a '{method}' checkpoint ({saved.get('command', '?')}), which pc3d predict cannot "
                         f"apply; it applies checkpoints of {tasks_line()}")
    try:
        return schema_for(method).model_validate(saved)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InputError(f"{spec}: its saved config does not validate with this pc3d ({where}: {first['msg']})") \
            from None


# ------------------------------------------------------------------------------------------ predictor


@dataclass
class Prediction:
    """What one input got: per-point labels (and instances), or a shape's class."""

    labels: np.ndarray | None = None  # (N,) class index per input point
    instances: np.ndarray | None = None  # (N,) instance id per point, -1 = none
    proposals: list[dict[str, Any]] = field(default_factory=list)  # per instance id: class, score, points
    shape: dict[str, Any] | None = None  # classification: class_index, class, score (+ single pass)
    notes: list[str] = field(default_factory=list)


@dataclass
class Predictor:
    """A checkpoint loaded once, with its task's rules."""

    method_name: str
    task: str  # semseg, insseg, panoptic, zero-shot-semseg, classification, partseg
    config: Any
    method: Any
    classes: tuple[str, ...]
    device: torch.device
    kitti: bool = False  # the classes are SemanticKITTI's, so a .bin scan's labels go to a .label file
    kitti_offset: int = 0  # class index + offset = SemanticKITTI train id

    @property
    def per_point(self) -> bool:
        return self.task != "classification"

    def preprocessing(self) -> dict[str, Any]:
        """The input rules taken from the checkpoint's config (recorded in the run's config.yaml)."""
        c = self.config
        if self.method_name == "point-mode-semseg":
            return {"points": c.data.num_points, "draw": "RoomPoints evaluation draw (seed 0)",
                    "colour": "colour / 127.5 - 1 (none: grey)", "query": "every input point"}
        if self.method_name == "scene-probe":
            from pc3d.methods.scene_probe import InputRules

            rules = InputRules.of(c.model)
            return {"grid_size": c.model.grid_size, "rules": rules.describe(), "pooled_depth": c.model.pooled_depth,
                    "task": c.probe.task, "cluster_radius": c.probe.cluster_radius}
        if self.method_name == "affinity3d-seg":
            return {"voxel_size": c.model.voxel_size, "features": "xyz + intensity", "tta": c.tta}
        if self.method_name in CLASSIFIERS:
            return {"points": c.data.num_points, "fps_pool": c.data.fps_pool, "normalise": "unit sphere",
                    "votes": getattr(c, "votes", 0), "vote_seed": c.run.seed}
        return {"points": c.data.num_points, "sampling": "FPS when larger", "normalise": "unit sphere"}

    # ---------------------------------------------------------------- per task

    def predict(self, cloud: Any, path: Path, category: str | None = None) -> Prediction:
        if len(cloud) == 0:
            raise InputError(f"{path}: no points")
        with torch.no_grad():
            if self.method_name == "point-mode-semseg":
                return self._semseg(cloud)
            if self.method_name == "scene-probe":
                return self._probe(cloud)
            if self.method_name == "affinity3d-seg":
                return self._zeroshot(cloud)
            if self.method_name in CLASSIFIERS:
                return self._classify(cloud)
            return self._partseg(cloud, path, category)

    def _semseg(self, cloud: Any) -> Prediction:
        from pc3d.methods.scene_semseg import RoomPoints

        n, notes = len(cloud), []
        if cloud.colors is None:
            notes.append("no colours: mid grey")
        colors = cloud.colors.astype(np.float32) if cloud.colors is not None else np.full((n, 3), 127.5, np.float32)
        room = {"coord": cloud.points.astype(np.float32), "color": colors, "segment": np.zeros(n, np.int64)}
        sample = RoomPoints([room], self.config.data.num_points, train=False)[0]  # the evaluation's own draw
        model = self.method.model
        scene = model.encode_scene(sample["points"][None].to(self.device), sample["colors"][None].to(self.device))
        query = torch.from_numpy(room["coord"])
        query_colors = torch.from_numpy(colors / 127.5 - 1.0)  # RoomPoints' colour rule, on every point
        labels = []
        for begin in range(0, n, QUERY_CHUNK):
            end = begin + QUERY_CHUNK
            logits = model.classify(scene, query[begin:end][None].to(self.device),
                                    query_colors[begin:end][None].to(self.device))
            labels.append(logits.argmax(dim=-1)[0].cpu())
        return Prediction(labels=torch.cat(labels).numpy(), notes=notes)

    def _probe(self, cloud: Any) -> Prediction:
        from pc3d.methods.scene_probe import InputRules, ProbeScenes, collate_scenes

        config, notes = self.config, []
        n = len(cloud)
        rules = InputRules.of(config.model)
        points = cloud.points.astype(np.float32)
        if config.data.dataset == "semantickitti":  # KittiScenes: remission as a grey colour, no normals
            intensity = cloud.fields.get("intensity")
            if intensity is None:
                notes.append("no intensity: zeros")
                intensity = np.zeros(n, np.float32)
            color = np.repeat(np.clip(intensity, 0, 1)[:, None] * 255.0, 3, axis=1).astype(np.float32)
            normal = np.zeros_like(points)
        else:
            if cloud.colors is None and "color" in rules.feat_keys:
                notes.append("no colours: mid grey")
            color = cloud.colors.astype(np.float32) if cloud.colors is not None else np.full((n, 3), 127.5,
                                                                                               np.float32)
            normal = cloud.normals
            if normal is None and "normal" in rules.feat_keys:
                from pc3d.ops.normals import estimate_normals_hybrid

                notes.append(f"no normals: estimated (radius {NORMAL_RADIUS} m, {NORMAL_NEIGHBOURS} neighbours)")
                normal = estimate_normals_hybrid(points, NORMAL_RADIUS, NORMAL_NEIGHBOURS).astype(np.float32)
            elif normal is None:
                normal = np.zeros_like(points)
        unlabelled = np.full(n, -1, np.int64)
        scene = {"coord": points, "color": color, "normal": normal, "segment": unlabelled, "instance": unlabelled}
        dataset = ProbeScenes([scene], self.method.labels, config.model.grid_size, train=False, augment=False,
                              rules=rules)
        batch = collate_scenes([dataset[0]])
        batch = {k: ([t.to(self.device) for t in v] if isinstance(v, list) else v.to(self.device))
                 for k, v in batch.items()}
        record = self.method.validation_step(batch)["scenes"][0]
        prediction = Prediction(labels=record["pred"], notes=notes)
        if "pred_instance" in record:
            prediction.instances = record["pred_instance"]
            prediction.proposals = [{"id": k, "class": self.classes[int(c)], "class_index": int(c),
                                     "score": round(float(s), 4), "points": int((record["pred_instance"] == k).sum())}
                                    for k, (c, s) in enumerate(zip(record["pred_labels"], record["pred_scores"],
                                                                   strict=True))]
        return prediction

    def _zeroshot(self, cloud: Any) -> Prediction:
        n, notes = len(cloud), []
        intensity = cloud.fields.get("intensity")
        if intensity is None:
            notes.append("no intensity: zeros")
            intensity = np.zeros(n, np.float32)
        batch = {"xyz": torch.from_numpy(cloud.points.astype(np.float32)).to(self.device),
                 "intensity": torch.from_numpy(np.asarray(intensity, np.float32)).to(self.device),
                 "batch": torch.zeros(n, dtype=torch.long, device=self.device)}
        return Prediction(labels=self.method.predict(batch, self.config.tta).cpu().numpy(), notes=notes)

    def _classify(self, cloud: Any) -> Prediction:
        from pc3d.data.readers._common import unit_sphere
        from pc3d.metrics.classification import aggregate_votes

        config, method = self.config, self.method
        pool = config.data.fps_pool or config.data.num_points
        points = cloud.points.astype(np.float32)
        if len(points) > pool:  # ModelNet40's reader: FPS to the pool, else repeat points cyclically
            from pc3d.ops.sampling import farthest_point_sample

            points = points[farthest_point_sample(torch.from_numpy(points), pool).numpy()]
        else:
            points = points[np.arange(pool) % len(points)]
        batch = torch.from_numpy(unit_sphere(points).astype(np.float32))[None].to(self.device)
        logits = method.model(method.single_pass_points(batch)).float()[0].cpu()
        single = int(logits.argmax())
        shape: dict[str, Any] = {"single_class_index": single, "single_class": self.classes[single],
                                 "single_score": float(logits.softmax(-1)[single])}
        if getattr(config, "votes", 0):  # few-shot folds are scored without votes
            # a generator per shape: an input's class does not depend on the other inputs of the batch
            generator = torch.Generator().manual_seed(config.run.seed)
            voted = method.vote_logits(batch, config.votes, generator).float().cpu()  # (V, 1, C)
            index = int(aggregate_votes(voted.numpy(), "mean_logits")[0])
            score = float(voted.mean(dim=0)[0].softmax(-1)[index])
        else:
            index, score = single, shape["single_score"]
        shape.update({"class_index": index, "class": self.classes[index], "score": score})
        return Prediction(shape=shape)

    def _partseg(self, cloud: Any, path: Path, category: str | None) -> Prediction:
        from pc3d.data.readers._common import choose_points, unit_sphere

        cat_name, cat_id = shape_category(path, category)
        wanted = self.config.data.num_points
        points = cloud.points.astype(np.float32)
        if len(points) > wanted:  # even coverage; the other points take their nearest sampled point's part
            from pc3d.ops.sampling import farthest_point_sample

            keep = farthest_point_sample(torch.from_numpy(points), wanted).numpy()
        else:
            keep = choose_points(len(points), wanted, None)  # the test reader's deterministic choice
        batch = {"points": torch.from_numpy(unit_sphere(points[keep]).astype(np.float32))[None].to(self.device),
                 "category": torch.tensor([cat_id], device=self.device),
                 "part_label": torch.zeros(1, wanted, dtype=torch.long, device=self.device)}
        sampled = self.method.validation_step(batch)["pred"][0].numpy()
        labels = np.empty(len(points), np.int64)
        labels[keep] = sampled  # repeated points (fewer than wanted) agree with themselves
        rest = np.setdiff1d(np.arange(len(points)), keep)
        if rest.size:
            from scipy.spatial import cKDTree

            labels[rest] = sampled[cKDTree(points[keep]).query(points[rest])[1]]
        return Prediction(labels=labels, notes=[f"category {cat_name}"])


def shape_category(path: Path, given: str | None) -> tuple[str, int]:
    """ShapeNetPart category (name, benchmark id) of a shape: --category, else the file name's first word."""
    from pc3d.data.readers.shapenetpart import CATEGORY_IDS

    by_lower = {name.lower(): name for name in CATEGORY_IDS}
    if given is not None:
        if given.lower() not in by_lower:
            raise InputError(f"--category {given}: not a ShapeNetPart category ({', '.join(CATEGORY_IDS)})")
        name = by_lower[given.lower()]
        return name, CATEGORY_IDS[name]
    first = path.stem.replace("-", "_").replace(" ", "_").split("_")[0].lower()
    if first in by_lower:
        return by_lower[first], CATEGORY_IDS[by_lower[first]]
    raise InputError(f"{path}: part segmentation needs the shape's category: --category NAME or a file name "
                     f"starting with it, e.g. chair_01.ply ({', '.join(CATEGORY_IDS)})")


def fold_classes(checkpoint: Path, count: int) -> tuple[str, ...]:
    """A few-shot fold's classes (its `way` classes, in its own 0..way-1 order) from the fold.json the few-shot
    run writes into each fold's run folder; class_<i> for a fold that did not finish."""
    from pc3d.methods.object_finetune import FOLD_FILE

    record = checkpoint.parent.parent / FOLD_FILE
    if record.is_file():
        names = json.loads(record.read_text()).get("classes") or []
        if len(names) == count:
            return tuple(str(n) for n in names)
    return tuple(f"class_{i}" for i in range(count))


def classification_names(config: Any, count: int) -> tuple[str, ...]:
    """Class names of a classifier: the synthetic categories, ModelNet40's shape names when its folder is still
    there, else class_<i>."""
    if config.data.source == "synthetic":
        from pc3d.data.synthetic.objects import CATEGORIES

        names = tuple(c.name for c in CATEGORIES)
        if len(names) == count:
            return names
    elif config.data.dataset == "modelnet40" and config.data.root:
        listing = Path(config.data.root) / "modelnet40_shape_names.txt"
        if listing.is_file():
            names = tuple(line.strip() for line in listing.read_text().splitlines() if line.strip())
            if len(names) == count:
                return names
    return tuple(f"class_{i}" for i in range(count))


def load_predictor(spec: str, device: str = "auto") -> tuple[Predictor, Path]:
    """The checkpoint's method rebuilt from its saved config and loaded once; (predictor, checkpoint file)."""
    from pc3d.engine.checkpoint import load_weights
    from pc3d.engine.device import resolve_device
    from pc3d.models.convert import load_state

    path = resolve_checkpoint(spec)
    config = validated_config(spec, saved_config(spec, path))
    weights = load_weights(str(path))
    name = config.method
    kitti, offset = False, 0
    if name == "point-mode-semseg":
        from pc3d.data.readers.s3dis import S3DIS_CLASSES
        from pc3d.methods.scene_semseg import SceneSemseg

        method, task, classes = SceneSemseg(config, len(S3DIS_CLASSES)), "semseg", S3DIS_CLASSES
    elif name == "scene-probe":
        from pc3d.methods.scene_probe import SceneProbe, resolve_input_rules, scene_labels

        # rules the run did not record are the checkpoint's own (read from its sidecar), never the pretraining's
        config = resolve_input_rules(config.model_copy(update={"weights": str(path)}))
        method = SceneProbe(config, scene_labels(config.data.dataset))
        task = config.probe.task
        if task == "unsup-insseg":
            raise InputError(f"{spec}: an unsupervised-instance run has no trained head to apply")
        classes, kitti, offset = probe_classes(config.data.dataset)
    elif name == "affinity3d-seg":
        from pc3d.data.readers.semantickitti import CLASS_NAMES, NUM_CLASSES
        from pc3d.methods.zeroshot_seg import ZeroShotSeg

        # the text embeddings and class weights are buffers of the checkpoint, so CLIP is not needed here; the
        # 2-D branch only trains, so it is not built
        no_image = config.model_copy(update={"image": config.image.model_copy(update={"enabled": False})})
        text = torch.zeros_like(weights["text"]) if "text" in weights else None
        method = ZeroShotSeg(no_image, text, np.ones(NUM_CLASSES, np.float32))
        task, classes, kitti = "zero-shot-semseg", tuple(CLASS_NAMES), True
    elif name in CLASSIFIERS:
        from pc3d.methods.object_finetune import ObjectClassification

        # the class count is the last linear layer's width (the highest-numbered 2-D weight of the head)
        head = sorted((int(k.split(".")[2]), v) for k, v in weights.items()
                      if k.startswith("model.head.") and k.endswith(".weight") and v.ndim == 2)
        if not head:
            raise InputError(f"{spec}: no classifier head in the checkpoint")
        count = int(head[-1][1].shape[0])
        method, task = ObjectClassification(config, count), "classification"
        classes = fold_classes(path, count) if name == "object-fewshot" else classification_names(config, count)
    else:
        from pc3d.data.labels import SHAPENETPART_PART_IDS
        from pc3d.methods.object_finetune import ObjectPartSegmentation

        method, task = ObjectPartSegmentation(config), "partseg"
        parts = {pid: f"{cat}_{k}" for cat, ids in SHAPENETPART_PART_IDS.items() for k, pid in enumerate(ids)}
        classes = tuple(parts[i] for i in range(len(parts)))
    report = load_state(method, weights)
    if report.missing:
        raise InputError(f"{spec}: not a complete {name} checkpoint ({len(report.missing)} weights missing, "
                         f"e.g. {report.missing[0]})")
    torch_device = resolve_device(device)
    method.to(torch_device).eval()
    return Predictor(name, task, config, method, tuple(classes), torch_device, kitti, offset), path


def probe_classes(dataset: str) -> tuple[tuple[str, ...], bool, int]:
    """(class names, classes are SemanticKITTI's, index -> train id offset) of a probe's dataset."""
    if dataset == "semantickitti":
        from pc3d.data.readers.semantickitti import CLASS_NAMES

        return tuple(CLASS_NAMES[1:]), True, 1  # probe segment = train id - 1
    if dataset == "s3dis":
        from pc3d.data.readers.s3dis import S3DIS_CLASSES

        return tuple(S3DIS_CLASSES), False, 0
    from pc3d.data.readers.scannet import SCANNET_CLASSES

    return tuple(SCANNET_CLASSES), False, 0


# ------------------------------------------------------------------------------------------ outputs


def write_point_outputs(predictor: Predictor, cloud: Any, source: Path, stem: Path,
                        prediction: Prediction) -> dict[str, str]:
    """Label file (.npy, or SemanticKITTI .label for a .bin scan of a KITTI model), instance ids, coloured PLY."""
    from pc3d.io.ply import write_ply
    from pc3d.viz.preview import colors_for_labels

    stem.parent.mkdir(parents=True, exist_ok=True)
    labels = prediction.labels.astype(np.int32)
    instances = prediction.instances
    outputs: dict[str, str] = {}
    if predictor.kitti and source.suffix.lower() == ".bin":
        from pc3d.data.readers.semantickitti import unmap_labels
        from pc3d.io.kitti import write_kitti_label

        semantic = unmap_labels(labels.astype(np.int64) + predictor.kitti_offset)  # raw ids, as the dataset's
        kitti_instance = None if instances is None else np.where(instances >= 0, instances + 1, 0)
        outputs["labels"] = str(stem.with_name(stem.name + ".label"))
        write_kitti_label(outputs["labels"], semantic, kitti_instance)
    else:
        outputs["labels"] = str(stem.with_name(stem.name + ".labels.npy"))
        write_bytes_atomic(outputs["labels"], npy_bytes(labels))
    if instances is not None:
        outputs["instances"] = str(stem.with_name(stem.name + ".instances.npy"))
        write_bytes_atomic(outputs["instances"], npy_bytes(instances.astype(np.int32)))
        outputs["instances_json"] = str(stem.with_name(stem.name + ".instances.json"))
        write_text_atomic(outputs["instances_json"], json.dumps(prediction.proposals, indent=1))
    colors = colors_for_labels(labels)
    vertex = {"x": cloud.points[:, 0].astype(np.float32), "y": cloud.points[:, 1].astype(np.float32),
              "z": cloud.points[:, 2].astype(np.float32), "red": colors[:, 0], "green": colors[:, 1],
              "blue": colors[:, 2], "label": labels}
    if instances is not None:
        vertex["instance"] = instances.astype(np.int32)
    outputs["ply"] = str(stem.with_name(stem.name + ".pred.ply"))
    write_ply(Path(outputs["ply"]), {"vertex": vertex},
              comments=(f"pc3d predict: {predictor.method_name} ({predictor.task}), coloured by class",))
    return outputs


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def class_counts(labels: np.ndarray, classes: tuple[str, ...]) -> dict[str, int]:
    counts = np.bincount(labels[labels >= 0].astype(np.int64), minlength=len(classes))
    return {classes[i]: int(c) for i, c in enumerate(counts) if c}


def write_classifications(run_dir: Path, rows: list[dict[str, Any]]) -> dict[str, str]:
    paths = {"predictions": str(run_dir / "predictions.json"), "predictions_csv": str(run_dir / "predictions.csv")}
    write_text_atomic(paths["predictions"], json.dumps(rows, indent=1))
    columns = ["input", "class_index", "class", "score", "single_class_index", "single_class", "single_score"]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "score": f"{row['score']:.4f}", "single_score": f"{row['single_score']:.4f}"})
    write_text_atomic(paths["predictions_csv"], text.getvalue())
    return paths


# ------------------------------------------------------------------------------------------ entry


def predict(checkpoint: str, inputs: list[str], out: str | Path = "runs", device: str = "auto",
            category: str | None = None, columns: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Load CHECKPOINT once, predict every input, write the outputs to `<out>/predict/<time>/` (made
    `<out>/predict/latest`) beside config.yaml, versions.json and summary.json (the returned result)."""
    from pc3d.io.pointcloud import read_point_cloud
    from pc3d.runs import RunDir

    files = expand_inputs(inputs)  # a missing input fails before the model loads
    predictor, checkpoint_file = load_predictor(checkpoint, device)
    if category is not None and predictor.task != "partseg":
        raise InputError(f"--category applies to part segmentation; {checkpoint} is a {predictor.task} checkpoint")
    run_dir = RunDir.create(out, "predict", checkpoints=False)  # a prediction writes no checkpoints
    stems = output_stems(files, run_dir.path)
    run_dir.save_config({"command": "predict", "checkpoint": checkpoint, "checkpoint_file": str(checkpoint_file),
                         "method": predictor.method_name, "task": predictor.task, "device": str(predictor.device),
                         "category": category, "columns": list(columns) if columns else None,
                         "inputs": [str(f) for f in files], "preprocessing": predictor.preprocessing(),
                         "checkpoint_config": predictor.config.model_dump(mode="json")})
    records, rows = [], []
    totals: dict[str, int] = {}
    for source, stem in con.track(list(zip(files, stems, strict=True)), total=len(files), description="predict"):
        cloud = read_point_cloud(source, columns=columns)
        prediction = predictor.predict(cloud, source, category)
        record: dict[str, Any] = {"input": str(source), "points": len(cloud)}
        if prediction.notes:
            record["notes"] = prediction.notes
        if predictor.per_point:
            record["outputs"] = write_point_outputs(predictor, cloud, source, stem, prediction)
            record["counts"] = class_counts(prediction.labels, predictor.classes)
            if prediction.instances is not None:
                record["instances"] = len(prediction.proposals)
        else:
            shape = prediction.shape or {}
            rows.append({"input": str(source), **shape})
            record.update(shape)
            record["counts"] = {shape["class"]: 1}
        for name, count in record["counts"].items():
            totals[name] = totals.get(name, 0) + count
        records.append(record)
    result: dict[str, Any] = {"checkpoint": checkpoint, "checkpoint_file": str(checkpoint_file),
                              "method": predictor.method_name, "task": predictor.task,
                              "device": str(predictor.device), "run_dir": str(run_dir.path),
                              "classes": list(predictor.classes), "counts": totals, "inputs": records}
    if rows:
        result["outputs"] = write_classifications(run_dir.path, rows)
    run_dir.write_summary(result)  # also when called as a library (the CLI writes the same object again)
    return result
