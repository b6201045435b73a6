"""IoU k-means on box sizes: anchors for YOLO (vectorised numpy, float32), and their
report (per anchor: boxes, heads) and plot.

Distance d(box, centroid) = 1 - IoU(wh), both boxes aligned at a corner:
IoU = min(w1,w2)*min(h1,h2) / (w1*h1 + w2*h2 - min(w1,w2)*min(h1,h2)).
Identical (w, h) pairs are clustered once with their count as a weight, which
gives exactly the result of clustering every box.
"""
from dataclasses import dataclass

import numpy as np

from .anchors import anchor_masks
from .annotation_file import read_annotations
from .atomic import atomic_path
from .errors import UserError
from .images import image_size
from .kinds import counts_text, kind_for_anchors
from .progress import progress_bar

UPDATES = ("median", "mean")
# restarts=None: many for small data sets, where a run costs little and k-means'
# local optima are far apart (e.g. 44 boxes: 5% of runs reach the best optimum)
SMALL_DATA, RESTARTS_SMALL, RESTARTS_LARGE = 10_000, 300, 30
# above SAMPLE distinct box sizes the restarts run on a sample first (iou_kmeans)
SAMPLE, FINALISTS = 50_000, 3
# The median and mean updates do not maximise the mean IoU themselves: the kept run
# is polished by local search, steps of 1/16 down to 1/256 of each anchor's size.
POLISH_STEPS = [2.0 ** -e for e in range(4, 9)]
BPR_IOU = 0.25    # a box counts as recallable when some anchor has IoU above this
BPR_RATIO = 4.0   # ... or (ultralytics' rule) w and h within 4x of some anchor
PLOT_POINTS = 20000     # boxes drawn in the scatter at most (a fixed random subset)


# ---------------------------------------------------------------- box sizes ---

def letterbox_scale(image_wh, input_wh):
    """Letterbox factor per image: min(W/iw, H/ih) (as letterbox_image)."""
    image_wh = np.asarray(image_wh, dtype=np.float64).reshape(-1, 2)
    input_wh = np.asarray(input_wh, dtype=np.float64)
    return np.min(input_wh / image_wh, axis=1)


@dataclass
class BoxSizes:
    """Box (w, h) from an annotation file, with what was read."""
    wh: np.ndarray          # (N, 2) float32, input pixels (or raw image pixels)
    lines: int              # annotation lines read
    images: int             # distinct images with boxes


def read_box_sizes(annotation_path, input_wh=(416, 416), raw_pixels=False, progress=None):
    """Box (w, h) of every box in the annotation file.

    Boxes are scaled by their image's letterbox factor into network-input pixels
    (anchors live there); raw_pixels keeps image pixels, as the original did.
    A bar over the lines shows when `progress` (None: on a terminal).
    """
    lines = read_annotations(annotation_path, check_images=False, progress=False)
    with progress_bar(len(lines), "reading box sizes", progress, unit="line") as advance:
        wh, sizes = _box_sizes(lines, input_wh, raw_pixels, advance)
    if not wh:
        raise UserError(f"{annotation_path}: no boxes in {len(lines)} lines")
    return BoxSizes(np.concatenate(wh).astype(np.float32), len(lines), len(sizes))


def _box_sizes(lines, input_wh, raw_pixels, advance):
    """([(n, 2) box sizes per line with boxes], {image path: size or None})."""
    sizes = {}       # image size cache: duplicate lines need one header read
    wh = []
    for line in lines:
        advance()
        if not len(line.boxes):
            continue
        box_wh = (line.boxes[:, 2:4] - line.boxes[:, 0:2]).astype(np.float64)
        key = line.path
        if not raw_pixels:
            if key not in sizes:
                try:
                    sizes[key] = image_size(key)
                except UserError as exc:
                    raise UserError(f"{line.source}: {exc} (the image size is needed to "
                                    "scale its boxes; --raw-pixels clusters image pixels "
                                    "without it)") from None
                except OSError as exc:
                    raise UserError(f"{line.source}: cannot read image size of {key} "
                                    f"({exc.strerror or exc})") from None
            box_wh *= letterbox_scale(sizes[key], input_wh)[0]
        else:
            sizes.setdefault(key, None)
        wh.append(box_wh)
    return wh, sizes


# ------------------------------------------------------------------ metrics ---

