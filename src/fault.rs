//! Test-only fault injection: named points where a test can hold the daemon until it lets go, or make an
//! operation fail, so races and crash windows are reproduced deterministically instead of by timing.
//!
//! Compiled in only with the `test-hooks` cargo feature (which `cargo test` enables through the crate's
//! dev-dependency on itself); without it every function here is an empty inline function and a release build
//! carries nothing. With it, the points are still inert unless `LUNA_DAEMON_TEST_HOOKS` names a directory:
//! - **hold** `point`: the test creates `<dir>/<point>.hold` (optionally holding a number `n`: let `n` callers
//!   pass first; or `first n`: hold only the first `n` callers, let later ones pass). A caller reaching the point appends a line to `<dir>/<point>.reached`, then waits until the
//!   test removes `<point>.hold`. The test synchronises on `.reached`, never on time.
//! - **fail** `point`: while `<dir>/<point>.fail` exists, [`fail`] returns an injected I/O error.
//!
//! A test kills the daemon while it is held at a point to crash it exactly there.

/// The environment variable naming the directory of armed points.
pub const HOOKS_ENV: &str = "LUNA_DAEMON_TEST_HOOKS";

/// Waits at `point` while the test holds it (see the module docs). No-op unless armed.
#[cfg(feature = "test-hooks")]
pub fn hold(point: &str) {
    use std::io::Write;
    let Some(dir) = std::env::var_os(HOOKS_ENV).map(std::path::PathBuf::from) else { return };
    let hold = dir.join(format!("{point}.hold"));
    let reached = dir.join(format!("{point}.reached"));
    // One lock for every point: the pass counter and the `.reached` line are updated together.
    static COUNT: parking_lot::Mutex<()> = parking_lot::Mutex::new(());
    let passes_allowed = {
        let _guard = COUNT.lock();
        let Ok(text) = std::fs::read_to_string(&hold) else { return };
        let earlier = std::fs::read_to_string(&reached).map(|r| r.lines().count()).unwrap_or(0);
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&reached) {
            let _ = writeln!(f, "{}", std::process::id());
        }
        match text.trim().strip_prefix("first ") {
            Some(n) => n.parse::<usize>().is_ok_and(|n| earlier >= n),
            None => text.trim().parse::<usize>().is_ok_and(|n| earlier < n),
        }
    };
    if passes_allowed {
        return;
    }
    tracing::debug!(point, "test hook: holding");
    // The daemon is the one waiting here, not the test: polling a file is how the test lets go.
    while hold.exists() {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// No-op without the `test-hooks` feature.
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub fn hold(_point: &str) {}

/// An injected I/O error while the test has armed `point` to fail (see the module docs); `Ok` otherwise.
#[cfg(feature = "test-hooks")]
pub fn fail(point: &str) -> std::io::Result<()> {
    let Some(dir) = std::env::var_os(HOOKS_ENV).map(std::path::PathBuf::from) else { return Ok(()) };
    if dir.join(format!("{point}.fail")).exists() {
        return Err(std::io::Error::other(format!("injected failure at test hook {point:?}")));
    }
    Ok(())
}

/// Always `Ok` without the `test-hooks` feature.
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub fn fail(_point: &str) -> std::io::Result<()> {
    Ok(())
}
