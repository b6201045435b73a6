"""yolo3.kmeans: IoU k-means, letterbox scaling, metrics (expected values by hand
or from slow references written here)."""
import numpy as np
import pytest
from PIL import Image

from yolo3.anchors import get_anchors, write_anchors
from yolo3.errors import UserError
from yolo3.kmeans import (_cluster_medians, _lloyd, anchor_stats, euclidean_kmeans,
                          evolve_anchors, iou_kmeans, letterbox_scale, read_box_sizes,
                          refine_integer, sort_by_area, wh_iou)

CENTRES = np.array([[10, 13], [16, 30], [33, 23], [30, 61], [62, 45], [59, 119],
                    [116, 90], [156, 198], [373, 326]], dtype=np.float64)


def slow_mean_iou(wh, anchors):
    """Mean over boxes of the best corner-aligned IoU, one box at a time."""
    total = 0.0
    for w, h in np.asarray(wh, dtype=np.float64):
        best = 0.0
        for aw, ah in np.asarray(anchors, dtype=np.float64):
            inter = min(w, aw) * min(h, ah)
            best = max(best, inter / (w * h + aw * ah - inter))
        total += best
    return total / len(wh)


def original_kmeans(boxes, k, seed, max_iter=1000):
    """The original keras-yolo3 algorithm: k random boxes, median update, until the
    assignments stop changing (seeded here)."""
    boxes = np.asarray(boxes, dtype=np.float64)
    clusters = boxes[np.random.RandomState(seed).choice(len(boxes), k, replace=False)]
    last = np.zeros(len(boxes))
    for _ in range(max_iter):
        inter = (np.minimum(boxes[:, None, 0], clusters[None, :, 0])
                 * np.minimum(boxes[:, None, 1], clusters[None, :, 1]))
        union = (boxes[:, 0] * boxes[:, 1])[:, None] + clusters[:, 0] * clusters[:, 1]
        nearest = np.argmin(1 - inter / (union - inter), axis=1)
        if (nearest == last).all():
            break
        for c in range(k):
            clusters[c] = np.median(boxes[nearest == c], axis=0)
        last = nearest
    return clusters


def blobs(centres, per, sigma, seed):
    """Boxes scattered log-normally around each centre."""
    rng = np.random.default_rng(seed)
    return np.concatenate([c * np.exp(rng.normal(0, sigma, (per, 2)))
                           for c in centres]).astype(np.float32)


def test_wh_iou_by_hand():
    iou = wh_iou([[2, 3], [4, 4]], [[3, 1], [4, 4]])
    # (2,3) vs (3,1): inter 2*1 = 2, union 6 + 3 - 2 = 7; vs (4,4): 6 / (6+16-6);
    # (4,4) vs (3,1): inter 3*1 = 3, union 16 + 3 - 3 = 16
    np.testing.assert_allclose(iou, [[2 / 7, 6 / 16], [3 / 16, 1.0]], rtol=1e-6)
    assert iou.dtype == np.float32


def test_anchor_stats_by_hand():
    wh = [[10, 10], [100, 100], [1000, 2]]
    stats = anchor_stats(wh, [[10, 10], [100, 100]])
    # (1000,2): vs (10,10) 20/2080; vs (100,100) 200/11800 -> anchor 1
    assert stats.mean_iou == pytest.approx((2 + 200 / 11800) / 3, rel=1e-6)
    assert stats.counts.tolist() == [1, 2]
    assert stats.bpr_iou == pytest.approx(2 / 3)
    assert stats.bpr_ratio == pytest.approx(2 / 3)        # 1000/100 = 10x > 4x


def test_sort_by_area():
    anchors = np.array([[30, 2], [5, 5], [1, 40]])         # areas 60, 25, 40
    assert sort_by_area(anchors).tolist() == [[5, 5], [1, 40], [30, 2]]


@pytest.mark.parametrize("update", ["median", "mean"])
def test_recovers_known_centres(update):
    wh = blobs(CENTRES, 300, 0.05, seed=1)
    result = iou_kmeans(wh, 9, restarts=5, update=update, seed=0)
    np.testing.assert_allclose(result.anchors, CENTRES, rtol=0.03)
    # the true centres as anchors give (near) the optimum
    assert result.mean_iou >= slow_mean_iou(wh, CENTRES) - 0.002
    assert result.mean_iou == pytest.approx(slow_mean_iou(wh, result.anchors), abs=1e-5)
    assert result.converged


def test_at_least_as_good_as_the_original_over_seeds():
    # overlapping clusters and a long tail: several local optima
    wh = np.concatenate([blobs(CENTRES, 60, 0.35, seed=2),
                         blobs([[5, 5]], 50, 0.8, seed=3)])
    ours = iou_kmeans(wh, 9, restarts=10, seed=0)
    ours_iou = slow_mean_iou(wh, ours.anchors)
    for seed in range(5):
        assert ours_iou >= slow_mean_iou(wh, original_kmeans(wh, 9, seed)) - 1e-9


