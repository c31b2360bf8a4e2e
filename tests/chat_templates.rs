//! Chat templates rendered byte-for-byte like Hugging Face transformers.
//!
//! tests/fixtures/chat/ holds real templates (from llama.cpp's
//! models/templates) and the outputs Python Jinja2 produced for them, set up
//! the way transformers renders chat templates (tools/make_chat_fixtures.py).

use std::collections::BTreeMap;
use std::path::PathBuf;

use moe_edge::chat::{ChatError, ChatMessage, ChatTemplate, CHATML_TEMPLATE};
use serde_json::Value as Json;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat")
}

/// Templates × cases known not to match Jinja2, with the reason. The test
/// fails if one of these starts passing (so the list stays honest) or if any
/// other case fails.
const KNOWN_MISMATCHES: &[(&str, &str, &str)] = &[
    // These `tool_use` variants loop over `tools` unconditionally. With
    // tools=None, Jinja2 raises "'NoneType' object is not iterable"; minijinja
    // iterates none as empty, so we render a prompt with an empty tool list.
    (
        "CohereForAI-c4ai-command-r-plus-tool_use.jinja",
        "*",
        "for over None",
    ),
    (
        "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja",
        "*",
        "for over None",
    ),
    (
        "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja",
        "*",
        "for over None",
    ),
];

fn load_expected() -> Json {
    let text = std::fs::read_to_string(fixture_dir().join("expected.json"))
        .expect("tests/fixtures/chat/expected.json (run tools/make_chat_fixtures.py)");
    serde_json::from_str(&text).expect("expected.json parses")
}

