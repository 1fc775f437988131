"""Packaging: package.xml, the venv install made by scripts/setup.sh, and a colcon build."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import xml.etree.ElementTree as ET

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
IN_VENV = sys.prefix != getattr(sys, "base_prefix", sys.prefix)
NOT_IN_VENV_REASON = "not running inside a virtual environment (run via make test / .venv/bin/python)"
COLCON_TIMEOUT_S = 480
EXECUTABLES = ("sam2s_node", "sam2s")


# --------------------------------------------------------------------------------------
# package.xml
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def package_xml() -> ET.Element:
    return ET.parse(REPO / "package.xml").getroot()


def test_package_xml_identity(package_xml):
    assert package_xml.tag == "package"
    assert package_xml.get("format") == "3"
    assert package_xml.findtext("name") == "sam2s_ros"
    assert [e.text for e in package_xml.findall("license")] == ["Apache-2.0"]
    assert package_xml.findtext("version")
    assert package_xml.find("maintainer") is not None
    assert package_xml.find("maintainer").get("email")
    assert package_xml.findtext("export/build_type") == "ament_cmake"
    assert package_xml.findtext("member_of_group") == "rosidl_interface_packages"


def test_package_xml_parses_with_catkin_pkg():
    catkin_pkg = pytest.importorskip("catkin_pkg.package")
    package = catkin_pkg.parse_package(str(REPO / "package.xml"))
    package.validate()
    assert package.name == "sam2s_ros"
    assert package.package_format == 3
    assert package.licenses == ["Apache-2.0"]


def test_versions_agree(package_xml):
    import sam2s_ros

    assert sam2s_ros.__version__ == package_xml.findtext("version")
    setup_py = (REPO / "setup.py").read_text()
    assert f'version="{package_xml.findtext("version")}"' in setup_py


# --------------------------------------------------------------------------------------
# The venv made by scripts/setup.sh
# --------------------------------------------------------------------------------------
@pytest.mark.skipif(not IN_VENV, reason=NOT_IN_VENV_REASON)
@pytest.mark.parametrize("exe", EXECUTABLES)
def test_venv_console_scripts(exe):
    bin_dir = pathlib.Path(sysconfig.get_path("scripts"))
    assert os.access(bin_dir / exe, os.X_OK), f"{bin_dir / exe} missing: run make setup"


@pytest.mark.skipif(not IN_VENV, reason=NOT_IN_VENV_REASON)
@pytest.mark.parametrize("exe", EXECUTABLES)
def test_venv_ros2_run_wrappers(exe):
    """`ros2 run sam2s_ros <exe>` looks for <prefix>/lib/sam2s_ros/<exe>."""
    wrapper = pathlib.Path(sys.prefix) / "lib" / "sam2s_ros" / exe
    assert os.access(wrapper, os.X_OK), f"{wrapper} missing or not executable: run make setup"
    assert wrapper.read_text().splitlines()[1:] == (REPO / "scripts" / exe).read_text().splitlines()[1:], (
        f"{wrapper} is out of date with scripts/{exe}: run make setup"
    )
    shebang = wrapper.read_text().splitlines()[0]
    assert shebang.startswith("#!")
    assert "python" in shebang


@pytest.mark.skipif(not IN_VENV, reason=NOT_IN_VENV_REASON)
def test_venv_generated_interfaces_import_from_anywhere(tmp_path, package_xml):
    """Outside the repository: generated msg/srv from site-packages, sources from the repo."""
    code = (
        "import sam2s_ros, sam2s_ros.msg, sam2s_ros.srv, importlib.util as u; "
        "from sam2s_ros.msg import Prompt; from sam2s_ros.srv import AddPrompt; "
        "print(sam2s_ros.__version__); print(u.find_spec('sam2s_ros.errors').origin)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    version, errors_origin = out.stdout.split()[-2:]
    assert version == package_xml.findtext("version")
    assert pathlib.Path(errors_origin).resolve() == (REPO / "sam2s_ros" / "errors.py").resolve()


# --------------------------------------------------------------------------------------
# colcon build in a temporary workspace (what a ROS 2 user does)
# --------------------------------------------------------------------------------------
def _source_files() -> list[pathlib.Path]:
    """Files a fresh clone would have (tracked + untracked-but-not-ignored), relative."""
    if shutil.which("git") and (REPO / ".git").exists():
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            timeout=60,
            check=False,
        )
        if out.returncode == 0:
            files = [pathlib.Path(p) for p in out.stdout.decode().split("\0") if p]
            return [p for p in files if (REPO / p).is_file()]
    skip = {".venv", "build", "install", "log", ".git", "__pycache__", ".pytest_cache"}
    return [
        p.relative_to(REPO) for p in REPO.rglob("*") if p.is_file() and not skip.intersection(p.relative_to(REPO).parts)
    ]


@pytest.mark.slow
@pytest.mark.skipif(not IN_VENV, reason=NOT_IN_VENV_REASON)
def test_colcon_build(tmp_path):
    colcon = pathlib.Path(sysconfig.get_path("scripts")) / "colcon"
    if not colcon.exists():
        pytest.skip("colcon not installed in the venv (run make setup)")
    src = tmp_path / "ws" / "src" / "sam2s_ros"
    for rel in _source_files():
        if rel.parts[0] in {".venv", "build", "install", "log"}:
            continue
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, src / rel)
    ws = tmp_path / "ws"
    env = dict(os.environ)
    env.update(
        AMENT_PREFIX_PATH=sys.prefix,
        VIRTUAL_ENV=sys.prefix,
        PATH=f"{sysconfig.get_path('scripts')}{os.pathsep}{env.get('PATH', '')}",
        COLCON_HOME=str(tmp_path / "colcon_home"),  # ignore the user's colcon defaults
    )
    cmd = [
        str(colcon),
        "build",
        "--base-paths",
        "src",
        "--event-handlers",
        "console_direct-",
        "--parallel-workers",
        "1",
        "--cmake-args",
        f"-DCMAKE_PROJECT_INCLUDE={src / 'cmake' / 'pip_ros_wheels_fix.cmake'}",
        f"-DPython3_EXECUTABLE={sys.executable}",
        "-DBUILD_TESTING=OFF",
    ]
    try:
        out = subprocess.run(cmd, cwd=ws, env=env, capture_output=True, text=True, timeout=COLCON_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"colcon build did not finish within {COLCON_TIMEOUT_S} s:\n{(exc.stdout or '')[-3000:]}")
    logs = "\n".join(p.read_text(errors="replace")[-4000:] for p in sorted((ws / "log").rglob("stderr.log")))
    assert out.returncode == 0, f"colcon build failed:\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}\n{logs}"

    prefix = ws / "install" / "sam2s_ros"
    pyver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = prefix / "lib" / pyver / "site-packages" / "sam2s_ros"
    for exe in EXECUTABLES:
        assert os.access(prefix / "lib" / "sam2s_ros" / exe, os.X_OK), f"lib/sam2s_ros/{exe} not installed"
    assert (prefix / "share" / "sam2s_ros" / "package.xml").is_file()
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "sam2s_ros").is_file()
    assert (prefix / "share" / "sam2s_ros" / "msg" / "Prompt.msg").is_file()
    assert (site / "msg" / "_prompt.py").is_file(), "generated Python message module missing"
    assert (site / "srv" / "_add_prompt.py").is_file(), "generated Python service module missing"
    assert (site / "__init__.py").read_text() == (REPO / "sam2s_ros" / "__init__.py").read_text()
    assert list(site.glob("sam2s_ros_s__rosidl_typesupport_c*.so")), "type support extension missing"

    # The installed tree alone (first on sys.path) provides both halves of the package.
    code = (
        "import sam2s_ros, importlib.util as u; from sam2s_ros.msg import Prompt; "
        "from sam2s_ros.srv import AddPrompt; p = Prompt(instrument_id=3); "
        "print(sam2s_ros.msg.__file__); print(u.find_spec('sam2s_ros.errors').origin)"
    )
    run_env = dict(os.environ)
    run_env["PYTHONPATH"] = os.pathsep.join([str(site.parent), run_env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    run_env["LD_LIBRARY_PATH"] = os.pathsep.join([str(prefix / "lib"), run_env.get("LD_LIBRARY_PATH", "")]).rstrip(
        os.pathsep
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    msg_file, errors_file = res.stdout.split()[-2:]
    assert pathlib.Path(msg_file).is_relative_to(prefix), msg_file
    assert pathlib.Path(errors_file).is_relative_to(prefix), errors_file
