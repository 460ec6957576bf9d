"""Quantiles from Prometheus histogram buckets, as `histogram_quantile` computes them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Quantile:
    """A quantile estimate and the bucket it was interpolated in (upper bound may be inf)."""

    value: float
    lower: float
    upper: float


def cumulative_buckets(samples: Mapping[str, float], name: str) -> list[tuple[float, float]]:
    """Return [(le, cumulative count)] of histogram `name` from parsed samples, sorted by le."""
    prefix = f"{name}_bucket{{le="
    buckets = [
        (float(key[len(prefix) : -1]), count)
        for key, count in samples.items()
        if key.startswith(prefix)
    ]
    if not buckets:
        raise ValueError(f"no buckets of {name} in the scrape")
    return sorted(buckets)


def subtract(
    after: list[tuple[float, float]], before: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    """Return the buckets of what was observed between two scrapes of one histogram."""
    earlier = dict(before)
    return [(le, count - earlier.get(le, 0.0)) for le, count in after]


def quantile(q: float, buckets: list[tuple[float, float]]) -> Quantile:
    """Interpolate quantile `q` linearly inside its bucket; in the +Inf bucket, its lower bound."""
    if not 0 <= q <= 1:
        raise ValueError(f"quantile must be in [0, 1], not {q}")
    total = buckets[-1][1]
    if total <= 0:
        raise ValueError("the histogram is empty")
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for upper_bound, count in buckets:
        if count >= rank:
            if math.isinf(upper_bound):
                return Quantile(lower_bound, lower_bound, upper_bound)
            in_bucket = count - lower_count
            fraction = (rank - lower_count) / in_bucket if in_bucket else 1.0
            value = lower_bound + (upper_bound - lower_bound) * fraction
            return Quantile(value, lower_bound, upper_bound)
        lower_bound, lower_count = upper_bound, count
    raise AssertionError("the +Inf bucket holds every observation")
