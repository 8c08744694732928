//! JSON text exactly as Python's `json.dumps(value)` writes it with default arguments: `", "` and `": "`
//! separators, non-ASCII escaped as `\uXXXX` (surrogate pairs above U+FFFF), floats as `repr(float)`, key order
//! kept. ComfyUI embeds `json.dumps(prompt)` and `json.dumps(workflow)`; clients that are not Python (the CLI)
//! use this so both save paths write byte-identical metadata.

use serde_json::Value;

/// `json.dumps(value)`.
pub fn dumps(value: &Value) -> String {
    let mut out = String::new();
    write_value(value, &mut out);
    out
}

/// `json.dumps(value)` for a value that arrived as MessagePack from a Python client: what Python's `json.dumps`
/// writes for the dict it packed. Map keys that are not strings become strings the way `json.dumps` makes them
/// (`1` -> `"1"`, `1.5` -> `"1.5"`, `True` -> `"true"`, `None` -> `"null"`).
pub fn dumps_msgpack(value: &rmpv::Value) -> String {
    let mut out = String::new();
    write_msgpack(value, &mut out);
    out
}

fn write_msgpack(value: &rmpv::Value, out: &mut String) {
    use rmpv::Value;
    match value {
        Value::Nil => out.push_str("null"),
        Value::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Integer(i) => out.push_str(&i.to_string()),
        Value::F32(f) => out.push_str(&float_repr(f64::from(*f))),
        Value::F64(f) => out.push_str(&float_repr(*f)),
        Value::String(s) => write_str(&String::from_utf8_lossy(s.as_bytes()), out),
        Value::Binary(b) => write_str(&String::from_utf8_lossy(b), out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_msgpack(item, out);
            }
            out.push(']');
        }
        Value::Map(entries) => {
            out.push('{');
            for (i, (key, item)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                let key = match key {
                    Value::String(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                    Value::Nil => "null".to_owned(),
                    Value::Boolean(b) => b.to_string(),
                    Value::Integer(i) => i.to_string(),
                    Value::F32(f) => float_repr(f64::from(*f)),
                    Value::F64(f) => float_repr(*f),
                    other => other.to_string(),
                };
                write_str(&key, out);
                out.push_str(": ");
                write_msgpack(item, out);
            }
            out.push('}');
        }
        Value::Ext(..) => out.push_str("null"),
    }
}

/// `json.dumps(text)` for a string.
pub fn dumps_str(text: &str) -> String {
    let mut out = String::new();
    write_str(text, &mut out);
    out
}

fn write_value(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => out.push_str(&i.to_string()),
            (_, Some(u), _) => out.push_str(&u.to_string()),
            (_, _, Some(f)) => out.push_str(&float_repr(f)),
            _ => out.push_str(&n.to_string()),
        },
        Value::String(s) => write_str(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_str(key, out);
                out.push_str(": ");
                write_value(item, out);
            }
            out.push('}');
        }
    }
}

fn write_str(s: &str, out: &mut String) {
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
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
}

/// Python's `repr(float)`: the shortest digits that round-trip; positional when the decimal exponent is in
/// -4..16, else scientific with a signed, at least two-digit exponent; `Infinity`, `-Infinity`, `NaN` as json.
pub fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    // `{:e}` gives the shortest round-trip digits: "-1.2345e-7".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').expect("`{:e}` has an exponent");
    let exp: i32 = exp.parse().expect("integer exponent");
    let (sign, mantissa) = mantissa.strip_prefix('-').map_or(("", mantissa), |m| ("-", m));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        let body = if point <= 0 {
            format!("0.{}{digits}", "0".repeat((-point) as usize))
        } else if point as usize >= digits.len() {
            format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            format!("{}.{}", &digits[..point as usize], &digits[point as usize..])
        };
        format!("{sign}{body}")
    } else {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() { String::new() } else { format!(".{rest}") };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{first}{frac}e{exp_sign}{:02}", exp.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_python_repr() {
        let cases = [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (123456.789, "123456.789"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (0.0, "0.0"),
            (7.0e22, "7e+22"),
        ];
        for (f, expected) in cases {
            assert_eq!(float_repr(f), expected, "{f}");
        }
    }

    #[test]
    fn msgpack_values_print_like_json_dumps_of_the_python_dict() {
        use rmpv::Value;
        // json.dumps({"b": [1, 2.0, None, True], 3: "é", 1.5: {}, None: float("nan"), "x": -0.0})
        let value = Value::Map(vec![
            ("b".into(), Value::Array(vec![1.into(), Value::F64(2.0), Value::Nil, true.into()])),
            (3.into(), "é".into()),
            (Value::F64(1.5), Value::Map(vec![])),
            (Value::Nil, Value::F64(f64::NAN)),
            ("x".into(), Value::F64(-0.0)),
        ]);
        assert_eq!(
            dumps_msgpack(&value),
            r#"{"b": [1, 2.0, null, true], "3": "\u00e9", "1.5": {}, "null": NaN, "x": -0.0}"#
        );
    }

    #[test]
    fn objects_strings_and_order_match_json_dumps() {
        let v: Value = serde_json::from_str(r#"{"b": [1, 2.0, null, true], "a": "é\"\\\n😀\u0001", "c": {}}"#).unwrap();
        assert_eq!(dumps(&v), r#"{"b": [1, 2.0, null, true], "a": "\u00e9\"\\\n\ud83d\ude00\u0001", "c": {}}"#);
    }
}
