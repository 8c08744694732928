//! Daemon configuration: embedded defaults, overridden by a TOML file, overridden by environment variables,
//! overridden by command-line flags (flags and environment are merged by the CLI before they get here).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::paths;
use crate::s3::{S3Config, Secret};
use crate::workers::PoolConfig;

/// The daemon's effective configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Socket path (pipe name on Windows).
    pub socket: PathBuf,
    /// Directory where clients create segments.
    pub spool_dir: PathBuf,
    /// Directory for the instance lock (and, later, the journal).
    pub state_dir: PathBuf,
    /// Worker pool sizing.
    pub pool: PoolConfig,
    /// How long finished jobs stay queryable.
    pub job_retention: Duration,
    /// Most pixel bytes held by unfinished jobs; beyond it a submit gets `busy`.
    pub queue_budget_bytes: u64,
    /// Most simultaneous client connections.
    pub max_connections: usize,
    /// How long a submit waits for room under the budget before `busy`.
    pub busy_wait: Duration,
    /// Age after which the janitor removes what dead clients left (segments, temp files).
    pub orphan_grace: Duration,
    /// How often the janitor runs.
    pub janitor_interval: Duration,
    /// S3-compatible object storage for `s3://bucket/prefix` output roots; `None` when not configured (such
    /// roots are then refused at submit).
    pub s3: Option<S3Config>,
}

/// Settings that may come from a file, the environment or flags; `None` means "not set here".
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Socket path.
    pub socket: Option<PathBuf>,
    /// Spool directory.
    pub spool_dir: Option<PathBuf>,
    /// State directory.
    pub state_dir: Option<PathBuf>,
    /// Minimum workers.
    pub min_workers: Option<usize>,
    /// Maximum workers.
    pub max_workers: Option<usize>,
    /// Idle timeout in seconds.
    pub idle_timeout_secs: Option<u64>,
    /// Nice value of worker threads, 0..=19 (Linux).
    pub worker_nice: Option<i32>,
    /// Finished-job retention in seconds.
    pub job_retention_secs: Option<u64>,
    /// Queue budget in MiB.
    pub queue_budget_mib: Option<u64>,
    /// Connection limit.
    pub max_connections: Option<usize>,
    /// Busy wait in milliseconds.
    pub busy_wait_ms: Option<u64>,
    /// Janitor grace period in seconds.
    pub orphan_grace_secs: Option<u64>,
    /// Janitor interval in seconds.
    pub janitor_interval_secs: Option<u64>,
    /// S3 endpoint URL (`AWS_ENDPOINT_URL`), e.g. `http://127.0.0.1:9000`; unset is AWS itself.
    pub s3_endpoint: Option<String>,
    /// S3 region (`AWS_REGION`) [default: us-east-1].
    pub s3_region: Option<String>,
    /// S3 access key id (`AWS_ACCESS_KEY_ID`).
    pub s3_access_key_id: Option<String>,
    /// S3 secret access key (`AWS_SECRET_ACCESS_KEY`).
    pub s3_secret_access_key: Option<String>,
    /// S3 session token for temporary credentials (`AWS_SESSION_TOKEN`).
    pub s3_session_token: Option<String>,
    /// `"path"` or `"virtual-host"` URLs [default: path with an endpoint, virtual-host for AWS].
    pub s3_url_style: Option<String>,
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("could not read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// The file is not valid TOML or has unknown keys.
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Settings {
    /// Reads a TOML settings file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string() })
    }

    /// `self` where set, else `fallback`.
    pub fn or(self, fallback: Settings) -> Settings {
        Settings {
            socket: self.socket.or(fallback.socket),
            spool_dir: self.spool_dir.or(fallback.spool_dir),
            state_dir: self.state_dir.or(fallback.state_dir),
            min_workers: self.min_workers.or(fallback.min_workers),
            max_workers: self.max_workers.or(fallback.max_workers),
            worker_nice: self.worker_nice.or(fallback.worker_nice),
            idle_timeout_secs: self.idle_timeout_secs.or(fallback.idle_timeout_secs),
            job_retention_secs: self.job_retention_secs.or(fallback.job_retention_secs),
            queue_budget_mib: self.queue_budget_mib.or(fallback.queue_budget_mib),
            max_connections: self.max_connections.or(fallback.max_connections),
            busy_wait_ms: self.busy_wait_ms.or(fallback.busy_wait_ms),
            orphan_grace_secs: self.orphan_grace_secs.or(fallback.orphan_grace_secs),
            janitor_interval_secs: self.janitor_interval_secs.or(fallback.janitor_interval_secs),
            s3_endpoint: self.s3_endpoint.or(fallback.s3_endpoint),
            s3_region: self.s3_region.or(fallback.s3_region),
            s3_access_key_id: self.s3_access_key_id.or(fallback.s3_access_key_id),
            s3_secret_access_key: self.s3_secret_access_key.or(fallback.s3_secret_access_key),
            s3_session_token: self.s3_session_token.or(fallback.s3_session_token),
            s3_url_style: self.s3_url_style.or(fallback.s3_url_style),
        }
    }
}