def wh_iou(wh, anchors):
    """IoU of corner-aligned boxes: (N, 2), (K, 2) -> (N, K) float32."""
    wh = np.asarray(wh, dtype=np.float32)
    anchors = np.asarray(anchors, dtype=np.float32)
    inter = (np.minimum(wh[:, None, 0], anchors[None, :, 0])
             * np.minimum(wh[:, None, 1], anchors[None, :, 1]))
    union = (wh[:, 0] * wh[:, 1])[:, None] + (anchors[:, 0] * anchors[:, 1])[None, :]
    union -= inter
    inter /= union
    return inter


def _wsum(values, weights):
    """sum(values * weights) without BLAS (its threads stall on a busy machine)."""
    return float(np.einsum("i,i->", values, weights))


def _best(wh, anchors, chunk=1 << 16):
    """(index, IoU) of each box's best anchor, in cache-sized chunks."""
    index = np.empty(len(wh), dtype=np.int64)
    best = np.empty(len(wh), dtype=np.float32)
    for start in range(0, len(wh), chunk):
        iou = wh_iou(wh[start:start + chunk], anchors)
        index[start:start + chunk] = np.argmax(iou, axis=1)
        best[start:start + chunk] = iou[np.arange(len(iou)), index[start:start + chunk]]
    return index, best


@dataclass
class AnchorStats:
    mean_iou: float         # mean over boxes of the best anchor's IoU ("Accuracy")
    bpr_iou: float          # share of boxes with best IoU > BPR_IOU
    bpr_ratio: float        # share of boxes within BPR_RATIO x in w and h of an anchor
    counts: np.ndarray      # (K,) boxes whose best anchor is each anchor


def anchor_stats(wh, anchors, weights=None):
    """Mean best IoU, best possible recall and per-anchor box counts."""
    if weights is None:                        # identical sizes counted once
        wh, weights = _unique_wh(wh)
    wh = np.asarray(wh, dtype=np.float32)
    anchors = np.asarray(anchors, dtype=np.float32)
    weights = np.asarray(weights, np.float64)
    index, best = _best(wh, anchors)
    ratio = wh[:, None, :] / anchors[None, :, :]
    worst_side = np.minimum(ratio, 1 / ratio).min(axis=2)         # (N, K)
    within = worst_side.max(axis=1) > 1 / BPR_RATIO
    total = weights.sum()
    return AnchorStats(
        mean_iou=float(_wsum(best, weights) / total),
        bpr_iou=float(weights[best > BPR_IOU].sum() / total),
        bpr_ratio=float(weights[within].sum() / total),
        counts=np.bincount(index, weights=weights, minlength=len(anchors)).astype(np.int64))


def sort_by_area(anchors):
    """Anchors ordered by w*h (ties by width); the original sorted by width only."""
    anchors = np.asarray(anchors)
    return anchors[np.lexsort((anchors[:, 0], anchors[:, 0] * anchors[:, 1]))]


# ------------------------------------------------------------------ k-means ---

@dataclass
class KMeansResult:
    anchors: np.ndarray     # (K, 2) float32, sorted by area
    mean_iou: float         # weighted mean best IoU of the kept run
    iterations: int         # iterations of the kept run
    converged: bool         # assignments stopped changing before max_iter
    restarts: int


def _unique_wh(wh):
    """Distinct (w, h) rows with counts, via one 1-D sort of the packed float pair."""
    wh = np.ascontiguousarray(wh, dtype=np.float32)
    keys = wh.view(np.uint64).ravel()
    keys, counts = np.unique(keys, return_counts=True)
    return keys.view(np.float32).reshape(-1, 2), counts.astype(np.float64)


def _seed_plus_plus(wh, weights, k, rng):
    """k-means++: each next centre drawn with probability ~ weight * (1 - IoU)^2
    to the nearest centre chosen so far."""
    p = weights / weights.sum()
    centres = [rng.choice(len(wh), p=p)]
    nearest = 1 - wh_iou(wh, wh[centres[-1]][None])[:, 0]
    for _ in range(1, k):
        score = weights * nearest.astype(np.float64) ** 2
        if score.sum() <= 0:                   # every box equals a centre already
            break
        centres.append(rng.choice(len(wh), p=score / score.sum()))
        nearest = np.minimum(nearest, 1 - wh_iou(wh, wh[centres[-1]][None])[:, 0])
    return wh[centres].copy()


