"""The Python client against a scripted fake daemon and the checked-in protocol fixtures: framing, the frame cap,
the handshake and version mismatch, the job layout in shared memory, and what happens to a segment when a submit
fails."""

from __future__ import annotations

import os
import socket
import struct
import threading
import zlib

import msgpack
import numpy as np
import pytest

from conftest import REPO
from helpers import FakeDaemon, error, noise, send
from luna_multi_saver import client, shm

FIXTURES = REPO / "tests" / "fixtures" / "protocol"


def accept(fake: FakeDaemon, conn: socket.socket, job: dict) -> bool:
    fake.take_ownership(job)
    images = sum(len(s["images"]) for s in job["slots"])
    send(conn, {"type": "accepted", "job_id": f"job{len(fake.requests)}", "images": images})
    return True


def job_options() -> client.JobOptions:
    return client.JobOptions(output_dir="/tmp/out", filename="x", timestamp_ms=1, utc_offset_s=0)


# -- frames -------------------------------------------------------------------------------------------------------


def test_frames_are_a_big_endian_length_then_named_msgpack():
    frame = client.encode_frame({"type": "stats"})
    assert frame[:4] == struct.pack(">I", len(frame) - 4)
    assert msgpack.unpackb(frame[4:]) == {"type": "stats"}


def test_an_oversized_request_is_refused_before_sending():
    with pytest.raises(client.ProtocolError, match="exceeds the 1048576-byte limit"):
        client.encode_frame({"type": "submit", "blob": "x" * (1 << 20)})


