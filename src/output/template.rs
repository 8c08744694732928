//! File-name and folder templates, exactly as the Luna Multi Saver node expands them:
//! `%model_name%`, `%model_path%`, `%model_dir%`, `%index%`, `%time:FORMAT%` (tokens YYYY mm dd HH MM SS) and
//! ComfyUI's `%date:FORMAT%` (yyyy yy MM M dd d hh h mm m ss s), with one timestamp per node execution.

use chrono::{DateTime, Datelike, FixedOffset, Timelike};

/// What templates are expanded against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateContext {
    /// The model as parsed from the raw model name.
    pub model: ModelInfo,
    /// The value of `%index%`.
    pub index: u32,
    /// The node's execution time in the client's local time zone.
    pub time: DateTime<FixedOffset>,
}

/// A model name split the way the node does it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// `Illustrious/3DCG/foo_v60` (directory and name, no extension).
    pub path: String,
    /// `foo_v60`, or `UnknownModel` when empty.
    pub name: String,
    /// `Illustrious/3DCG`.
    pub dir: String,
}

const MODEL_EXTENSIONS: [&str; 6] = [".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf"];

impl ModelInfo {
    /// Parses `Illustrious/3DCG/foo_v60.safetensors` (either separator) into path, name and dir; one known
    /// extension is stripped (case-insensitively). Empty gives name `UnknownModel` and empty path and dir.
    pub fn parse(raw: &str) -> Self {
        let normalized = raw.replace('\\', "/");
        let normalized = normalized.trim_end_matches('/');
        if normalized.is_empty() {
            return Self { path: String::new(), name: "UnknownModel".to_owned(), dir: String::new() };
        }
        let (dir, base) = match normalized.rfind('/') {
            Some(i) => (&normalized[..i], &normalized[i + 1..]),
            None => ("", normalized),
        };
        let lower = base.to_ascii_lowercase();
        let name = MODEL_EXTENSIONS
            .iter()
            .find(|ext| lower.ends_with(*ext))
            .map(|ext| &base[..base.len() - ext.len()])
            .unwrap_or(base);
        let path = if dir.is_empty() { name.to_owned() } else { format!("{dir}/{name}") };
        Self { path, name: name.to_owned(), dir: dir.to_owned() }
    }
}

/// Expands every template in `template`, then normalises `\` to `/` and drops trailing slashes (as the node).
pub fn expand(template: &str, ctx: &TemplateContext) -> String {
    let mut out = template
        .replace("%model_path%", &ctx.model.path)
        .replace("%model_name%", &ctx.model.name)
        .replace("%model_dir%", &ctx.model.dir)
        .replace("%index%", &ctx.index.to_string());
    out = replace_tagged(&out, "%time:", |fmt| format_time(fmt, &ctx.time));
    out = replace_tagged(&out, "%date:", |fmt| format_date(fmt, &ctx.time));
    let out = out.replace('\\', "/");
    out.trim_end_matches('/').to_owned()
}

/// The node's `save_timestamp` metadata value: `YYYY_mm_dd_HHMMSS`.
pub fn save_timestamp(time: &DateTime<FixedOffset>) -> String {
    time.format("%Y_%m_%d_%H%M%S").to_string()
}

