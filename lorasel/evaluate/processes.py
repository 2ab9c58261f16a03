"""This process's place among ``accelerate launch`` processes, and agreement between them.

Under ``accelerate launch -m lorasel eval ...`` every process plans the same render plan,
renders its contiguous share into the same store, and the main process scores. Each phase is a
collective step: if it fails in one process it fails in all, so none waits forever.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lorasel.errors import EvaluationError


@dataclass
class Processes:
    """This process's place among ``accelerate launch`` processes (one process: index 0 of 1)."""

    index: int = 0
    count: int = 1
    device: Any = None
    _state: Any = field(default=None, repr=False)

    @property
    def is_main(self) -> bool:
        return self.index == 0

    def step(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` in this process; if it fails in any process, fail in all of them, so no
        process is left waiting for the others (a collective call: every process makes it)."""
        error: BaseException | None = None
        result = None
        try:
            result = fn()
        except BaseException as exc:
            error = exc
        if self._state is not None:
            from accelerate.utils import gather_object

            if any(gather_object([error is not None])) and error is None:
                raise EvaluationError(
                    "another evaluation process failed (its error is printed above)",
                    hint="fix it and rerun: finished renders are kept",
                )
        if error is not None:
            raise error
        return result


def current_processes() -> Processes:
    """The launch this process is part of: ``accelerate launch`` (or ``torchrun``) sets
    WORLD_SIZE; without CUDA the processes talk over gloo on the CPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Processes()
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    return Processes(state.process_index, state.num_processes, state.device, state)
