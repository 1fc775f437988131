"""Packaging: package.xml, the venv install made by scripts/setup.sh, and a colcon build."""

from __future__ import annotations

import ast
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig
import xml.etree.ElementTree as ET

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
IN_VENV = sys.prefix != getattr(sys, "base_prefix", sys.prefix)
NOT_IN_VENV_REASON = "not running inside a virtual environment (run via make test / .venv/bin/python)"


@pytest.fixture
def in_venv():
    """The tests of the venv made by scripts/setup.sh fail (not skip) outside it."""
    assert IN_VENV, NOT_IN_VENV_REASON


COLCON_TIMEOUT_S = 480
COLCON_TEST_TIMEOUT_S = 300
# What `colcon test` runs in the slow test below: the suite registered by CMakeLists.txt,
# narrowed by PYTEST_ADDOPTS to two quick tests (the whole suite takes 10-20 min).
COLCON_TEST_SELECTION = "-k 'test_package_xml_identity or test_versions_agree'"
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
    import catkin_pkg.package as catkin_pkg  # in requirements (rosdep's parser): never skipped

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
@pytest.mark.usefixtures("in_venv")
@pytest.mark.parametrize("exe", EXECUTABLES)
def test_venv_console_scripts(exe):
    bin_dir = pathlib.Path(sysconfig.get_path("scripts"))
    assert os.access(bin_dir / exe, os.X_OK), f"{bin_dir / exe} missing: run make setup"


@pytest.mark.usefixtures("in_venv")
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


@pytest.mark.usefixtures("in_venv")
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
@pytest.mark.usefixtures("in_venv")
def test_colcon_build(tmp_path):
    colcon = pathlib.Path(sysconfig.get_path("scripts")) / "colcon"
    assert colcon.exists(), "colcon not installed in the venv (run make setup)"
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
        f"-DSAM2S_TEST_PYTHON={sys.executable}",
        "-DBUILD_TESTING=ON",
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

    # `colcon test` runs the pytest suite registered with ament (ament_add_pytest_test) and
    # `colcon test-result` reports it (before the registration both said 0 tests).
    test_env = dict(env, PYTEST_ADDOPTS=COLCON_TEST_SELECTION)
    _run_colcon([str(colcon), "test", "--base-paths", "src", "--event-handlers", "console_direct-"], ws, test_env)
    results = _run_colcon([str(colcon), "test-result", "--all", "--verbose"], ws, test_env)
    assert "sam2s_ros_pytest.xunit.xml: 2 tests, 0 errors, 0 failures" in results, results[-3000:]


def _run_colcon(cmd: list[str], cwd: pathlib.Path, env: dict) -> str:
    """Run a colcon command within COLCON_TEST_TIMEOUT_S; its stdout (fails the test on error)."""
    try:
        res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=COLCON_TEST_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"{' '.join(cmd[1:3])} did not finish within {COLCON_TEST_TIMEOUT_S} s:\n{(exc.stdout or '')[-3000:]}"
        )
    assert res.returncode == 0, f"{' '.join(cmd[1:3])} failed:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    return res.stdout


# --------------------------------------------------------------------------------------
# An apt ROS 2 workspace: requirements/ros_workspace.txt, rosdep keys, sam2s_node --help
# --------------------------------------------------------------------------------------
WORKSPACE_REQUIREMENTS = REPO / "requirements" / "ros_workspace.txt"
# import name -> distribution name, where they differ
DISTRIBUTION_OF = {"cv2": "opencv-python-headless", "yaml": "pyyaml", "PIL": "pillow", "hydra": "hydra-core"}
# third-party imports that only optional commands need, with the file that pins them
OPTIONAL_IMPORTS = {
    "onnx": "requirements/runtime.txt",  # sam2s export
    "onnxslim": "requirements/runtime.txt",  # sam2s export
    "tensorboardX": "requirements/runtime.txt",  # sam2s train
    "tensorrt": "docs/backends.md",  # NVIDIA's packages, backend tensorrt
}
# rosdep keys: lower-case words joined by - _ . (e.g. python3-onnxruntime-pip, rclpy)
ROSDEP_KEY = re.compile(r"^[a-z0-9][a-z0-9_.+-]*$")
DEPENDENCY_TAGS = ("depend", "build_depend", "buildtool_depend", "exec_depend", "test_depend")


def _requirement_names(path: pathlib.Path) -> dict[str, str]:
    """{normalized distribution name: requirement line} of a requirements file."""
    names = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name = re.split(r"[=<>!~;\[ ]", line, maxsplit=1)[0]
            names[re.sub(r"[-_.]+", "-", name).lower()] = line
    return names


def _third_party_imports() -> dict[str, set[str]]:
    """{top-level module: files} of every absolute import in sam2s_ros/ outside the stdlib."""
    found: dict[str, set[str]] = {}
    for path in (REPO / "sam2s_ros").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("sam2s_ros", "__future__"):
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def _ros_python_packages(package_xml: ET.Element) -> set[str]:
    """Dependencies of package.xml that are ROS packages (their Python name is the key)."""
    keys = {e.text.strip() for tag in DEPENDENCY_TAGS for e in package_xml.findall(tag)}
    return {k for k in keys if not k.startswith("python3-")}


def test_workspace_requirements_hold_no_ros_package():
    names = _requirement_names(WORKSPACE_REQUIREMENTS)
    assert names, "requirements/ros_workspace.txt lists nothing"
    ros = [n for n in names if n.startswith("ros-") or n in ("rclpy", "catkin-pkg", "colcon-common-extensions")]
    assert ros == [], f"ROS packages in {WORKSPACE_REQUIREMENTS.name} (apt ROS provides them): {ros}"


