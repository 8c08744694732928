//! Segment names are names, never paths: 1 to 64 characters from `A-Z a-z 0-9 _ -`, not starting with `-`.

/// Why a segment name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid segment name {name:?}: {reason}")]
pub struct NameError {
    /// The refused name (as given).
    pub name: String,
    /// Why.
    pub reason: &'static str,
}

/// Longest accepted segment name.
pub const MAX_NAME_LEN: usize = 64;

/// Checks that `name` can only ever denote a file directly inside the spool directory.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    let refuse = |reason| Err(NameError { name: name.to_owned(), reason });
    if name.is_empty() {
        return refuse("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return refuse("it is longer than 64 characters");
    }
    if name.contains(['/', '\\']) {
        return refuse("it contains a path separator; segment names are names, not paths");
    }
    if name.starts_with('-') {
        return refuse("it starts with '-'");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return refuse("only A-Z, a-z, 0-9, '_' and '-' are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_pass_and_paths_fail() {
        assert!(validate_name("luna-1234-0").is_ok());
        assert!(validate_name("A_b-9").is_ok());
        for bad in ["", "../etc/passwd", "/dev/shm/x", "a/b", "a\\b", "..", ".", ".hidden", "a b", "a\0b", "-x", "é"] {
            assert!(validate_name(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(validate_name(&"x".repeat(65)).is_err());
    }
}
