"""Open-vocabulary 2D box detectors behind one small interface.

A detector takes a batch of RGB images and a list of part names and returns, per image, boxes (xyxy pixels),
scores, the index of the part each box names, and one feature vector per box (what PartSTAD's weight network
reads). Implementations: Grounding DINO (default, `hf://IDEA-Research/grounding-dino-tiny`; the box feature is
the decoder's last hidden state of the query that produced the box) and OWLv2 (the box feature is its class
embedding). GLIP is not packaged anywhere usable; a new detector subclasses `BoxDetector` and registers itself
with `@register_detector("name")`.

Grounding DINO can also be finetuned (`training_loss`: transformers' own loss on part boxes; `save_adapted`: a
transformers folder + `ADAPTED_SIDECAR`, found again by `adapted_detector_folder`); OWLv2 cannot, transformers has
no training loss for it. Weights come through `pc3d.foundation.hub` (local folder or hf:// spec, real
huggingface_hub cache). The image
processors are the PIL ones, which need no torchvision. `write_tiny_random_*` save small random-weight models
in the real format for tests and the `tiny-random` presets.
"""

from __future__ import annotations

import hashlib
import os
import string
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pc3d.errors import InputError

DEFAULT_GROUNDING_DINO = "hf://IDEA-Research/grounding-dino-tiny"
DEFAULT_OWLV2 = "hf://google/owlv2-base-patch16-ensemble"
TINY_GROUNDING_DINO_REPO = "pc3d-tiny-random/grounding-dino"
TINY_OWLV2_REPO = "pc3d-tiny-random/owlv2"


@dataclass
class Detections:
    """Boxes found in one image."""

    boxes: Tensor  # (K,4) float32 x1, y1, x2, y2 in pixels of the input image
    scores: Tensor  # (K,) float32 in [0, 1]
    labels: Tensor  # (K,) int64 index into the part names
    features: Tensor  # (K,D) float32 per-box feature

    @classmethod
    def empty(cls, feature_dim: int) -> Detections:
        return cls(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), torch.zeros(0, feature_dim))

    def __len__(self) -> int:
        return len(self.scores)


class BoxDetector(ABC):
    """Text-prompted box detector: `detect(images, parts)` -> one `Detections` per image."""

    feature_dim: int

    @abstractmethod
    def detect(self, images: np.ndarray, parts: Sequence[str], threshold: float) -> list[Detections]:
        """images (V,H,W,3) uint8; boxes with score >= threshold (after per-part NMS)."""


DETECTORS: dict[str, type[BoxDetector]] = {}


def register_detector(name: str) -> Callable[[type[BoxDetector]], type[BoxDetector]]:
    def wrap(cls: type[BoxDetector]) -> type[BoxDetector]:
        DETECTORS[name] = cls
        return cls

    return wrap


ADAPTED_SIDECAR = "pc3d_detector.json"  # beside a detector saved by `pc3d finetune partstad-detector`


def adapted_detector_info(folder: str | os.PathLike) -> dict[str, Any]:
    """The sidecar `pc3d finetune partstad-detector` saved beside a detector (kind, weights sha1, category, parts,
    render size); {} when `folder` holds none or it cannot be read."""
    import json

    sidecar = Path(folder) / ADAPTED_SIDECAR
    try:
        info = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def adapted_detector_folder(path: str, kind: str) -> str:
    """The transformers folder of a detector adapted by `pc3d finetune partstad-detector`: `path` is that
    folder or the run folder holding it as detector/ (`latest` links resolve)."""
    from pc3d.runs import resolve_latest

    root = resolve_latest(path)
    for folder in (root, root / "detector"):
        if (folder / ADAPTED_SIDECAR).is_file():
            saved = adapted_detector_info(folder).get("kind")
            if saved != kind:
                raise InputError(f"detector weights {path}: a '{saved}' detector, but detector.kind is '{kind}'")
            return str(folder)
    raise InputError(f"detector weights {path}: not an adapted detector (expected the run folder of `pc3d "
                     f"finetune partstad-detector` or its detector/ folder with {ADAPTED_SIDECAR})")


def adapted_detector_fingerprint(path: str, kind: str) -> str:
    """What identifies an adapted detector's weights (their sha1, from its sidecar): cache keys use it, since a
    path such as runs/partstad-detector/latest names another detector after the next run."""
    folder = adapted_detector_folder(path, kind)
    return str(adapted_detector_info(folder).get("weights_sha1") or (Path(folder) / ADAPTED_SIDECAR).stat().st_mtime_ns)


