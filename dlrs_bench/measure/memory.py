"""Peak memory during a run: NVML device memory and host RSS from a background sampler,
plus the CUDA caching allocator's own peak."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import psutil
import torch

MIB = 1024 * 1024


@dataclass(frozen=True)
class MemoryPeaks:
    """The ``memory`` section of a result file (MiB; None where not applicable)."""

    gpu_peak_mib: float | None
    gpu_allocator_peak_mib: float | None
    host_peak_rss_mib: float


class MemorySampler:
    """Samples host RSS (and NVML used memory of ``device`` when it is CUDA) every ``interval_s``.

    Use as a context manager around a run, then read :meth:`peaks`.
    """

    def __init__(self, device: torch.device, interval_s: float = 0.02) -> None:
        self.device = device
        self.interval_s = interval_s
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="dlrs-bench-memory")
        self._nvml_handle = None
        self.rss_peak = 0
        self.gpu_peak: int | None = None

    def __enter__(self) -> MemorySampler:
        if self.device.type == "cuda":
            self._nvml_handle = _nvml_handle(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        self.rss_peak = max(self.rss_peak, self._process.memory_info().rss)
        if self._nvml_handle is not None:
            import pynvml

            used = pynvml.nvmlDeviceGetMemoryInfo(self._nvml_handle).used
            self.gpu_peak = max(self.gpu_peak or 0, used)

    def peaks(self) -> MemoryPeaks:
        cuda = self.device.type == "cuda"
        return MemoryPeaks(
            gpu_peak_mib=self.gpu_peak / MIB if self.gpu_peak is not None else None,
            gpu_allocator_peak_mib=torch.cuda.max_memory_reserved(self.device) / MIB if cuda else None,
            host_peak_rss_mib=self.rss_peak / MIB,
        )


def _nvml_handle(device: torch.device):
    """The NVML handle of a CUDA device (matched by PCI bus id), or None when NVML is unavailable."""
    try:
        import pynvml

        pynvml.nvmlInit()
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        if hasattr(props, "pci_bus_id"):
            bus_id = f"{props.pci_domain_id:08X}:{props.pci_bus_id:02X}:{props.pci_device_id:02X}.0"
            return pynvml.nvmlDeviceGetHandleByPciBusId(bus_id)
        return pynvml.nvmlDeviceGetHandleByIndex(index)
    except Exception:  # NVML missing or not permitted: the peak stays None, never a made-up number
        return None
