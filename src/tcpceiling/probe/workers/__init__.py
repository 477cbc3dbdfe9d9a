"""The probe's worker processes and their typed messages: client workers that open,
pace, hold and re-verify connections, sink shards that accept them, and how the
coordinator forks, hears and ends them. A change to how connections are opened or
held lands here."""