def build_detector(kind: str, spec: str, device: str | torch.device = "cpu", batch_size: int = 10,
                   nms_iou: float = 0.5, max_boxes: int = 50) -> BoxDetector:
    if kind not in DETECTORS:
        raise InputError(f"unknown detector '{kind}' (choose from {', '.join(sorted(DETECTORS))})")
    return DETECTORS[kind](spec, device=device, batch_size=batch_size, nms_iou=nms_iou, max_boxes=max_boxes)


def caption_spans(parts: Sequence[str], offsets: Sequence[tuple[int, int]]) -> tuple[str, list[list[int]]]:
    """GLIP-style caption "a . b . c ." and, for each part, the token positions whose characters lie in it."""
    caption, spans = "", []
    for name in parts:
        spans.append((len(caption), len(caption) + len(name)))
        caption += f"{name} . "
    tokens: list[list[int]] = [[] for _ in parts]
    for position, (start, end) in enumerate(offsets):
        if end <= start:
            continue  # special tokens have empty offsets
        for p, (lo, hi) in enumerate(spans):
            if start >= lo and end <= hi:
                tokens[p].append(position)
    return caption.strip(), tokens


def nms_per_label(boxes: Tensor, scores: Tensor, labels: Tensor, iou: float) -> Tensor:
    """Kept indices (best first) of per-label 2-D NMS, through pc3d.ops.boxes (boxes lifted to unit-z 3-D)."""
    from pc3d.ops.boxes import box_from_minmax, nms_3d

    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.long)
    zeros, ones = boxes.new_zeros(len(boxes), 1), boxes.new_ones(len(boxes), 1)
    lifted = box_from_minmax(torch.cat([boxes[:, :2], zeros, boxes[:, 2:], ones], 1).double())
    return nms_3d(lifted, scores.double(), iou, labels)


def _finish(boxes: Tensor, scores: Tensor, labels: Tensor, features: Tensor, threshold: float, nms_iou: float,
            max_boxes: int, width: int, height: int) -> Detections:
    keep = scores >= threshold
    boxes, scores, labels, features = boxes[keep], scores[keep], labels[keep], features[keep]
    boxes = torch.stack([boxes[:, 0].clamp(0, width), boxes[:, 1].clamp(0, height),
                         boxes[:, 2].clamp(0, width), boxes[:, 3].clamp(0, height)], 1)
    valid = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)  # at least a pixel
    boxes, scores, labels, features = boxes[valid], scores[valid], labels[valid], features[valid]
    kept = nms_per_label(boxes, scores, labels, nms_iou)[:max_boxes]
    return Detections(boxes[kept].float(), scores[kept].float(), labels[kept].long(), features[kept].float())


def _cxcywh_to_xyxy(boxes: Tensor, width: int, height: int) -> Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height], -1)


