"""Evaluation: shipped feature networks, Frechet distance, precision / recall, class accuracy, plots.

No Inception weights exist offline, so difflab trains its own small CNN classifiers
(``scripts/train_feature_nets.py``) and ships them in ``difflab/eval/weights`` as safetensors plus
JSON metadata. The penultimate layer of the net for a data set is its feature space for FD
(``frechet_distance``, "FID" with a different feature net) and for k-NN precision / recall.
Any other image data set (a folder of your own images) gets a net of the same architecture trained
by difflab on the data itself (a rotation x class task), cached by the data's content
(``generic_reference``, module ``generic``).
For captioned scenes, ``alignment`` scores text-image alignment with a shipped attribute
classifier (item, colour and position per quadrant), which also gives ``scene_fd`` and ``diversity``.
For moving-item videos, a shipped video classifier gives ``frame_fd``, ``video_fd`` (an FVD analogue)
and ``identity_consistency``; ``motion_error`` scores motion from item centroids; ``real_floor``
gives all four for real clips.

    from difflab.eval import evaluate
    scores = evaluate(samples, "fashion-mnist", labels=labels)   # fd, fd_floor, precision, recall, ...

Only torch and numpy are imported here; safetensors loads with the weights, matplotlib with a plot.
"""

from .alignment import (
    SCENE_CLASSIFIER,
    SceneClassifier,
    SceneClassifierConfig,
    alignment,
    alignment_rates,
    attribute_hits,
    clear_scene_cache,
    diversity,
    load_scene_classifier,
    predict_scene,
    save_scene_classifier,
    scene_classifier_metadata,
    scene_fd,
    scene_features,
    scene_reference_features,
    summarize_hits,
)
from .evaluate import cached_feature_net, clear_cache, evaluate, fd_floor, prepare_evaluation, real_features
from .featurenet import (
    FEATURE_NETS,
    WEIGHTS_DIR,
    FeatureNet,
    FeatureNetConfig,
    class_accuracy,
    class_logits,
    class_predictions,
    feature_net_metadata,
    features,
    load_feature_net,
    save_feature_net,
    sha256_file,
)
from .generic import generic_reference
from .metrics import (
    frechet_distance,
    frechet_distance_from_stats,
    gaussian_stats,
    knn_radii,
    manifold_coverage,
    precision_recall,
)
from .plot import plot_metric_vs_steps
from .video import (
    VIDEO_CLASSIFIER,
    VideoClassifier,
    VideoClassifierConfig,
    centroid_tracks,
    clear_video_cache,
    clip_features,
    frame_fd,
    frame_item_sets,
    identity_consistency,
    identity_scores,
    load_video_classifier,
    motion_error,
    motion_errors,
    real_floor,
    reference_videos,
    save_video_classifier,
    video_classifier_metadata,
    video_fd,
    video_frame_features,
)

__all__ = [
    "FEATURE_NETS", "FeatureNet", "FeatureNetConfig", "SCENE_CLASSIFIER", "SceneClassifier", "SceneClassifierConfig",
    "VIDEO_CLASSIFIER", "VideoClassifier", "VideoClassifierConfig", "WEIGHTS_DIR", "alignment", "alignment_rates",
    "attribute_hits", "cached_feature_net", "centroid_tracks", "class_accuracy", "class_logits", "class_predictions",
    "clear_cache", "clear_scene_cache", "clear_video_cache", "clip_features", "diversity", "evaluate", "fd_floor",
    "feature_net_metadata", "features", "frame_fd", "frame_item_sets", "frechet_distance",
    "frechet_distance_from_stats", "gaussian_stats", "generic_reference", "identity_consistency", "identity_scores",
    "knn_radii", "load_feature_net", "load_scene_classifier", "load_video_classifier", "manifold_coverage",
    "motion_error", "motion_errors", "plot_metric_vs_steps", "precision_recall", "prepare_evaluation",
    "predict_scene", "real_features", "real_floor", "reference_videos", "save_feature_net", "save_scene_classifier",
    "save_video_classifier", "scene_classifier_metadata", "scene_fd", "scene_features", "scene_reference_features",
    "sha256_file", "summarize_hits", "video_classifier_metadata", "video_fd", "video_frame_features"
]  # fmt: skip