def test_same_seed_same_anchors():
    wh = blobs(CENTRES, 40, 0.4, seed=4)
    first = iou_kmeans(wh, 9, restarts=3, seed=7)
    again = iou_kmeans(wh, 9, restarts=3, seed=7)
    np.testing.assert_array_equal(first.anchors, again.anchors)


def test_more_restarts_never_worse():
    wh = blobs(CENTRES, 40, 0.4, seed=5)
    assert (iou_kmeans(wh, 9, restarts=8, seed=3).mean_iou
            >= iou_kmeans(wh, 9, restarts=1, seed=3).mean_iou)


def test_cluster_medians_match_numpy_median():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 20, 200).astype(np.float32)     # many ties
    weights = rng.integers(1, 4, 200).astype(np.float64)      # duplicates as counts
    labels = rng.integers(0, 4, 200).astype(np.int8)
    counts = np.bincount(labels, weights=weights, minlength=4)
    got = _cluster_medians(values, np.argsort(values, kind="stable"), labels,
                           weights, 4, counts)
    for c in range(4):
        expanded = np.repeat(values[labels == c], weights[labels == c].astype(int))
        assert got[c] == np.median(expanded)


def test_empty_cluster_is_reseeded():
    rng = np.random.default_rng(0)
    wh = np.concatenate([rng.uniform(10, 12, (50, 2)), rng.uniform(100, 120, (50, 2))])
    wh = wh.astype(np.float32)
    weights = np.ones(len(wh))
    start = np.array([[11, 11], [11, 11], [110, 110]], np.float32)  # twin: 1 gets nothing
    orders = [np.argsort(wh[:, d], kind="stable") for d in (0, 1)]
    centroids, labels, _, _, _ = _lloyd(wh, weights, start, "median", 100, orders)
    assert np.all(np.isfinite(centroids))
    assert len(np.unique(labels)) == 3          # all three clusters hold boxes


def test_empty_cluster_with_the_original_init_gives_nan():
    # what the original did with the same start: the reason for the reseeding
    boxes = np.array([[11, 11], [11, 11], [110, 110], [100, 100]], np.float64)
    clusters = boxes[[0, 1, 2]].copy()
    inter = (np.minimum(boxes[:, None, 0], clusters[None, :, 0])
             * np.minimum(boxes[:, None, 1], clusters[None, :, 1]))
    union = (boxes[:, 0] * boxes[:, 1])[:, None] + clusters[:, 0] * clusters[:, 1] - inter
    nearest = np.argmax(inter / union, axis=1)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        assert np.isnan(np.median(boxes[nearest == 1], axis=0)).all()


def test_iou_distance_beats_euclidean_on_wide_scales():
    wh = blobs(CENTRES, 100, 0.2, seed=6)
    iou = iou_kmeans(wh, 9, restarts=3, seed=0)
    euclid = euclidean_kmeans(wh, 9, restarts=3, seed=0)
    assert slow_mean_iou(wh, iou.anchors) > slow_mean_iou(wh, euclid.anchors) + 0.02
    assert euclid.mean_iou == pytest.approx(slow_mean_iou(wh, euclid.anchors), abs=1e-5)


def test_evolve_never_lowers_mean_iou():
    wh = blobs(CENTRES, 40, 0.3, seed=7)
    start = iou_kmeans(wh, 9, restarts=1, seed=0).anchors
    evolved = evolve_anchors(wh, start, generations=200, seed=0)
    assert evolved.shape == (9, 2)
    assert slow_mean_iou(wh, evolved) >= slow_mean_iou(wh, start) - 1e-6
    # a deliberately poor start is improved
    poor = start * 1.5
    assert slow_mean_iou(wh, evolve_anchors(wh, poor, 200, seed=0)) > slow_mean_iou(wh, poor)


def test_errors():
    with pytest.raises(UserError, match="no boxes"):
        iou_kmeans(np.zeros((0, 2)), 9)
    with pytest.raises(UserError, match="only 3 distinct box sizes for k=9"):
        iou_kmeans([[1, 2], [3, 4], [5, 6], [1, 2]] * 5, 9)
    with pytest.raises(UserError, match="update"):
        iou_kmeans(CENTRES, 9, update="mode")


def test_anchors_file_round_trip(tmp_path):
    result = iou_kmeans(blobs(CENTRES, 50, 0.1, seed=8), 9, restarts=2)
    anchors = np.rint(result.anchors)
    write_anchors(tmp_path / "a.txt", anchors)
    np.testing.assert_array_equal(get_anchors(tmp_path / "a.txt"), anchors)


