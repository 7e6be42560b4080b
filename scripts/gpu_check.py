"""One prepared GPU check of pc3d for a bare CUDA machine lent for minutes (`make gpu-check`).

    python scripts/gpu_check.py [--dry-run] [--out gpu-check.json] [--budget-s 480]

The target has Python 3.12, torch, Triton, transformers, scipy, typer, rich, pyyaml, safetensors and
huggingface_hub, but not pydantic, open3d, spconv or pc3d itself, and it can download nothing. So:
`scripts/gpu-wheels.sh` (run beforehand where there is a network) fills `.whl/`; this script installs those
wheels into a temporary folder with pip's `--target`, links pc3d's three top-level packages into it
(`pc3d`, `pc3d_kernels` = `kernels/`, `pc3d_presets` = `presets/`) and runs every step as a child process
with PYTHONPATH=<that folder>. The repository root itself is kept off the children's path: it would expose
`kernels/` under the name of Hugging Face's `kernels` package, and the links already reach everything.

Each step has its own time budget; a step whose budget no longer fits in what is left of `--budget-s` is
skipped with a line. At the end: one summary table on stdout and a JSON report (`--out`) with the versions,
the device, every figure and every step's status and stderr tail. Exit 0 when no step failed, 1 otherwise,
2 (one `pc3d: error:` line, no report) when there is no CUDA device. `--dry-run` prints the plan and the
CUDA-only code paths of pc3d that no step reaches, and needs no GPU.

Imports: the standard library only, and torch inside the functions that need it (the dry run needs none).
The step bodies that are not a bench script or a CLI command live here too (`--step NAME`, run by the
parent in a child process), so that one file is all that has to be kept in sync.
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tokenize
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WHEELS = ROOT / ".whl"
TOTAL_BUDGET_S = 480.0  # 8 minutes: a device command may run 10, and the machine's start and copies need the rest
TAIL_CHARS = 3000
BACKENDS = ("torch", "spconv", "spconv-triton")

# The quickstarts of README.md's method table, one per method (each with `--gpus 1` or, for pseudolabel,
# which has no --gpus, `--device cuda`). `train.epochs=1` keeps each to seconds on a GPU.
QUICKSTARTS: dict[str, list[str]] = {
    "point-mae": ["pretrain", "point-mae", "--preset", "quickstart"],
    "geomask3d": ["pretrain", "geomask3d", "--preset", "quickstart"],
    "point-mode": ["pretrain", "point-mode", "--preset", "quickstart"],
    "pointins": ["pretrain", "pointins", "--preset", "quickstart"],
    "affinity3d-semantickitti": ["finetune", "affinity3d-semantickitti", "--preset", "quickstart"],
    "affinity3d-oracle": ["pseudolabel", "affinity3d", "--preset", "oracle"],
    "partstad-fewshot": ["finetune", "partstad-fewshot", "--preset", "quickstart"],
}

# What each kind of step exercises in pc3d, for the dry run's list of CUDA-only code nobody reaches.
# An entry is a path (relative to the repository) or "path::qualified.function" (that function and its nested
# ones). Lines matching `single_gpu_blind` are only reached with more than one process (DDP, NCCL).
ENGINE = ("pc3d/engine/trainer.py", "pc3d/engine/checkpoint.py", "pc3d/engine/distributed.py::plan_topology",
          "pc3d/engine/distributed.py::init_worker", "pc3d/config/base.py")
REACHES: dict[str, tuple[str, ...]] = {
    "kernels": ("kernels", "pc3d/ops/_common.py", "pc3d/ops/sampling.py", "pc3d/ops/neighbors.py",
                "pc3d/ops/chamfer.py", "pc3d/ops/raster.py"),
    "ops": ("kernels", "pc3d/ops/_common.py", "pc3d/ops/sampling.py", "pc3d/ops/neighbors.py",
            "pc3d/ops/chamfer.py", "pc3d/ops/raster.py", "pc3d/ops/camera.py"),
    "train-step": ("pc3d/models/point_mae.py",),
    "ptv3": ("pc3d/models/ptv3.py", "pc3d/models/sparse.py", "pc3d/models/sparse", "pc3d/ops/grid.py",
             "pc3d/ops/scatter.py", "pc3d/ops/serialization.py"),
    "pointins": ("pc3d/methods/pointins.py", "pc3d/methods/sonata.py", "pc3d/engine/method.py",
                 "pc3d/engine/data.py", "pc3d/ops/clustering.py", "pc3d/models/ptv3.py"),
    "qs:point-mae": ENGINE + ("pc3d/methods/point_mae.py", "pc3d/models/point_mae.py", "pc3d/cli"),
    "qs:geomask3d": ENGINE + ("pc3d/methods/geomask3d.py", "pc3d/models/geomask3d.py", "pc3d/cli"),
    "qs:point-mode": ENGINE + ("pc3d/methods/point_mode.py", "pc3d/models/point_mode.py", "pc3d/cli"),
    "qs:pointins": ENGINE + ("pc3d/methods/pointins.py", "pc3d/methods/sonata.py", "pc3d/cli"),
    "qs:affinity3d-semantickitti": ENGINE + ("pc3d/methods/zeroshot_seg.py", "pc3d/models/spvcnn.py",
                                             "pc3d/cli"),
    "qs:affinity3d-oracle": ("pc3d/methods/affinity3d.py", "pc3d/methods/affinity3d_oracle.py",
                             "pc3d/methods/affinity3d_queue.py", "pc3d/engine/device.py", "pc3d/cli"),
    "qs:partstad-fewshot": ENGINE + tuple(f"pc3d/methods/partstad{part}.py" for part in (
        "", "_detections", "_io", "_oracle", "_pipeline", "_render", "_superpoints", "_voting"))
    + ("pc3d/engine/device.py", "pc3d/cli"),
    "nccl": ENGINE + ("pc3d/engine/distributed.py",),
}
MULTI_PROCESS_ONLY = re.compile(r"SyncBatchNorm|nccl|device_ids|ctx\.distributed|ids = \[self\.device")
CUDA_PATTERNS = {
    ".cuda": re.compile(r"\.cuda\b"),
    'device.type == "cuda"': re.compile(r"""\btype\s*==\s*["']cuda["']"""),
    "torch.cuda": re.compile(r"\btorch\.cuda\b"),
    "is_cuda": re.compile(r"\bis_cuda\b"),
    "amp": re.compile(r"\bamp\b"),
    "nccl": re.compile(r"nccl", re.IGNORECASE),
    "SyncBatchNorm": re.compile(r"SyncBatchNorm"),
}


