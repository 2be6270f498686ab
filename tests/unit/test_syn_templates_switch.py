"""How SYN templates are switched on and off for a datapath (no root needed): the
``netvirt datapath`` option (or its environment variable), a lab topology's
``syn_templates:``, and the offload's own default when neither says anything."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from netvirt.agent import datapath as datapath_module
from netvirt.cli.main import app
from netvirt.dataplane.offload import templates
from netvirt.lab.build import datapath_argv
from netvirt.lab.topology import loads
from unit.test_lab_state_fail import one_host_lab

BASE = """
hosts: [{name: hv1}]
projects: [{name: p, networks: [{name: net, cidr: 10.0.0.0/24}]}]
vms:
  - {name: vm1, host: hv1, network: net}
"""


def _argv(tmp_path: Path, syn_templates: bool | None) -> list[str]:
    state, host = one_host_lab(tmp_path)
    return datapath_argv(state, host, 1500, "closed", True, syn_templates)


def test_a_topology_says_it_or_leaves_it_to_the_environment(tmp_path: Path) -> None:
    assert loads(BASE).syn_templates is None
    assert loads(BASE + "syn_templates: false\n").syn_templates is False
    assert "--no-syn-templates" in _argv(tmp_path, False)
    assert "--syn-templates" in _argv(tmp_path, True)
    unset = _argv(tmp_path, None)  # a benchmark's NETVIRT_SYN_TEMPLATES then decides
    assert "--syn-templates" not in unset
    assert "--no-syn-templates" not in unset


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        ([], None, None),
        (["--no-syn-templates"], None, False),
        (["--syn-templates"], "0", True),  # the option wins over the environment
        ([], "0", False),
        ([], "1", True),
    ],
)
def test_the_datapath_option_and_its_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    args: list[str],
    env: str | None,
    expected: bool | None,
) -> None:
    seen: list[datapath_module.DatapathConfig] = []

    class Stop(Exception):
        pass

    def capture(config: datapath_module.DatapathConfig) -> None:
        seen.append(config)
        raise Stop

    monkeypatch.setattr(datapath_module, "DatapathProcess", capture)
    if env is None:
        monkeypatch.delenv(templates.ENV, raising=False)
    else:
        monkeypatch.setenv(templates.ENV, env)
    argv = ["datapath", "--name", "hv1", "--iface-dir", str(tmp_path)]
    argv += ["--underlay-ip", "127.0.0.1", "--control", str(tmp_path / "ctl"), *args]
    result = CliRunner().invoke(app, argv)
    assert isinstance(result.exception, Stop), result.output
    assert seen[0].syn_templates is expected


def test_without_a_choice_the_default_is_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(templates.ENV, raising=False)
    assert templates.enabled_by_env() is templates.DEFAULT_ON is True
    monkeypatch.setenv(templates.ENV, "0")
    assert templates.enabled_by_env() is False


@pytest.mark.parametrize(("word", "on"), [("true", True), ("Off", False), ("no", False)])
def test_the_environment_takes_boolean_words(
    monkeypatch: pytest.MonkeyPatch, word: str, on: bool
) -> None:
    monkeypatch.setenv(templates.ENV, word)
    assert templates.enabled_by_env() is on


def test_a_bad_environment_value_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(templates.ENV, "maybe")
    with pytest.raises(ValueError, match="NETVIRT_SYN_TEMPLATES='maybe'"):
        templates.enabled_by_env()
    argv = ["datapath", "--name", "hv1", "--iface-dir", str(tmp_path)]
    argv += ["--underlay-ip", "127.0.0.1", "--control", str(tmp_path / "ctl")]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2  # the option's parser refuses it before anything starts
    assert "syn-templates" in result.output  # names the option whose value it refused
