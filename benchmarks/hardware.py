"""Hardware limits for the benchmarks: peak FLOP/s, machine facts, XLA cost analysis.

The model-FLOPs utilisation (MFU) of a step is the FLOPs XLA counts in the
compiled step (`compiled.cost_analysis()["flops"]`) divided by the step time
and by the device's peak. Peaks:

* accelerators: `ACCELERATOR_PEAKS`, dense (no structured sparsity) vendor
  figures per JAX device, matched against `device.device_kind`;
* CPUs: cores x clock x FLOPs per cycle per core, estimated from
  /proc/cpuinfo (`cpu_peak_flops`). It is an upper bound and an estimate; when
  the vector width or clock cannot be read, MFU is reported as n/a with the
  reason.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import time
from typing import Any, Callable, Optional

import jax

# Dense peak FLOP/s per JAX device, from the vendors' data sheets.
# "float32" on NVIDIA Ampere/Hopper is the TF32 tensor-core rate: XLA's default
# matmul/conv precision on those GPUs runs float32 dots as TF32. TPUs run
# float32 matmuls as several bf16 passes; there is no single float32 peak.
ACCELERATOR_PEAKS: dict[str, dict[str, Optional[float]]] = {
    "H200": {"bfloat16": 989e12, "float32": 494.7e12},
    "H100 PCIe": {"bfloat16": 756e12, "float32": 378e12},
    "H100": {"bfloat16": 989e12, "float32": 494.7e12},  # SXM (H100 80GB HBM3)
    "A100": {"bfloat16": 312e12, "float32": 156e12},
    "L4": {"bfloat16": 121e12, "float32": 60e12},
    "A10": {"bfloat16": 125e12, "float32": 62.5e12},
    "V100": {"bfloat16": None, "float32": 15.7e12},  # No bf16 tensor cores (fp16 only).
    "TPU v6": {"bfloat16": 918e12, "float32": None},
    "TPU v5p": {"bfloat16": 459e12, "float32": None},
    "TPU v5 lite": {"bfloat16": 197e12, "float32": None},
    "TPU v5e": {"bfloat16": 197e12, "float32": None},
    "TPU v4": {"bfloat16": 275e12, "float32": None},
}

# float32 FLOPs per cycle per core (FMA = 2 FLOPs x lanes x FMA pipes).
# AMD by family, because flags cannot tell Zen 4's AVX-512 (two 256-bit halves)
# from full-width AVX-512.
_AMD_FAMILY_FP32_PER_CYCLE = {
    0x17: 32,  # Zen 2: 2 x 256-bit FMA (Zen 1, models < 0x30: 2 x 128-bit, 16).
    0x19: 32,  # Zen 3 (AVX2) and Zen 4 (AVX-512 on 256-bit pipes): 2 x 256-bit FMA.
    0x1A: 64,  # Zen 5: full-width 512-bit FMA pipes.
}


def _cpuinfo() -> dict[str, str]:
  """The first processor's fields of /proc/cpuinfo (empty off Linux)."""
  fields: dict[str, str] = {}
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if not line.strip():
          break
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
  except OSError:
    pass
  return fields