@register_detector("grounding-dino")
class GroundingDinoDetector(BoxDetector):
    """Grounding DINO: a part's score is the max sigmoid logit over its caption tokens."""

    def __init__(self, spec: str = DEFAULT_GROUNDING_DINO, device: str | torch.device = "cpu", batch_size: int = 10,
                 nms_iou: float = 0.5, max_boxes: int = 50) -> None:
        from transformers import AutoTokenizer, GroundingDinoForObjectDetection
        from transformers.models.grounding_dino.image_processing_pil_grounding_dino import (
            GroundingDinoImageProcessorPil,
        )

        from pc3d.foundation.hub import load_pretrained, load_processor

        self.model = load_pretrained(GroundingDinoForObjectDetection, spec, device=device)
        self.image_processor = load_processor(GroundingDinoImageProcessorPil, spec)
        self.tokenizer = load_processor(AutoTokenizer, spec)
        self.device = torch.device(device)
        self.feature_dim = int(self.model.config.d_model)
        self.batch_size, self.nms_iou, self.max_boxes = batch_size, nms_iou, max_boxes

    def _caption(self, parts: Sequence[str]) -> tuple[str, list[list[int]]]:
        names = [p.lower() for p in parts]  # the tokenizers of Grounding DINO are uncased
        caption, _ = caption_spans(names, [])
        _, tokens = caption_spans(names, self.tokenizer(caption, return_offsets_mapping=True)["offset_mapping"])
        if any(not t for t in tokens):
            missing = [p for p, t in zip(parts, tokens, strict=True) if not t]
            raise InputError(f"part names {missing} produce no tokens for the detector")
        if any("." in n or "?" in n for n in names):  # they split phrases (transformers' SPECIAL_TOKENS)
            raise InputError(f"part names must not contain '.' or '?': {', '.join(parts)}")
        return caption, tokens

    def _inputs(self, chunk: list[np.ndarray], caption: str) -> dict[str, Tensor]:
        pixels = self.image_processor(chunk, return_tensors="pt")
        text = self.tokenizer([caption] * len(chunk), return_tensors="pt", padding=True)
        inputs = {"pixel_values": pixels["pixel_values"], "pixel_mask": pixels["pixel_mask"],
                  "input_ids": text["input_ids"], "attention_mask": text["attention_mask"],
                  "token_type_ids": text.get("token_type_ids", torch.zeros_like(text["input_ids"]))}
        return {k: v.to(self.device) for k, v in inputs.items()}

    def training_loss(self, images: np.ndarray, parts: Sequence[str],
                      targets: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, dict[str, float]]:
        """transformers' own Grounding DINO training loss of a batch of views (the model's train/eval mode and
        frozen parameters are the caller's). targets: per image (boxes (K,4) xyxy pixels, part indices (K,)).
        The loss wants boxes as cxcywh normalised by the image size, and class labels that index the caption's
        phrases in order ("arm . seat ." -> arm 0, seat 1: `build_label_maps` groups the tokens between the
        delimiter ids of modeling_grounding_dino.SPECIAL_TOKENS)."""
        caption, _ = self._caption(parts)
        height, width = images.shape[1:3]
        scale = torch.tensor([width, height, width, height], dtype=torch.float32)
        labels = []
        for boxes, classes in targets:
            xyxy = torch.as_tensor(boxes, dtype=torch.float32) / scale
            cxcywh = torch.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2,
                                  xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]], -1)
            labels.append({"class_labels": torch.as_tensor(classes, dtype=torch.long).to(self.device),
                           "boxes": cxcywh.to(self.device)})
        out = self.model(**self._inputs(list(images), caption), labels=labels)
        return out.loss, {k: float(v.detach()) for k, v in out.loss_dict.items()}

    def save_adapted(self, folder: str | os.PathLike, info: dict[str, Any]) -> Path:
        """The model, tokenizer and image processor as a transformers folder (safetensors) with pc3d's sidecar
        `ADAPTED_SIDECAR` (what was adapted, on which parts); loads back through `build_detector`."""
        import json

        folder = Path(folder)
        self.model.save_pretrained(str(folder), safe_serialization=True)
        self.tokenizer.save_pretrained(str(folder))
        self.image_processor.save_pretrained(str(folder))
        digest = hashlib.sha1()
        for weights in sorted(folder.glob("*.safetensors")):
            with open(weights, "rb") as handle:
                while block := handle.read(1 << 24):
                    digest.update(block)
        sidecar = {"kind": "grounding-dino", "weights_sha1": digest.hexdigest(), **info}
        (folder / ADAPTED_SIDECAR).write_text(json.dumps(sidecar, indent=2) + "\n")
        return folder

    @torch.no_grad()
    def detect(self, images: np.ndarray, parts: Sequence[str], threshold: float) -> list[Detections]:
        caption, tokens = self._caption(parts)
        height, width = images.shape[1:3]
        results = []
        for start in range(0, len(images), self.batch_size):
            chunk = list(images[start:start + self.batch_size])
            out = self.model(**self._inputs(chunk, caption))
            probs = out.logits.sigmoid().float().cpu()  # (B,Q,max_text_len)
            part_scores = torch.stack([probs[..., t].amax(-1) for t in tokens], -1)  # (B,Q,C)
            scores, labels = part_scores.max(-1)
            boxes = _cxcywh_to_xyxy(out.pred_boxes.float().cpu(), width, height)
            features = out.last_hidden_state.float().cpu()
            for b in range(len(chunk)):
                results.append(_finish(boxes[b], scores[b], labels[b], features[b], threshold, self.nms_iou,
                                       self.max_boxes, width, height))
        return results