def test_an_oversized_reply_is_refused_before_reading_it(tmp_path):
    # A raw server answers the hello with a 4 GiB length prefix and nothing else, keeping the connection open:
    # a client that tried to read the body would hang instead of failing.
    path = str(tmp_path / "raw.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen()
    kept: list[socket.socket] = []

    def serve():
        conn, _ = server.accept()
        kept.append(conn)
        conn.recv(65536)
        conn.sendall(b"\xff\xff\xff\xff")

    threading.Thread(target=serve, daemon=True).start()
    with pytest.raises(client.ProtocolError, match="4294967295 bytes"):
        client.Client.connect(path)
    server.close()


def test_the_checked_in_protocol_fixtures_decode():
    if not FIXTURES.is_dir():
        pytest.skip(f"{FIXTURES} not found")
    files = sorted(FIXTURES.glob("*.msgpack"))
    assert files
    for path in files:
        message = client.decode_message(path.read_bytes())
        assert isinstance(message["type"], str), path.name
    hello = client.decode_message((FIXTURES / "hello.msgpack").read_bytes())
    assert (hello["protocol"], hello["version"]) == (client.PROTOCOL_NAME, client.PROTOCOL_VERSION)
    welcome = client.decode_message((FIXTURES / "welcome.msgpack").read_bytes())
    assert welcome["segment_header_len"] == shm.HEADER_LEN
    assert welcome["max_frame_len"] == client.MAX_FRAME_LEN


def test_the_submit_this_client_sends_uses_only_fields_of_the_fixture(fake):
    if not (FIXTURES / "submit.msgpack").is_file():
        pytest.skip("protocol fixtures not found")
    # Any field some submit fixture has (fields added later have fixtures of their own).
    fixture = client.decode_message((FIXTURES / "submit.msgpack").read_bytes())
    for path in FIXTURES.glob("submit_*.msgpack"):
        fixture = {**client.decode_message(path.read_bytes()), **fixture}  # submit.msgpack's slots kept
    d = fake(on_submit=accept)
    with client.Client.connect(d.socket) as c:
        c.submit(job_options(), [client.SlotImages(noise(), affix="A")], metadata={"prompt": None})
    sent = d.requests[-1]
    assert set(sent) <= set(fixture)
    assert set(sent["slots"][0]) <= set(fixture["slots"][0])
    assert set(sent["slots"][0]["images"][0]) <= set(fixture["slots"][0]["images"][0])


# -- handshake ----------------------------------------------------------------------------------------------------


def test_hello_names_protocol_version_client_and_pid(fake):
    d = fake()
    with client.Client.connect(d.socket, "my-tool/1.0") as c:
        assert c.welcome["spool_dir"] == str(d.spool)
    assert d.requests[0] == {
        "type": "hello",
        "protocol": "luna-daemon",
        "version": 1,
        "client": "my-tool/1.0",
        "pid": os.getpid(),
    }


def test_a_version_mismatch_reply_is_a_clear_error(fake):
    reply = error(3, "version_mismatch", "client speaks protocol version 1, this daemon speaks version 2")
    d = fake(on_hello=lambda _m: {**reply, "supported_versions": [2]})
    with pytest.raises(client.VersionMismatch) as e:
        client.Client.connect(d.socket)
    text = str(e.value)
    assert "protocol version mismatch" in text and "speaks luna-daemon protocol 1" in text and "speaks 2" in text
    assert e.value.supported_versions == [2]


def test_a_welcome_of_another_version_is_a_version_mismatch(fake):
    d = fake()
    d.on_hello = lambda _m: {**d.welcome(), "version": 2}
    with pytest.raises(client.VersionMismatch, match="speaks 2"):
        client.Client.connect(d.socket)


def test_no_daemon_is_daemon_unreachable(tmp_path):
    with pytest.raises(client.DaemonUnreachable, match="is it running"):
        client.Client.connect(str(tmp_path / "nobody.sock"))


def test_default_socket_follows_the_daemons_rules(monkeypatch, tmp_path):
    monkeypatch.delenv("LUNA_DAEMON_SOCKET", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert client.default_socket() == str(tmp_path / "luna-daemon" / "luna-daemon.sock")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("TMPDIR", "/var/tmp")
    assert client.default_socket() == f"/var/tmp/luna-daemon-{os.geteuid()}/luna-daemon.sock"
    monkeypatch.setenv("LUNA_DAEMON_SOCKET", "/x.sock")
    assert client.default_socket() == "/x.sock"


# -- the job in shared memory -------------------------------------------------------------------------------------


def test_one_job_one_segment_64_byte_aligned_float32_descriptors(fake):
    d = fake(on_submit=accept)
    a, b = noise(2, 5, 7), noise(1, 3, 3, channels=4, seed=2)  # odd sizes, so alignment padding is needed
    with client.Client.connect(d.socket) as c:
        accepted = c.submit(job_options(), [client.SlotImages(a, affix="A"), client.SlotImages(b, affix="B")])
        raw = (d.spool / accepted.segment).read_bytes()
    job = d.requests[-1]
    descriptors = [img for slot in job["slots"] for img in slot["images"]]
    assert len(descriptors) == 3 == accepted.images
    offsets = [desc["offset"] for desc in descriptors]
    assert offsets[0] == 64 and all(o % 64 == 0 for o in offsets)
    for desc, image in zip(descriptors, [a[0], a[1], b[0]], strict=True):
        h, w, ch = image.shape
        assert (desc["width"], desc["height"], desc["channels"], desc["dtype"]) == (w, h, ch, "f32")
        assert desc["row_stride"] == w * ch * 4 and desc["length"] == image.nbytes
        assert desc["segment"] == accepted.segment
        assert raw[desc["offset"] : desc["offset"] + desc["length"]] == image.astype("<f4").tobytes()
        assert "crc32" not in desc
    assert [s["affix"] for s in job["slots"]] == ["A", "B"]


def test_uint8_and_uint16_travel_as_they_are_and_checksums_match(fake):
    d = fake(on_submit=accept)
    u8 = (noise() * 255).astype(np.uint8)
    u16 = (noise() * 65535).astype(np.uint16)
    with client.Client.connect(d.socket) as c:
        c.checksum = True
        accepted = c.submit(job_options(), [client.SlotImages(u8), client.SlotImages(u16)])
        raw = (d.spool / accepted.segment).read_bytes()
    descs = [s["images"][0] for s in d.requests[-1]["slots"]]
    assert [x["dtype"] for x in descs] == ["u8", "u16"]
    for desc, image in zip(descs, [u8[0], u16[0]], strict=True):
        data = raw[desc["offset"] : desc["offset"] + desc["length"]]
        assert data == image.astype(image.dtype.newbyteorder("<")).tobytes()
        assert desc["crc32"] == zlib.crc32(data)


def test_small_metadata_is_inline_and_large_metadata_goes_into_the_segment(fake):
    d = fake(on_submit=accept)
    small = {"prompt": "{}", "extra_pnginfo": [], "generation_metadata": None, "generation_fields": []}
    large = {**small, "extra_pnginfo": [["workflow", "x" * 300_000]]}
    with client.Client.connect(d.socket) as c:
        c.submit(job_options(), [client.SlotImages(noise())], metadata=small)
        inline = d.requests[-1]
        daemon_releases(d)
        accepted = c.submit(job_options(), [client.SlotImages(noise())], metadata=large)
        blobbed = d.requests[-1]
        raw = (d.spool / accepted.segment).read_bytes()
    assert inline["metadata"] == small and "metadata_blob" not in inline
    blob = blobbed["metadata_blob"]
    assert "metadata" not in blobbed and blob["segment"] == accepted.segment and blob["offset"] % 64 == 0
    data = raw[blob["offset"] : blob["offset"] + blob["length"]]
    assert msgpack.unpackb(data) == large and blob["crc32"] == zlib.crc32(data)
    image = blobbed["slots"][0]["images"][0]
    assert blob["offset"] >= image["offset"] + image["length"], "the blob does not overlap the pixels"


def test_the_segment_has_room_for_the_pixels_and_the_blob_at_once_and_the_packer_buffer_is_reused(fake):
    # The metadata is packed before the segment is chosen, so a 1.5 MiB blob with a 36 KB image takes one segment
    # with room for both (the pixels are copied once), and the next job of that size reuses it.
    d = fake(on_submit=accept)
    image = noise()
    large = {"prompt": None, "extra_pnginfo": [["workflow", "w" * (3 << 19)]]}
    with client.Client.connect(d.socket) as c:
        first = c.submit(job_options(), [client.SlotImages(image)], metadata=large)
        assert len(c.pool) == 1, "one segment with room for both"
        daemon_releases(d)
        changed = {"prompt": None, "extra_pnginfo": [["workflow", "v" * (3 << 19)]]}
        second = c.submit(job_options(), [client.SlotImages(image)], metadata=changed)
        assert len(c.pool) == 1 and second.segment == first.segment
        raw = (d.spool / first.segment).read_bytes()
    job = d.requests[-1]
    desc, blob = job["slots"][0]["images"][0], job["metadata_blob"]
    assert desc["segment"] == blob["segment"] == first.segment
    assert raw[desc["offset"] : desc["offset"] + desc["length"]] == image[0].astype("<f4").tobytes()
    assert msgpack.unpackb(raw[blob["offset"] : blob["offset"] + blob["length"]]) == changed, "never the old blob"


def test_each_submit_sends_the_metadata_as_it_is_then_even_after_in_place_changes(fake):
    # Regression guard for reusing packed metadata: ComfyUI hands over new dicts per execution, but a caller (or
    # another node) may change the same dict in place, deep inside; every job carries its values at submit time.
    d = fake(on_submit=accept)
    workflow = {"nodes": [{"id": 1, "widgets_values": [7, "x" * 70_000]}]}
    meta = {"prompt_value": {"3": {"inputs": {"seed": 1}}}, "extra_pnginfo_values": [["workflow", workflow]]}
    sent = []
    with client.Client.connect(d.socket) as c:
        for seed in (1, 2, 2.0, True):
            meta["prompt_value"]["3"]["inputs"]["seed"] = seed
            workflow["nodes"][0]["widgets_values"][0] = seed
            accepted = c.submit(job_options(), [client.SlotImages(noise())], metadata=meta)
            blob = d.requests[-1]["metadata_blob"]
            raw = (d.spool / accepted.segment).read_bytes()
            sent.append(msgpack.unpackb(raw[blob["offset"] : blob["offset"] + blob["length"]]))
            daemon_releases(d)
    seeds = [m["prompt_value"]["3"]["inputs"]["seed"] for m in sent]
    assert [(s, type(s)) for s in seeds] == [(1, int), (2, int), (2.0, float), (True, bool)]
    assert [m["extra_pnginfo_values"][0][1]["nodes"][0]["widgets_values"][0] for m in sent] == seeds


def test_metadata_msgpack_cannot_carry_fails_the_submit_before_anything_is_sent(fake):
    d = fake(on_submit=accept)
    with client.Client.connect(d.socket) as c:
        with pytest.raises(OverflowError):
            c.submit(job_options(), [client.SlotImages(noise())], metadata={"prompt_value": 1 << 70})
        assert [r["type"] for r in d.requests] == ["hello"]
        assert all(s.client_owned() for s in c.pool.segments), "no segment was taken from the client"
        # The packer is usable again: the next job's metadata goes out whole.
        c.submit(job_options(), [client.SlotImages(noise())], metadata={"prompt_value": 1 << 40})
        assert d.requests[-1]["metadata"] == {"prompt_value": 1 << 40}


def daemon_releases(d: FakeDaemon) -> None:
    for name in os.listdir(d.spool):
        fd = os.open(d.spool / name, os.O_RDWR)
        os.pwrite(fd, b"\0", 12)
        os.close(fd)


# -- failures -----------------------------------------------------------------------------------------------------


def test_a_refused_job_leaves_the_segment_to_the_client_for_reuse(fake):
    d = fake(on_submit=lambda _f, conn, _j: send(conn, error(12, "busy", "queue budget full")) or True)
    with client.Client.connect(d.socket) as c:
        with pytest.raises(client.DaemonError) as e:
            c.submit(job_options(), [client.SlotImages(noise())])
        assert (e.value.code, e.value.name) == (client.BUSY, "busy")
        first = c.pool.segments[0]
        assert first.client_owned()
        with pytest.raises(client.DaemonError):
            c.submit(job_options(), [client.SlotImages(noise())])
        assert c.pool.segments == [first], "reused, not a new segment"


def test_a_hang_up_after_the_submit_discards_the_segment(fake):
    d = fake(on_submit=lambda *_: False)
    with client.Client.connect(d.socket) as c:
        with pytest.raises(client.ConnectionLost) as e:
            c.submit(job_options(), [client.SlotImages(noise())])
        assert e.value.job_may_exist is False
        assert len(c.pool) == 0
    assert os.listdir(d.spool) == [], "the daemon never took it: unlinked"


def test_a_daemon_that_took_the_segment_then_died_is_reported_as_a_possible_job(fake):
    def take_and_die(f: FakeDaemon, _conn, job) -> bool:
        f.take_ownership(job)
        return False

    d = fake(on_submit=take_and_die)
    with client.Client.connect(d.socket) as c:
        with pytest.raises(client.ConnectionLost) as e:
            c.submit(job_options(), [client.SlotImages(noise())])
        assert e.value.job_may_exist is True
        assert len(c.pool) == 0, "never reused: the daemon may still read it"
    (name,) = os.listdir(d.spool)
    head = (d.spool / name).read_bytes()[:64]
    assert head[shm.FLAGS_OFFSET] & shm.FLAG_DETACHED, "left for the daemon to unlink"


def test_a_daemon_restarted_between_requests_is_reconnected(fake):
    d = fake(on_submit=accept)
    with client.Client.connect(d.socket) as c:
        c.submit(job_options(), [client.SlotImages(noise())])
        d.hang_up()  # as a daemon restart would
        c.submit(job_options(), [client.SlotImages(noise())])
    assert [r["type"] for r in d.requests] == ["hello", "submit", "hello", "submit"]


def test_status_stats_and_unexpected_replies(fake):
    d = fake()
    with client.Client.connect(d.socket) as c, pytest.raises(client.DaemonError, match="the fake does not answer"):
        c.status("nope")
