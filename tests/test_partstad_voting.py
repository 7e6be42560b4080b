"""PartSLIP's bbox2seg edge rules as pc3d's voting follows them (each named after the rule), the box-overlap gate,
and instance merging; all on hand-placed points and boxes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from pc3d.config.partstad import VotingConfig
from pc3d.foundation.detector import Detections
from pc3d.methods.partstad import segment_votes, superpoint_scores
from pc3d.methods.partstad_detections import ViewDetections
from pc3d.methods.partstad_render import Views
from pc3d.methods.partstad_voting import ShapeVotes, assign_labels, box_iou, build_votes, merge_instances


def _one_view(uv: list[tuple[float, float]], boxes: list[list[float]], labels: list[int], size: int = 256,
              masks: torch.Tensor | None = None) -> ShapeVotes:
    """One view in which every point is visible at `uv`; all points form superpoint 0."""
    n = len(uv)
    views = Views(np.full((1, size, size, 3), 255, np.uint8), torch.full((1, size, size), -1),
                  torch.ones(1, n, dtype=torch.bool), torch.tensor([uv], dtype=torch.float64),
                  torch.tensor([[0.0, 0.0, 1.0]]))
    k = len(boxes)
    detections = ViewDetections.from_views(
        [Detections(torch.tensor(boxes).float(), torch.ones(k), torch.tensor(labels), torch.zeros(k, 2))], 2,
        None if masks is None else [masks])
    return build_votes(np.zeros((n, 3)), np.zeros(n, np.int64), views, detections, max(labels) + 1)


def _shares(votes: ShapeVotes) -> np.ndarray:
    return superpoint_scores(votes, torch.ones(len(votes.box_score), dtype=torch.float64)).numpy()


def test_rule_border_points_are_outside_the_box():
    # 3 points strictly inside [4,4,10,10], one on its right border, one on its top border
    votes = _one_view([(5, 5), (6, 7), (8, 8), (10, 8), (7, 4)], [[4, 4, 10, 10]], [0])
    assert _shares(votes)[0, 0] == pytest.approx(3 / 5)  # inclusive borders would give 5/5
    # the whole-object cover uses the same rule: 3 of 5 projected points inside
    assert float(votes.box_cover[0]) == pytest.approx(3 / 5)


def test_rule_share_of_exactly_one_half_stays_unlabelled():
    # 2 of 4 visible points inside: 2 / (4 + 1e-6) < 0.5
    votes = _one_view([(5, 5), (6, 6), (12, 5), (13, 6)], [[4, 4, 10, 10]], [0])
    share = _shares(votes)[0, 0]
    assert share < 0.5 and share == pytest.approx(0.5)
    labels, _ = segment_votes(votes, VotingConfig(weighting="none"), None, ["seat"])
    assert labels.tolist() == [-1]
    # one more point inside (3/5) passes
    votes = _one_view([(5, 5), (6, 6), (7, 7), (12, 5), (13, 6)], [[4, 4, 10, 10]], [0])
    assert segment_votes(votes, VotingConfig(weighting="none"), None, ["seat"])[0].tolist() == [0]


def test_rule_last_indexed_small_part_wins_over_a_higher_scoring_one():
    # parts 1 and 2 are small and both pass; bbox2seg scans parts in reverse and keeps the first small one: 2
    scores = torch.tensor([[0.9, 0.8, 0.6], [0.9, 0.8, 0.4], [0.4, 0.3, 0.2], [0.7, 0.2, 0.5]])
    labels = assign_labels(scores, torch.ones(4, dtype=torch.bool), 0.5, [False, True, True])
    assert labels.tolist() == [2, 1, -1, 2]
    # the same through part names: handle and wheel are PartSLIP's small parts
    # (a 4th point outside every box keeps them from covering the whole object, which voting ignores)
    votes = _one_view([(5, 5), (6, 6), (7, 7), (12, 12)], [[4, 4, 13, 13], [4, 4, 9, 9], [4, 4, 8, 8]], [0, 1, 2])
    labels, _ = segment_votes(votes, VotingConfig(weighting="none"), None, ["seat", "handle", "wheel"])
    assert _shares(votes)[0].tolist() == pytest.approx([1.0, 0.75, 0.75]) and labels.tolist() == [2]


def test_rule_box_meeting_the_superpoint_box_below_iou_1e6_gets_no_vote():
    # superpoint box [0,0,100,100]; its corner point (100,100) lies strictly inside both boxes
    tiny = _one_view([(0, 0), (100, 100)], [[99.9, 99.9, 200, 200]], [0])  # IoU 0.01 / 20020 = 5e-7
    small = _one_view([(0, 0), (100, 100)], [[99.0, 99.0, 200, 200]], [0])  # IoU 1 / 20200 = 5e-5
    assert _shares(tiny)[0, 0] == 0.0 and len(tiny.hit_box) == 0
    assert _shares(small)[0, 0] == pytest.approx(0.5)
    # the gated box also counts 0 in the instance ratios (not the point share 1/2)
    assert float(tiny.sp_box_ratio[0, 0]) == 0.0 and float(small.sp_box_ratio[0, 0]) == pytest.approx(0.5)


def test_gate_stops_a_sam_mask_that_spills_outside_its_box():
    # the mask of box [4,4,10,10] also covers pixels around (40,40), where a second superpoint lies
    size = 64
    mask = torch.zeros(1, 1, size, size, dtype=torch.bool)
    mask[0, 0, 4:10, 4:10] = True
    mask[0, 0, 38:43, 38:43] = True
    n = 4
    views = Views(np.full((1, size, size, 3), 255, np.uint8), torch.full((1, size, size), -1),
                  torch.ones(1, n, dtype=torch.bool),
                  torch.tensor([[(5.5, 5.5), (6.5, 6.5), (40.5, 40.5), (41.5, 41.5)]], dtype=torch.float64),
                  torch.tensor([[0.0, 0.0, 1.0]]))
    detections = ViewDetections.from_views(
        [Detections(torch.tensor([[4.0, 4, 10, 10]]), torch.ones(1), torch.tensor([0]), torch.zeros(1, 2))], 2,
        [mask[0]])
    votes = build_votes(np.zeros((n, 3)), np.array([0, 0, 1, 1]), views, detections, 1)
    assert _shares(votes)[:, 0] == pytest.approx([1.0, 0.0])


def test_box_iou_by_hand():
    a = torch.tensor([[0.0, 0, 10, 10], [5, 5, 5, 5]], dtype=torch.float64)
    b = torch.tensor([[5.0, 0, 15, 10], [10, 10, 20, 20]], dtype=torch.float64)
    iou = box_iou(a, b)
    assert iou[0, 0] == pytest.approx(50 / 150) and iou[0, 1] == 0.0  # touching corners: no area
    assert (iou[1] == 0).all()  # a one-point superpoint box meets nothing


def _merge_votes() -> ShapeVotes:
    """4 superpoints of part 0 in one view; boxes 0, 1 of part 0 and a whole-object box 2 of part 0."""
    extent = torch.tensor([[0, 0, 0, 1, 1, 1], [1.01, 0, 0, 2, 1, 1], [5, 0, 0, 6, 1, 1], [2.01, 0, 0, 3, 1, 1.0]],
                          dtype=torch.float64)
    # in-box ratios per box: sp0, sp1 agree on boxes 0, 1 and differ on the whole-object box 2
    ratio = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.5, 0.0, 1.0]], dtype=torch.float64)
    view_box = torch.tensor([[[0, 0, 5, 10]], [[5, 0, 10, 10]], [[20, 0, 30, 10]], [[40, 40, 41, 41]]],
                            dtype=torch.float64)
    superpoint = torch.arange(4).repeat_interleave(5)
    zeros = torch.zeros(0, dtype=torch.long)
    return ShapeVotes(
        superpoint=superpoint, sp_size=torch.full((4,), 5.0, dtype=torch.float64), sp_visible=torch.full((4,), 5.0),
        entry_sp=zeros, hit_entry=zeros, hit_box=zeros, box_label=torch.zeros(3, dtype=torch.long),
        box_score=torch.ones(3, dtype=torch.float64), box_feature=torch.zeros(3, 2), box_geometry=torch.zeros(3, 7),
        box_cover=torch.tensor([0.1, 0.1, 0.99], dtype=torch.float64), box_view=torch.zeros(3, dtype=torch.long),
        box_xyxy=torch.tensor([[0, 0, 10, 10], [20, 0, 30, 10], [0, 0, 100, 100]], dtype=torch.float64),
        sp_box_ratio=ratio, sp_view_box=view_box, sp_extent=extent, num_parts=torch.tensor(1))


def test_instances_merge_adjacent_agreeing_superpoints_and_drop_unboxed_ones():
    votes = _merge_votes()
    confidence = torch.tensor([[0.8], [0.6], [0.9], [0.7]], dtype=torch.float64)
    masks, labels, scores = merge_instances(votes, torch.zeros(4, dtype=torch.long), confidence)
    groups = sorted(sorted(set(votes.superpoint[torch.as_tensor(m)].tolist())) for m in masks)
    # sp0+sp1: adjacent (gap 0.01), equal ratios on the part's non-whole-object boxes -> one instance, IoU 1 with
    # box 0; sp2: far from the rest -> alone, IoU 1 with box 1; sp3: adjacent to sp1 but ratio distance 0.5 >= 0.2,
    # and its 2-D box meets no box with IoU > 0.5 -> dropped
    assert groups == [[0, 1], [2]]
    assert labels.tolist() == [0, 0]
    members = [tuple(sorted(set(votes.superpoint[torch.as_tensor(m)].tolist()))) for m in masks]
    by_group = dict(zip(members, scores, strict=True))
    assert by_group[(0, 1)] == pytest.approx(0.7) and by_group[(2,)] == pytest.approx(0.9)


def test_instance_ratios_ignore_whole_object_boxes_as_the_votes_do():
    votes = _merge_votes()
    confidence = torch.ones(4, 1, dtype=torch.float64)
    labels = torch.zeros(4, dtype=torch.long)
    # counting the whole-object box 2, sp0 and sp1 disagree (ratios 1 vs 0): no merge, and each alone is a
    # half-width box of IoU 0.5 (not > 0.5) with box 0 -> dropped
    masks, _, _ = merge_instances(votes, labels, confidence, whole_object=1.0)
    assert sorted(set(votes.superpoint[torch.as_tensor(m)].tolist()) for m in masks) == [{2}]
    masks, _, _ = merge_instances(votes, labels, confidence, whole_object=0.98)
    assert len(masks) == 2


def test_instances_keep_superpoints_of_very_different_sizes_apart():
    votes = _merge_votes()
    votes.sp_size = torch.tensor([5.0, 500.0, 5.0, 5.0], dtype=torch.float64)  # 100x: bbox2seg needs < 100
    masks, _, _ = merge_instances(votes, torch.zeros(4, dtype=torch.long), torch.ones(4, 1, dtype=torch.float64))
    assert sorted(sorted(set(votes.superpoint[torch.as_tensor(m)].tolist())) for m in masks) == [[2]]


def _brute_force_instances(points, superpoint, uv, visible, boxes, box_view, box_label, sp_labels, confidence,
                           whole_object=0.98):
    """bbox2seg's merging (shared/reference/partstad.md section 8) recomputed from the raw points, pixels and
    boxes, not from ShapeVotes: in-box ratios, 3-D gaps, sizes, the keep rule; components by breadth-first search."""
    num_sp = int(superpoint.max()) + 1

    def inside(v, b):  # points strictly inside box b in view v (borders outside, as the votes)
        x1, y1, x2, y2 = boxes[b]
        return (uv[v, :, 0] > x1) & (uv[v, :, 0] < x2) & (uv[v, :, 1] > y1) & (uv[v, :, 1] < y2)

    def iou(a, b):
        w = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
        h = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
        return w * h / union if union > 0 else 0.0

    def view_box(members, v):
        seen = np.isin(superpoint, members) & visible[v]
        if not seen.any():
            return None
        return [*uv[v, seen].min(0), *uv[v, seen].max(0)]

    cover = np.array([inside(int(box_view[b]), b).mean() for b in range(len(boxes))])
    ratio = np.zeros((num_sp, len(boxes)))
    for j in range(num_sp):
        for b in range(len(boxes)):
            v = int(box_view[b])
            own = view_box([j], v)
            if own is None:
                ratio[j, b] = -1
            elif iou(own, boxes[b]) < 1e-6:
                ratio[j, b] = 0
            else:
                mine = (superpoint == j) & visible[v]
                ratio[j, b] = (inside(v, b) & mine).sum() / mine.sum()
    sizes = np.bincount(superpoint, minlength=num_sp)
    groups_out = []
    for part in sorted(set(sp_labels[sp_labels >= 0].tolist())):
        members = [j for j in range(num_sp) if sp_labels[j] == part]
        use = [b for b in range(len(boxes)) if box_label[b] == part and cover[b] < whole_object]
        linked = {j: set() for j in members}
        for a in members:
            for b in members:
                if a >= b:
                    continue
                pa, pb = points[superpoint == a], points[superpoint == b]
                gap = max((pa.min(0) - pb.max(0)).max(), (pb.min(0) - pa.max(0)).max())
                if gap >= 0.02 or max(sizes[a], sizes[b]) / min(sizes[a], sizes[b]) >= 100:
                    continue
                both = [k for k in use if ratio[a, k] >= 0 and ratio[b, k] >= 0]
                ra, rb = ratio[a, both], ratio[b, both]
                denominator = max(ra.sum(), rb.sum()) if both else 0.0
                dis = np.abs(ra - rb).sum() / denominator if denominator >= 1e-3 else 1.0
                if dis < 0.2:
                    linked[a].add(b)
                    linked[b].add(a)
        left = set(members)
        while left:
            queue, group = [min(left)], set()
            while queue:
                j = queue.pop()
                if j not in group:
                    group.add(j)
                    queue.extend(linked[j] - group)
            left -= group
            keep = any((vb := view_box(sorted(group), int(box_view[b]))) is not None and iou(vb, boxes[b]) > 0.5
                       for b in range(len(boxes)) if box_label[b] == part)
            if keep:
                weight = sizes[sorted(group)]
                score = float((confidence[sorted(group), part] * weight).sum() / weight.sum())
                groups_out.append((part, tuple(sorted(group)), score))
    return sorted(groups_out)


def _row_scene(seed: int) -> tuple[Any, ...]:
    """Superpoints in a row 0.01 apart (adjacent), two views, boxes over runs of superpoints plus one box per
    view covering the whole object; random labels (some -1) and confidences."""
    rng = np.random.default_rng(seed)
    num_sp, per = 10, 12
    superpoint = np.repeat(np.arange(num_sp), per)
    offset = rng.uniform(0, 0.095, len(superpoint))
    offset[::per], offset[1::per] = 0.0, 0.095  # each superpoint spans 0.095 of its 0.1 slot: gaps of 0.005
    points = np.column_stack([superpoint * 0.1 + offset, rng.uniform(0, 0.3, (len(superpoint), 2))])
    size = 400
    uv = np.stack([np.column_stack([20 + points[:, 0] * 300, 20 + points[:, 1] * 300]),
                   np.column_stack([20 + points[:, 0] * 300, 20 + points[:, 2] * 300])])
    visible = rng.random((2, len(superpoint))) < 0.85
    boxes, box_view, box_label = [], [], []
    for v in range(2):
        for _ in range(4):
            a = int(rng.integers(0, num_sp))
            b = int(rng.integers(a, min(a + 4, num_sp)))
            run = np.isin(superpoint, np.arange(a, b + 1))
            lo, hi = uv[v, run].min(0), uv[v, run].max(0)
            boxes.append([*(lo - rng.uniform(0, 4, 2)), *(hi + rng.uniform(0, 4, 2))])
            box_view.append(v)
            box_label.append(int(rng.integers(0, 2)))
        boxes.append([0.0, 0.0, size, size])  # covers the whole object: no ratio votes, may still keep a group
        box_view.append(v)
        box_label.append(int(rng.integers(0, 2)))
    # float32, as the detections hold them, so the brute force sees the same boxes
    boxes_np = np.array(boxes, np.float32).astype(np.float64)
    view_np, label_np = np.array(box_view), np.array(box_label)
    views = Views(np.full((2, size, size, 3), 255, np.uint8), torch.full((2, size, size), -1),
                  torch.as_tensor(visible), torch.as_tensor(uv), torch.tensor([[0.0, 0, 1], [0, 1, 0]]))
    per_view = [Detections(torch.as_tensor(boxes_np[view_np == v]).float(), torch.ones(int((view_np == v).sum())),
                           torch.as_tensor(label_np[view_np == v]), torch.zeros(int((view_np == v).sum()), 2))
                for v in range(2)]
    votes = build_votes(points, superpoint, views, ViewDetections.from_views(per_view, 2), 2)
    sp_labels = np.where(rng.random(num_sp) < 0.15, -1, (np.arange(num_sp) // 4) % 2)
    confidence = rng.uniform(0.5, 1.0, (num_sp, 2))
    masks, labels, scores = merge_instances(votes, torch.as_tensor(sp_labels), torch.as_tensor(confidence))
    got = sorted((int(label), tuple(sorted(set(superpoint[mask].tolist()))), float(score))
                 for mask, label, score in zip(masks, labels, scores, strict=True))
    expected = _brute_force_instances(points, superpoint, uv, visible, boxes_np, view_np, label_np, sp_labels,
                                      confidence)
    return got, expected, sp_labels


@pytest.mark.parametrize("seed", range(6))
def test_instance_merging_equals_a_brute_force_bbox2seg(seed):
    """merge_instances on build_votes' data equals bbox2seg's merging recomputed from the raw pixels and boxes."""
    got, expected, _ = _row_scene(seed)
    assert [(p, g) for p, g, _ in got] == [(p, g) for p, g, _ in expected]
    assert [s for _, _, s in got] == pytest.approx([s for _, _, s in expected])


def test_brute_force_scenes_exercise_merges_and_drops():
    """The scenes are not trivial: across the seeds some instances join several superpoints, some stay single,
    and some labelled superpoints are dropped by the keep rule."""
    sizes, dropped = [], 0
    for seed in range(6):
        got, _, sp_labels = _row_scene(seed)
        sizes += [len(group) for _, group, _ in got]
        dropped += int((sp_labels >= 0).sum()) - sum(len(group) for _, group, _ in got)
    assert max(sizes) >= 2 and min(sizes) == 1 and dropped > 0, (sizes, dropped)
