//! `tojson` as Hugging Face transformers renders it: Python's `json.dumps`.
//!
//! transformers replaces Jinja's own `tojson` filter (which escapes HTML
//! characters and sorts keys) with
//! `json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`.
//! Chat templates put its output straight into the prompt, so every byte
//! matters: `", "` and `": "` separators, insertion-ordered keys, no HTML
//! escaping, Python's float spelling (`1e-05`, `1.0`).

use minijinja::value::{Kwargs, ObjectRepr, Value, ValueKind};
use minijinja::{Error, ErrorKind};

/// Nesting depth past which serialization gives up (Python would hit its
/// recursion limit on cyclic data; templates never nest this deep).
const MAX_DEPTH: usize = 128;

/// Options of `json.dumps` that transformers exposes.
struct DumpOptions {
    ensure_ascii: bool,
    /// `None`: single line. `Some(s)`: one item per line, each level indented by `s`.
    indent: Option<String>,
    item_separator: String,
    key_separator: String,
    sort_keys: bool,
}

/// The `tojson` filter: `value|tojson(ensure_ascii=False, indent=None, separators=None, sort_keys=False)`.
///
/// `ensure_ascii` and `indent` may be passed positionally, all four by keyword.
pub(crate) fn tojson_filter(
    value: &Value,
    ensure_ascii: Option<Value>,
    indent: Option<Value>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let (separators, sort_keys) = (None, None);
    let pick = |positional: Option<Value>, name: &str| -> Result<Option<Value>, Error> {
        let by_name: Option<Value> = kwargs.get(name)?;
        Ok(by_name.or(positional))
    };
    let ensure_ascii = pick(ensure_ascii, "ensure_ascii")?.is_some_and(|v| v.is_true());
    let indent = match pick(indent, "indent")? {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) => match v.kind() {
            ValueKind::Number => {
                let n = v.as_i64().ok_or_else(|| {
                    Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: indent must be an integer",
                    )
                })?;
                Some(" ".repeat(n.clamp(0, 64) as usize))
            }
            ValueKind::String => Some(v.as_str().unwrap_or_default().to_string()),
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: indent must be an integer or a string",
                ))
            }
        },
    };
    let (item_separator, key_separator) = match pick(separators, "separators")? {
        Some(v) if !(v.is_none() || v.is_undefined()) => {
            let parts: Vec<Value> = v.try_iter()?.collect();
            match parts.as_slice() {
                [a, b] if a.as_str().is_some() && b.as_str().is_some() => (
                    a.as_str().unwrap_or_default().to_string(),
                    b.as_str().unwrap_or_default().to_string(),
                ),
                _ => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators must be a pair of strings",
                    ))
                }
            }
        }
        // Python's defaults: no trailing space after ',' when indenting.
        _ if indent.is_some() => (",".to_string(), ": ".to_string()),
        _ => (", ".to_string(), ": ".to_string()),
    };
    let sort_keys = pick(sort_keys, "sort_keys")?.is_some_and(|v| v.is_true());
    kwargs.assert_all_used()?;
    let opts = DumpOptions {
        ensure_ascii,
        indent,
        item_separator,
        key_separator,
        sort_keys,
    };
    let mut out = String::new();
    write_value(&mut out, value, &opts, 0)?;
    Ok(Value::from_safe_string(out))
}

fn write_value(
    out: &mut String,
    value: &Value,
    opts: &DumpOptions,
    depth: usize,
) -> Result<(), Error> {
    if depth > MAX_DEPTH {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "tojson: value nests too deeply",
        ));
    }
    match value.kind() {
        ValueKind::Undefined => Err(Error::new(
            ErrorKind::InvalidOperation,
            "Object of type Undefined is not JSON serializable",
        )),
        ValueKind::None => {
            out.push_str("null");
            Ok(())
        }
        ValueKind::Bool => {
            out.push_str(if value.is_true() { "true" } else { "false" });
            Ok(())
        }
        ValueKind::Number => {
            write_number(out, value);
            Ok(())
        }
        ValueKind::String => {
            write_string(out, value.as_str().unwrap_or_default(), opts.ensure_ascii);
            Ok(())
        }
        ValueKind::Map => write_map(out, value, opts, depth),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            write_seq(out, &items, opts, depth)
        }
        ValueKind::Plain => {
            // Objects such as `namespace()` behave like maps when they say so.
            match value.as_object().map(|o| o.repr()) {
                Some(ObjectRepr::Map) => write_map(out, value, opts, depth),
                Some(ObjectRepr::Seq) | Some(ObjectRepr::Iterable) => {
                    let items: Vec<Value> = value.try_iter()?.collect();
                    write_seq(out, &items, opts, depth)
                }
                _ => Err(not_serializable(value)),
            }
        }
        _ => Err(not_serializable(value)),
    }
}

