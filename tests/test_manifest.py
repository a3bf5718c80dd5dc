"""The bundle manifest contract: validated at load, with the bad key named; written and read as one type."""

import json
import shutil

import pytest

from edge_agent.model.bundle import BUILTIN_DIR, Bundle, BundleError, write_manifest
from edge_agent.model.manifest import Manifest, parse_manifest

DEFAULT = json.loads((BUILTIN_DIR / "default" / "manifest.json").read_text())


def _with(**changes):
    m = json.loads(json.dumps(DEFAULT))
    for key, value in changes.items():
        if value is None:
            m.pop(key, None)
        else:
            m[key] = value
    return m


def test_the_shipped_manifest_parses_and_keeps_its_content():
    m = parse_manifest(DEFAULT)
    assert m.input_names == ["spectrum", "spectrogram"] and m.output_names == ["embedding"]
    assert m.score.embeddings_per_window == 1 and m.score.head == "knn"  # "head" defaults for older bundles
    assert list(m.all_heads()) == ["knn"]
    again = parse_manifest(m.to_json())
    assert again == m and m.to_json()["schema"] == 1 and m.to_json()["files"] == DEFAULT["files"]


@pytest.mark.parametrize(
    "changes, named",
    [
        ({"embeding_dim": 3}, "embeding_dim"),  # a typo is refused, not ignored
        ({"embedding_dim": "wide"}, "embedding_dim"),
        ({"embedding_dim": None}, "embedding_dim"),
        ({"inputs": [{"name": "mel", "shape": [-1, 4]}]}, "mel"),  # no front-end feature of that name
        ({"score": {"embeddings_per_window": 0}}, "score.embeddings_per_window"),
        ({"score": {"head": "svm"}}, "score.head"),
        ({"heads": {"svm": {}}}, "heads"),
        ({"sample_rate": 8000}, "8000"),
    ],
)
def test_a_bad_manifest_is_refused_naming_the_key(changes, named):
    with pytest.raises(ValueError, match=named):
        parse_manifest(_with(**changes))


def test_old_bundles_name_their_classifier_at_the_top():
    m = parse_manifest(_with(classifier={"output": "logits", "classes": ["a", "b"]}, heads=None))
    assert m.all_heads()["classifier"].classes == ["a", "b"]


def test_bundle_load_reports_a_bad_manifest_as_a_user_error(tmp_path):
    d = tmp_path / "b"
    shutil.copytree(BUILTIN_DIR / "default", d)
    (d / "manifest.json").write_text(json.dumps(_with(opset="seventeen")))
    with pytest.raises(BundleError, match=r"invalid manifest \(opset: .*re-export"):
        Bundle.load(d)


def test_write_manifest_fills_in_the_files_and_round_trips(tmp_path):
    d = tmp_path / "b"
    shutil.copytree(BUILTIN_DIR / "default", d)
    (d / "manifest.json").unlink()
    written = write_manifest(d, Manifest.model_validate(_with(files={})))
    assert written.files == DEFAULT["files"]
    assert Bundle.load(d).manifest == written
