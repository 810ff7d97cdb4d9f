"""controllers.templating: the helpers, the sandbox, the output bound, and errors that never show a value."""

from __future__ import annotations

import base64
import json

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from controllers.secretdata import ItemField, ItemInput
from controllers.templating import (
    MAX_TEMPLATE_OUTPUT,
    TemplateError,
    b64decode,
    b64encode,
    dockerconfigjson,
    render_templates,
    to_json,
    to_yaml,
)

ITEM = ItemInput(
    id="i", vault_id="v", version=1, fields=(ItemField("user", "robot"), ItemField("password", "s3cr3t-value"))
)


def render(template: str) -> str:
    return render_templates({"k": template}, [ITEM])["k"].decode()


def test_helpers() -> None:
    assert b64decode(b64encode("héllo")) == "héllo"
    assert b64encode(b"\x00\xff") == "AP8="
    assert json.loads(to_json({"a": "<&>"})) == {"a": "<&>"}
    assert "<" in to_json("<")  # not HTML-escaped as Jinja's tojson is
    assert yaml.safe_load(to_yaml({"b": [1, 2], "a": "x"})) == {"b": [1, 2], "a": "x"}
    config = json.loads(dockerconfigjson("registry.example", "robot", "pw"))
    auth = config["auths"]["registry.example"]
    assert (auth["username"], auth["password"]) == ("robot", "pw")
    assert base64.b64decode(auth["auth"]) == b"robot:pw"


def test_helpers_in_templates() -> None:
    assert render("{{ fields.user | b64encode }}") == base64.b64encode(b"robot").decode()
    assert json.loads(render("{{ {'u': fields.user} | to_json }}")) == {"u": "robot"}
    assert yaml.safe_load(render("{{ fields | to_yaml }}")) == {"user": "robot", "password": "s3cr3t-value"}


@pytest.mark.parametrize(
    "template",
    [
        "{{ fields.__class__.__mro__ }}",
        "{{ ''.__class__.__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{% include '/etc/passwd' %}",
        "{% import 'os' as os %}",
        "{{ fields.update({'x': 1}) }}",
        "{{ lipsum.__globals__ }}",
    ],
)
def test_the_sandbox_refuses(template: str) -> None:
    with pytest.raises(TemplateError, match=r"spec\.template\.data\['k'\], line 1"):
        render(template)


@pytest.mark.parametrize(
    "template",
    [
        "{{ 'x' * 2000000 }}",
        "{{ [1] * 2000000 }}",
        "{{ 9 ** 9999 }}",
        "{% for i in range(100000) %}{% for j in range(100) %}{{ fields.password }}{% endfor %}{% endfor %}",
        "{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}",
        # no single step may build more than the bound either, whatever the output
        "{% set a = 'x' * 600000 %}{% set b = a ~ a %}",
        "{% set a = 'x' * 600000 %}{% set b = a + a %}",
        "{{ (((9 ** 64) ** 64) ** 64) ** 64 }}",
        "{{ 'x'.center(10 ** 9) }}",
        "{{ 'x' | center(10 ** 9) }}",
        "{{ 'x' | indent(10 ** 9) }}",
        "{{ ('x' * 2000) | replace('', 'y' * 1000) }}",
        "{{ '%999999999s' % 'x' }}",
        "{{ '%*s' % (10 ** 9, 'x') }}",
        "{{ '%999999999s' | format('x') }}",
        "{{ '{:>999999999}'.format('x') }}",
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    ],
)
def test_output_is_bounded(template: str) -> None:
    with pytest.raises(TemplateError, match="'k'"):
        render(template)


def test_ordinary_templates_are_not_hindered() -> None:
    assert render("{{ 'a' ~ fields.user ~ 1 }}|{{ 2 ** 10 }}|{{ 'p' + 'q' }}|{{ '%05d' % 42 }}") == (
        "arobot1|1024|pq|00042"
    )
    assert render("{{ '{:>6}'.format('x') }}|{{ 'x' | center(5) }}|{{ 'ab' | replace('a', 'c') }}") == "     x|  x  |cb"
    assert render("{{ fields.user | indent(2, true) }}|{{ 'x' | truncate(10) }}|{{ '%s-%s' | format(1, 2) }}") == (
        "  robot|x|1-2"
    )


def test_output_up_to_the_bound_is_fine() -> None:
    assert len(render(f"{{{{ 'x' * {MAX_TEMPLATE_OUTPUT} }}}}")) == MAX_TEMPLATE_OUTPUT
    assert render("{% for i in range(50000) %}{% endfor %}{{ range(50000) | length }}") == "50000"
    assert render("{{ range(100000) | length }}") == "100000"  # the budget is per template: new again


def test_errors_name_key_and_line() -> None:
    with pytest.raises(TemplateError) as err:
        render_templates({"conn": "line one\nline two {{ fields.nope }}"}, [ITEM])
    assert "'conn'" in str(err.value) and "line 2" in str(err.value)
    assert "'nope'" in str(err.value)  # the label is no value: the message may name it


def test_errors_hide_details_that_would_show_a_value() -> None:
    with pytest.raises(TemplateError) as err:
        render("{{ fields[fields.password] }}")
    assert "s3cr3t-value" not in str(err.value)
    assert "details hidden" in str(err.value)
    with pytest.raises(TemplateError) as err:
        render("{{ fields[fields.password[1:]] }}")  # part of a value is hidden too
    assert "3cr3t" not in str(err.value)


# "§" starts every value and occurs in no message opsync writes, so finding a value means Jinja's text leaked
@given(
    st.text(max_size=20).map(lambda v: "§" + v),
    st.sampled_from(["{{ fields[v] }}", "{{ v | int(v) + v }}", "{{ v.x.y }}", "{{ v(1) }}", "{{ fields[v[1:]] }}"]),
)
def test_no_error_ever_shows_a_value(value: str, template: str) -> None:
    item = ItemInput(id="i", vault_id="v", version=1, fields=(ItemField("secret", value),))
    try:
        render_templates({"k": "{% set v = fields.secret %}" + template}, [item])
    except TemplateError as err:
        assert "§" not in str(err)


TOKENS = [*"{}%#()[]|~+*'\" .:-_,019\n", "fields", "for", "if", "end", "set", "range", "in", "x", "password", "loop"]
TOKENS += ["b64encode", "to_json", "item", "items", "ns", "namespace", "**", "{{", "}}", "{%", "%}"]


@given(st.lists(st.sampled_from(TOKENS), max_size=30).map("".join))
def test_any_template_renders_or_fails_with_a_template_error(template: str) -> None:
    try:
        render(template)
    except TemplateError as err:
        assert "s3cr3t-value" not in str(err)
