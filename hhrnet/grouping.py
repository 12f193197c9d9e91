"""Associative-embedding grouping: aggregated heatmaps + tag maps -> people.

The steps, in the order ``group`` runs them (each a function below):

1. ``top_candidates``: local maxima of each heatmap (``kernel x kernel`` max-pool NMS), the
   ``max_people`` strongest per joint, with their positions and tags.
2. ``match_by_tag``: visit the joints in the keypoint set's ``joint_order`` (COCO: head first); each
   candidate above the detection
   threshold joins the person whose mean tag is nearest (Hungarian assignment on
   ``round(distance)·100 − value``, ``munkres_assignment``) if that distance is below the tag
   threshold, else starts a person.
3. ``adjust``: move every detected joint a quarter pixel towards its higher neighbour, then +0.5.
4. ``person_scores``: mean joint value over all joints (missing ones count 0), taken before refine.
5. ``refine``: a missing joint is looked for over the whole map, near the person's mean tag.

Everything follows the official HigherHRNet ``HeatmapParser`` number for number, in numpy.  One pass
takes the maximum of every ``TILE x TILE`` tile of every heatmap (``tile_maxima``); NMS and top-k then
read only the tiles whose maximum is above the detection threshold, and refine (``hhrnet._refine_tiles``)
only the tiles that could still hold its answer.  The results equal the full-map computations, ties
included.

A grouped image is an array ``(people, K, 3 + T)``: ``x, y, value`` then the ``T``-dimensional tag of
each joint, zeros for joints that were not found.  Coordinates are heatmap pixels.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from hhrnet._refine_tiles import TILE, best_refine_pixels, per_tile, refine_scores, tile_view
from hhrnet.keypoints import COCO_17, KeypointSet
from hhrnet.sections import TestConfig

COCO_JOINT_ORDER: tuple[int, ...] = COCO_17.joint_order  # imported by the golden tests (tests/test_grouping.py)

# Cost of a padding column when there are more candidates than people: never chosen over a real one.
UNMATCHABLE = 1e10


@dataclass
class Candidates:
    """Top-k local maxima per joint: ``values (N, K, k)``, ``xy (N, K, k, 2)`` int64, ``tags (N, K, k, T)``.

    Slots without a local maximum above the floor hold zeros.
    """

    values: np.ndarray
    xy: np.ndarray
    tags: np.ndarray


@dataclass
class GroupedImage:
    """One image's people: ``joints (P, K, 3 + T)`` in heatmap pixels and ``scores (P,)``."""

    joints: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.joints)


def joint_order(num_joints: int) -> tuple[int, ...]:
    """Matching order for maps given without a keypoint set: COCO's for COCO's joint count, else natural."""
    return COCO_17.joint_order if num_joints == COCO_17.num_joints else tuple(range(num_joints))


def tile_maxima(heatmaps: np.ndarray) -> np.ndarray:
    """``(..., H, W)`` -> ``(..., ny · nx)``: the largest value of each ``TILE x TILE`` tile (NaN if any is).

    The one pass over the heatmaps that the degenerate-map check, NMS and refine share.
    """
    return per_tile(tile_view(heatmaps, constant_values=-np.inf), torch.amax)


def pixels_above(heatmaps: np.ndarray, floor: float, tile_max: np.ndarray) -> np.ndarray:
    """Flat indices of the pixels of ``heatmaps (..., H, W)`` above ``floor``, read only in the tiles
    whose maximum (``tile_max (..., ny · nx)``) is, in no particular order.  Mostly-hot maps take one
    full pass."""
    hot = np.flatnonzero(tile_max.reshape(-1) > floor)
    if hot.size * 4 > tile_max.size:
        return np.flatnonzero(heatmaps.reshape(-1) > floor)
    height, width = heatmaps.shape[-2:]
    tiled = tile_view(heatmaps.reshape(-1, height, width), constant_values=-np.inf)
    nx = tiled.shape[3]
    channel, tile = np.divmod(hot, tile_max.shape[-1])
    ty, tx = np.divmod(tile, nx)
    which, row, col = np.nonzero(tiled[channel, ty, :, tx] > floor)
    return (channel[which] * height + ty[which] * TILE + row) * width + tx[which] * TILE + col


