"""A run's provenance statement and a replay's verification summary, built from records. Pure."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.core import provenance
from runner.core.errors import RunnerError
from runner.core.manifest import Image, Manifest
from tests.run_records import manifest_dict

BUILDER = provenance.Builder(version="9.9.9", host="lab-1")
MANIFEST_SHA = "b" * 64


def _manifest(**changes) -> Manifest:
    return Manifest.model_validate(
        manifest_dict(
            "c" * 64,
            fingerprints={"file": "fingerprints.jsonl", "sha256": "d" * 64, "every_k_steps": 4, "steps": 12},
            **changes,
        )
    )


IMAGE = {
    "tag": "runner/x:abc",
    "id": "sha256:" + "1" * 64,
    "kind": "cpu",
    "content_hash": "abc",
    "dockerfile": "Dockerfile.cpu",
    "dockerfile_sha256": "2" * 64,
    "lock": "images/cpu.lock",
    "lock_sha256": "3" * 64,
    "base_ref": "runner-base:bookworm",
    "base_digest": None,
    "base_id": "sha256:" + "4" * 64,
    "python_version": "3.11",
    "build_args": {},
    "built_now": False,
}


class _Pushed(Image):
    """An image record that holds where a registry keeps the image (runs that pushed it record one)."""

    registry_ref: str | None = None


def _written(statement: provenance.Statement) -> dict:
    """A statement as its envelope's payload holds it: the JSON a reader gets."""
    return json.loads(provenance.envelope(statement).payload_bytes())


def _typed(**changes) -> provenance.Statement:
    return provenance.statement(_manifest(**changes), MANIFEST_SHA, {"logs/train.log": "e" * 64}, BUILDER)


def _statement(**changes) -> dict:
    return _written(_typed(**changes))


def test_the_subjects_are_the_manifest_fingerprints_code_and_every_output():
    st_ = _statement(
        outputs={"model.pt": {"sha256": "a" * 64, "bytes": 3}, "sub/x.txt": {"sha256": "f" * 64, "bytes": 1}}
    )
    assert st_["_type"] == "https://in-toto.io/Statement/v1"
    assert st_["predicateType"] == "https://slsa.dev/provenance/v1"
    assert {s["name"]: s["digest"]["sha256"] for s in st_["subject"]} == {
        "manifest.json": MANIFEST_SHA,
        "fingerprints.jsonl": "d" * 64,
        "code.tar": "c" * 64,
        "outputs/model.pt": "a" * 64,
        "outputs/sub/x.txt": "f" * 64,
    }


def test_the_build_definition_holds_config_seed_profile_and_dependencies():
    st_ = _statement(overrides=["seed=7"], determinism={"profile": {"name": "strict"}, "seed": 7})
    build = st_["predicate"]["buildDefinition"]
    assert build["buildType"] == provenance.BUILD_TYPE and build["buildType"].endswith(":v1")
    assert build["externalParameters"]["seed"] == 7
    assert build["externalParameters"]["overrides"] == ["seed=7"]
    assert build["externalParameters"]["config"]["experiment"]["script"] == "train.py"
    assert build["internalParameters"]["determinism"]["profile"] == {"name": "strict"}
    assert build["internalParameters"]["environment"] == {"PYTHONHASHSEED": "0"}
    deps = {d["name"]: d["digest"] for d in build["resolvedDependencies"]}
    assert deps["code.tar"] == {"sha256": "c" * 64}


def test_the_image_its_lock_base_and_data_files_are_dependencies():
    data = {"name": "fm", "root": "/d", "files": {"a.gz": {"sha256": "5" * 64, "bytes": 1}}}
    deps = _statement(image=IMAGE, data=data)["predicate"]["buildDefinition"]["resolvedDependencies"]
    by_name = {d["name"]: d for d in deps}
    assert by_name["image"]["digest"] == {"sha256": "1" * 64} and by_name["image"]["uri"] == "runner/x:abc"
    assert by_name["images/cpu.lock"]["digest"] == {"sha256": "3" * 64}
    assert by_name["base-image"]["digest"] == {"sha256": "4" * 64}
    assert by_name["data/fm/a.gz"] == {
        "name": "data/fm/a.gz",
        "uri": "/d/a.gz",
        "digest": {"sha256": "5" * 64},
    }