def _cluster_medians(values, order, labels, weights, k, counts):
    """np.median of `values` per cluster, each point repeated `weights` times.

    `order` sorts values ascending. A stable sort of the small-int labels (radix)
    groups points by cluster keeping that order; the median of n boxes is the
    mean of ranks (n-1)//2 and n//2, found in the running box count.
    """
    grouped = order[np.argsort(labels[order], kind="stable")]
    running = np.cumsum(weights[grouped])
    start = np.cumsum(counts) - counts
    lo = np.searchsorted(running, start + (counts - 1) // 2, side="right")
    hi = np.searchsorted(running, start + counts // 2, side="right")
    lo, hi = np.minimum(lo, len(grouped) - 1), np.minimum(hi, len(grouped) - 1)
    return (values[grouped[lo]] + values[grouped[hi]]) / 2


def _lloyd(wh, weights, centroids, update, max_iter, orders):
    """Assign to the best-IoU centroid, update by median or mean, until stable."""
    k = len(centroids)
    small = np.int8 if k < 128 else np.int16
    labels = None
    for iteration in range(1, max_iter + 1):
        new, best = _best(wh, centroids)
        new = new.astype(small)
        if labels is not None and np.array_equal(new, labels):
            return centroids, labels, best, iteration, True
        labels = new
        counts = np.bincount(labels, weights=weights, minlength=k)
        if update == "median":
            centroids = np.stack([
                _cluster_medians(wh[:, d], orders[d], labels, weights, k, counts)
                for d in (0, 1)], axis=1).astype(np.float32)
        else:
            sums = np.stack([np.bincount(labels, weights=weights * wh[:, d], minlength=k)
                             for d in (0, 1)], axis=1)
            centroids = (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
        empty = np.flatnonzero(counts == 0)
        if len(empty):
            # the original got NaN here; take the boxes farthest from their centroid
            farthest = np.argsort(best, kind="stable")[:len(empty)]
            centroids[empty] = wh[farthest]
    _, best = _best(wh, centroids)
    return centroids, labels, best, max_iter, False


def auto_restarts(distinct):
    """Default number of restarts for `distinct` box sizes."""
    return RESTARTS_SMALL if distinct <= SMALL_DATA else RESTARTS_LARGE


def iou_kmeans(wh, k=9, restarts=None, update="median", max_iter=300, seed=0,
               polished=True, progress=None):
    """k-means with distance 1 - IoU; best of `restarts` k-means++ runs
    (None: auto_restarts), then `polish`ed unless polished=False.

    With more than SAMPLE distinct box sizes, the restarts run on a weighted
    sample of SAMPLE box sizes; the FINALISTS best of them then continue on all
    boxes until their assignments stop changing, and the best of those is kept.
    A bar over the runs shows when `progress` (None: on a terminal).
    """
    if update not in UPDATES:
        raise UserError(f"update must be one of {', '.join(UPDATES)} ({update!r})")
    points, weights = _prepare(wh, k)
    restarts = max(1, auto_restarts(len(points)) if restarts is None else restarts)
    rng = np.random.default_rng(seed)
    sampled = len(points) > SAMPLE
    with progress_bar(restarts + (FINALISTS if sampled else 0), "k-means", progress,
                      unit="run") as advance:
        if sampled:
            drawn = rng.choice(len(points), SAMPLE, p=weights / weights.sum())
            index, counts = np.unique(drawn, return_counts=True)
            runs = _restarts(points[index], counts.astype(np.float64), k, restarts,
                             update, max_iter, rng, advance)
            finalists = sorted(runs, key=lambda run: -run[1])[:FINALISTS]
            runs = []
            for centroids, _, _, _ in finalists:
                runs.append(_run(points, weights, centroids, update, max_iter))
                advance()
        else:
            runs = _restarts(points, weights, k, restarts, update, max_iter, rng, advance)
    centroids, mean_iou, iterations, converged = max(runs, key=lambda run: run[1])
    if polished:
        centroids = _climb(points, weights, centroids, POLISH_STEPS, relative=True)
        mean_iou = _wsum(_best(points, centroids)[1], weights) / weights.sum()
    return KMeansResult(sort_by_area(centroids), mean_iou, iterations, converged, restarts)


def _restarts(points, weights, k, restarts, update, max_iter, rng, advance):
    """(centroids, mean IoU, iterations, converged) of each k-means++ run;
    advance() after each."""
    runs = []
    for _ in range(restarts):
        start = _seed_plus_plus(points, weights, k, rng)
        if len(start) < k:                     # fewer distinct boxes than k
            raise UserError(f"only {len(points)} distinct box sizes for k={k}")
        runs.append(_run(points, weights, start, update, max_iter))
        advance()
    return runs


def _run(points, weights, start, update, max_iter):
    orders = [np.argsort(points[:, d], kind="stable") for d in (0, 1)]
    centroids, _, best, iterations, converged = _lloyd(
        points, weights, start, update, max_iter, orders)
    return centroids, _wsum(best, weights) / weights.sum(), iterations, converged


def euclidean_kmeans(wh, k=9, restarts=None, max_iter=300, seed=0):
    """scikit-learn KMeans on (w, h), the plain Euclidean clustering often used for anchors."""
    from sklearn.cluster import KMeans
    points, weights = _prepare(wh, k)
    restarts = auto_restarts(len(points)) if restarts is None else restarts
    model = KMeans(n_clusters=k, n_init=max(1, restarts), max_iter=max_iter,
                   random_state=seed).fit(points, sample_weight=weights)
    centroids = model.cluster_centers_.astype(np.float32)
    _, best = _best(points, centroids)
    return KMeansResult(sort_by_area(centroids), float(_wsum(best, weights) / weights.sum()),
                        int(model.n_iter_), int(model.n_iter_) < max_iter, max(1, restarts))


def _prepare(wh, k):
    wh = np.asarray(wh, dtype=np.float32).reshape(-1, 2)
    if not len(wh):
        raise UserError("no boxes to cluster")
    if not np.all(np.isfinite(wh)) or np.any(wh <= 0):
        raise UserError("box widths and heights must be positive")
    if k < 1:
        raise UserError(f"k must be at least 1 ({k})")
    points, weights = _unique_wh(wh)
    if len(points) < k:
        raise UserError(f"only {len(points)} distinct box sizes for k={k}")
    return points, weights


# one anchor moves at a time: in w, in h, or in both (8 neighbours)
_DIRECTIONS = np.array([[1, 0], [-1, 0], [0, 1], [0, -1],
                        [1, 1], [-1, -1], [1, -1], [-1, 1]], dtype=np.float32)


def _climb(points, weights, anchors, steps, relative, max_passes=50):
    """Coordinate ascent of the weighted mean best IoU: for each step size in turn,
    move one anchor by the step (times the anchor's size when relative) while that
    raises the mean IoU. Anchors stay >= 1 px."""
    anchors = np.array(anchors, dtype=np.float32)

    def column(anchor):                        # IoU with one anchor (float64 sums)
        return wh_iou(points, anchor[None])[:, 0].astype(np.float64)

    rows = np.stack([column(a) for a in anchors])          # (K, U), rows contiguous
    for step in steps:
        for _ in range(max_passes):
            moved = False
            for i in range(len(anchors)):
                others = np.delete(rows, i, axis=0).max(axis=0, initial=0.0)
                score = _wsum(np.maximum(others, rows[i]), weights)
                for direction in _DIRECTIONS:
                    size = anchors[i] * step if relative else step
                    candidate = anchors[i] + direction * size
                    if candidate.min() < 1:
                        continue
                    iou = column(candidate)
                    new_score = _wsum(np.maximum(others, iou), weights)
                    if new_score > score * (1 + 1e-9):
                        anchors[i], rows[i], score, moved = candidate, iou, new_score, True
            if not moved:
                break
    return anchors


def refine_integer(wh, anchors):
    """Round the anchors to whole pixels (the file format), then move them 1 px at a
    time (w, h or both) while the mean best IoU rises."""
    points, weights = _prepare(wh, len(anchors))
    anchors = np.maximum(np.rint(anchors), 1)
    return sort_by_area(_climb(points, weights, anchors, [1.0], relative=False))


def evolve_anchors(wh, anchors, generations=1000, seed=0, prob=0.9, sigma=0.1):
    """Genetic refinement (as ultralytics' kmean_anchors): scale the anchors by
    random factors; keep a mutation when the mean best IoU rises and the best
    possible recall does not fall. Returns the anchors sorted by area."""
    points, weights = _prepare(wh, len(anchors))
    rng = np.random.default_rng(seed)
    total = weights.sum()

    def fitness(candidate):                    # (mean best IoU, recall at BPR_IOU)
        _, best = _best(points, candidate)
        return _wsum(best, weights) / total, weights[best > BPR_IOU].sum() / total

    parent = np.asarray(anchors, dtype=np.float32)
    score = fitness(parent)
    for _ in range(generations):
        factor = np.ones_like(parent)
        while np.all(factor == 1):             # mutate until something changes
            mutate = rng.random(parent.shape) < prob
            factor = (mutate * rng.random() * rng.standard_normal(parent.shape) * sigma
                      + 1).clip(0.3, 3.0).astype(np.float32)
        child = np.maximum(parent * factor, 1.0)
        child_score = fitness(child)
        if child_score[0] > score[0] and child_score[1] >= score[1]:
            parent, score = child, child_score
    return sort_by_area(parent)


# ------------------------------------------------------------------ reports ---

def head_names(k, mask, input_wh):
    """Per anchor: the heads (by output grid) whose mask holds it."""
    try:
        masks = anchor_masks(k, mask)
    except UserError:
        if mask is not None:
            raise
        return None
    strides = kind_for_anchors(k).strides
    names = []
    for anchor in range(k):
        heads = [f"{input_wh[0] // strides[h]}x{input_wh[1] // strides[h]}"
                 for h, head in enumerate(masks) if anchor in head]
        names.append(" + ".join(heads) if heads else "none (unused by the mask)")
    return names


def anchor_report(wh, anchors, mask=None, input_wh=(416, 416)):
    """The anchors table (size, boxes whose best anchor it is, their share, the
    heads using it) with notes, mean best IoU and best possible recall, as lines."""
    k = len(anchors)
    stats = anchor_stats(wh, anchors)
    heads = head_names(k, mask, input_wh)
    lines = ["anchors (w,h), sorted by area; boxes = boxes whose best anchor it is:",
             f"  {'#':>2s}  {'w,h':>9s}  {'boxes':>7s}  {'share':>6s}  head"]
    for index, ((w, h), count) in enumerate(zip(anchors, stats.counts)):
        head = heads[index] if heads else "-"
        lines.append(f"  {index:2d}  {int(w):>4d},{int(h):<4d}  {count:7d}  "
                     f"{count / len(wh):6.1%}  {head}")
    if heads is None:
        lines.append(f"note: train.py takes {counts_text()} anchors, not {k}")
    else:
        lost = sum(int(c) for c, h in zip(stats.counts, heads) if h.startswith("none"))
        if lost:
            lines.append(f"note: {lost} boxes ({lost / len(wh):.1%}) have their best anchor "
                         "in no head of this mask and get no training target; "
                         "a mask such as 3,4,5/0,1,2 uses every anchor")
    lines += [f"Accuracy: {stats.mean_iou:.2%} (mean best IoU)",
              f"Best possible recall: {stats.bpr_iou:.2%} of boxes with IoU > {BPR_IOU} to "
              f"an anchor; {stats.bpr_ratio:.2%} within {BPR_RATIO:g}x in w and h"]
    return stats, lines


def plot_clusters(path, wh, anchors, input_wh, title, seed=0, raw_pixels=False):
    """Two panels: box (w, h) coloured by nearest anchor (viridis) with the anchors
    as black points; the anchors as rectangles on the network input (or, with
    raw_pixels, centred on a frame of the network input's size)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle
    import matplotlib

    if len(wh) > PLOT_POINTS:
        wh = wh[np.random.default_rng(seed).choice(len(wh), PLOT_POINTS, replace=False)]
    labels = np.argmax(wh_iou(wh, anchors), axis=1)
    colours = matplotlib.colormaps["viridis"](np.linspace(0, 1, len(anchors)))
    figure = Figure(figsize=(12, 5.5), dpi=100)
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    left.scatter(wh[:, 0], wh[:, 1], c=labels, s=6, cmap="viridis",
                 vmin=0, vmax=max(len(anchors) - 1, 1))
    left.scatter(anchors[:, 0], anchors[:, 1], c="black", s=40, alpha=0.8,
                 label="anchors (centroids)")
    unit = "image pixels" if raw_pixels else "input pixels"
    left.set_xlabel(f"box width ({unit})")
    left.set_ylabel(f"box height ({unit})")
    left.set_title(f"{len(wh)} boxes by nearest anchor (IoU)")
    left.legend(loc="upper left")
    cx, cy = input_wh[0] / 2, input_wh[1] / 2
    right.add_patch(Rectangle((0, 0), *input_wh, fill=False, edgecolor="grey",
                              linestyle="--", label="network input"))
    for index, ((w, h), colour) in enumerate(zip(anchors, colours)):
        right.add_patch(Rectangle((cx - w / 2, cy - h / 2), w, h, fill=False,
                                  edgecolor=colour, linewidth=2,
                                  label=f"{index}: {w:.0f}x{h:.0f}"))
    span = max(input_wh[0], input_wh[1], anchors[:, 0].max(), anchors[:, 1].max())
    right.set_xlim(cx - span / 2 - 5, cx + span / 2 + 5)
    right.set_ylim(cy + span / 2 + 5, cy - span / 2 - 5)      # image y axis points down
    right.set_aspect("equal")
    right.set_xlabel(f"x ({unit})")
    right.set_ylabel(f"y ({unit})")
    right.set_title("anchors (raw image pixels)" if raw_pixels
                    else "anchors on the network input")
    right.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    with atomic_path(path) as temp:
        figure.savefig(temp, format="png")