class CheckError(Exception):
    """A condition that ends the check before any step (printed as one `pc3d: error:` line, exit 2)."""


# ----------------------------------------------------------------------------- the plan


@dataclass
class Step:
    name: str
    budget_s: float
    what: str  # one line for the dry run
    reaches: str  # key of REACHES
    command: Callable[[Context], list[str] | str]  # argv, or a reason to skip
    parse: Callable[[str], dict[str, Any]] = lambda out: last_json(out) or {}
    judge: Callable[[Context, dict[str, Any]], str | None] = lambda ctx, figures: None  # a failure reason
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Context:
    site: Path  # pip --target folder + links to pc3d's packages
    work: Path  # the children's current folder (run folders, caches)
    gpus: int
    python: str = sys.executable

    def child_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update({"PYTHONPATH": str(self.site), "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1",
                    "HF_HOME": str(self.work / "hf"), "PC3D_DEBUG": "1", "MPLBACKEND": "Agg"})
        env.update(extra or {})
        return env


def this_script(*args: str) -> Callable[[Context], list[str]]:
    return lambda ctx: [ctx.python, str(Path(__file__).resolve()), *args]


def bench(script: str, *args: str) -> Callable[[Context], list[str]]:
    return lambda ctx: [ctx.python, str(ROOT / "bench" / script), *args]


def quickstart_command(name: str) -> Callable[[Context], list[str]]:
    argv = QUICKSTARTS[name]

    def command(ctx: Context) -> list[str]:
        extra = ["--device", "cuda"] if argv[0] == "pseudolabel" else ["--gpus", "1", "--set", "train.epochs=1"]
        return [ctx.python, "-m", "pc3d", *argv, *extra, "--json", "--out", str(ctx.work / "runs")]

    return command


def nccl_command(ctx: Context) -> list[str] | str:
    if ctx.gpus < 2:
        return f"needs 2 GPUs, {ctx.gpus} visible"
    return [ctx.python, "-m", "pc3d", *QUICKSTARTS["point-mae"], "--gpus", "2", "--set", "train.epochs=1",
            "--json", "--out", str(ctx.work / "runs-nccl")]


def plan() -> list[Step]:
    """The steps in order of importance: when time runs short, the last ones are the ones skipped."""
    steps = [
        Step("kernels", 75, "every Triton kernel vs its torch twin on CUDA, tiny to large sizes, + speed",
             "kernels", this_script("--step", "kernels")),
        Step("train-step", 45, "bench/train_step.py --device cuda --amp (bf16): utilisation vs bf16/fp32 matmul",
             "train-step", bench("train_step.py", "--device", "cuda", "--amp", "--batch", "128", "--steps", "10",
                                 "--matmul", "8192", "--json"),
             judge=lambda ctx, f: None if f.get("utilisation_bf16") else "no utilisation figure"),
    ]
    for backend in BACKENDS:
        steps.append(Step(f"ptv3[{backend}]", 45,
                          f"PTv3 default size fwd+bwd (bf16 autocast), PC3D_SPARSE_BACKEND={backend}", "ptv3",
                          this_script("--step", "ptv3", "--backend", backend),
                          env={"PC3D_SPARSE_BACKEND": backend}))
    steps += [
        Step("ops", 60, "bench/ops.py --device cuda (full sizes; open3d references only where installed)", "ops",
             bench("ops.py", "--device", "cuda"), parse=parse_ops),
        Step("pointins", 60, "bench/pointins.py --device cuda --size default --points 60000 --table9", "pointins",
             bench("pointins.py", "--device", "cuda", "--size", "default", "--points", "60000", "--table9",
                   "--steps", "5"), parse=parse_pointins),
    ]
    for name in QUICKSTARTS:
        how = " --device cuda" if QUICKSTARTS[name][0] == "pseudolabel" else " --gpus 1, 1 epoch"
        steps.append(Step(f"qs:{name}", 30, "python -m pc3d " + " ".join(QUICKSTARTS[name]) + how,
                          f"qs:{name}", quickstart_command(name), parse=parse_quickstart, judge=judge_quickstart))
    steps.append(Step("nccl", 60, "point-mae quickstart with --gpus 2 (NCCL), only with 2 GPUs", "nccl",
                      nccl_command, parse=parse_quickstart, judge=judge_quickstart))
    return steps


