"""Memory bank of one machine and k-NN scoring.

The bank holds L2-normalised embeddings of normal sound with their domain: k-means centres of the
source domain (optionally all source samples too) and every target-domain sample (few-shot). A
window's score is its cosine distance to the nearest entries (mean of the k smallest). Optional
per-domain normalisation z-scores each domain's distance with statistics from enrolment, so that
a domain with few clips does not dominate.

Stored as one ``.npz`` (arrays, plus a JSON metadata string; never pickle), written atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from edge_agent.errors import UserError
from edge_agent.scoring.bank_meta import BANK_FORMAT, BankMeta, check_meta
from edge_agent.scoring.heads import Scorer
from edge_agent.state.atomic import atomic_write
from edge_agent.state.paths import bank_path, model_dir

if TYPE_CHECKING:
    from edge_agent.model.bundle import Bundle

DOMAINS = ("source", "target")


class BankError(UserError):
    """A bank that cannot be used; the message says what to do (usually: recalibrate)."""


@dataclass(frozen=True)
class Projection:
    """A PCA of a large bank's entries, so that k-NN runs on (N, d) instead of (N, D): a 100k x 1024
    bank is memory-bound at about 18 ms a query.

    For unit vectors 1 - cos(q, e) = |q - e|^2 / 2. The squared distance splits into the part in
    the kept directions, computed exactly, and the part outside them, estimated as the sum of
    the two points' squared residuals (their cross term averages out). Without the residual, sound
    that differs from normal only in the left-out directions would look normal."""

    mean: np.ndarray  # (D,)
    components: np.ndarray  # (D, d), orthonormal columns

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, D) -> the projected points (n, d) and their squared norms plus squared residuals (n,)."""
        c = np.asarray(x, np.float32) - self.mean
        p = (c @ self.components).astype(np.float32)
        return p, (c * c).sum(axis=1).astype(np.float32)

    @property
    def dim(self) -> int:
        return int(self.components.shape[1])


def fit_projection(entries: np.ndarray, dim: int) -> Projection:
    """The ``dim`` principal directions of the entries (eigenvectors of their covariance)."""
    x = np.asarray(entries, np.float64)
    mean = x.mean(axis=0)
    cov = (x - mean).T @ (x - mean)
    _, vecs = np.linalg.eigh(cov)  # ascending eigenvalues
    return Projection(mean.astype(np.float32), np.ascontiguousarray(vecs[:, ::-1][:, :dim], dtype=np.float32))


def projected_distance(q: tuple[np.ndarray, np.ndarray], e: tuple[np.ndarray, np.ndarray], k: int = 1) -> np.ndarray:
    """``knn_distance`` from projected queries to projected entries (``Projection`` outputs):
    |q - e|^2 ~ |q|^2 + |e|^2 - 2 q.e in the kept directions, plus both residuals; |q|^2 plus its
    residual is the centred point's whole squared norm."""
    (qp, qn), (ep, en) = q, e
    if ep.shape[0] == 0:
        return np.full(qp.shape[0], np.inf, dtype=np.float32)
    d2 = qn[:, None] + en[None, :] - 2.0 * (qp @ ep.T)
    k = min(k, ep.shape[0])
    best = d2.min(axis=1) if k == 1 else np.partition(d2, k - 1, axis=1)[:, :k].mean(axis=1)
    return (np.maximum(best, 0.0) / 2.0).astype(np.float32)


def bank_distance(queries: np.ndarray, entries: np.ndarray, k: int = 1, projection: Optional[Projection] = None):
    """Exact k-NN cosine distance, or its projected estimate when the bank has a projection."""
    if projection is None:
        return knn_distance(queries, entries, k)
    return projected_distance(projection(queries), projection(entries), k)


def knn_distance(queries: np.ndarray, entries: np.ndarray, k: int = 1) -> np.ndarray:
    """Mean of the k smallest cosine distances from each query to the entries: (B, D), (N, D) -> (B,).

    Both sides are L2-normalised, so the cosine similarity is one matrix product."""
    if entries.shape[0] == 0:
        return np.full(queries.shape[0], np.inf, dtype=np.float32)
    sim = queries @ entries.T
    k = min(k, entries.shape[0])
    if k == 1:
        best = sim.max(axis=1)
    else:
        best = np.partition(sim, sim.shape[1] - k, axis=1)[:, -k:].mean(axis=1)
    return (1.0 - best).astype(np.float32)


