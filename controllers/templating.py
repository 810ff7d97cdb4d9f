"""``spec.template.data``: Secret values composed from items with Jinja2 templates, in a sandbox.

The engine is Jinja2's ``ImmutableSandboxedEnvironment``: templates can read what they are given and nothing
else (no attribute access to internals, no mutation, no imports, no loader so no ``include`` of files, no
network). Output is counted while it streams, so a template stops at ``MAX_TEMPLATE_OUTPUT`` instead of
filling memory, and no single step may build more: concatenation, ``+``, ``*``, ``**``, formatting and the
widths and counts given to filters and methods are checked before they run. All ``range()`` calls of a
template together produce at most ``MAX_RANGE_TOTAL`` numbers and ``namespace()`` is gone, so loops cannot
grow a value. CPU time is not bounded otherwise (nested loops over a large value): docs/shaping.md says so.

Errors name the key and the template line, never a value: Jinja's messages can quote data (an undefined
attribute named after a value, say), so a runtime message is kept only when everything it quotes comes from
the template's own text (or is a type name) and no value occurs in it.

Pure functions.
"""

from __future__ import annotations

import base64
import contextvars
import functools
import json
import re
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jinja2
import yaml
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from controllers.constants import MAX_SECRET_SIZE, ConditionReason
from controllers.secretdata import InvalidSecretError, ItemInput

MAX_TEMPLATE_OUTPUT = MAX_SECRET_SIZE
"""Characters one template may produce (a Secret holds at most 1 MiB in all)."""
_TEMPLATE_FILENAME = "<template>"  # what Jinja calls a template made from a string, in tracebacks


class TemplateError(InvalidSecretError):
    """A template does not parse, fails while rendering, or produces too much; the text names the key and the
    line, never a value."""

    reason = ConditionReason.TEMPLATE_ERROR


class _TooLargeError(SecurityError):
    pass


def b64encode(value: str | bytes) -> str:
    """Base64 of ``value`` (text is UTF-8 encoded first)."""
    return base64.b64encode(value.encode() if isinstance(value, str) else value).decode("ascii")


def b64decode(value: str | bytes) -> str:
    """The UTF-8 text base64 ``value`` encodes."""
    return base64.b64decode(value).decode()


def to_json(value: Any) -> str:
    """``value`` as compact JSON (not HTML-escaped, unlike Jinja's ``tojson``)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def to_yaml(value: Any) -> str:
    """``value`` as a YAML document (block style, keys in the order given)."""
    return yaml.safe_dump(value, default_flow_style=False, sort_keys=False, allow_unicode=True)


def dockerconfigjson(registry: str, username: str, password: str) -> str:
    """The ``.dockerconfigjson`` of a ``kubernetes.io/dockerconfigjson`` Secret for one registry."""
    auth = b64encode(f"{username}:{password}")
    return to_json({"auths": {registry: {"username": username, "password": password, "auth": auth}}})


MAX_RANGE_TOTAL = 100_000
"""Numbers all ``range()`` calls of one template may produce together: nested ranges cannot multiply."""
_range_left: contextvars.ContextVar[list[int]] = contextvars.ContextVar("range_left")


def _budgeted_range(*args: int) -> range:
    numbers = range(*args)
    left = _range_left.get()
    left[0] -= len(numbers)
    if left[0] < 0:
        raise _TooLargeError(f"range() produces more than {MAX_RANGE_TOTAL} numbers in one template")
    return numbers


# Operations whose result can be far larger than their operands are checked before they run, so that no
# single step builds more than MAX_TEMPLATE_OUTPUT (a template's output is also counted as it streams).
_BIG_PRINTF_WIDTH = re.compile(r"%[-#0 +]*(?:\*|\d{7,}|\d*\.\d{7,})")
_BIG_FORMAT_WIDTH = re.compile(r"\{[^{}]*:[^{}]*(?:\d{7,})[^{}]*\}")
_MAX_INT_BITS = 64 * 1024


def _refuse(what: str) -> _TooLargeError:
    return _TooLargeError(f"{what} would exceed {MAX_TEMPLATE_OUTPUT} characters")


def _check_sizes(args: Iterable[Any]) -> None:
    for arg in args:
        if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > MAX_TEMPLATE_OUTPUT:
            raise _refuse(f"an argument of {arg.bit_length()} bits")


def _bounded_str(text: str) -> str:
    if len(text) > MAX_TEMPLATE_OUTPUT:
        raise _refuse("the value")
    return text


def _checked_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` refusing huge widths and counts, and ``replace`` results past the bound (``"".replace``)."""

    @functools.wraps(func)  # keeps Jinja's pass_context/pass_eval_context marks
    def checked(*args: Any, **kwargs: Any) -> Any:
        _check_sizes([*args, *kwargs.values()])
        strings = [arg for arg in args if isinstance(arg, str)]
        if name == "replace" and len(strings) >= 3:
            text, old, new = strings[:3]
            if len(text) + text.count(old) * len(new) > MAX_TEMPLATE_OUTPUT:
                raise _refuse("replace")
        if name == "format" and strings and _BIG_PRINTF_WIDTH.search(strings[0]):
            raise _refuse("the format")
        return func(*args, **kwargs)

    return checked


