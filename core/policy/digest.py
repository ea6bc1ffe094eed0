"""A digest of what a policy has learned: equal on two brokers exactly when their policies are.

SHA-256 over the learned parameter arrays in a fixed order: the hit model's arms, then the fill
model's, each as a_inv, b, n, every array as its name, dtype, shape and little-endian bytes.
Left out: the moving average of shard latencies (BanditPolicy.latency_ms), which each broker
measures of its own calls and never learns from the event log, and the query history (feature
input, not a parameter; it follows the same events). Two brokers that applied the same events in
the same order run the same floating-point operations and so have bit-equal arrays.
"""

from __future__ import annotations

import hashlib

import numpy as np

from core.policy.policies import BanditPolicy

PARTS = ("a_inv", "b", "n")


def policy_digest(policy: BanditPolicy) -> str:
    """Hex SHA-256 of `policy`'s learned parameters (module docstring)."""
    h = hashlib.sha256()
    for model, state in (("arms", policy.arms.state()), ("fill", policy.fill.state())):
        for part in PARTS:
            x = np.ascontiguousarray(state[part])
            x = x.astype(x.dtype.newbyteorder("<"), copy=False)
            h.update(f"{model}.{part}:{x.dtype.str}:{x.shape};".encode())
            h.update(x.tobytes())
    return h.hexdigest()
