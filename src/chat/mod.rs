//! Chat templates: turn a conversation into the prompt text a model was trained on.
//!
//! A GGUF file carries its chat template as Jinja source in
//! `tokenizer.chat_template`. [`ChatTemplate`] renders it with minijinja,
//! configured the way Hugging Face transformers renders templates, so that the
//! prompt is byte-identical to what the model saw in training:
//!
//! - `trim_blocks` and `lstrip_blocks` on, a single trailing newline of the
//!   template dropped, `{% break %}` / `{% continue %}` available;
//! - Python methods on strings, lists and dicts (`strip`, `split`, `startswith`,
//!   `items`, `get`, ...); the mutating ones (`append`, `pop`, ...) are refused
//!   as transformers' immutable sandbox refuses them;
//! - globals `raise_exception(msg)` and `strftime_now(fmt)`, and a `tojson`
//!   filter that writes JSON like Python's `json.dumps` (see [`pyjson`]);
//! - the `{% generation %}...{% endgeneration %}` block transformers uses to
//!   mark assistant text renders its body unchanged;
//! - the template sees `messages` (a list of `{role, content}`),
//!   `add_generation_prompt`, `bos_token`, `eos_token`, and `tools` and
//!   `documents` set to none, exactly the variables transformers passes for a
//!   plain conversation; `x is iterable` is false for none, as in Python.
//!
//! One known difference: Jinja2 raises a TypeError when a template loops over
//! none (`{% for t in tools %}` with no tools); minijinja loops zero times.
//! So templates written only for tool use render a tool-less prompt here
//! where transformers refuses.
//!
//! Rendering is bounded: minijinja's fuel limit stops runaway templates, so a
//! hostile template in a GGUF file gives an error instead of hanging.

mod clock;
mod pyjson;
mod pymethods;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind};

/// One turn of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, ... — passed to the template as is.
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Why a chat template could not be compiled or rendered.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The template source is not valid Jinja (or uses syntax minijinja lacks).
    #[error("chat template does not compile: {0}")]
    Syntax(String),
    /// The template called `raise_exception(message)`, e.g. because the roles
    /// do not alternate. Carries the template's own message.
    #[error("chat template refused the conversation: {0}")]
    Raised(String),
    /// Rendering failed for another reason (unknown method, type error,
    /// fuel exhausted, ...).
    #[error("chat template failed to render: {0}")]
    Render(String),
}

/// Name under which the template is stored in its environment.
const TEMPLATE_NAME: &str = "chat_template";

/// Instructions the template may execute per render. Every fixture template
/// renders its test conversations within 20,000; the limit only stops loops
/// that would (nearly) never end, in well under a second.
const FUEL_PER_RENDER: u64 = 5_000_000;

/// Clock value meaning "read the system clock".
const SYSTEM_CLOCK: i64 = i64::MIN;

/// Used when a model has no `tokenizer.chat_template`: ChatML, the format of
/// Qwen, Hermes, SmolLM and llama.cpp's own default:
/// `<|im_start|>{role}\n{content}<|im_end|>\n` per message, and
/// `<|im_start|>assistant\n` as the generation prompt.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}\
{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}\
{% endfor %}\
{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Used when a model has no chat template and its vocabulary has no ChatML
/// tokens: `{role}: {content}\n` per message after the BOS text, and
/// `assistant:` as the generation prompt.
pub const PLAIN_TEMPLATE: &str = "{{ bos_token }}{% for message in messages %}\
{{ message['role'] + ': ' + message['content'] + '\\n' }}\
{% endfor %}\
{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}";

/// A compiled chat template, ready to render conversations.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    /// Seconds since the Unix epoch that `strftime_now` reports, or
    /// [`SYSTEM_CLOCK`]. Shared with the `strftime_now` closure.
    clock: Arc<AtomicI64>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish_non_exhaustive()
    }
}

/// Error source that marks an error as coming from `raise_exception`.
#[derive(Debug)]
struct TemplateRaised(String);

impl std::fmt::Display for TemplateRaised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TemplateRaised {}

