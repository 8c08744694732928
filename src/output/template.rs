//! File-name and folder templates, exactly as the Luna Multi Saver node expands them:
//! `%model_name%`, `%model_path%`, `%model_dir%`, `%index%`, `%time:FORMAT%` (tokens YYYY mm dd HH MM SS) and
//! ComfyUI's `%date:FORMAT%` (yyyy yy MM M dd d hh h mm m ss s), with one timestamp per node execution.
//!
//! A template never makes a job invalid by the characters it produces: in every value a template substitutes,
//! the characters no file name may hold on Windows (`: * ? " < > |`) and control characters become `_`, the
//! replacement ComfyUI's frontend applies to the values it substitutes into `filename_prefix`. `/` and `\` stay
//! (they make sub-folders, as in ComfyUI). The same set is replaced on every platform, so one workflow gives the
//! same names everywhere and the confinement checks (which refuse these characters in literal text) never see
//! one from a template. Literal text outside templates is not changed: it is checked and refused as typed.

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
        .replace("%model_path%", &storable(&ctx.model.path))
        .replace("%model_name%", &storable(&ctx.model.name))
        .replace("%model_dir%", &storable(&ctx.model.dir))
        .replace("%index%", &ctx.index.to_string());
    out = replace_tagged(&out, "%time:", |fmt| storable(&format_time(fmt, &ctx.time)));
    out = replace_tagged(&out, "%date:", |fmt| storable(&format_date(fmt, &ctx.time)));
    let out = out.replace('\\', "/");
    out.trim_end_matches('/').to_owned()
}

/// A substituted value with every character a file name cannot hold on some platform replaced by `_` (see the
/// module docs); separators are kept.
fn storable(value: &str) -> String {
    value.chars().map(|c| if c.is_control() || UNSTORABLE.contains(&c) { '_' } else { c }).collect()
}

/// Characters Windows refuses in any file name (separators aside); ComfyUI's frontend replaces the same ones.
const UNSTORABLE: [char; 7] = [':', '*', '?', '"', '<', '>', '|'];

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

/// `%date:FORMAT%` as ComfyUI's frontend expands it: one left-to-right scan for `dd?`, `MM?`, `hh?`, `mm?`,
/// `ss?` (the value, zero-padded to the token's length) and `yyy?y?` (`yy` two digits, `yyyy` four, `yyy`
/// left as it is); anything else is kept.
fn format_date(fmt: &str, t: &DateTime<FixedOffset>) -> String {
    let chars: Vec<char> = fmt.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let run = chars[i..].iter().take_while(|&&x| x == c).count();
        let (token_len, value) = match c {
            'd' | 'M' | 'h' | 'm' | 's' => {
                let v = match c {
                    'd' => t.day(),
                    'M' => t.month(),
                    'h' => t.hour(),
                    'm' => t.minute(),
                    _ => t.second(),
                };
                let len = run.min(2);
                (len, format!("{v:0len$}"))
            }
            'y' if run >= 2 => {
                let len = run.min(4);
                let value = match len {
                    2 => format!("{:02}", t.year().rem_euclid(100)),
                    4 => t.year().to_string(),
                    _ => "yyy".to_owned(),
                };
                (len, value)
            }
            _ => (1, c.to_string()),
        };
        out.push_str(&value);
        i += token_len;
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
        assert_eq!(expand("%date:yyyy-MM-dd hh:mm:ss%|%date:yy M d h m s%", &c), "2025-03-07 09_05_04|25 3 7 9 5 4");
        assert_eq!(expand("%date:yyy-y-ddd%", &c), "yyy-y-077");
        assert_eq!(expand("out/%model_path%/%index%/", &c), "out/Illustrious/3DCG/foo_v60/42");
        assert_eq!(expand("%model_dir%\\x", &c), "Illustrious/3DCG/x");
        assert_eq!(expand("100%done %time:%", &c), "100%done %time:%");
        assert_eq!(save_timestamp(&c.time), "2025_03_07_090504");
    }

    #[test]
    fn characters_no_file_name_can_hold_become_underscores_in_substituted_values_only() {
        let c = ctx("a:b/c*d?.safetensors");
        assert_eq!(expand("%date:hh:mm%/%time:HH:MM%", &c), "09_05/09_05");
        assert_eq!(expand("%date:\"<>|*?%", &c), "______");
        assert_eq!(expand("%date:d\u{1}\u{7f}\u{85}%", &c), "7___");
        assert_eq!(expand("%model_path%|%model_dir%|%model_name%", &c), "a_b/c_d_|a_b|c_d_");
        // Separators from a template still make folders; literal text is left for the confinement checks.
        assert_eq!(expand("%date:yyyy/MM%/lit:eral", &c), "2025/03/lit:eral");
        for template in ["%date:yyyy-MM-dd hh:mm:ss%", "%time:HH:MM:SS%", "%model_name%"] {
            let stem = expand(template, &c);
            assert!(crate::output::validate_stem(&stem).is_ok(), "{template} -> {stem}");
        }
    }
}