/// Replaces each `<tag>FORMAT%` (FORMAT non-empty, without `%`) with `render(FORMAT)`.
fn replace_tagged(input: &str, tag: &str, render: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(start) = rest.find(tag) {
        let after = &rest[start + tag.len()..];
        match after.find('%') {
            Some(end) if end > 0 => {
                out.push_str(&rest[..start]);
                out.push_str(&render(&after[..end]));
                rest = &after[end + 1..];
            }
            _ => {
                out.push_str(&rest[..start + tag.len()]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// `%time:FORMAT%`: the node replaces YYYY, mm, dd, HH, MM, SS in that order by strftime directives and then
/// calls strftime; this does the same replacements straight to values, in the same order, so a token created
/// by an earlier replacement is never re-read.
fn format_time(fmt: &str, t: &DateTime<FixedOffset>) -> String {
    let values = [
        ("YYYY", format!("{:04}", t.year())),
        ("mm", format!("{:02}", t.month())),
        ("dd", format!("{:02}", t.day())),
        ("HH", format!("{:02}", t.hour())),
        ("MM", format!("{:02}", t.minute())),
        ("SS", format!("{:02}", t.second())),
    ];
    // Replace tokens with private-use placeholders first (as the node's `%Y`, `%m`, ... are), then values.
    let mut s = fmt.to_owned();
    for (i, (token, _)) in values.iter().enumerate() {
        s = s.replace(token, &placeholder(i));
    }
    for (i, (_, value)) in values.iter().enumerate() {
        s = s.replace(&placeholder(i), value);
    }
    s
}

fn placeholder(i: usize) -> String {
    char::from_u32(0xE000 + i as u32).expect("private-use code point").to_string()
}

/// `%date:FORMAT%`: ComfyUI's single left-to-right scan for yyyy|yy|MM|M|dd|d|hh|h|mm|m|ss|s.
fn format_date(fmt: &str, t: &DateTime<FixedOffset>) -> String {
    const TOKENS: [&str; 12] = ["yyyy", "yy", "MM", "M", "dd", "d", "hh", "h", "mm", "m", "ss", "s"];
    let mut out = String::new();
    let mut rest = fmt;
    'scan: while let Some(c) = rest.chars().next() {
        for token in TOKENS {
            if let Some(after) = rest.strip_prefix(token) {
                out.push_str(&match token {
                    "yyyy" => format!("{:04}", t.year()),
                    "yy" => format!("{:02}", t.year().rem_euclid(100)),
                    "MM" => format!("{:02}", t.month()),
                    "M" => t.month().to_string(),
                    "dd" => format!("{:02}", t.day()),
                    "d" => t.day().to_string(),
                    "hh" => format!("{:02}", t.hour()),
                    "h" => t.hour().to_string(),
                    "mm" => format!("{:02}", t.minute()),
                    "m" => t.minute().to_string(),
                    "ss" => format!("{:02}", t.second()),
                    _ => t.second().to_string(),
                });
                rest = after;
                continue 'scan;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn ctx(model: &str) -> TemplateContext {
        let time = FixedOffset::east_opt(3600).unwrap().with_ymd_and_hms(2025, 3, 7, 9, 5, 4).unwrap();
        TemplateContext { model: ModelInfo::parse(model), index: 42, time }
    }

    #[test]
    fn model_names_parse_like_the_node() {
        let m = ModelInfo::parse("Illustrious/3DCG/foo_v60.safetensors");
        assert_eq!(
            (m.path.as_str(), m.name.as_str(), m.dir.as_str()),
            ("Illustrious/3DCG/foo_v60", "foo_v60", "Illustrious/3DCG")
        );
        let m = ModelInfo::parse("Illustrious\\bar.GGUF");
        assert_eq!((m.path.as_str(), m.name.as_str(), m.dir.as_str()), ("Illustrious/bar", "bar", "Illustrious"));
        assert_eq!(ModelInfo::parse("").name, "UnknownModel");
        assert_eq!(ModelInfo::parse("plain.onnx").name, "plain.onnx");
    }

    #[test]
    fn templates_expand_time_date_model_and_index() {
        let c = ctx("Illustrious/3DCG/foo_v60.safetensors");
        assert_eq!(expand("%time:YYYY_mm_dd.HH.MM.SS%_%model_name%", &c), "2025_03_07.09.05.04_foo_v60");
        assert_eq!(expand("%date:yyyy-MM-dd hh:mm:ss%|%date:yy M d h m s%", &c), "2025-03-07 09:05:04|25 3 7 9 5 4");
        assert_eq!(expand("out/%model_path%/%index%/", &c), "out/Illustrious/3DCG/foo_v60/42");
        assert_eq!(expand("%model_dir%\\x", &c), "Illustrious/3DCG/x");
        assert_eq!(expand("100%done %time:%", &c), "100%done %time:%");
        assert_eq!(save_timestamp(&c.time), "2025_03_07_090504");
    }
}