def test_a_registry_digest_is_a_dependency_of_its_own_when_one_is_recorded():
    image = Image.model_validate({**IMAGE, "base_digest": "runner-base@sha256:" + "6" * 64})
    deps = provenance.image_dependencies(image)
    assert [d.name for d in deps] == ["image", "images/cpu.lock", "Dockerfile.cpu", "base-image"]
    assert deps[-1].digest == {"sha256": "6" * 64}
    ref = "127.0.0.1:5000/runner/x@sha256:" + "7" * 64
    deps = provenance.image_dependencies(_Pushed.model_validate({**image.model_dump(), "registry_ref": ref}))
    assert deps[1].model_dump(exclude_none=True) == {
        "name": "image-registry",
        "uri": ref,
        "digest": {"sha256": "7" * 64},
    }
    assert deps[0].annotations == {"kind": "cpu", "content_hash": "abc", "registry_ref": ref}


def test_run_details_name_the_builder_the_run_and_its_logs():
    details = _statement(run_id="r-42")["predicate"]["runDetails"]
    assert details["builder"]["id"] == "urn:runner:builder:runner@9.9.9:host=lab-1"
    assert details["metadata"]["invocationId"] == "r-42"
    assert details["metadata"]["startedOn"] == "1970-01-01T00:00:01.000000Z"
    products = {b["name"]: b for b in details["byproducts"]}
    assert products["logs/train.log"]["digest"] == {"sha256": "e" * 64}
    assert products["hardware"]["annotations"]["host"] == {"hostname": "h"}
    assert products["outcome"]["annotations"]["status"] == "completed"


def test_a_failed_run_says_so():
    outcome = _statement(status="failed", exit_code=3, error="training exited with status 3")
    products = {b["name"]: b for b in outcome["predicate"]["runDetails"]["byproducts"]}
    assert products["outcome"]["annotations"] == {
        "status": "failed",
        "exit_code": 3,
        "error": "training exited with status 3",
    }


def test_an_envelope_reads_back_to_its_statement():
    statement = _typed()
    env = provenance.read_envelope(provenance.envelope(statement).model_dump_json())
    assert json.loads(env.payload_bytes()) == _written(statement) and env.signatures == []
    got = provenance.read_statement(env, provenance.PROVENANCE_TYPE)
    assert provenance.invocation_id(got) == "made-by-hand"
    with pytest.raises(RunnerError, match="predicateType"):
        provenance.read_statement(env, provenance.VSA_TYPE)


def test_pae_is_dsses_encoding():
    assert provenance.pae("t/x", b"hello") == b"DSSEv1 3 t/x 5 hello"


def test_subject_problems_name_each_missing_or_different_file():
    env = provenance.envelope(_typed())
    st_ = provenance.read_statement(env, provenance.PROVENANCE_TYPE)
    on_disk = {s.name: s.digest["sha256"] for s in st_.subject}
    assert provenance.subject_problems(st_, on_disk) == []
    on_disk["outputs/model.pt"] = "0" * 64
    on_disk["code.tar"] = None
    problems = provenance.subject_problems(st_, on_disk)
    assert len(problems) == 2
    assert problems[0].startswith("code.tar: missing")
    assert problems[1].startswith("outputs/model.pt: differs")


@pytest.mark.parametrize(
    "name, ok",
    [
        ("manifest.json", True),
        ("outputs/a/b.pt", True),
        ("../x", False),
        ("/etc/passwd", False),
        ("outputs/../../x", False),
        ("a//b", False),
        ("", False),
        ("a\\b", False),
        ("a\0b", False),
    ],
)
def test_a_subject_name_stays_inside_the_run_dir(name, ok):
    assert provenance.safe_name(name) is ok