def usable_cores() -> int:
  """CPU cores this process may run on (affinity mask), which XLA's and torch's pools use."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # Not Linux.
    return os.cpu_count() or 1


def machine_info() -> dict[str, Any]:
  """CPU model, core counts, memory (GiB) and load averages of this host."""
  info = _cpuinfo()
  memory_gib = None
  try:
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
  except (ValueError, OSError, AttributeError):
    pass
  return {
      "cpu_model": info.get("model name") or platform.processor() or "unknown",
      "cpu_vendor": info.get("vendor_id"),
      "cpu_family": info.get("cpu family"),
      "cpu_model_number": info.get("model"),
      "cpu_mhz": float(info["cpu MHz"]) if "cpu MHz" in info else None,
      "logical_cpus": os.cpu_count(),
      "usable_cores": usable_cores(),
      "memory_gib": round(memory_gib, 1) if memory_gib else None,
      "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
      "platform": platform.platform(),
      "python": platform.python_version(),
  }


# A machine counts as quiet for timing when its 1-minute load average is below this
# (the developers' guide: figures from a loaded machine are not results).
QUIET_LOAD = 1.0


def wait_for_quiet(threshold: float = QUIET_LOAD, timeout_s: float = 600.0, *,
                   poll_s: float = 5.0,
                   load: Callable[[], float] = lambda: os.getloadavg()[0],
                   sleep: Callable[[float], None] = time.sleep,
                   clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
  """Waits until the 1-minute load average is below `threshold`, at most `timeout_s` seconds.

  A timed run right after another one starts at the load that run left behind (the
  1-minute average decays with a one-minute time constant), so each run waits here first.

  Returns:
    {"load_before": the last load read, "waited_s": seconds waited, "quiet": whether the
    load fell below `threshold` (False: the timeout passed, or `threshold` <= 0, which
    does not wait; the figure is provisional)}.
  """
  began = clock()
  current = load()
  while 0 < threshold <= current and clock() - began < timeout_s:
    sleep(poll_s)
    current = load()
  return {"load_before": current, "waited_s": clock() - began, "quiet": current < threshold}


def add_quiet_arguments(parser, what: str = "run") -> None:
  """`--quiet_load` and `--quiet_timeout_s` of a benchmark command (`wait_for_quiet`)."""
  parser.add_argument("--quiet_load", type=float, default=QUIET_LOAD,
                      help=f"wait before each timed {what} until the 1-minute load average is "
                           f"below this (0: do not wait; the {what}s are then marked provisional)")
  parser.add_argument("--quiet_timeout_s", type=float, default=600.0,
                      help=f"longest wait for a quiet machine; a {what} started above the "
                           "threshold is marked provisional")


def library_versions() -> dict[str, Optional[str]]:
  """Installed versions of the libraries the benchmarks compare (None if absent)."""
  versions = {}
  for name in ("jax", "jaxlib", "flax", "optax", "numpy", "torch", "tensorflow-cpu",
               "tensorflow", "tensorflow-datasets", "grain", "array-record", "tensorboard",
               "opencv-contrib-python-headless", "opencv-python-headless"):
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  return versions


def device_info(device: jax.Device) -> dict[str, Any]:
  """Platform, kind and count of the JAX devices like `device`."""
  return {
      "platform": device.platform,
      "device_kind": device.device_kind,
      "num_devices": len(jax.devices(device.platform)),
      "jax_backend": jax.default_backend(),
  }


def cpu_peak_flops(num_cores: Optional[int] = None) -> dict[str, Any]:
  """Estimated float32 peak FLOP/s of `num_cores` cores of this CPU.

  peak = cores x clock (Hz) x FLOPs/cycle/core. FLOPs/cycle comes from the
  vector extensions in /proc/cpuinfo and, for AMD, the CPU family (Zen 4 runs
  AVX-512 on 256-bit pipes, so it peaks like AVX2). The clock is the current
  "cpu MHz" (turbo may exceed it, so the estimate can be low by that factor).

  Returns:
    `{"peak_flops": float or None, "method": str, ...}`; `peak_flops` is None
    with the reason in `"na_reason"` when a fact is missing.
  """
  cores = num_cores or usable_cores()
  info = _cpuinfo()
  flags = set(info.get("flags", "").split())
  mhz = info.get("cpu MHz")
  if not flags or not mhz:
    return {"peak_flops": None, "na_reason": "CPU flags or clock not readable from "
                                             "/proc/cpuinfo; no peak estimate"}
  vendor = info.get("vendor_id", "")
  family = int(info.get("cpu family", "0") or 0)
  if vendor == "AuthenticAMD" and family in _AMD_FAMILY_FP32_PER_CYCLE:
    per_cycle = _AMD_FAMILY_FP32_PER_CYCLE[family]
    if family == 0x17 and int(info.get("model", "0") or 0) < 0x30:
      per_cycle = 16  # Zen 1 / Zen+.
    basis = f"AMD family {family:#x}"
  elif "avx512f" in flags:
    per_cycle, basis = 64, "AVX-512 with 2 FMA units"
  elif "avx2" in flags and "fma" in flags:
    per_cycle, basis = 32, "AVX2 + FMA, 2 FMA units"
  elif "avx" in flags:
    per_cycle, basis = 16, "AVX without FMA"
  else:
    per_cycle, basis = 8, "SSE"
  clock_hz = float(mhz) * 1e6
  return {
      "peak_flops": cores * clock_hz * per_cycle,
      "method": "cores x clock x float32 FLOPs/cycle/core (estimate, /proc/cpuinfo)",
      "cores": cores, "clock_ghz": clock_hz / 1e9, "flops_per_cycle_per_core": per_cycle,
      "basis": basis,
      "caveat": ("an upper bound: assumes each core's FMA units are its own (SMT siblings "
                 "share them) and no down-clocking under vector load"),
  }


def accelerator_peak(device_kind: str, dtype: str = "bfloat16") -> dict[str, Any]:
  """Dense peak FLOP/s of an accelerator named `device_kind` (JAX's `device.device_kind`).

  Returns:
    `{"peak_flops": float, "method": str}`, or `{"peak_flops": None,
    "na_reason": str}` when the kind or the dtype's peak is not in the table.
  """
  if dtype not in ("float32", "bfloat16"):
    raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
  # Longest names first, so "H100 PCIe" wins over "H100".
  for name in sorted(ACCELERATOR_PEAKS, key=len, reverse=True):
    if name.lower() in device_kind.lower():
      value = ACCELERATOR_PEAKS[name][dtype]
      if value is None:
        return {"peak_flops": None, "na_reason": f"{name} has no dense {dtype} peak in the "
                                                 "table (see benchmarks/hardware.py)"}
      return {"peak_flops": value, "method": f"data-sheet dense {dtype} peak of {name}"}
  return {"peak_flops": None, "na_reason": f"device kind {device_kind!r} is not in "
                                           "benchmarks.hardware.ACCELERATOR_PEAKS"}


def peak_flops(device: jax.Device, dtype: str = "float32") -> dict[str, Any]:
  """Peak FLOP/s of one JAX `device` for `dtype` ("float32" or "bfloat16").

  Returns:
    `{"peak_flops": float or None, "method": str}` or, when unknown,
    `{"peak_flops": None, "na_reason": str}`.
  """
  if dtype not in ("float32", "bfloat16"):
    raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
  if device.platform == "cpu":
    if dtype != "float32":
      return {"peak_flops": None, "na_reason": "bfloat16 on CPU has no reliable peak; "
                                               "benchmark CPUs in float32"}
    # Every simulated CPU device shares the same cores, so one device's peak is
    # the whole host's.
    return cpu_peak_flops()
  return accelerator_peak(device.device_kind, dtype)


def cost_analysis(compiled: Any) -> dict[str, Optional[float]]:
  """FLOPs and bytes accessed of one call of an AOT-compiled JAX function.

  Args:
    compiled: `jax.jit(f).lower(...).compile()`.

  Returns:
    `{"flops": float, "bytes_accessed": float}` as counted by XLA (None where
    the backend does not report them).
  """
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # Older JAX: one dict per computation.
    analysis = analysis[0] if analysis else {}
  analysis = analysis or {}
  flops = analysis.get("flops")
  accessed = analysis.get("bytes accessed")
  return {"flops": float(flops) if flops is not None else None,
          "bytes_accessed": float(accessed) if accessed is not None else None}


def utilisation(flops_per_call: Optional[float], seconds: float, peak: dict[str, Any],
                num_devices: int = 1) -> dict[str, Any]:
  """Achieved FLOP/s and MFU of a call that took `seconds` on `num_devices` devices.

  `flops_per_call` counts the whole call (all devices); MFU divides by
  `num_devices` times one device's peak.
  """
  if seconds <= 0:
    raise ValueError(f"seconds must be > 0, got {seconds}")
  achieved = flops_per_call / seconds if flops_per_call else None
  result: dict[str, Any] = {"achieved_flops_per_s": achieved, "mfu": None}
  if achieved is None:
    result["mfu_na_reason"] = "XLA reported no FLOP count for this computation"
  elif peak.get("peak_flops"):
    result["mfu"] = achieved / (peak["peak_flops"] * num_devices)
  else:
    result["mfu_na_reason"] = peak.get("na_reason", "no peak FLOP/s known")
  return result
