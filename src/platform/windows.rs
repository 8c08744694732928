//! Windows: process handles for liveness, token user SIDs for identity, protected DACLs for owner-only access.
//! SIDs are compared in their string form (`S-1-5-21-...`), which is canonical for a SID.
#![allow(unsafe_code)]

use std::ffi::{CStr, OsStr, c_char};
use std::io;
use std::os::windows::ffi::OsStrExt;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::path::Path;

use windows_sys::Win32::Foundation::{ERROR_SUCCESS, HANDLE, HLOCAL, LocalFree, WAIT_TIMEOUT};
use windows_sys::Win32::Security::Authorization::{
    ConvertSecurityDescriptorToStringSecurityDescriptorW, ConvertSidToStringSidW,
    ConvertStringSecurityDescriptorToSecurityDescriptorW, GetNamedSecurityInfoW, SDDL_REVISION_1, SE_FILE_OBJECT,
    SetNamedSecurityInfoW,
};
use windows_sys::Win32::Security::{
    ACL, DACL_SECURITY_INFORMATION, GetSecurityDescriptorDacl, GetTokenInformation, OWNER_SECURITY_INFORMATION,
    PROTECTED_DACL_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR, PSID, TOKEN_QUERY, TOKEN_USER, TokenUser,
};
use windows_sys::Win32::Storage::FileSystem::GetDiskFreeSpaceExW;
use windows_sys::Win32::System::IO::CancelIoEx;
use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleW, GetProcAddress};
use windows_sys::Win32::System::Pipes::DisconnectNamedPipe;
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, OpenProcess, OpenProcessToken, PROCESS_QUERY_LIMITED_INFORMATION, PROCESS_SYNCHRONIZE,
    WaitForSingleObject,
};

/// Windows has no numeric user id; identity is the SID ([`current_user_sid`]).
pub fn user_id() -> u32 {
    0
}

/// The Wine version if this process runs under Wine, else `None` (real Windows). Wine's ntdll exports
/// `wine_get_version`; Windows' never does. Only tests ask, to skip the few checks of behaviour Wine does not
/// emulate (each names what and why), so that on real Windows they all run.
pub fn wine_version() -> Option<String> {
    let ntdll = wide(OsStr::new("ntdll.dll"));
    // SAFETY: a NUL-terminated name; ntdll is loaded in every Windows process and its handle needs no freeing.
    let module = unsafe { GetModuleHandleW(ntdll.as_ptr()) };
    if module.is_null() {
        return None;
    }
    // SAFETY: a valid module handle and a NUL-terminated ASCII export name.
    let export = unsafe { GetProcAddress(module, c"wine_get_version".as_ptr().cast()) }?;
    // SAFETY: Wine declares it `const char *wine_get_version(void)` (x86-64 has one C calling convention).
    let get_version = unsafe {
        std::mem::transmute::<unsafe extern "system" fn() -> isize, unsafe extern "C" fn() -> *const c_char>(export)
    };
    // SAFETY: takes nothing and returns a pointer to a static NUL-terminated string (or null).
    let text = unsafe { get_version() };
    if text.is_null() {
        return Some(String::new());
    }
    // SAFETY: non-null, NUL-terminated and static, as above.
    Some(unsafe { CStr::from_ptr(text) }.to_string_lossy().into_owned())
}

/// Opens the process and asks whether it has exited (a handle to an exited process stays valid while anyone
/// holds one, so "can open" alone is not "alive"). Access denied means another user's (or a protected)
/// process, which cannot be our creator; invalid parameter means no such process.
pub(super) fn user_process_running(pid: u32) -> bool {
    // SAFETY: OpenProcess takes plain values; a null result is checked before use.
    let raw = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION | PROCESS_SYNCHRONIZE, 0, pid) };
    if raw.is_null() {
        return false;
    }
    // SAFETY: `raw` is a handle we just opened and own; OwnedHandle closes it once.
    let process = unsafe { OwnedHandle::from_raw_handle(raw) };
    // SAFETY: a valid process handle opened with SYNCHRONIZE; a zero timeout only polls.
    unsafe { WaitForSingleObject(process.as_raw_handle(), 0) == WAIT_TIMEOUT }
}

