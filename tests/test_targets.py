"""Target presets a user writes: what is wrong in one is refused when it is read or resolved, with the
file, the key and the fix, before anything is built (no build here: each test takes a second)."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tvmharness.errors import USAGE, HarnessError
from tvmharness.targets import TARGETS_DIR, check_toolchain, presets, resolve, resolve_all

on_x86 = pytest.mark.skipif(platform.machine() != "x86_64", reason="x86-64 presets resolve on an x86-64 host")

CPU = 'arch = "x86_64"\n[tvm]\nkind = "llvm"\n'
GPU = 'arch = "x86_64"\ndevice = "cuda"\n[tvm]\nkind = "cuda"\n'
BOARD = 'arch = "aarch64"\nruns_on = "rpc"\n'  # a kit's preset: built here for another architecture


def preset(folder: Path, body: str, name: str = "mine", file: str | None = None) -> Path:
    path = folder / (file or f"{name}.toml")
    path.write_text(f'name = "{name}"\n' + body)
    return path


def refused(target: str, threads: int = 2) -> str:
    """The one message resolving it gives, as a usage error."""
    with pytest.raises(HarnessError) as err:
        resolve(target, threads)
    assert err.value.exit_code == USAGE
    return str(err.value)


@on_x86
def test_a_local_cpu_preset_without_num_cores_is_built_for_the_recipe_s_threads(tmp_path):
    """As num-cores = "auto" is: MetaSchedule cannot tune a target without it."""
    assert resolve(str(preset(tmp_path, CPU + 'mcpu = "skylake"\n')), 3).tvm_dict["num-cores"] == 3
    assert "num-cores" not in resolve("x86-rpc", 3).tvm_dict  # a kit's: its own thread count (fit_kit_threads)


def test_a_preset_saved_with_a_bom_resolves_and_one_not_in_utf8_is_named(tmp_path):
    """As a recipe is read (one way to read the TOML a user writes)."""
    path = preset(tmp_path, CPU + 'mcpu = "skylake"\n')
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert resolve(str(path), 2).tvm_dict["mcpu"] == "skylake"
    path.write_bytes(path.read_bytes()[3:].replace(b'"mine"', b'"m\xe9"'))
    with pytest.raises(HarnessError, match=r"target preset .*mine.toml is not UTF-8 text \(byte 0xe9"):
        resolve(str(path), 2)


@on_x86
@pytest.mark.parametrize("body, named, near", [
    ('arch = "x86_64"\n[tvm]\nkind = "llvm"\nmcpu = "skylake-avx5120"\n', 'mcpu = "skylake-avx5120" is not a CPU LLVM knows',
     "skylake-avx512"),
    ('arch = "x86_64"\n[tvm]\nkind = "llvm"\nmattr = ["+avx2", "+avx9000"]\n', "mattr names avx9000, not a feature LLVM knows",
     "llvm_get_cpu_features"),
    (BOARD + 'cross_compiler = "aarch64-linux-gnu-gcc"\n[tvm]\nkind = "llvm"\nmtriple = "aarch64-linux-gnu"\n'
     'mcpu = "cortex-a72x"\n', 'mcpu = "cortex-a72x" is not a CPU LLVM knows for aarch64-linux-gnu', "cortex-a72"),
    (BOARD + 'cross_compiler = "aarch64-linux-gnu-gcc"\n[tvm]\nkind = "llvm"\nmtriple = "aarch64-linux-gnu"\n'
     'mattr = ["+neon", "+avx2"]\n', "mattr names avx2", "llvm_get_cpu_features"),
])
def test_a_cpu_or_feature_llvm_does_not_know_is_refused_not_built_for_its_generic_cpu(tmp_path, body, named, near, capfd):
    message = refused(str(preset(tmp_path, body)))
    assert str(tmp_path / "mine.toml") in message and named in message and near in message
    assert "llvm_instance.cc" not in capfd.readouterr().err  # LLVM's own line about it, before ours: one message


@on_x86
def test_cpus_and_features_llvm_knows_resolve_for_this_triple_and_a_cross_one(tmp_path):
    assert resolve(str(preset(tmp_path, CPU + 'mcpu = "skylake"\nmattr = ["+avx2", "-avx512f"]\n')), 2).cpu == "skylake"
    board = resolve(str(preset(tmp_path, BOARD + 'cross_compiler = "aarch64-linux-gnu-gcc"\n[tvm]\nkind = "llvm"\n'
                                         'mtriple = "aarch64-linux-gnu"\nmcpu = "cortex-a72"\nmattr = ["+neon"]\n', "pi")), 2)
    assert board.cpu == "cortex-a72" and "neon" in board.features


@on_x86
@pytest.mark.parametrize("body, named", [
    (GPU + 'arch = "sm_8x"\n', '[tvm] arch = "sm_8x": give arch = "sm_XY"'),
    (GPU + 'arch = "compute_86"\n', '[tvm] arch = "compute_86"'),
    (GPU + 'arch = "sm_20"\n', "sm_30 or newer"),
    (GPU, '[tvm] kind = "cuda" has no arch (TVM would build for sm_50, whatever the GPU): give arch = "sm_XY"'),
    (GPU + 'arch = "sm_86"\nmax_threads_per_block = "1024"\n', "Option 'max_threads_per_block': expected type 'int', not \"1024\""),
    (GPU + 'arch = "sm_86"\n[host]\nkind = "cuda"\n', '[host] kind = "cuda": kind = "llvm"'),
    (CPU + 'num-cores = "two"\n', '[tvm] num-cores = "two": a thread count of 1 or more, or "auto"'),
    (CPU + "num-cores = -3\n", "[tvm] num-cores = -3"),
    (CPU + "num-cores = 0\n", "[tvm] num-cores = 0"),
    (CPU + 'mattr = "+avx2"\n', '[tvm] mattr = "+avx2": a list of LLVM features'),
    (CPU + 'mattr = ["avx2"]\n', "each turned on or off"),  # LLVM reads a feature without + as turned off
    (CPU + "num_cores = 2\n", "[tvm] num_cores is not an option of TVM's llvm targets (did you mean num-cores?)"),
    (CPU + 'kind2 = "x"\n', "[tvm] kind2 is not an option"),
    ('arch = "x86_64"\n[tvm]\nkind = "opencl"\n', '[tvm] kind = "opencl": kind = "llvm" or kind = "cuda"'),
    (CPU + 'mtriple = "x86_64-pc-windows-msvc"\n', "is not a Linux triple: tvmharness builds Linux shared libraries"),
    (CPU + 'mtriple = "aarch64-linux-gnu"\n', '[tvm] mtriple = "aarch64-linux-gnu" builds aarch64 code, and arch = "x86_64"'),
])
def test_a_preset_table_tvm_would_build_wrongly_or_fail_on_is_refused_naming_its_key(tmp_path, body, named):
    message = refused(str(preset(tmp_path, body)))
    assert str(tmp_path / "mine.toml") in message and named in message, message


@on_x86
@pytest.mark.parametrize("arch", ["sm_30", "sm_86", "sm_90a", "sm_120"])
def test_a_gpu_preset_naming_its_arch_resolves(tmp_path, arch):
    assert resolve(str(preset(tmp_path, GPU + f'arch = "{arch}"\n')), 2).tvm_dict["arch"] == arch


@on_x86
@pytest.mark.parametrize("body, named, fix", [
    (BOARD + 'device = "cuda"\n[tvm]\nkind = "cuda"\narch = "sm_87"\n[host]\nkind = "llvm"\nmtriple = "aarch64-linux-gnu"\n',
     "builds aarch64 code on this x86_64 host, and names no cross_compiler", 'cross_compiler = "aarch64-linux-gnu-gcc"'),
    (BOARD + 'cross_compiler = "aarch64-linux-gnu-gcc"\n[tvm]\nkind = "llvm"\n', "[tvm] names no mtriple",
     'add mtriple = "aarch64-linux-gnu" to its [tvm]'),
])
def test_a_preset_for_another_architecture_names_its_triple_and_cross_compiler(tmp_path, body, named, fix):
    """Else this host's g++ fails on its objects (or LLVM builds it for this host)."""
    message = refused(str(preset(tmp_path, body)))
    assert named in message and fix in message