class _BoundedCodeGenerator(CodeGenerator):
    """Compiles ``a ~ b`` to a join that checks its result's size."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.bounded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _Sandbox(ImmutableSandboxedEnvironment):
    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"+", "*", "**", "%"})

    @staticmethod
    def bounded_concat(parts: Iterable[Any]) -> str:
        return _bounded_str("".join(str(part) for part in parts))

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        both_ints = isinstance(left, int) and isinstance(right, int)
        if operator == "**" and both_ints and abs(left) > 1 and left.bit_length() * abs(right) > _MAX_INT_BITS:
            raise _refuse("the power")
        if operator == "*" and both_ints and left.bit_length() + right.bit_length() > _MAX_INT_BITS:
            raise _refuse("the product")
        if operator == "*":
            sized, count = (left, right) if isinstance(right, int) else (right, left)
            sequence = isinstance(sized, str | bytes | list | tuple) and isinstance(count, int)
            if sequence and len(sized) * count > MAX_TEMPLATE_OUTPUT:
                raise _refuse("the repetition")
        sequences = isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple)
        if operator == "+" and sequences and len(left) + len(right) > MAX_TEMPLATE_OUTPUT:
            raise _refuse("the sum")
        if operator == "%" and isinstance(left, str) and _BIG_PRINTF_WIDTH.search(left):
            raise _refuse("the format")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: jinja2.runtime.Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _check_sizes([*args, *kwargs.values()])  # "x".center(10**9), "x".zfill(...), ...
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None and _BIG_FORMAT_WIDTH.search(value.__self__):
            raise _refuse("the format")
        return wrapped


def _environment() -> jinja2.Environment:
    env = _Sandbox(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
    env.filters.update({"b64encode": b64encode, "b64decode": b64decode, "to_json": to_json, "to_yaml": to_yaml})
    env.filters = {name: _checked_filter(name, func) for name, func in env.filters.items()}
    env.globals.update({"dockerconfigjson": dockerconfigjson, "range": _budgeted_range})
    del env.globals["namespace"]  # no state carried across loop iterations: no doubling a value in a loop
    return env


_ENV = _environment()


def item_context(item: ItemInput) -> dict[str, Any]:
    """What a template sees of one item.

    ``fields`` by label (of fields sharing a label the last wins, as for Secret keys), ``sections`` by section
    label then field label, ``urls`` by label, ``url`` (the primary URL, else the first), ``files`` by name
    (text), and ``item`` (id, title, vault, version, category, tags, createdAt, updatedAt, path).
    """
    sections: dict[str, dict[str, str]] = {}
    for entry in item.fields:
        if entry.section:
            sections.setdefault(entry.section, {})[entry.label] = entry.value
    primary = next((u.href for u in item.urls if u.primary), item.urls[0].href if item.urls else "")
    files = {f.name: _file_text(item.file_contents[f.id]) for f in item.files if f.id in item.file_contents}
    return {
        "fields": {entry.label: entry.value for entry in item.fields},
        "sections": sections,
        "urls": {u.label: u.href for u in item.urls if u.label},
        "url": primary,
        "files": files,
        "item": {
            "id": item.id,
            "title": item.title,
            "vault": item.vault_id,
            "version": item.version,
            "category": item.category,
            "tags": list(item.tags),
            "createdAt": item.created_at,
            "updatedAt": item.updated_at,
            "path": item.path,
        },
    }


def _file_text(content: bytes) -> str:
    # Text files are what templates compose; a binary one is passed through losslessly as Latin-1 so that
    # b64encode(files[...].encode("latin-1")) stays possible, never failing the whole Secret.
    try:
        return content.decode()
    except UnicodeDecodeError:
        return content.decode("latin-1")


def template_context(items: Sequence[ItemInput]) -> dict[str, Any]:
    """The context of every template: the main item's ``item_context`` at the top, and ``items``, every item
    in order (the main one first, then ``spec.extraItems``)."""
    contexts = [item_context(item) for item in items]
    return {**contexts[0], "items": contexts}


def _values(items: Iterable[ItemInput]) -> set[str]:
    found: set[str] = set()
    for item in items:
        found |= {entry.value for entry in item.fields} | {url.href for url in item.urls}
        found |= {_file_text(content) for content in item.file_contents.values()}
    return found - {""}


def _line(err: BaseException) -> int | None:
    if isinstance(err, jinja2.TemplateSyntaxError):
        return err.lineno
    frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename == _TEMPLATE_FILENAME]
    return frames[-1].lineno if frames else None


def _describe(key: str, err: BaseException, values: set[str], source: str = "") -> str:
    line = _line(err)
    where = f"spec.template.data[{key!r}]" + (f", line {line}" if line is not None else "")
    if isinstance(err, jinja2.TemplateSyntaxError | SecurityError):
        return f"{where}: {err}"  # about the template's text, or the sandbox's refusal: no data in them
    return f"{where}: {_safe_detail(err, values, source)}"


_QUOTED = re.compile(r"'([^']*)'|\"([^\"]*)\"")
_TYPE_NAMES = frozenset({"str", "int", "float", "bool", "dict", "list", "tuple", "bytes", "NoneType", "Undefined"})


def _safe_detail(err: BaseException, values: set[str], source: str) -> str:
    """The error's text when it can hold no data: every quoted part is from the template's own text or a
    type name (``'dict object' has no attribute 'pasword'``), and no value shows, escaped or not.
    Otherwise only the error's type (``fields[fields.password]`` would quote the password)."""
    text = str(err)
    quoted = [a or b for a, b in _QUOTED.findall(text)]
    from_source = all(part in source or part.removesuffix(" object") in _TYPE_NAMES for part in quoted)
    shows_value = any(value in text or repr(value)[1:-1] in text for value in values)
    if not text or shows_value or not from_source:
        return f"{type(err).__name__} (details hidden: they could show a value)"
    return f"{type(err).__name__}: {text}"