/// The user SID of the current process, as a string.
pub fn current_user_sid() -> io::Result<String> {
    // SAFETY: the pseudo-handle of the current process needs no closing and is always valid.
    token_user_sid(unsafe { GetCurrentProcess() })
}

/// The user SID of another process (a pipe client), as a string.
pub fn process_user_sid(pid: u32) -> io::Result<String> {
    // SAFETY: OpenProcess takes plain values; a null result is checked before use.
    let raw = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
    if raw.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a handle we just opened and own; OwnedHandle closes it once.
    let process = unsafe { OwnedHandle::from_raw_handle(raw) };
    token_user_sid(process.as_raw_handle())
}

/// Refuses a client whose user SID is not ours: the Windows twin of the Unix peer-uid check.
pub fn check_same_user(client_sid: &str, my_sid: &str) -> Result<(), String> {
    if client_sid.eq_ignore_ascii_case(my_sid) {
        Ok(())
    } else {
        Err(format!("peer runs as user {client_sid}; only user {my_sid} may use this daemon"))
    }
}

/// SDDL for an object only `sid` and SYSTEM may use, protected from inherited entries. `inherit` adds the
/// object- and container-inherit flags (for directories, so new files get the same two entries).
pub fn owner_only_sddl(sid: &str, inherit: bool) -> String {
    let flags = if inherit { "OICI" } else { "" };
    format!("D:P(A;{flags};FA;;;{sid})(A;{flags};FA;;;SY)")
}

/// `s` as the NUL-terminated UTF-16 string a security-descriptor API takes.
pub fn wide(s: &OsStr) -> Vec<u16> {
    s.encode_wide().chain(std::iter::once(0)).collect()
}

/// The owner's SID of a file or directory, as a string.
pub fn owner_sid_of(path: &Path) -> io::Result<String> {
    let path_w = wide(path.as_os_str());
    let mut owner: PSID = std::ptr::null_mut();
    let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: `path_w` is NUL-terminated and outlives the call; out-pointers are valid; on success `sd` is a
    // LocalAlloc'd descriptor that `owner` points into, freed by LocalFreeGuard after the SID is converted.
    let rc = unsafe {
        GetNamedSecurityInfoW(
            path_w.as_ptr(),
            SE_FILE_OBJECT,
            OWNER_SECURITY_INFORMATION,
            &mut owner,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut sd,
        )
    };
    if rc != ERROR_SUCCESS {
        return Err(io::Error::from_raw_os_error(rc as i32));
    }
    let _free = LocalFreeGuard(sd);
    sid_to_string(owner)
}

