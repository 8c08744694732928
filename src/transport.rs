//! The local-socket transport both ends share: how a socket path becomes an `interprocess` name (a pipe name
//! on Windows). A leaf: the daemon's `ipc` and the public `client` both depend on it, neither on the other.

use std::io;
use std::path::Path;

use interprocess::local_socket::Name;

/// The interprocess name for a socket path (a pipe name on Windows).
pub fn connect_name(path: &Path) -> io::Result<Name<'_>> {
    #[cfg(windows)]
    {
        use interprocess::local_socket::{GenericNamespaced, ToNsName};
        let name = path.to_string_lossy();
        let short = name.strip_prefix(r"\\.\pipe\").unwrap_or(&name).to_owned();
        short.to_ns_name::<GenericNamespaced>()
    }
    #[cfg(not(windows))]
    {
        use interprocess::local_socket::{GenericFilePath, ToFsName};
        path.to_fs_name::<GenericFilePath>()
    }
}