# ----------------------------------------------------------------------------- parsing the children's output


def last_json(text: str) -> dict[str, Any] | None:
    """The last line of `text` that is a JSON object (the children print their result last)."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    return None


def parse_ops(out: str) -> dict[str, Any]:
    """bench/ops.py's table: `op size... pc3d_ms ref_ms ratio reference` -> {op: {pc3d_ms, ref_ms}}."""
    rows: dict[str, Any] = {}
    for line in out.splitlines():
        match = re.match(r"^(chamfer fwd\+bwd|\S+(?: r=\d)?)\s+.*?\s(\d+\.\d+|nan)\s+(\d+\.\d+|nan)\s+(\S+)\s\s", line)
        if match:  # nan (no open3d reference) becomes null: JSON has no NaN
            ref = float(match.group(3))
            rows[match.group(1)] = {"pc3d_ms": float(match.group(2)), "ref_ms": None if ref != ref else ref}
    return {"ops": rows} if rows else {}


def parse_pointins(out: str) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for key, pattern in (("base_ms", r"base SSL step\s+([\d.]+) ms"), ("pointins_ms", r"PointINS step\s+([\d.]+) ms"),
                         ("overhead_pct", r"overhead\s+(-?[\d.]+) %"), ("odr_ms", r"ODR alone\s+([\d.]+) ms"),
                         ("scr_ms", r"SCR alone\s+([\d.]+) ms")):
        match = re.search(pattern, out)
        if match:
            figures[key] = float(match.group(1))
    return figures


def parse_quickstart(out: str) -> dict[str, Any]:
    result = last_json(out) or {}
    figures: dict[str, Any] = {k: result[k] for k in ("epochs", "steps", "world_size") if k in result}
    figures["metrics"] = result.get("metrics")
    figures["checkpoint"] = (result.get("checkpoints") or {}).get("last")
    run_dir = result.get("run_dir")
    if run_dir and (Path(run_dir) / "metrics.jsonl").is_file():
        losses = []
        for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
            record = json.loads(line)
            if "split" not in record and isinstance(record.get("loss"), int | float):
                losses.append(float(record["loss"]))
        if losses:
            figures["loss_first"], figures["loss_last"] = losses[0], losses[-1]
    return figures


def judge_quickstart(ctx: Context, figures: dict[str, Any]) -> str | None:
    """The loss must fall over the epoch (where two steps were logged) and the checkpoint must reload."""
    if "loss_first" in figures and figures["loss_last"] >= figures["loss_first"]:
        return f"loss did not fall ({figures['loss_first']:.4g} -> {figures['loss_last']:.4g})"
    if figures.get("checkpoint"):
        proc = subprocess.run([ctx.python, str(Path(__file__).resolve()), "--step", "reload", "--path",
                               figures["checkpoint"]], env=ctx.child_env(), cwd=ctx.work, capture_output=True,
                              text=True, timeout=60)
        reloaded = last_json(proc.stdout) or {}
        figures["reload"] = reloaded
        if proc.returncode or reloaded.get("status") != "ok":
            return "checkpoint did not reload: " + (reloaded.get("reason") or proc.stderr.strip()[-300:])
    return None


# ----------------------------------------------------------------------------- running the plan


def run_step(step: Step, ctx: Context, left_s: float) -> dict[str, Any]:
    record: dict[str, Any] = {"step": step.name, "budget_s": step.budget_s, "seconds": 0.0, "figures": {}}
    if step.budget_s > left_s:
        return {**record, "status": "skipped", "reason": f"budget {step.budget_s:.0f} s > {left_s:.0f} s left"}
    command = step.command(ctx)
    if isinstance(command, str):
        return {**record, "status": "skipped", "reason": command}
    record["command"] = command
    tic = time.perf_counter()
    try:
        proc = subprocess.run(command, env=ctx.child_env(step.env), cwd=ctx.work, capture_output=True, text=True,
                              timeout=step.budget_s)
        stdout, stderr, code = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        stdout = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        code = None
    record["seconds"] = round(time.perf_counter() - tic, 1)
    record["stdout_tail"], record["stderr_tail"] = stdout[-TAIL_CHARS:], stderr[-TAIL_CHARS:]
    try:
        figures = step.parse(stdout)
    except Exception as exc:  # a bench whose output changed must not end the whole check
        figures = {"parse_error": repr(exc)}
    record["figures"] = figures
    reported = last_json(stdout) or {}
    if code is None:
        return {**record, "status": "failed", "reason": f"timed out after {step.budget_s:.0f} s"}
    if reported.get("status") == "skipped":  # a child that found its backend missing
        return {**record, "status": "skipped", "reason": reported.get("reason", "")}
    if code != 0:
        last = [line for line in stderr.strip().splitlines() if line.strip()]
        return {**record, "status": "failed", "reason": f"exit {code}: " + (last[-1][:300] if last else "")}
    reason = reported.get("reason") if reported.get("status") == "failed" else step.judge(ctx, figures)
    return {**record, "status": "failed" if reason else "ok", **({"reason": reason} if reason else {})}


