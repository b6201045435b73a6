"""Timing helper: median, min and max wall time of a callable after warm-up."""
import statistics
import time
from dataclasses import dataclass, field


@dataclass
class Timing:
    """Seconds per call over `n` timed repeats (after the warm-up calls)."""
    median: float
    min: float
    max: float
    n: int
    samples: list = field(default_factory=list, repr=False)

    @classmethod
    def of(cls, samples):
        """The Timing of a non-empty list of seconds."""
        return cls(statistics.median(samples), min(samples), max(samples), len(samples),
                   list(samples))

    def rate(self, units=1.0):
        """(median, best, worst) of units per second; best comes from the min time."""
        return units / self.median, units / self.min, units / self.max

    def as_dict(self, units=None, unit_name="per_s"):
        out = {"median_s": self.median, "min_s": self.min, "max_s": self.max, "n": self.n}
        if units is not None:
            med, best, worst = self.rate(units)
            out.update({unit_name: med, unit_name + "_max": best, unit_name + "_min": worst})
        return out


def measure(fn, repeats=5, warmup=1, max_seconds=None, clock=time.perf_counter):
    """Call fn() `warmup` times untimed, then time up to `repeats` calls.

    With max_seconds, stop early once the timed calls have used that much time
    (at least one timed call is always made).
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0 (got {repeats}, {warmup})")
    for _ in range(warmup):
        fn()
    samples = []
    spent = 0.0
    for _ in range(repeats):
        t0 = clock()
        fn()
        dt = clock() - t0
        samples.append(dt)
        spent += dt
        if max_seconds is not None and spent >= max_seconds:
            break
    return Timing.of(samples)


def measure_paired(fn, ref, repeats=5, warmup=1, clock=time.perf_counter):
    """Alternate ref() and fn() (ref first in each pair) after `warmup` untimed
    calls of each; returns (Timing of fn, Timing of ref, fn time / ref time per pair).

    On a shared, noisy machine the per-pair ratio compares fn with a reference
    measured moments before it, under the same load.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0 (got {repeats}, {warmup})")
    for _ in range(warmup):
        ref()
        fn()
    fn_s, ref_s = [], []
    for _ in range(repeats):
        for call, out in ((ref, ref_s), (fn, fn_s)):
            t0 = clock()
            call()
            out.append(clock() - t0)
    ratios = [f / r for f, r in zip(fn_s, ref_s)]

    return Timing.of(fn_s), Timing.of(ref_s), ratios
