"""The preview page's box labels are legible: each label's text on its box colour reaches WCAG 2.x AA for small text.

Why computed: the labels are drawn on a canvas (no CSS a checker could read), bold 12-14 px, so 4.5:1 applies
(WCAG 2.2, 1.4.3 Contrast (Minimum); large text starts at 14 pt bold, ~18.7 px). The colours are read from the
template itself, so a colour changed there is checked here.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parents[2] / "activities" / "templates" / "preview.html"
AA_SMALL_TEXT = 4.5


def _constant(name: str) -> object:
    found = re.search(rf"^const {name} = (.+?);", TEMPLATE.read_text(encoding="utf-8"), re.M)
    assert found, f"{name} is not defined in {TEMPLATE.name}"
    return json.loads(found.group(1))


def _rgb(colour: str) -> tuple[int, int, int]:
    digits = colour.lstrip("#")
    if len(digits) == 3:
        digits = "".join(d * 2 for d in digits)
    return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)


def _luminance(colour: str) -> float:
    """WCAG 2.x relative luminance (sRGB channels linearised)."""
    def linear(c: int) -> float:
        v = c / 255
        return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in _rgb(colour))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    light, dark = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_the_contrast_formula_matches_wcag_reference_values() -> None:
    assert round(contrast("#fff", "#000"), 1) == 21.0
    assert round(contrast("#fff", "#777"), 2) == 4.48  # the well-known grey just below AA


def test_every_label_text_reaches_aa_on_its_box_colour() -> None:
    colours, inks = _constant("COLORS"), _constant("LABEL_TEXT")
    assert isinstance(colours, dict) and isinstance(inks, dict)
    assert set(inks) == set(colours), "every category with a colour has a text colour"
    pairs = {category: (colours[category], inks[category]) for category in colours}
    pairs["other"] = (_constant("OTHER_COLOR"), _constant("OTHER_TEXT"))  # type: ignore[assignment]
    low = {k: round(contrast(str(bg), str(ink)), 2) for k, (bg, ink) in pairs.items()
           if contrast(str(bg), str(ink)) < AA_SMALL_TEXT}
    assert not low, f"label text below {AA_SMALL_TEXT}:1 on its box colour: {low}"


def test_the_drawing_code_uses_the_label_text_colours() -> None:
    page = TEMPLATE.read_text(encoding="utf-8")
    assert 'g.fillStyle = "#fff"' not in page
    assert "LABEL_TEXT[d.category] || OTHER_TEXT" in page