def local_maxima(heatmaps: np.ndarray, kernel: int = 5, floor: float = 0.0,
                 tile_max: np.ndarray | None = None) -> np.ndarray:
    """Flat indices of the pixels above ``floor`` that equal the max of their ``kernel x kernel`` window.

    The reference max-pools the whole map (stride 1, padding kernel//2) and keeps ``value == pooled``;
    only pixels above ``floor`` are tested here (found through the tile maxima, ``tile_maxima``), each
    against its (border-clipped) window.  Dense maps (an untrained network puts a twentieth or more of
    its pixels above the floor) take one max-pool.
    """
    height, width = heatmaps.shape[-2:]
    flat = heatmaps.reshape(-1)
    index = pixels_above(heatmaps, floor, tile_maxima(heatmaps) if tile_max is None else tile_max)
    value = flat[index]
    if index.size * 20 > flat.size:
        maps = torch.from_numpy(np.ascontiguousarray(heatmaps).reshape(-1, 1, height, width))
        pooled = torch.nn.functional.max_pool2d(maps, kernel, stride=1, padding=kernel // 2).reshape(-1).numpy()
        return index[value >= pooled[index]]
    x, y = index % width, (index // width) % height
    is_max = np.ones(index.size, bool)
    r = kernel // 2
    for dy in range(-r, r + 1):
        row_shift = (np.clip(y + dy, 0, height - 1) - y) * width
        for dx in range(-r, r + 1):
            if dy or dx:
                is_max &= flat[index + row_shift + np.clip(x + dx, 0, width - 1) - x] <= value
    return index[is_max]


def top_candidates(heatmaps: np.ndarray, tags: np.ndarray, k: int, kernel: int = 5, floor: float = 0.0,
                   tile_max: np.ndarray | None = None) -> Candidates:
    """The ``k`` largest local maxima above ``floor`` per joint (``heatmaps (N, K, H, W)``, ``tags (N, K, H, W, T)``).

    Equal values are ordered by position (row-major).  With ``floor`` = the detection threshold the
    grouping is unchanged (weaker candidates are dropped by matching anyway) and far fewer pixels are
    read.  ``tile_max`` is ``tile_maxima(heatmaps)`` when the caller has it already.
    """
    n, num_joints, height, width = heatmaps.shape
    tag_dim = tags.shape[-1]
    peaks = local_maxima(heatmaps, kernel, floor, tile_max)
    flat = heatmaps.reshape(-1)
    channel, pixel = np.divmod(peaks, height * width)
    order = np.lexsort((peaks, -flat[peaks], channel))  # by channel, value descending, position
    peaks, channel, pixel = peaks[order], channel[order], pixel[order]
    rank = np.arange(peaks.size) - np.searchsorted(channel, channel)
    keep = rank < k
    values = np.zeros((n * num_joints, k), heatmaps.dtype)
    xy = np.zeros((n * num_joints, k, 2), np.int64)
    picked = np.zeros((n * num_joints, k, tag_dim), tags.dtype)
    slot = (channel[keep], rank[keep])
    values[slot] = flat[peaks[keep]]
    xy[slot] = np.stack((pixel[keep] % width, pixel[keep] // width), axis=1)
    image, joint = np.divmod(channel[keep], num_joints)
    picked[slot] = tags[image, joint, pixel[keep] // width, pixel[keep] % width]  # any memory layout
    return Candidates(values.reshape(n, num_joints, k), xy.reshape(n, num_joints, k, 2),
                      picked.reshape(n, num_joints, k, tag_dim))


def munkres_assignment(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost assignment ``(rows, cols)``, sorted by row, with the reference's tie-breaking.

    Any optimal assignment (``scipy.optimize.linear_sum_assignment``) has the same total cost, but when
    several are optimal -- common here, since costs are rounded distances -- which person gets a joint
    depends on the solver.  The goldens were made with the ``munkres`` package (2.x), whose solver is the
    shortest-augmenting-path Hungarian method with row/column potentials: rows are reduced by their
    minimum and greedily matched to the first free column at that minimum, then each unmatched row in
    order is augmented along a shortest path, always taking the lowest column index among equals.
    This is that method, with each inner loop over columns vectorised (same float64 operations, so
    the same ties).  Classic ``munkres`` 1.x (Pilgrim's covering steps) can break ties differently.
    """
    cost = np.asarray(cost, dtype=np.float64)
    if cost.shape[0] > cost.shape[1]:
        cols, rows = munkres_assignment(cost.T)
        order = np.argsort(rows)
        return rows[order], cols[order]
    n, m = cost.shape
    row_potential = cost.min(axis=1) if m else np.zeros(n)
    col_potential = np.zeros(m + 1)  # column m is the virtual start column of each augmentation
    owner = np.full(m + 1, -1)  # owner[j]: row matched to column j
    for i in range(n):  # warm start: first still-free column at the row minimum
        free = np.flatnonzero((owner[:m] == -1) & (cost[i] == row_potential[i]))
        if free.size:
            owner[free[0]] = i
    for i in sorted(set(range(n)) - set(owner[owner >= 0].tolist())):
        owner[m] = i
        col = m
        slack = np.full(m + 1, np.inf)  # smallest reduced cost reaching each column so far
        came_from = np.zeros(m + 1, int)
        visited = np.zeros(m + 1, bool)
        while True:
            visited[col] = True
            row = owner[col]
            reduced = cost[row] - row_potential[row] - col_potential[:m]
            better = ~visited[:m] & (reduced < slack[:m])
            slack[:m][better] = reduced[better]
            came_from[:m][better] = col
            candidates = np.where(visited[:m], np.inf, slack[:m])
            nearest = int(np.argmin(candidates))
            delta = candidates[nearest]
            row_potential[owner[visited]] += delta
            col_potential[visited] -= delta
            reachable = ~visited & np.isfinite(slack)
            slack[reachable] -= delta
            col = nearest
            if owner[col] == -1:
                break
        while col != m:  # flip the augmenting path
            previous = came_from[col]
            owner[col] = owner[previous]
            col = previous
    cols = np.flatnonzero(owner[:m] >= 0)
    rows = owner[cols]
    order = np.argsort(rows)
    return rows[order], cols[order]



def match_by_tag(values: np.ndarray, xy: np.ndarray, tags: np.ndarray, test: TestConfig,
                 order: tuple[int, ...] | None = None) -> np.ndarray:
    """Assign one image's candidates (``(K, k)``, ``(K, k, 2)``, ``(K, k, T)``) to people, joint by joint
    in ``order`` (a keypoint set's ``joint_order``; default ``joint_order(K)``).

    People are kept in creation order; each is represented by the running mean of its matched tags
    (kept as a float32 running sum, which is bit-identical to the reference's mean of a list).
    Only the first ``max_people`` people take part in matching, as in the reference.
    """
    num_joints, _, tag_dim = tags.shape
    people: list[np.ndarray] = []
    tag_sums = np.zeros((0, tag_dim), np.float32)
    tag_counts = np.zeros(0, np.float32)

    def start_person(joint: int, row: np.ndarray, tag: np.ndarray) -> None:
        nonlocal tag_sums, tag_counts
        person = np.zeros((num_joints, 3 + tag_dim))
        person[joint] = row
        people.append(person)
        tag_sums = np.concatenate([tag_sums, tag[None]])
        tag_counts = np.append(tag_counts, np.float32(1))

    for joint in joint_order(num_joints) if order is None else order:
        keep = values[joint] > test.detection_threshold
        if not keep.any():
            continue
        cand_tags = tags[joint][keep]
        rows = np.concatenate([xy[joint][keep], values[joint][keep, None], cand_tags], axis=1)  # float64
        if not people:
            for row, tag in zip(rows, cand_tags):
                start_person(joint, row, tag)
            continue
        num_active = min(len(people), test.max_people)
        if test.ignore_too_much and num_active == test.max_people:
            continue
        mean_tags = tag_sums[:num_active] / tag_counts[:num_active, None]
        distance = np.linalg.norm(rows[:, None, 3:] - mean_tags[None], ord=2, axis=2)
        cost = np.round(distance) * 100 - rows[:, 2:3] if test.use_detection_val else distance
        if len(rows) > num_active:
            cost = np.pad(cost, ((0, 0), (0, len(rows) - num_active)), constant_values=UNMATCHABLE)
        for r, c in zip(*munkres_assignment(cost)):
            if c < num_active and distance[r, c] < test.tag_threshold:
                people[c][joint] = rows[r]
                tag_sums[c] += cand_tags[r]
                tag_counts[c] += 1
            else:
                start_person(joint, rows[r], cand_tags[r])
    if not people:
        return np.zeros((0, num_joints, 3 + tag_dim), np.float32)
    return np.stack(people).astype(np.float32)


def quarter_offsets(heatmaps: np.ndarray, joint: np.ndarray, x: np.ndarray,
                    y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """±0.25 per axis towards the larger of the two neighbours (−0.25 on ties; borders clamped).

    A cheap sub-pixel estimate: the true peak lies on the side of the stronger neighbour.
    """
    _, height, width = heatmaps.shape
    right = heatmaps[joint, y, np.minimum(x + 1, width - 1)]
    left = heatmaps[joint, y, np.maximum(x - 1, 0)]
    below = heatmaps[joint, np.minimum(y + 1, height - 1), x]
    above = heatmaps[joint, np.maximum(y - 1, 0), x]
    return np.where(right > left, 0.25, -0.25), np.where(below > above, 0.25, -0.25)


def adjust(joints: np.ndarray, heatmaps: np.ndarray) -> np.ndarray:
    """Quarter-pixel shift of every detected joint, then +0.5 (pixel centre); ``heatmaps (K, H, W)``."""
    joints = joints.copy()
    person, joint = np.nonzero(joints[..., 2] > 0)
    x = joints[person, joint, 0].astype(np.int64)
    y = joints[person, joint, 1].astype(np.int64)
    dx, dy = quarter_offsets(heatmaps, joint, x, y)
    joints[person, joint, 0] += dx + 0.5
    joints[person, joint, 1] += dy + 0.5
    return joints


def person_scores(joints: np.ndarray) -> np.ndarray:
    """Mean joint value over all ``K`` joints; missing joints count as 0."""
    return joints[..., 2].mean(axis=1) if len(joints) else np.zeros(0, np.float32)


def mean_tags(joints: np.ndarray) -> np.ndarray:
    """``(P, T)`` mean tag of each person's detected joints (natural joint order, float32)."""
    detected = joints[..., 2] > 0
    total = (joints[..., 3:] * detected[..., None]).sum(axis=1, dtype=np.float32)
    return total / detected.sum(axis=1).astype(np.float32)[:, None]


def refine(joints: np.ndarray, heatmaps: np.ndarray, tags: np.ndarray, tile_max: np.ndarray | None = None,
           fast: bool = True) -> np.ndarray:
    """Fill each person's missing joints from the whole map, guided by the person's mean tag.

    For a missing (person, joint) pair the new position maximises ``heatmap − round(‖tag − mean tag‖)``
    over the map (``refine_scores``; the first pixel in row-major order on ties): a pixel whose tag is
    within half a unit of the person's competes on heatmap value alone, one a unit away pays 1.  The
    position gets +0.5 and the quarter-pixel shift; it is used only if the heatmap value there is
    > 0.  Detected joints are left alone.  ``heatmaps (K, H, W)``, ``tags (K, H, W, T)``.

    ``fast`` finds the same pixels reading only the tiles of the map that can still win
    (``hhrnet._refine_tiles``; ``tile_max`` is ``tile_maxima(heatmaps)`` when the caller has it).
    """
    joints = joints.copy()
    missing = joints[..., 2] == 0
    if not missing.any():
        return joints
    centres = mean_tags(joints)
    person, joint = np.nonzero(missing.T)[::-1]  # grouped by joint
    if fast:
        pixel = best_refine_pixels(joints, heatmaps, tags, person, joint, centres, tile_max)
    else:
        pixel = np.array([np.argmax(refine_scores(heatmaps[k], np.moveaxis(tags[k], -1, 0), centres[p]))
                          for p, k in zip(person, joint)], np.int64)
    y, x = np.divmod(pixel, heatmaps.shape[2])
    value = heatmaps[joint, y, x]
    dx, dy = quarter_offsets(heatmaps, joint, x, y)
    fill = value > 0
    person, joint = person[fill], joint[fill]
    joints[person, joint, 0] = (x + 0.5 + dx)[fill]
    joints[person, joint, 1] = (y + 0.5 + dy)[fill]
    joints[person, joint, 2] = value[fill]
    return joints


def _as_numpy(maps: torch.Tensor | np.ndarray) -> np.ndarray:
    return maps.detach().cpu().numpy() if isinstance(maps, torch.Tensor) else np.asarray(maps)


def _degenerate(heatmaps: np.ndarray, tile_max: np.ndarray) -> str | None:
    """What is wrong with maps no network should produce (read off the tile maxima when nothing is)."""
    peak = tile_max.max()
    if not np.isfinite(peak):
        return "non-finite values"
    if peak == 0 and heatmaps.min() == 0:
        return "only zeros"
    return None


def group(heatmaps: torch.Tensor | np.ndarray, tags: torch.Tensor | np.ndarray, test: TestConfig,
          keypoints: KeypointSet | None = None) -> list[GroupedImage]:
    """Group a batch: ``heatmaps (N, K, H, W)`` and ``tags (N, K, H, W, T)`` -> one ``GroupedImage`` each.

    ``keypoints`` gives the matching order (without it: ``joint_order(K)``).

    Images whose heatmaps are not finite, or all zero (an untrained or broken network), give no people
    and a warning; an image without any candidate above the threshold simply gives no people.
    """
    heatmaps, tags = _as_numpy(heatmaps), _as_numpy(tags)
    num_joints, tag_dim = heatmaps.shape[1], tags.shape[-1]
    if keypoints is not None and keypoints.num_joints != num_joints:
        raise ValueError(f"{num_joints} heatmaps for the {keypoints.num_joints} joints of keypoint set "
                         f"{keypoints.name!r}")
    order = None if keypoints is None else keypoints.joint_order
    tile_max = tile_maxima(heatmaps)
    candidates = top_candidates(heatmaps, tags, test.max_people, test.nms_kernel, test.detection_threshold, tile_max)
    results = []
    for i in range(len(heatmaps)):
        problem = _degenerate(heatmaps[i], tile_max[i])
        if problem:
            warnings.warn(f"image {i} of the batch: heatmaps contain {problem}; no people returned",
                          RuntimeWarning, stacklevel=2)
            joints = np.zeros((0, num_joints, 3 + tag_dim), np.float32)
        else:
            joints = match_by_tag(candidates.values[i], candidates.xy[i], candidates.tags[i], test, order)
        if test.adjust:
            joints = adjust(joints, heatmaps[i])
        scores = person_scores(joints)
        if test.refine and len(joints):
            joints = refine(joints, heatmaps[i], tags[i], tile_max[i])
        results.append(GroupedImage(joints, scores))
    return results
