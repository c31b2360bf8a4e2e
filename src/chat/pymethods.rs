//! Python methods on template values (`content.strip()`, `message.get('x')`, ...).
//!
//! minijinja-contrib's pycompat callback covers most of what chat templates
//! call; this adds the string methods it lacks and refuses the mutating list
//! and dict methods the way transformers' immutable sandbox does.

use minijinja::value::{from_args, Value, ValueKind};
use minijinja::{Error, ErrorKind, State};

/// Methods that change a list or dict in place. transformers renders chat
/// templates in Jinja's ImmutableSandboxedEnvironment, which refuses them.
const MUTATING_METHODS: &[&str] = &[
    "append",
    "extend",
    "insert",
    "pop",
    "remove",
    "clear",
    "sort",
    "reverse",
    "update",
    "setdefault",
    "popitem",
];

/// The unknown-method callback installed in the chat template environment.
pub(crate) fn python_method(
    state: &mut State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    match minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args) {
        Err(err) if err.kind() == ErrorKind::UnknownMethod => {}
        other => return other,
    }
    if let Some(s) = value.as_str() {
        if let Some(v) = extra_string_method(s, method, args)? {
            return Ok(v);
        }
    }
    if matches!(value.kind(), ValueKind::Seq | ValueKind::Map) && MUTATING_METHODS.contains(&method)
    {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("access to unsafe method {method} in an immutable sandbox"),
        ));
    }
    if value.kind() == ValueKind::Seq && method == "index" {
        let (needle,): (&Value,) = from_args(args)?;
        for (i, item) in value.try_iter()?.enumerate() {
            if &item == needle {
                return Ok(Value::from(i));
            }
        }
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("{needle} is not in list"),
        ));
    }
    Err(Error::from(ErrorKind::UnknownMethod))
}

fn extra_string_method(s: &str, method: &str, args: &[Value]) -> Result<Option<Value>, Error> {
    let v = match method {
        "removeprefix" => {
            let (prefix,): (&str,) = from_args(args)?;
            Value::from(s.strip_prefix(prefix).unwrap_or(s))
        }
        "removesuffix" => {
            let (suffix,): (&str,) = from_args(args)?;
            Value::from(s.strip_suffix(suffix).unwrap_or(s))
        }
        "rsplit" => {
            let (sep, maxsplit): (Option<&str>, Option<i64>) = from_args(args)?;
            let max = maxsplit.filter(|&m| m >= 0).map(|m| m as usize);
            let mut parts: Vec<&str> = match (sep, max) {
                (Some(""), _) => {
                    return Err(Error::new(ErrorKind::InvalidOperation, "empty separator"))
                }
                (Some(sep), Some(m)) => s.rsplitn(m + 1, sep).collect(),
                (Some(sep), None) => s.rsplit(sep).collect(),
                (None, max) => {
                    // Whitespace split from the right: words, then the rest.
                    let mut words: Vec<&str> = Vec::new();
                    let mut rest = s.trim_end();
                    while !rest.is_empty() {
                        if max.is_some_and(|m| words.len() == m) {
                            words.push(rest);
                            rest = "";
                            break;
                        }
                        match rest.rfind(char::is_whitespace) {
                            Some(pos) => {
                                let ws_len = rest[pos..].chars().next().map_or(1, char::len_utf8);
                                words.push(&rest[pos + ws_len..]);
                                rest = rest[..pos].trim_end();
                            }
                            None => {
                                words.push(rest);
                                rest = "";
                            }
                        }
                    }
                    debug_assert!(rest.is_empty());
                    words
                }
            };
            parts.reverse();
            parts.into_iter().map(Value::from).collect()
        }
        "partition" | "rpartition" => {
            let (sep,): (&str,) = from_args(args)?;
            if sep.is_empty() {
                return Err(Error::new(ErrorKind::InvalidOperation, "empty separator"));
            }
            let found = if method == "partition" {
                s.split_once(sep)
            } else {
                s.rsplit_once(sep)
            };
            let triple: [&str; 3] = match found {
                Some((a, b)) => [a, sep, b],
                None if method == "partition" => [s, "", ""],
                None => ["", "", s],
            };
            triple.into_iter().map(Value::from).collect()
        }
        "index" | "rindex" => {
            let (needle,): (&str,) = from_args(args)?;
            let pos = if method == "index" {
                s.find(needle)
            } else {
                s.rfind(needle)
            };
            match pos {
                Some(p) => Value::from(s[..p].chars().count()),
                None => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "substring not found",
                    ))
                }
            }
        }
        "swapcase" => {
            let () = from_args(args)?;
            let mut out = String::with_capacity(s.len());
            for c in s.chars() {
                if c.is_uppercase() {
                    out.extend(c.to_lowercase());
                } else {
                    out.extend(c.to_uppercase());
                }
            }
            Value::from(out)
        }
        "casefold" => {
            let () = from_args(args)?;
            Value::from(s.to_lowercase())
        }
        "zfill" => {
            let (width,): (usize,) = from_args(args)?;
            let len = s.chars().count();
            if len >= width {
                Value::from(s)
            } else {
                let (sign, digits) = match s.chars().next() {
                    Some(c @ ('+' | '-')) => (Some(c), &s[1..]),
                    _ => (None, s),
                };
                let mut out = String::new();
                out.extend(sign);
                out.push_str(&"0".repeat(width - len));
                out.push_str(digits);
                Value::from(out)
            }
        }
        "center" | "ljust" | "rjust" => {
            let (width, fill): (usize, Option<&str>) = from_args(args)?;
            let fill = match fill.map(|f| f.chars().collect::<Vec<_>>()) {
                None => ' ',
                Some(f) if f.len() == 1 => f[0],
                Some(_) => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "the fill character must be exactly one character long",
                    ))
                }
            };
            let len = s.chars().count();
            let pad = width.saturating_sub(len).min(1 << 16);
            let (left, right) = match method {
                "ljust" => (0, pad),
                "rjust" => (pad, 0),
                // Python puts the odd extra space on the left when width is odd.
                _ => {
                    let left = pad / 2 + (pad & width & 1);
                    (left, pad - left)
                }
            };
            let mut out = String::new();
            out.extend(std::iter::repeat_n(fill, left));
            out.push_str(s);
            out.extend(std::iter::repeat_n(fill, right));
            Value::from(out)
        }
        _ => return Ok(None),
    };
    Ok(Some(v))
}
