"""One model-artifact verifier for the classifier and the VB-Net: the shipped folders pass it,
and a manifest that points outside its folder or at changed bytes is refused by both loaders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from femurscreen.classifier.persistence import load_model as load_classifier
from femurscreen.errors import ModelError
from femurscreen.manifest import member_path, read_json_object, sha256_file, verified_bytes
from femurscreen.resources import resource_path
from femurscreen.segmentation.vbnet.weights import load_model as load_vbnet

ADVICE = "restore the folder"


def _copy(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(resource_path("Models", name), target)
    return target


def _edit_manifest(folder: Path, edit) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    edit(manifest)
    path.write_text(json.dumps(manifest), encoding="utf-8")


@pytest.mark.parametrize("name", ["../model.skops", "sub/model.skops", "..", "", None])
def test_unsafe_names_never_leave_the_folder(tmp_path, name):
    with pytest.raises(ModelError, match="unsafe file") as info:
        member_path(tmp_path, name, "the model", ADVICE)
    assert str(tmp_path / "manifest.json") in str(info.value) and ADVICE in str(info.value)
    assert member_path(tmp_path, "model.skops", "the model", ADVICE) == tmp_path / "model.skops"


def test_verified_bytes_are_the_bytes_hashed(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"weights")
    assert verified_bytes(path, sha256_file(path), "w.bin", ADVICE) == b"weights"
    with pytest.raises(ModelError, match="does not match its manifest") as info:
        verified_bytes(path, "0" * 64, "w.bin", ADVICE)
    assert str(path) in str(info.value)
    with pytest.raises(ModelError, match="is missing"):
        verified_bytes(tmp_path / "gone.bin", "0" * 64, "gone.bin", ADVICE)


def test_manifest_that_is_not_a_json_object_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ModelError, match="not a JSON object") as info:
        read_json_object(path, ADVICE)
    assert str(path) in str(info.value)
    path.write_text("{", encoding="utf-8")
    with pytest.raises(ModelError, match="not valid JSON"):
        read_json_object(path, ADVICE)


def test_classifier_manifest_pointing_outside_its_folder_is_refused(tmp_path):
    folder = _copy("classifier-demo", tmp_path)
    load_classifier(folder)  # the shipped copy passes
    outside = tmp_path / "model.skops"
    shutil.copy(folder / "model.skops", outside)  # a valid file, hash matching, but elsewhere
    _edit_manifest(folder, lambda m: m.update(model_file="../model.skops"))
    with pytest.raises(ModelError, match="unsafe file '../model.skops'"):
        load_classifier(folder)


def test_vbnet_manifest_pointing_outside_its_folder_is_refused(tmp_path):
    folder = _copy("vbnet-demo", tmp_path)
    load_vbnet(folder, "coarse")  # the shipped copy passes
    _edit_manifest(folder, lambda m: m["models"]["coarse"].update(file="../coarse.safetensors"))
    with pytest.raises(ModelError, match="unsafe file"):
        load_vbnet(folder, "coarse")
