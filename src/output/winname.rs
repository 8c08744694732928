//! Windows file-name rules for every path component the daemon creates. They apply on every platform: a name
//! Windows cannot hold breaks as soon as the output folder is shared with or moved to Windows, and on Windows
//! itself `NUL.png` silently writes to the null device and `a.png:x` writes into an alternate data stream.

/// Device names Windows reserves in every directory, with any extension (`nul.txt`), in any case. Windows 10+
/// also reserves `COM0`/`LPT0` and the superscript digits `¹²³`, and the console names.
const RESERVED: [&str; 2] = ["CONIN$", "CONOUT$"];
const RESERVED_PLAIN: [&str; 4] = ["CON", "PRN", "AUX", "NUL"];
const RESERVED_NUMBERED: [&str; 2] = ["COM", "LPT"];

/// Why `part` cannot be a Windows file or directory name, or `None` if it can.
pub fn windows_name_problem(part: &str) -> Option<&'static str> {
    if part.contains(':') {
        return Some("':' (drive letters, alternate streams) is not allowed");
    }
    if part.contains(['<', '>', '"', '|', '?', '*']) {
        return Some("it contains a character Windows forbids in file names");
    }
    if is_reserved_device(part) {
        return Some("it is a reserved device name on Windows");
    }
    if part.ends_with(['.', ' ']) && part != "." && part != ".." {
        return Some("names ending in '.' or ' ' are not portable");
    }
    None
}

/// The part before the first dot, spaces trimmed at its end (`"nul .txt"` is the device too), compared
/// without case.
fn is_reserved_device(part: &str) -> bool {
    let base = part.split('.').next().unwrap_or("").trim_end_matches(' ').to_ascii_uppercase();
    if RESERVED_PLAIN.contains(&base.as_str()) || RESERVED.contains(&base.as_str()) {
        return true;
    }
    RESERVED_NUMBERED.iter().any(|prefix| {
        base.strip_prefix(prefix).is_some_and(|digit| {
            let mut chars = digit.chars();
            matches!((chars.next(), chars.next()), (Some('0'..='9' | '¹' | '²' | '³'), None))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_device_names_are_refused_with_any_extension_or_case() {
        for bad in ["CON", "con", "Nul.png", "nul .txt", "aux.tar.gz", "COM1", "com9.webp", "LPT0", "COM¹", "conin$"] {
            assert_eq!(windows_name_problem(bad), Some("it is a reserved device name on Windows"), "{bad:?}");
        }
        for fine in ["CONSOLE", "nullable.png", "COM10", "LPT", "com1x", "my con.png", "ComfyUI_00001_.png"] {
            assert_eq!(windows_name_problem(fine), None, "{fine:?}");
        }
    }

    #[test]
    fn trailing_dots_and_spaces_are_refused() {
        for bad in ["name.", "name ", "a.png.", "dir. "] {
            assert_eq!(windows_name_problem(bad), Some("names ending in '.' or ' ' are not portable"), "{bad:?}");
        }
        assert_eq!(windows_name_problem(".hidden"), None);
    }

    #[test]
    fn streams_drives_and_forbidden_characters_are_refused() {
        assert_eq!(windows_name_problem("a.png:evil"), Some("':' (drive letters, alternate streams) is not allowed"));
        assert_eq!(windows_name_problem("C:"), Some("':' (drive letters, alternate streams) is not allowed"));
        for bad in ["a<b", "a>b", "a\"b", "a|b", "a?b", "a*b"] {
            assert_eq!(
                windows_name_problem(bad),
                Some("it contains a character Windows forbids in file names"),
                "{bad:?}"
            );
        }
    }
}