def test_letterbox_scale_by_hand():
    # 832x416 into 416x416: min(416/832, 416/416) = 0.5; 300x600 into 608x416: 416/600
    np.testing.assert_allclose(letterbox_scale([[832, 416], [300, 600]], (416, 416)),
                               [0.5, 416 / 600])
    assert letterbox_scale([300, 600], (608, 416))[0] == pytest.approx(416 / 600)


def _annotations(tmp_path, text):
    path = tmp_path / "train.txt"
    path.write_text(text)
    return path


def test_read_box_sizes_scales_by_letterbox(tmp_path):
    Image.new("RGB", (832, 416)).save(tmp_path / "wide.png")
    Image.new("RGB", (100, 100)).save(tmp_path / "my image.png")   # space in the name
    path = _annotations(tmp_path, "wide.png 0,0,100,60,0 10,10,30,50,1\n# comment\n"
                                  "my image.png 1,1,11,21.0,0\n\nwide.png\n")
    boxes = read_box_sizes(path, (416, 416))
    np.testing.assert_allclose(boxes.wh, [[50, 30], [10, 20], [41.6, 83.2]], rtol=1e-6)
    assert (boxes.lines, boxes.images) == (3, 2)
    raw = read_box_sizes(path, (416, 416), raw_pixels=True)
    np.testing.assert_array_equal(raw.wh, [[100, 60], [20, 40], [10, 20]])


@pytest.mark.parametrize("text, message", [
    ("a.jpg 1,1,5,5,0\nb.jpg 1,1,5\n", r"train.txt:2: unparsable box.*\(box 1: 1,1,5\)"),
    ("a.jpg 1,1,5,5,0 x,1,5,5,0\n", r"train.txt:1: unparsable box.*\(box 2: x,1,5,5,0\)"),
    ("a.jpg 5,1,5,9,0\n", r"train.txt:1: x_min >= x_max \(box 1: 5,1,5,9,0\)"),
    ("a.jpg\nb.jpg\n", r"train.txt: no boxes in 2 lines"),
    ("1,1,5,5,0\n", r"train.txt:1: no image path"),
    ("a.jpg 1,1,5,nan,0\n", r"train.txt:1: unparsable box, numbers must be finite"),
])
def test_read_box_sizes_errors(tmp_path, text, message):
    with pytest.raises(UserError, match=message):
        read_box_sizes(_annotations(tmp_path, text), raw_pixels=True)


def test_missing_image_names_file_and_line(tmp_path):
    path = _annotations(tmp_path, "a.jpg 1,1,5,5,0\n")
    with pytest.raises(UserError, match=r"train.txt:1: .*a.jpg"):
        read_box_sizes(path)


def test_refine_integer_is_a_whole_pixel_local_optimum():
    wh = np.concatenate([blobs(CENTRES[:5], 40, 0.3, seed=9), blobs([[2, 3]], 30, 0.3, 1)])
    start = iou_kmeans(wh, 6, restarts=2, seed=0).anchors
    refined = refine_integer(wh, start)
    assert np.array_equal(refined, np.rint(refined)) and refined.min() >= 1
    best = slow_mean_iou(wh, refined)
    assert best >= slow_mean_iou(wh, np.maximum(np.rint(start), 1)) - 1e-9
    for i in range(len(refined)):                    # no 1-px move does better
        for step in ([1, 0], [-1, 0], [0, 1], [0, -1], [1, 1], [-1, -1], [1, -1], [-1, 1]):
            moved = refined.copy()
            moved[i] += step
            if moved.min() >= 1:
                assert slow_mean_iou(wh, moved) <= best + 1e-6


def test_polish_raises_mean_iou():
    wh = np.concatenate([blobs(CENTRES, 30, 0.4, seed=10), blobs([[4, 4]], 40, 0.6, 11)])
    plain = iou_kmeans(wh, 9, restarts=3, seed=0, polished=False)
    polished = iou_kmeans(wh, 9, restarts=3, seed=0)
    assert slow_mean_iou(wh, polished.anchors) > slow_mean_iou(wh, plain.anchors)
    assert polished.mean_iou == pytest.approx(slow_mean_iou(wh, polished.anchors), abs=1e-5)


def test_sampled_restarts_on_large_data(monkeypatch):
    import yolo3.kmeans as kmeans
    wh = blobs(CENTRES, 60, 0.3, seed=12)                    # 540 distinct sizes
    exact = iou_kmeans(wh, 9, restarts=5, seed=0)
    monkeypatch.setattr(kmeans, "SAMPLE", 150)               # restarts on a sample
    sampled = iou_kmeans(wh, 9, restarts=5, seed=0)
    again = iou_kmeans(wh, 9, restarts=5, seed=0)
    np.testing.assert_array_equal(sampled.anchors, again.anchors)
    assert sampled.converged                                  # finished on all boxes
    assert sampled.mean_iou == pytest.approx(slow_mean_iou(wh, sampled.anchors), abs=1e-5)
    assert sampled.mean_iou >= exact.mean_iou - 0.005
