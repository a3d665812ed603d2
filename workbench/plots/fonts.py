"""Chinese glyphs in matplotlib figures: the CJK font the install provides, as a fallback after the usual font.

Plotly figures are drawn by the browser, which has CJK fonts; matplotlib draws with its own
fonts, which have none. The ``noto-cjk-sans-otc`` package (a dependency; SIL Open Font License)
ships Noto Sans CJK; :func:`font_rc` registers it once and puts it after the current families,
so Latin text looks as before and Chinese text finds its glyphs. In English nothing changes.

Example:
    >>> from workbench.i18n import set_language
    >>> set_language("en"); font_rc()
    {}
"""
from __future__ import annotations

import warnings

from ..i18n import language

CJK_FAMILY = "Noto Sans CJK SC"  # the simplified-Chinese face of the collection
_registered: list[bool] = []


def _register() -> bool:
    """Add the shipped CJK font to matplotlib's font list (once); False, with a warning, when it is missing."""
    if not _registered:
        try:
            from noto_cjk_sans_otc import FONT_PATH
        except ImportError:
            warnings.warn("Chinese text in matplotlib figures needs the noto-cjk-sans-otc package "
                          "(pip install noto-cjk-sans-otc); without it the glyphs show as boxes", stacklevel=3)
            _registered.append(False)
        else:
            from matplotlib import font_manager

            font_manager.fontManager.addfont(str(FONT_PATH))
            _registered.append(True)
    return _registered[0]


def font_rc() -> dict:
    """The ``rcParams`` a matplotlib figure is built under: the CJK fallback in Chinese, nothing in English.

    Use as ``with matplotlib.rc_context(font_rc()): ...`` around building the figure (each text keeps
    the fonts it was created with).
    """
    if language() == "en" or not _register():
        return {}
    import matplotlib

    families = [f for f in matplotlib.rcParams["font.family"] if f != CJK_FAMILY]
    return {"font.family": [*families, CJK_FAMILY]}
