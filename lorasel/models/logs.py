"""Other libraries' log output while lorasel loads models through them."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def libraries_quiet(*libraries: str) -> Iterator[None]:
    """The named libraries' loggers at errors only, then as they were. Each of diffusers,
    transformers and huggingface_hub keeps its verbosity in ``<library>.utils.logging``.

    Their warnings while a model loads are noise to a lorasel user: diffusers warns of "modules
    that should be kept in float32: []" whenever it casts a half-precision file, and offline the
    hub client logs two lines per retry ("'[Errno -2] Name or service not known' thrown while
    requesting HEAD …", "Retrying in 8s"). What matters, lorasel checks itself or says in its
    one-line error. Their progress bars stay: a big model takes a while."""
    loggers = [importlib.import_module(f"{name}.utils.logging") for name in libraries]
    before = [logging.get_verbosity() for logging in loggers]
    for logging in loggers:
        logging.set_verbosity_error()
    try:
        yield
    finally:
        for logging, verbosity in zip(loggers, before, strict=True):
            logging.set_verbosity(verbosity)
