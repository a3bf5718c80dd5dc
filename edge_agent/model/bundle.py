"""Model bundles: a directory with ``manifest.json`` and ``model.onnx`` (plus TensorRT engine caches).

The manifest carries everything the runtime needs to feed the model exactly as it was trained:
sample rate, window length, the front end's feature list, input/output names and shapes, the
embedding size and the scoring rule, next to the sha256 of every file.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from edge_agent.errors import UserError
from edge_agent.model.frontend import Frontend
from edge_agent.model.manifest import Manifest, parse_manifest
from edge_agent.state.atomic import atomic_write

MANIFEST = "manifest.json"
BUILTIN_DIR = Path(__file__).parent / "builtin"


class BundleError(UserError):
    """A bundle that cannot be used; the message says which file and what to do."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                return h.hexdigest()
            h.update(b)


def builtin_bundles() -> list[str]:
    return sorted(p.name for p in BUILTIN_DIR.iterdir() if (p / MANIFEST).is_file()) if BUILTIN_DIR.is_dir() else []


def resolve_bundle_path(model: str | Path) -> Path:
    """A built-in bundle name (``default``) or a bundle directory."""
    p = Path(model)
    if (p / MANIFEST).is_file():
        return p
    if re.fullmatch(r"[A-Za-z0-9_.-]+", str(model)) and (BUILTIN_DIR / str(model) / MANIFEST).is_file():
        return BUILTIN_DIR / str(model)
    names = ", ".join(builtin_bundles()) or "none"
    raise BundleError(
        f"model {str(model)!r} is neither a bundle directory (with {MANIFEST}) nor a built-in bundle "
        f"(built-in: {names}); make one with 'edge-agent export CHECKPOINT --out DIR'"
    )


@dataclass
class Bundle:
    path: Path
    manifest: Manifest

    @classmethod
    def load(cls, model: str | Path, verify: bool = True) -> "Bundle":
        path = resolve_bundle_path(model)
        try:
            raw = json.loads((path / MANIFEST).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise BundleError(f"{path / MANIFEST}: unreadable manifest ({e}); re-export the bundle") from None
        try:
            manifest = parse_manifest(raw)
        except ValueError as e:
            raise BundleError(
                f"{path / MANIFEST}: invalid manifest ({e}); re-export the bundle with this version"
            ) from None
        b = cls(path, manifest)
        if verify:
            b.verify()
        return b

    def verify(self) -> None:
        for fname, digest in self.manifest.files.items():
            f = self.path / fname
            if not f.is_file():
                raise BundleError(f"{f}: listed in the manifest but missing; re-export or re-copy the bundle")
            if sha256_file(f) != digest:
                raise BundleError(
                    f"{f}: sha256 does not match the manifest (corrupt or modified); re-export or re-copy the bundle"
                )

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def model_path(self) -> Path:
        return self.path / self.manifest.model_file

    @property
    def sha256(self) -> str:
        """Identity of the model: banks record it, so a bank made with another model is refused."""
        return self.manifest.files[self.manifest.model_file]

    @property
    def frontend(self) -> Frontend:
        return self.manifest.frontend

    @property
    def embedding_dim(self) -> int:
        return self.manifest.embedding_dim

    @property
    def embeddings_per_window(self) -> int:
        return self.manifest.score.embeddings_per_window

    def trained_on(self) -> frozenset[str]:
        """Fingerprints (``edge_agent.audio.fingerprint``) of the clips the model was trained on, as
        far as the bundle records them (empty for bundles exported without the list)."""
        name = self.manifest.training.get("clips_file")
        if not name or not (self.path / name).is_file():
            return frozenset()
        return frozenset(line.strip() for line in (self.path / name).read_text().splitlines() if line.strip())

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256}


def adapted_bundle(path: Path, generic: Bundle) -> Optional[Bundle]:
    """The adapted copy of ``generic`` at ``path`` (``calibrate --adapt`` writes one per machine), or
    None when there is none or it was adapted from another model. It must hear what the generic
    model hears: same front end, inputs and embedding size, so its windows batch with the others'."""
    if not (Path(path) / MANIFEST).is_file():
        return None
    own = Bundle.load(path)
    origin = (own.manifest.adapted or {}).get("from", {})
    if origin.get("sha256") != generic.sha256:
        return None
    m, g = own.manifest, generic.manifest
    if (m.frontend, m.inputs, m.embedding_dim) != (g.frontend, g.inputs, g.embedding_dim):
        raise BundleError(f"{path}: adapted model does not take the same input as {generic.name}; recalibrate")
    return own


TRAINING_CLIPS = "training_clips.txt"


def write_training_clips(bundle_dir: Path, fingerprints, training: dict[str, Any]) -> dict[str, Any]:
    """Write the training clips' fingerprints next to the model; returns ``training`` naming the file
    (unchanged when there are none). Call before ``write_manifest``, which hashes every file."""
    from edge_agent.audio.fingerprint import SCHEME

    fps = sorted(set(fingerprints))
    if not fps:
        return training
    (Path(bundle_dir) / TRAINING_CLIPS).write_text("\n".join(fps) + "\n")
    return {**training, "clips_file": TRAINING_CLIPS, "clips_fingerprint": SCHEME, "clips_listed": len(fps)}


def write_manifest(bundle_dir: Path, manifest: Manifest) -> Manifest:
    """Fill in the sha256 of every file in the bundle and write the (validated) manifest."""
    files = {f.name: sha256_file(f) for f in sorted(bundle_dir.iterdir()) if f.is_file() and f.name != MANIFEST}
    manifest = parse_manifest({**manifest.to_json(), "files": files})
    with atomic_write(bundle_dir / MANIFEST, "w") as f:
        f.write(json.dumps(manifest.to_json(), indent=2) + "\n")
    return manifest