def install_site(site: Path) -> list[str]:
    """pip-install .whl/*.whl into `site` (no index, no deps) and link pc3d's packages; -> wheel names."""
    wheels = sorted(WHEELS.glob("*.whl"))
    if wheels:
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                               "--disable-pip-version-check", "--target", str(site), *map(str, wheels)],
                              capture_output=True, text=True, timeout=120)
        if proc.returncode:
            raise CheckError("installing .whl/*.whl failed: " + " ".join(proc.stderr.split())[-300:])
    site.mkdir(parents=True, exist_ok=True)
    # Links, not a copy: pc3d's own check (pc3d/__init__.py) resolves them to the checkout, and only drops
    # sys.path entries that resolve to the checkout root; `site` is not one, so it stays.
    for name, target in (("pc3d", "pc3d"), ("pc3d_kernels", "kernels"), ("pc3d_presets", "presets")):
        link = site / name
        if link.is_symlink() or link.exists():
            link.unlink() if link.is_symlink() else shutil.rmtree(link)
        link.symlink_to(ROOT / target, target_is_directory=True)
    return [w.name for w in wheels]


def environment(ctx: Context) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "cuda": torch.version.cuda, "device": torch.cuda.get_device_name(0),
                            "gpus": torch.cuda.device_count(),
                            "capability": ".".join(map(str, torch.cuda.get_device_capability(0)))}
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception as exc:  # the kernel step reports the consequence; the versions say why
        info["triton"] = f"not importable: {exc!r}"
    smi = shutil.which("nvidia-smi")
    if smi:
        proc = subprocess.run([smi, "--query-gpu=driver_version,memory.total", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30)
        info["driver"], _, info["memory"] = proc.stdout.strip().splitlines()[0].partition(", ") if proc.stdout \
            else ("unknown", "", "")
    return info


def summary_line(record: dict[str, Any]) -> str:
    """The key figures of a step, short."""
    f, name = record.get("figures") or {}, record["step"]
    if record["status"] != "ok":
        return record.get("reason", "")
    if name == "kernels":
        return f"{f.get('passed')}/{f.get('cases')} cases; speed-up vs torch: " + ", ".join(
            f"{k} {v:.1f}x" for k, v in (f.get("speedup") or {}).items())
    if name == "train-step":
        return (f"{f['step_seconds'] * 1e3:.1f} ms/step, {f['achieved_gflop_per_s'] / 1e3:.1f} TFLOP/s = "
                f"{f['utilisation_bf16']:.1%} of bf16 mm ({f['matmul_bf16_gflop_per_s'] / 1e3:.0f} TFLOP/s), "
                f"{f['utilisation']:.1%} of fp32 mm")
    if name.startswith("ptv3"):
        text = f"{f.get('fwd_bwd_ms', 0):.1f} ms fwd+bwd, {f.get('peak_gib', 0):.1f} GiB, {f.get('points')} pts"
        return text + (f", max |diff| vs torch {f['max_abs_diff_vs_torch']:.2e}" if "max_abs_diff_vs_torch" in f
                       else "")
    if name == "ops":
        return ", ".join(f"{op} {v['pc3d_ms']:.2f} ms" for op, v in (f.get("ops") or {}).items())
    if name == "pointins":
        return f"base {f.get('base_ms')} ms, PointINS {f.get('pointins_ms')} ms, overhead {f.get('overhead_pct')} %"
    if "loss_first" in f:
        return f"loss {f['loss_first']:.4g} -> {f['loss_last']:.4g}, checkpoint reloads"
    return "ok"


def run_check(out: Path, budget_s: float) -> int:
    import warnings

    import torch

    with warnings.catch_warnings():  # torch warns on stderr when it finds no driver; the error line says it all
        warnings.simplefilter("ignore")
        has_cuda = torch.cuda.is_available()
    if not has_cuda:
        raise CheckError("no CUDA device: torch.cuda.is_available() is False (this check needs an NVIDIA GPU; "
                         "use --dry-run to see the plan)")
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="pc3d-gpu-check-"))
    ctx = Context(site=tmp / "site", work=tmp / "work", gpus=torch.cuda.device_count())
    ctx.work.mkdir(parents=True)
    wheels = install_site(ctx.site)
    report: dict[str, Any] = {"environment": environment(ctx), "wheels": wheels, "budget_s": budget_s, "steps": []}
    print(f"pc3d GPU check on {report['environment']['device']} (torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}); budget {budget_s:.0f} s; work folder {tmp}", flush=True)
    ptv3_share = tmp / "ptv3"
    ptv3_share.mkdir()
    for step in plan():
        if step.name.startswith("ptv3"):
            step.env["PC3D_GPU_CHECK_SHARE"] = str(ptv3_share)
        left = budget_s - (time.perf_counter() - start)
        record = run_step(step, ctx, left)
        report["steps"].append(record)
        print(f"  {record['status']:7s} {step.name:30s} {record['seconds']:6.1f} s  {summary_line(record)}",
              flush=True)
    report["seconds"] = round(time.perf_counter() - start, 1)
    print_summary(report["steps"])
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".part")
    partial.write_text(json.dumps(report, indent=1, default=str))
    partial.replace(out)  # atomic: a killed check leaves no half-written report
    failed = [r["step"] for r in report["steps"] if r["status"] == "failed"]
    print(f"report: {out}; {len(failed)} failed" + (f" ({', '.join(failed)})" if failed else ""))
    return 1 if failed else 0


