//! Lower scheduling priority for worker threads, so that on a small machine the generation that feeds the
//! daemon (ComfyUI at normal priority) keeps its cores and the saves take what is left.
//!
//! Linux: `setpriority(PRIO_PROCESS, tid)` gives one thread its own nice value (the daemon's other threads,
//! which answer clients, stay at normal priority). Elsewhere the nice value is per process, so it is left
//! alone; `max_workers` below the core count is the knob there (docs/BENCHMARKS.md, scaling).

/// Gives the calling thread the nice value `nice` (0 = normal, 19 = lowest), unless it already runs at that
/// or a lower priority (a daemon started with `nice -n 15` keeps 15). Failures are logged, not fatal: a worker
/// at normal priority still saves correctly.
pub(crate) fn set_current_thread_nice(nice: i32) {
    if nice == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        let tid = Some(rustix::thread::gettid());
        match rustix::process::getpriority_process(tid) {
            Ok(current) if current >= nice => {}
            _ => {
                if let Err(e) = rustix::process::setpriority_process(tid, nice) {
                    tracing::warn!("could not set worker nice value {nice}: {e}");
                }
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    tracing::debug!("worker nice value {nice} not applied: per-thread priority is implemented on Linux only");
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_thread_gets_its_own_nice_value() {
        let own = rustix::process::getpriority_process(None).unwrap();
        let worker = std::thread::spawn(|| {
            set_current_thread_nice(7);
            rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(worker, own.max(7));
        assert_eq!(rustix::process::getpriority_process(None).unwrap(), own, "the rest of the process unchanged");
    }
}
