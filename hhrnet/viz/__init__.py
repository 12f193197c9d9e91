"""Drawing helpers shared by the book, the notebooks and the CLI, one module per concern.

* ``skeleton``: labelled people (COCO visibility, ``draw_poses``) and found people (scores,
  ``draw_found`` with its threshold ``MIN_SCORE``), in left/right colours;
* ``figures``: dataset grids and scale histograms, predictions, heatmap overlays, tag embeddings,
  training curves, ablation bars;
* ``architecture``: the network drawn from its own modules.

matplotlib is imported inside the figure functions only, so importing this package never selects a backend.
"""

from hhrnet.viz.architecture import plot_hrnet_architecture
from hhrnet.viz.figures import (denormalize, overlay_heatmaps, plot_ablation, plot_dataset_overview,
                                plot_person_heights, plot_predictions, plot_scene_grid, plot_tag_embedding,
                                plot_training_curves, plot_training_sample)
from hhrnet.viz.skeleton import MIN_SCORE, SIDE_COLOURS, as_poses, draw_found, draw_poses, found_poses, keypoint_side

__all__ = [
    "MIN_SCORE", "SIDE_COLOURS", "keypoint_side", "as_poses", "draw_poses", "found_poses", "draw_found",
    "plot_scene_grid", "plot_person_heights", "plot_dataset_overview", "plot_predictions", "overlay_heatmaps",
    "plot_tag_embedding", "plot_training_sample", "plot_training_curves", "denormalize", "plot_ablation",
    "plot_hrnet_architecture",
]
