"""`pc3d data check` / `prepare` of ShapeNet-55, PartNet-E and nuScenes: counts on good fixtures in the released
layouts, one `pc3d: error:` line for a missing split, an out-of-range label and a truncated file, and the start-up
check of the presets that read them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_nuscenes import CATEGORIES, write_fixture

from pc3d.errors import InputError


def one_line(result, *needles: str) -> str:
    assert result.code == 2, (result.code, result.out, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pc3d: error:"), result.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def check_json(cli, dataset: str, root: Path) -> dict:
    result = cli("data", "check", dataset, root, "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)


# --------------------------------------------------------------------------- fixtures


def write_shapenet55(root: Path, train: int = 5, test: int = 2) -> dict[str, np.ndarray]:
    """Point-MAE's layout: ShapeNet-55/{train,test}.txt naming shapenet_pc/<synset>-<model>.npy clouds."""
    rng = np.random.default_rng(0)
    (root / "ShapeNet-55").mkdir(parents=True)
    (root / "shapenet_pc").mkdir()
    synsets = ("02691156", "03001627", "04379243")
    clouds, lists = {}, {"train": [], "test": []}
    for i in range(train + test):
        name = f"{synsets[i % 3]}-model{i}.npy"
        clouds[name] = rng.normal(scale=2.0, size=(64, 3)).astype(np.float32)
        np.save(root / "shapenet_pc" / name, clouds[name])
        lists["train" if i < train else "test"].append(name)
    for split, names in lists.items():
        (root / "ShapeNet-55" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return clouds


@pytest.fixture(scope="module")
def objects(tmp_path_factory) -> Path:
    from pc3d.data.synthetic import write_synthetic

    out = tmp_path_factory.mktemp("objects")
    write_synthetic("objects", out, count=20, seed=0, points=128, preview=False)
    return out / "partnete"


@pytest.fixture
def partnete(objects, tmp_path) -> Path:
    return Path(shutil.copytree(objects, tmp_path / "partnete"))


@pytest.fixture
def nuscenes(tmp_path) -> tuple[Path, dict]:
    root = tmp_path / "nuscenes"
    root.mkdir()
    return root, write_fixture(root)


# --------------------------------------------------------------------------- good fixtures: the counts


def test_shapenet55_counts_and_extents(cli, tmp_path):
    clouds = write_shapenet55(tmp_path / "ShapeNet55-34")
    report = check_json(cli, "shapenet55", tmp_path)  # the parent of Point-MAE's ShapeNet55-34 is found too
    assert report["root"] == str(tmp_path / "ShapeNet55-34")
    train = [clouds[n] for n in (tmp_path / "ShapeNet55-34/ShapeNet-55/train.txt").read_text().split()]
    assert report["splits"]["train"]["items"] == 5 and report["splits"]["test"]["items"] == 2
    assert report["splits"]["train"]["points"] == 5 * 64 and report["splits"]["train"]["synsets"] == 3
    assert report["splits"]["test"]["synsets"] == 2 and "different synsets (3 / 2)" in report["label_note"]
    np.testing.assert_allclose(report["splits"]["train"]["extent"]["min"], np.concatenate(train).min(0), rtol=1e-6)
    np.testing.assert_allclose(report["splits"]["train"]["extent"]["max"], np.concatenate(train).max(0), rtol=1e-6)
    # prepare = the same check, nothing written
    result = cli("data", "prepare", "shapenet55", tmp_path / "ShapeNet55-34", tmp_path / "out", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["written"] == 0 and not (tmp_path / "out").exists()


def test_partnete_counts_and_part_ids(cli, partnete):
    report = check_json(cli, "partnete", partnete)
    meta = json.loads((partnete / "PartNetE_meta.json").read_text())
    for split in ("few_shot", "test"):
        shapes = sorted((partnete / "data" / split).glob("*/*/pc.ply"))
        labels = [np.load(p.parent / "label.npy", allow_pickle=True).item() for p in shapes]
        semantic = np.concatenate([d["semantic_seg"] for d in labels])
        assert report["splits"][split]["items"] == len(shapes) > 0
        assert report["splits"][split]["labelled_points"] == int((semantic >= 0).sum())
        assert report["splits"][split]["label_range"] == [int(semantic[semantic >= 0].min()), int(semantic.max())]
        for category in meta:
            assert report["categories"][category][split] == len(list((partnete / "data" / split).glob(
                f"{category}/*/pc.ply")))
    assert report["categories"]["Chair"]["parts"] == len(meta["Chair"])


def test_nuscenes_counts_and_class_mapping(cli, nuscenes):
    from pc3d.data.readers.nuscenes import NUSCENES_CATEGORY_CLASS

    root, written = nuscenes
    report = check_json(cli, "nuscenes", root)
    assert report["version"] == "v1.0-trainval" and report["classes"] == 16
    assert report["category_to_class"] == {n: NUSCENES_CATEGORY_CLASS.get(n, "ignored") for _, n in CATEGORIES}
    for split, scene in (("train", "scene0"), ("val", "scene1")):  # scene-0001 is train, scene-0003 val
        keys = [f"{scene}_k0", f"{scene}_k1"]
        raw = np.concatenate([written["points"][f"{k}_labels"] for k in keys])
        mapped = np.isin(raw, [i for i, n in CATEGORIES if n in NUSCENES_CATEGORY_CLASS])
        got = report["splits"][split]
        assert got["key_frames"] == 2 and got["scenes"] == 1 and got["items"] == 2
        assert got["key_frames_without_lidarseg"] == 0
        assert got["points"] == sum(len(written["points"][k]) for k in keys)
        assert got["labelled_points"] == int(mapped.sum())
        assert got["raw_label_range"] == [int(raw.min()), int(raw.max())]
    result = cli("data", "prepare", "nuscenes", root, root.parent / "out", "--json")
    assert result.code == 0 and json.loads(result.out)["check"]["splits"]["val"]["items"] == 2


# --------------------------------------------------------------------------- one line per problem


def test_missing_splits(cli, tmp_path, partnete, nuscenes):
    write_shapenet55(tmp_path / "sn")
    (tmp_path / "sn/ShapeNet-55/test.txt").unlink()
    one_line(cli("data", "check", "shapenet55", tmp_path / "sn"), "split 'test' missing", "test.txt")
    shutil.rmtree(partnete / "data" / "test")
    one_line(cli("data", "check", "partnete", partnete), "split 'test' missing")
    root, written = nuscenes
    tables = root / "v1.0-trainval"
    scenes = [s for s in written["tables"]["scene"] if s["name"] != "scene-0003"]  # the only val scene
    (tables / "scene.json").write_text(json.dumps(scenes))
    samples = [s for s in written["tables"]["sample"] if s["scene_token"] != "scene1"]
    (tables / "sample.json").write_text(json.dumps(samples))
    one_line(cli("data", "check", "nuscenes", root), "split 'val' missing")
    (tables / "lidarseg.json").unlink()
    one_line(cli("data", "check", "nuscenes", root), "missing table", "lidarseg.json")


def test_labels_out_of_range(cli, tmp_path, partnete, nuscenes):
    write_shapenet55(tmp_path / "sn")
    listing = tmp_path / "sn/ShapeNet-55/test.txt"
    names = [f"{10_000_000 + k:08d}-m.npy" for k in range(53)]  # 3 + 53 synsets: 56, for 55 classes
    for name in names:
        np.save(tmp_path / "sn/shapenet_pc" / name, np.zeros((8, 3), np.float32))
    listing.write_text(listing.read_text() + "\n".join(names) + "\n")
    one_line(cli("data", "check", "shapenet55", tmp_path / "sn"), "56 synsets", "55 classes")
    (tmp_path / "sn/ShapeNet-55/train.txt").write_text("02691156-model0.npy\nbad name.npy\n")
    one_line(cli("data", "check", "shapenet55", tmp_path / "sn"), "train.txt: line 2", "<synset>-<model>.npy")
    meta = json.loads((partnete / "PartNetE_meta.json").read_text())
    label = sorted((partnete / "data" / "test" / "Chair").glob("*/label.npy"))[0]
    data = np.load(label, allow_pickle=True).item()
    data["semantic_seg"][3] = len(meta["Chair"])  # one past the chair's part names
    np.save(label, np.array(data, dtype=object), allow_pickle=True)
    one_line(cli("data", "check", "partnete", partnete), str(label), f"part id {len(meta['Chair'])}",
             f"-1..{len(meta['Chair']) - 1}", ", ".join(meta["Chair"]))
    root, written = nuscenes
    seg = root / written["tables"]["lidarseg"][0]["filename"]
    values = np.fromfile(seg, np.uint8)
    values[0] = 5  # within 0..31 but not a category of this table
    values.tofile(seg)
    one_line(cli("data", "check", "nuscenes", root), "lidarseg label 5", seg.name)
    categories = written["tables"]["category"] + [{"token": "x", "name": "extra", "description": "", "index": 40}]
    (root / "v1.0-trainval" / "category.json").write_text(json.dumps(categories))
    one_line(cli("data", "check", "nuscenes", root), "index 40", "outside 0..31")


def test_truncated_files(cli, tmp_path, partnete, nuscenes):
    write_shapenet55(tmp_path / "sn")
    cloud = tmp_path / "sn/shapenet_pc/03001627-model1.npy"
    cloud.write_bytes(cloud.read_bytes()[:300])
    one_line(cli("data", "check", "shapenet55", tmp_path / "sn"), cloud.name, "truncated")
    ply = sorted((partnete / "data" / "few_shot").glob("*/*/pc.ply"))[-1]
    ply.write_bytes(ply.read_bytes()[:-500])
    one_line(cli("data", "check", "partnete", partnete), str(ply), "truncated PLY")
    root, written = nuscenes
    lidar = root / written["tables"]["sample_data"][2]["filename"]  # scene0's second key frame
    lidar.write_bytes(lidar.read_bytes()[:-8])  # 2 floats short: not whole points
    one_line(cli("data", "check", "nuscenes", root), lidar.name, "not a multiple of 5")
    lidar.write_bytes(lidar.read_bytes()[:-12])  # now whole points, but fewer than the labels
    one_line(cli("data", "check", "nuscenes", root), "labels for")


def test_partnete_label_pickle_is_restricted(partnete):
    import pickle

    from pc3d.data.prepare.check import check_dataset

    class Payload:  # any class outside numpy arrays / containers must be refused, not constructed
        def __reduce__(self):
            return (print, ("ran",))

    label = sorted((partnete / "data" / "test").glob("*/*/label.npy"))[0]
    with open(label, "rb") as handle:  # keep the .npy header, replace the pickle after it
        np.lib.format.read_array_header_1_0(handle) if np.lib.format.read_magic(handle) == (1, 0) else \
            np.lib.format.read_array_header_2_0(handle)
        body_start = handle.tell()
    label.write_bytes(label.read_bytes()[:body_start] + pickle.dumps(Payload(), protocol=3))
    with pytest.raises(InputError, match="refused global builtins.print"):
        check_dataset("partnete", partnete)


def test_sampled_check_skips_the_middle(tmp_path):
    from pc3d.data.prepare.check import check_dataset

    write_shapenet55(tmp_path, train=9, test=2)
    names = (tmp_path / "ShapeNet-55/train.txt").read_text().split()
    np.save(tmp_path / "shapenet_pc" / names[1], np.full((4, 3), np.nan, np.float32))
    report = check_dataset("shapenet55", tmp_path, sample=3)  # first, middle (index 4) and last
    assert report["splits"]["train"]["items"] == 3 and report["sampled"] == 3
    with pytest.raises(InputError, match="NaN"):
        check_dataset("shapenet55", tmp_path)


# --------------------------------------------------------------------------- start-up check


def test_presets_reading_them_are_checked_at_start_up(tmp_path, partnete, nuscenes, cli):
    from pc3d.cli.common import resolve_config
    from pc3d.data.prepare.preflight import dataset_to_check, startup_check
    from pc3d.data.synthetic import write_synthetic

    root, written = nuscenes
    write_synthetic("lidar", tmp_path / "kitti", count=2, seed=0, points=1500, preview=False)
    kitti = tmp_path / "kitti" / "semantic_kitti"
    sets = ["data.source=folder", f"data.root={kitti}", 'data.train_sequences=["00"]',
            'data.val_sequences=["00"]', f'data.also=[{{"dataset": "nuscenes", "root": "{root}"}}]']
    report = startup_check(resolve_config("pretrain", "pointins-outdoor", None, sets, {}))
    assert report["dataset"] == "semantickitti" and report["splits"]["train"]["items"] == 2
    (nus,) = report["also"]
    assert nus["dataset"] == "nuscenes" and list(nus["splits"]) == ["train"]  # `also` is read for training only
    # the run itself stops at start-up, before anything is built
    lidar = root / written["tables"]["sample_data"][0]["filename"]
    lidar.write_bytes(lidar.read_bytes()[:-4])
    result = cli("pretrain", "pointins-outdoor", *[a for s in sets for a in ("--set", s)],
                 "--set", "train.max_steps=1", "--out", tmp_path / "runs")
    one_line(result, "data check (nuscenes", "pc3d data check nuscenes", "not a multiple of 5")
    assert not (tmp_path / "runs").exists()

    config = resolve_config("finetune", "partstad-fewshot", None, [f"data.root={partnete}"], {})
    assert startup_check(config)["dataset"] == "partnete"
    assert dataset_to_check(resolve_config("finetune", "partstad-detector", None, [f"data.root={partnete}"], {})) \
        == ("partnete", partnete)
    assert dataset_to_check(resolve_config("finetune", "partstad-fewshot", None, [], {})) is None  # synthetic
    shutil.rmtree(partnete / "data" / "few_shot")
    with pytest.raises(InputError, match=r"data check \(partnete.*split 'few_shot' missing"):
        startup_check(config)
    write_shapenet55(tmp_path / "sn")
    config = resolve_config("pretrain", "point-mae", None, [f"data.root={tmp_path / 'sn'}"], {})
    assert startup_check(config)["splits"]["train"]["items"] == 3  # sampled
    (tmp_path / "sn/shapenet_pc/02691156-model0.npy").unlink()
    with pytest.raises(InputError, match="missing file .*02691156-model0.npy"):
        startup_check(config)


def test_fewshot_start_up_check_reads_its_own_category(partnete):
    from pc3d.cli.common import resolve_config
    from pc3d.data.prepare.check import check_dataset
    from pc3d.data.prepare.preflight import startup_check

    bottle = sorted((partnete / "data" / "test" / "Bottle").glob("*/pc.ply"))[0]
    bottle.write_bytes(bottle.read_bytes()[:-500])  # a damaged shape of another category
    with pytest.raises(InputError, match="truncated PLY"):
        check_dataset("partnete", partnete)  # `pc3d data check` reads every category
    chair = resolve_config("finetune", "partstad-fewshot", None,
                           [f"data.root={partnete}", "data.category=Chair"], {})
    report = startup_check(chair)
    chairs = len(list((partnete / "data" / "test" / "Chair").glob("*/pc.ply")))
    assert report["read_categories"] == ["Chair"] and report["categories"]["Chair"]["test"] == chairs
    assert report["splits"]["test"]["items"] == min(chairs, 3)  # sampled among the chairs only
    for category, message in (("Lamp", "no Lamp shapes in split 'test'"), ("Nope", "'Nope' is not in")):
        config = resolve_config("finetune", "partstad-fewshot", None,
                                [f"data.root={partnete}", f"data.category={category}"], {})
        with pytest.raises(InputError, match=message):
            startup_check(config)
