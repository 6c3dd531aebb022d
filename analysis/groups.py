"""High/low-resource language groups: from ``qd_tasks.languages`` or explicit lists."""

from __future__ import annotations

RESOURCE_CLASSES = ("high", "low")


def _resource(metadata: dict, code: str):
    """Resource class of ``code``, else of its language subtag (``pt_BR`` -> ``pt``)."""
    from qd_tasks.languages import base_language

    return (metadata.get(code) or metadata.get(base_language(code)) or {}).get("resource")


def language_metadata() -> dict[str, dict]:
    """``qd_tasks.languages.LANGUAGES`` as {iso: {"resource": ..., "joshi_class": ...}}; {} if absent."""
    try:
        from qd_tasks import languages
    except ImportError:
        return {}
    table = getattr(languages, "LANGUAGES", {})
    out = {}
    for code, record in table.items():
        get = record.get if isinstance(record, dict) else lambda name, record=record: getattr(record, name, None)
        out[str(code)] = {"resource": get("resource"), "joshi_class": get("joshi_class")}
    return out


def parse_language_list(value: str | None, parameter: str) -> list[str] | None:
    """``"en,de"`` -> ["en", "de"]; None stays None; empty entries are an error."""
    if value is None:
        return None
    codes = [code.strip() for code in value.split(",")]
    if not all(codes):
        raise ValueError(f"{parameter}={value!r} has an empty entry; allowed: comma-separated language codes like en,de")
    return codes


def resource_groups(languages, hr: list[str] | None = None, lr: list[str] | None = None, metadata: dict | None = None) -> dict[str, str]:
    """Map each language to "high" or "low" (languages in neither group are left out).

    Explicit ``hr``/``lr`` lists win; otherwise ``metadata`` (default: the package's
    language table) decides. A language in both explicit lists is a ValueError.
    """
    languages = list(languages)
    if hr is not None or lr is not None:
        overlap = set(hr or ()) & set(lr or ())
        if overlap:
            raise ValueError(f"--hr/--lr share {sorted(overlap)}; allowed: disjoint comma-separated language lists")
        groups = {code: "high" for code in hr or ()} | {code: "low" for code in lr or ()}
        if hr is None or lr is None:  # one list given: the other group comes from metadata
            metadata = language_metadata() if metadata is None else metadata
            for code in languages:
                resource = _resource(metadata, code)
                if code not in groups and resource in RESOURCE_CLASSES:
                    if (resource == "high" and hr is None) or (resource == "low" and lr is None):
                        groups[code] = resource
        return {code: groups[code] for code in languages if code in groups}
    metadata = language_metadata() if metadata is None else metadata
    return {code: _resource(metadata, code) for code in languages if _resource(metadata, code) in RESOURCE_CLASSES}