def print_summary(records: list[dict[str, Any]]) -> None:
    header = f"{'step':30s} {'status':8s} {'seconds':>8s}  key figures"
    print("\n" + header + "\n" + "-" * len(header))
    for r in records:
        print(f"{r['step']:30s} {r['status']:8s} {r['seconds']:8.1f}  {summary_line(r)[:200]}")


# ----------------------------------------------------------------------------- the dry run


@dataclass(frozen=True)
class Finding:
    path: str
    function: str
    line: int
    pattern: str
    text: str


def _function_at(tree: ast.AST) -> dict[int, str]:
    """line -> qualified name of the innermost def/class holding it ("<module>" outside any)."""
    owner: dict[int, str] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}.{child.name}" if prefix else child.name
                for line in range(child.lineno, (child.end_lineno or child.lineno) + 1):
                    owner[line] = name
                visit(child, name)
            else:
                visit(child, prefix)

    visit(tree, "")
    return owner


def _code_lines(source: str) -> dict[int, str]:
    """Line -> its code with comments and string-only statements (docstrings) removed, so prose that merely
    names CUDA does not count; string literals inside code (`== "cuda"`) are kept."""
    tree = ast.parse(source)
    prose: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            prose.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    lines = source.splitlines()
    code = {i + 1: text for i, text in enumerate(lines) if i + 1 not in prose}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT and tok.start[0] in code:
            row, col = tok.start
            code[row] = code[row][:col]
    return code


def cuda_findings(root: Path = ROOT) -> list[Finding]:
    findings = []
    for path in sorted([*(root / "pc3d").rglob("*.py"), *(root / "kernels").rglob("*.py")]):
        source = path.read_text()
        owner = _function_at(ast.parse(source))
        for line, text in _code_lines(source).items():
            for name, pattern in CUDA_PATTERNS.items():
                if pattern.search(text):
                    findings.append(Finding(str(path.relative_to(root)), owner.get(line, "<module>"), line, name,
                                            text.strip()))
    return findings


def reached_by(finding: Finding, keys: list[str]) -> list[str]:
    """Steps (by REACHES key) whose declared reach holds this finding."""
    hits = []
    for key in keys:
        if key != "nccl" and MULTI_PROCESS_ONLY.search(finding.text):
            continue  # one process never takes this line
        for entry in REACHES[key]:
            path, _, function = entry.partition("::")
            in_path = finding.path == path or finding.path.startswith(path.rstrip("/") + "/")
            if in_path and (not function or finding.function == function
                            or finding.function.startswith(function + ".")):
                hits.append(key)
                break
    return hits


def dry_run(budget_s: float) -> int:
    steps = plan()
    print(f"pc3d GPU check plan (total budget {budget_s:.0f} s; a step is skipped when its budget exceeds "
          f"what is left):")
    total = 0.0
    for step in steps:
        total += step.budget_s
        print(f"  {step.name:30s} {step.budget_s:5.0f} s  {step.what}")
    print(f"  {'(sum of budgets)':30s} {total:5.0f} s")
    wheels = sorted(p.name for p in WHEELS.glob("*.whl"))
    print(f"wheels to install from .whl/: {', '.join(wheels) if wheels else 'none (run scripts/gpu-wheels.sh)'}")
    keys = sorted({s.reaches for s in steps})
    findings = cuda_findings()
    missed = [f for f in findings if not reached_by(f, keys)]
    print(f"\nCUDA-only code paths of pc3d ({', '.join(CUDA_PATTERNS)}): "
          f"{len({(f.path, f.line) for f in findings})} lines")
    print_findings(f"reached by no step: {len({(f.path, f.line) for f in missed})} lines", missed)
    return 0


def print_findings(title: str, findings: list[Finding]) -> None:
    print(title)
    by_function: dict[tuple[str, str], list[Finding]] = {}
    for f in findings:
        by_function.setdefault((f.path, f.function), []).append(f)
    for (path, function), items in by_function.items():
        lines = sorted({f.line for f in items})
        patterns = sorted({f.pattern for f in items})
        print(f"  {path}::{function} (line {', '.join(map(str, lines))}: {', '.join(patterns)})")


# ----------------------------------------------------------------------------- step bodies (child processes)


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _best_ms(fn: Callable[[], object], repeats: int = 3) -> float:
    fn()
    _sync()
    best = float("inf")
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        _sync()
        best = min(best, time.perf_counter() - tic)
    return best * 1e3


