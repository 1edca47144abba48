"""Which device trains a country's model: the GPU Spark assigned to its task when LightGBM can use it, else CPU.

No Spark here: the grouped-UDF adapter reads the task's GPU addresses and passes them in.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import lightgbm as lgb
import numpy as np

from markdown_pricing.core.config import GPU_MODES

MODES = GPU_MODES
PROBE_ROWS = 50

log = logging.getLogger(__name__)


class GpuUnavailableError(RuntimeError):
    """Raised in `required` mode when the task has no GPU that LightGBM can train on."""


@dataclass(frozen=True)
class Device:
    """LightGBM's device parameters for one model, and the label the country record shows."""

    label: str
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


def check_mode(mode: str) -> str:
    """Returns the mode, or raises ValueError for one that is not off, auto or required."""
    if mode not in MODES:
        raise ValueError(f"gpu mode {mode!r} is not one of {', '.join(MODES)}")
    return mode


@functools.cache
def gpu_probe_error(device_id: int) -> str | None:
    """None when LightGBM trains on OpenCL device `device_id`, else LightGBM's error (cached per process)."""
    rng = np.random.default_rng(0)
    data = lgb.Dataset(rng.random((PROBE_ROWS, 2)), label=rng.random(PROBE_ROWS))
    params = {"device_type": "gpu", "gpu_platform_id": 0, "gpu_device_id": device_id, "num_threads": 1, "verbose": -1}
    try:
        lgb.train(params, data, num_boost_round=1)
    except lgb.basic.LightGBMError as err:  # how a missing OpenCL runtime or device shows up
        return str(err)
    return None


def gpu_problem(task_gpu_addresses: Sequence[str]) -> str | None:
    """Why the task cannot train on a GPU, or None when it can."""
    if not task_gpu_addresses:
        return "no GPU assigned to the task (no spark.task.resource.gpu.amount, or no GPU on the executor)"
    # LightGBM trains on one device; a task given several uses the first.
    address = task_gpu_addresses[0]
    error = gpu_probe_error(int(address))
    return None if error is None else f"LightGBM cannot use GPU {address} through OpenCL: {error}"


def device_settings(mode: str, task_gpu_addresses: Sequence[str]) -> Device:
    """The device for a model trained in a task that Spark gave `task_gpu_addresses`."""
    if check_mode(mode) == "off":
        return Device("cpu")
    problem = gpu_problem(task_gpu_addresses)
    if problem is None:
        address = task_gpu_addresses[0]
        params = {"device_type": "gpu", "gpu_platform_id": 0, "gpu_device_id": int(address)}
        return Device(f"gpu:{address}", MappingProxyType(params))
    if mode == "required":
        raise GpuUnavailableError(f"gpu mode is 'required' but {problem}")
    log.warning("training on CPU: %s", problem)
    return Device(f"cpu (gpu fallback: {problem})")
