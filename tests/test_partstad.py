"""PartSTAD units: rendering, graph partition, voting score, weight network, relaxed mIoU loss, labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pc3d.config.partstad import NetworkConfig, RenderConfig, VotingConfig
from pc3d.foundation.detector import Detections
from pc3d.methods.partstad import (
    WeightNetwork,
    box_weights,
    part_probabilities,
    relaxed_miou_loss,
    segment_votes,
    superpoint_scores,
    superpoint_targets,
    valid_superpoints,
)
from pc3d.methods.partstad_detections import ViewDetections
from pc3d.methods.partstad_render import Views, render_views
from pc3d.methods.partstad_voting import assign_labels, build_votes
from pc3d.ops.graph_partition import merge_small_components, region_growing_partition

FOCAL_20PX = 10 / math.tan(math.radians(30))  # 20-px image, 60 deg field of view


def test_render_puts_points_at_hand_computed_pixels_and_hides_farther_ones():
    # points 0, 2, 3 lie on one ray-ish pixel of view (0,0); 3 is nearest (depths 2.2, 2.7, 1.7)
    points = np.array([[0.05, 0.05, 0.0], [0.5, 0.5, 0.0], [0.05, 0.05, -0.5], [0.05, 0.05, 0.5]])
    cfg = RenderConfig(image_size=20, distance=2.2, fov=60, point_radius=0, views=[(0, 0), (0, 90)])
    views = render_views(points, None, cfg)
    # view (0,0): camera at (0,0,2.2) looking at -z; x right, world y up = image up
    for p, depth in ((0, 2.2), (1, 2.2), (2, 2.7), (3, 1.7)):
        x, y = points[p, :2]
        assert views.uv[0, p].tolist() == pytest.approx([10 + FOCAL_20PX * x / depth, 10 - FOCAL_20PX * y / depth])
    assert int(views.index[0, 6, 13]) == 1  # u = 13.94, v = 6.06
    assert int(views.index[0, 9, 10]) == 3  # 0 and 2 land here too but are farther
    assert views.visible[0].tolist() == [False, True, False, True]
    assert int((views.index[0] >= 0).sum()) == 2
    # view (0,90): camera at (2.2,0,0); world -z is image right, so z = 0.5 lands left of centre
    u3 = 10 - FOCAL_20PX * 0.5 / 2.15
    assert views.uv[1, 3].tolist() == pytest.approx([u3, 10 - FOCAL_20PX * 0.05 / 2.15])
    assert int(views.index[1, 9, int(u3)]) == 3
    assert views.directions[1].tolist() == pytest.approx([1.0, 0.0, 0.0], abs=1e-6)
    assert views.images.shape == (2, 20, 20, 3) and (views.images[0, 0, 0] == 255).all()


def test_region_growing_splits_at_the_dissimilar_edge_by_hand():
    edges = np.array([[0, 1], [1, 2], [2, 3], [3, 4], [4, 5]])
    cost = np.array([0.1, 0.1, 5.0, 0.1, 0.1])
    # singletons merge below 0 + 1/1; then {0,1,2} vs {3,4,5}: 5 > 0.1 + 1/3
    assert region_growing_partition(6, edges, cost, scale=1.0).tolist() == [0, 0, 0, 1, 1, 1]
    # with scale 20 the threshold 0.1 + 20/3 exceeds 5: one component
    assert region_growing_partition(6, edges, cost, scale=20.0).tolist() == [0] * 6


def test_small_components_join_the_nearest_large_one():
    points = np.array([[0, 0, 0], [0.1, 0, 0], [0.2, 0, 0], [5, 0, 0], [5.1, 0, 0], [5.2, 0, 0], [4.0, 0, 0]], float)
    components = np.array([0, 0, 0, 1, 1, 1, 2])
    assert merge_small_components(points, components, min_size=1).tolist() == [0, 0, 0, 1, 1, 1, 1]


def _tiny_scene(seed: int = 0, masks: bool = False):
    """2 views of 12 points in 3 superpoints; 3 parts; a few random boxes per view."""
    rng = np.random.default_rng(seed)
    n, size = 12, 32
    uv = torch.as_tensor(rng.uniform(2, 30, (2, n, 2)))
    visible = torch.as_tensor(rng.random((2, n)) < 0.8)
    views = Views(np.full((2, size, size, 3), 255, np.uint8), torch.full((2, size, size), -1), visible, uv,
                  torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))
    per_view, mask_list = [], []
    for _ in range(2):
        k = 4
        lo = rng.uniform(0, 20, (k, 2))
        boxes = torch.as_tensor(np.hstack([lo, lo + rng.uniform(6, 14, (k, 2))])).float()
        per_view.append(Detections(boxes, torch.rand(k), torch.as_tensor(rng.integers(0, 3, k)), torch.randn(k, 5)))
        if masks:  # random pixels inside each box
            m = torch.zeros(k, size, size, dtype=torch.bool)
            for b in range(k):
                x1, y1, x2, y2 = boxes[b].long().tolist()
                m[b, y1:y2, x1:x2] = torch.as_tensor(rng.random((y2 - y1, x2 - x1)) < 0.6)
            mask_list.append(m)
    detections = ViewDetections.from_views(per_view, 5, mask_list if masks else None)
    superpoint = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
    points = rng.normal(size=(n, 3))
    return views, detections, build_votes(points, superpoint, views, detections, 3), superpoint


def _brute_force_scores(views, detections, superpoint, weights, use_masks):
    scores = np.zeros((3, 3))
    visible_count = np.zeros(3)
    for v in range(2):
        for p in range(len(superpoint)):
            if not views.visible[v, p]:
                continue
            j = superpoint[p]
            visible_count[j] += 1
            x, y = views.uv[v, p].tolist()
            for c in range(3):
                best = 0.0
                for k, b in enumerate(detections.in_view(v).tolist()):
                    if int(detections.labels[b]) != c:
                        continue
                    x1, y1, x2, y2 = detections.boxes[b].tolist()
                    inside = x1 < x < x2 and y1 < y < y2  # bbox2seg: borders are outside
                    if use_masks:
                        inside = bool(detections.masks[v][k, int(math.floor(y)), int(math.floor(x))])
                    if inside:
                        best = max(best, float(weights[b]))
                scores[j, c] += best
    return scores / (visible_count + 1e-6)[:, None]  # bbox2seg's denominator


@pytest.mark.parametrize("use_masks", [False, True])
def test_score_equals_brute_force_count(use_masks):
    views, detections, votes, superpoint = _tiny_scene(seed=3, masks=use_masks)
    weights = torch.rand(len(detections.scores), dtype=torch.float64) * 5
    expected = _brute_force_scores(views, detections, superpoint, weights, use_masks)
    assert superpoint_scores(votes, weights).numpy() == pytest.approx(expected)
    # unit weights: the PartSLIP share of visible points inside >= 1 box of the part
    ones = torch.ones(len(detections.scores), dtype=torch.float64)
    assert superpoint_scores(votes, ones).numpy() == pytest.approx(
        _brute_force_scores(views, detections, superpoint, ones, use_masks))


def test_relaxed_miou_equals_one_minus_miou_for_hard_assignments():
    rng = np.random.default_rng(0)
    sizes = torch.as_tensor(rng.integers(1, 20, 30)).double()
    gt = rng.integers(0, 4, 30)  # 0 = null, parts 1..3; each superpoint pure
    pred = rng.integers(0, 4, 30)
    gt[:3], pred[:3] = [1, 2, 3], [1, 2, 3]  # every part present in both
    probs = torch.nn.functional.one_hot(torch.as_tensor(pred), 4).double()
    targets = torch.nn.functional.one_hot(torch.as_tensor(gt), 4).double()
    loss = relaxed_miou_loss(probs, targets, sizes, torch.ones(30, dtype=torch.bool))
    n = sizes.numpy()
    ious = [n[(gt == c) & (pred == c)].sum() / n[(gt == c) | (pred == c)].sum() for c in (1, 2, 3)]
    assert float(loss) == pytest.approx(1 - np.mean(ious))


def test_loss_gradient_reaches_the_network_weights():
    _, detections, votes, superpoint = _tiny_scene(seed=1)
    network = WeightNetwork(5, NetworkConfig())
    weights = network(votes.box_feature, votes.box_geometry)
    probs = part_probabilities(superpoint_scores(votes, weights), network.null_score())
    semantic = torch.as_tensor(np.array([0, 0, 1, 0, 1, 1, 1, 2, 2, 2, 2, -1]))
    loss = relaxed_miou_loss(probs, superpoint_targets(votes, semantic), votes.sp_size, valid_superpoints(votes))
    loss.backward()
    for name in ("hidden.weight", "out.weight", "out.bias", "null_weight"):
        grad = dict(network.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_superpoint_targets_are_label_shares():
    _, _, votes, _ = _tiny_scene(seed=2)
    semantic = torch.tensor([0, 0, 1, -1, 2, 2, 2, 2, -1, -1, 0, 1])
    g = superpoint_targets(votes, semantic).numpy()
    assert g[0].tolist() == pytest.approx([0.25, 0.5, 0.25, 0.0])
    assert g[1].tolist() == pytest.approx([0.0, 0.0, 0.0, 1.0])
    assert g[2].tolist() == pytest.approx([0.5, 0.25, 0.25, 0.0])


def test_context_normalisation_is_invariant_to_box_order():
    torch.manual_seed(0)
    network = WeightNetwork(6, NetworkConfig(init_std=0.1))
    features, geometry = torch.randn(9, 6), torch.rand(9, 7)
    order = torch.randperm(9)
    with torch.no_grad():
        shuffled, plain = network(features[order], geometry[order]), network(features, geometry)
    assert shuffled.numpy() == pytest.approx(plain[order].numpy(), rel=1e-5)
    # the normalisation is over the shape's boxes: one more box changes the others' weights
    more = network(torch.cat([features, torch.randn(1, 6) * 5]), torch.cat([geometry, torch.rand(1, 7)]))[:9]
    assert not torch.allclose(more, network(features, geometry))


def test_untrained_network_weighs_every_box_tau():
    network = WeightNetwork(4, NetworkConfig(tau=10.0, null_init=10.0))
    weights = network(torch.randn(5, 4), torch.rand(5, 7))
    assert weights.detach().numpy() == pytest.approx(np.full(5, 10.0), abs=1e-2)
    assert float(network.null_score().detach()) == 10.0


def test_null_label_wins_where_no_box_covers_a_superpoint():
    views, detections, votes, superpoint = _tiny_scene(seed=4)
    network = WeightNetwork(5, NetworkConfig())
    scores = superpoint_scores(votes, network(votes.box_feature, votes.box_geometry))
    scores[1] = 0  # as if no box covered superpoint 1
    probs = part_probabilities(scores, network.null_score())
    assert int(probs[1].argmax()) == 0
    assert float(probs[1, 0].detach()) == pytest.approx(math.exp(10) / (math.exp(10) + 3))
    labels = assign_labels(probs[:, 1:], torch.ones(3, dtype=torch.bool), 0.5 - 1e-4, [False] * 3)
    assert int(labels[1]) == -1


def test_superpoint_without_any_box_is_unlabelled():
    views, detections, votes, superpoint = _tiny_scene(seed=5)
    keep_hits = votes.entry_sp[votes.hit_entry] != 2  # drop every hit of superpoint 2
    keep_entries = votes.entry_sp != 2
    remap = torch.cumsum(keep_entries.long(), 0) - 1
    votes.hit_entry, votes.hit_box = remap[votes.hit_entry[keep_hits]], votes.hit_box[keep_hits]
    votes.entry_sp = votes.entry_sp[keep_entries]
    assert not bool(valid_superpoints(votes)[2]) and bool(valid_superpoints(votes)[:2].all())
    for weighting in ("none", "score", "network"):
        network = WeightNetwork(5, NetworkConfig()) if weighting == "network" else None
        labels, _ = segment_votes(votes, VotingConfig(weighting=weighting), network, ["a", "b", "c"])
        assert int(labels[2]) == -1


def test_small_parts_win_over_larger_scores():
    scores = torch.tensor([[0.9, 0.6, 0.1], [0.9, 0.2, 0.1], [0.3, 0.2, 0.1]])
    labels = assign_labels(scores, torch.ones(3, dtype=torch.bool), 0.5, [False, True, False])
    assert labels.tolist() == [1, 0, -1]


def test_partslip_voting_ignores_whole_object_boxes():
    views, detections, votes, superpoint = _tiny_scene(seed=6)
    votes.box_cover = torch.zeros_like(votes.box_cover)
    votes.box_cover[0] = 0.99
    weights, null = box_weights(votes, VotingConfig(weighting="none"), None)
    assert null is None and weights[0] == 0 and (weights[1:] == 1).all()


def test_score_weighting_is_confidence_weighted_voting():
    """weighting=score: vote shares weighted by box confidence, thresholded like PartSLIP voting -- a superpoint
    inside confident boxes of one part gets that part (tau x score against a null of tau never could)."""
    views, detections, votes, superpoint = _tiny_scene(seed=6)
    votes.box_cover = torch.zeros_like(votes.box_cover)
    votes.box_cover[0] = 0.99
    weights, null = box_weights(votes, VotingConfig(weighting="score"), None)
    assert null is None and weights[0] == 0
    torch.testing.assert_close(weights[1:], votes.box_score[1:].double())
    views, detections, votes, superpoint = _tiny_scene(seed=40)  # a scene where voting labels every superpoint
    votes.box_cover = torch.zeros_like(votes.box_cover)
    votes.box_score = torch.ones_like(votes.box_score)  # fully confident boxes: exactly PartSLIP voting
    score_labels, _ = segment_votes(votes, VotingConfig(weighting="score"), None, ["a", "b", "c"])
    voting_labels, _ = segment_votes(votes, VotingConfig(weighting="none"), None, ["a", "b", "c"])
    assert torch.equal(score_labels, voting_labels) and bool((voting_labels >= 0).any())


def test_colourless_sphere_renders_shaded_centre_bright_rim_dark():
    """Without colours the render is headlight-shaded (a detector sees the surface), not one grey silhouette."""
    rng = np.random.default_rng(0)
    sphere = rng.normal(size=(4000, 3))
    sphere /= np.linalg.norm(sphere, axis=1, keepdims=True)
    cfg = RenderConfig(image_size=64, point_radius=0.03, views=[(0, 0)])
    image = render_views(sphere, None, cfg).images[0].astype(float)[..., 0]
    index = render_views(sphere, None, cfg).index[0].numpy()
    obj = index >= 0
    assert obj.sum() > 500 and len(np.unique(image[obj])) > 10
    rows, cols = np.nonzero(obj)
    radius = np.hypot(rows - rows.mean(), cols - cols.mean())
    centre, rim = image[obj][radius < radius.max() * 0.3], image[obj][radius > radius.max() * 0.85]
    assert centre.mean() > rim.mean() + 40  # facing the light vs grazing
    flat = render_views(sphere, None, cfg.model_copy(update={"shading": "flat"})).images[0][..., 0]
    assert len(np.unique(flat[obj])) == 1
    # a coloured cloud keeps its colours exactly
    colours = np.full((4000, 3), [200, 100, 50], np.uint8)
    coloured = render_views(sphere, colours, cfg).images[0]
    assert (coloured[obj] == [200, 100, 50]).all()


def test_cut_pursuit_py_is_partslips_libcp_problem():
    """libcp (PartSLIP) minimises 1/2 sum ||x - f||^2 + reg sum w [cut]: merging [0,0] and [1,0] costs
    1/2 (0.25 + 0.25) = 0.25, so reg * w = 0.2 keeps them apart and 0.3 merges; the wrapper must reproduce that."""
    pytest.importorskip("cut_pursuit_py")
    from pc3d.methods.partstad_superpoints import cut_pursuit_py_partition

    features, edges, weights = np.array([[0.0, 0.0], [1.0, 0.0]]), np.array([[0, 1]]), np.array([1.0])
    assert cut_pursuit_py_partition(features, edges, weights, reg=0.2).tolist() == [0, 1]
    assert cut_pursuit_py_partition(features, edges, weights, reg=0.3).tolist() == [0, 0]
    assert cut_pursuit_py_partition(features, edges, weights * 0.5, reg=0.3).tolist() == [0, 1]


def test_cut_pursuit_py_superpoints_do_not_straddle_a_crease():
    pytest.importorskip("cut_pursuit_py")
    from pc3d.config.partstad import SuperpointConfig
    from pc3d.methods.partstad_superpoints import superpoints

    rng = np.random.default_rng(0)
    floor = np.column_stack([rng.uniform(-1, 1, 1500), np.zeros(1500), rng.uniform(-1, 0, 1500)])
    wall = np.column_stack([rng.uniform(-1, 1, 1500), rng.uniform(0.02, 1, 1500), np.zeros(1500)])
    sp = superpoints(np.vstack([floor, wall]), None, SuperpointConfig(method="cut-pursuit-py"))
    on_floor = np.zeros(3000, bool)
    on_floor[:1500] = True
    for s in np.unique(sp):
        member = sp == s
        assert on_floor[member].mean() in (0.0, 1.0) or min(on_floor[member].sum(), (~on_floor[member]).sum()) <= 20


def test_cut_pursuit_py_missing_is_a_one_line_input_error(monkeypatch):
    import sys

    from pc3d.config.partstad import SuperpointConfig
    from pc3d.errors import InputError
    from pc3d.methods.partstad_superpoints import superpoints

    monkeypatch.setitem(sys.modules, "cut_pursuit_py", None)  # import raises ImportError
    points = np.random.default_rng(0).normal(size=(50, 3))
    with pytest.raises(InputError) as error:
        superpoints(points, None, SuperpointConfig(method="cut-pursuit-py"))
    assert "pip install cut-pursuit-py==1.0.12" in str(error.value) and "\n" not in str(error.value)
