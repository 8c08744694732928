"""Issue 11.7: the client trusts a daemon only when the socket's directory, the server's user id and the announced
spool directory are this user's (``luna_multi_saver/trust.py``); otherwise it sends nothing and the node saves
locally.

The tests marked ``root`` squat for real: a directory or a listening server owned by another user (uid 65534,
"nobody"), which only root can arrange. CI runs as root, so they run there; elsewhere they are skipped with that
reason. The other tests need no other user (a private mode, a symlink, and the refusal path of the peer check with
the kernel's answer replaced).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from helpers import FakeDaemon, files_under, noise, run_node
from luna_multi_saver import client, trust

OTHER_UID = 65534
needs_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="needs root to give a file to another user (uid 65534); CI runs as root",
)
posix_only = pytest.mark.skipif(not trust.applies(), reason="the checks are POSIX-only (Windows: pipe ACLs)")
pytestmark = posix_only


def _requests_but_hello(d: FakeDaemon) -> list[dict]:
    return [r for r in d.requests if r.get("type") != "hello"]


# -- the socket's directory ---------------------------------------------------------------------------------------


@needs_root
@pytest.mark.root
def test_a_squatted_socket_directory_is_refused_before_connecting(fake):
    # Another user created the directory first and listens in it (issue 11.7: /tmp/luna-daemon-<uid>).
    d = fake()
    os.chown(d.dir, OTHER_UID, OTHER_UID)
    with pytest.raises(client.UntrustedDaemon, match=f"belongs to user id {OTHER_UID}, not to you \\(0\\)"):
        client.Client.connect(d.socket)
    assert d.requests == [], "not even the hello was sent"


def test_a_socket_directory_others_may_write_is_refused(fake):
    d = fake()
    os.chmod(d.dir, 0o770)
    with pytest.raises(client.UntrustedDaemon, match="has mode 0770: group or others may use it"):
        client.Client.connect(d.socket)
    assert d.requests == []


def test_a_symlinked_socket_directory_is_refused(fake, tmp_path):
    d = fake()
    link = tmp_path / "link"
    link.symlink_to(d.dir)
    with pytest.raises(client.UntrustedDaemon, match="is a symbolic link"):
        client.Client.connect(str(link / "fake.sock"))
    assert d.requests == []


def test_a_loose_directory_without_a_socket_is_only_unreachable(tmp_path):
    # PROTOCOL §3.1 rule 1: with no socket there is nothing to trust yet (a daemon started there refuses the
    # directory itself).
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o777)
    loose.chmod(0o777)
    with pytest.raises(client.DaemonUnreachable):
        client.Client.connect(str(loose / "luna.sock"))


def test_a_relative_spool_directory_is_refused(fake):
    d = fake()
    d.welcome = lambda: {**FakeDaemon.welcome(d), "spool_dir": "spool"}
    with pytest.raises(client.UntrustedDaemon, match="spool directory 'spool', which is not an absolute path"):
        client.Client.connect(d.socket)


def test_a_missing_socket_directory_is_unreachable_not_untrusted(tmp_path):
    with pytest.raises(client.DaemonUnreachable):
        client.Client.connect(str(tmp_path / "nothing" / "luna.sock"))


# -- the server's user id -----------------------------------------------------------------------------------------


def test_the_kernel_reports_the_servers_user_id(fake):
    d = fake()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(d.socket)
        uid = trust.peer_uid(conn)
    finally:
        conn.close()
    if sys.platform.startswith("linux"):
        assert uid == os.geteuid()
    else:
        assert uid is None  # no SO_PEERCRED in Python here: the directory checks stand alone


def test_a_server_of_another_user_is_refused_without_root(fake, monkeypatch):
    # The refusal path, with the kernel's answer replaced (the root test below has a real server of another user).
    d = fake()
    monkeypatch.setattr(trust, "peer_uid", lambda _conn: OTHER_UID)
    with pytest.raises(client.UntrustedDaemon, match=f"runs as user id {OTHER_UID}, not as you"):
        client.Client.connect(d.socket)
    assert d.requests == [], "nothing is sent to a server of another user"


@needs_root
@pytest.mark.root
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_PEERCRED is Linux's")
def test_a_real_server_of_another_user_is_refused():
    # Our own private directory, but the process listening in it runs as uid 65534: the socket is bound here (as
    # root, in a 0700 directory) and handed to a child that has dropped to 65534 when it calls listen(); the kernel
    # gives clients the listener's credentials of that moment. The child then blocks in `cat` until stdin closes.
    root = Path(tempfile.mkdtemp(prefix="luna-squat-"))
    path = str(root / "luna.sock")
    bound = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound.bind(path)
    child = subprocess.Popen(
        [shutil.which("cat") or "/bin/cat"],
        stdin=subprocess.PIPE,
        pass_fds=(bound.fileno(),),
        user=OTHER_UID,
        group=OTHER_UID,
        extra_groups=[],
        # After the uid change, before exec; Popen returns once exec succeeded. Only listen() runs in the fork.
        preexec_fn=bound.listen,  # noqa: PLW1509
    )
    try:
        with pytest.raises(client.UntrustedDaemon, match=f"runs as user id {OTHER_UID}, not as you \\(0\\)"):
            client.Client.connect(path)
    finally:
        child.stdin.close()
        child.wait()
        bound.close()
        shutil.rmtree(root, ignore_errors=True)


# -- the announced spool directory --------------------------------------------------------------------------------


def test_a_spool_directory_others_may_use_is_refused_and_nothing_is_created(fake):
    d = fake()
    os.chmod(d.spool, 0o777)
    with pytest.raises(client.UntrustedDaemon, match=r"spool directory .* has mode 0777"):
        client.Client.connect(d.socket)
    assert list(d.spool.iterdir()) == []


def test_a_symlinked_spool_directory_is_refused(fake, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    d = fake()
    link = d.dir / "spool-link"
    link.symlink_to(elsewhere)
    d.welcome = lambda: {**FakeDaemon.welcome(d), "spool_dir": str(link)}
    with pytest.raises(client.UntrustedDaemon, match=r"spool directory .* is a symbolic link"):
        client.Client.connect(d.socket)
    assert list(elsewhere.iterdir()) == []


@needs_root
@pytest.mark.root
def test_a_spool_directory_of_another_user_is_refused(fake):
    d = fake()
    os.chown(d.spool, OTHER_UID, OTHER_UID)
    with pytest.raises(client.UntrustedDaemon, match=rf"spool directory .* belongs to user id {OTHER_UID}"):
        client.Client.connect(d.socket)
    assert list(d.spool.iterdir()) == []


# -- the node falls back ------------------------------------------------------------------------------------------


def test_the_node_saves_locally_when_the_daemon_is_not_trusted(comfy_dirs, fake, monkeypatch, capsys):
    d = fake(on_submit=lambda *_: pytest.fail("nothing may be submitted to an untrusted daemon"))
    os.chmod(d.spool, 0o777)
    monkeypatch.setenv("LUNA_DAEMON_SOCKET", d.socket)
    monkeypatch.setenv("LUNA_DAEMON_AUTOSTART", "1")  # an untrusted daemon is not "unreachable": no auto-start
    saver, _ = run_node(daemon_save=True, image_1=noise(), format_1="png", autostart_daemon=True)
    out = capsys.readouterr().out
    assert "Daemon save selected but daemon not available" in out and "has mode 0777" in out
    assert saver.last_job is None and getattr(saver, "last_started", None) is None
    assert files_under(comfy_dirs.output) == ["ORIG/img_ORIG.png"]
    assert _requests_but_hello(d) == []
