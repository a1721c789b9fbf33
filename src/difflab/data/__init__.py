"""Image datasets, loaders and sample grids.

Every dataset is a ``torch.utils.data.Dataset`` whose items are ``(image, cond)``: ``image`` a
float32 tensor (C, H, W) in [-1, 1], ``cond`` a condition dict such as ``{"class": 3}`` (the keys
in ``cond_keys``; :func:`collate` makes batches of them, keeping each key's dtype). Each also
has an integer view: ``levels`` (17 for digits, 256 otherwise), ``get_levels(i)`` -> (uint8
tensor of levels 0..levels-1, label), ``discrete=True`` to make items integer, and
``from_levels`` / ``to_levels`` to convert.

Names for ``get_dataset``: ``digits`` (sklearn 8x8, embedded), ``fashion-mnist`` (Debian
``dataset-fashion-mnist``), ``image-folder`` (a folder of images), ``photo-crops`` (crops of the
photographs in scikit-image / scikit-learn), ``scenes`` (captioned scenes of tinted Fashion-MNIST
and digit items, with held-out and paraphrase splits), ``caption-folder`` (a folder of captioned
images), ``moving-items`` (grey videos of bouncing Fashion-MNIST / digit items), ``video-folder``
(a folder of videos). Video items are (C, F, H, W); :class:`AppendImageFrames` appends single
frames for joint image-video training; :func:`save_video`, :func:`save_filmstrip` and
:func:`read_video` write and read video files (imageio and PyAV: the ``video`` extra). Captioned
datasets give ``{"caption": str, ...}`` conditions; :func:`collate` batches strings as lists.
scikit-learn, scikit-image, Pillow, imageio and PyAV are imported only when a dataset needs them.
"""

from .arrays import ArrayImageDataset
from .base import DatasetInfo, DataWarning, ImageDataset, collate, from_levels, to_levels
from .captions import CaptionFolder
from .digits import Digits, digits_split_indices
from .fashion_mnist import FashionMNIST, load_fashion_mnist, read_idx
from .folder import ImageFolder
from .grid import make_grid, save_grid
from .loader import forever, make_loader, seed_worker
from .photos import (
    TEST_PHOTOS,
    TRAIN_PHOTOS,
    LowResPairs,
    PhotoCrops,
    Rescaled,
    downsample,
    photo_crop_pairs,
    resize_images,
)
from .registry import dataset_options, describe, get_dataset, list_datasets
from .scenes import COLOURS, HELD_OUT, ITEMS, POSITIONS, CaptionedScenes, caption_vocabulary, describe_labels
from .video import AppendImageFrames, MovingItems, VideoFolder
from .video_io import read_video, save_filmstrip, save_video

__all__ = [
    "COLOURS", "HELD_OUT", "ITEMS", "POSITIONS", "AppendImageFrames", "ArrayImageDataset", "CaptionFolder",
    "CaptionedScenes", "DataWarning", "DatasetInfo", "Digits", "FashionMNIST", "ImageDataset", "ImageFolder",
    "LowResPairs", "MovingItems", "PhotoCrops", "Rescaled", "TEST_PHOTOS", "TRAIN_PHOTOS", "VideoFolder",
    "caption_vocabulary", "collate", "dataset_options", "describe", "describe_labels", "digits_split_indices",
    "downsample", "forever", "from_levels", "get_dataset", "list_datasets", "load_fashion_mnist", "make_grid",
    "make_loader", "photo_crop_pairs", "read_idx", "read_video", "resize_images", "save_filmstrip", "save_grid",
    "save_video", "seed_worker", "to_levels"
]  # fmt: skip
