"""Label tables of the public datasets the synthetic data is written in.

These are facts of the public formats (checked against the datasets' own loaders), shared by the
synthetic generator and the dataset readers: ShapeNetPart's synsets and global part ids,
ScanNet's NYU40 ids and its 20-class benchmark subset, SemanticKITTI's raw label ids, and the
PartNet-Ensembled (PartSLIP) part names of the categories the generator builds.
"""

from __future__ import annotations

# ShapeNetPart: category -> ShapeNet synset id (synsetoffset2category.txt, tab separated)
SHAPENETPART_SYNSETS: dict[str, str] = {
    "Airplane": "02691156", "Bag": "02773838", "Cap": "02954340", "Car": "02958343",
    "Chair": "03001627", "Earphone": "03261776", "Guitar": "03467517", "Knife": "03624134",
    "Lamp": "03636649", "Laptop": "03642806", "Motorbike": "03790512", "Mug": "03797390",
    "Pistol": "03948459", "Rocket": "04099429", "Skateboard": "04225987", "Table": "04379243",
}

# ShapeNetPart: category -> its global part ids (50 parts in all), in the benchmark's order
SHAPENETPART_PART_IDS: dict[str, tuple[int, ...]] = {
    "Airplane": (0, 1, 2, 3), "Bag": (4, 5), "Cap": (6, 7), "Car": (8, 9, 10, 11),
    "Chair": (12, 13, 14, 15), "Earphone": (16, 17, 18), "Guitar": (19, 20, 21), "Knife": (22, 23),
    "Lamp": (24, 25, 26, 27), "Laptop": (28, 29), "Motorbike": (30, 31, 32, 33, 34, 35), "Mug": (36, 37),
    "Pistol": (38, 39, 40), "Rocket": (41, 42, 43), "Skateboard": (44, 45, 46), "Table": (47, 48, 49),
}

# ScanNet: NYU40 ids of the 20 benchmark classes; a class's index here is its `segment20` value
SCANNET20_NYU40_IDS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)
SCANNET20_NAMES: tuple[str, ...] = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink",
    "bathtub", "otherfurniture",
)
# VoteNet/3DETR detect these 18 NYU40 classes (everything but wall and floor)
SCANNET_DET_NYU40_IDS: tuple[int, ...] = SCANNET20_NYU40_IDS[2:]

# SemanticKITTI raw label ids (lower 16 bits of a .label entry)
SEMANTIC_KITTI_IDS: dict[str, int] = {
    "unlabeled": 0, "car": 10, "bicycle": 11, "motorcycle": 15, "truck": 18, "person": 30, "bicyclist": 31,
    "road": 40, "sidewalk": 48, "building": 50, "vegetation": 70, "trunk": 71, "terrain": 72, "pole": 80,
    "traffic-sign": 81,
}
# Classes whose points carry an instance id (SemanticKITTI's "things")
SEMANTIC_KITTI_THINGS: frozenset[int] = frozenset({10, 11, 15, 18, 30, 31})

# PartNet-Ensembled (PartNetE_meta.json): category -> ordered part names; `semantic_seg` indexes this list
PARTNETE_PARTS: dict[str, tuple[str, ...]] = {
    "Bottle": ("lid",),
    "Chair": ("arm", "back", "leg", "seat", "wheel"),
    "Lamp": ("base", "body", "bulb", "shade"),
    "Laptop": ("keyboard", "screen", "shaft", "touchpad", "camera"),
    "StorageFurniture": ("door", "drawer", "handle"),
    "Table": ("door", "drawer", "leg", "tabletop", "wheel", "handle"),
}

# ModelNet40 class names (modelnet40_shape_names.txt order is alphabetical)
MODELNET40_NAMES: tuple[str, ...] = (
    "airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair", "cone", "cup",
    "curtain", "desk", "door", "dresser", "flower_pot", "glass_box", "guitar", "keyboard", "lamp", "laptop",
    "mantel", "monitor", "night_stand", "person", "piano", "plant", "radio", "range_hood", "sink", "sofa",
    "stairs", "stool", "table", "tent", "toilet", "tv_stand", "vase", "wardrobe", "xbox",
)


def scannet20_index(nyu40_id: int) -> int:
    """ScanNet `segment20` value of an NYU40 id (-1, the ignore index, for classes outside the 20)."""
    return SCANNET20_NYU40_IDS.index(nyu40_id) if nyu40_id in SCANNET20_NYU40_IDS else -1
