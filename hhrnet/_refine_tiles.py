"""The tiled search behind ``hhrnet.grouping.refine``: the same pixels as a full-map argmax, fewer read.

For a missing (person, joint), refine looks for the pixel maximising ``refine_scores`` (heatmap value
minus the rounded distance of its tag from the person's mean tag) over the whole map.  Per tile of
``TILE x TILE`` pixels, the largest heatmap value and the tag range bound that score from above, so a
branch and bound over tiles reads only the tiles that could still hold the winner (or tie with it).
``tests/test_refine_tiles.py`` checks it equals the full-map argmax of ``grouping.refine(fast=False)``,
ties included.  The tile helpers (``tile_view``, ``per_tile``) and the score (``refine_scores``) live
here, below ``hhrnet.grouping``, which imports them for its NMS and its full-map refine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# Side of the square tiles whose maxima (and tag ranges) let NMS and refine skip most of a map.
TILE = 32


def tile_view(maps: np.ndarray, **pad: object) -> np.ndarray:
    """``(..., H, W)`` maps as ``(..., ny, TILE, nx, TILE)`` tiles: a view, or a copy padded to whole
    tiles by ``np.pad(**pad)`` when the map size is not a multiple of ``TILE`` (test-time maps are)."""
    height, width = maps.shape[-2:]
    ny, nx = -(-height // TILE), -(-width // TILE)
    if (ny * TILE, nx * TILE) != (height, width):
        maps = np.pad(maps, [(0, 0)] * (maps.ndim - 2) + [(0, ny * TILE - height), (0, nx * TILE - width)], **pad)
    return np.ascontiguousarray(maps).reshape(*maps.shape[:-2], ny, TILE, nx, TILE)


def per_tile(tiled: np.ndarray, reduce=torch.amax) -> np.ndarray:
    """``reduce`` (``torch.amax``/``amin``) of ``(..., ny, TILE, nx, TILE)`` tiles -> ``(..., ny · nx)``.

    Rows first (an element-wise extremum of contiguous rows), then within each row of tiles, which is
    faster than reducing both tile axes in one call.
    """
    return reduce(reduce(torch.from_numpy(tiled), -3), -1).flatten(-2).numpy()


def refine_scores(heat: np.ndarray, tag_planes: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """``heat − round(‖tag − centre‖)`` for a block of pixels: ``heat (...)``, ``tag_planes (T, ...)``, ``centre (T,)``.

    float32 and in the reference's operation order (squares summed one tag dimension after the
    other, as numpy sums a short axis), so rounding and ties come out identical.
    """
    total = (tag_planes[0] - centre[0]) ** 2
    for dim in range(1, len(centre)):
        total += (tag_planes[dim] - centre[dim]) ** 2
    return heat - np.round(np.sqrt(total))




def best_refine_pixels(joints: np.ndarray, heatmaps: np.ndarray, tags: np.ndarray, person: np.ndarray,
                       joint: np.ndarray, centres: np.ndarray, tile_max: np.ndarray | None = None) -> np.ndarray:
    """Flat map index of the best refine pixel of each missing ``(person[i], joint[i])`` pair (first on ties).

    ``joints (P, K, 3 + T)``, ``heatmaps (K, H, W)``, ``tags (K, H, W, T)``, ``centres (P, T)`` mean tags;
    pairs grouped by joint; ``tile_max`` is ``tile_maxima(heatmaps)`` when the caller has it already.
    """
    pixel = np.empty(len(person), np.int64)
    found = joints[..., 2] != 0
    near = [tiles_at(*joints[p, found[p], :2].T, heatmaps.shape[1:]) for p in range(len(joints))]
    for k in np.unique(joint):
        tiles = RefineTiles.of(heatmaps[k], np.moveaxis(tags[k], -1, 0),  # planes contiguous from ``aggregate``
                               None if tile_max is None else tile_max[k])
        pairs = np.flatnonzero(joint == k)
        pixel[pairs] = branch_and_bound(tiles, centres[person[pairs]], [near[p] for p in person[pairs]])
    return pixel


def tiles_at(x: np.ndarray, y: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Flat row-major indices (as ``tile_view`` lays them out) of the tiles of an ``(H, W)`` map that
    hold pixels ``(x, y)``, without repeats."""
    ny, nx = -(-shape[0] // TILE), -(-shape[1] // TILE)
    ty, tx = np.clip(y.astype(np.int64) // TILE, 0, ny - 1), np.clip(x.astype(np.int64) // TILE, 0, nx - 1)
    return np.unique(ty * nx + tx)


@dataclass
class RefineTiles:
    """One joint's heatmap and tag planes cut into ``TILE x TILE`` tiles, with a bound per tile.

    ``heat (ny, TILE, nx, TILE)`` and ``tags (T, ny, TILE, nx, TILE)`` are views of the maps (copies
    padded to whole tiles when the map size is not a multiple of ``TILE``: heat ``-inf``, so padding
    never wins, tags by edge repetition, which changes no range).  Per tile, the largest heatmap value
    and the tag range bound the refine score of every pixel in it from above (``max heat − round(
    distance from the centre to the tag box)``); IEEE arithmetic is monotone and the bound sums the
    squares in the same order as ``refine_scores``, so it holds for the float32 scores exactly.  The
    heatmap maxima are ``tile_maxima``, shared with NMS; a tile's tag range is read only when its heatmap
    maximum alone cannot rule it out, and is then kept for the joint's other people.
    """

    width: int
    heat: np.ndarray
    tags: np.ndarray
    heat_max: np.ndarray  # (ny · nx,) row-major tiles
    tag_low: np.ndarray  # (T, ny · nx), valid where ``known``
    tag_high: np.ndarray
    known: np.ndarray  # (ny · nx,) bool

    @classmethod
    def of(cls, heat: np.ndarray, tag_planes: np.ndarray, heat_max: np.ndarray | None = None) -> "RefineTiles":
        """Tiles of ``heat (H, W)`` and ``tag_planes (T, H, W)`` (contiguous planes are not copied);
        ``heat_max`` is ``tile_maxima(heat)`` when the caller has it already."""
        tiles = tile_view(heat, constant_values=-np.inf)
        heat_max = per_tile(tiles, torch.amax) if heat_max is None else heat_max
        unknown = np.zeros((len(tag_planes), heat_max.size), tag_planes.dtype)
        return cls(heat.shape[1], tiles, tile_view(tag_planes, mode="edge"), heat_max, unknown, unknown.copy(),
                   np.zeros(heat_max.size, bool))

    def upper_bounds(self, centres: np.ndarray, tiles: np.ndarray) -> np.ndarray:
        """``(P, n)``: the largest refine score any pixel of each given tile can reach, per centre ``(P, T)``."""
        self._read_tag_ranges(tiles)
        low, high = self.tag_low[:, None, tiles], self.tag_high[:, None, tiles]  # (T, 1, n)
        centre = centres.T[:, :, None]  # (T, P, 1)
        gap = np.maximum(np.maximum(low - centre, centre - high), 0)
        return refine_scores(self.heat_max[tiles], gap, np.zeros(len(gap), gap.dtype))

    def best_per_person(self, person: np.ndarray, tile: np.ndarray, centres: np.ndarray,
                        people: int) -> tuple[np.ndarray, np.ndarray]:
        """Best refine score of each person over its ``(person, tile)`` pairs, and its first pixel.

        Returns ``(people,)`` scores (``-inf`` for a person without pairs) and flat map indices.  A
        tile's row-major order is the map's restricted to the tile, so among equal scores the first
        pixel is the one with the smallest flat index.
        """
        size, nx = self.heat.shape[1:3]
        ty, tx = np.divmod(tile, nx)
        centre = centres[person].T[:, :, None, None]  # (T, n, 1, 1)
        scores = refine_scores(self.heat[ty, :, tx], np.moveaxis(self._tag_tiles(tile), 1, 0), centre)
        scores = scores.reshape(len(tile), -1)
        first = scores.argmax(axis=1)
        value = scores[np.arange(len(tile)), first]
        pixel = (ty * size + first // size) * self.width + tx * size + first % size
        order = np.lexsort((pixel, -value, person))  # per person: best score, then first pixel
        winners = order[np.unique(person[order], return_index=True)[1]]
        best_score, best_pixel = np.full(people, -np.inf, np.float32), np.zeros(people, np.int64)
        best_score[person[winners]], best_pixel[person[winners]] = value[winners], pixel[winners]
        return best_score, best_pixel

    def _read_tag_ranges(self, tiles: np.ndarray) -> None:
        new = tiles[~self.known[tiles]]
        if new.size * 2 > self.known.size:  # most of the map: whole planes reduce faster than gathered tiles
            self.tag_low[:], self.tag_high[:] = per_tile(self.tags, torch.amin), per_tile(self.tags, torch.amax)
            self.known[:] = True
        elif new.size:
            block = self._tag_tiles(new)
            self.tag_low[:, new], self.tag_high[:, new] = block.min(axis=(2, 3)).T, block.max(axis=(2, 3)).T
            self.known[new] = True

    def _tag_tiles(self, tiles: np.ndarray) -> np.ndarray:
        """``(n, T, size, size)`` copies of the given tiles of the tag planes."""
        ty, tx = np.divmod(tiles, self.heat.shape[2])
        return self.tags[:, ty, :, tx]


def branch_and_bound(tiles: RefineTiles, centres: np.ndarray, near: list[np.ndarray], batch: int = 8) -> np.ndarray:
    """For each person (mean tag ``centres (P, T)``), the flat index of the pixel maximising
    ``refine_scores`` over the map (the first one on ties).

    Branch and bound over tiles, all people of a joint at once.  Each person's tiles ``near`` (its
    own body, where a missing joint most often is) are scored exactly first, which gives a tight
    lower bound ``b`` on its best score.  A tile elsewhere can only hold the winner (or tie with it)
    if its heatmap maximum reaches ``b`` and its tag-aware bound does too.  Those are scored best
    bound first, in growing batches, raising ``b`` as better pixels turn up.  Same result as
    scoring the whole map; usually a handful of tiles are read per person.
    """
    people = len(centres)
    person = np.repeat(np.arange(people), [len(n) for n in near])
    own = np.concatenate(near)
    score, pixel = tiles.best_per_person(person, own, centres, people)
    hot = np.flatnonzero(tiles.heat_max >= score.min())  # no other tile can beat anyone
    upper = tiles.upper_bounds(centres, hot)
    done = np.isin(own, hot)
    upper[person[done], np.searchsorted(hot, own[done])] = -np.inf  # own tiles are scored already
    order = np.argsort(-upper, axis=1, kind="stable")
    upper = np.take_along_axis(upper, order, axis=1)  # each person's bounds, best first
    start = 0
    while start < len(hot):
        todo_person, column = np.nonzero(upper[:, start:start + batch] >= score[:, None])
        if not todo_person.size:  # bounds are sorted: no later tile can reach b either
            break
        column += start
        other_score, other_pixel = tiles.best_per_person(todo_person, hot[order[todo_person, column]], centres, people)
        better = (other_score > score) | ((other_score == score) & (other_pixel < pixel))
        score, pixel = np.where(better, other_score, score), np.where(better, other_pixel, pixel)
        start, batch = start + batch, batch * 4
    return pixel

