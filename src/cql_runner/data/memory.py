"""Give memory freed while reading a dataset back to the OS.

Reading a Minari hdf5 dataset episode by episode leaves tens of MB freed but resident for
the rest of the run: HDF5 keeps freed blocks on its own free lists, and glibc returns heap
pages to the OS only from the top of the heap, not the free pages between live blocks. For a
1M-transition Hopper set that was ~25 MB on top of ~107 MB of data, a resident ratio of 1.25
instead of 1.06 (scripts/bench_memory.py). A load from the flat-array cache reads no hdf5 and
needs none of this.

Both calls are best effort: elsewhere than glibc, or without a loaded libhdf5, they do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def release_freed_memory() -> None:
    """Empty HDF5's free lists into malloc, then have glibc hand free pages back (malloc_trim)."""
    if not sys.platform.startswith("linux"):
        return
    hdf5 = _loaded_hdf5()
    try:
        if hdf5 is not None:
            # h5py has no binding for H5garbage_collect; the C call takes no arguments.
            hdf5.H5garbage_collect()
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError) as exc:  # musl has no malloc_trim; a stripped libhdf5
        log.debug("could not release freed memory: %s", exc)


def _loaded_hdf5() -> ctypes.CDLL | None:
    """The libhdf5 this process already loaded (h5py's bundled copy or the system one), if any.

    Found through /proc/self/maps because h5py loads it privately (RTLD_LOCAL), so its
    symbols are not in the global namespace; opening the same path returns the same library.
    """
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        parts = line.split(maxsplit=5)
        path = parts[5].strip() if len(parts) == 6 else ""
        name = Path(path).name
        if name.startswith("libhdf5") and not name.startswith("libhdf5_hl") and ".so" in name:
            try:
                return ctypes.CDLL(path)
            except OSError:
                return None
    return None