@register_detector("owlv2")
class Owlv2Detector(BoxDetector):
    """OWLv2 with one text query per part; the box feature is the class embedding of its patch."""

    def __init__(self, spec: str = DEFAULT_OWLV2, device: str | torch.device = "cpu", batch_size: int = 10,
                 nms_iou: float = 0.5, max_boxes: int = 50) -> None:
        from transformers import AutoTokenizer, Owlv2ForObjectDetection
        from transformers.models.owlv2.image_processing_pil_owlv2 import Owlv2ImageProcessorPil

        from pc3d.foundation.hub import load_pretrained, load_processor

        self.model = load_pretrained(Owlv2ForObjectDetection, spec, device=device)
        self.image_processor = load_processor(Owlv2ImageProcessorPil, spec)
        self.tokenizer = load_processor(AutoTokenizer, spec)
        self.device = torch.device(device)
        self.feature_dim = int(self.model.config.vision_config.hidden_size)
        self.batch_size, self.nms_iou, self.max_boxes = batch_size, nms_iou, max_boxes

    @torch.no_grad()
    def detect(self, images: np.ndarray, parts: Sequence[str], threshold: float) -> list[Detections]:
        height, width = images.shape[1:3]
        side = max(height, width)  # OWLv2 pads to a square; boxes are relative to it
        text = self.tokenizer([f"a photo of a {p}" for p in parts], return_tensors="pt", padding="max_length",
                              truncation=True)
        results = []
        for start in range(0, len(images), self.batch_size):
            chunk = list(images[start:start + self.batch_size])
            pixels = self.image_processor(chunk, return_tensors="pt")["pixel_values"].to(self.device)
            ids = text["input_ids"].repeat(len(chunk), 1).to(self.device)
            mask = text["attention_mask"].repeat(len(chunk), 1).to(self.device)
            out = self.model(input_ids=ids, attention_mask=mask, pixel_values=pixels)
            scores, labels = out.logits.sigmoid().float().cpu().max(-1)  # (B,P)
            boxes = _cxcywh_to_xyxy(out.pred_boxes.float().cpu(), side, side)
            features = out.class_embeds.float().cpu()
            for b in range(len(chunk)):
                results.append(_finish(boxes[b], scores[b], labels[b], features[b], threshold, self.nms_iou,
                                       self.max_boxes, width, height))
        return results


# ---------------------------------------------------------------- tiny random-weight models (tests, presets)

TINY_WORDS = ("arm", "back", "leg", "seat", "wheel", "lid", "handle", "door", "drawer", "screen", "keyboard",
              "base", "shade", "body", "tabletop", "a", "photo", "of")


# bert-base-uncased ids that transformers' Grounding DINO hard-codes (modeling_grounding_dino.SPECIAL_TOKENS):
# [CLS] [SEP] "." "?" delimit the caption's phrases for the text self-attention mask and for `build_label_maps`,
# which turns a training target's class index into caption tokens; [PAD] = 0 ends a phrase there too
BERT_SPECIAL_IDS = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103, ".": 1012, "?": 1029}


def tiny_bert_vocab() -> list[str]:
    """A word-level BERT vocabulary with the special tokens at bert-base-uncased's ids (other slots unused)."""
    words = [*TINY_WORDS, *string.ascii_lowercase, *(f"##{c}" for c in string.ascii_lowercase)]
    size = max(BERT_SPECIAL_IDS.values()) + 1
    vocab: list[str | None] = [None] * size
    for token, index in BERT_SPECIAL_IDS.items():
        vocab[index] = token
    free = (i for i, token in enumerate(vocab) if token is None)
    # no duplicates ("a" is a word and a letter): a repeated token leaves a hole in the saved vocabulary, and
    # the tokenizers library then prints a warning on stdout, into `--json` output
    for word in dict.fromkeys(words):
        vocab[next(free)] = word
    return [token if token is not None else f"[unused{i}]" for i, token in enumerate(vocab)]


