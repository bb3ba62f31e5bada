"""Reports read only the results store."""

import math


def present(value) -> bool:
    """A stored number that is there: not None, not NaN (pandas' empty cell)."""
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def peak_memory(details: dict | None) -> float | None:
    """A row's peak memory in MB, where it was measured ([measure] memory)."""
    return ((details or {}).get("memory") or {}).get("peak_mb")


def size_cell(evidence: dict) -> str:
    """A verdict's artifact size change, and its peak memory change where memory was measured."""
    parts = [f"{evidence['size_change']:+.1%}" if present(evidence.get("size_change")) else "—"]
    if present(evidence.get("memory_change")):
        parts.append(f"peak memory {evidence['memory_change']:+.1%}")
    return "; ".join(parts)


def size_text(n) -> str:
    """Bytes in decimal units (kB = 1000 B, MB = 10^6 B), as the HTML report and `compile` print them."""
    if not present(n):
        return "—"
    for unit in ("B", "kB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"
