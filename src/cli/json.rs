//! A minimal JSON writer (the workspace has no serde_json; the CLI writes one small document).

use std::fmt::Write;

/// A JSON value built in memory and written with [`Value::write`].
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An unsigned integer, written exactly.
    UInt(u64),
    /// A number; a non-finite one is written as `null`.
    Num(f64),
    /// A string, escaped.
    Str(String),
    /// An array.
    Arr(Vec<Value>),
    /// An object, keys in the given order.
    Obj(Vec<(&'static str, Value)>),
}

impl Value {
    /// Appends the compact JSON text to `out`.
    pub fn write(&self, out: &mut String) {
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::UInt(n) => {
                let _ = write!(out, "{n}");
            }
            Value::Num(x) if x.is_finite() => {
                let _ = write!(out, "{x}");
            }
            Value::Num(_) => out.push_str("null"),
            Value::Str(s) => string(s, out),
            Value::Arr(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write(out);
                }
                out.push(']');
            }
            Value::Obj(fields) => {
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    string(k, out);
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = String::new();
        self.write(&mut s);
        f.write_str(&s)
    }
}

/// Writes `s` as a JSON string (RFC 8259 §7: quote, backslash and control characters escaped).
fn string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_escaped_compact_json() {
        let v = Value::Obj(vec![
            ("s", Value::Str("a\"b\\c\n\t\u{1}é".into())),
            (
                "a",
                Value::Arr(vec![
                    Value::UInt(u64::MAX),
                    Value::Num(0.5),
                    Value::Num(f64::NAN),
                    Value::Null,
                    Value::Bool(true),
                ]),
            ),
        ]);
        assert_eq!(
            v.to_string(),
            r#"{"s":"a\"b\\c\n\t\u0001é","a":[18446744073709551615,0.5,null,null,true]}"#
        );
    }
}
