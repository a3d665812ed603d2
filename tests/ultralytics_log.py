"""What Ultralytics logs while it loads one model's weights into another (its own "Transferred X/Y items")."""
import logging.handlers


def load_messages(target, source) -> list[str]:
    """``target.load(source)`` with Ultralytics' logger captured; its messages, in order."""
    from ultralytics.utils import LOGGER

    handler, level = logging.handlers.BufferingHandler(100), LOGGER.level
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO)
    try:
        target.load(source, verbose=True)
    finally:
        LOGGER.removeHandler(handler)
        LOGGER.setLevel(level)
    return [record.getMessage() for record in handler.buffer]