def step_kernels(device: str = "cuda", small: bool = False) -> dict[str, Any]:
    """Each Triton kernel on CUDA against its plain-torch twin (float64 reference), tiny to large sizes.

    Tiny sizes must match exactly (as the CPU interpreter tests demand). At large sizes float32 and float64
    distances can order near-ties differently, so an index may differ where the distance it points to is
    equal within float32 rounding: the distances are compared instead (FPS: the covering radius)."""
    import pc3d_kernels.chamfer as kchamfer
    import pc3d_kernels.fps as kfps
    import pc3d_kernels.knn as kknn
    import pc3d_kernels.raster as kraster
    import torch

    from pc3d.ops._common import use_kernels
    from pc3d.ops.chamfer import nearest_indices_torch
    from pc3d.ops.neighbors import knn_brute
    from pc3d.ops.raster import zbuffer_torch
    from pc3d.ops.sampling import _fps_batched

    dev = torch.device(device)
    cases: list[dict[str, Any]] = []
    limit = 3 if small else None  # --small (a CPU smoke run under TRITON_INTERPRET=1): the tiny sizes only
    speedup: dict[str, float] = {}

    def rand(*shape: int, seed: int) -> Any:
        return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)).to(dev)

    def record(kernel: str, size: str, ok: bool, exact: bool, **extra: Any) -> None:
        cases.append({"kernel": kernel, "size": size, "ok": bool(ok), "exact": bool(exact), **extra})

    for batch, n, samples, start in [(1, 1, 1, 0), (2, 37, 9, 3), (3, 130, 20, 129), (2, 5000, 256, 0),
                                     (1, 50000, 2048, 7)][:limit]:
        pts = rand(batch, n, 3, seed=n)
        got, ref = kfps.fps_triton(pts, samples, start), _fps_batched(pts.double(), samples, start)
        exact = torch.equal(got, ref)
        same = (got == ref).int().cumprod(1).sum(1).min().item()  # shortest common prefix over the batch

        def radius(idx: Any, pts: Any = pts) -> float:  # largest distance of any point to the chosen set
            chosen = torch.gather(pts.double(), 1, idx.unsqueeze(-1).expand(-1, -1, 3))
            return torch.cdist(pts.double(), chosen).min(-1).values.max().item()

        ok = exact or (n > 200 and abs(radius(got) - radius(ref)) <= 1e-5 * max(radius(ref), 1e-12))
        record("fps", f"{batch}x{n}->{samples}", ok, exact, common_prefix=same)
    speedup["fps"] = _best_ms(lambda: _fps_batched(pts, samples, start)) / _best_ms(
        lambda: kfps.fps_triton(pts, samples, start))

    knn_sizes = [(1, 5, 7, 1), (2, 19, 70, 4), (1, 33, 150, 10), (2, 2048, 50000, 32), (1, 4096, 4096, 16)]
    for batch, m, n, k in knn_sizes[:limit]:
        q, r = rand(batch, m, 3, seed=m * n), rand(batch, n, 3, seed=m * n + 1)
        got = kknn.knn_triton(q, r, k)
        ref = torch.stack([knn_brute(q[b].double(), r[b].double(), k) for b in range(batch)])

        def dists(idx: Any, q: Any = q, r: Any = r) -> Any:
            near = torch.gather(r.double(), 1, idx.reshape(r.shape[0], -1, 1).expand(-1, -1, 3)).view(*idx.shape, 3)
            return (q.double().unsqueeze(2) - near).norm(dim=-1).sort(-1).values

        gap = (dists(got) - dists(ref)).abs().max().item()
        exact = torch.equal(got, ref)
        record("knn", f"{batch}x{m}q x {n} k={k}", exact or (n > 200 and gap <= 1e-5), exact, max_dist_gap=gap)
    speedup["knn"] = _best_ms(lambda: torch.stack([knn_brute(q[b], r[b], k) for b in range(batch)])) / _best_ms(
        lambda: kknn.knn_triton(q, r, k))

    for batch, n, m in [(1, 1, 1), (2, 21, 50), (3, 70, 33), (32, 1024, 1024), (4, 20000, 15000)][:limit]:
        a, b = rand(batch, n, 3, seed=n + m), rand(batch, m, 3, seed=n + m + 1)
        ref_ab, ref_ba = nearest_indices_torch(a.double(), b.double())
        got_ab, got_ba = kchamfer.nearest_triton(a, b), kchamfer.nearest_triton(b, a)

        def gap(got: Any, ref: Any, src: Any, dst: Any) -> float:
            def d(idx: Any) -> Any:
                return (src.double() - torch.gather(dst.double(), 1, idx.unsqueeze(-1).expand(-1, -1, 3))).norm(dim=-1)

            return (d(got) - d(ref)).abs().max().item()

        worst = max(gap(got_ab, ref_ab, a, b), gap(got_ba, ref_ba, b, a))
        exact = torch.equal(got_ab, ref_ab) and torch.equal(got_ba, ref_ba)
        record("chamfer-nearest", f"{batch}x{n} vs {batch}x{m}", exact or (n * m > 10_000 and worst <= 1e-5), exact,
               max_dist_gap=worst)
    speedup["chamfer-nearest"] = _best_ms(lambda: nearest_indices_torch(a, b)) / _best_ms(
        lambda: (kchamfer.nearest_triton(a, b), kchamfer.nearest_triton(b, a)))

    for n, h, w, radius in [(1, 4, 5, 0), (45, 9, 13, 1), (100, 17, 15, 2), (200_000, 800, 800, 1),
                            (1_000_000, 1080, 1920, 2)][:limit]:
        g = torch.Generator().manual_seed(n)
        pixel = torch.randint(-3, max(h, w) + 3, (n, 2), generator=g).to(dev)
        depth = (torch.rand(n, generator=g) * 2 - 0.2).to(dev)
        depth[::5] = depth[0]  # equal depths: the lowest index must win
        got, ref = kraster.zbuffer_triton(pixel, depth, h, w, radius), zbuffer_torch(pixel, depth, h, w, radius)
        exact = torch.equal(got, ref)  # integer keys: no rounding excuse at any size
        record("zbuffer", f"{n} -> {h}x{w} r={radius}", exact, exact)
    speedup["zbuffer"] = _best_ms(lambda: zbuffer_torch(pixel, depth, h, w, radius)) / _best_ms(
        lambda: kraster.zbuffer_triton(pixel, depth, h, w, radius))

    # pc3d.ops really calls these kernels on CUDA (a CPU smoke run has nothing to dispatch)
    dispatch = use_kernels(torch.zeros(1, 3, device=dev)) or dev.type != "cuda"
    passed = sum(c["ok"] for c in cases)
    failed = [f"{c['kernel']} {c['size']}" for c in cases if not c["ok"]]
    if not dispatch:
        failed.append("pc3d.ops does not dispatch to the kernels (use_kernels is False on CUDA)")
    return {"status": "failed" if failed else "ok", "reason": "; ".join(failed) or None, "cases": len(cases),
            "passed": passed, "dispatch": dispatch, "speedup": {k: round(v, 2) for k, v in speedup.items()},
            "detail": cases}


