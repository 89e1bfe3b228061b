"""The shared evaluation's measures (one module per kind)."""


def binomial_se(rate: float, n: int) -> float:
    """Standard error of a rate measured on n independent trials, sqrt(p (1 - p) / n)."""
    return float((rate * (1 - rate) / n) ** 0.5)
