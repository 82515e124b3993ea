"""Short, readable durations and sizes for messages a person acts on."""


def duration(seconds: float) -> str:
    s = max(0.0, float(seconds))
    if s < 90:
        return "%d s" % round(s)
    if s < 90 * 60:
        return "%d min" % round(s / 60)
    if s < 36 * 3600:
        return "%.1f h" % (s / 3600) if s < 10 * 3600 else "%d h" % round(s / 3600)
    return "%.1f days" % (s / 86400) if s < 10 * 86400 else "%d days" % round(s / 86400)


def size(n: float) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return ("%d %s" if unit == "B" else "%.1f %s") % (value, unit)
        value /= 1024
    return "%.1f PiB" % value  # pragma: no cover - unreachable, keeps mypy content
