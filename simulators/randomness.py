"""Deterministic noise addressed by integers instead of drawn from a stream.

The same (key, coordinates) gives the same number in every process and on every run, so a
simulated value depends only on (seed, device, timestamp), never on how many values came before.
"""

from __future__ import annotations

import hashlib
import math
from typing import Final

_MASK: Final = (1 << 64) - 1
_TO_UNIT: Final = 2.0**-53
_HALF_MASK: Final = (1 << 32) - 1
_TO_HALF_UNIT: Final = 2.0**-32
_POISSON_EXACT_BELOW: Final = 30.0


def _mix64(value: int) -> int:
    """The splitmix64 finalizer: a cheap, well-spread 64-bit integer hash."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK
    return value ^ (value >> 31)


def stable_key(*parts: str | int) -> int:
    """A 64-bit key from names and numbers, stable across processes (unlike ``hash``)."""
    text = "\x1f".join(str(part) for part in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def _hash(key: int, coords: tuple[int, ...]) -> int:
    value = key & _MASK
    for coord in coords:
        value = _mix64(value ^ (coord & _MASK))
    return value


def uniform(key: int, *coords: int) -> float:
    """A number in [0, 1) addressed by ``key`` and ``coords``."""
    return (_hash(key, coords) >> 11) * _TO_UNIT


def normal(key: int, *coords: int) -> float:
    """A standard normal number addressed by ``key`` and ``coords`` (Box-Muller on the two
    halves of one hash: plenty of resolution for noise, and a third of the cost)."""
    value = _hash(key, coords)
    u1 = ((value >> 32) + 1) * _TO_HALF_UNIT  # in (0, 1]: the logarithm stays finite
    u2 = (value & _HALF_MASK) * _TO_HALF_UNIT
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def poisson(mean: float, key: int, *coords: int) -> int:
    """A Poisson count with the given mean: exact inversion for small means, a rounded normal
    approximation for large ones."""
    if mean <= 0:
        return 0
    if mean >= _POISSON_EXACT_BELOW:
        return max(0, round(mean + math.sqrt(mean) * normal(key, *coords)))
    target = uniform(key, *coords)
    probability = math.exp(-mean)
    cumulative = probability
    count = 0
    while target > cumulative and probability > 0:
        count += 1
        probability *= mean / count
        cumulative += probability
    return count


def smooth(key: int, position: float) -> float:
    """Value noise in [-1, 1] that varies smoothly with ``position`` (one knot per unit), for
    slow drifts such as the weather of the day or a road's busier hours."""
    knot = math.floor(position)
    fraction = position - knot
    low = uniform(key, knot) * 2.0 - 1.0
    high = uniform(key, knot + 1) * 2.0 - 1.0
    weight = fraction * fraction * (3.0 - 2.0 * fraction)
    return low + (high - low) * weight