@on_x86
def test_a_failed_link_says_what_the_compiler_said_and_which_fix_fits(tmp_path):
    from tvm.support.cc import create_shared

    from tvmharness.build import link_failure

    (tmp_path / "lib0.o").write_text("not an object\n")
    with pytest.raises(RuntimeError) as linked:
        create_shared(str(tmp_path / "model.so"), [str(tmp_path / "lib0.o")])  # TVM's own link, with this host's g++
    failure = link_failure(linked.value, "net", resolve("x86-generic", 2))
    assert "collect2: error: ld returned 1 exit status" in failure.cause and "Command line" not in failure.cause
    assert "is installed and refused the objects" in failure.fix and "install that compiler" not in failure.fix
    gone = preset(tmp_path, BOARD + 'cross_compiler = "aarch64-nonexistent-gcc"\n[tvm]\nkind = "llvm"\n'
                                    'mtriple = "aarch64-linux-gnu"\n')
    assert link_failure(linked.value, "net", resolve(str(gone), 2)).fix.startswith("install that compiler")


@on_x86
@pytest.mark.parametrize("said, reason", [  # TVM's error as it came, g++ linking onto a full and a read-only tmpfs
    ("/usr/bin/ld: final link failed: No space left on device\ncollect2: error: ld returned 1 exit status\n",
     "No space left on device"),
    ("/usr/bin/ld: cannot open output file /mnt/ro/model.so: Read-only file system\n"
     "collect2: error: ld returned 1 exit status\n", "Read-only file system"),
])
def test_a_link_that_cannot_write_its_library_names_the_folder_not_the_toolchain(tmp_path, said, reason):
    """ld says a full disk on a line without "error": it is what the user is told, and its fix."""
    from tvmharness.build import link_failure

    err = RuntimeError(f"Compilation error:\n{said}\nCommand line: /usr/bin/g++ -shared -fPIC -o {tmp_path}/model.so lib0.o")
    failure = link_failure(err, "net", resolve("x86-generic", 2), tmp_path)
    assert reason in failure.cause and "ld returned 1 exit status" in failure.cause
    assert str(tmp_path) in failure.fix and "free space" in failure.fix and "mtriple" not in failure.fix


