"""A model's identity: what would generate, cheap on big checkpoints, blind to paths and times."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from derta.backends.spec import SMALL_FILE, content_fingerprint, identity_id, model_identity, parse_model


def checkpoint(where: Path, weights: bytes = b"\x01" * 4096) -> Path:
    where.mkdir(parents=True)
    (where / "model.safetensors").write_bytes(weights)
    (where / "config.json").write_text(json.dumps({"hidden_size": 8}))
    (where / "tokenizer.json").write_text(json.dumps({"vocab": {"a": 0}}))
    (where / "README.md").write_text("not part of the model")
    return where


def test_a_changed_weight_file_of_the_same_size_is_another_model(tmp_path):
    path = checkpoint(tmp_path / "m")
    before = model_identity(f"hf:{path}")
    (path / "model.safetensors").write_bytes(b"\x01" * 4095 + b"\x02")
    after = model_identity(f"hf:{path}")
    assert after["content"]["files"][1]["size"] == before["content"]["files"][1]["size"] == 4096
    assert after["content"]["sha256"] != before["content"]["sha256"] and identity_id(after) != identity_id(before)
    assert [f["name"] for f in after["content"]["files"]] == ["config.json", "model.safetensors", "tokenizer.json"]


def test_times_and_the_folder_are_not_the_content(tmp_path):
    path = checkpoint(tmp_path / "m")
    before = model_identity(f"hf:{path}")
    os.utime(path / "model.safetensors", (1, 1))  # touched: same bytes
    assert model_identity(f"hf:{path}") == before
    moved = tmp_path / "elsewhere" / "m2"
    moved.parent.mkdir()
    shutil.move(str(path), moved)
    after = model_identity(f"hf:{moved}")
    assert after["content"] == before["content"] and after["spec"] == f"hf:{moved}"
    assert identity_id(after) == identity_id(before)  # a moved checkpoint is the same model
    assert identity_id(model_identity(f"vllm:{moved}")) != identity_id(before)  # another backend is not


def test_large_files_are_fingerprinted_by_their_edges(tmp_path):
    path = tmp_path / "big.gguf"
    size = SMALL_FILE + (3 << 20)
    with path.open("wb") as f:
        f.truncate(size)
    first = content_fingerprint(path)
    assert first["files"] == [{"name": "big.gguf", "size": size, "edges_sha256": first["files"][0]["edges_sha256"]}]
    with path.open("r+b") as f:
        f.seek(size - 10)
        f.write(b"retrained")
    tail = content_fingerprint(path)["sha256"]
    assert tail != first["sha256"]  # the last MiB changed
    with path.open("r+b") as f:
        f.seek(10)
        f.write(b"retrained")
    assert content_fingerprint(path)["sha256"] not in (first["sha256"], tail)  # the first MiB changed


def test_options_that_change_outputs_and_never_a_secret():
    ident = model_identity("openai:gpt-x", {"base_url": "http://h/v1", "api_key": "sk-secret", "api_key_env": "MY_KEY",
                                            "batch_size": 8, "max_concurrency": 4, "temperature_bias": 1})
    text = json.dumps(ident)
    assert "sk-secret" not in text and "MY_KEY" not in text and "api_key" not in text
    assert ident["options"] == {"base_url": "http://h/v1", "temperature_bias": 1} and "content" not in ident
    same = model_identity("openai:gpt-x", {"base_url": "http://h/v1", "temperature_bias": 1, "batch_size": 64, "api_key": "sk-other"})
    assert identity_id(same) == identity_id(ident)  # runtime settings and keys reuse a run
    assert identity_id(model_identity("openai:gpt-x", {"base_url": "http://other/v1", "temperature_bias": 1})) != identity_id(ident)


def test_a_hub_name_is_its_name_and_revision_and_template(tmp_path):
    hub = model_identity("hf:org/some-model-that-is-not-here")
    assert hub == {"kind": "hf", "spec": "hf:org/some-model-that-is-not-here", "template": None, "options": {}}
    assert identity_id(model_identity("hf:org/some-model-that-is-not-here", {"revision": "abc"})) != identity_id(hub)
    assert identity_id(model_identity("hf:org/some-model-that-is-not-here", template="plain")) != identity_id(hub)
    entry = parse_model({"name": "m", "spec": "hf:org/some-model-that-is-not-here", "template": "plain", "batch_size": 4}, 0)
    assert entry.identity() == model_identity("hf:org/some-model-that-is-not-here", template="plain")


def test_a_scripted_answer_file_is_its_content(tmp_path):
    answers = tmp_path / "answers.jsonl"
    answers.write_text(json.dumps({"prompt_id": "p", "response": "one"}) + "\n")
    before = identity_id(model_identity(f"scripted:{answers}"))
    answers.write_text(json.dumps({"prompt_id": "p", "response": "two"}) + "\n")
    assert identity_id(model_identity(f"scripted:{answers}")) != before
