"""This machine's float32 matrix-multiply rate: the practical limit for conv training.

    python -m bench.matmul [--sizes 1024,2048] [--repeats 5]

A product of two n x n matrices costs 2*n^3 floating-point operations.
"""
import argparse
import sys

from bench.timing import measure


def matmul_fn(n=2048, backend="tensorflow", times=1):
    """(fn, flops): fn() computes `times` float32 n x n x n products and waits for them."""
    import numpy as np
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    if backend == "numpy":
        def fn():
            for _ in range(times):
                a @ b
    else:
        import tensorflow as tf
        ta, tb = tf.constant(a), tf.constant(b)

        def fn():
            for _ in range(times):
                tf.linalg.matmul(ta, tb).numpy()  # .numpy() waits for the result
    return fn, 2.0 * n ** 3 * times


def matmul_gflops(n=2048, repeats=5, warmup=2, backend="tensorflow"):
    """Median GFLOP/s (and the Timing) of one float32 n x n x n product."""
    fn, flops = matmul_fn(n, backend)
    t = measure(fn, repeats=repeats, warmup=warmup)
    return t.rate(flops / 1e9)[0], t


def best_matmul(sizes=(1024, 2048), repeats=5, backend="tensorflow"):
    """The best median rate over sizes: dict with gflops (median, _min, _max), size, times."""
    best = None
    for n in sizes:
        g, t = matmul_gflops(n, repeats=repeats, backend=backend)
        if best is None or g > best["gflops"]:
            best = {**t.as_dict(2.0 * n ** 3 / 1e9, "gflops"), "size": n}
    return best


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1024,2048",
                   help="comma-separated matrix sizes n (default: 1024,2048)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per size (default: 5)")
    p.add_argument("--backend", choices=["tensorflow", "numpy"], default="tensorflow",
                   help="library doing the product (default: tensorflow, as training uses)")
    a = p.parse_args(argv)
    sizes = [int(s) for s in a.sizes.split(",")]
    r = best_matmul(sizes, a.repeats, a.backend)
    print(f"float32 matmul ({a.backend}, n={r['size']}): {r['gflops']:.1f} GFLOP/s "
          f"(range {r['gflops_min']:.1f}-{r['gflops_max']:.1f}, {r['n']} repeats)")
    return 0


if __name__ == "__main__":
    from yolo3.errors import run_cli
    sys.exit(run_cli(main))