impl Config {
    /// Resolves the configuration: `overrides` (flags and environment) over the config file over defaults.
    /// `config_file` is the explicitly named file (must exist); without one the default location is read if
    /// it exists.
    pub fn load(config_file: Option<&Path>, overrides: Settings) -> Result<Self, ConfigError> {
        let from_file = match config_file {
            Some(path) => Settings::from_file(path)?,
            None => match paths::default_config_file().filter(|p| p.is_file()) {
                Some(path) => Settings::from_file(&path)?,
                None => Settings::default(),
            },
        };
        Self::from_settings(overrides.or(from_file))
    }

    /// Fills unset settings with the embedded defaults and checks ranges.
    pub fn from_settings(s: Settings) -> Result<Self, ConfigError> {
        let defaults = PoolConfig::default();
        let pool = PoolConfig {
            min_workers: s.min_workers.unwrap_or(defaults.min_workers),
            max_workers: s.max_workers.unwrap_or(defaults.max_workers),
            idle_timeout: s.idle_timeout_secs.map(Duration::from_secs).unwrap_or(defaults.idle_timeout),
            worker_nice: s.worker_nice.unwrap_or(defaults.worker_nice),
        };
        if !(0..=19).contains(&pool.worker_nice) {
            return Err(ConfigError::Invalid(format!("worker_nice {} is outside 0..=19", pool.worker_nice)));
        }
        if pool.max_workers == 0 || pool.min_workers > pool.max_workers {
            return Err(ConfigError::Invalid(format!(
                "need 0 <= min_workers ({}) <= max_workers ({}) and max_workers >= 1",
                pool.min_workers, pool.max_workers
            )));
        }
        let s3 = s3_config(&s)?;
        let max_connections = s.max_connections.unwrap_or(2048);
        if max_connections == 0 {
            return Err(ConfigError::Invalid("max_connections must be at least 1".to_owned()));
        }
        Ok(Self {
            socket: s.socket.unwrap_or_else(paths::default_socket),
            spool_dir: s.spool_dir.unwrap_or_else(paths::default_spool_dir),
            state_dir: s.state_dir.unwrap_or_else(paths::default_state_dir),
            pool,
            job_retention: Duration::from_secs(s.job_retention_secs.unwrap_or(3600)),
            queue_budget_bytes: s.queue_budget_mib.unwrap_or(4096).saturating_mul(1 << 20),
            max_connections,
            busy_wait: Duration::from_millis(s.busy_wait_ms.unwrap_or(500)),
            orphan_grace: Duration::from_secs(s.orphan_grace_secs.unwrap_or(600)),
            janitor_interval: Duration::from_secs(s.janitor_interval_secs.unwrap_or(60).max(1)),
            s3,
        })
    }
}

