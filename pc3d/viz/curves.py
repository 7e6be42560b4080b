"""Training curves from metrics.jsonl, drawn with Pillow (no plotting library needed).

One panel per logged loss or metric: training records by optimiser step, `val/*` metrics of the epoch
records by epoch. Several runs share the panels, one colour per run, so `pc3d plot` compares them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pc3d.errors import InputError

METRICS_FILE = "metrics.jsonl"
# bookkeeping keys of the training records: not a loss or metric of the method
BOOKKEEPING = frozenset({"step", "epoch", "split", "lr", "weight_decay", "samples_per_s"})
# distinct on white and for the common colour-vision deficiencies come first
PALETTE = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#8c564b",
           "#7f7f7f", "#bcbd22"]

PANEL_W, PANEL_H = 420, 260
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 64, 16, 28, 34


@dataclass
class Curve:
    """One panel's points of one run; `axis` is "step" (training records) or "epoch" (validation)."""

    axis: str
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)


@dataclass
class RunCurves:
    label: str
    curves: dict[str, Curve]


def metrics_path(run: str | Path) -> Path:
    """A run folder or a metrics.jsonl file -> the metrics.jsonl to read; one-line errors otherwise."""
    path = Path(run)
    if path.is_dir():
        path = path / METRICS_FILE
        if not path.is_file():
            raise InputError(f"{run}: no {METRICS_FILE} in this folder (expected a run folder runs/NAME/TIME)")
    elif not path.exists():
        raise InputError(f"{run}: no such run folder or {METRICS_FILE} file")
    return path


def run_label(path: Path) -> str:
    """`name/time` of a run folder, from its metrics.jsonl path."""
    folder = path.parent.resolve()
    return f"{folder.parent.name}/{folder.name}" if folder.parent.name else folder.name


def read_curves(run: str | Path, label: str | None = None) -> RunCurves:
    """Parse metrics.jsonl; lines a killed job cut short are skipped, non-finite values are left out."""
    path = metrics_path(run)
    curves: dict[str, Curve] = {}
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{run}: cannot read {path.name} ({exc})") from None
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict) or "step" not in record:
            continue
        split = record.get("split")
        if split is None:  # a training log interval
            items = [(k, v) for k, v in record.items() if k not in BOOKKEEPING]
            axis, x = "step", record["step"]
        elif split == "epoch":  # the epoch's training means repeat the step curves: only validation is new
            items = [(k, v) for k, v in record.items() if k.startswith("val/")]
            axis, x = "epoch", record.get("epoch", 0) + 1  # epochs completed, as the progress lines count
        else:  # "resume" and other notes
            continue
        for key, value in items:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            curve = curves.setdefault(key, Curve(axis))
            curve.x.append(float(x))
            curve.y.append(float(value))
    if not curves:
        raise InputError(f"{run}: {path.name} has no logged losses or metrics yet")
    return RunCurves(label or run_label(path), curves)


def select_panels(runs: list[RunCurves], metrics: list[str] | None) -> list[str]:
    """Panel names in first-seen order (loss first), or the requested ones (`oa` also finds `val/oa`)."""
    available: list[str] = []
    for run in runs:
        available += [name for name in run.curves if name not in available]
    available.sort(key=lambda name: (name != "loss", name.startswith("val/")))  # stable otherwise
    if not metrics:
        # a method with one loss term logs it twice (`loss` and e.g. `chamfer`): one panel is enough
        return [name for name in available if name == "loss" or not all(
            run.curves.get(name) == run.curves.get("loss") for run in runs)]
    chosen = []
    for name in metrics:
        match = name if name in available else f"val/{name}" if f"val/{name}" in available else None
        if match is None:
            raise InputError(f"--metrics: no metric '{name}' in these runs (have: {', '.join(available)})")
        if match not in chosen:
            chosen.append(match)
    return chosen


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _ticks(low: float, high: float, count: int = 4) -> list[float]:
    """About `count` round values (1, 2, 5 x 10^k apart) between low and high."""
    span = high - low
    if span <= 0:
        return [low]
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _tick_text(value: float) -> str:
    if value == int(value) and abs(value) < 1e6:  # steps and epochs: 1500, not 1.5e+03
        return str(int(value))
    return f"{value:.3g}"


