#!/usr/bin/env python3
"""Render real chat templates the way Hugging Face transformers does and store
the expected outputs as fixtures for tests/chat_templates.rs.

Usage:
    . /work/venv/bin/activate   # needs jinja2
    python tools/make_chat_fixtures.py TEMPLATE_DIR [OUT_DIR]

TEMPLATE_DIR is a folder of *.jinja files (for example llama.cpp's
models/templates). OUT_DIR defaults to tests/fixtures/chat. The script copies
each template to OUT_DIR/templates/ and writes OUT_DIR/expected.json with the
conversations and, per template and case, either the rendered text or the error
the template raised.

The Jinja environment mirrors transformers' chat-template renderer:
ImmutableSandboxedEnvironment with trim_blocks and lstrip_blocks, the
loopcontrols extension, a no-op `{% generation %}` block tag (transformers uses
it to track assistant spans), `raise_exception`, `strftime_now` and a `tojson`
filter that calls json.dumps with ensure_ascii=False (no HTML escaping). The
template receives messages, tools=None, documents=None, add_generation_prompt,
bos_token and eos_token. strftime_now is pinned to FIXED_NOW so the output does
not depend on the day the script runs.
"""

import datetime
import json
import os
import shutil
import sys

import jinja2
import jinja2.ext
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Friday, 14 March 2025, 09:26:53 UTC. Keep in sync with FIXED_NOW_UNIX in
# tests/chat_templates.rs.
FIXED_NOW = datetime.datetime(2025, 3, 14, 9, 26, 53)
FIXED_NOW_UNIX = 1741944413

BOS = "<s>"
EOS = "</s>"

SYSTEM = "You are a helpful assistant."
CONVERSATIONS = {
    "user_only": [
        {"role": "user", "content": "What's the capital of France?"},
    ],
    "system_user": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Hello! What is 2+2?"},
    ],
    "user_assistant_user": [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello! How can I help you today?"},
        {"role": "user", "content": 'Tell me a joke about "cats" & <dogs>.'},
    ],
    "system_multi_turn_whitespace": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "  Ünïcödé ✓ naïve café\nsecond line  "},
        {"role": "assistant", "content": "\nSure — here it is:\n\tindented\n"},
        {"role": "user", "content": "Thanks. {{ not a tag }} {% neither %}"},
    ],
}


class GenerationTag(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` renders its body unchanged."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_render", []), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


class TemplateRaised(Exception):
    pass


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(fmt):
    return FIXED_NOW.strftime(fmt)


def make_env():
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[GenerationTag, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def render(env, source, messages, add_generation_prompt):
    try:
        template = env.from_string(source)
    except Exception as exc:  # noqa: BLE001 - recorded as a fixture outcome
        return {"compile_error": f"{type(exc).__name__}: {exc}"}
    try:
        text = template.render(
            messages=messages,
            tools=None,
            documents=None,
            add_generation_prompt=add_generation_prompt,
            bos_token=BOS,
            eos_token=EOS,
        )
        return {"output": text}
    except jinja2.exceptions.TemplateError as exc:
        if type(exc) is jinja2.exceptions.TemplateError:
            return {"raised": str(exc)}
        return {"error": f"{type(exc).__name__}: {exc}"}
    except Exception as exc:  # noqa: BLE001
        return {"error": f"{type(exc).__name__}: {exc}"}


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        sys.exit(2)
    src_dir = sys.argv[1]
    here = os.path.dirname(os.path.abspath(__file__))
    out_dir = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "..", "tests", "fixtures", "chat")
    tmpl_out = os.path.join(out_dir, "templates")
    if os.path.isdir(tmpl_out):
        shutil.rmtree(tmpl_out)
    os.makedirs(tmpl_out)

    env = make_env()
    results = {}
    for name in sorted(os.listdir(src_dir)):
        if not name.endswith(".jinja"):
            continue
        with open(os.path.join(src_dir, name), encoding="utf-8") as f:
            source = f.read()
        shutil.copyfile(os.path.join(src_dir, name), os.path.join(tmpl_out, name))
        per_case = {}
        for conv_name, messages in CONVERSATIONS.items():
            for agp in (True, False):
                case = f"{conv_name}/{'gen' if agp else 'nogen'}"
                per_case[case] = render(env, source, messages, agp)
        results[name] = per_case

    doc = {
        "generator": "tools/make_chat_fixtures.py",
        "jinja2_version": jinja2.__version__,
        "bos_token": BOS,
        "eos_token": EOS,
        "fixed_now_unix": FIXED_NOW_UNIX,
        "conversations": CONVERSATIONS,
        "results": results,
    }
    with open(os.path.join(out_dir, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1, sort_keys=True)
        f.write("\n")

    n_ok = sum(1 for r in results.values() for c in r.values() if "output" in c)
    n_raised = sum(1 for r in results.values() for c in r.values() if "raised" in c)
    n_err = sum(1 for r in results.values() for c in r.values() if "error" in c or "compile_error" in c)
    print(f"{len(results)} templates: {n_ok} rendered, {n_raised} raise_exception, {n_err} other errors")
    for name, r in results.items():
        for case, c in r.items():
            if "error" in c or "compile_error" in c:
                print(f"  {name} {case}: {c.get('error') or c.get('compile_error')}")


if __name__ == "__main__":
    main()