def _active_backend(module: Any) -> str | None:
    """The backend pc3d's sparse layer says it uses, under whichever name the interface settles on."""
    if callable(getattr(module, "backend_name", None)):  # pc3d.models.sparse.core: backend_name(device)
        try:
            return str(module.backend_name("cuda"))
        except Exception:
            return None
    for attr in ("BACKEND", "backend", "backend_name", "active_backend", "name"):
        value = getattr(module, attr, None)
        if callable(value):
            try:
                value = value()
            except Exception:
                continue
        if isinstance(value, str):
            return value
    return None


def _reads_backend_variable() -> bool:
    import importlib.util

    spec = importlib.util.find_spec("pc3d.models.sparse")
    if spec is None:
        return False
    files = [Path(spec.origin)] if spec.origin else []
    for folder in spec.submodule_search_locations or []:
        files += list(Path(folder).rglob("*.py"))
    return any("PC3D_SPARSE_BACKEND" in f.read_text() for f in files if f.is_file())


def room(n: int, seed: int) -> tuple[Any, Any]:
    """A synthetic room without open3d: floor, ceiling, four walls and a few boxes (points on surfaces)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    size = torch.tensor([8.0, 6.0, 3.0])
    pts = torch.rand(n, 3, generator=g) * size
    face = torch.randint(0, 10, (n,), generator=g)
    for axis in range(3):  # faces 0..5: the six sides of the room
        pts[face == 2 * axis, axis] = 0.0
        pts[face == 2 * axis + 1, axis] = size[axis]
    furniture = face >= 6  # the rest: on the tops of four 1 m boxes
    corners = torch.tensor([[1.0, 1.0], [5.0, 1.5], [2.0, 4.0], [6.0, 4.5]])[face[furniture] - 6]
    pts[furniture, :2] = corners + torch.rand(int(furniture.sum()), 2, generator=g)
    pts[furniture, 2] = 1.0
    colour_normal = torch.rand(n, 6, generator=g)
    return pts, torch.cat([pts, colour_normal], 1)


def step_ptv3(backend: str, share: Path, device: str = "cuda", points: int = 80_000) -> dict[str, Any]:
    """PTv3 at its default size, forward + backward under bf16 autocast, on one sparse backend.

    The torch backend runs first and leaves its weights, input and output in `share`; the others load those
    weights (where the state-dict keys match) and report their largest difference from it."""
    import importlib.util

    import torch

    if backend == "spconv" and importlib.util.find_spec("spconv") is None:
        return {"status": "skipped", "reason": "spconv is not installed (its CUDA 12 wheel does not travel)"}
    if backend == "spconv-triton":
        try:
            import spconv_triton.pytorch  # noqa: F401
        except Exception as exc:
            return {"status": "skipped", "reason": f"spconv_triton not importable: {exc!r}"[:300]}
    if backend != "spconv" and not _reads_backend_variable():
        return {"status": "skipped", "reason": "pc3d.models.sparse does not read PC3D_SPARSE_BACKEND yet"}
    import pc3d.models.sparse as sparse
    from pc3d.models.ptv3 import PTv3Encoder, parameter_count, voxelize

    available = getattr(sparse, "available_backends", None)
    if callable(available) and backend not in available("cuda"):
        why = getattr(sparse, "_unavailable_reason", lambda b, d: None)(backend, "cuda")
        return {"status": "skipped", "reason": f"pc3d.models.sparse: {backend} unavailable on CUDA: {why}"}
    active = _active_backend(sparse)
    if active is not None and active.replace("_", "-") != backend:
        return {"status": "failed", "reason": f"asked for {backend}, pc3d.models.sparse reports {active}"}
    dev = torch.device(device)
    torch.manual_seed(0)
    model = PTv3Encoder(in_channels=9).to(dev)  # the default size: Sonata's encoder
    state_file, data_file = share / "ptv3-torch.pt", share / "ptv3-input.pt"
    compared = None
    if backend != "torch" and state_file.is_file():
        try:
            model.load_state_dict(torch.load(state_file, map_location=dev, weights_only=True))
            compared = torch.load(data_file, map_location=dev, weights_only=True)
        except Exception as exc:  # another layout of the conv weights: time it, compare nothing
            compared = f"weights of the torch backend do not load: {exc!r}"[:300]
    scenes = [room(points, s) for s in range(2)]
    coord = torch.cat([c for c, _ in scenes]).to(dev)
    feat = torch.cat([f for _, f in scenes]).to(dev)
    batch = torch.cat([torch.full((c.shape[0],), i) for i, (c, _) in enumerate(scenes)]).to(dev)
    model.train()

    def step() -> Any:
        torch.manual_seed(1)  # the same order shuffles every time
        point, _ = voxelize(coord, feat, batch, 0.02)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):  # as the trainer: AMP on CUDA
            out = model(point)
        out.feat.float().square().mean().backward()
        return out

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    out = step()
    points = int(voxelize(coord, feat, batch, 0.02)[0].coord.shape[0])
    ms = _best_ms(step, repeats=3)
    result: dict[str, Any] = {"status": "ok", "backend": backend, "reported_backend": active, "points": points,
                              "params_millions": round(parameter_count(model) / 1e6, 2),
                              "fwd_bwd_ms": round(ms, 2),
                              "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if dev.type == "cuda"
                              else None,
                              "output": list(out.feat.shape)}
    if not torch.isfinite(out.feat.float()).all():
        result.update(status="failed", reason="non-finite output")
    model.eval()
    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
        reference = model(voxelize(coord, feat, batch, 0.02)[0]).feat.float()
    if backend == "torch":
        torch.save(model.state_dict(), state_file)
        torch.save(reference, data_file)
    elif isinstance(compared, str):
        result["comparison"] = compared
    elif compared is not None:
        diff = (reference - compared).abs().max().item() if reference.shape == compared.shape else float("inf")
        result["max_abs_diff_vs_torch"] = diff
        scale = compared.abs().max().item()
        if not diff <= 0.05 * max(scale, 1e-6):  # bf16 autocast: agreement to a few percent of the range
            result.update(status="failed", reason=f"output differs from the torch backend by {diff:.3g} "
                                                  f"(range {scale:.3g})")
    return result


def step_reload(path: str) -> dict[str, Any]:
    """A written checkpoint reads back: its tensors load, are finite, and its metadata parses."""
    import torch

    from pc3d.engine.checkpoint import read_checkpoint

    checkpoint = read_checkpoint(path)
    tensors = {k: v for k, v in vars(checkpoint).items() if isinstance(v, dict)}
    count = bad = 0
    for group in tensors.values():
        for value in group.values():
            if isinstance(value, torch.Tensor):
                count += 1
                bad += int(value.is_floating_point() and not torch.isfinite(value).all())
    if not count:
        return {"status": "failed", "reason": "no tensors in the checkpoint"}
    return {"status": "failed" if bad else "ok", "tensors": count, "non_finite": bad,
            **({"reason": f"{bad} tensors hold NaN/inf"} if bad else {})}


def run_child_step(args: argparse.Namespace) -> int:
    """Run one step body in this (child) process; its result is the last line of stdout, as JSON."""
    try:
        if args.step == "kernels":
            result = step_kernels(args.device, args.small)
        elif args.step == "ptv3":
            share = Path(os.environ.get("PC3D_GPU_CHECK_SHARE", tempfile.gettempdir()))
            result = step_ptv3(args.backend, share, args.device, 2_000 if args.small else 80_000)
        else:
            result = step_reload(args.path)
    except Exception as exc:
        import traceback

        traceback.print_exc()
        result = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"[:500]}
    print(json.dumps(result, default=str))
    return {"ok": 0, "skipped": 0}.get(result["status"], 1)


# ----------------------------------------------------------------------------- entry


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="print the plan and the unreached CUDA code; no GPU")
    parser.add_argument("--out", type=Path, default=Path("gpu-check.json"), help="the JSON report")
    parser.add_argument("--budget-s", type=float, default=TOTAL_BUDGET_S, help="total seconds for all steps")
    # internal: the parent runs these in child processes
    parser.add_argument("--step", choices=["kernels", "ptv3", "reload"], help=argparse.SUPPRESS)
    parser.add_argument("--backend", choices=BACKENDS, default="torch", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    # a CPU smoke run of a step body (how this file is tested without a GPU): --device cpu --small
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    parser.add_argument("--small", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.step:
        return run_child_step(args)
    if args.dry_run:
        return dry_run(args.budget_s)
    try:
        return run_check(args.out, args.budget_s)
    except CheckError as exc:
        print(f"pc3d: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
