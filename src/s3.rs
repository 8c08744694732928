//! S3-compatible object storage as an output root (`output_dir` = `s3://bucket/prefix`).
//!
//! What it owns:
//! - [`ObjectRoot`]: parsing and checking an `s3://` output root (bucket name, prefix components as for
//!   directories).
//! - [`S3Config`]: endpoint, region and credentials, from the daemon's config file and the usual AWS
//!   environment variables, never from a client (a client names only the bucket and prefix, so it cannot
//!   send the daemon's credentials anywhere else).
//! - [`ObjectStore`]: never-overwriting uploads. Each object is created with a SigV4-signed `PUT` carrying
//!   `If-None-Match: *` (conditional create): a `412 Precondition Failed` means the name is taken and the next
//!   counter suffix (`_00001`, ...) is tried, exactly as for files. The object carries its upload id
//!   (`x-amz-meta-luna-upload: <job>/<index>`): a `412` on an object whose upload id is ours (our own `PUT`
//!   that succeeded before a crash or a lost response) counts as the upload, so a retry never makes a second
//!   copy. An image counts as written only when a `PUT` answered 200.
//! - [`Staged`]: the encoded bytes of an image waiting for its upload, kept durable in the state directory
//!   (`<state>/uploads/<job>-<index>.staged`) until the upload succeeds, so a retry or a restarted daemon uploads
//!   exactly the bytes encoded the first time, without encoding again.
//!
//! The signing is `rusty-s3` (sans-IO), the HTTP client `ureq` (blocking, rustls with ring): the daemon's
//! workers are plain threads, so no async runtime is needed (docs/ARCHITECTURE.md says why these two).

use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use serde::{Deserialize, Serialize};

use crate::output;
use crate::protocol::GateScores;

/// The scheme of an object-storage output root.
pub const S3_SCHEME: &str = "s3://";

/// Highest counter suffix tried before giving up (the same as for files).
const MAX_COUNTER: u32 = 99_999;
/// How long a signed request stays valid (it is sent at once).
const SIGNATURE_TTL: Duration = Duration::from_secs(300);
/// Connecting to the endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// One whole request, body included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// The user-metadata header naming the upload (job id and image index).
const UPLOAD_HEADER: &str = "x-amz-meta-luna-upload";

/// An `s3://bucket/prefix` output root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRoot {
    /// The bucket.
    pub bucket: String,
    /// The key prefix (components joined by `/`, no leading or trailing `/`; empty for none).
    pub prefix: String,
}

impl ObjectRoot {
    /// `None` if `output_dir` is not an `s3://` URL; otherwise the parsed root or why it is refused.
    pub fn parse(output_dir: &str) -> Option<Result<Self, String>> {
        let rest = output_dir.strip_prefix(S3_SCHEME)?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        Some(check_bucket(bucket).and_then(|()| {
            let parts = output::check_sub_path(prefix)
                .map_err(|e| format!("output_dir {output_dir:?}: the key prefix is refused: {e}"))?;
            if prefix.contains('\\') {
                return Err(format!("output_dir {output_dir:?}: a key prefix must use `/`, not `\\`"));
            }
            Ok(Self { bucket: bucket.to_owned(), prefix: parts.join("/") })
        }))
    }

    /// The key of `name` in the directory `sub_path` (relative, validated) below the prefix.
    pub fn key(&self, sub_path: &str, name: &str) -> String {
        [self.prefix.as_str(), sub_path, name].into_iter().filter(|p| !p.is_empty()).collect::<Vec<_>>().join("/")
    }

    /// `s3://bucket/key`, what `status` reports as the image's path.
    pub fn path_of(&self, key: &str) -> String {
        format!("{S3_SCHEME}{}/{key}", self.bucket)
    }
}

/// S3's bucket naming rules (3 to 63 of `a-z 0-9 . -`, starting and ending with a letter or digit).
fn check_bucket(bucket: &str) -> Result<(), String> {
    let ok = (3..=63).contains(&bucket.len())
        && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric())
        && !bucket.contains("..");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{bucket:?} is not a valid bucket name (3 to 63 lowercase letters, digits, `.` and `-`, starting and \
             ending with a letter or digit)"
        ))
    }
}

