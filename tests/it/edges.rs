//! Issue 11's edge failures against a real daemon: temp files of a killed daemon (4), names too long (6), a
//! squatted socket (7), connection slots, half-sent frames and clients that never read their replies (8), a
//! spool and socket removed at logout (9), dead clients' segments (11). The temp files, long names, dead clients'
//! segments, connection slots, half-sent frames and unread replies run on every platform (on Windows the frame
//! timeout is the slots' watchdog: named pipes have no read or write timeouts); the rest are Unix-only
//! (`mod unix`).

use luna_daemon::client::{ImageRef, JobOptions, Pixels};
use luna_daemon::protocol::{Empty, ErrorCode, Request, Response};
use luna_daemon::shm::SegmentWriter;

use crate::support::{RawConn, TestDaemon, file_names, wait_until};

fn pixels() -> Vec<u8> {
    vec![9u8; 4 * 4 * 3]
}

fn image(pixels: &[u8]) -> ImageRef<'_> {
    ImageRef { width: 4, height: 4, channels: 3, pixels: Pixels::U8(pixels) }
}

/// A pid that is certainly dead: a child that has exited and been reaped (this test binary listing its tests,
/// which runs on every platform).
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--list", "--format", "terse"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

/// Failure 4: a killed daemon's temp files go when it is restarted; another live writer's stay.
#[test]
fn a_restarted_daemon_removes_the_temp_files_of_the_killed_one_but_not_a_live_writers() {
    let mut daemon = TestDaemon::start();
    let out = daemon.output.join("folder");
    let mut client = daemon.client();
    let px = pixels();
    let job = client.submit(&JobOptions::new(&out), &[image(&px)]).unwrap();
    client.wait(&job.job_id, |_| {}).unwrap();
    let killed_pid = daemon.pid();
    daemon.kill();
    // What the killed daemon was writing (its pid, a random instance), and what another live daemon writing
    // into the same folder holds locked right now.
    let leftover = out.join(format!(".luna-{killed_pid}-0badf00d-0123456789ab.tmp"));
    std::fs::write(&leftover, vec![0u8; 4096]).unwrap();
    let live = out.join(format!(".luna-{}-feedf00d-0123456789ab.tmp", dead_pid()));
    let writer = std::fs::File::create(&live).unwrap();
    writer.lock().unwrap();
    daemon.restart();
    // The start-up sweep runs before the daemon serves, and restart() waited for it to serve.
    assert!(!leftover.exists(), "the killed daemon's temp file is still there: {:?}", file_names(&out));
    assert!(live.exists(), "a live writer's temp file was removed");
    drop(writer);
}

/// Failure 6: names longer than a file system allows are refused at submit, saying why; nothing is queued.
#[test]
fn names_too_long_for_the_file_system_are_refused_at_submit() {
    let daemon = TestDaemon::start();
    let mut client = daemon.client();
    let px = pixels();
    let mut options = JobOptions::new(&daemon.output);
    options.affix = "a".repeat(300);
    let err = client.submit(&options, &[image(&px)]).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidJob), "{err}");
    assert!(err.to_string().contains("too long (300 bytes)"), "{err}");
    // 252 bytes fit alone but not with `_NNNNN.png`.
    let mut options = JobOptions::new(&daemon.output);
    options.filename = "f".repeat(252);
    let err = client.submit(&options, &[image(&px)]).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidJob), "{err}");
    assert!(err.to_string().contains("at most 245 bytes"), "{err}");
    assert!(file_names(&daemon.output).is_empty());
}