def check_syntax(templates: Mapping[str, str]) -> None:
    """Raise ``TemplateError`` for the first template (by key) that does not parse."""
    for key in sorted(templates):
        try:
            _ENV.parse(templates[key])
        except jinja2.TemplateSyntaxError as err:
            raise TemplateError(_describe(key, err, set())) from None


def render_templates(templates: Mapping[str, str], items: Sequence[ItemInput]) -> dict[str, bytes]:
    """Each template rendered (UTF-8) with ``template_context(items)``; raises ``TemplateError``."""
    check_syntax(templates)
    context = template_context(items)
    values = _values(items)
    return {key: _render(key, templates[key], context, values).encode() for key in sorted(templates)}


@functools.lru_cache(maxsize=512)
def _compiled(source: str) -> jinja2.Template:
    # Reconciles are level-triggered: the same templates render again on every event of their item.
    return _ENV.from_string(source)


def _render(key: str, source: str, context: Mapping[str, Any], values: set[str]) -> str:
    token = _range_left.set([MAX_RANGE_TOTAL])
    try:
        return _bounded(_compiled(source).generate(context), lambda: _too_large(key))
    except TemplateError:
        raise
    except Exception as err:  # whatever a template did wrong; the message is made safe by _describe
        raise TemplateError(_describe(key, err, values, source)) from None
    finally:
        _range_left.reset(token)


def _too_large(key: str) -> TemplateError:
    return TemplateError(
        f"spec.template.data[{key!r}] produces more than {MAX_TEMPLATE_OUTPUT} characters (a Secret holds 1 MiB)"
    )


def _bounded(chunks: Iterable[str], too_large: Callable[[], TemplateError]) -> str:
    parts: list[str] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_TEMPLATE_OUTPUT:
            raise too_large()
        parts.append(chunk)
    return "".join(parts)