@dataclass
class MemoryBank:
    embeddings: np.ndarray  # (N, D) float32, L2-normalised
    domains: np.ndarray  # (N,) "source" | "target"
    kinds: np.ndarray  # (N,) "centre" | "sample"
    model_sha256: str
    model_name: str = ""
    model_version: str = ""
    threshold: Optional[float] = None
    k: int = 1
    normalise_domains: bool = False
    domain_stats: dict[str, tuple[float, float]] = field(default_factory=dict)  # domain -> (mean, std)
    meta: dict[str, Any] = field(default_factory=dict)  # fit, counts, time, version, ...
    # Enrolment embeddings and their clip ids per domain, kept in the file so that a later enrolment
    # or feedback can extend the bank and refit the threshold on everything the machine has been
    # taught. The running agent does not hold them (``without_enrolment``).
    enrolled: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    projection: Optional[Projection] = None  # large banks: k-NN on a PCA of the entries
    _projected: dict = field(default_factory=dict, repr=False, compare=False)  # "all" or domain -> projected entries
    _scorer: Optional[tuple] = field(default=None, repr=False, compare=False)  # (the spec, its Scorer)

    @property
    def version(self) -> int:
        return int(self.meta.get("version", 0))

    def counts(self) -> dict[str, int]:
        return {
            f"{d}_{k}": int(np.sum((self.domains == d) & (self.kinds == k)))
            for d in DOMAINS
            for k in ("centre", "sample")
        }

    def domain_distances(self, emb: np.ndarray, exclude: Optional[np.ndarray] = None) -> dict[str, np.ndarray]:
        """k-NN distance to each domain's entries; ``exclude`` (bool mask over entries) leaves entries out."""
        out = {}
        for d in DOMAINS:
            m = self.domains == d
            if exclude is not None:
                m &= ~exclude
            if m.any():
                out[d] = self._distance(emb, m, d if exclude is None else None)
        return out

    def _distance(self, emb: np.ndarray, mask: Optional[np.ndarray] = None, key: str = "all") -> np.ndarray:
        """k-NN distance to the entries under ``mask``; ``key`` names a fixed mask whose projected
        entries may be kept (None: a one-off mask, projected for this call only)."""
        entries = self.embeddings if mask is None else self.embeddings[mask]
        if self.projection is None:
            return knn_distance(emb, entries, self.k)
        projected = self._projected.get(key) if key is not None else None
        if projected is None:
            projected = self.projection(entries)
            if key is not None:  # the entries are projected once, not at every window
                self._projected[key] = projected
        return projected_distance(self.projection(emb), projected, self.k)

    def scorer(self) -> Scorer:
        """The bank's score head(s) (``heads``), made once from ``meta["score"]`` (the k-NN when it has
        none), and again only when that spec is replaced: a head's stored reference costs more to
        parse than a window to score."""
        spec = self.meta.get("score")
        if self._scorer is None or self._scorer[0] is not spec:
            self._scorer = (spec, Scorer(spec))
        return self._scorer[1]

    def anomaly_scores(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        """Each window's anomaly score from its model outputs, with the head the bank was calibrated with."""
        return self.scorer().score(outputs, self)

    def score(self, emb: np.ndarray) -> np.ndarray:
        """Anomaly score per window (higher = more anomalous).

        ``emb`` is (windows, n * dim): a model may give n embeddings per window (frame-sequence
        models); each is scored against the bank and the window's score is their mean."""
        if self.embeddings.shape[0] == 0:
            raise BankError("the bank is empty; enrol normal sound with 'edge-agent calibrate'")
        d = self.embeddings.shape[1]
        if emb.shape[-1] % d:
            raise BankError(f"embeddings of size {emb.shape[-1]} do not fit a bank of {d}-d entries; recalibrate")
        rows = emb.reshape(-1, d)
        if not self.normalise_domains:
            s = self._distance(rows)
        else:
            s = combine_domains(self.domain_distances(rows), self.domain_stats)
        return s.reshape(emb.shape[0], -1).mean(axis=1)

    def without_enrolment(self) -> "MemoryBank":
        """What scoring needs, without the enrolment embeddings: those are read from the bank's file
        when feedback needs them, and a learning period's hour of them would be 15 MB a machine."""
        return replace(self, enrolled={}) if self.enrolled else self

    def check_model(self, sha256: str, where: str = "") -> None:
        if self.model_sha256 != sha256:
            raise BankError(
                f"bank{(' ' + where) if where else ''} was made with model {self.model_name or '?'} "
                f"{self.model_version} (sha256 {self.model_sha256[:12]}...), but the agent runs sha256 "
                f"{sha256[:12]}...; recalibrate: edge-agent calibrate --machine ID ..."
            )
        if self.embeddings.ndim != 2:
            raise BankError("bank embeddings are not a matrix; recalibrate")

    # -- storage ---------------------------------------------------------------------------
    def _stored_meta(self) -> dict:
        return {
            "format": BANK_FORMAT,
            "model_sha256": self.model_sha256,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "threshold": self.threshold,
            "k": self.k,
            "normalise_domains": self.normalise_domains,
            "domain_stats": self.domain_stats,
            **self.meta,
        }

    @property
    def info(self) -> BankMeta:
        """The metadata as the typed contract (``bank_meta.BankMeta``), parsed at each call: the
        runtime reads it when a bank comes into force or an alarm starts, never per window."""
        return BankMeta.model_validate(self._stored_meta())

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = self._stored_meta()
        check_meta(meta, "bank metadata")  # the contract the runtime reads back (bank_meta.py)
        with atomic_write(path) as f:
            np.savez(
                f,
                embeddings=self.embeddings.astype(np.float32),
                domains=self.domains.astype("U6"),
                kinds=self.kinds.astype("U6"),
                meta=np.array(json.dumps(meta)),
                **(
                    {"projection_mean": self.projection.mean, "projection_components": self.projection.components}
                    if self.projection is not None
                    else {}
                ),
                **{
                    f"enrolled_{d}_{part}": arr
                    for d, pair in self.enrolled.items()
                    for part, arr in zip(("emb", "groups"), (pair[0].astype(np.float32), pair[1].astype(str)))
                },
            )

    @classmethod
    def load(cls, path: str | Path, enrolled: bool = True) -> "MemoryBank":
        """The bank in ``path``, checked; ``enrolled=False`` leaves the enrolment embeddings in the file."""
        path = Path(path)
        if not path.is_file():
            raise BankError(f"no bank at {path}; enrol the machine with 'edge-agent calibrate'")
        try:
            with np.load(path, allow_pickle=False) as z:
                emb, dom, kinds, meta = z["embeddings"], z["domains"], z["kinds"], json.loads(str(z["meta"]))
                enrolled = {
                    d: (z[f"enrolled_{d}_emb"], z[f"enrolled_{d}_groups"])
                    for d in DOMAINS
                    if enrolled and f"enrolled_{d}_emb" in z.files
                }
                projection = (
                    Projection(z["projection_mean"].astype(np.float32), z["projection_components"].astype(np.float32))
                    if "projection_components" in z.files
                    else None
                )
        except Exception as e:  # noqa: BLE001 - numpy/zipfile raise many kinds for a corrupt file
            raise BankError(f"bank {path} is unreadable ({e}); recalibrate the machine") from None
        thr = meta.get("threshold")
        finite = emb.dtype.kind == "f" and bool(np.isfinite(emb).all())
        if not finite or (thr is not None and not (isinstance(thr, (int, float)) and np.isfinite(thr))):
            raise BankError(f"bank {path} holds values that are not numbers (NaN/Inf); recalibrate the machine")
        if meta.get("format") != BANK_FORMAT:
            raise BankError(
                f"bank {path} has format {meta.get('format')}, this version reads {BANK_FORMAT}; recalibrate"
            )
        try:
            check_meta(meta, f"bank {path}")
        except ValueError as e:
            raise BankError(
                f"{e}. It was written by another version of edge-agent or edited by hand: recalibrate the machine "
                "(edge-agent calibrate), or run the version that wrote it"
            ) from None
        known = {
            "format",
            "model_sha256",
            "model_name",
            "model_version",
            "threshold",
            "k",
            "normalise_domains",
            "domain_stats",
        }
        return cls(
            embeddings=emb.astype(np.float32),
            domains=dom,
            kinds=kinds,
            model_sha256=meta["model_sha256"],
            model_name=meta.get("model_name", ""),
            model_version=meta.get("model_version", ""),
            threshold=meta.get("threshold"),
            k=int(meta.get("k", 1)),
            normalise_domains=bool(meta.get("normalise_domains", False)),
            domain_stats={d: tuple(v) for d, v in meta.get("domain_stats", {}).items()},
            meta={k: v for k, v in meta.items() if k not in known},
            enrolled=enrolled,
            projection=projection,
        )


def combine_domains(dists: dict[str, np.ndarray], stats: dict[str, tuple[float, float]]) -> np.ndarray:
    """Per-domain z-scores, then the smallest: a window close to either domain is normal."""
    zs = []
    for d, v in dists.items():
        mu, sd = stats.get(d, (0.0, 1.0))
        zs.append((v - mu) / max(sd, 1e-6))
    return np.min(np.stack(zs), axis=0).astype(np.float32)


def load_machine_bank(state_dir: Path, machine: str, bundle: "Bundle") -> Optional[MemoryBank]:
    """The bank calibrate wrote for ``machine``, checked against the model it was made with: the
    running model, or the machine's adapted copy of it (``machine_model``); None if there is none."""
    p = bank_path(state_dir, machine)
    if not p.is_file():
        return None
    bank = MemoryBank.load(p, enrolled=False)  # feedback reads them from the file
    model = machine_model(state_dir, machine, bundle, bank)
    bank.check_model(model.sha256, f"of machine {machine}")
    if bank.embeddings.shape[1] % model.embedding_dim:
        raise BankError(
            f"bank of machine {machine} has {bank.embeddings.shape[1]}-d embeddings, the model makes "
            f"{model.embedding_dim}; recalibrate"
        )
    return bank


def machine_model(state_dir: Path, machine: str, bundle: "Bundle", bank: Optional[MemoryBank]) -> "Bundle":
    """The model ``bank`` was made with: the machine's adapted copy of ``bundle`` when the bank names
    it (calibrate --adapt), else ``bundle``."""
    from edge_agent.model.bundle import adapted_bundle

    if bank is None or bank.model_sha256 == bundle.sha256:
        return bundle
    own = adapted_bundle(model_dir(state_dir, machine), bundle)
    return own if own is not None and own.sha256 == bank.model_sha256 else bundle