/// Failure 11: the segment of a client killed with SIGKILL (state 0, its creator dead) is reclaimed at the
/// next janitor pass, not after the 600 s grace period.
#[test]
fn a_killed_clients_segment_is_reclaimed_without_waiting_for_the_grace_period() {
    let daemon = TestDaemon::start_with(&["--janitor-interval", "1"]);
    // What a killed client leaves: its segment as it was (client-owned, never detached: SIGKILL runs no
    // destructor), with its dead pid in the header, and no handle or mapping open on it (the system closed
    // them). Made as a copy of a real segment, so no handle of this test process stays open on it either
    // (Wine keeps a deleted file's name while one is).
    let path = daemon.spool.join("killed");
    let mut bytes = {
        let segment = SegmentWriter::create(&daemon.spool, "template", 4096).unwrap();
        std::fs::read(segment.path()).unwrap()
    };
    const PID_OFFSET: usize = 16; // docs/PROTOCOL.md §10.4
    bytes[PID_OFFSET..PID_OFFSET + 4].copy_from_slice(&dead_pid().to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    // A live client's idle segment next to it stays.
    let live = SegmentWriter::create(&daemon.spool, "alive", 4096).unwrap();
    wait_until("the killed client's segment is reclaimed", || !path.exists());
    assert!(daemon.spool.join(live.name()).exists());
}

/// Failure 8: when every slot is held by idle, authenticated connections, a new client still gets in: the
/// connection idle longest is closed to make room; a connection mid-frame is never the one closed.
#[test]
fn idle_connections_make_room_for_a_real_client() {
    let daemon = TestDaemon::start_with(&["--max-connections", "2"]);
    let mut oldest = RawConn::handshaken(&daemon.socket);
    let mut newer = RawConn::handshaken(&daemon.socket);
    let mut client = daemon.client();
    client.stats().expect("the new client is served");
    assert!(oldest.is_closed(), "the connection idle longest made room");
    assert!(matches!(newer.request(&Request::Stats(Empty {})), Response::Stats(_)));
}

/// Failure 8: a frame that starts but never finishes (and a hello that never comes) cannot hold a connection:
/// the daemon closes it after the frame timeout.
#[test]
fn half_sent_frames_time_out() {
    let daemon = TestDaemon::start_with_env(&[], &[("LUNA_DAEMON_FRAME_TIMEOUT_MS", "300")]);
    let mut half = RawConn::handshaken(&daemon.socket);
    half.send_bytes(&[0, 0, 4, 0, 0x81]); // announces 1024 bytes, sends one
    assert!(half.is_closed_or_reset(), "a half-sent frame is cut off");
    let mut silent = RawConn::connect(&daemon.socket);
    assert!(silent.is_closed_or_reset(), "a connection that never says hello is cut off");
    // Between requests an authenticated connection may idle (the node keeps one open between prompts).
    let mut idle = RawConn::handshaken(&daemon.socket);
    let _ = daemon.client().stats().unwrap();
    assert!(matches!(idle.request(&Request::Stats(Empty {})), Response::Stats(_)));
}

/// Failure 8 (#10's follow-up): a client that sends requests but never reads the replies cannot park its
/// connection's thread in a reply write: once the replies fill the socket (the pipe's buffer on Windows) and the
/// daemon stops reading, the daemon cuts the connection after the frame timeout (Unix: the send timeout;
/// Windows: the slots' watchdog, since named pipes have no write timeouts), which fails the client's blocked
/// write. Without that bound both sides would wait for each other forever.
#[test]
fn a_client_that_never_reads_its_replies_is_cut_off() {
    let daemon = TestDaemon::start_with_env(&[], &[("LUNA_DAEMON_FRAME_TIMEOUT_MS", "300")]);
    let mut deaf = RawConn::handshaken(&daemon.socket).stream;
    let (done, ended) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let body = luna_daemon::protocol::encode_message(&Request::Stats(Empty {})).unwrap();
        let mut sent = 0u64;
        let error = loop {
            match luna_daemon::protocol::write_frame(&mut deaf, &body) {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
        };
        let _ = done.send((sent, error));
    });
    // A bound on the wait, not a synchronisation: the write fails as soon as the daemon hangs up.
    let (sent, error) =
        ended.recv_timeout(std::time::Duration::from_secs(60)).expect("the daemon cut off the client that never reads");
    assert!(sent > 0, "requests were sent and answered before the replies backed up ({error})");
    // The daemon itself is fine and serves other clients.
    assert!(matches!(RawConn::handshaken(&daemon.socket).request(&Request::Stats(Empty {})), Response::Stats(_)));
}

/// Unix-only, each for its reason:
/// - a removed socket: a named pipe has no file to remove (and logout clean-up is systemd's `RemoveIPC`);
/// - socket directory modes and a squatter's non-private spool: Unix file modes; on Windows the pipe's DACL and
///   the client-SID check stand in their place;
/// - a symlink swapped in: creating symlinks on Windows needs a privilege ordinary users lack.
#[cfg(unix)]
mod unix {
    use interprocess::local_socket::{ListenerOptions, Stream, prelude::*};
    use luna_daemon::client::{Client, ClientError, JobOptions};
    use luna_daemon::ipc::connect_name;
    use luna_daemon::protocol::{self, ImageState, Response, Welcome};
    use luna_daemon::shm::HEADER_LEN;

    use super::{image, pixels};
    use crate::support::{TestDaemon, file_names, wait_until};

