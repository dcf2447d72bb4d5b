"""Real Debian kernels under qemu: fetch, boot, statuses, and the seed series' counters.

Select with ``-m realkernel``.  One boot per kernel serves most tests (the
session fixture ``suites``); the time-limit, panic and junk-kernel tests
boot once more each, on one kernel.  The first run downloads three kernel
packages into the kernel cache; later runs find them there.

Without qemu the tests are skipped, saying so; in CI (``CI`` set to true)
they fail instead, since CI installs it.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest

from service.conform import (
    BootError,
    BootStatus,
    CaseStatus,
    KernelImage,
    SeedWorkload,
    fetch,
    run_suite,
    seed_figures,
    seed_sources,
)

pytestmark = pytest.mark.realkernel

KERNELS = ("deb-6.1", "deb-6.12", "deb-6.16")
#: Generous for one boot of a few seconds: CI machines are slower and shared.
TIMEOUT = 300.0

HELLO = r"""
#include <stdio.h>
int main(void)
{
	puts("FOLIODIFF {\"x\": 1}");
	return 0;
}
"""
SEGV = r"""
#include <signal.h>
int main(void)
{
	raise(SIGSEGV);
	return 0;
}
"""
HANG = r"""
#include <unistd.h>
int main(void)
{
	for (;;)
		pause();
}
"""
PANIC = r"""
#include <fcntl.h>
#include <unistd.h>
int main(void)
{
	int fd = open("/proc/sysrq-trigger", O_WRONLY);

	write(fd, "c", 1);
	return 1;
}
"""


@pytest.fixture(scope="session", autouse=True)
def _qemu():
    if shutil.which("qemu-system-x86_64") is None:
        message = "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
        if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
            pytest.fail(f"CI=true but {message}", pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session")
def images() -> dict[str, KernelImage]:
    return {k: fetch(k) for k in KERNELS}


@pytest.fixture(scope="session")
def suites(images):
    """One boot per kernel: two small tests and both seed workloads, small."""
    tests = {"hello": HELLO, "segv": SEGV,
             **seed_sources(repeat=2, mthp_mib=8, pmd_thps=2)}
    return {k: run_suite(image, tests, timeout=TIMEOUT) for k, image in images.items()}


@pytest.mark.parametrize("kernel", KERNELS)
def test_fetch_resolves_and_caches(kernel, images, monkeypatch):
    image = images[kernel]
    assert image.spec.name == kernel and image.spec.matches(image.package)
    assert image.vmlinuz.is_file() and image.vmlinuz.stat().st_size > 5_000_000
    assert image.version.startswith(image.spec.series + ".")
    # Again, with no apt and no dpkg to run: a cache hit touches neither them nor the network.
    monkeypatch.setenv("PATH", "/nonexistent")
    t0 = time.monotonic()
    again = fetch(kernel)
    assert again.cache_hit and (again.package, again.version) == (image.package, image.version)
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize("kernel", KERNELS)
def test_suite_statuses_and_uname(kernel, suites):
    result = suites[kernel].require_ok()
    assert result.status is BootStatus.OK
    # Debian names the package after the release it boots: linux-image-<uname -r>[-unsigned].
    assert result.image.package in (f"linux-image-{result.uname}",
                                    f"linux-image-{result.uname}-unsigned")
    assert result.package_version == result.image.version
    hello = result.test("hello")
    assert hello.ok and hello.records == ({"x": 1},)
    segv = result.test("segv")
    assert (segv.status, segv.signal, segv.records) == (CaseStatus.CRASHED, 11, ())
    assert result.kernel_reports == ()
    assert 0 < result.init_uptime < result.done_uptime


def test_seed_counters_before_and_after_the_series(suites):
    v61 = {f.workload: f for f in seed_figures(suites["deb-6.1"])}
    old = {f.workload: f for f in seed_figures(suites["deb-6.12"])}
    new = {f.workload: f for f in seed_figures(suites["deb-6.16"])}
    # 6.1 has no mTHP; its redirtied PMD THPs have their PMD split like 6.12's, and keep their data.
    assert v61[SeedWorkload.MTHP].unsupported and v61[SeedWorkload.MTHP].counter is None
    assert (v61[SeedWorkload.PMD].folios, v61[SeedWorkload.PMD].counter) == (2, 2)
    assert [s["thps_lost_data"] for s in v61[SeedWorkload.PMD].samples] == [0, 0]
    assert {f.engine for f in v61.values()} == {"v5.18"}
    # 3/4: 8 MiB of 64 KiB mTHPs; each is queued for deferred split on 6.12, none on 6.16.
    assert old[SeedWorkload.MTHP].folios == new[SeedWorkload.MTHP].folios == 128
    assert (old[SeedWorkload.MTHP].counter, new[SeedWorkload.MTHP].counter) == (128, 0)
    assert old[SeedWorkload.MTHP].pglazyfreed == new[SeedWorkload.MTHP].pglazyfreed == 2048
    # 4/4: 2 redirtied PMD-mapped THPs; 6.12 splits both PMDs, 6.16 neither; no data lost.
    assert old[SeedWorkload.PMD].folios == new[SeedWorkload.PMD].folios == 2
    assert (old[SeedWorkload.PMD].counter, new[SeedWorkload.PMD].counter) == (2, 0)
    for f in (old[SeedWorkload.PMD], new[SeedWorkload.PMD]):
        assert [s["thps_lost_data"] for s in f.samples] == [0, 0]
    assert {f.engine for f in old.values()} == {"v6.12"}
    assert {f.engine for f in new.values()} == {"v6.16"}


def test_time_limit_is_a_timeout_not_results(images):
    result = run_suite(images["deb-6.12"], {"hello": HELLO, "hang": HANG}, timeout=1.0)
    assert result.status is BootStatus.TIMEOUT
    assert result.seconds < 30
    assert [t.status for t in result.tests] == [CaseStatus.MISSING, CaseStatus.MISSING]
    with pytest.raises(BootError, match="deb-6.12: timeout"):
        result.require_ok()


def test_panic_is_reported(images):
    result = run_suite(images["deb-6.16"], {"hello": HELLO, "panic": PANIC, "after": HELLO},
                       timeout=TIMEOUT)
    assert result.status is BootStatus.PANIC
    assert result.uname.startswith("6.16.")
    assert [t.status for t in result.tests] == [CaseStatus.OK, CaseStatus.MISSING, CaseStatus.MISSING]
    assert any("sysrq triggered crash" in r for r in result.kernel_reports)


def test_junk_kernel_does_not_boot(tmp_path):
    junk = tmp_path / "vmlinuz-junk"
    junk.write_bytes(b"\x00not a kernel" * 4096)
    result = run_suite(KernelImage.from_file(junk), {"hello": HELLO}, timeout=TIMEOUT)
    assert (result.status, result.uname) == (BootStatus.NO_BOOT, None)
    assert result.tests[0].status is CaseStatus.MISSING
    assert result.qemu_stderr.strip()
    with pytest.raises(BootError, match="vmlinuz-junk: no-boot"):
        result.require_ok()
