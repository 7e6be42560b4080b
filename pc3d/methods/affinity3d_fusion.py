"""MSFSKD of Affinity3D (Eqs. 11-17): multi-scale fusion-to-single knowledge distillation from the 2-D branch.

For every encoder scale s (the paper's F_3D^s, here the SPVCNN stage features projected to `hidden`):
  Eqs. 11-12  F_fuse^s = F_2D^s + ReLU(C ⊙ sigmoid(G C)),  C = Fc([F_2D^s, ReLU(L F_3D^s)])
              (the "+ F_2D" residual is also 2DPASS's `fuse_pred = feat_cat + img_feat`)
  Eqs. 13-14  P_3D^s, P_fuse^s: text-embedding classifiers (scale * normalise(W f) . EMB^T), not free MLPs
  Eqs. 15-16  L_xm^s = KL(P_fuse^s || P_3D^s) over *every* visible point, labelled or not (2DPASS's released code
              also distils every image point: `point2img_index` does not look at labels)
  losses      sum_s [L_3d^s + lambda_2d / S L_2d^s + lambda_xm / S L_xm^s] + L_2d(classifier on [F_fuse^1..S])
              - the per-scale 3-D losses are summed, as 2DPASS sums them (not averaged)
  Eq. 17      the final 3-D classifier reads the concatenated layers (see `ZeroShotSeg.point_features`)
Where the text embeddings are not given (model.text_classifier = false) the heads are 2DPASS's MLPs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pc3d.data.readers.semantickitti import NUM_CLASSES

LossFn = Callable[[Tensor, Tensor], Tensor]


class ClassHead(nn.Module):
    """Logits over the 20 train ids from features (M, cin).

    With `text_dim`: a text-embedding classifier, exp(t) * normalise(W f) . EMB^T with a learnt temperature t
    (initialised at CLIP's 1/0.07, capped at 100 as CLIP caps it); the normalised class embeddings EMB are passed to
    `forward` so that all heads share the one buffer of the model. Without: 2DPASS's Linear-ReLU-Linear head."""

    def __init__(self, cin: int, text_dim: int | None, hidden: int = 128, classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.text_dim = text_dim
        if text_dim is None:
            self.mlp = nn.Sequential(nn.Linear(cin, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, classes))
        else:
            self.project = nn.Linear(cin, text_dim)
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, features: Tensor, text: Tensor | None) -> Tensor:
        if self.text_dim is None:
            return self.mlp(features)
        assert text is not None, "a text-embedding head needs the class embeddings"
        projected = F.normalize(self.project(features), dim=1)
        return self.logit_scale.exp().clamp_max(100) * projected @ text.t()


class GatedFusion(nn.Module):
    """Eqs. 11-12: F_fuse = F_2D + ReLU(C ⊙ sigmoid(G C)), C = Fc([F_2D, ReLU(L F_3D)])."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.learner = nn.Linear(hidden, hidden)  # 2DPASS `leaners`: adapts the 3-D feature to the image's
        self.fuse = nn.Linear(2 * hidden, hidden)  # `fcs1`
        self.gate = nn.Linear(hidden, hidden)  # `fcs2`

    def forward(self, f_3d: Tensor, f_2d: Tensor) -> Tensor:
        c = self.fuse(torch.cat([f_2d, F.relu(self.learner(f_3d))], dim=1))
        return f_2d + F.relu(c * torch.sigmoid(self.gate(c)))


def distillation_kl(point_logits: Tensor, fuse_logits: Tensor) -> Tensor:
    """Eqs. 15-16 on the given rows (all visible points): KL(softmax(fuse) || softmax(3-D)), 2DPASS's
    `F.kl_div(log_softmax(pts), softmax(fuse))` with its default 'mean' over all elements. The fused side is a
    fixed teacher here (detached): the distillation runs fusion -> single, it should not pull the fusion towards
    the weaker 3-D prediction (2DPASS's released code leaves it attached; see the report of issue 9)."""
    if point_logits.shape[0] == 0:
        return point_logits.sum() * 0.0
    return F.kl_div(F.log_softmax(point_logits, dim=1), F.softmax(fuse_logits, dim=1).detach(),
                    reduction="none").mean()


class MSFSKD(nn.Module):
    """The per-scale heads, fusions and the 2-D classifier; `forward` returns the named loss terms."""

    def __init__(self, hidden: int, scales: int, text_dim: int | None, lambda_seg2d: float, lambda_xm: float
                 ) -> None:
        super().__init__()
        self.scales, self.lambda_seg2d, self.lambda_xm = scales, lambda_seg2d, lambda_xm
        self.heads_3d = nn.ModuleList([ClassHead(hidden, text_dim) for _ in range(scales)])  # Eq. 13
        self.fusions = nn.ModuleList([GatedFusion(hidden) for _ in range(scales)])  # Eqs. 11-12
        self.heads_fuse = nn.ModuleList([ClassHead(hidden, text_dim) for _ in range(scales)])  # Eq. 14
        self.classifier_2d = ClassHead(scales * hidden, text_dim)  # 2DPASS's 2-D classifier on all fused scales

    def forward(self, point_feats: list[Tensor], image_feats: list[Tensor], visible: Tensor, labels: Tensor,
                text: Tensor | None, loss: LossFn) -> dict[str, Tensor]:
        """point_feats: S tensors (N, hidden) for every point; image_feats: S tensors (M, hidden) at the M visible
        points (`visible` (N,) bool, in order); labels (N,) with 0 = ignore; `loss(logits, labels)` = seg loss."""
        vis_labels = labels[visible]
        loss_3d, loss_2d, loss_xm, fused_all = [], [], [], []
        for s in range(self.scales):
            point_logits = self.heads_3d[s](point_feats[s], text)
            loss_3d.append(loss(point_logits, labels))  # on every labelled point, visible or not
            fused = self.fusions[s](point_feats[s][visible], image_feats[s])
            fused_all.append(fused)
            fuse_logits = self.heads_fuse[s](fused, text)
            loss_2d.append(loss(fuse_logits, vis_labels))
            loss_xm.append(distillation_kl(point_logits[visible], fuse_logits))
        cls_2d = self.classifier_2d(torch.cat(fused_all, dim=1), text)
        return {"seg_3d_scales": torch.stack(loss_3d).sum(),  # summed over scales, as 2DPASS does
                "seg_2d": self.lambda_seg2d / self.scales * torch.stack(loss_2d).sum(),
                "xm": self.lambda_xm / self.scales * torch.stack(loss_xm).sum(),
                "seg_2d_cls": loss(cls_2d, vis_labels)}