/// A secret that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// Where the object storage is and how to sign for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    /// The endpoint, e.g. `http://127.0.0.1:9000`; `None` is AWS (`https://s3.<region>.amazonaws.com`).
    pub endpoint: Option<String>,
    /// The region signed for (`us-east-1` unless set).
    pub region: String,
    /// Access key id and secret; `None` sends unsigned requests (a public-write bucket).
    pub credentials: Option<(String, Secret)>,
    /// A session token for temporary credentials.
    pub session_token: Option<Secret>,
    /// Path-style URLs (`endpoint/bucket/key`) instead of virtual-host style (`bucket.endpoint/key`). Default:
    /// path style for a custom endpoint (what local S3 servers expect), virtual-host style for AWS.
    pub path_style: bool,
}

/// Why an upload did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// The configuration cannot work (a bad endpoint URL, an object root without S3 configured).
    #[error("{0}")]
    Config(String),
    /// The endpoint could not be reached or the exchange broke off (retried).
    #[error("S3 endpoint {endpoint} unreachable while uploading {object}: {reason}")]
    Unreachable { endpoint: String, object: String, reason: String },
    /// The endpoint answered with an error status.
    #[error("S3 refused {what} {object} with HTTP {status}{}: {hint}", code.as_deref().map(|c| format!(" {c}")).unwrap_or_default())]
    Status { what: &'static str, object: String, status: u16, code: Option<String>, hint: String },
    /// Every counter suffix is taken.
    #[error("every name from {0} to the counter {MAX_COUNTER} is taken")]
    NamesExhausted(String),
    /// The staging file of an upload could not be written or read.
    #[error("could not keep the encoded image for its upload in {path}: {source}")]
    Staging { path: PathBuf, source: io::Error },
}

impl S3Error {
    /// Whether waiting may help: the endpoint down or overloaded, refused credentials, a missing bucket, a
    /// full state directory. Such an image stays `retrying`, its bytes kept, until the cause is fixed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Staging { .. } | Self::Config(_) => true,
            Self::Status { status, .. } => matches!(status, 401 | 403 | 404 | 408 | 409 | 429 | 500..=599),
            Self::NamesExhausted(_) => false,
        }
    }
}

/// One image to upload.
#[derive(Debug, Clone, Copy)]
pub struct Upload<'a> {
    /// The directory below the root (relative, validated).
    pub sub_path: &'a str,
    /// The file name stem before any counter suffix.
    pub stem: &'a str,
    /// The extension.
    pub ext: &'a str,
    /// The `Content-Type`.
    pub content_type: &'a str,
    /// The encoded file.
    pub bytes: &'a [u8],
    /// `<job id>/<index>`, the same for every attempt.
    pub id: &'a str,
}

/// A stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// Its key.
    pub key: String,
    /// `s3://bucket/key`.
    pub path: String,
    /// Its HTTP(S) URL at the endpoint (unsigned).
    pub url: String,
}

/// A client of one S3-compatible endpoint. Cheap to share between workers (the connection pool is shared).
#[derive(Debug)]
pub struct ObjectStore {
    agent: ureq::Agent,
    endpoint: url::Url,
    config: S3Config,
    credentials: Option<Credentials>,
    staging_dir: PathBuf,
    /// Buckets a `HEAD` found to exist (asked once per bucket and run).
    known_buckets: parking_lot::Mutex<std::collections::HashSet<String>>,
}

