"""`pc3d data synth|prepare|check`: synthetic data in the public layouts; real downloads prepared and checked."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from pc3d.cli.common import JsonOpt, QuietOpt, VerboseOpt, emit, setup_output

app = typer.Typer(help="Datasets: synthesise them, prepare real downloads, check prepared folders.",
                  no_args_is_help=True)


GeneratorSeedOpt = Annotated[int, typer.Option("--seed", help="Generator seed (same seed, same data).")]


class Kind(str, Enum):
    objects = "objects"
    scenes = "scenes"
    lidar = "lidar"


@app.command("synth")
def synth(
    kind: Annotated[Kind, typer.Argument(help="objects, scenes or lidar.")],
    out: Annotated[Path, typer.Argument(help="Folder to write (created; existing files are replaced).")],
    count: Annotated[int | None, typer.Option("--count", "-n", min=1, help="How many shapes/scenes/frames.")] = None,
    seed: GeneratorSeedOpt = 0,
    points: Annotated[int | None, typer.Option("--points", min=16, help="Points per shape/scene.")] = None,
    preview: Annotated[bool, typer.Option("--preview/--no-preview", help="Write preview.png.")] = True,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Generate seeded synthetic data and write it in the public layouts.

    objects: one .ply per shape (file name starts with its category) plus ModelNet40,
    ShapeNetPart and PartNet-Ensembled layouts. scenes: one .ply per scene plus ScanNet layouts
    (Pointcept .npy and 3DETR detection). lidar: SemanticKITTI layout (velodyne, labels,
    image_2, calib).

    Examples:

      pc3d data synth objects data/objects --count 40

      pc3d data synth lidar data/kitti --count 4 --seed 1
    """
    setup_output(json_out, quiet, verbose)
    from pc3d.data.synthetic import write_synthetic

    summary = write_synthetic(kind.value, out, count=count, seed=seed, points=points, preview=preview)
    emit(summary, json_out, title=f"synthetic {kind.value} -> {out}")


class RawDataset(str, Enum):
    scannet = "scannet"
    s3dis = "s3dis"
    modelnet40 = "modelnet40"


