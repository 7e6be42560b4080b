"""Affinity3D's instance queue (section 3.4): the walk over the queue, later frames, write-once, the size bound."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pc3d.methods import affinity3d as a3d
from pc3d.methods.affinity3d_queue import InstanceQueue


def _walk(rows: np.ndarray, nodes: np.ndarray, values: np.ndarray, scale: float, beta: float) -> np.ndarray:
    """Eqs. 6-8 by hand: W = row-softmax(s_a F N^T), A = W^beta, T = D^-1 A, Y' = T Y."""
    logits = scale * rows @ nodes.T
    w = np.exp(logits - logits.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    a = w ** beta
    return (a / a.sum(1, keepdims=True)) @ values


def _frames(sizes: list[int], dim: int = 6, classes: int = 3, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for s in sizes:
        f = rng.normal(size=(s, dim))
        f /= np.linalg.norm(f, axis=1, keepdims=True)
        y = rng.dirichlet(np.ones(classes), size=s)
        out.append((f, y))
    return out


def test_walk_over_the_queue_equals_the_walk_on_the_concatenated_rows():
    sizes, capacity = [3, 4, 2, 5, 1], 8
    frames = _frames(sizes)
    queue: InstanceQueue[int] = InstanceQueue(capacity)
    departures = []
    for k, (f, y) in enumerate(frames):
        departures += queue.push(k, torch.tensor(f), torch.tensor(y))
    departures += queue.flush()
    # who shares the graph with whom, worked out by hand from the FIFO rule (a frame leaves when the next one
    # would overflow 8 instances): 0 leaves when 2 arrives (3+4+2 > 8), 1 when 3 arrives (4+2+5 > 8), then
    # 2 when the run ends with [2, 3, 4] queued (2+5+1 = 8 fits), 3 and 4 after it
    expected_company = {0: [0, 1], 1: [1, 2], 2: [2, 3, 4], 3: [3, 4], 4: [4]}
    assert [d.key for d in departures] == [0, 1, 2, 3, 4]
    for d in departures:
        company = expected_company[d.key]
        nodes = np.concatenate([frames[k][0] for k in company])
        values = np.concatenate([frames[k][1] for k in company])
        expected = _walk(frames[d.key][0], nodes, values, scale=5.0, beta=2.0)
        got = a3d.refine_scores(d.features, d.scores, d.other_features, d.other_scores, 5.0, 2.0).numpy()
        assert np.allclose(got, expected, atol=1e-10)
        assert d.other_features.shape[0] == len(nodes) - sizes[d.key]


@pytest.mark.parametrize("capacity", [0, 5, 17, 40])
def test_queue_size_bound_and_each_frame_leaves_once_in_order(capacity):
    rng = np.random.default_rng(capacity)
    sizes = rng.integers(0, 12, size=30).tolist()
    queue: InstanceQueue[int] = InstanceQueue(capacity)
    left = []
    for k, (f, y) in enumerate(_frames(sizes)):
        for d in queue.push(k, torch.tensor(f), torch.tensor(y)):
            graph = d.features.shape[0] + d.other_features.shape[0]
            # the graph never exceeds the queue, except for a frame larger than the whole queue, refined alone
            assert graph <= capacity or (d.features.shape[0] > capacity and d.other_features.shape[0] == 0)
            left.append(d.key)
        assert len(queue) <= capacity
        assert len(queue) == sum(sizes[j] for j in range(k + 1) if j not in left)
    left += [d.key for d in queue.flush()]
    assert left == list(range(30)) and len(queue) == 0


class _Source:
    logit_scale = 100.0

    def class_embeddings(self, classes):
        return torch.eye(len(classes), 8)


def _labeler(tmp_path, queue_size: int) -> a3d.PseudoLabeler:
    from pc3d.config import apply_overrides, load_preset, validate_preset

    sets = [f"run.out={tmp_path}", "data.setting=annotation-free", "features.candidates=all",
            f"affinity.queue_size={queue_size}", "affinity.scale=10", "affinity.beta=2"]
    return a3d.PseudoLabeler(validate_preset(apply_overrides(load_preset("affinity3d"), sets), "affinity3d"),
                             _Source())


def _pending(frame: str, features: np.ndarray, scores: np.ndarray) -> a3d.PendingFrame:
    """A frame of len(features) superpoints of 2 points each (points 2s, 2s+1 belong to superpoint s)."""
    s = len(features)
    n = 2 * s
    result = a3d.FrameResult(np.zeros(n, np.int64), np.ones(n, bool), np.zeros(n, bool),
                             features.astype(np.float32), scores.astype(np.float32))
    return a3d.PendingFrame({"sequence": "00", "frame": frame}, result, np.arange(n), np.repeat(np.arange(s), 2))


def test_labels_of_frame_t_change_because_of_frame_t_plus_1(tmp_path):
    car, sign = 1, 19  # train ids; candidate row = id - 1
    onehot = np.eye(19)
    # frame t: one superpoint whose own crop says 'sign' (a wrong zero-shot label) but looks like a car
    feat_t = np.array([[1.0, 0.05, 0, 0, 0, 0, 0, 0]])
    scores_t = 0.3 * onehot[car - 1] + 0.7 * onehot[sign - 1]
    # frame t+1: four crops that look like the same car and say 'car'
    feat_next = np.array([[1.0, 0.0, 0, 0, 0, 0, 0, 0], [0.99, 0.1, 0, 0, 0, 0, 0, 0], [0.99, -0.1, 0, 0, 0, 0, 0, 0],
                          [0.98, 0.0, 0.15, 0, 0, 0, 0, 0]])
    feat_next /= np.linalg.norm(feat_next, axis=1, keepdims=True)
    scores_next = np.tile(0.9 * onehot[car - 1] + 0.1 * onehot[sign - 1], (4, 1))
    results = {}
    for size in (0, 16):  # 0: every frame refined alone; 16: t waits for t+1
        labeler = _labeler(tmp_path, size)
        out = labeler.push_prepared(_pending("000000", feat_t, scores_t[None]))
        # with a queue, frame t is not final yet: its labels are not emitted before frame t+1 has arrived
        assert [s["frame"] for s, _ in out] == (["000000"] if size == 0 else [])
        out += labeler.push_prepared(_pending("000001", feat_next, scores_next))
        out += labeler.flush()
        assert [s["frame"] for s, _ in out] == ["000000", "000001"]  # each frame once, in order
        results[size] = out[0][1].labels
    assert results[0].tolist() == [sign, sign]  # alone, frame t keeps its wrong crop label
    assert results[16].tolist() == [car, car]  # in the queue, frame t+1's instances correct it


def test_a_new_sequence_flushes_the_queue(tmp_path):
    labeler = _labeler(tmp_path, 1000)
    feats = np.eye(8)[:2]
    scores = np.eye(19)[:2]
    assert labeler.push_prepared(_pending("000000", feats, scores)) == []
    other = _pending("000000", feats, scores)
    other.sample["sequence"] = "01"
    out = labeler.push_prepared(other)
    assert [(s["sequence"], s["frame"]) for s, _ in out] == [("00", "000000")]
    assert [(s["sequence"], s["frame"]) for s, _ in labeler.flush()] == [("01", "000000")]


@pytest.mark.slow
def test_pseudolabel_writes_every_frame_once_and_resumes_identically(tmp_path, monkeypatch):
    from pc3d.config import apply_overrides, load_preset, validate_preset
    from pc3d.io.kitti import read_kitti_label

    sets = [f"run.out={tmp_path}", "run.name=q", "data.synthetic_count=5", "data.synthetic_rays=3200",
            "data.synthetic_image=[60,200]", "visibility.n_segments=100", "affinity.queue_size=100",
            "features.noise=1.2", "features.confusion=0.15"]
    config = validate_preset(apply_overrides(load_preset("affinity3d-oracle"), sets), "affinity3d-oracle")
    written, graphs = [], []
    real_write, real_refine = a3d.write_frame, a3d.refine_scores

    def counting_write(paths, result):
        written.append(paths["labels"].parent.parent.name + "/" + paths["labels"].stem)
        real_write(paths, result)

    def recording_refine(features, scores, other_features, other_scores, scale, beta):
        graphs.append((features.shape[0], other_features.shape[0]))
        return real_refine(features, scores, other_features, other_scores, scale, beta)

    monkeypatch.setattr(a3d, "write_frame", counting_write)
    monkeypatch.setattr(a3d, "refine_scores", recording_refine)
    summary = a3d.pseudolabel(config)
    frames = [f"00/{k:06d}" for k in range(5)]  # ~30-40 superpoints each: 2-3 frames share the queue
    assert written == frames and summary["labelled"] == 5
    assert len(graphs) == 5 and all(own + other <= 100 for own, other in graphs)
    assert sum(other > 0 for _, other in graphs) >= 3  # frames shared their graph with neighbours
    out = a3d.output_root(config) / "sequences"
    first = {f: read_kitti_label(out / f.split("/")[0] / "labels" / f"{f.split('/')[1]}.label")[0] for f in frames}
    # resume after frames 00/000003.. were lost: the written head of the sequence is skipped, the rest relabelled
    # from an empty queue, which is the queue the interrupted run held then (it only ever holds unwritten frames)
    for k in range(3, 5):
        (out / "00" / "labels" / f"{k:06d}.label").unlink()
    written.clear()
    again = a3d.pseudolabel(config)
    assert again["skipped"] == 3 and written == [f"00/{k:06d}" for k in range(3, 5)]
    for f in frames:
        assert np.array_equal(read_kitti_label(out / f.split("/")[0] / "labels" / f"{f.split('/')[1]}.label")[0],
                              first[f])
