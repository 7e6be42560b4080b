"""PartSTAD's inputs and outputs: ground-truth part labels of an input, `pc3d segment`'s files (labels, coloured
PLY, contact sheet, summary), and the few-shot shapes of a PartNetE folder with their cached 2-D outputs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pc3d import console as con
from pc3d.config.partstad import PartstadFewShotPreset, PartstadSections, PartstadSegmentPreset, VotingConfig
from pc3d.engine.device import resolve_device
from pc3d.errors import InputError
from pc3d.methods.partstad_detections import TwoDModels
from pc3d.methods.partstad_oracle import ORACLE_FEATURES
from pc3d.methods.partstad_pipeline import PreparedShape, prepare_shape
from pc3d.methods.partstad_voting import ShapeVotes

# what `segment` ran, by VotingConfig.weighting: PartSTAD's learned box weights or a PartSLIP voting baseline
BOX_WEIGHTS = {"network": "partstad", "none": "partslip-voting", "score": "partslip-voting-by-score"}


# ---------------------------------------------------------------- ground truth of an input


def ground_truth_parts(path: Path, cloud: Any, parts: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """(semantic (N,) index into `parts` or -1, instance (N,)) when the input carries part labels: a PartNetE
    pc.ply beside its label.npy, or a pc3d synthetic shape (global part ids in its 'part' field)."""
    wanted = [p.strip().lower() for p in parts]
    label_file = path.parent / "label.npy"
    if path.name == "pc.ply" and label_file.is_file():
        data = _load_partnete_label(label_file)
        meta = _find_meta(path)
        names = meta.get(path.parent.parent.name) if meta else None
        if names is None:
            return None
        lookup = np.array([wanted.index(n.lower()) if n.lower() in wanted else -1 for n in names] + [-1])
        semantic = lookup[np.where(data["semantic_seg"] >= 0, data["semantic_seg"], len(names))]
        return semantic.astype(np.int64), np.asarray(data["instance_seg"], np.int64)
    if "part" not in cloud.fields:
        return None
    from pc3d.data.synthetic.objects import CATEGORIES

    ids = np.asarray(cloud.fields["part"], np.int64)
    name_of: dict[int, set[str]] = {}
    for category in CATEGORIES:
        for name, pid in zip(category.parts, category.part_ids, strict=True):
            name_of.setdefault(pid, set()).update({name, category.partnete_parts.get(name, name)})
    lookup = {pid: next((wanted.index(n) for n in sorted(names) if n in wanted), -1) for pid, names in name_of.items()}
    semantic = np.array([lookup.get(int(i), -1) for i in ids], np.int64)
    instance = np.asarray(cloud.fields.get("instance", ids), np.int64)
    return semantic, instance


def _load_partnete_label(path: Path) -> dict[str, np.ndarray]:
    """PartNetE's label.npy is a pickled dict (the released format), read with the restricted unpickler: a
    downloaded file never runs code."""
    from pc3d.io.safe_pickle import safe_load_npy

    data = safe_load_npy(path)
    try:
        return {"semantic_seg": np.asarray(data["semantic_seg"], np.int64),
                "instance_seg": np.asarray(data["instance_seg"], np.int64)}
    except (TypeError, ValueError, KeyError, IndexError) as exc:
        raise InputError(f"{path}: not a PartNetE label file ({exc})") from None


def _find_meta(path: Path) -> dict[str, list[str]] | None:
    for parent in list(path.parents)[:6]:
        meta = parent / "PartNetE_meta.json"
        if meta.is_file():
            return json.loads(meta.read_text())
    return None

# ---------------------------------------------------------------- `pc3d segment` outputs


def write_segmentation(cfg: PartstadSegmentPreset, stem: Path, path: Path, category: str, parts: Sequence[str],
                       cloud: Any, prepared: PreparedShape, labels: np.ndarray, instances: tuple | None,
                       truth: tuple[np.ndarray, np.ndarray] | None, voting: VotingConfig,
                       weights: str | None = None) -> dict[str, Any]:
    """Write one shape's labels, part-coloured PLY and contact sheet as `<stem>.*` (stem: its place in the run
    folder, from pc3d.io.inputs.output_stems); return its record for the batch summary (`segment_summary`)."""
    from rich.table import Table

    from pc3d.io.atomic import atomic_write
    from pc3d.io.images import write_image
    from pc3d.io.pointcloud import PointCloud, write_point_cloud

    def out(suffix: str) -> Path:
        return stem.parent / f"{stem.name}.{suffix}"

    with atomic_write(out("labels.npy")) as handle:
        np.save(handle, labels.astype(np.int64), allow_pickle=False)
    palette = part_palette(len(parts))
    colors = np.where(labels[:, None] >= 0, palette[np.maximum(labels, 0)], 160).astype(np.uint8)
    fields = {"label": labels.astype(np.int32)}
    instance_ids = None
    if instances is not None:
        instance_ids = np.full(len(labels), -1, np.int32)
        for k, mask in enumerate(instances[0]):
            instance_ids[mask] = k
        fields["instance"] = instance_ids
        with atomic_write(out("instances.npy")) as handle:
            np.save(handle, instance_ids.astype(np.int64), allow_pickle=False)
    write_point_cloud(out("parts.ply"), PointCloud(cloud.points, colors, fields=fields))
    sheet = contact_sheet(prepared, labels, parts, cfg.sheet_tile)
    write_image(out("sheet.png"), sheet)
    counts = {name: int((labels == i).sum()) for i, name in enumerate(parts)}
    counts["(none)"] = int((labels < 0).sum())
    record: dict[str, Any] = {
        "input": str(path), "category": category, "points": int(len(labels)), "points_per_part": counts,
        "superpoints": int(len(prepared.votes.sp_size)), "boxes": int(len(prepared.detections.scores)),
        "seconds": {k: round(v, 3) for k, v in prepared.timings.items()},
        "outputs": {"labels": str(out("labels.npy")), "ply": str(out("parts.ply")), "sheet": str(out("sheet.png"))},
    }
    if instances is not None:
        record["instances"] = int(len(instances[1]))
        record["outputs"]["instances"] = str(out("instances.npy"))
    if truth is not None and (truth[0] >= 0).any():
        from pc3d.metrics import partnet_miou

        record["miou"] = partnet_miou([(labels, truth[0])], len(parts))["miou"]
    if not con.is_quiet():
        ran = (f"PartSTAD box weights ({weights})" if voting.weighting == "network"
               else f"PartSLIP voting baseline (weighting {voting.weighting}, no weight network)")
        con.info(f"{path.name}: {ran}")
        table = Table(title=f"{path.name}: points per part")
        table.add_column("part")
        table.add_column("points", justify="right")
        table.add_column("share", justify="right")
        for name, count in counts.items():
            table.add_row(name, str(count), f"{count / max(len(labels), 1):.1%}")
        con.console.print(table)
    return record


def segment_summary(cfg: PartstadSegmentPreset, run_path: Path, parts: Sequence[str], voting: VotingConfig,
                    weights: str | None, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The batch's summary (stdout JSON and `<run>/summary.json`, written atomically): the shared settings, the
    per-part point totals and one record per input. The summary says which box weighting ran ("box_weights":
    "partstad" = a trained weight network from `weights`, else a PartSLIP voting baseline), since `segment` falls
    back to voting when no weights are given."""
    from pc3d.io.atomic import write_text_atomic

    totals: dict[str, int] = {}
    for record in records:
        for name, count in record["points_per_part"].items():
            totals[name] = totals.get(name, 0) + count
    summary: dict[str, Any] = {
        "parts": list(parts), "weighting": voting.weighting, "box_weights": BOX_WEIGHTS[voting.weighting],
        "weights": weights if voting.weighting == "network" else None, "detector": cfg.detector.kind,
        # an adapted detector (`--detector RUN`, `pc3d finetune partstad-detector`) or the zero-shot one
        "detector_weights": cfg.detector.weights or None,
        "sam": cfg.sam.enabled, "run_dir": str(run_path), "out": str(run_path), "points_per_part": totals,
        "inputs": records,
    }
    labelled = [r["miou"] for r in records if "miou" in r]
    if labelled:  # PartNet's instance average: the mean of the per-shape mIoUs
        summary["mean_miou"] = float(np.mean(labelled))
    if len(records) == 1:
        # the single-shape keys callers of `pc3d segment FILE --json` read (outputs, points, boxes, miou, ...) stay
        # at the top
        summary.update({k: v for k, v in records[0].items() if k not in summary})
        summary["points_per_part"] = records[0]["points_per_part"]
    write_text_atomic(run_path / "summary.json", json.dumps(summary, indent=2))
    return summary


