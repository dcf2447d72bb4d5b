"""A kernel image given by path, without a boot: its boot header, where its
configuration is found (beside it, in its kernel tree, embedded), and which
options the runner says are missing."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.cli import app
from service.conform.errors import ImageError
from service.conform.kconfig import FEATURES, REQUIRED, check_config, read_image

FULL = "".join(f"CONFIG_{o}=y\n" for o in (*REQUIRED, *FEATURES))


def bzimage(path: Path, release: str = "6.16.99-test", payload: bytes = b"") -> Path:
    """A file with an x86 boot header naming @release, and @payload as its kernel."""
    setup_sects = 1
    head = bytearray((setup_sects + 1) * 512)
    head[0x1F1] = setup_sects
    head[0x202:0x206] = b"HdrS"
    banner = f"{release} (dev@host) #1 SMP".encode() + b"\0"
    struct.pack_into("<H", head, 0x20E, 0x300 - 0x200)
    head[0x300:0x300 + len(banner)] = banner
    struct.pack_into("<II", head, 0x248, 0, len(payload))
    path.write_bytes(bytes(head) + payload)
    return path


def test_the_header_names_the_release_and_a_junk_file_is_refused(tmp_path: Path) -> None:
    image = read_image(bzimage(tmp_path / "bzImage"))
    assert image.release == "6.16.99-test" and len(image.sha256) == 64
    junk = tmp_path / "junk"
    junk.write_bytes(b"\0" * 4096)
    with pytest.raises(ImageError, match=r"junk.*not an x86 bzImage"):
        read_image(junk)
    with pytest.raises(ImageError, match=r"missing.*cannot read it"):
        read_image(tmp_path / "missing")


def test_config_beside_the_image_in_its_tree_or_embedded(tmp_path: Path) -> None:
    # Debian's layout: config-<release> beside vmlinuz-<release>.
    image = read_image(bzimage(tmp_path / "vmlinuz-6.16.99-test"))
    assert check_config(image).source is None
    (tmp_path / "config-6.16.99-test").write_text(FULL)
    check = check_config(image)
    assert check.source.endswith("config-6.16.99-test") and check.lines() == []
    # A kernel tree: <tree>/arch/x86/boot/bzImage and <tree>/.config.
    tree = tmp_path / "linux"
    (tree / "arch/x86/boot").mkdir(parents=True)
    (tree / "Makefile").write_text("VERSION = 6\n")
    (tree / ".config").write_text(FULL.replace("CONFIG_IO_URING=y\n", "# CONFIG_IO_URING is not set\n"))
    check = check_config(read_image(bzimage(tree / "arch/x86/boot/bzImage")))
    assert check.source == str(tree / ".config")
    assert check.missing_required == {} and list(check.missing_features) == ["IO_URING"]
    # CONFIG_IKCONFIG: the config gzip'd between markers inside the compressed kernel.
    kernel = b"\x90" * 100 + b"IKCFG_ST" + gzip.compress(b"CONFIG_X86_64=y\n") + b"IKCFG_ED"
    alone = tmp_path / "alone"
    alone.mkdir()
    check = check_config(read_image(bzimage(alone / "bzImage", payload=gzip.compress(kernel))))
    assert check.source == "embedded IKCONFIG"
    assert "X86_64" not in check.missing_required and "TRANSPARENT_HUGEPAGE" in check.missing_required


def test_the_runner_refuses_an_image_without_required_options(tmp_path: Path) -> None:
    path = bzimage(tmp_path / "bzImage")
    config = tmp_path / "my.config"
    config.write_text(FULL.replace("CONFIG_TRANSPARENT_HUGEPAGE=y\n", ""))
    res = CliRunner().invoke(app, ["conform", "--kernel-image", str(path), "--engine", "v6.16",
                                   "--kernel-config", str(config), "--no-store"])
    assert res.exit_code == 2
    assert "CONFIG_TRANSPARENT_HUGEPAGE missing (required" in res.output
    assert "lacks CONFIG_TRANSPARENT_HUGEPAGE" in res.output


@pytest.mark.parametrize("argv, message", [
    (["--kernel-image", "{img}"], "--kernel-image: name the engine"),
    (["--kernel-image", "{img}", "--engine", "v9.9"], "v9.9"),
    (["--engine", "v6.16"], "--engine and --kernel-config go with --kernel-image"),
    (["--kernel-image", "{tmp}/nothing", "--engine", "v6.16"], "cannot read it"),
    (["--kernels", "deb-0.1"], "unknown kernel 'deb-0.1'"),
    (["--kernels", "deb-6.16", "--program", "{tmp}/none.json"], "none.json"),
    (["--kernels", "deb-6.16", "--job", "1"], "--job: runs the stored job as queued"),
])
def test_bad_arguments_name_the_option_and_value(tmp_path: Path, argv: list[str],
                                                 message: str) -> None:
    img = bzimage(tmp_path / "bzImage")
    argv = [a.format(img=img, tmp=tmp_path) for a in argv]
    res = CliRunner().invoke(app, ["conform", *argv, "--no-store"])
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.output.split()), res.output


def test_the_docs_list_every_option_the_runner_checks() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "conformance.md").read_text()
    for option, why in {**REQUIRED, **FEATURES}.items():
        assert f"| `CONFIG_{option}` |" in doc and why in doc, option


@pytest.mark.parametrize("layout", ["boot", "modules"])
def test_unpack_finds_the_kernel_where_debian_puts_it(tmp_path: Path, layout: str) -> None:
    """/boot/vmlinuz-<release> up to 6.19; /usr/lib/modules/<release>/vmlinuz in 7.3's
    linux-binary package: both end up as vmlinuz-<release>, with the config if any."""
    import shutil
    import subprocess

    from service.conform.images import _unpack
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed")
    root = tmp_path / "pkg"
    where = root / ("boot" if layout == "boot" else "usr/lib/modules/7.3.4-test")
    where.mkdir(parents=True)
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN/control").write_text("Package: linux-binary-test\nVersion: 1\n"
                                         "Architecture: amd64\nMaintainer: t <t@t>\n"
                                         "Description: t\n")
    bzimage(where / ("vmlinuz-7.3.4-test" if layout == "boot" else "vmlinuz"), "7.3.4-test")
    (where / ("config-7.3.4-test" if layout == "boot" else "config")).write_text(FULL)
    (tmp_path / "deb").mkdir()
    deb = tmp_path / "deb" / "k.deb"
    subprocess.run(["dpkg-deb", "-b", str(root), str(deb)], check=True, capture_output=True)
    vmlinuz, config = _unpack("linux-binary-test", deb, tmp_path / "out")
    assert vmlinuz.name == "vmlinuz-7.3.4-test" and read_image(vmlinuz).release == "7.3.4-test"
    assert config is not None and config.name == "config-7.3.4-test"
    assert check_config(read_image(vmlinuz)).lines() == []
