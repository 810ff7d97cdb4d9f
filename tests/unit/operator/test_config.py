"""Settings from environment variables and flags: the Go operator's names, validated with clear messages."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from controllers.config import ConfigError, Settings, configure_parser, load_settings, settings_or_exit
from opsync.http2 import HealthCheck

TOKEN = "eyJhbGciOiJFUzI1NiJ9.s3cr3t-token"
BASE_ENV = {"OP_CONNECT_HOST": "http://onepassword-connect:8080", "OP_CONNECT_TOKEN": TOKEN}


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    return parser.parse_args(list(argv))


def load(*argv: str, **env: str) -> Settings:
    return load_settings(parse(*argv), {**BASE_ENV, **env})


def error(*argv: str, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_settings(parse(*argv), {**BASE_ENV, **(env or {})})
    return caught.value


def test_defaults_match_the_go_operator() -> None:
    settings = load()
    assert settings.connect_host == "http://onepassword-connect:8080"
    assert settings.connect_token.get_secret_value() == TOKEN
    assert settings.watch_namespaces == ()
    assert settings.polling_interval == 600
    assert settings.auto_restart is False
    assert settings.allow_empty_values is False and settings.enable_annotations is False
    assert settings.leader_elect is False and settings.leader_election_namespace is None
    assert settings.leader_election_id == "c26807fd.onepassword.com"
    assert settings.metrics_bind_address == ":8080" and settings.health_probe_bind_address == ":8081"
    assert settings.log_level == "info" and settings.log_format == "auto"
    assert settings.kubeconfig is None and settings.connect_ca_file is None


def test_the_token_never_shows() -> None:
    settings = load()
    assert TOKEN not in repr(settings) and TOKEN not in str(settings)


def test_watch_namespace_is_trimmed_and_empty_entries_dropped() -> None:
    assert load(WATCH_NAMESPACE=" default , team-a,,team-a, ").watch_namespaces == ("default", "team-a")
    assert load(WATCH_NAMESPACE="").watch_namespaces == ()
    assert load(WATCH_NAMESPACE=" , ").watch_namespaces == ()


def test_watch_namespace_with_an_invalid_name_is_named() -> None:
    assert str(error(env={"WATCH_NAMESPACE": "default,Team_A"})) == (
        "WATCH_NAMESPACE: \"Team_A\" is not a namespace name (lowercase letters, digits and '-')"
    )


@pytest.mark.parametrize(
    "selector", ["opsync.dev/sync=true", "team in (a, b),!legacy", "tier!=db", "env==prod", " sync "]
)
def test_watch_namespace_selector_accepts_label_selectors(selector: str) -> None:
    assert load(WATCH_NAMESPACE_SELECTOR=selector).watch_namespace_selector == selector.strip()
    assert load(WATCH_NAMESPACE_SELECTOR="").watch_namespace_selector is None


@pytest.mark.parametrize("selector", ["=true", "a b", "team in ()", "sync,", "bad key=1", "k=(v)", "k=" + "v" * 64])
def test_watch_namespace_selector_refuses_what_the_api_server_would(selector: str) -> None:
    message = str(error(env={"WATCH_NAMESPACE_SELECTOR": selector}))
    assert message.startswith("WATCH_NAMESPACE_SELECTOR: ") and "is not a label selector" in message


def test_watch_namespace_and_its_selector_exclude_each_other() -> None:
    message = str(error(env={"WATCH_NAMESPACE": "team-a", "WATCH_NAMESPACE_SELECTOR": "sync=true"}))
    assert message.startswith("WATCH_NAMESPACE_SELECTOR: cannot be combined with WATCH_NAMESPACE")


def test_polling_interval() -> None:
    assert load(POLLING_INTERVAL="10").polling_interval == 10
    assert load(POLLING_INTERVAL=" 30 ").polling_interval == 30
    assert load(POLLING_INTERVAL="").polling_interval == 600  # Helm renders unset values as ""


@pytest.mark.parametrize("value", ["0", "-5", "ten", "1.5", "1e3"])
def test_bad_polling_interval_is_refused_with_the_setting_named(value: str) -> None:
    assert str(error(env={"POLLING_INTERVAL": value})) == (
        f'POLLING_INTERVAL: must be a whole number of seconds greater than 0, got "{value}"'
    )


@pytest.mark.parametrize(
    ("value", "expected"), [("true", True), ("TRUE", True), ("1", True), ("f", False), ("", False)]
)
def test_auto_restart_takes_go_booleans(value: str, expected: bool) -> None:
    assert load(AUTO_RESTART=value).auto_restart is expected


def test_bad_auto_restart_is_named() -> None:
    assert str(error(env={"AUTO_RESTART": "yes"})) == 'AUTO_RESTART: must be true or false, got "yes"'


def test_http2_health_check_timers_are_client_gos_validated() -> None:
    assert load().http2_health == HealthCheck(read_idle=30, ping_timeout=15)
    health = load(HTTP2_READ_IDLE_TIMEOUT_SECONDS="10", HTTP2_PING_TIMEOUT_SECONDS="5").http2_health
    assert health == HealthCheck(read_idle=10, ping_timeout=5)
    assert load(HTTP2_READ_IDLE_TIMEOUT_SECONDS="0").http2_health.read_idle == 0, "0 turns the check off"
    assert load(HTTP2_PING_TIMEOUT_SECONDS="0").http2_health.ping_timeout == 15, "0 is Go's default"
    assert str(error(env={"HTTP2_PING_TIMEOUT_SECONDS": "5s"})) == (
        'HTTP2_PING_TIMEOUT_SECONDS: must be a whole number of seconds, 0 or more, got "5s"'
    )
    assert str(error(env={"HTTP2_READ_IDLE_TIMEOUT_SECONDS": "-1"})).startswith("HTTP2_READ_IDLE_TIMEOUT_SECONDS: ")


def test_disable_http2_is_client_gos_switch_validated() -> None:
    assert load().disable_http2 is False
    assert load(DISABLE_HTTP2="true").disable_http2 is True
    assert load(DISABLE_HTTP2="0").disable_http2 is False
    assert str(error(env={"DISABLE_HTTP2": "yes please"})) == 'DISABLE_HTTP2: must be true or false, got "yes please"'


def test_manage_connect() -> None:
    assert load().manage_connect is False
    assert load(MANAGE_CONNECT="false").manage_connect is False
    assert load(MANAGE_CONNECT="TRUE").manage_connect is True
    assert str(error(env={"MANAGE_CONNECT": "maybe"})) == 'MANAGE_CONNECT: must be true or false, got "maybe"'


SA_TOKEN = "ops_eyJzM2NyM3QiOiJ0b2tlbiJ9"


def test_a_service_account_token_selects_the_sdk() -> None:
    settings = load_settings(parse(), {"OP_SERVICE_ACCOUNT_TOKEN": SA_TOKEN})
    assert settings.auth_method == "service-account"
    assert settings.service_account_token is not None
    assert settings.service_account_token.get_secret_value() == SA_TOKEN
    assert settings.connect_host is None and settings.connect_token is None
    assert SA_TOKEN not in repr(settings)
    assert load().auth_method == "connect"


def test_the_service_account_token_file_is_read_like_the_connect_one(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"  {SA_TOKEN}\n")
    settings = load_settings(parse(), {"OP_SERVICE_ACCOUNT_TOKEN_FILE": str(token_file)})
    assert settings.service_account_token is not None
    assert settings.service_account_token.get_secret_value() == SA_TOKEN
    assert settings.service_account_token_file == token_file  # watched: a rotated token needs no restart
    both = {"OP_SERVICE_ACCOUNT_TOKEN_FILE": str(token_file), "OP_SERVICE_ACCOUNT_TOKEN": SA_TOKEN}
    with pytest.raises(ConfigError) as caught:
        load_settings(parse(), both)
    assert caught.value.setting == "OP_SERVICE_ACCOUNT_TOKEN_FILE" and SA_TOKEN not in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        load_settings(parse(), {"OP_SERVICE_ACCOUNT_TOKEN_FILE": str(tmp_path / "missing")})
    assert caught.value.setting == "OP_SERVICE_ACCOUNT_TOKEN_FILE" and "cannot read" in caught.value.message
    with pytest.raises(ConfigError) as caught:
        load_settings(parse(), {"OP_SERVICE_ACCOUNT_TOKEN": f"{SA_TOKEN} {SA_TOKEN}"})
    assert caught.value.setting == "OP_SERVICE_ACCOUNT_TOKEN" and SA_TOKEN not in str(caught.value)


def test_a_service_account_token_with_connect_settings_is_refused_with_the_go_message() -> None:
    caught = error(env={"OP_SERVICE_ACCOUNT_TOKEN": SA_TOKEN})
    assert caught.setting == "OP_SERVICE_ACCOUNT_TOKEN"
    assert caught.message.startswith("Either Connect or Service Account credentials should be set, not both")
    assert SA_TOKEN not in str(caught) and TOKEN not in str(caught)
    with pytest.raises(ConfigError) as file_too:
        load_settings(parse(), {**BASE_ENV, "OP_SERVICE_ACCOUNT_TOKEN_FILE": "/run/token"})
    assert file_too.value.setting == "OP_SERVICE_ACCOUNT_TOKEN"


def test_half_a_connect_configuration_next_to_a_service_account_is_ignored_with_a_warning() -> None:
    settings = load_settings(parse(), {"OP_SERVICE_ACCOUNT_TOKEN": SA_TOKEN, "OP_CONNECT_HOST": "https://c"})
    assert settings.auth_method == "service-account" and settings.connect_host is None
    assert [w.split(":")[0] for w in settings.warnings] == ["OP_CONNECT_HOST"]


def test_without_any_credentials_both_ways_are_named() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(parse(), {})
    assert caught.value.setting == "OP_CONNECT_HOST"
    assert "OP_SERVICE_ACCOUNT_TOKEN" in caught.value.message


def test_connect_host_is_required_and_must_be_a_url() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(parse(), {"OP_CONNECT_TOKEN": TOKEN})
    assert caught.value.setting == "OP_CONNECT_HOST"
    assert str(error(env={"OP_CONNECT_HOST": "onepassword-connect:8080"})).startswith(
        "OP_CONNECT_HOST: must be an http:// or https:// URL such as http://onepassword-connect:8080, got "
    )
    assert error(env={"OP_CONNECT_HOST": "http://user:pw@connect:8080"}).setting == "OP_CONNECT_HOST"
    assert error(env={"OP_CONNECT_HOST": "http://connect:99999"}).setting == "OP_CONNECT_HOST"
    assert load(OP_CONNECT_HOST="https://connect.example/prefix/").connect_host == "https://connect.example/prefix"


def test_plain_http_to_a_remote_host_warns_and_loopback_does_not() -> None:
    assert any(w.startswith("OP_CONNECT_HOST:") for w in load().warnings)
    assert load(OP_CONNECT_HOST="http://127.0.0.1:8080").warnings == ()
    assert load(OP_CONNECT_HOST="http://localhost:8080").warnings == ()
    assert load(OP_CONNECT_HOST="https://connect.example").warnings == ()


def test_token_is_required() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(parse(), {"OP_CONNECT_HOST": "https://c"})
    assert caught.value.setting == "OP_CONNECT_TOKEN"


def test_token_file_is_read_and_trimmed(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    env = {"OP_CONNECT_HOST": "https://c", "OP_CONNECT_TOKEN_FILE": str(token_file)}
    assert load_settings(parse(), env).connect_token.get_secret_value() == TOKEN


def test_token_file_problems_name_the_setting_and_hide_the_token(tmp_path: Path) -> None:
    env = {"OP_CONNECT_HOST": "https://c", "OP_CONNECT_TOKEN_FILE": str(tmp_path / "missing")}
    with pytest.raises(ConfigError, match=r"^OP_CONNECT_TOKEN_FILE: cannot read .*missing: No such file"):
        load_settings(parse(), env)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match=r"OP_CONNECT_TOKEN_FILE: .* is empty"):
        load_settings(parse(), {**env, "OP_CONNECT_TOKEN_FILE": str(tmp_path / "empty")})
    (tmp_path / "two").write_text("s3cr3t one\ntwo")
    with pytest.raises(ConfigError) as caught:
        load_settings(parse(), {**env, "OP_CONNECT_TOKEN_FILE": str(tmp_path / "two")})
    assert caught.value.setting == "OP_CONNECT_TOKEN_FILE" and "s3cr3t" not in str(caught.value)
    with pytest.raises(ConfigError, match="not both"):
        load_settings(parse(), {**env, "OP_CONNECT_TOKEN": TOKEN})


def test_ca_file(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert load(OP_CONNECT_CA_FILE=str(ca)).connect_ca_file == ca
    assert load(SSL_CERT_FILE=str(ca)).connect_ca_file == ca
    assert error(env={"OP_CONNECT_CA_FILE": str(tmp_path / "nope.pem")}).setting == "OP_CONNECT_CA_FILE"


def test_go_style_boolean_flags() -> None:
    settings = load("--leader-elect", "--allow-empty-values=true", "--enable-annotations=false")
    assert settings.leader_elect and settings.allow_empty_values and not settings.enable_annotations
    assert str(error("--leader-elect=sure")) == '--leader-elect: must be true or false, got "sure"'


def test_value_flags() -> None:
    settings = load(
        "--leader-election-namespace=ops",
        "--leader-election-id=other.example.com",
        "--metrics-bind-address=0",
        "--health-probe-bind-address",
        "127.0.0.1:0",
        "--kubeconfig=/tmp/kubeconfig",
        "--workers=8",
    )
    assert settings.leader_election_namespace == "ops" and settings.leader_election_id == "other.example.com"
    assert settings.metrics_bind_address == "0" and settings.health_probe_bind_address == "127.0.0.1:0"
    assert settings.kubeconfig == "/tmp/kubeconfig" and settings.workers == 8


def test_kubeconfig_env_is_the_fallback() -> None:
    assert load(KUBECONFIG="/etc/kube").kubeconfig == "/etc/kube"
    assert load("--kubeconfig=/flag", KUBECONFIG="/etc/kube").kubeconfig == "/flag"


@pytest.mark.parametrize(
    ("argv", "setting"),
    [
        (["--metrics-bind-address=8080"], "--metrics-bind-address"),
        (["--health-probe-bind-address=:99999"], "--health-probe-bind-address"),
        (["--workers=0"], "--workers"),
        (["--workers=-1"], "--workers"),
        (["--workers=many"], "--workers"),
        (["--log-level=loud"], "--log-level"),
        (["--log-format=xml"], "--log-format"),
    ],
)
def test_bad_flags_are_named(argv: list[str], setting: str) -> None:
    assert error(*argv).setting == setting


@pytest.mark.parametrize(
    ("argv", "level"),
    [
        (["--log-level=debug"], "debug"),
        (["--zap-log-level=debug"], "debug"),
        (["--zap-log-level=info"], "info"),
        (["--log-level=WARN"], "warn"),
        (["--log-level=warning"], "warn"),
        (["--zap-log-level=error"], "error"),
        (["--zap-log-level=2"], "debug"),
    ],
)
def test_log_level_and_its_zap_alias(argv: list[str], level: str) -> None:
    assert load(*argv).log_level == level


def test_log_format_and_its_zap_alias() -> None:
    assert load("--zap-encoder=json").log_format == "json"
    assert load("--log-format=console").log_format == "console"


def test_go_operator_flags_are_accepted_and_reported_as_ignored() -> None:
    settings = load("--metrics-secure", "--enable-http2=false", "--zap-devel=true", "--zap-time-encoding=iso8601")
    ignored = [w.split(":")[0] for w in settings.warnings if not w.startswith("OP_CONNECT_HOST")]
    assert ignored == ["--metrics-secure", "--enable-http2", "--zap-devel", "--zap-time-encoding"]
    assert not [w for w in load("--metrics-secure=false").warnings if "metrics" in w]


def test_settings_or_exit_prints_one_line_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        settings_or_exit(parse(), {**BASE_ENV, "POLLING_INTERVAL": "0"})
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        'opsync: invalid configuration: POLLING_INTERVAL: must be a whole number of seconds greater than 0, got "0"\n'
    )
    assert settings_or_exit(parse(), BASE_ENV).polling_interval == 600


def test_workers_message() -> None:
    assert str(error("--workers=0")) == '--workers: must be a whole number greater than 0, got "0"'


@pytest.mark.parametrize(
    ("env", "argv", "setting"),
    [
        ({"WATCH_NAMESPACE": "a" * 64}, [], "WATCH_NAMESPACE"),
        ({"WATCH_NAMESPACE": "team-a,-lead"}, [], "WATCH_NAMESPACE"),
        ({"WATCH_NAMESPACE": "team-a,trail-"}, [], "WATCH_NAMESPACE"),
        ({"POLLING_INTERVAL": "+0"}, [], "POLLING_INTERVAL"),
        ({"POLLING_INTERVAL": "\u0661\u0660"}, [], "POLLING_INTERVAL"),  # Arabic-Indic "10": int() takes it
        ({"AUTO_RESTART": "yes please"}, [], "AUTO_RESTART"),
        ({"OP_CONNECT_HOST": "ftp://connect"}, [], "OP_CONNECT_HOST"),
        ({"OP_CONNECT_HOST": "http://"}, [], "OP_CONNECT_HOST"),
        ({"OP_CONNECT_HOST": f"http://user:{TOKEN}@connect"}, [], "OP_CONNECT_HOST"),
        ({"OP_CONNECT_TOKEN": "   "}, [], "OP_CONNECT_TOKEN"),
        ({"OP_CONNECT_TOKEN": f"{TOKEN}\n{TOKEN}"}, [], "OP_CONNECT_TOKEN"),
        ({}, ["--zap-log-level=verbose"], "--log-level"),
        ({}, ["--workers=1.5"], "--workers"),
        ({}, ["--workers=\u0663"], "--workers"),
    ],
)
def test_more_bad_values_are_named_without_the_token(env: dict[str, str], argv: list[str], setting: str) -> None:
    caught = error(*argv, env=env)
    assert caught.setting == setting
    assert str(caught).startswith(f"{setting}: ")
    assert TOKEN not in str(caught)


@pytest.mark.parametrize("token", [TOKEN + "\x7f", TOKEN + "\x00", "\u200b" + TOKEN])
def test_a_token_with_control_characters_is_refused_at_start_up(token: str) -> None:
    """``ConnectClient`` refuses such tokens; found only later, that was a crash with a traceback."""
    caught = error(env={"OP_CONNECT_TOKEN": token})
    assert caught.setting == "OP_CONNECT_TOKEN" and TOKEN not in str(caught)


@pytest.mark.parametrize(
    "host",
    [
        "http://host\\evil",
        "http://exa mple.com",
        "http://ho\tst",
        "http://connect/?x=1",
        "http://connect#f",
        "http://connect:0",
    ],
)
def test_connect_hosts_the_client_could_not_use_are_refused(host: str) -> None:
    """``urlsplit`` accepts these; the client then raised (a traceback, status 1) or called a wrong address."""
    assert error(env={"OP_CONNECT_HOST": host}).setting == "OP_CONNECT_HOST"


@pytest.mark.parametrize("host", ["http://[::1]:8080", "https://connect.example:65535/prefix", "http://höst.example"])
def test_unusual_but_valid_connect_hosts_are_accepted(host: str) -> None:
    assert load(OP_CONNECT_HOST=host).connect_host == host.rstrip("/")