def test_a_statement_naming_a_file_outside_the_run_dir_is_a_problem():
    statement = _typed().model_copy(
        update={"subject": [provenance.Resource(name="../../etc/passwd", digest={"sha256": "a" * 64})]}
    )
    st_ = provenance.read_statement(provenance.envelope(statement), provenance.PROVENANCE_TYPE)
    assert provenance.subject_problems(st_, {}) == ["../../etc/passwd: not a file name inside the run dir"]


def test_the_replay_verdict_is_a_vsa_about_the_original_manifest():
    facts = provenance.ReplayFacts(
        original_run_id="r-1",
        original_manifest_sha256="a" * 64,
        original_provenance_sha256="b" * 64,
        passed=True,
        replay_dir="/runs/r-1/replays/t",
        replay_run_id="t-2",
        image=_Pushed.model_validate({**IMAGE, "registry_ref": "r/x@sha256:" + "8" * 64}),
        verified=0.0,
    )
    vsa = _written(provenance.verification_summary(facts, BUILDER))
    assert vsa["predicateType"] == "https://slsa.dev/verification_summary/v1"
    assert vsa["subject"] == [{"name": "manifest.json", "digest": {"sha256": "a" * 64}}]
    pred = vsa["predicate"]
    assert pred["verificationResult"] == "PASSED" and pred["policy"]["uri"] == provenance.REPLAY_POLICY
    assert pred["verifier"]["id"].startswith("urn:runner:verifier:runner@9.9.9")
    assert pred["replay"] == {
        "runDir": "/runs/r-1/replays/t",
        "runId": "t-2",
        "image": {
            "id": "sha256:" + "1" * 64,
            "tag": "runner/x:abc",
            "registry_ref": "r/x@sha256:" + "8" * 64,
        },
    }
    assert pred["inputAttestations"] == [{"name": "provenance.intoto.jsonl", "digest": {"sha256": "b" * 64}}]
    failed = _written(
        provenance.verification_summary(
            provenance.ReplayFacts(**{**facts.__dict__, "passed": False, "image": None}), BUILDER
        )
    )
    assert (
        failed["predicate"]["verificationResult"] == "FAILED" and failed["predicate"]["verifiedLevels"] == []
    )
    assert "image" not in failed["predicate"]["replay"]  # replayed on the host, in no image


# -- fuzzed envelopes: a RunnerError or a statement, never a traceback ----------------------------------
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


def _read_both(line: str, predicate: str = provenance.PROVENANCE_TYPE) -> None:
    try:
        env = provenance.read_envelope(line)
        st_ = provenance.read_statement(env, predicate)
        provenance.subject_problems(st_, {})
        provenance.invocation_id(st_)
    except RunnerError as exc:
        assert "\n" not in exc.message


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_any_line_is_read_or_refused(line):
    _read_both(line)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["payload", "payloadType", "signatures", "x"]), _json, max_size=4))
def test_any_envelope_shaped_object_is_read_or_refused(obj):
    _read_both(json.dumps(obj))


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["_type", "subject", "predicateType", "predicate"]), _json, max_size=4),
    st.booleans(),
)
def test_any_payload_is_read_or_refused(payload, typed):
    if typed:
        payload.update({"_type": provenance.STATEMENT_TYPE, "predicateType": provenance.PROVENANCE_TYPE})
    env = {
        "payload": base64.b64encode(json.dumps(payload).encode()).decode(),
        "payloadType": provenance.PAYLOAD_TYPE,
        "signatures": [],
    }
    _read_both(json.dumps(env))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "name": st.text(max_size=30),
                "digest": st.dictionaries(st.sampled_from(["sha256", "gitCommit"]), st.text(max_size=70)),
            }
        ),
        max_size=4,
    ),
    _json,
)
def test_any_subjects_and_run_details_are_read_or_refused(subjects, details):
    payload = {
        "_type": provenance.STATEMENT_TYPE,
        "predicateType": provenance.PROVENANCE_TYPE,
        "subject": subjects,
        "predicate": {"runDetails": details},
    }
    env = {
        "payload": base64.b64encode(json.dumps(payload).encode()).decode(),
        "payloadType": provenance.PAYLOAD_TYPE,
    }
    _read_both(json.dumps({**env, "signatures": []}))
