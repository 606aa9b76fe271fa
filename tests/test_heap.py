"""keep_freed_memory: glibc's thresholds raised, freed blocks reused without new page faults."""

import resource
import sys

import numpy as np
import pytest

from diffmem.heap import keep_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_blocks_are_reused_without_new_page_faults():
    assert keep_freed_memory() is True
    size = 8 << 20  # 8 MiB blocks: served by mmap and unmapped when freed under glibc's defaults
    np.ones(size // 8).sum()  # the first block faults its pages in once
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        np.ones(size // 8).sum()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults < 20 * (size // 4096) // 10  # unmapped each time, 20 blocks would fault 40,960 pages
