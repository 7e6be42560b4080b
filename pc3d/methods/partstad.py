"""PartSTAD (Kim & Sung, ECCV 2024): few-shot 3D part segmentation by 2D box voting with learned box weights.

The paper's step, on top of PartSLIP's pipeline (stages beside this file):
  given per shape: views (`partstad_render`), part boxes b with features / SAM masks (`partstad_detections`),
  superpoints j (`partstad_superpoints`) and which visible point lies in which box (`partstad_voting.ShapeVotes`);
  1. box weights      w_b = ReLU(tau + MLP_CN([feature_b, PE(view dir, box corners)]))       `WeightNetwork`
                      (PartSLIP voting: w_b = 1 unless the box covers the whole object)     `box_weights`
  2. weighted voting  s_jc = 1/V_j sum_(visible (p, v), p in j) max_(b in v, part c, p in b) w_b
                                                                                           `superpoint_scores`
  3. probabilities    P_j = softmax([max(w_0, 5e-4), s_j1 .. s_jC]) (w_0: learned null weight)
                                                                                          `part_probabilities`
  4. loss             1 - mean_c RIoU_c, RIoU_c = sum n_j g_jc P_jc / (sum n_j g_jc + sum n_j P_jc - sum n_j g_jc
                      P_jc) over superpoints in some box (g: label shares, n: sizes)       `relaxed_miou_loss`
  5. labels           P_jc >= 0.5 - 1e-4 (score2seg), the last-indexed passing small part first, else the best
                      (bbox2seg's rule, as released; the paper writes an argmax)  `segment_votes` -> `assign_labels`
  then PartSLIP's instance merging (`merge_instances`).
Training (`pc3d finetune partstad-fewshot`) minimises 4 on the 8 few-shot shapes of a category with the 2-D
outputs cached per shape (`partstad_io`), keeps the checkpoint of best validation mIoU and scores it on the
held-out test shapes beside PartSLIP voting; `pc3d segment` runs 1-5 on one shape (`prepare_shape` first).
Offline studies replace the detector by `partstad_oracle` (true-part boxes, noisy on request, with features that
never encode a box's label or correctness).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pc3d import console as con
from pc3d.config.partstad import (
    NetworkConfig,
    PartstadFewShotPreset,
    PartstadSections,
    PartstadSegmentPreset,
    VotingConfig,
)
from pc3d.engine.device import resolve_device
from pc3d.engine.method import Method, StepState
from pc3d.errors import InputError
from pc3d.methods.partstad_detections import TwoDModels
from pc3d.methods.partstad_io import (
    FewShotShapes,
    cached_votes,
    collate_shapes,
    fewshot_splits,
    ground_truth_parts,
    partnete_root,
    segment_summary,
    votes_of,
    write_segmentation,
)
from pc3d.methods.partstad_pipeline import prepare_shape
from pc3d.methods.partstad_voting import VISIBLE_EPS, ShapeVotes, assign_labels, merge_instances
from pc3d.runs import RunRequest

NULL_FLOOR = 5e-4  # PartSTAD: the null score never drops below this


# ================================================================ weighted voting, weight network, loss, labels


def superpoint_scores(votes: ShapeVotes, box_weights: Tensor) -> Tensor:
    """Eq. (weighted voting) s_jc = 1/(V_j + 1e-6) sum_(p in j, v: p visible in v) max_(b in v of part c, p in b)
    w_b: per superpoint and part, the visible-point-averaged largest weight of the boxes covering a point
    (w_b = 1: PartSLIP's share of visible points inside a box of the part)."""
    num_sp, num_parts = len(votes.sp_size), int(votes.num_parts)
    num_entries = len(votes.entry_sp)
    weights = box_weights.reshape(-1)
    key = votes.hit_entry * num_parts + votes.box_label[votes.hit_box]
    best = weights.new_zeros(num_entries * num_parts)  # weights are >= 0, so 0 is the empty max
    if len(key):
        best = best.scatter_reduce(0, key, weights[votes.hit_box], reduce="amax", include_self=True)
    per_sp = weights.new_zeros(num_sp, num_parts).index_add(0, votes.entry_sp, best.reshape(num_entries, num_parts))
    # bbox2seg divides by (visible + 1e-6): a share of exactly 0.5 stays below the 0.5 threshold; a superpoint
    # never visible has no entries, so its score is 0 as there
    return per_sp / (votes.sp_visible.to(weights.dtype) + VISIBLE_EPS)[:, None]


def valid_superpoints(votes: ShapeVotes) -> Tensor:
    """Superpoints that are visible somewhere and lie in at least one box (PartSTAD drops the others)."""
    mapped = torch.zeros(len(votes.sp_size), dtype=torch.bool)
    mapped[votes.entry_sp] = True
    return mapped & (votes.sp_visible > 0)


def positional_encoding(x: Tensor, num_freqs: int) -> Tensor:
    """NeRF encoding: [x, sin(2^0 x), cos(2^0 x), ..., sin(2^(n-1) x), cos(2^(n-1) x)]."""
    parts = [x]
    for k in range(num_freqs):
        parts += [torch.sin(x * 2.0**k), torch.cos(x * 2.0**k)]
    return torch.cat(parts, -1)


class WeightNetwork(nn.Module):
    """PartSTAD's WeightPredNetworkCNe: x' = x + ReLU(CN(Linear(x))); w_b = ReLU(tau + Linear(x')); one shape's
    boxes form the context of the normalisation. A learnable null-label weight starts at `null_init`."""

    GEOMETRY = 7

    def __init__(self, feature_dim: int, cfg: NetworkConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or NetworkConfig()
        self.feature_dim, self.num_freqs, self.tau = feature_dim, cfg.num_freqs, cfg.tau
        width = feature_dim + self.GEOMETRY * (1 + 2 * cfg.num_freqs)
        self.hidden = nn.Linear(width, width)
        self.out = nn.Linear(width, 1)
        for layer in (self.hidden, self.out):  # near-zero output at start: every box weighs tau
            nn.init.normal_(layer.weight, 0.0, cfg.init_std)
            nn.init.zeros_(layer.bias)
        self.null_weight = nn.Parameter(torch.tensor(float(cfg.null_init)))

    def forward(self, features: Tensor, geometry: Tensor) -> Tensor:
        """features (B,D), geometry (B,7) of ONE shape's boxes -> weights (B,) >= 0."""
        x = torch.cat([features.float(), positional_encoding(geometry.float(), self.num_freqs)], -1)
        if len(x) == 0:
            return x.new_zeros(0)
        h = self.hidden(x)
        mean = h.mean(0, keepdim=True)
        std = (h.var(0, unbiased=False, keepdim=True) + 1e-12).sqrt()  # population std over the shape's boxes
        x = x + torch.relu((h - mean) / std)
        return torch.relu(self.tau + self.out(x).squeeze(-1))

    def null_score(self) -> Tensor:
        return torch.relu(self.null_weight).clamp_min(NULL_FLOOR)


def box_weights(votes: ShapeVotes, voting: VotingConfig, network: WeightNetwork | None, tau: float = 10.0
                ) -> tuple[Tensor, Tensor | None]:
    """Weights w_b and the null score (None for PartSLIP voting, which thresholds raw shares)."""
    if voting.weighting in ("none", "score"):
        # PartSLIP voting; "score" weighs each vote by its box's confidence and thresholds the same way
        # (tau x score against a null of tau could never reach P >= 0.5: every s_jc < tau)
        votes_count = (votes.box_cover < voting.whole_object).double()
        return (votes_count * votes.box_score.double() if voting.weighting == "score" else votes_count), None
    if network is None:
        raise ValueError("weighting 'network' needs a WeightNetwork")
    return network(votes.box_feature, votes.box_geometry), network.null_score()


def part_probabilities(scores: Tensor, null: Tensor) -> Tensor:
    """P (S,C+1) = softmax([null, s_1..s_C]); column 0 is the null label."""
    return torch.softmax(torch.cat([null.to(scores.dtype).expand(len(scores), 1), scores], 1), 1)


def superpoint_targets(votes: ShapeVotes, semantic: Tensor) -> Tensor:
    """g (S,C+1): share of j's points with each label (column 0 = no part, label -1)."""
    num_parts = int(votes.num_parts)
    one_hot = torch.nn.functional.one_hot((semantic.long() + 1).clamp(0, num_parts), num_parts + 1).double()
    counts = torch.zeros(len(votes.sp_size), num_parts + 1, dtype=torch.float64)
    counts.index_add_(0, votes.superpoint, one_hot)
    return counts / counts.sum(1, keepdim=True).clamp_min(1)


def relaxed_miou_loss(probs: Tensor, targets: Tensor, sizes: Tensor, valid: Tensor) -> Tensor:
    """1 - mean over parts c >= 1 of RIoU_c = sum n g P / (sum n g + sum n P - sum n g P) over valid superpoints
    (RIoU_c = 0 where nothing is predicted as c)."""
    n = sizes[valid].to(probs.dtype)[:, None]
    P, g = probs[valid][:, 1:], targets[valid][:, 1:].to(probs.dtype)
    inter = (n * g * P).sum(0)
    predicted = (n * P).sum(0)
    union = (n * g).sum(0) + predicted - inter
    riou = torch.where(predicted > 0, inter / union.clamp_min(1e-12), torch.zeros_like(inter))
    return (1 - riou).mean()


def segment_votes(votes: ShapeVotes, voting: VotingConfig, network: WeightNetwork | None, parts: Sequence[str],
                  tau: float = 10.0) -> tuple[Tensor, Tensor]:
    """Per-superpoint labels (S,) and confidences (S,C) under the chosen weighting."""
    weights, null = box_weights(votes, voting, network, tau)
    scores = superpoint_scores(votes, weights)
    small = [p.lower() in {s.lower() for s in voting.small_parts} for p in parts]
    valid = valid_superpoints(votes)
    if null is None:  # PartSLIP: raw shares against the threshold
        return assign_labels(scores, valid, voting.threshold, small), scores.detach()
    probs = part_probabilities(scores, null)[:, 1:]
    return assign_labels(probs, valid, voting.threshold - 1e-4, small), probs.detach()


# ================================================================ `pc3d segment`


def load_network(spec: str, feature_dim: int, cfg: NetworkConfig) -> WeightNetwork:
    """A trained weight network from a pc3d checkpoint (path or hf://); its feature size must match."""
    from pc3d.engine.checkpoint import load_weights

    state = load_weights(spec)
    state = {k[len("network."):]: v for k, v in state.items() if k.startswith("network.")} or state
    network = WeightNetwork(feature_dim, cfg)
    own = network.state_dict()
    wrong = [k for k in own if k not in state or tuple(state[k].shape) != tuple(own[k].shape)]
    if wrong:
        raise InputError(f"weights {spec}: not a PartSTAD weight network for this detector and part list "
                         f"(mismatch at {', '.join(wrong[:3])}; features of size {feature_dim} expected)")
    network.load_state_dict({k: state[k] for k in own})
    return network.eval()


def segment(request: RunRequest) -> dict[str, Any]:
    """`pc3d segment INPUT... --parts a,b,c`: per-point part labels of every object; the 2-D models and the weight
    network load once, the outputs go (atomically) to one run folder, never next to the inputs."""
    from pc3d.io.inputs import expand_inputs, output_stems
    from pc3d.io.pointcloud import read_point_cloud
    from pc3d.runs import RunDir

    cfg: PartstadSegmentPreset = request.config
    inputs = request.inputs or {}
    files = expand_inputs(inputs["clouds"])  # a missing input fails before any model loads
    parts = list(inputs["parts"])
    if len(set(p.lower() for p in parts)) != len(parts):
        raise InputError(f"--parts repeats a name: {', '.join(parts)}")
    weights = inputs.get("checkpoint") or cfg.weights
    voting = cfg.voting
    models: TwoDModels | None = None
    network = None
    run_path = Path()
    stems: list[Path] = []
    records: list[dict[str, Any]] = []
    for index, path in enumerate(files):
        category = inputs.get("category") or path.stem.split("_")[0]
        cloud = read_point_cloud(path, num_points=cfg.num_points, seed=cfg.run.seed)
        truth = ground_truth_parts(path, cloud, parts)
        if models is None:
            # after the first shape reads, so an unreadable first input fails before the (slow) models; then once
            models = TwoDModels(cfg, resolve_device(cfg.run.device))
            if voting.weighting == "network":
                if weights:
                    network = load_network(weights, models.feature_dim(len(parts)), cfg.network)
                else:
                    con.info("no trained weight network (--checkpoint): PartSLIP voting")
                    voting = voting.model_copy(update={"weighting": "none"})
            run = RunDir.create(cfg.run.out, cfg.run.name or "partstad")
            run.save_config(cfg.model_dump(mode="json"))
            run_path = run.path
            stems = output_stems(files, run_path)
        prepared = prepare_shape(cloud.points, cloud.colors, parts, models, truth, cfg.run.seed)
        with torch.no_grad():
            sp_labels, confidence = segment_votes(prepared.votes, voting, network, parts, cfg.network.tau)
        labels = sp_labels[prepared.votes.superpoint].numpy()
        instances = None
        if cfg.instances:
            instances = merge_instances(prepared.votes, sp_labels, confidence, whole_object=voting.whole_object)
        records.append(write_segmentation(cfg, stems[index], path, category, parts, cloud, prepared, labels,
                                          instances, truth, voting, weights if network is not None else None))
    return segment_summary(cfg, run_path, parts, voting, weights if network is not None else None, records)


# ================================================================ few-shot training (finetune partstad-fewshot)


class PartstadMethod(Method):
    """Trains the weight network (and null weight) with the relaxed mIoU loss, validates with part mIoU."""

    def __init__(self, feature_dim: int, parts: Sequence[str], cfg: PartstadSections, null_lr_scale: float) -> None:
        super().__init__()
        self.network = WeightNetwork(feature_dim, cfg.network)
        self.parts = list(parts)
        self.voting = cfg.voting.model_copy(update={"weighting": "network"})
        self.null_lr_scale = null_lr_scale

    def training_step(self, batch: dict[str, Any], state: StepState) -> dict[str, Tensor]:
        losses = []
        for sample in batch["shapes"]:
            votes = votes_of(sample)
            weights = self.network(votes.box_feature, votes.box_geometry)
            probs = part_probabilities(superpoint_scores(votes, weights), self.network.null_score())
            targets = superpoint_targets(votes, sample["gt_semantic"])
            losses.append(relaxed_miou_loss(probs, targets, votes.sp_size, valid_superpoints(votes)))
        return {"loss": torch.stack(losses).mean().float(), "metric/null_weight": self.network.null_score().detach()}

    def validation_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        preds, gts = [], []
        for sample in batch["shapes"]:
            votes = votes_of(sample)
            sp_labels, _ = segment_votes(votes, self.voting, self.network, self.parts)
            preds.append(sp_labels[votes.superpoint].cpu())
            gts.append(sample["gt_semantic"].cpu())
        return {"preds": preds, "gts": gts}

    def validation_epoch_end(self, outputs: list[dict]) -> dict[str, float]:
        from pc3d.metrics import partnet_miou

        samples = [(p.numpy(), g.numpy()) for out in outputs for p, g in zip(out["preds"], out["gts"], strict=True)]
        return {"miou": float(partnet_miou(samples, len(self.parts))["miou"])}

    def param_groups(self, weight_decay: float) -> list[dict]:
        network = [(n, p) for n, p in self.named_parameters() if n != "network.null_weight"]
        return [
            {"params": [p for _, p in network], "param_names": [n for n, _ in network], "weight_decay": weight_decay},
            # run_partstad.py: a second AdamW for the null weight with torch's default decay (0.01), as the network's
            {"params": [self.network.null_weight], "param_names": ["network.null_weight"],
             "weight_decay": weight_decay, "lr_scale": self.null_lr_scale},
        ]


def _load_split(cfg: PartstadFewShotPreset, split: str) -> tuple[list[str], list[dict[str, Tensor]], int]:
    root = partnete_root(cfg)
    parts, splits = fewshot_splits(root, cfg.data.category)
    records = splits[split]
    if split == "test" and cfg.data.max_test:
        records = records[:cfg.data.max_test]
    models_box: list = []
    samples = [cached_votes(r, parts, cfg, models_box, cfg.data.category)
               for r in con.track(records, total=len(records), description=f"{split} shapes (2D outputs)")]
    feature_dim = int(samples[0]["box_feature"].shape[1]) if samples else 0
    return parts, samples, feature_dim


def build(config: PartstadFewShotPreset, rank: int) -> Any:
    from pc3d.engine.trainer import TrainingSetup

    parts, train, feature_dim = _load_split(config, "train")
    _, val, _ = _load_split(config, "val")
    method = PartstadMethod(feature_dim, parts, config, config.null_lr / config.optim.lr)
    return TrainingSetup(method, FewShotShapes(train), FewShotShapes(val), collate_shapes)


def evaluate_shapes(samples: list[dict[str, Tensor]], parts: Sequence[str], voting: VotingConfig,
                    network: WeightNetwork | None, tau: float) -> dict[str, float]:
    """Category mIoU (PartSTAD's compute_iou) and part-aware / -agnostic mAP50 (PartSLIP merging)."""
    from pc3d.metrics import PartInstanceSample, part_map, partnet_miou

    semantic, instance = [], []
    with torch.no_grad():
        for sample in samples:
            votes = votes_of(sample)
            sp_labels, confidence = segment_votes(votes, voting, network, parts, tau)
            labels = sp_labels[votes.superpoint].numpy()
            gt = sample["gt_semantic"].numpy()
            semantic.append((labels, gt))
            masks, inst_labels, scores = merge_instances(votes, sp_labels, confidence, whole_object=voting.whole_object)
            instance.append(PartInstanceSample(gt, sample["gt_instance"].numpy(), masks, inst_labels, scores))
    aps = part_map(instance, len(parts))
    return {"miou": float(partnet_miou(semantic, len(parts))["miou"]), "map50_part_aware": aps["map50_part_aware"],
            "map50_part_agnostic": aps["map50_part_agnostic"]}


def fewshot_loss(samples: list[dict[str, Tensor]], network: WeightNetwork) -> float:
    """The training objective (mean relaxed-mIoU loss, step 4) of `network` on `samples`, without gradients."""
    losses = []
    with torch.no_grad():
        for sample in samples:
            votes = votes_of(sample)
            probs = part_probabilities(superpoint_scores(votes, network(votes.box_feature, votes.box_geometry)),
                                       network.null_score())
            targets = superpoint_targets(votes, sample["gt_semantic"])
            losses.append(float(relaxed_miou_loss(probs, targets, votes.sp_size, valid_superpoints(votes))))
    return float(sum(losses) / max(len(losses), 1))


def finetune(request: RunRequest) -> dict[str, Any]:
    """Few-shot training of one category's weight network, then test-set evaluation of the best checkpoint
    next to PartSLIP voting and the untrained network."""
    from pc3d.engine.checkpoint import load_weights
    from pc3d.engine.trainer import fit

    cfg: PartstadFewShotPreset = request.config
    result = fit(request, build)
    parts, test, feature_dim = _load_split(cfg, "test")
    best = result["checkpoints"].get("best") or result["checkpoints"]["last"]
    network = WeightNetwork(feature_dim, cfg.network)
    state = load_weights(best)
    network.load_state_dict({k[len("network."):]: v for k, v in state.items() if k.startswith("network.")})
    network.eval()
    untrained = WeightNetwork(feature_dim, cfg.network).eval()
    tau = cfg.network.tau
    network_voting = cfg.voting.model_copy(update={"weighting": "network"})
    result["test"] = {
        "shapes": len(test),
        "partstad": evaluate_shapes(test, parts, network_voting, network, tau),
        "untrained": evaluate_shapes(test, parts, network_voting, untrained, tau),
        "partslip_voting": evaluate_shapes(test, parts, cfg.voting.model_copy(update={"weighting": "none"}), None,
                                           tau),
    }
    # the objective on the few-shot shapes before and after training: did the weights learn what they were taught
    _, train, _ = _load_split(cfg, "train")
    result["train_loss"] = {"untrained": fewshot_loss(train, untrained), "partstad": fewshot_loss(train, network)}
    result["weights"] = best
    result["category"] = cfg.data.category
    from pc3d.io.atomic import write_text_atomic

    write_text_atomic(Path(result["run_dir"]) / "test_metrics.json", json.dumps(result["test"], indent=2))
    return result