impl ObjectStore {
    /// A store for `config`, keeping encoded images waiting for their upload in `staging_dir` (created, private).
    pub fn new(config: S3Config, staging_dir: PathBuf) -> Result<Self, S3Error> {
        let endpoint_text =
            config.endpoint.clone().unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", config.region));
        let endpoint: url::Url = endpoint_text
            .parse()
            .map_err(|e| S3Error::Config(format!("the S3 endpoint {endpoint_text:?} is not a URL: {e}")))?;
        if !matches!(endpoint.scheme(), "http" | "https") || endpoint.host_str().is_none() {
            return Err(S3Error::Config(format!(
                "the S3 endpoint {endpoint_text:?} must be an http(s) URL with a host"
            )));
        }
        crate::paths::ensure_private_dir(&staging_dir)
            .map_err(|source| S3Error::Staging { path: staging_dir.clone(), source })?;
        let credentials = config.credentials.as_ref().map(|(key, secret)| match &config.session_token {
            Some(token) => Credentials::new_with_token(key.clone(), secret.0.clone(), token.0.clone()),
            None => Credentials::new(key.clone(), secret.0.clone()),
        });
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(REQUEST_TIMEOUT))
            .user_agent(concat!("luna-daemon/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(Self { agent, endpoint, config, credentials, staging_dir, known_buckets: Default::default() })
    }

    /// The endpoint, for logs.
    pub fn endpoint(&self) -> &str {
        self.endpoint.as_str()
    }

    fn bucket(&self, root: &ObjectRoot) -> Result<Bucket, S3Error> {
        let style = if self.config.path_style { UrlStyle::Path } else { UrlStyle::VirtualHost };
        Bucket::new(self.endpoint.clone(), style, root.bucket.clone(), self.config.region.clone())
            .map_err(|e| S3Error::Config(format!("bucket {:?} at {}: {e}", root.bucket, self.endpoint)))
    }

    /// Uploads `upload.bytes` as a new object `<stem>.<ext>` in `sub_path` below the root, never replacing an
    /// existing object: a taken name gets the next counter suffix. `upload.id` names this upload (the same
    /// across retries and restarts), so an object our own earlier attempt stored is recognised, not duplicated.
    pub fn put_new(&self, root: &ObjectRoot, upload: &Upload<'_>) -> Result<StoredObject, S3Error> {
        let Upload { sub_path, stem, ext, content_type, bytes, id: upload_id } = *upload;
        let bucket = self.bucket(root)?;
        self.check_bucket(&bucket, root)?;
        for counter in 0..=MAX_COUNTER {
            let name = match counter {
                0 => format!("{stem}.{ext}"),
                n => format!("{stem}_{n:05}.{ext}"),
            };
            let key = root.key(sub_path, &name);
            crate::fault::hold("s3.before_put");
            let mut put = bucket.put_object(self.credentials.as_ref(), &key);
            put.headers_mut().insert("if-none-match", "*");
            put.headers_mut().insert(UPLOAD_HEADER, upload_id.to_owned());
            let url = put.sign(SIGNATURE_TTL);
            let stored = || StoredObject {
                path: root.path_of(&key),
                url: bucket.object_url(&key).to_string(),
                key: key.clone(),
            };
            let response = self
                .agent
                .put(url.as_str())
                .header("if-none-match", "*")
                .header(UPLOAD_HEADER, upload_id)
                .header("content-type", content_type)
                .send(bytes)
                .map_err(|e| self.unreachable(root, &key, e))?;
            match response.status().as_u16() {
                200 => {
                    crate::fault::hold("s3.after_put");
                    return Ok(stored());
                }
                // Taken: by another object, or by our own earlier attempt (stored, then the answer was lost).
                412 => {
                    if self.is_our_upload(&bucket, root, &key, upload_id)? {
                        tracing::info!(%key, upload_id, "object already stored by an earlier attempt of this upload");
                        return Ok(stored());
                    }
                }
                status => return Err(status_error("uploading", root, &key, status, response)),
            }
        }
        Err(S3Error::NamesExhausted(root.path_of(&root.key(sub_path, &format!("{stem}.{ext}")))))
    }

    /// Makes a missing bucket a clear error (some servers would create it on the first `PUT`, AWS answers
    /// `NoSuchBucket` anyway). Only a `404` counts: a `PUT`-only policy may forbid `HEAD` on the bucket (`403`),
    /// and then the upload itself tells.
    fn check_bucket(&self, bucket: &Bucket, root: &ObjectRoot) -> Result<(), S3Error> {
        if self.known_buckets.lock().contains(&root.bucket) {
            return Ok(());
        }
        let url = bucket.head_bucket(self.credentials.as_ref()).sign(SIGNATURE_TTL);
        let what = format!("{S3_SCHEME}{}", root.bucket);
        let response = self.agent.head(url.as_str()).call().map_err(|e| S3Error::Unreachable {
            endpoint: self.endpoint.to_string(),
            object: what.clone(),
            reason: e.to_string(),
        })?;
        match response.status().as_u16() {
            404 => Err(S3Error::Status {
                what: "the bucket",
                object: what,
                status: 404,
                code: Some("NoSuchBucket".to_owned()),
                hint: format!(
                    "the bucket {:?} does not exist at {}; create it (the image is kept and retried)",
                    root.bucket, self.endpoint
                ),
            }),
            200 => {
                self.known_buckets.lock().insert(root.bucket.clone());
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Whether the object at `key` carries our upload id.
    fn is_our_upload(&self, bucket: &Bucket, root: &ObjectRoot, key: &str, upload_id: &str) -> Result<bool, S3Error> {
        let url = bucket.head_object(self.credentials.as_ref(), key).sign(SIGNATURE_TTL);
        let response = self.agent.head(url.as_str()).call().map_err(|e| self.unreachable(root, key, e))?;
        match response.status().as_u16() {
            200 => Ok(response.headers().get(UPLOAD_HEADER).and_then(|v| v.to_str().ok()) == Some(upload_id)),
            // Taken a moment ago, gone now (deleted): not ours; the next name is tried.
            404 => Ok(false),
            status => Err(status_error("reading", root, key, status, response)),
        }
    }

    fn unreachable(&self, root: &ObjectRoot, key: &str, e: ureq::Error) -> S3Error {
        S3Error::Unreachable { endpoint: self.endpoint.to_string(), object: root.path_of(key), reason: e.to_string() }
    }

    /// `HEAD` on the root's bucket (what `doctor` asks first): the HTTP status, or why the endpoint did not
    /// answer. 200: reachable, credentials accepted, bucket there; 404: no such bucket; 401/403: credentials
    /// refused (or a policy that forbids `HEAD` on the bucket).
    pub fn head_bucket_status(&self, root: &ObjectRoot) -> Result<u16, S3Error> {
        let bucket = self.bucket(root)?;
        let url = bucket.head_bucket(self.credentials.as_ref()).sign(SIGNATURE_TTL);
        let response = self.agent.head(url.as_str()).call().map_err(|e| S3Error::Unreachable {
            endpoint: self.endpoint.to_string(),
            object: format!("{S3_SCHEME}{}", root.bucket),
            reason: e.to_string(),
        })?;
        Ok(response.status().as_u16())
    }

    /// A conditional create (`PUT` with `If-None-Match: *`) of `body` at `key`, as every upload does: the HTTP
    /// status (200 created, 412 the key exists) and, for any other, the endpoint's error code if it sent one.
    pub fn put_if_absent(&self, root: &ObjectRoot, key: &str, body: &[u8]) -> Result<(u16, Option<String>), S3Error> {
        let bucket = self.bucket(root)?;
        let mut put = bucket.put_object(self.credentials.as_ref(), key);
        put.headers_mut().insert("if-none-match", "*");
        let url = put.sign(SIGNATURE_TTL);
        let mut response = self
            .agent
            .put(url.as_str())
            .header("if-none-match", "*")
            .send(body)
            .map_err(|e| self.unreachable(root, key, e))?;
        let status = response.status().as_u16();
        let code = match status {
            200 | 412 => None,
            _ => xml_field(
                &response.body_mut().with_config().limit(64 * 1024).read_to_string().unwrap_or_default(),
                "Code",
            ),
        };
        Ok((status, code))
    }

    /// Deletes the object at `key` (`doctor`'s probe object); the HTTP status.
    pub fn delete(&self, root: &ObjectRoot, key: &str) -> Result<u16, S3Error> {
        let bucket = self.bucket(root)?;
        let url = bucket.delete_object(self.credentials.as_ref(), key).sign(SIGNATURE_TTL);
        let response = self.agent.delete(url.as_str()).call().map_err(|e| self.unreachable(root, key, e))?;
        Ok(response.status().as_u16())
    }

    /// Where the staged bytes of image `index` of `job_id` are kept until its upload succeeds.
    pub fn staging_path(&self, job_id: &str, index: usize) -> PathBuf {
        self.staging_dir.join(format!("{job_id}-{index}{STAGED_SUFFIX}"))
    }

    /// Removes staging files that no pending upload needs (`keep` says which ones are needed): those of jobs
    /// cancelled, failed or forgotten while the daemon was down.
    pub fn sweep_staging(&self, keep: impl Fn(&str, usize) -> bool) {
        let Ok(entries) = std::fs::read_dir(&self.staging_dir) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let needed = name
                .strip_suffix(STAGED_SUFFIX)
                .and_then(|n| n.rsplit_once('-'))
                .and_then(|(job, index)| index.parse().ok().map(|i| keep(job, i)))
                .unwrap_or(false);
            if !needed {
                tracing::debug!("removing staging file {name} that no pending upload needs");
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

fn status_error(
    what: &'static str,
    root: &ObjectRoot,
    key: &str,
    status: u16,
    mut response: ureq::http::Response<ureq::Body>,
) -> S3Error {
    let body = response.body_mut().with_config().limit(64 * 1024).read_to_string().unwrap_or_default();
    let code = xml_field(&body, "Code");
    let message = xml_field(&body, "Message");
    let hint = match (status, code.as_deref()) {
        (404, Some("NoSuchBucket")) | (404, None) if what == "uploading" => {
            format!("the bucket {:?} does not exist at this endpoint; create it (the image is kept)", root.bucket)
        }
        (403, _) | (401, _) => "the endpoint refused the credentials (check AWS_ACCESS_KEY_ID / \
                                AWS_SECRET_ACCESS_KEY or s3_access_key_id / s3_secret_access_key, and the region; \
                                the image is kept)"
            .to_owned(),
        _ => message.unwrap_or_else(|| body.chars().take(200).collect()),
    };
    S3Error::Status { what, object: root.path_of(key), status, code, hint }
}

/// The text of the first `<name>...</name>` element of an S3 error document (no XML parser needed for it).
fn xml_field(body: &str, name: &str) -> Option<String> {
    let start = body.find(&format!("<{name}>"))? + name.len() + 2;
    let end = body[start..].find(&format!("</{name}>"))? + start;
    Some(body[start..end].to_owned())
}

/// The suffix of staging files.
const STAGED_SUFFIX: &str = ".staged";
/// The first bytes of a staging file (and its format version).
const STAGED_MAGIC: &[u8; 8] = b"LUNASTG1";

/// An encoded image waiting for its upload, and what its status will say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Staged {
    /// The directory below the root (with `_discarded` for a discarded image).
    pub sub_path: String,
    /// It failed the quality gate.
    pub discarded: bool,
    /// Gate scores, when a gate ran.
    pub scores: Option<GateScores>,
    /// Notes for the user.
    pub notes: Vec<String>,
    /// The encoded file.
    #[serde(skip)]
    pub bytes: Vec<u8>,
}

impl Staged {
    /// Writes the staging file durably (temp file, fsync, rename, directory fsync), replacing an older one.
    pub fn store(&self, path: &Path) -> Result<(), S3Error> {
        let err = |source| S3Error::Staging { path: path.to_path_buf(), source };
        crate::fault::fail("s3.stage").map_err(err)?;
        let header = serde_json::to_vec(self).map_err(|e| err(io::Error::other(e)))?;
        let temp = path.with_extension("tmp");
        let mut file = std::fs::File::create(&temp).map_err(err)?;
        file.write_all(STAGED_MAGIC).map_err(err)?;
        file.write_all(&(header.len() as u32).to_le_bytes()).map_err(err)?;
        file.write_all(&header).map_err(err)?;
        file.write_all(&self.bytes).map_err(err)?;
        file.sync_all().map_err(err)?;
        drop(file);
        std::fs::rename(&temp, path).map_err(err)?;
        if let Some(dir) = path.parent() {
            sync_dir(dir).map_err(err)?;
        }
        Ok(())
    }

    /// Reads a staging file; `None` if there is none (or it is not a complete one of ours).
    pub fn load(path: &Path) -> Result<Option<Self>, S3Error> {
        let mut file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(S3Error::Staging { path: path.to_path_buf(), source }),
        };
        let mut all = Vec::new();
        file.read_to_end(&mut all).map_err(|source| S3Error::Staging { path: path.to_path_buf(), source })?;
        let Some(rest) = all.strip_prefix(STAGED_MAGIC.as_slice()) else { return Ok(None) };
        let Some((len, rest)) = rest.split_first_chunk::<4>() else { return Ok(None) };
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return Ok(None);
        }
        let Ok(mut staged) = serde_json::from_slice::<Staged>(&rest[..len]) else { return Ok(None) };
        staged.bytes = rest[len..].to_vec();
        Ok(Some(staged))
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_roots_parse_and_bad_ones_are_refused_with_a_reason() {
        assert_eq!(ObjectRoot::parse("/out"), None);
        let root = ObjectRoot::parse("s3://my-bucket/renders/farm1/").unwrap().unwrap();
        assert_eq!(root, ObjectRoot { bucket: "my-bucket".into(), prefix: "renders/farm1".into() });
        assert_eq!(root.key("ORIG", "a.png"), "renders/farm1/ORIG/a.png");
        assert_eq!(root.path_of("k/a.png"), "s3://my-bucket/k/a.png");
        let bare = ObjectRoot::parse("s3://bkt").unwrap().unwrap();
        assert_eq!(bare.key("", "a.png"), "a.png");
        let err = ObjectRoot::parse("s3://Bad_Bucket/x").unwrap().unwrap_err();
        assert!(err.contains("is not a valid bucket name"), "{err}");
        let err = ObjectRoot::parse("s3://bucket/../etc").unwrap().unwrap_err();
        assert!(err.contains("the key prefix is refused"), "{err}");
        assert!(ObjectRoot::parse("s3://").unwrap().is_err());
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let config = S3Config {
            endpoint: None,
            region: "us-east-1".into(),
            credentials: Some(("AKID".into(), Secret("very-secret".into()))),
            session_token: None,
            path_style: false,
        };
        let text = format!("{config:?}");
        assert!(!text.contains("very-secret") && text.contains("AKID"), "{text}");
    }

    #[test]
    fn a_staged_image_round_trips_and_a_torn_one_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job-0.staged");
        assert_eq!(Staged::load(&path).unwrap(), None);
        let staged = Staged {
            sub_path: "_discarded/ORIG".into(),
            discarded: true,
            scores: Some(GateScores { variance: Some(0.1), edge_density: None }),
            notes: vec!["a note".into()],
            bytes: b"\x89PNG...".to_vec(),
        };
        staged.store(&path).unwrap();
        assert_eq!(Staged::load(&path).unwrap(), Some(staged));
        let full = std::fs::read(&path).unwrap();
        std::fs::write(&path, &full[..10]).unwrap();
        assert_eq!(Staged::load(&path).unwrap(), None);
    }

    #[test]
    fn error_documents_give_their_code() {
        let body = "<?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code><Message>gone</Message></Error>";
        assert_eq!(xml_field(body, "Code").as_deref(), Some("NoSuchBucket"));
        assert_eq!(xml_field(body, "Message").as_deref(), Some("gone"));
        assert_eq!(xml_field("", "Code"), None);
    }
}
