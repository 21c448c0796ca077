"""Load balancers over one cluster's endpoints (sans-IO, randomness injected).

Every algorithm shares one contract (see balancers/base.py): `acquire` picks
among the healthy, weight > 0, not excluded endpoints, returns None only when
there is none, never raises and counts the attempt on the slot it returns;
`slot.done(ok, now, elapsed)` releases it. `update` keeps the slots of the
endpoints that stay; `set_excluded` takes outlier-ejected ones out of
rotation.

| algorithm            | pick                                              | per pick          |
|----------------------|---------------------------------------------------|-------------------|
| ROUND_ROBIN          | candidates in turn (weights ignored beyond 0)     | O(1)              |
| LEAST_REQUEST        | 2 draws by weight, fewer in flight wins           | O(1) / O(log n)   |
| WEIGHTED_ROUND_ROBIN | smooth weighted round robin (nginx), precomputed  | O(1)              |
| RING_HASH            | consistent hash ring, bucketed bisect             | O(1) expected     |
| MAGLEV               | Maglev lookup table                               | O(1)              |
| PEAK_EWMA            | 2 draws by weight, lower latency x load wins      | O(1), one exp()   |

Hashing balancers take the request's key (`HashKeySource` in hashing.py);
without one they pick at random.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from sidecar.policy.balancers.base import Balancer
from sidecar.policy.balancers.least_request import LeastRequestBalancer
from sidecar.policy.balancers.maglev import MaglevBalancer
from sidecar.policy.balancers.peak_ewma import PeakEwmaBalancer
from sidecar.policy.balancers.ring_hash import RingHashBalancer
from sidecar.policy.balancers.round_robin import RoundRobinBalancer
from sidecar.policy.balancers.slot import EndpointSlot, SlotKey, slot_key
from sidecar.policy.balancers.weighted_round_robin import WeightedRoundRobinBalancer
from skein.config.model import Algorithm, EndpointConfig, LoadBalancerConfig

__all__ = [
    "Balancer",
    "EndpointSlot",
    "LeastRequestBalancer",
    "MaglevBalancer",
    "PeakEwmaBalancer",
    "RingHashBalancer",
    "RoundRobinBalancer",
    "SlotKey",
    "WeightedRoundRobinBalancer",
    "make_balancer",
    "slot_key",
]

_BY_ALGORITHM: dict[Algorithm, type[Balancer]] = {
    Algorithm.ROUND_ROBIN: RoundRobinBalancer,
    Algorithm.LEAST_REQUEST: LeastRequestBalancer,
    Algorithm.WEIGHTED_ROUND_ROBIN: WeightedRoundRobinBalancer,
    Algorithm.RING_HASH: RingHashBalancer,
    Algorithm.MAGLEV: MaglevBalancer,
    Algorithm.PEAK_EWMA: PeakEwmaBalancer,
}


def make_balancer(
    config: LoadBalancerConfig,
    endpoints: Iterable[EndpointConfig] = (),
    rng: random.Random | None = None,
    previous: Balancer | None = None,
) -> Balancer:
    """The balancer `config.algorithm` names, keeping the slots (and exclusions) of `previous`."""
    return _BY_ALGORITHM[config.algorithm](config, endpoints, rng, previous)