def _limits(values: list[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    if high == low:  # a flat curve or one point: give it some room
        pad = abs(low) * 0.05 or 1.0
        return low - pad, high + pad
    pad = (high - low) * 0.05
    return low - pad, high + pad


def _draw_panel(draw: Any, box: tuple[int, int], name: str, series: list[tuple[str, Curve]],
                fonts: tuple[Any, Any]) -> None:
    left, top = box
    title_font, tick_font = fonts
    x0, y0 = left + PAD_LEFT, top + PAD_TOP
    x1, y1 = left + PANEL_W - PAD_RIGHT, top + PANEL_H - PAD_BOTTOM
    axis = series[0][1].axis
    draw.text((x0, top + 6), name, fill="#000000", font=title_font)
    xs = [v for _, c in series for v in c.x]
    ys = [v for _, c in series for v in c.y]
    xlo, xhi = (min(xs), max(xs)) if min(xs) < max(xs) else (min(xs) - 1, max(xs) + 1)
    ylo, yhi = _limits(ys)

    def px(x: float, y: float) -> tuple[float, float]:
        return x0 + (x - xlo) / (xhi - xlo) * (x1 - x0), y1 - (y - ylo) / (yhi - ylo) * (y1 - y0)

    for value in _ticks(ylo, yhi):
        _, y = px(xlo, value)
        draw.line([(x0, y), (x1, y)], fill="#e6e6e6")
        text = _tick_text(value)
        width = draw.textlength(text, font=tick_font)
        draw.text((x0 - 6 - width, y - 6), text, fill="#444444", font=tick_font)
    for value in _ticks(xlo, xhi):
        if axis == "epoch" and value != int(value):
            continue  # fractions of an epoch are not logged
        x, _ = px(value, ylo)
        draw.line([(x, y0), (x, y1)], fill="#f0f0f0")
        text = _tick_text(value)
        draw.text((x - draw.textlength(text, font=tick_font) / 2, y1 + 4), text, fill="#444444", font=tick_font)
    draw.rectangle([x0, y0, x1, y1], outline="#888888")
    label = axis
    draw.text((x1 - draw.textlength(label, font=tick_font), y1 + 18), label, fill="#666666", font=tick_font)
    for colour, curve in series:
        points = [px(x, y) for x, y in zip(curve.x, curve.y, strict=True)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2, joint="curve")
        if len(points) <= 40:  # few points (validation epochs): mark each so one value is still visible
            for x, y in points:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)


def render(runs: list[RunCurves], metrics: list[str] | None = None, columns: int = 3) -> Any:
    """A PIL image: a legend row (run colours), then the panels in a grid."""
    from PIL import Image, ImageDraw

    names = select_panels(runs, metrics)
    columns = max(1, min(columns, len(names)))
    rows = math.ceil(len(names) / columns)
    fonts = (_font(14), _font(11))
    legend_h = 12 + 18 * math.ceil(len(runs) / 2)
    image = Image.new("RGB", (columns * PANEL_W, legend_h + rows * PANEL_H), "white")
    draw = ImageDraw.Draw(image)
    colours = [PALETTE[i % len(PALETTE)] for i in range(len(runs))]
    for i, (run, colour) in enumerate(zip(runs, colours, strict=True)):
        x = 12 + (i % 2) * (image.width // 2)
        y = 8 + 18 * (i // 2)
        draw.rectangle([x, y + 3, x + 18, y + 9], fill=colour)
        draw.text((x + 24, y - 1), run.label, fill="#000000", font=fonts[1])
    for index, name in enumerate(names):
        series = [(colour, run.curves[name]) for run, colour in zip(runs, colours, strict=True)
                  if name in run.curves]
        box = ((index % columns) * PANEL_W, legend_h + (index // columns) * PANEL_H)
        _draw_panel(draw, box, name, series, fonts)
    return image


def plot_runs(runs: list[str | Path], out: str | Path, metrics: list[str] | None = None) -> dict[str, Any]:
    """Read the runs, draw them, write `out` atomically (PNG); returns what was drawn."""
    from pc3d.io.atomic import atomic_write

    if not runs:
        raise InputError("no run given")
    loaded = [read_curves(run) for run in runs]
    labels = [r.label for r in loaded]
    if len(set(labels)) < len(labels):  # the same run twice, or two metrics.jsonl files named alike
        loaded = [RunCurves(str(run), r.curves) for run, r in zip(runs, loaded, strict=True)]
    image = render(loaded, metrics)
    out = Path(out)
    if out.is_dir():
        out = out / "curves.png"
    with atomic_write(out, "wb") as handle:
        image.save(handle, format="PNG")
    return {"out": str(out), "runs": [r.label for r in loaded],
            "panels": select_panels(loaded, metrics), "size": list(image.size)}