def part_palette(count: int) -> np.ndarray:
    from pc3d.viz.preview import label_palette

    return label_palette(max(count, 1))


def contact_sheet(prepared: PreparedShape, labels: np.ndarray, parts: Sequence[str], tile: int) -> np.ndarray:
    """One tile per view: render with SAM masks tinted and boxes outlined in their part's colour; then the
    result coloured by part from the same views."""
    from PIL import Image, ImageDraw

    from pc3d.viz.preview import caption, resize_nearest, stack_rows, tile_grid

    palette = part_palette(len(parts))
    det = prepared.detections
    size = prepared.views.images.shape[1]
    inputs, results = [], []
    colors = np.where(labels[:, None] >= 0, palette[np.maximum(labels, 0)], 170).astype(np.uint8)
    for v, image in enumerate(prepared.views.images):
        picture = image.astype(np.float64)
        ids = det.in_view(v)
        if det.masks is not None:
            for k, b in enumerate(ids.tolist()):
                mask = det.masks[v][k].numpy()
                picture[mask] = 0.6 * picture[mask] + 0.4 * palette[int(det.labels[b])]
        canvas = Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(canvas)
        for b in ids.tolist():
            draw.rectangle([float(x) for x in det.boxes[b]], outline=tuple(int(c) for c in palette[int(det.labels[b])]),
                           width=max(1, size // 200))
        elevation_azimuth = f"view {v}"
        inputs.append(caption(resize_nearest(np.asarray(canvas), (tile, tile)), elevation_azimuth))
        index = prepared.views.index[v].numpy()
        result = np.full((size, size, 3), 255, np.uint8)
        result[index >= 0] = colors[index[index >= 0]]
        results.append(resize_nearest(result, (tile, tile)))
    legend = np.full((24, tile * 5, 3), 255, np.uint8)
    canvas = Image.fromarray(legend)
    draw = ImageDraw.Draw(canvas)
    x = 4
    for i, name in enumerate(parts):
        draw.rectangle([x, 6, x + 12, 18], fill=tuple(int(c) for c in palette[i]))
        draw.text((x + 16, 6), name, fill=(20, 20, 20))
        x += 24 + 7 * len(name)
    columns = 5
    return stack_rows([np.asarray(canvas), tile_grid(inputs, columns), tile_grid(results, columns)])


# ---------------------------------------------------------------- few-shot shapes (PartNetE) and their cache


@dataclass
class ShapeRecord:
    shape_id: str
    cloud: Path


def partnete_root(cfg: PartstadFewShotPreset) -> Path:
    """The PartNetE folder (PartNetE_meta.json + data/): the given one, or synthetic chairs written once."""
    data = cfg.data
    if data.source == "folder":
        root = Path(data.root).expanduser()
        for candidate in (root, root / "partnete"):
            if (candidate / "PartNetE_meta.json").is_file():
                return candidate
        raise InputError(f"{root}: no PartNetE_meta.json (expected the PartNet-Ensembled layout)")
    from pc3d.data.layouts import write_partnete
    from pc3d.data.synthetic.objects import generate_object, object_rng

    if data.category != "Chair":
        raise InputError(f"synthetic few-shot data has chairs only, not '{data.category}' (set data.category=Chair)")
    folder = Path(cache_root(cfg)) / f"synthetic-chairs-{cfg.run.seed}-{data.synthetic_count}-{data.synthetic_points}"
    if not (folder / "partnete" / "val_list.json").is_file():
        shapes = [generate_object("chair", object_rng(cfg.run.seed, i), data.synthetic_points)
                  for i in range(data.synthetic_count)]
        write_partnete(folder, shapes)
    return folder / "partnete"


def cache_root(cfg: PartstadFewShotPreset) -> str:
    return cfg.data.cache_dir or str(Path(cfg.run.out) / "partstad-cache")


def fewshot_splits(root: Path, category: str) -> tuple[list[str], dict[str, list[ShapeRecord]]]:
    """Part names and the few-shot (train), validation (val_list.json) and remaining test shapes."""
    meta = json.loads((root / "PartNetE_meta.json").read_text())
    if category not in meta:
        raise InputError(f"{root}: category '{category}' not in PartNetE_meta.json ({', '.join(sorted(meta))})")
    val_file = root / "val_list.json"
    val_ids = set(json.loads(val_file.read_text()).get(category, [])) if val_file.is_file() else set()

    def shapes(split: str) -> list[ShapeRecord]:
        folder = root / "data" / split / category
        found = sorted((p for p in folder.glob("*/pc.ply")), key=lambda p: (len(p.parent.name), p.parent.name))
        return [ShapeRecord(p.parent.name, p) for p in found]

    train, test = shapes("few_shot"), shapes("test")
    if not train:
        raise InputError(f"{root}: no few-shot shapes in data/few_shot/{category}/*/pc.ply")
    val = [s for s in test if s.shape_id in val_ids] or test[:8]
    rest = [s for s in test if s.shape_id not in {v.shape_id for v in val}] or val
    return list(meta[category]), {"train": train, "val": val, "test": rest}


def shape_cache_key(record: ShapeRecord, parts: Sequence[str], cfg: PartstadSections) -> str:
    digest = hashlib.sha1(record.cloud.read_bytes())
    # the oracle's feature columns are part of what is cached: a cache of older oracle features must not load
    digest.update(json.dumps([list(parts), list(ORACLE_FEATURES) if cfg.detector.kind == "oracle" else None,
                              cfg.render.model_dump(mode="json"),
                              cfg.detector.model_dump(mode="json"), cfg.sam.model_dump(mode="json"),
                              cfg.superpoints.model_dump(mode="json")], sort_keys=True).encode())
    if cfg.detector.weights:  # an adapted detector's weights, not their path (runs/.../latest moves on)
        from pc3d.foundation.detector import adapted_detector_fingerprint

        digest.update(adapted_detector_fingerprint(cfg.detector.weights, cfg.detector.kind).encode())
    return digest.hexdigest()[:20]


def cached_votes(record: ShapeRecord, parts: Sequence[str], cfg: PartstadFewShotPreset, models_box: list,
                 category: str) -> dict[str, Tensor]:
    """ShapeVotes + per-point ground truth of one shape, from the cache or computed (2D models run once)."""
    from pc3d.io.atomic import atomic_path
    from pc3d.io.pointcloud import read_point_cloud

    key = shape_cache_key(record, parts, cfg)
    path = Path(cache_root(cfg)) / category / f"{record.shape_id}-{key}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as arrays:
            data = {k: arrays[k] for k in arrays.files}
    else:
        if not models_box:
            models_box.append(TwoDModels(cfg, resolve_device(cfg.run.device)))
        cloud = read_point_cloud(record.cloud)
        truth = ground_truth_parts(record.cloud, cloud, parts)
        if truth is None:
            raise InputError(f"{record.cloud}: no label.npy / PartNetE_meta.json beside it")
        prepared = prepare_shape(cloud.points, cloud.colors, parts, models_box[0], truth,
                                 seed=int(hashlib.sha1(record.shape_id.encode()).hexdigest()[:8], 16))
        data = prepared.votes.to_arrays()
        data["gt_semantic"], data["gt_instance"] = truth
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, **data)
    return {k: torch.as_tensor(v) for k, v in data.items()}


def votes_of(sample: dict[str, Tensor]) -> ShapeVotes:
    return ShapeVotes(**{f.name: sample[f.name] for f in fields(ShapeVotes)})


class FewShotShapes(torch.utils.data.Dataset):
    def __init__(self, samples: list[dict[str, Tensor]]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return self.samples[i]


def collate_shapes(samples: Sequence[dict[str, Tensor]]) -> dict[str, list[dict[str, Tensor]]]:
    return {"shapes": list(samples)}