def test_workspace_requirements_keep_numpy_1():
    """apt ROS (Humble, Jazzy) builds its extensions against numpy 1."""
    numpy = _requirement_names(WORKSPACE_REQUIREMENTS)["numpy"]
    version = numpy.split("==")[1]
    assert int(version.split(".")[0]) == 1, numpy
    opencv = _requirement_names(WORKSPACE_REQUIREMENTS)["opencv-python-headless"]
    assert opencv.split("==")[1] < "4.12", f"{opencv}: opencv-python-headless 4.12 and later require numpy 2"


def test_workspace_requirements_cover_every_import(package_xml):
    """Every third-party import of sam2s_ros is a ROS dependency in package.xml, pinned in the
    workspace file (sam2: in requirements/sam2.txt), or an optional one pinned elsewhere."""
    names = _requirement_names(WORKSPACE_REQUIREMENTS) | _requirement_names(REPO / "requirements" / "sam2.txt")
    ros_packages = _ros_python_packages(package_xml)
    uncovered = {}
    for module, files in sorted(_third_party_imports().items()):
        if module in ros_packages:
            continue
        if module in OPTIONAL_IMPORTS:
            assert (REPO / OPTIONAL_IMPORTS[module]).is_file()
            continue
        dist = re.sub(r"[-_.]+", "-", DISTRIBUTION_OF.get(module, module)).lower()
        if dist not in names:
            uncovered[module] = sorted(files)
    assert uncovered == {}, f"imports neither in package.xml nor in {WORKSPACE_REQUIREMENTS.name}: {uncovered}"


def test_every_ros_import_is_a_package_xml_dependency(package_xml):
    ros_imports = {
        m
        for m in _third_party_imports()
        if m.endswith(("_msgs", "_srvs", "_interfaces")) or m in ("rclpy", "launch", "launch_ros")
    }
    assert ros_imports, "expected rclpy and message packages among the imports"
    missing = ros_imports - _ros_python_packages(package_xml)
    assert missing == set(), f"ROS packages imported but not in package.xml: {sorted(missing)}"


def test_package_xml_rosdep_keys(package_xml):
    keys = [e.text.strip() for tag in DEPENDENCY_TAGS for e in package_xml.findall(tag)]
    bad = [k for k in keys if not ROSDEP_KEY.match(k)]
    assert bad == [], f"not rosdep keys: {bad}"
    assert len(keys) == len(set(keys)), "a key is declared twice"
    assert "rcl_interfaces" in keys  # parameters.py imports rcl_interfaces.msg
    assert "ament_cmake_pytest" in keys  # CMakeLists.txt registers the tests with it
    python_keys = [k for k in keys if k.startswith("python3-")]
    assert python_keys, "no python3-* rosdep keys"
    assert all(re.match(r"^python3-[a-z0-9][a-z0-9.-]*$", k) for k in python_keys), python_keys


def test_readme_skips_exactly_the_pip_keys(package_xml):
    """The README's rosdep line leaves pip keys to the venv (pip would install system-wide)."""
    pip_keys = {e.text.strip() for e in package_xml.findall("exec_depend") if e.text.strip().endswith("-pip")}
    assert pip_keys == {"python3-onnxruntime-pip"}
    readme = (REPO / "README.md").read_text()
    skipped = re.search(r'rosdep install [^\n]*--skip-keys "([^"]*)"', readme)
    assert skipped is not None, "README has no `rosdep install ... --skip-keys` line"
    assert set(skipped.group(1).split()) == pip_keys


def test_readme_colcon_line_names_the_cmake_fix():
    """The colcon command for pip-wheel ROS carries the CMake include that fixes the wheels."""
    readme = (REPO / "README.md").read_text()
    lines = [line for line in readme.splitlines() if "colcon build" in line and "CMAKE_PROJECT_INCLUDE" in line]
    assert lines, "README: no colcon build line with -DCMAKE_PROJECT_INCLUDE"
    assert all("cmake/pip_ros_wheels_fix.cmake" in line for line in lines)
    assert (REPO / "cmake" / "pip_ros_wheels_fix.cmake").is_file()


def test_cmake_registers_the_pytest_suite():
    """`colcon test` runs test/ (the slow test_colcon_build runs it for real)."""
    cmake = (REPO / "CMakeLists.txt").read_text()
    block = cmake[cmake.index("if(BUILD_TESTING)") :]
    assert "find_package(ament_cmake_pytest REQUIRED)" in block
    assert re.search(r"ament_add_pytest_test\(\s*\S+\s+test\b", block), "ament_add_pytest_test(<name> test ...) missing"


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_node_help_exits_without_starting(flag):
    exe = pathlib.Path(sysconfig.get_path("scripts")) / "sam2s_node"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "sam2s_ros.node"]
    out = subprocess.run([*cmd, flag], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: sam2s_node")
    assert "image_topic" in out.stdout  # the parameter list
    assert "tracker ready" not in out.stdout + out.stderr  # the node did not start


def test_node_help_only_before_ros_args():
    from sam2s_ros.node import wants_help

    assert wants_help(["--help"])
    assert wants_help(["-h", "--ros-args", "-p", "a:=1"])
    assert not wants_help(["--ros-args", "-p", "help:=1", "-h"])
    assert not wants_help([])