/// Object storage is configured when an endpoint or an access key is set. Key and secret come as a pair.
fn s3_config(s: &Settings) -> Result<Option<S3Config>, ConfigError> {
    let nonempty = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
    let (endpoint, key, secret) =
        (nonempty(&s.s3_endpoint), nonempty(&s.s3_access_key_id), nonempty(&s.s3_secret_access_key));
    if endpoint.is_none() && key.is_none() {
        return Ok(None);
    }
    let credentials = match (key, secret) {
        (Some(key), Some(secret)) => Some((key, Secret(secret))),
        (None, None) => None,
        (Some(_), None) => {
            return Err(ConfigError::Invalid(
                "an S3 access key id is set but no secret access key (AWS_SECRET_ACCESS_KEY or s3_secret_access_key)"
                    .to_owned(),
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError::Invalid(
                "an S3 secret access key is set but no access key id (AWS_ACCESS_KEY_ID or s3_access_key_id)"
                    .to_owned(),
            ));
        }
    };
    let path_style = match s.s3_url_style.as_deref() {
        None => endpoint.is_some(),
        Some("path") => true,
        Some("virtual-host") => false,
        Some(other) => {
            return Err(ConfigError::Invalid(format!(
                "s3_url_style {other:?} is neither \"path\" nor \"virtual-host\""
            )));
        }
    };
    Ok(Some(S3Config {
        endpoint,
        region: nonempty(&s.s3_region).unwrap_or_else(|| "us-east-1".to_owned()),
        credentials,
        session_token: nonempty(&s.s3_session_token).map(Secret),
        path_style,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_env_override_the_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, "min_workers = 1\nmax_workers = 8\nsocket = \"/from/file.sock\"\n").unwrap();
        let overrides = Settings { max_workers: Some(3), ..Settings::default() };
        let config = Config::load(Some(&file), overrides).unwrap();
        assert_eq!(config.pool.min_workers, 1);
        assert_eq!(config.pool.max_workers, 3);
        assert_eq!(config.socket, PathBuf::from("/from/file.sock"));
        assert_eq!(config.pool.idle_timeout, Duration::from_secs(300));
    }

    #[test]
    fn unknown_keys_and_bad_ranges_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, "max_wrokers = 8\n").unwrap();
        let err = Config::load(Some(&file), Settings::default()).unwrap_err().to_string();
        assert!(err.contains("unknown field `max_wrokers`"), "{err}");
        let err = Config::from_settings(Settings { min_workers: Some(5), ..Settings::default() }).unwrap_err();
        assert!(err.to_string().contains("min_workers (5)"), "{err}");
        let err = Config::from_settings(Settings { worker_nice: Some(20), ..Settings::default() }).unwrap_err();
        assert_eq!(err.to_string(), "invalid configuration: worker_nice 20 is outside 0..=19");
    }

    /// Workers run below the generation's priority unless told otherwise (docs/BENCHMARKS.md, end to end).
    #[test]
    fn workers_default_to_a_lower_priority_and_the_file_can_change_it() {
        assert_eq!(Config::from_settings(Settings::default()).unwrap().pool.worker_nice, 10);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "worker_nice = 0\n").unwrap();
        assert_eq!(Config::load(Some(&file), Settings::default()).unwrap().pool.worker_nice, 0);
    }

    #[test]
    fn s3_comes_from_the_file_and_the_environment_overrides_it() {
        assert_eq!(Config::from_settings(Settings::default()).unwrap().s3, None, "not configured by default");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "s3_endpoint = \"http://127.0.0.1:9000\"\ns3_access_key_id = \"file-key\"\ns3_secret_access_key = \"file-secret\"\n",
        )
        .unwrap();
        let env = Settings { s3_region: Some("eu-west-1".into()), ..Settings::default() };
        let s3 = Config::load(Some(&file), env).unwrap().s3.unwrap();
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(s3.region, "eu-west-1");
        assert_eq!(s3.credentials, Some(("file-key".into(), Secret("file-secret".into()))));
        assert!(s3.path_style, "a custom endpoint gets path-style URLs");
        let err = Config::from_settings(Settings { s3_access_key_id: Some("k".into()), ..Settings::default() });
        assert!(err.unwrap_err().to_string().contains("no secret access key"));
        let aws = Settings {
            s3_access_key_id: Some("k".into()),
            s3_secret_access_key: Some("s".into()),
            ..Settings::default()
        };
        assert!(!Config::from_settings(aws).unwrap().s3.unwrap().path_style, "AWS itself: virtual-host style");
    }
}
