"""Signed runs: a real run's provenance verifies, and every kind of tampering is refused, naming the file.

One run (on the host backend: the same worker, no engine) and one replay of it, both signed with a
key ``runner keygen`` wrote, are copied for each test that edits something. SSH signatures are
made and checked by ``ssh-keygen``; DSSE envelopes are checked against securesystemslib.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.core import layout, provenance
from runner.host import signing
from tests.conftest import FAST, ROOT, manifest, run_runner
from tests.live_runs import PROBE, finish, probe_args, start, wait_for
from tests.run_records import make_run, resealed

HOST = [*FAST, "launch.backend=host", "launch.processes=1"]
needs_data = pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST not installed",
)


def _keygen(path: Path) -> Path:
    proc = run_runner("keygen", str(path), "--comment", f"{path.name}@lab", module="runner.cli")
    assert proc.returncode == 0, proc.stderr
    return path.with_name(path.name + ".pub")


def _verify(run_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return run_runner("verify", str(run_dir), *args, module="runner.cli")


def _one_line_error(proc: subprocess.CompletedProcess, code: int = 2) -> str:
    assert proc.returncode == code and "Traceback" not in proc.stderr, proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("runner: error:")]
    return line


def _problems(proc: subprocess.CompletedProcess) -> list[str]:
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    return [
        x.removeprefix("runner: verify: ")
        for x in proc.stderr.splitlines()
        if x.startswith("runner: verify:")
    ]


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("keys")
    return {"alice": _keygen(base / "alice"), "mallory": _keygen(base / "mallory")}


@pytest.fixture(scope="module")
def signed(keys, tmp_path_factory) -> Path:
    """A run signed by alice's key (``RUNNER_SIGNING_KEY``), and a replay of it, signed too."""
    run_dir = tmp_path_factory.mktemp("signed") / "run"
    env = {signing.ENV_KEY: str(keys["alice"]).removesuffix(".pub")}
    proc = run_runner(f"hydra.run.dir={run_dir}", *HOST, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "unsigned" not in proc.stderr
    proc = run_runner(str(run_dir), module="runner.replay", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


@pytest.fixture
def copy(signed, tmp_path) -> Path:
    """The signed run, copied: a test may edit it."""
    return Path(shutil.copytree(signed, tmp_path / "run", symlinks=True))


def _statement(run_dir: Path) -> dict:
    env = json.loads((run_dir / layout.PROVENANCE).read_text())
    return json.loads(base64.b64decode(env["payload"]))


@needs_data
def test_a_signed_run_verifies_and_lists_its_signed_replay(signed, keys):
    proc = _verify(signed, "--key", str(keys["alice"]))
    assert proc.returncode == 0, proc.stderr
    names = {s["name"] for s in _statement(signed)["subject"]}
    assert {"manifest.json", "fingerprints.jsonl", "code.tar", "outputs/model.pt"} <= names
    assert f"signed by alice.pub; {len(names)} files match" in proc.stdout
    (replay,) = [x for x in proc.stdout.splitlines() if x.startswith("replay ")]
    assert replay.startswith("replay replays/") and replay.endswith(": PASSED, signed by alice.pub")
    report = json.loads(_verify(signed, "--key", str(keys["alice"]), "--json").stdout)
    assert report["ok"] is True and report["signers"] == ["alice.pub"] and report["replays"] == [replay]
    assert report["run_id"] == manifest(signed)["run_id"] and report["problems"] == []


@needs_data
def test_the_replays_verdict_names_the_original_its_image_and_its_run_dir(signed):
    (replay_dir,) = (signed / layout.REPLAYS_DIR).iterdir()
    env = json.loads((replay_dir / layout.VERIFICATION).read_text())
    vsa = json.loads(base64.b64decode(env["payload"]))
    assert vsa["predicateType"] == provenance.VSA_TYPE and env["signatures"]
    from runner.host.hashing import sha256_file

    assert vsa["subject"][0]["digest"]["sha256"] == sha256_file(signed / layout.MANIFEST)
    pred = vsa["predicate"]
    assert pred["verificationResult"] == "PASSED"
    assert pred["replay"]["runDir"] == str(replay_dir)
    assert pred["replay"]["runId"] == manifest(replay_dir)["run_id"]


@needs_data
def test_a_replay_that_differs_signs_a_failed_verdict(keys, tmp_path):
    """A run with unseeded noise replays to other bits: the replay's signed verdict says FAILED, and
    the original still verifies (its files are what was signed)."""
    run_dir = tmp_path / "noisy"
    env = {signing.ENV_KEY: str(keys["alice"]).removesuffix(".pub")}
    noisy = ["experiment=noisy", "launch.processes=1", "launch.backend=host", "trainer.max_steps=3"]
    noisy.append("determinism.allow_nondeterministic_ops=[aten::randn]")  # the audit's twin would refuse it
    proc = run_runner(f"hydra.run.dir={run_dir}", *noisy, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_runner(str(run_dir), module="runner.replay", env={signing.ENV_KEY: str(keys["mallory"])[:-4]})
    assert proc.returncode == 1, proc.stderr[-3000:]
    proc = _verify(run_dir, "--key", str(keys["alice"]))
    assert proc.returncode == 0, proc.stderr
    (replay,) = [x for x in proc.stdout.splitlines() if x.startswith("replay ")]
    assert ": FAILED, signature does not verify with alice.pub (signed by SHA256:" in replay, replay
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(
        "".join(f"{who}@lab {' '.join(keys[who].read_text().split()[:2])}\n" for who in ("alice", "mallory"))
    )
    proc = _verify(run_dir, "--allowed-signers", str(allowed))
    assert proc.returncode == 0 and "signed by alice@lab" in proc.stdout, proc.stderr
    assert [x for x in proc.stdout.splitlines() if x.startswith("replay ")][0].endswith(
        ": FAILED, signed by mallory@lab"
    )


@needs_data
def test_allowed_signers_name_who_signed(signed, keys, tmp_path):
    line = " ".join(keys["alice"].read_text().split()[:2])
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(
        f"# the lab's keys\nbob@lab ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB\nalice@lab {line}\n"
    )
    proc = _verify(signed, "--allowed-signers", str(allowed))
    assert proc.returncode == 0 and "signed by alice@lab" in proc.stdout, proc.stderr
    allowed.write_text(f'alice@lab namespaces="git" {line}\n')  # alice's key, but not for runs
    assert _problems(_verify(signed, "--allowed-signers", str(allowed)))[0].startswith(
        "provenance.intoto.jsonl: signature does not verify"
    )


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _edit_fingerprint_row(path: Path) -> None:
    rows = path.read_text().splitlines()
    row = json.loads(rows[1])
    row["loss"] = row["loss"] + 1e-6
    path.write_text("\n".join([rows[0], json.dumps(row), *rows[2:]]) + "\n")


def _edit_manifest(path: Path) -> None:
    m = json.loads(path.read_text())
    m["metrics"]["test_acc"] = 0.99  # resealed: the manifest's own digest agrees, the signature does not
    path.write_text(resealed(m))


@needs_data
@pytest.mark.parametrize(
    "name, edit",
    [
        ("outputs/model.pt", _flip_byte),
        ("fingerprints.jsonl", _edit_fingerprint_row),
        ("manifest.json", _edit_manifest),
        ("code.tar", lambda p: p.write_bytes(p.read_bytes() + b"\0")),
    ],
    ids=["model-byte", "fingerprint-row", "manifest-field", "code-tar"],
)
def test_an_edited_file_is_refused_by_name(copy, keys, name, edit):
    edit(copy / name)
    (problem,) = _problems(_verify(copy, "--key", str(keys["alice"])))
    assert problem.startswith(f"{name}: differs"), problem


@needs_data
def test_a_missing_or_added_output_is_refused_by_name(copy, keys):
    (copy / "outputs" / "model.pt").unlink()
    (copy / "outputs" / "swapped.pt").write_bytes(b"x")
    assert _problems(_verify(copy, "--key", str(keys["alice"]))) == [
        "outputs/model.pt: missing",
        "outputs/swapped.pt: not signed (added after the run)",
    ]


@needs_data
def test_a_signed_file_replaced_by_a_link_is_not_followed(copy, keys, tmp_path):
    """Even a link to the very bytes that were signed: a reader of the run dir would follow it elsewhere."""
    elsewhere = tmp_path / "model.pt"
    shutil.move(copy / "outputs" / "model.pt", elsewhere)
    (copy / "outputs" / "model.pt").symlink_to(elsewhere)
    assert _problems(_verify(copy, "--key", str(keys["alice"]))) == ["outputs/model.pt: missing"]


@needs_data
def test_the_wrong_key_is_refused(signed, keys):
    (problem,) = _problems(_verify(signed, "--key", str(keys["mallory"])))
    assert problem.startswith("provenance.intoto.jsonl: signature does not verify with mallory.pub")


@needs_data
def test_no_signature_is_refused(copy, keys):
    env = json.loads((copy / layout.PROVENANCE).read_text())
    (copy / layout.PROVENANCE).write_text(json.dumps({**env, "signatures": []}))
    (problem,) = _problems(_verify(copy, "--key", str(keys["alice"])))
    assert problem.startswith("provenance.intoto.jsonl: unsigned")
    (problem,) = _problems(_verify(copy))
    assert problem.startswith("provenance.intoto.jsonl: unsigned")


@needs_data
def test_without_a_key_the_signature_is_not_taken_on_trust(signed):
    (problem,) = _problems(_verify(signed))
    assert "signature not checked" in problem


@needs_data
def test_an_envelope_from_another_run_is_refused(copy, keys):
    (replay_dir,) = (copy / layout.REPLAYS_DIR).iterdir()  # another run (its own id), signed by alice
    shutil.copyfile(replay_dir / layout.PROVENANCE, copy / layout.PROVENANCE)
    problems = _problems(_verify(copy, "--key", str(keys["alice"])))
    assert any(p.startswith("manifest.json: differs") for p in problems), problems
    assert any("an envelope from another run" in p for p in problems), problems


@needs_data
def test_a_mallory_signed_envelope_with_alices_statement_is_refused(copy, keys):
    """Re-signing the same statement with another key does not make it alice's."""
    env = json.loads((copy / layout.PROVENANCE).read_text())
    mallory = signing.load_signer(str(keys["mallory"]).removesuffix(".pub"))
    payload = base64.b64decode(env["payload"])
    sig = mallory.sign(provenance.pae(env["payloadType"], payload))
    (copy / layout.PROVENANCE).write_text(json.dumps({**env, "signatures": [sig.model_dump()]}))
    assert _verify(copy, "--key", str(keys["mallory"])).returncode == 0
    assert _problems(_verify(copy, "--key", str(keys["alice"])))[0].startswith(
        "provenance.intoto.jsonl: signature does not verify"
    )


# -- an independent implementation ----------------------------------------------------------------------
@needs_data
def test_securesystemslib_verifies_the_envelope_and_we_verify_its_own(copy, keys, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import CryptoSigner, SSlibKey

    ours = json.loads((copy / layout.PROVENANCE).read_text())
    public = serialization.load_ssh_public_key(keys["alice"].read_bytes())
    key = SSlibKey.from_crypto(public, keyid=ours["signatures"][0]["keyid"])
    accepted = Envelope.from_dict(json.loads(json.dumps(ours))).verify([key], 1)
    assert list(accepted) == [ours["signatures"][0]["keyid"]]
    with pytest.raises(Exception, match="threshold"):
        other = serialization.load_ssh_public_key(keys["mallory"].read_bytes())
        Envelope.from_dict(json.loads(json.dumps(ours))).verify(
            [SSlibKey.from_crypto(other, keyid=key.keyid)], 1
        )

    # the other way round: securesystemslib signs the same statement with a key of its own
    private = tmp_path / "sslib"
    signer = CryptoSigner.generate_ed25519()
    theirs = Envelope(base64.b64decode(ours["payload"]), ours["payloadType"], {})
    theirs.sign(signer)
    (copy / layout.PROVENANCE).write_text(json.dumps(theirs.to_dict()))
    pub = signer.public_key.to_dict()["keyval"]["public"]
    raw = serialization.load_der_public_key(bytes.fromhex("302a300506032b6570032100" + pub))
    private.write_bytes(
        raw.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    proc = _verify(copy, "--key", str(private))
    assert proc.returncode == 0, proc.stderr


def _ssh_key(path: Path, comment: str) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True
    )
    return path


@needs_data
def test_a_failed_run_signed_with_an_ssh_key_verifies_with_ssh_keygen(tmp_path):
    """``signing.key`` names the user's SSH key: ``ssh-keygen -Y sign`` signs even a failed run's record."""
    key = _ssh_key(tmp_path / "id_ed25519", "carol@lab")
    run_dir = tmp_path / "failed"
    proc = run_runner(
        f"hydra.run.dir={run_dir}",
        *PROBE,
        "launch.backend=host",
        probe_args("fail", "3"),
        f"signing.key={key}",
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert (
        _statement(run_dir)["predicate"]["runDetails"]["byproducts"][-1]["annotations"]["status"] == "failed"
    )

    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"carol@lab {' '.join((tmp_path / 'id_ed25519.pub').read_text().split()[:2])}\n")
    proc = _verify(run_dir, "--allowed-signers", str(allowed))
    assert proc.returncode == 0 and "signed by carol@lab" in proc.stdout, proc.stderr
    assert _verify(run_dir, "--key", str(tmp_path / "id_ed25519.pub")).returncode == 0

    # ssh-keygen on its own: the signature is over DSSE's PAE of the payload, namespace "runner"
    env = json.loads((run_dir / layout.PROVENANCE).read_text())
    sig = tmp_path / "provenance.sig"
    sig.write_text(signing.armor(base64.b64decode(env["signatures"][0]["sig"])))
    data = provenance.pae(env["payloadType"], base64.b64decode(env["payload"]))
    check = [
        "ssh-keygen",
        "-Y",
        "verify",
        "-f",
        str(allowed),
        "-I",
        "carol@lab",
        "-n",
        "runner",
        "-s",
        str(sig),
    ]
    assert subprocess.run(check, input=data, capture_output=True).returncode == 0
    assert subprocess.run(check, input=data + b" ", capture_output=True).returncode != 0


def test_a_run_stopped_by_a_bug_still_signs_its_provenance(keys, tmp_path, monkeypatch):
    """The in-memory engine (this project's protocol) fails the container's start: the failed record
    is signed too, with the image the run had got."""
    from runner.core.run_input import RunInput
    from runner.flows import run
    from runner.flows.cli_common import compose, resolved
    from tests.memory_engine import MemoryEngine

    monkeypatch.setenv(signing.ENV_KEY, str(keys["alice"]).removesuffix(".pub"))  # signing.key's default
    overrides = ["experiment=noisy", "launch.processes=1", "trainer.max_steps=2"]
    config = resolved(compose(overrides))
    assert config["signing"]["key"] == str(keys["alice"]).removesuffix(".pub")
    with pytest.raises(ZeroDivisionError):
        run.run(
            RunInput.new(config, ["runner", *overrides], overrides),
            tmp_path / "run",
            echo=lambda _: None,
            engine=MemoryEngine(fail={"start": ZeroDivisionError("engine bug")}),
        )
    proc = _verify(tmp_path / "run", "--key", str(keys["alice"]))
    assert proc.returncode == 0, proc.stderr
    predicate = _statement(tmp_path / "run")["predicate"]
    assert predicate["runDetails"]["byproducts"][-1]["annotations"]["status"] == "failed"
    (image,) = [d for d in predicate["buildDefinition"]["resolvedDependencies"] if d["name"] == "image"]
    assert "sha256:" + image["digest"]["sha256"] == manifest(tmp_path / "run")["image"]["id"]


def test_an_ssh_key_held_by_the_agent_signs_through_its_pub(tmp_path, monkeypatch):
    key = _ssh_key(tmp_path / "id", "dave@lab")
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        wait_for(sock.exists, timeout=30, proc=agent)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        subprocess.run(["ssh-add", "-q", str(key)], check=True, capture_output=True)
        key.unlink()  # only the agent holds the private half now
        signer = signing.load_signer(tmp_path / "id.pub")
        sig = signer.sign(b"the PAE of a statement")
    finally:
        agent.terminate()
        agent.wait(timeout=30)
    trust = signing.trust_key(tmp_path / "id.pub")
    assert (
        sig.keyid
        == subprocess.run(
            ["ssh-keygen", "-l", "-f", str(tmp_path / "id.pub")], capture_output=True, text=True, check=True
        ).stdout.split()[1]
    )
    assert signing.check(sig, b"the PAE of a statement", trust) == "id.pub"
    assert signing.check(sig, b"another statement", trust) is None


@needs_data
def test_an_interrupted_unsigned_run_still_writes_its_provenance_and_says_it_is_unsigned(tmp_path):
    run_dir = tmp_path / "stopped"
    env = {k: v for k, v in os.environ.items() if k != signing.ENV_KEY}
    proc = start(run_dir, *PROBE, "launch.backend=host", probe_args("wait"), env=env)
    wait_for(lambda: (run_dir / "outputs" / "partial.txt").exists(), proc=proc)
    proc.send_signal(signal.SIGINT)
    code, _, err = finish(proc)
    assert code == 130, err[-2000:]
    assert len([x for x in err.splitlines() if x.startswith("unsigned: ")]) == 1, err
    assert manifest(run_dir)["status"] == "interrupted"
    (problem,) = _problems(_verify(run_dir))
    assert problem.startswith("provenance.intoto.jsonl: unsigned")
    names = {s["name"] for s in _statement(run_dir)["subject"]}
    assert "outputs/partial.txt" in names


@pytest.mark.parametrize(
    "options, ok",
    [
        ("", True),
        ('namespaces="runner"', True),
        ('namespaces="git,runner"', True),
        ('NAMESPACES="run*"', True),
        ('namespaces="git"', False),
        ('namespaces="runner-old"', False),
        ('namespaces="*,!runner"', False),
        ("cert-authority", False),
        ('valid-before="20000101"', False),  # expired: ssh-keygen -Y verify refuses it too
        ('valid-after="29990101123000Z"', False),  # not yet valid
        ('valid-after="20000101",valid-before="29990101Z",namespaces="runner"', True),
        ('valid-before="yesterday"', False),  # a time no one can read
        ('namespaces="runner",valid-before="200001010000"', False),
    ],
)
def test_an_allowed_signers_line_signs_runs_only_where_its_namespaces_say(options, ok):
    assert signing._for_runs(options) is ok


# -- bad input: one line, never a traceback ------------------------------------------------------------
def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(tmp_path):
    pub = _keygen(tmp_path / "keys" / "k")
    assert (tmp_path / "keys").stat().st_mode & 0o777 == 0o700  # a new key dir: its owner's only
    assert (tmp_path / "keys" / "k").stat().st_mode & 0o777 == 0o600
    assert pub.read_text().startswith("ssh-ed25519 ") and pub.read_text().strip().endswith("k@lab")
    line = _one_line_error(run_runner("keygen", str(tmp_path / "keys" / "k"), module="runner.cli"))
    assert "already exists" in line


def test_a_bad_signing_key_is_refused_before_the_run_dir_is_taken(tmp_path):
    key = tmp_path / "key"
    key.write_text("not a key\n")
    key.chmod(0o600)
    for bad, says in ((key, "is not a private key"), (tmp_path / "none", "No such file")):
        run_dir = tmp_path / "run"
        proc = run_runner(f"hydra.run.dir={run_dir}", *HOST, env={signing.ENV_KEY: str(bad)})
        assert says in _one_line_error(proc)
        assert not run_dir.exists()
    key.write_text(_keygen(tmp_path / "k").read_text())
    os.chmod(tmp_path / "k", 0o644)
    proc = run_runner(f"hydra.run.dir={tmp_path / 'run'}", *HOST, env={signing.ENV_KEY: str(tmp_path / "k")})
    assert "can be read by others" in _one_line_error(proc)


@pytest.mark.parametrize(
    "content",
    [
        "",
        "not json\n",
        "{}\n",
        '{"payload": "!!", "payloadType": "application/vnd.in-toto+json", "signatures": []}\n',
        "[1, 2]\n",
        '{"payload": "e30=", "payloadType": "x", "signatures": []}\n',
        "\udcff",
    ],
)
def test_a_malformed_provenance_file_is_one_line(tmp_path, content):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / layout.PROVENANCE).write_bytes(content.encode(errors="surrogateescape"))
    (problem,) = _problems(_verify(run_dir))
    assert problem.startswith("provenance.intoto.jsonl")


def test_bad_arguments_are_one_line(tmp_path):
    assert "not a directory" in _one_line_error(_verify(tmp_path / "nowhere"))
    garbage = tmp_path / "garbage.pub"
    garbage.write_text("ssh-ed25519 !!!\n")
    assert "is not a public key" in _one_line_error(_verify(tmp_path, "--key", str(garbage)))
    assert "No such file" in _one_line_error(_verify(tmp_path, "--allowed-signers", str(tmp_path / "none")))


def test_an_ssh_key_that_cannot_sign_refuses_the_run_before_it_starts(tmp_path):
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret", "-f", str(key)], check=True)
    run_dir = tmp_path / "run"
    env = {signing.ENV_KEY: str(key), "SSH_AUTH_SOCK": "", "DISPLAY": "", "SSH_ASKPASS": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "runner", f"hydra.run.dir={run_dir}", *HOST],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # no terminal to ask a passphrase on
    )
    assert "ssh-keygen -Y sign" in _one_line_error(proc)
    assert not run_dir.exists()


_names = st.sampled_from(
    ["manifest.json", "code.tar", "outputs/model.pt", "../x", "/etc/passwd", "outputs"]
) | st.text(max_size=12)
_sigs = st.lists(
    st.fixed_dictionaries(
        {
            "keyid": st.text(max_size=20) | st.just("a\nkey"),
            "sig": (
                st.binary(max_size=80) | st.binary(max_size=80).map(lambda b: signing.SSHSIG_MAGIC + b)
            ).map(lambda b: base64.b64encode(b).decode())
            | st.text(max_size=20),
        }
    ),
    max_size=2,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    subjects=st.lists(
        st.fixed_dictionaries(
            {"name": _names, "digest": st.dictionaries(st.just("sha256"), st.text(max_size=64))}
        ),
        max_size=3,
    ),
    run_id=st.text(max_size=10) | st.none(),
    signatures=_sigs,
)
def test_fuzzed_envelopes_in_a_run_dir_are_reported_never_a_traceback(tmp_path, subjects, run_id, signatures):
    from runner.flows import verify

    run_dir = make_run(tmp_path / "fuzz")
    statement = {
        "_type": provenance.STATEMENT_TYPE,
        "predicateType": provenance.PROVENANCE_TYPE,
        "subject": subjects,
        "predicate": {"runDetails": {"metadata": {"invocationId": run_id}}},
    }
    payload = base64.b64encode(json.dumps(statement).encode()).decode()
    env = {"payload": payload, "payloadType": provenance.PAYLOAD_TYPE, "signatures": signatures}
    (run_dir / layout.PROVENANCE).write_text(json.dumps(env))
    allowed = tmp_path / "allowed_signers"
    allowed.write_text("x ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHcUhC9poAlf77jEEe/MxGSoL3TDJ5QMzl38DoY3aDES\n")
    report = verify.verify(run_dir, signing.trust_allowed_signers(allowed))
    assert not report.ok and report.problems
    assert all("\n" not in p for p in report.problems)


def test_keygen_leaves_no_key_when_its_public_half_cannot_be_written(tmp_path):
    """A name one byte short of the filesystem's limit: the private key fits, ``NAME.pub`` does not."""
    path = tmp_path / ("k" * 252)
    proc = run_runner("keygen", str(path), module="runner.cli")
    assert proc.returncode == 2, proc.stderr
    assert "cannot write" in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []
