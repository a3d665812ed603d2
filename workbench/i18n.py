"""The language of panels, figures and printed summaries: English, or Chinese from the shipped catalogue.

Text is translated when it is produced, so ``set_language("zh")`` changes the next panel, figure
or summary built. The default comes from ``WORKBENCH_LANG``, then gettext's usual variables
(``LANGUAGE``, ``LC_ALL``, ``LC_MESSAGES``, ``LANG``), then English. Strings that Ultralytics and
YOLOv5 print ("Transferred 448/499 items", ``--freeze``) stay as printed; :func:`gloss` adds a note
beside them in the reader's language (nothing in English, where they explain themselves).

The catalogue is ``workbench/locale/zh/LC_MESSAGES/workbench.po``; after editing it, compile it with GNU
gettext's ``msgfmt -o workbench.mo workbench.po`` in that folder (a test checks the ``.mo`` matches the ``.po``).

Example:
    >>> set_language("zh-CN"); print(_("freeze depth"))
    冻结深度
    >>> set_language("en"); print(_("freeze depth"), ngettext("{n} layer", "{n} layers", 2).format(n=2))
    freeze depth 2 layers
"""
from __future__ import annotations

import gettext
import os
import warnings
from pathlib import Path

DOMAIN = "workbench"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
LANGUAGES = {"en": "English", "zh": "中文 (简体)"}
_ENGLISH = gettext.NullTranslations()
_state = {"language": "en", "translations": _ENGLISH}


def _code(name: str) -> str:
    """``"zh_CN.UTF-8"``, ``"zh-CN"``, ``"ZH"`` -> ``"zh"``; ``"C"`` and ``"POSIX"`` -> ``"en"``."""
    code = name.strip().replace("-", "_").split(".")[0].split("@")[0].split("_")[0].lower()
    return "en" if code in ("c", "posix") else code


def set_language(language: str) -> None:
    """Panels, figures and summaries built from now on speak ``language``: ``"en"`` or ``"zh"``
    (``"zh_CN"``, ``"zh-CN"`` and locale names such as ``"zh_CN.UTF-8"`` are accepted too)."""
    code = _code(language) if isinstance(language, str) else None
    if code not in LANGUAGES:
        known = ", ".join(f"{c!r} ({name})" for c, name in LANGUAGES.items())
        raise ValueError(f"language={language!r} is not available: choose one of {known}")
    if code == "en":
        translations = _ENGLISH
    else:
        with open(LOCALE_DIR / code / "LC_MESSAGES" / f"{DOMAIN}.mo", "rb") as catalogue:
            translations = gettext.GNUTranslations(catalogue)
    _state.update(language=code, translations=translations)


def language() -> str:
    """The current language's code (``"en"`` or ``"zh"``)."""
    return _state["language"]


def _(message: str) -> str:
    """``message`` in the current language (itself in English or when the catalogue lacks it)."""
    return _state["translations"].gettext(message)


def N_(message: str) -> str:
    """Mark ``message`` for the catalogue where it is defined (a constant); :func:`_` translates it where shown."""
    return message


def labels(names) -> dict[str, str]:
    """``{name: translation}`` for names marked with :func:`N_` (a table's headings: ``Table(..., labels=)``)."""
    return {name: _(name) for name in names}


def ngettext(singular: str, plural: str, n: int) -> str:
    """The form for ``n`` in the current language (English: ``singular`` when ``n == 1``, else ``plural``)."""
    return _state["translations"].ngettext(singular, plural, n)


def gloss(message: str) -> str:
    """A note beside a string kept as Ultralytics or YOLOv5 print it: translated, or ``""`` in English."""
    return "" if _state["language"] == "en" else _(message)


def default_language(environ: dict | None = None) -> str:
    """``WORKBENCH_LANG``, else the first of gettext's variables that is set, else ``"en"``; unknown ones give
    English (a warning names an unknown ``WORKBENCH_LANG``)."""
    environ = os.environ if environ is None else environ
    chosen = environ.get("WORKBENCH_LANG", "").strip()
    if chosen:
        if _code(chosen) in LANGUAGES:
            return _code(chosen)
        warnings.warn(f"WORKBENCH_LANG={chosen!r} is not available ({', '.join(LANGUAGES)}): using English",
                      stacklevel=2)
        return "en"
    for variable in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = environ.get(variable, "").strip()
        if value:
            return next((_code(part) for part in value.split(":") if _code(part) in LANGUAGES), "en")
    return "en"


set_language(default_language())