@on_x86
def test_a_host_without_a_cxx_compiler_is_told_to_install_one(tmp_path, monkeypatch):
    target = resolve("x86-generic", 2)
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(HarnessError, match=r"no C\+\+ compiler on this host to link target x86-generic's library"):
        check_toolchain(target)
    monkeypatch.setenv("CXX", "g++-9000")
    with pytest.raises(HarnessError, match="compiler 'g\\+\\+-9000' for target x86-generic is not installed"):
        check_toolchain(target)


@pytest.mark.parametrize("name", ["../../../evil", "", "has space", ".hidden", "-x"])
def test_a_preset_name_that_is_not_a_plain_folder_name_is_refused(tmp_path, name):
    path = tmp_path / "p.toml"
    path.write_text(f'name = "{name}"\n{CPU}')
    assert "a preset's name is letters, digits, '.', '_' and '-'" in refused(str(path))


@on_x86
def test_a_preset_file_named_as_a_known_preset_is_refused_unless_it_is_that_file(tmp_path):
    mine = preset(tmp_path, CPU + 'mcpu = "haswell"\n', name="x86", file="myx86.toml")
    message = refused(str(mine))
    assert f"target file {mine} is named 'x86', as preset {TARGETS_DIR / 'x86.toml'} is" in message
    assert resolve(str(TARGETS_DIR / "x86.toml"), 2).name == "x86"
    other = preset(tmp_path, CPU, file="other.toml")
    with pytest.raises(HarnessError, match=f"targets {tmp_path / 'mine.toml'} and {other} are both named 'mine'"):
        resolve_all([str(preset(tmp_path, CPU)), str(other)], 2)


