"""Plugins: loading, clear errors for broken ones, registries, hook calls, docs."""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from livecam.pluginhost import hookspecs
from livecam.pluginhost.manager import PluginError, Plugins
from tests.conftest import REPO, livecam_cmd, write_config

SITE_PLUGIN = '''
"""A site camera backend and a site NAS layout."""
from livecam import hookimpl
from livecam.camera import CameraBackend
from livecam.options import Option, string


class Doorbell(CameraBackend):
    description = "a doorbell camera"
    options = {"url": Option(string, help="where the doorbell streams")}


@hookimpl
def livecam_register_cameras(register):
    register("doorbell", Doorbell)


@hookimpl
def livecam_remote_path(segment, node):
    return f"by-camera/{segment.camera}/{node}/{segment.name}"
'''


def config_with(tmp_path: Path, plugin_text: str | None, **camera) -> Path:
    plugins = tmp_path / "plugins"
    plugins.mkdir(exist_ok=True)
    if plugin_text is not None:
        (plugins / "site.py").write_text(plugin_text)
    return write_config(
        tmp_path / "livecam.yaml",
        {
            "cameras": {"cam0": camera or {"backend": "ffmpeg", "pattern": "testsrc2"}},
            "buffer": {"path": str(tmp_path / "buffer")},
            "spool": {"path": str(tmp_path / "spool")},
            "transport": {"plugin": "local", "path": str(tmp_path / "nas")},
            "plugin_dirs": [str(plugins)],
        },
    )


def test_site_plugin_registers_a_backend_and_its_options_are_checked(tmp_path, run_livecam):
    cfg = config_with(tmp_path, SITE_PLUGIN, backend="doorbell", url="rtsp://door")
    result = run_livecam("-c", str(cfg), "plugins")
    assert result.returncode == 0, result.stderr
    assert f"site:site  ({tmp_path}/plugins/site.py)" in result.stdout
    assert "registers camera backend doorbell" in result.stdout
    assert "implements livecam_remote_path" in result.stdout
    assert "registers transport nfs" in result.stdout  # built-ins load the same way
    assert run_livecam("-c", str(cfg), "check-config").returncode == 0
    cfg = config_with(tmp_path, SITE_PLUGIN, backend="doorbell")
    result = run_livecam("-c", str(cfg), "check-config")
    assert result.returncode == 2
    assert "cameras.cam0.url: required key is missing (where the doorbell streams)" in result.stderr


# A site plugin written for the flat layout (before 0.2): a transport of the
# documented store protocol and a tier subclass, by their old import paths.
OLD_PATHS_PLUGIN = """
from livecam import hookimpl
from livecam.publish import TempRenameStore
from livecam.store_transport import StoreTransport
from livecam.tiers import Tier


class OldTier(Tier):
    pass


class OldTransport(StoreTransport):
    description = "written against livecam.publish"


@hookimpl
def livecam_register_tiers(register):
    register("old-spool", OldTier)


@hookimpl
def livecam_register_transports(register):
    register("old", OldTransport)
"""


def test_a_site_plugin_on_the_old_import_paths_still_loads_and_says_where_they_went(
    tmp_path, run_livecam
):
    cfg = config_with(tmp_path, OLD_PATHS_PLUGIN)
    result = run_livecam("-c", str(cfg), "plugins")
    assert result.returncode == 0, result.stderr
    assert "registers transport old" in result.stdout
    assert "registers tier old-spool" in result.stdout
    for old, new in (
        ("livecam.publish", "livecam.transport.protocol"),
        ("livecam.store_transport", "livecam.transport.stores"),
        ("livecam.tiers", "livecam.storage.tiers"),
    ):
        assert f"{old} is now {new}: import it from there" in result.stderr
    # The old name is the very module, not a copy: a subclass is a Tier to the core.
    probe = "import livecam.tiers as a, livecam.storage.tiers as b; print(a is b, a.__name__)"
    same = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert same.stdout.split() == ["True", "livecam.storage.tiers"], same.stderr


