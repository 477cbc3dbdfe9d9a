"""One module per limit family; each exposes evaluate(ctx) -> list[Constraint].
The explicit list of families is tcpceiling.analysis.registry."""


def fit(capacity: float, in_use: float, per_connection: float) -> int:
    """Connections that fit in what is left: floor((capacity - in_use) / per), never < 0."""
    if per_connection <= 0:
        raise ValueError("per_connection must be positive")
    return max(0, int((capacity - in_use) // per_connection))