@app.command("synth-raw")
def synth_raw(
    dataset: Annotated[RawDataset, typer.Argument(help="scannet, s3dis or modelnet40.")],
    out: Annotated[Path, typer.Argument(help="Folder to write the raw download layout into.")],
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="Scenes (s3dis: at least 6) or shapes.")] = 6,
    seed: GeneratorSeedOpt = 0,
    points: Annotated[int, typer.Option("--points", min=16, help="Points (mesh vertices) per scene.")] = 20_000,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Write synthetic scenes / shapes in a public download's raw layout, the input of `pc3d data prepare`.

    scannet: scans/<id>/ meshes with segs / aggregation json and axis alignment, the label tsv, split lists.
    s3dis: Area_<k>/<room>/Annotations/<class>_<n>.txt. modelnet40: ModelNet40/<class>/{train,test}/*.off.

    Examples:

      pc3d data synth-raw scannet raw/scannet --count 4

      pc3d data synth-raw s3dis raw/s3dis --count 6 --points 5000
    """
    setup_output(json_out, quiet, verbose)
    from pc3d.data.synthetic.raw import write_raw

    summary = write_raw(dataset.value, out, count=count, seed=seed, points=points)
    emit(summary, json_out, title=f"synthetic raw {dataset.value} -> {out}")


class PrepareDataset(str, Enum):
    scannet = "scannet"
    s3dis = "s3dis"
    modelnet40 = "modelnet40"
    modelnet40_fewshot = "modelnet40_fewshot"
    semantickitti = "semantickitti"
    shapenetpart = "shapenetpart"
    scanobjectnn = "scanobjectnn"
    shapenet55 = "shapenet55"
    partnete = "partnete"
    nuscenes = "nuscenes"


class CheckDataset(str, Enum):
    scannet = "scannet"
    scannet_detection = "scannet_detection"
    s3dis = "s3dis"
    modelnet40 = "modelnet40"
    modelnet40_fewshot = "modelnet40_fewshot"
    semantickitti = "semantickitti"
    shapenetpart = "shapenetpart"
    scanobjectnn = "scanobjectnn"
    shapenet55 = "shapenet55"
    partnete = "partnete"
    nuscenes = "nuscenes"


@app.command("prepare")
def prepare(
    dataset: Annotated[PrepareDataset, typer.Argument(help="scannet, s3dis, modelnet40 (converted); "
                                                      "modelnet40_fewshot, semantickitti, shapenetpart, "
                                                      "scanobjectnn, shapenet55, partnete, nuscenes "
                                                      "(checked only).")],
    raw: Annotated[Path, typer.Argument(help="The raw download (the folder holding scans/, Area_1/ or "
                                        "ModelNet40/).")],
    out: Annotated[Path, typer.Argument(help="Parent folder of the prepared layouts (e.g. data/).")],
    workers: Annotated[int, typer.Option("--workers", "-j", min=1, help="Worker processes.")] = 1,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Convert a raw public download into the layout pc3d's readers and presets expect.

    scannet -> OUT/scannet (Pointcept npy: coord color normal segment20 segment200 instance) and
    OUT/scannet_detection (3DETR: axis-aligned _vert _sem_label _ins_label _bbox). s3dis -> OUT/s3dis
    (Pointcept npy; defective lines repaired or dropped and counted). modelnet40 -> OUT/modelnet40_normal_resampled
    (10 000 points with normals per shape, plus 2048-point FPS caches in .npz). Rerunning skips finished
    scenes; every file is written atomically.

    The other datasets are released in the layout pc3d reads: prepare checks RAW in full (as `pc3d data
    check`) and writes nothing; OUT is not used. None of their readers wants a cache.

    Examples:

      pc3d data prepare scannet /data/ScanNet data --workers 8

      pc3d data prepare s3dis /data/Stanford3dDataset_v1.2_Aligned_Version data

      pc3d data prepare nuscenes /data/nuscenes data
    """
    setup_output(json_out, quiet, verbose)
    from pc3d.data.prepare import prepare as run_prepare

    summary = run_prepare(dataset.value, raw, out, workers)
    emit(summary, json_out, title=f"prepare {dataset.value} -> {out}")


@app.command("check")
def check(
    dataset: Annotated[CheckDataset, typer.Argument(help="scannet, scannet_detection, s3dis, modelnet40, "
                                                    "modelnet40_fewshot (Point-BERT's fold pickles), "
                                                    "semantickitti, shapenetpart, scanobjectnn, "
                                                    "shapenet55 (Point-MAE's ShapeNet55-34), partnete "
                                                    "(PartNet-Ensembled) or nuscenes (lidarseg).")],
    root: Annotated[Path, typer.Argument(help="The prepared dataset folder (what a preset's data.root names).")],
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Check a prepared dataset: splits present and missing, point / label / instance counts, label
    ranges against the classes, coordinate extents, colour ranges. Exits 2 with the first problem.

    shapenet55: ShapeNet-55/{train,test}.txt and the shapenet_pc/*.npy clouds they list. partnete:
    PartNetE_meta.json, data/{few_shot,test}/<category>/<shape>/{pc.ply,label.npy}, part ids against the
    category's part names. nuscenes: the v1.0-trainval (else v1.0-mini) tables, key frames of the train and val
    scenes, lidarseg ids against category.json (0..31) and their 16 classes.

    Examples:

      pc3d data check scannet data/scannet

      pc3d data check modelnet40 data/modelnet40_normal_resampled --json

      pc3d data check nuscenes data/nuscenes
    """
    setup_output(json_out, quiet, verbose)
    from pc3d.data.prepare.check import check_dataset

    emit(check_dataset(dataset.value, root), json_out, title=f"check {dataset.value} {root}")