BROKEN = [
    ("def livecam_register_cameras(:\n", ["site.py:1", "syntax error"]),
    ("import no_such_module_here\n", ["site.py:1", "ModuleNotFoundError", "no_such_module_here"]),
    ("x = 1\nraise RuntimeError('site config missing')\n", ["site.py:2", "site config missing"]),
    (
        "from livecam import hookimpl\n@hookimpl\ndef livecam_segment_close(segment):\n    pass\n",
        ["site:site", "livecam_segment_close", "unknown hook"],
    ),
    (
        "from livecam import hookimpl\n@hookimpl\ndef livecam_register_cameras(register):\n"
        "    register('ffmpeg', object)\n",
        ["site:site", "'ffmpeg'", "CameraBackend"],
    ),
    (
        "from livecam import hookimpl\nfrom livecam.camera import CameraBackend\n"
        "@hookimpl\ndef livecam_register_cameras(register):\n"
        "    register('ffmpeg', type('X', (CameraBackend,), {}))\n",
        ["site:site", "'ffmpeg' is already registered by ffmpeg"],
    ),
]


@pytest.mark.parametrize(("text", "words"), BROKEN, ids=lambda v: str(v)[:30])
def test_broken_site_plugin_gets_one_clear_line(tmp_path, run_livecam, text, words):
    cfg = config_with(tmp_path, text)
    for command in ("plugins", "check-config", "run"):
        result = run_livecam("-c", str(cfg), command, timeout=20)
        assert result.returncode == 2, (command, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
        for word in words:
            assert word in lines[0], lines[0]


def test_event_hook_failure_is_logged_and_others_still_run(caplog):
    calls = []

    class Broken:
        @staticmethod
        @__import__("livecam").hookimpl
        def livecam_segment_closed(segment):
            raise RuntimeError("plugin bug")

    class Counter:
        @staticmethod
        @__import__("livecam").hookimpl
        def livecam_segment_closed(segment):
            calls.append(segment)

    plugins = Plugins(entry_points=False)
    plugins.pm.register(Broken, name="broken")
    plugins.pm.register(Counter, name="counter")
    try:
        plugins.segment_closed(segment="seg")
    finally:
        plugins.pm.unregister(name="broken")
        plugins.pm.unregister(name="counter")
    assert calls == ["seg"]
    assert "plugin broken failed in livecam_segment_closed" in caplog.text


ORDER_PLUGINS = {
    # Loaded in this order (file names sort); pluggy calls the last-loaded plain
    # implementation first, so without tryfirst/trylast "c_plain" would run first.
    "a_first.py": """
from livecam import hookimpl
from order_log import calls

@hookimpl(tryfirst=True)
def livecam_segment_closed(segment):
    calls.append("tryfirst")
""",
    "b_last.py": """
from livecam import hookimpl
from order_log import calls

@hookimpl(trylast=True)
def livecam_segment_closed(segment):
    calls.append("trylast")
    raise RuntimeError("trylast plugin bug")
""",
    "c_plain.py": """
from livecam import hookimpl
from order_log import calls

@hookimpl
def livecam_segment_closed(segment):
    calls.append("plain")
""",
    "d_wrapper.py": """
from livecam import hookimpl
from order_log import calls

@hookimpl(wrapper=True)
def livecam_segment_closed(segment):
    calls.append("wrapper before")
    result = yield
    calls.append(f"wrapper after {result!r}")
    return result
""",
    "e_broken_wrapper.py": """
from livecam import hookimpl
from order_log import calls

@hookimpl(wrapper=True)
def livecam_segment_closed(segment):
    calls.append("broken wrapper before")
    yield
    raise RuntimeError("wrapper bug")
""",
}


def test_event_hooks_run_in_pluggys_order_with_wrappers_around_and_failures_contained(
    tmp_path, monkeypatch, caplog
):
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    for name, text in ORDER_PLUGINS.items():
        (plugin_dir / name).write_text(text)
    (tmp_path / "order_log.py").write_text("calls = []\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    calls = __import__("order_log").calls
    plugins = Plugins([plugin_dir], entry_points=False)
    expected = [
        "broken wrapper before",  # the later-registered wrapper is outermost
        "wrapper before",
        "tryfirst",
        "plain",
        "trylast",
        "wrapper after []",  # event hooks return nothing; the failing trylast adds nothing
    ]
    plugins.segment_closed(segment="seg")
    assert calls == expected
    assert "plugin site:b_last failed in livecam_segment_closed" in caplog.text
    assert "plugin site:e_broken_wrapper failed in livecam_segment_closed" in caplog.text
    # The same order as pluggy's own call of the unguarded functions would give:
    # tryfirst before plain, trylast after, wrappers around them all.
    impls = plugins.pm.hook.livecam_segment_closed.get_hookimpls()
    assert [i.plugin_name for i in reversed(impls)] == [
        "site:e_broken_wrapper",
        "site:d_wrapper",
        "site:a_first",
        "site:c_plain",
        "site:b_last",
    ]


def test_registration_hooks_go_through_pluggy_and_name_the_failing_plugin(tmp_path):
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    (plugin_dir / "late.py").write_text(
        "from livecam import hookimpl\n"
        "from livecam.transport import Transport\n"
        "class T(Transport):\n    pass\n"
        "@hookimpl(tryfirst=True)\n"
        "def livecam_register_transports(register):\n    register('late', T)\n"
    )
    plugins = Plugins([plugin_dir])
    assert plugins.transports.owners["late"] == "site:late"
    assert "transport late" in plugins.info["site:late"].registers
    (plugin_dir / "late.py").write_text(
        "from livecam import hookimpl\n"
        "@hookimpl\n"
        "def livecam_register_transports(register):\n    raise KeyError('oops')\n"
    )
    with pytest.raises(PluginError, match=r"plugin site:late: livecam_register_transports failed"):
        Plugins([plugin_dir])


def test_missing_plugin_dir_is_not_an_error(tmp_path):
    plugins = Plugins([tmp_path / "absent"])
    assert "ffmpeg" in plugins.cameras.names()


def test_every_hook_has_a_contract_and_is_documented():
    docs = (REPO / "docs" / "plugins.md").read_text()
    for name in hookspecs.spec_names():
        doc = inspect.getdoc(getattr(hookspecs, name))
        assert doc and len(doc) > 80, f"{name} has no contract docstring"
        assert re.search(rf"^#+ `{name}", docs, re.M), f"{name} is not documented in plugins.md"
        assert doc in docs, f"{name}: plugins.md says something else than its docstring"
    groups = hookspecs.REGISTRATION_HOOKS | hookspecs.POLICY_HOOKS | hookspecs.EVENT_HOOKS
    assert groups == set(hookspecs.spec_names()), "every hook is in exactly one group"


def test_the_hook_reference_is_what_the_script_writes(tmp_path):
    script = REPO / "scripts" / "hook_reference.py"
    check = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stderr
    spec = importlib.util.spec_from_file_location("hook_reference", script)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    docs = (REPO / "docs" / "plugins.md").read_text()
    assert module.rewritten(docs) == docs
    drifted = docs.replace("Register camera backends.", "Register cameras.")
    assert drifted != docs and module.rewritten(drifted) == docs, "a hand edit is undone"


def test_plugin_error_is_a_config_error():
    # The CLI turns every ConfigError into one line and exit code 2.
    assert issubclass(PluginError, __import__("livecam.options").options.ConfigError)


THIRD_PARTY = """\
from livecam import hookimpl
from livecam.transport import Transport


class Pigeon(Transport):
    description = "a carrier pigeon"


@hookimpl
def livecam_register_transports(register):
    register("pigeon", Pigeon)
"""


def test_a_third_party_plugin_is_ten_lines_plus_an_entry_point(tmp_path):
    """A distribution of one ten-line module and an entry point in the group
    ``livecam``, installed beside livecam (a dist-info on the path, as pip leaves
    it), is loaded like the built-ins: no config, no plugin_dirs."""
    assert len(THIRD_PARTY.strip().splitlines()) <= 11  # ten lines of code, one blank
    (tmp_path / "livecam_pigeon.py").write_text(THIRD_PARTY)
    info = tmp_path / "livecam_pigeon-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: livecam-pigeon\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[livecam]\npigeon = livecam_pigeon\n")
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    out = subprocess.run(
        livecam_cmd("plugins"),
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PYTHONPATH=path),
    )
    assert out.returncode == 0, out.stderr
    assert "pigeon  (entry point livecam_pigeon)" in out.stdout, out.stdout
    assert "registers transport pigeon" in out.stdout, out.stdout
    # Loaded the way the built-ins are: each of them through the same group.
    for name in ("ffmpeg", "nfs", "rsync", "sftp", "smb"):
        assert f"{name}  (entry point livecam_plugins.{name})" in out.stdout, out.stdout