/// The DACL of a file or directory in SDDL (`D:P(A;...)...`), for checks and `doctor`.
pub fn dacl_sddl_of(path: &Path) -> io::Result<String> {
    let path_w = wide(path.as_os_str());
    let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: as in `owner_sid_of`; only the descriptor is requested.
    let rc = unsafe {
        GetNamedSecurityInfoW(
            path_w.as_ptr(),
            SE_FILE_OBJECT,
            DACL_SECURITY_INFORMATION,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut sd,
        )
    };
    if rc != ERROR_SUCCESS {
        return Err(io::Error::from_raw_os_error(rc as i32));
    }
    let _free = LocalFreeGuard(sd);
    let mut text: *mut u16 = std::ptr::null_mut();
    // SAFETY: `sd` is a valid descriptor; on success `text` is a LocalAlloc'd NUL-terminated string.
    let ok = unsafe {
        ConvertSecurityDescriptorToStringSecurityDescriptorW(
            sd,
            SDDL_REVISION_1,
            DACL_SECURITY_INFORMATION,
            &mut text,
            std::ptr::null_mut(),
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    let _free_text = LocalFreeGuard(text.cast());
    // SAFETY: `text` is NUL-terminated (checked by the API's contract) and freed only after this copy.
    Ok(unsafe { wide_to_string(text) })
}

/// Whether an SDDL DACL admits exactly `sid` and SYSTEM and is protected from inheritance (how `doctor` and the
/// tests judge a directory or pipe, whatever order or spelling of rights the system reports).
pub fn is_owner_only_dacl(sddl: &str, sid: &str) -> bool {
    let Some(rest) = sddl.strip_prefix("D:") else { return false };
    let (flags, aces) = rest.split_at(rest.find('(').unwrap_or(rest.len()));
    if !flags.contains('P') {
        return false;
    }
    let aces: Vec<&str> = aces.split(')').filter(|a| !a.is_empty()).collect();
    let trustee = |ace: &str| ace.rsplit(';').next().unwrap_or("").to_owned();
    aces.len() == 2
        && aces.iter().all(|a| a.starts_with("(A;"))
        && aces.iter().any(|a| trustee(a).eq_ignore_ascii_case(sid))
        && aces.iter().any(|a| matches!(trustee(a).as_str(), "SY" | "S-1-5-18"))
}

/// Replaces the DACL of `path` with the protected owner-only one ([`owner_only_sddl`] with inheritance):
/// inherited entries (Users, Authenticated Users from a parent) are dropped.
pub fn restrict_to_owner(path: &Path) -> io::Result<()> {
    let sid = current_user_sid()?;
    let sddl = wide(OsStr::new(&owner_only_sddl(&sid, true)));
    let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: `sddl` is NUL-terminated; on success `sd` is a LocalAlloc'd descriptor freed by the guard.
    let ok = unsafe {
        ConvertStringSecurityDescriptorToSecurityDescriptorW(
            sddl.as_ptr(),
            SDDL_REVISION_1,
            &mut sd,
            std::ptr::null_mut(),
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    let _free = LocalFreeGuard(sd);
    let mut present = 0;
    let mut defaulted = 0;
    let mut dacl: *mut ACL = std::ptr::null_mut();
    // SAFETY: `sd` is valid; `dacl` will point into it, which lives until `_free` drops after the set call.
    if unsafe { GetSecurityDescriptorDacl(sd, &mut present, &mut dacl, &mut defaulted) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let path_w = wide(path.as_os_str());
    // SAFETY: `path_w` is NUL-terminated; `dacl` is a valid ACL inside `sd`; owner and group are left alone.
    let rc = unsafe {
        SetNamedSecurityInfoW(
            path_w.as_ptr(),
            SE_FILE_OBJECT,
            DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            dacl,
            std::ptr::null(),
        )
    };
    if rc != ERROR_SUCCESS {
        return Err(io::Error::from_raw_os_error(rc as i32));
    }
    Ok(())
}

/// Ends a named-pipe connection from another thread (the daemon's side of a connection it evicts, or whose
/// frame did not arrive in time; named pipes have no read timeouts): disconnects the client, so every later
/// read or write on the pipe fails (interprocess reports end-of-stream), then cancels the read or write the
/// connection's thread may be blocked in right now. `pipe` is a duplicate of the connection's handle.
pub fn disconnect_pipe(pipe: &OwnedHandle) {
    // SAFETY: a valid handle of a server pipe instance, owned by the caller for the duration of both calls;
    // neither keeps it. Failures (already disconnected, nothing pending) leave nothing to do.
    unsafe {
        DisconnectNamedPipe(pipe.as_raw_handle());
        CancelIoEx(pipe.as_raw_handle(), std::ptr::null());
    }
}

/// Bytes free for the current user on the volume holding `path`.
pub fn free_space(path: &Path) -> io::Result<u64> {
    let path_w = wide(path.as_os_str());
    let mut free = 0u64;
    // SAFETY: `path_w` is NUL-terminated; the one out-pointer is valid; the others may be null.
    let ok = unsafe { GetDiskFreeSpaceExW(path_w.as_ptr(), &mut free, std::ptr::null_mut(), std::ptr::null_mut()) };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(free)
}

fn token_user_sid(process: HANDLE) -> io::Result<String> {
    let mut raw_token: HANDLE = std::ptr::null_mut();
    // SAFETY: `process` is a valid process handle for the duration of the call; the out-pointer is valid.
    if unsafe { OpenProcessToken(process, TOKEN_QUERY, &mut raw_token) } == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the token handle was just opened and is owned here.
    let token = unsafe { OwnedHandle::from_raw_handle(raw_token) };
    let mut len = 0u32;
    // SAFETY: a size query with a null buffer; it fails with ERROR_INSUFFICIENT_BUFFER and sets `len`.
    unsafe { GetTokenInformation(token.as_raw_handle(), TokenUser, std::ptr::null_mut(), 0, &mut len) };
    if len == 0 {
        return Err(io::Error::last_os_error());
    }
    // u64 elements keep the TOKEN_USER at the alignment it needs.
    let mut buf = vec![0u64; (len as usize).div_ceil(8)];
    // SAFETY: `buf` holds at least `len` writable bytes, suitably aligned for TOKEN_USER.
    let ok = unsafe { GetTokenInformation(token.as_raw_handle(), TokenUser, buf.as_mut_ptr().cast(), len, &mut len) };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on success the buffer starts with a TOKEN_USER whose SID points into the same buffer.
    let user = unsafe { &*buf.as_ptr().cast::<TOKEN_USER>() };
    sid_to_string(user.User.Sid)
}

fn sid_to_string(sid: PSID) -> io::Result<String> {
    let mut text: *mut u16 = std::ptr::null_mut();
    // SAFETY: `sid` is a valid SID owned by the caller's buffer; on success `text` is LocalAlloc'd.
    if unsafe { ConvertSidToStringSidW(sid, &mut text) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let _free = LocalFreeGuard(text.cast());
    // SAFETY: `text` is a NUL-terminated string from the API, freed only after this copy.
    Ok(unsafe { wide_to_string(text) })
}

/// # Safety
/// `p` must point to a NUL-terminated UTF-16 string.
unsafe fn wide_to_string(p: *const u16) -> String {
    let mut len = 0;
    // SAFETY: the caller promises a terminating NUL, so every read up to it is in bounds.
    while unsafe { *p.add(len) } != 0 {
        len += 1;
    }
    // SAFETY: `len` elements were just read from `p`.
    String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(p, len) })
}

/// Frees memory an API returned with LocalAlloc.
struct LocalFreeGuard(HLOCAL);

impl Drop for LocalFreeGuard {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from an API documented to allocate it with LocalAlloc; freed once.
            unsafe { LocalFree(self.0) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_process_has_our_user_sid() {
        let me = current_user_sid().unwrap();
        assert!(me.starts_with("S-1-"), "{me}");
        assert_eq!(process_user_sid(std::process::id()).unwrap(), me);
        assert!(check_same_user(&me, &me).is_ok());
    }

    #[test]
    fn wine_is_detected_where_the_test_runner_says_it_runs_us() {
        // scripts/windows/runner.sh sets LUNA_WINDOWS_RUNNER=wine; on real Windows nothing sets it.
        if std::env::var("LUNA_WINDOWS_RUNNER").as_deref() == Ok("wine") {
            let version = wine_version().expect("ntdll exports wine_get_version under Wine");
            assert!(version.starts_with(|c: char| c.is_ascii_digit()), "{version}");
        }
    }

    #[test]
    fn free_space_is_read() {
        assert!(free_space(&std::env::temp_dir()).unwrap() > 0);
    }

    #[test]
    fn a_client_of_another_user_is_refused_naming_both() {
        // Wine runs every process as one user, so a second identity cannot connect here; the comparison the
        // daemon applies to every client is tested with the SID of SYSTEM instead.
        let me = current_user_sid().unwrap();
        let err = check_same_user("S-1-5-18", &me).unwrap_err();
        assert_eq!(err, format!("peer runs as user S-1-5-18; only user {me} may use this daemon"));
    }

    #[test]
    fn owner_only_sddl_is_protected_and_names_only_the_owner_and_system() {
        assert_eq!(owner_only_sddl("S-1-5-21-1-2-3-1000", false), "D:P(A;;FA;;;S-1-5-21-1-2-3-1000)(A;;FA;;;SY)");
        assert!(owner_only_sddl("S-1-5-21-1", true).contains("(A;OICI;FA;;;SY)"));
        let sid = "S-1-5-21-1";
        assert!(is_owner_only_dacl(&owner_only_sddl(sid, true), sid));
        assert!(is_owner_only_dacl("D:PAI(A;OICI;FA;;;S-1-5-18)(A;OICI;0x1f01ff;;;S-1-5-21-1)", sid));
        assert!(!is_owner_only_dacl("D:(A;OICI;FA;;;S-1-5-21-1)(A;OICI;FA;;;SY)", sid), "not protected");
        assert!(!is_owner_only_dacl("D:P(A;;FA;;;S-1-5-21-1)(A;;FA;;;SY)(A;;FR;;;BU)", sid), "users may read");
        assert!(!is_owner_only_dacl("D:P(A;;FA;;;S-1-5-21-2)(A;;FA;;;SY)", sid), "another owner");
    }
}
