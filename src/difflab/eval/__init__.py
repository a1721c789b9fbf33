"""Evaluation: shipped feature networks, Frechet distance, precision / recall, class accuracy, plots.

No Inception weights exist offline, so difflab trains its own small CNN classifiers
(``scripts/train_feature_nets.py``) and ships them in ``difflab/eval/weights`` as safetensors plus
JSON metadata. The penultimate layer of the net for a data set is its feature space for FD
(``frechet_distance``, "FID" with a different feature net) and for k-NN precision / recall.

    from difflab.eval import evaluate
    scores = evaluate(samples, "fashion-mnist", labels=labels)   # fd, fd_floor, precision, recall, ...

Only torch and numpy are imported here; safetensors loads with the weights, matplotlib with a plot.
"""

from .evaluate import cached_feature_net, clear_cache, evaluate, fd_floor, real_features
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
from .metrics import (
    frechet_distance,
    frechet_distance_from_stats,
    gaussian_stats,
    knn_radii,
    manifold_coverage,
    precision_recall,
)
from .plot import plot_metric_vs_steps

__all__ = [
    "FEATURE_NETS", "WEIGHTS_DIR", "FeatureNet", "FeatureNetConfig", "cached_feature_net", "class_accuracy",
    "class_logits", "class_predictions", "clear_cache", "evaluate", "fd_floor", "feature_net_metadata", "features",
    "frechet_distance", "frechet_distance_from_stats", "gaussian_stats", "knn_radii", "load_feature_net",
    "manifold_coverage", "plot_metric_vs_steps", "precision_recall", "real_features", "save_feature_net",
    "sha256_file"
]  # fmt: skip