fn not_serializable(value: &Value) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!("Object of type {} is not JSON serializable", value.kind()),
    )
}

fn newline_indent(out: &mut String, opts: &DumpOptions, level: usize) {
    if let Some(indent) = &opts.indent {
        out.push('\n');
        for _ in 0..level {
            out.push_str(indent);
        }
    }
}

fn write_seq(
    out: &mut String,
    items: &[Value],
    opts: &DumpOptions,
    depth: usize,
) -> Result<(), Error> {
    if items.is_empty() {
        out.push_str("[]");
        return Ok(());
    }
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(&opts.item_separator);
        }
        newline_indent(out, opts, depth + 1);
        write_value(out, item, opts, depth + 1)?;
    }
    newline_indent(out, opts, depth);
    out.push(']');
    Ok(())
}

fn write_map(
    out: &mut String,
    value: &Value,
    opts: &DumpOptions,
    depth: usize,
) -> Result<(), Error> {
    let mut entries: Vec<(String, Value)> = Vec::new();
    for key in value.try_iter()? {
        let item = value.get_item(&key)?;
        entries.push((map_key(&key)?, item));
    }
    if opts.sort_keys {
        entries.sort_by(|a, b| a.0.cmp(&b.0));
    }
    if entries.is_empty() {
        out.push_str("{}");
        return Ok(());
    }
    out.push('{');
    for (i, (key, item)) in entries.iter().enumerate() {
        if i > 0 {
            out.push_str(&opts.item_separator);
        }
        newline_indent(out, opts, depth + 1);
        write_string(out, key, opts.ensure_ascii);
        out.push_str(&opts.key_separator);
        write_value(out, item, opts, depth + 1)?;
    }
    newline_indent(out, opts, depth);
    out.push('}');
    Ok(())
}

/// Python converts str, int, float, bool and None keys to strings; others are an error.
fn map_key(key: &Value) -> Result<String, Error> {
    match key.kind() {
        ValueKind::String => Ok(key.as_str().unwrap_or_default().to_string()),
        ValueKind::None => Ok("null".to_string()),
        ValueKind::Bool => Ok(if key.is_true() { "true" } else { "false" }.to_string()),
        ValueKind::Number => {
            let mut s = String::new();
            write_number(&mut s, key);
            Ok(s)
        }
        _ => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "keys must be str, int, float, bool or None, not {}",
                key.kind()
            ),
        )),
    }
}

fn write_number(out: &mut String, value: &Value) {
    if minijinja::tests::is_float(value) {
        match f64::try_from(value.clone()) {
            Ok(f) => out.push_str(&python_float_repr(f)),
            Err(_) => out.push_str(&value.to_string()),
        }
    } else {
        // Integers of any width print as their decimal spelling.
        out.push_str(&value.to_string());
    }
}

/// Python's `repr(float)`: shortest round-trip digits; scientific notation when
/// the decimal exponent is below -4 or at least 16; always a '.0' or exponent.
pub(crate) fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_string();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.to_string();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.to_string();
    }
    // `{:e}` gives the shortest round-trip mantissa, e.g. "1.5e-5", "-1e16".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let mut s = String::new();
    if negative {
        s.push('-');
    }
    if !(-4..16).contains(&exp) {
        s.push_str(&digits[..1]);
        if digits.len() > 1 {
            s.push('.');
            s.push_str(&digits[1..]);
        }
        s.push('e');
        s.push(if exp < 0 { '-' } else { '+' });
        s.push_str(&format!("{:02}", exp.abs()));
    } else if exp < 0 {
        s.push_str("0.");
        for _ in 0..(-exp - 1) {
            s.push('0');
        }
        s.push_str(&digits);
    } else {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            s.push_str(&digits);
            for _ in digits.len()..int_len {
                s.push('0');
            }
            s.push_str(".0");
        } else {
            s.push_str(&digits[..int_len]);
            s.push('.');
            s.push_str(&digits[int_len..]);
        }
    }
    s
}

/// A JSON string literal the way Python's encoder writes it.
fn write_string(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if ensure_ascii && (c as u32) > 0x7e => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::python_float_repr;

    #[test]
    fn floats_are_spelled_like_python() {
        assert_eq!(python_float_repr(1.0), "1.0");
        assert_eq!(python_float_repr(0.5), "0.5");
        assert_eq!(python_float_repr(1e-5), "1e-05");
        assert_eq!(python_float_repr(0.0001), "0.0001");
        assert_eq!(python_float_repr(1.5e16), "1.5e+16");
        assert_eq!(python_float_repr(1e15), "1000000000000000.0");
        assert_eq!(python_float_repr(-2.25), "-2.25");
        assert_eq!(python_float_repr(123.456), "123.456");
        assert_eq!(python_float_repr(0.1 + 0.2), "0.30000000000000004");
    }
}