impl ChatTemplate {
    /// Compiles `source` (the GGUF `tokenizer.chat_template`).
    ///
    /// With `source == None` the fallback is [`CHATML_TEMPLATE`]
    /// (`<|im_start|>role\ncontent<|im_end|>\n`, generation prompt
    /// `<|im_start|>assistant\n`), the format llama.cpp also falls back to.
    /// This constructor cannot see the vocabulary; a caller that knows the
    /// vocabulary lacks `<|im_start|>`/`<|im_end|>` should use
    /// [`ChatTemplate::fallback`] instead, which then picks [`PLAIN_TEMPLATE`].
    pub fn new(
        source: Option<&str>,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<ChatTemplate, ChatError> {
        let source = source.unwrap_or(CHATML_TEMPLATE);
        let clock = Arc::new(AtomicI64::new(SYSTEM_CLOCK));
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(false)
            .build()
            .map_err(|e| ChatError::Syntax(e.to_string()))?;
        env.set_syntax(syntax);
        env.set_fuel(Some(FUEL_PER_RENDER));
        env.set_unknown_method_callback(pymethods::python_method);
        env.add_function("raise_exception", raise_exception);
        let fn_clock = Arc::clone(&clock);
        env.add_function("strftime_now", move |format: &str| -> String {
            let secs = match fn_clock.load(Ordering::Relaxed) {
                SYSTEM_CLOCK => system_unix_seconds(),
                fixed => fixed,
            };
            clock::CivilTime::from_unix(secs).strftime(format)
        });
        env.add_filter("tojson", pyjson::tojson_filter);
        env.add_test("iterable", is_python_iterable);
        env.add_template_owned(TEMPLATE_NAME, rewrite_generation_blocks(source))
            .map_err(|e| ChatError::Syntax(describe(&e)))?;
        Ok(ChatTemplate {
            env,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
            clock,
        })
    }

    /// The template for a model without `tokenizer.chat_template`: ChatML when
    /// the vocabulary has the `<|im_start|>` and `<|im_end|>` tokens, otherwise
    /// the plain `role: content` format ([`PLAIN_TEMPLATE`]).
    pub fn fallback(
        vocab_has_chatml_tokens: bool,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<ChatTemplate, ChatError> {
        let source = if vocab_has_chatml_tokens {
            CHATML_TEMPLATE
        } else {
            PLAIN_TEMPLATE
        };
        ChatTemplate::new(Some(source), bos_token, eos_token)
    }

    /// Pins the time `strftime_now` reports (seconds since the Unix epoch, UTC);
    /// `None` returns to the system clock. For reproducible prompts and tests.
    pub fn set_fixed_time(&mut self, unix_seconds: Option<i64>) {
        let v = unix_seconds.unwrap_or(SYSTEM_CLOCK);
        self.clock.store(v, Ordering::Relaxed);
    }

    /// Renders `messages`. With `add_generation_prompt` the text ends with the
    /// header of an assistant turn, ready for the model to continue.
    ///
    /// A template that calls `raise_exception("...")` (for example because
    /// roles do not alternate) gives [`ChatError::Raised`] with that message.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| ChatError::Render(describe(&e)))?;
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| {
                Value::from_pairs([
                    ("role", Value::from(m.role.as_str())),
                    ("content", Value::from(m.content.as_str())),
                ])
            })
            .collect();
        let ctx = minijinja::context! {
            messages => messages,
            tools => (),
            documents => (),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        };
        template.render(ctx).map_err(|e| match raised_message(&e) {
            Some(msg) => ChatError::Raised(msg),
            None => ChatError::Render(describe(&e)),
        })
    }
}

/// Python's notion: strings, lists, dicts and undefined values iterate; none,
/// numbers and booleans do not (minijinja's own test also accepts none).
fn is_python_iterable(value: &Value) -> bool {
    match value.kind() {
        ValueKind::None | ValueKind::Bool | ValueKind::Number => false,
        ValueKind::Plain => value.try_iter().is_ok(),
        _ => true,
    }
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message.clone())
        .with_source(TemplateRaised(message)))
}

/// The message passed to `raise_exception`, if that is what ended rendering.
fn raised_message(err: &Error) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(raised) = e.downcast_ref::<TemplateRaised>() {
            return Some(raised.0.clone());
        }
        cur = e.source();
    }
    None
}

/// An error's message with its causes (minijinja keeps the template line in them).
fn describe(err: &Error) -> String {
    let mut s = err.to_string();
    let mut cur = std::error::Error::source(err);
    while let Some(e) = cur {
        s.push_str(": ");
        s.push_str(&e.to_string());
        cur = e.source();
    }
    s
}

fn system_unix_seconds() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// Turns transformers' `{% generation %}` / `{% endgeneration %}` tags into
/// `{% if true %}` / `{% endif %}`, which render their body the same way and
/// keep the tags' whitespace control (`{%-`, `-%}`).
fn rewrite_generation_blocks(source: &str) -> String {
    if !source.contains("generation") {
        return source.to_string();
    }
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        let Some(end) = tag.find("%}") else {
            out.push_str(tag);
            return out;
        };
        let inner = &tag[2..end];
        let (lead, body) = match inner.strip_prefix(['-', '+']) {
            Some(b) => (&inner[..1], b),
            None => ("", inner),
        };
        let (body, trail) = match body.strip_suffix(['-', '+']) {
            Some(b) => (b, &body[b.len()..]),
            None => (body, ""),
        };
        let replacement = match body.trim() {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        match replacement {
            Some(r) => {
                out.push_str("{%");
                out.push_str(lead);
                out.push(' ');
                out.push_str(r);
                out.push(' ');
                out.push_str(trail);
                out.push_str("%}");
            }
            None => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::rewrite_generation_blocks;

    #[test]
    fn generation_tags_become_if_blocks() {
        assert_eq!(
            rewrite_generation_blocks("a{%- generation -%}b{% endgeneration %}c{% if x %}"),
            "a{%- if true -%}b{% endif %}c{% if x %}"
        );
        assert_eq!(rewrite_generation_blocks("no tags"), "no tags");
        assert_eq!(rewrite_generation_blocks("{% generation"), "{% generation");
    }
}