def tiny_grounding_dino(image_size: int = 128, seed: int = 0) -> tuple[Any, Any]:
    """A ~0.2 M-parameter random Grounding DINO (Swin + BERT) and its processor (PIL image processor +
    a word-level BERT vocabulary with bert-base-uncased's special-token ids, so phrase masks and training
    targets split the caption as for the real model); labels it predicts are meaningless. Images are resized
    to 128 px so the coarsest feature level stays above 1x1 (GroupNorm refuses one value per group in
    single-image batches)."""
    import tempfile

    from transformers import BertConfig, BertTokenizer, GroundingDinoConfig, GroundingDinoForObjectDetection, SwinConfig
    from transformers.models.grounding_dino.image_processing_pil_grounding_dino import GroundingDinoImageProcessorPil
    from transformers.models.grounding_dino.processing_grounding_dino import GroundingDinoProcessor

    torch.manual_seed(seed)
    vocab = tiny_bert_vocab()
    swin = SwinConfig(image_size=image_size, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                      window_size=2, out_features=["stage2", "stage3", "stage4"])
    bert = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=64)
    # two decoder layers: transformers ties the box heads of layers >= 1 to layer 0's
    config = GroundingDinoConfig(backbone_config=swin, text_config=bert, num_queries=30, encoder_layers=1,
                                 decoder_layers=2, d_model=32, encoder_ffn_dim=32, decoder_ffn_dim=32,
                                 encoder_attention_heads=2, decoder_attention_heads=2, encoder_n_points=2,
                                 decoder_n_points=2, max_text_len=32)
    model = GroundingDinoForObjectDetection(config).eval()
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file = Path(tmp) / "vocab.txt"
        vocab_file.write_text("\n".join(vocab) + "\n")
        tokenizer = BertTokenizer(str(vocab_file))
    images = GroundingDinoImageProcessorPil(size={"shortest_edge": image_size, "longest_edge": image_size})
    return model, GroundingDinoProcessor(image_processor=images, tokenizer=tokenizer)


def tiny_owlv2(image_size: int = 64, seed: int = 0) -> tuple[Any, Any]:
    """A random OWLv2 (~20 k parameters) and its processor (PIL image processor + letter-level CLIP BPE)."""
    from transformers import CLIPTokenizer, Owlv2Config, Owlv2ForObjectDetection, Owlv2Processor
    from transformers.models.owlv2.image_processing_pil_owlv2 import Owlv2ImageProcessorPil

    torch.manual_seed(seed)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for piece in string.ascii_lowercase + ".":
        vocab.setdefault(piece, len(vocab))
        vocab.setdefault(piece + "</w>", len(vocab))
    for word in TINY_WORDS:
        vocab.setdefault(word + "</w>", len(vocab))
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=16)
    config = Owlv2Config(
        text_config={"vocab_size": len(vocab), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 16, "bos_token_id": 0, "eos_token_id": 1,
                     "pad_token_id": 1},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": image_size, "patch_size": 16},
        projection_dim=16)
    model = Owlv2ForObjectDetection(config).eval()
    images = Owlv2ImageProcessorPil(size={"height": image_size, "width": image_size})
    return model, Owlv2Processor(image_processor=images, tokenizer=tokenizer)


TINY_BUILDERS: dict[str, tuple[str, Callable[..., tuple[Any, Any]]]] = {
    "grounding-dino": (TINY_GROUNDING_DINO_REPO, tiny_grounding_dino),
    "owlv2": (TINY_OWLV2_REPO, tiny_owlv2),
}


def write_tiny_random_detector(kind: str, cache_dir: str | os.PathLike | None = None,
                               repo_id: str | None = None) -> str:
    """Save the tiny random `kind` detector into the huggingface_hub cache (unless there); returns its hf:// spec."""
    from pc3d.engine.hub import hub_cache_dir
    from pc3d.foundation.hub import save_to_hub_cache

    default_repo, builder = TINY_BUILDERS[kind]
    repo_id = repo_id or default_repo
    cache = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    if not (repo / "refs" / "main").is_file() or not _tiny_is_current(kind, repo):
        model, processor = builder()
        save_to_hub_cache(model, processor, repo_id, cache)
    return f"hf://{repo_id}"


def _tiny_is_current(kind: str, repo: Path) -> bool:
    """False for a tiny Grounding DINO cached before its vocabulary took bert-base-uncased's special-token ids
    (its phrases would not split, and training targets would map to the whole caption)."""
    if kind != "grounding-dino":
        return True
    vocab = repo / "snapshots" / (repo / "refs" / "main").read_text().strip() / "vocab.txt"
    if not vocab.is_file():
        return False
    lines = vocab.read_text().splitlines()
    return all(index < len(lines) and lines[index] == token for token, index in BERT_SPECIAL_IDS.items())