fn conversation(doc: &Json, name: &str) -> Vec<ChatMessage> {
    doc["conversations"][name]
        .as_array()
        .expect("conversation exists")
        .iter()
        .map(|m| ChatMessage::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect()
}

#[derive(Debug)]
enum Outcome {
    Pass,
    Fail(String),
}

fn check_case(
    template: &ChatTemplate,
    messages: &[ChatMessage],
    agp: bool,
    expected: &Json,
) -> Outcome {
    let got = template.render(messages, agp);
    if let Some(want) = expected.get("output").and_then(Json::as_str) {
        return match got {
            Ok(text) if text == want => Outcome::Pass,
            Ok(text) => {
                let at = text
                    .bytes()
                    .zip(want.bytes())
                    .position(|(a, b)| a != b)
                    .unwrap_or(text.len().min(want.len()));
                let lo = at.saturating_sub(40);
                let near = |s: &str| s.get(lo..(at + 40).min(s.len())).unwrap_or("").to_string();
                Outcome::Fail(format!(
                    "output differs at byte {at}: got {:?} want {:?}",
                    near(&text),
                    near(want)
                ))
            }
            Err(e) => Outcome::Fail(format!("error {e}")),
        };
    }
    if let Some(want) = expected.get("raised").and_then(Json::as_str) {
        return match got {
            Err(ChatError::Raised(msg)) if msg == want => Outcome::Pass,
            other => Outcome::Fail(format!("expected raise_exception({want:?}), got {other:?}")),
        };
    }
    // Jinja2 failed for another reason (e.g. iterating `tools` = None): we must fail too.
    match got {
        Err(_) => Outcome::Pass,
        Ok(text) => Outcome::Fail(format!(
            "Jinja2 failed with {expected}, we rendered {} bytes",
            text.len()
        )),
    }
}

#[test]
fn real_templates_render_like_transformers() {
    let doc = load_expected();
    let bos = doc["bos_token"].as_str().unwrap();
    let eos = doc["eos_token"].as_str().unwrap();
    let fixed_now = doc["fixed_now_unix"].as_i64().unwrap();
    let results = doc["results"].as_object().unwrap();
    assert!(
        results.len() >= 60,
        "fixture lists {} templates",
        results.len()
    );

    let mut passed = 0usize;
    let mut total = 0usize;
    let mut failures: BTreeMap<(String, String), String> = BTreeMap::new();
    for (name, cases) in results {
        let source = std::fs::read_to_string(fixture_dir().join("templates").join(name)).unwrap();
        let compiled = ChatTemplate::new(Some(&source), bos, eos).map(|mut t| {
            t.set_fixed_time(Some(fixed_now));
            t
        });
        for (case, expected) in cases.as_object().unwrap() {
            total += 1;
            let (conv, gen) = case.split_once('/').unwrap();
            let outcome = match &compiled {
                Err(_) if expected.get("compile_error").is_some() => Outcome::Pass,
                Err(e) => Outcome::Fail(format!("compile: {e}")),
                Ok(t) => check_case(t, &conversation(&doc, conv), gen == "gen", expected),
            };
            match outcome {
                Outcome::Pass => passed += 1,
                Outcome::Fail(why) => {
                    failures.insert((name.clone(), case.clone()), why);
                }
            }
        }
    }
    eprintln!(
        "chat templates: {passed}/{total} template×case renders match Jinja2 ({} templates)",
        results.len()
    );
    let mut unexpected = Vec::new();
    for ((name, case), why) in &failures {
        let known = KNOWN_MISMATCHES
            .iter()
            .any(|(n, c, _)| n == name && (c == case || *c == "*"));
        eprintln!(
            "  {} {name} {case}: {why}",
            if known { "known" } else { "FAIL " }
        );
        if !known {
            unexpected.push(format!("{name} {case}"));
        }
    }
    let stale: Vec<_> = KNOWN_MISMATCHES
        .iter()
        .filter(|(n, c, _)| {
            !failures
                .keys()
                .any(|(fn_, fc)| fn_ == n && (fc == c || *c == "*"))
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "unexpected mismatches: {unexpected:?}"
    );
    assert!(
        stale.is_empty(),
        "known mismatches that now pass: {stale:?}"
    );
}

fn msgs(pairs: &[(&str, &str)]) -> Vec<ChatMessage> {
    pairs
        .iter()
        .map(|(r, c)| ChatMessage::new(*r, *c))
        .collect()
}

#[test]
fn fallback_is_chatml() {
    let t = ChatTemplate::new(None, "<s>", "</s>").unwrap();
    let m = msgs(&[("system", "Be brief."), ("user", "Hi")]);
    assert_eq!(
        t.render(&m, true).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(
        t.render(&m, false).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    );
    let same = ChatTemplate::new(Some(CHATML_TEMPLATE), "<s>", "</s>").unwrap();
    assert_eq!(same.render(&m, true).unwrap(), t.render(&m, true).unwrap());
}

#[test]
fn plain_fallback_without_chatml_tokens() {
    let t = ChatTemplate::fallback(false, "<s>", "</s>").unwrap();
    let m = msgs(&[("user", "Hi"), ("assistant", "Hello"), ("user", "Bye")]);
    assert_eq!(
        t.render(&m, true).unwrap(),
        "<s>user: Hi\nassistant: Hello\nuser: Bye\nassistant:"
    );
    let chatml = ChatTemplate::fallback(true, "<s>", "</s>").unwrap();
    assert!(chatml
        .render(&m, false)
        .unwrap()
        .starts_with("<|im_start|>user\nHi<|im_end|>\n"));
}

#[test]
fn raise_exception_message_is_returned() {
    let src = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversation must start with user') }}{% endif %}ok";
    let t = ChatTemplate::new(Some(src), "", "").unwrap();
    match t.render(&msgs(&[("assistant", "x")]), false) {
        Err(ChatError::Raised(m)) => assert_eq!(m, "Conversation must start with user"),
        other => panic!("expected Raised, got {other:?}"),
    }
    assert_eq!(t.render(&msgs(&[("user", "x")]), false).unwrap(), "ok");
}

#[test]
fn bad_templates_are_errors_not_panics() {
    assert!(matches!(
        ChatTemplate::new(Some("{% for x in %}"), "", ""),
        Err(ChatError::Syntax(_))
    ));
    assert!(matches!(
        ChatTemplate::new(Some("{% if %}"), "", ""),
        Err(ChatError::Syntax(_))
    ));
    // Unknown method and an endless loop are render errors.
    let t = ChatTemplate::new(Some("{{ messages.frobnicate() }}"), "", "").unwrap();
    assert!(matches!(t.render(&[], false), Err(ChatError::Render(_))));
    let t = ChatTemplate::new(
        Some("{% for a in range(10000) %}{% for b in range(10000) %}{% for c in range(10000) %}x{% endfor %}{% endfor %}{% endfor %}"),
        "",
        "",
    )
    .unwrap();
    assert!(matches!(t.render(&[], false), Err(ChatError::Render(_))));
}

#[test]
fn python_features_templates_use() {
    let render = |src: &str| {
        let mut t = ChatTemplate::new(Some(src), "<s>", "</s>").unwrap();
        t.set_fixed_time(Some(1_741_944_413));
        t.render(&msgs(&[("user", "  Hello World  ")]), true)
            .unwrap()
    };
    assert_eq!(
        render("{{ messages[0].content.strip() }}|{{ messages[0].content.lstrip() }}|"),
        "Hello World|Hello World  |"
    );
    assert_eq!(
        render("{{ messages[0].content.split()|join(',') }}"),
        "Hello,World"
    );
    assert_eq!(render("{{ 'a/b/c'.rsplit('/', 1)|join(',') }}"), "a/b,c");
    assert_eq!(
        render("{{ 'x<think>y</think>z'.split('</think>')[-1] }}"),
        "z"
    );
    assert_eq!(
        render("{{ messages[0].get('role') }}{{ messages[0].get('missing', 'd') }}"),
        "userd"
    );
    assert_eq!(
        render("{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith(('x', 'c')) }}"),
        "TrueTrue"
    );
    assert_eq!(render("{{ strftime_now('%d %b %Y') }}"), "14 Mar 2025");
    assert_eq!(
        render("{{ bos_token }}{{ eos_token }}{{ add_generation_prompt }}"),
        "<s></s>True"
    );
    assert_eq!(
        render("{{ tools is none }}{{ tools is defined }}{{ documents is none }}"),
        "TrueTrueTrue"
    );
    assert_eq!(render("{% for i in range(5) %}{% if i == 1 %}{% continue %}{% endif %}{% if i == 3 %}{% break %}{% endif %}{{ i }}{% endfor %}"), "02");
    assert_eq!(
        render("{{ 'prefix-x'.removeprefix('prefix-') }}{{ 'a=b'.partition('=')|join('|') }}"),
        "xa|=|b"
    );
    // trim_blocks / lstrip_blocks as transformers sets them.
    assert_eq!(render("  {% if true %}\nA\n  {% endif %}\nB\n"), "A\nB");
    // Mutating methods are refused like the immutable sandbox does.
    let t = ChatTemplate::new(Some("{% set l = [] %}{{ l.append(1) }}"), "", "").unwrap();
    assert!(matches!(t.render(&[], false), Err(ChatError::Render(_))));
}

#[test]
fn tojson_matches_python_json_dumps() {
    let render = |src: &str| {
        let t = ChatTemplate::new(Some(src), "", "").unwrap();
        t.render(&msgs(&[("user", "é \"q\" <b>&\n\u{1}")]), false)
            .unwrap()
    };
    assert_eq!(
        render("{{ messages|tojson }}"),
        r#"[{"role": "user", "content": "é \"q\" <b>&\n\u0001"}]"#
    );
    assert_eq!(
        render("{{ messages[0].content|tojson(ensure_ascii=True) }}"),
        r#""\u00e9 \"q\" <b>&\n\u0001""#
    );
    assert_eq!(
        render("{{ {'a': [1, 2.5, none, true], 'b': {}}|tojson(indent=2) }}"),
        "{\n  \"a\": [\n    1,\n    2.5,\n    null,\n    true\n  ],\n  \"b\": {}\n}"
    );
    assert_eq!(
        render("{{ {'b': 1, 'a': 1e-7}|tojson(sort_keys=true) }}"),
        r#"{"a": 1e-07, "b": 1}"#
    );
    assert_eq!(
        render("{{ [1, 2]|tojson(separators=(',', ':')) }}"),
        "[1,2]"
    );
}

#[test]
fn template_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ChatTemplate>();
    let t = std::sync::Arc::new(ChatTemplate::new(None, "", "").unwrap());
    let handles: Vec<_> = (0..2)
        .map(|i| {
            let t = std::sync::Arc::clone(&t);
            std::thread::spawn(move || t.render(&msgs(&[("user", &i.to_string())]), false).unwrap())
        })
        .collect();
    let outs: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(outs[1], "<|im_start|>user\n1<|im_end|>\n");
}