def test_presets_of_one_name_in_target_folders_are_refused_naming_both(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    shadow = preset(tmp_path / "a", CPU, name="x86")
    monkeypatch.setenv("TVMHARNESS_TARGETS", str(tmp_path / "a"))
    with pytest.raises(HarnessError, match=f"target presets {shadow} and {TARGETS_DIR / 'x86.toml'} are both named 'x86'"):
        presets()
    shadow.unlink()
    first, second = preset(tmp_path / "a", CPU), preset(tmp_path / "b", CPU)
    monkeypatch.setenv("TVMHARNESS_TARGETS", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    with pytest.raises(HarnessError, match=f"target presets {first} and {second} are both named 'mine'"):
        presets()
    monkeypatch.setenv("TVMHARNESS_TARGETS", f"{tmp_path / 'a'}:{tmp_path / 'a'}")  # one folder named twice: read once
    assert "mine" in presets()


def test_target_folders_that_are_missing_or_files_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TVMHARNESS_TARGETS", str(tmp_path / "gone"))
    with pytest.raises(HarnessError, match=f"TVMHARNESS_TARGETS names {tmp_path / 'gone'}, which is missing") as err:
        presets()
    assert "name folders of preset .toml files" in err.value.fix and err.value.exit_code == USAGE
    monkeypatch.setenv("TVMHARNESS_TARGETS", str(preset(tmp_path, CPU)))
    with pytest.raises(HarnessError, match="which is a file"):
        presets()


@on_x86
def test_a_preset_typo_is_one_message_and_exit_2_on_the_command_line(tmp_path):
    typo = preset(tmp_path, CPU + 'mcpu = "skylake-avx5120"\n')
    proc = run_cli("compile", "digits_cnn", "--target", str(typo), "--no-check", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert 'mcpu = "skylake-avx5120" is not a CPU LLVM knows' in " ".join(proc.stderr.split())
    assert not (tmp_path / "results" / "artifacts").exists()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to pin this process to one")
def test_a_process_pinned_to_fewer_cpus_says_so_and_defaults_to_their_threads():
    """taskset or a CI runner's cpuset: the default thread count and the provenance follow the CPUs
    the process may use, not the host's count."""
    code = ("from tvmharness.provenance import cores_text, cpu_info; from tvmharness.recipe import Measure; "
            "print(Measure().threads, cores_text(cpu_info()))")
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split(" ", 1) == ["1", f"{os.cpu_count()} logical cores, 1 usable\n"]


def test_more_threads_than_usable_cores_are_said_to_oversubscribe():
    from tvmharness.provenance import threads_text

    cpu = {"logical_cores": 8, "usable_cores": 2}
    assert threads_text([1, 2], cpu) == "1/2"
    assert threads_text([4], cpu).startswith("4 (oversubscribed: more threads than the 2 usable cores")
    assert threads_text([4], {"logical_cores": 4}) == "4"  # stored before usable cores were: the host's count


def test_a_cross_compiler_without_its_c_library_is_named_before_anything_is_built(tmp_path):
    """Debian's gcc-aarch64-linux-gnu installs without libc6-dev-arm64-cross (a recommendation), and
    then every link fails with "cannot find crti.o" at the end of a build."""
    from tvmharness.targets import lacks_c_library

    cc = tmp_path / "aarch64-bare-gcc"  # answers as gcc does when it has no crti.o: the name alone
    cc.write_text('#!/bin/sh\ncase "$1" in -print-file-name=*) echo "${1#-print-file-name=}";; esac\n')
    cc.chmod(0o755)
    board = resolve(str(preset(tmp_path, BOARD + f'cross_compiler = "{cc}"\n[tvm]\nkind = "llvm"\nmtriple = "aarch64-linux-gnu"\n')), 2)
    with pytest.raises(HarnessError) as refused:
        check_toolchain(board)
    assert "has no C library for its target" in refused.value.cause and "libc6-dev-arm64-cross" in refused.value.fix
    assert lacks_c_library("gcc") is False  # this host's own has its C library