    /// Failure 9: logout clean-up (systemd `RemoveIPC`) removes the spool directory and the socket while the
    /// daemon runs; it notices, creates both again, and new clients are served by the same daemon.
    #[test]
    fn a_removed_socket_and_spool_directory_are_created_again() {
        let daemon = TestDaemon::start();
        let before = daemon.client().welcome().instance_id.clone();
        std::fs::remove_dir_all(&daemon.spool).unwrap();
        std::fs::remove_dir_all(daemon.socket.parent().unwrap()).unwrap();
        wait_until("the socket is back", || Client::connect(&daemon.socket, "after-logout").is_ok());
        let mut client = daemon.client();
        assert_eq!(client.welcome().instance_id, before, "the same daemon, not a replacement");
        let px = pixels();
        let job = client.submit(&JobOptions::new(&daemon.output), &[image(&px)]).unwrap();
        let status = client.wait(&job.job_id, |_| {}).unwrap();
        assert_eq!(status.images[0].state, ImageState::Written);
    }

    /// Failure 7: a socket directory other users can write to is not trusted.
    #[test]
    fn a_socket_directory_open_to_other_users_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let daemon = TestDaemon::start();
        let dir = daemon.socket.parent().unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = Client::connect(&daemon.socket, "wary").unwrap_err();
        assert!(matches!(err, ClientError::Untrusted { .. }), "{err}");
        assert!(err.to_string().contains("the socket directory") && err.to_string().contains("mode 0777"), "{err}");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        Client::connect(&daemon.socket, "wary").expect("trusted again once private");
    }

    /// Failure 7: a squatter that answers the handshake but announces a spool directory that is not ours and
    /// private is refused before a single pixel is written.
    #[test]
    fn a_server_announcing_a_spool_that_is_not_private_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        // The squatter owns a private directory (as `<tmp>/luna-daemon-<uid>` created first would look to it).
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let socket = tmp.path().join("squat.sock");
        let listener = ListenerOptions::new().name(connect_name(&socket).unwrap()).create_sync().unwrap();
        let server = std::thread::spawn(move || {
            let mut stream: Stream = listener.accept().unwrap();
            let _hello = protocol::read_frame(&mut stream).unwrap();
            let welcome = Response::Welcome(Welcome {
                version: protocol::PROTOCOL_VERSION,
                daemon_version: "squatter".to_owned(),
                spool_dir: "/tmp".to_owned(),
                max_frame_len: protocol::MAX_FRAME_LEN,
                segment_header_len: HEADER_LEN,
                instance_id: String::new(),
                features: Vec::new(),
            });
            protocol::write_frame(&mut stream, &protocol::encode_message(&welcome).unwrap()).unwrap();
        });
        let err = Client::connect(&socket, "wary").unwrap_err();
        assert!(matches!(err, ClientError::Untrusted { .. }), "{err}");
        assert!(err.to_string().contains("the announced spool directory /tmp"), "{err}");
        server.join().unwrap();
    }

    /// Failure 5: the output directory is swapped for a symlink to another place while the daemon is held between
    /// checking the directory and creating the temp file, and again between creating it and the rename. Nothing
    /// lands outside; both files are in the directories that were checked.
    #[test]
    fn a_directory_swapped_for_a_symlink_during_a_save_cannot_redirect_it() {
        let daemon = TestDaemon::start();
        let hooks = daemon.hooks();
        let outside = tempfile::tempdir().unwrap();
        let sub = daemon.output.join("sub");
        let swap = |moved: &str| {
            std::fs::rename(&sub, daemon.output.join(moved)).unwrap();
            std::os::unix::fs::symlink(outside.path(), &sub).unwrap();
        };
        let mut client = daemon.client();
        let px = pixels();
        let mut options = JobOptions::new(&daemon.output);
        options.save_path = "sub".to_owned();
        for (point, moved) in
            [("output.before_create", "moved-before-create"), ("output.before_rename", "moved-before-rename")]
        {
            if sub.is_symlink() {
                std::fs::remove_file(&sub).unwrap();
            }
            hooks.hold(point);
            let job = client.submit(&options, &[image(&px)]).unwrap();
            hooks.wait_reached(point, 1);
            swap(moved);
            hooks.release(point);
            let status = client.wait(&job.job_id, |_| {}).unwrap();
            assert_eq!(status.images[0].state, ImageState::Written, "{point}: {status:?}");
            assert_eq!(file_names(&daemon.output.join(moved)), ["luna.png"], "{point}");
        }
        assert_eq!(file_names(outside.path()), Vec::<String>::new(), "nothing lands outside the output directory");
    }
}
