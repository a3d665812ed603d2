"""How a run's status and validation metrics read on panels, figures and ``History``'s repr, in the current language.

``History.status`` and the keys of ``History.val`` stay as the code writes them (``"completed"``,
``"accuracy"``): only what is shown goes through the catalogue. A metric the workbench does not
know (``"mAP50"``, a user's own) keeps its name. ``History.events`` records English text made by
:func:`event`, which keeps its template so that :func:`event_text` can show it translated.

Example:
    >>> from workbench.i18n import set_language
    >>> status_label("completed"), metrics_text({"loss": [0.5, 0.25], "accuracy": [1.0]}, digits=4)
    ('completed', 'val loss 0.2500, val accuracy 1.0000')
    >>> set_language("zh"); status_label("completed"), metrics_text({"loss": [0.25], "mAP50": [0.5]}, digits=3)
    ('训练完成', '验证损失 0.250，验证 mAP50 0.500')
    >>> note = event(N_("interrupted after step {step}"), step=3); note, note == "interrupted after step 3"
    ('interrupted after step 3', True)
    >>> set_language("zh"); event_text(note)
    '在第 3 步后中断'
    >>> set_language("en")
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from .i18n import N_, _

STATUSES = {"new": N_("new"), "running": N_("running"), "completed": N_("completed"),
            "interrupted": N_("interrupted"), "non_finite": N_("non_finite"), "failed": N_("failed")}
METRICS = {"loss": N_("val loss"), "accuracy": N_("val accuracy")}


def status_label(status: str) -> str:
    """``History.status`` as shown: translated when it is one of :data:`STATUSES`, else as it is."""
    return _(STATUSES[status]) if status in STATUSES else status


def metric_label(key: str) -> str:
    """The name of validation metric ``key`` as shown (``"val accuracy"``; an unknown key: ``"val <key>"``)."""
    return _(METRICS[key]) if key in METRICS else _("val {metric}").format(metric=key)


class Event(str):
    """An event's English text as ``History.events`` records it, with the template and fields it was made from."""

    template: str = ""
    fields: dict = {}


def event(template: str, **fields) -> Event:
    """``template`` (marked with ``N_``) filled with ``fields`` in English; a field may be an :class:`Event` too."""
    made = Event(template.format(**fields))
    made.template, made.fields = template, fields
    return made


def event_text(text: str) -> str:
    """An event in the current language (text not made by :func:`event` is shown as it is)."""
    if not isinstance(text, Event) or not text.template:
        return text
    return _(text.template).format(**{k: event_text(v) for k, v in text.fields.items()})


def metrics_text(val: Mapping[str, Sequence[float]], digits: int) -> str:
    """The last value of every validation metric: ``"val loss 0.2500, val accuracy 1.0000"`` (``""`` if none)."""
    return _(", ").join(f"{metric_label(k)} {v[-1]:.{digits}f}" for k, v in val.items() if v)
