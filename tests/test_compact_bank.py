"""Large banks score on a PCA of their entries; small banks stay exact."""

import numpy as np

from calibration.enrol import Enrolment, enrol
from edge_agent.scoring.bank import MemoryBank, fit_projection, knn_distance


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


BASIS = np.random.default_rng(42).normal(size=(24, 256))


def clustered(rng, n, noise=0.005):
    """Embeddings that vary in few (24) directions, as one machine's normal windows do."""
    return unit(rng.normal(size=(n, len(BASIS))) @ BASIS + noise * rng.normal(size=(n, 256)) + 3 * BASIS[0])


def test_projected_distances_approximate_the_exact_ones():
    rng = np.random.default_rng(0)
    # entries that lie in a 24-d subspace: a projection that keeps it loses nothing
    entries, queries = clustered(rng, 3000, noise=0.0), clustered(rng, 200, noise=0.0)
    proj = fit_projection(entries, 32)
    assert proj.components.shape == (256, 32)
    np.testing.assert_allclose(proj.components.T @ proj.components, np.eye(32), atol=1e-4)
    bank = MemoryBank(entries, np.array(["source"] * 3000), np.array(["sample"] * 3000), "x", projection=proj)
    np.testing.assert_allclose(bank.score(queries), knn_distance(queries, entries, 1), atol=2e-4)
    # with spread outside the kept directions, the residuals stand in for it
    entries, queries = clustered(rng, 3000, noise=0.02), clustered(rng, 200, noise=0.02)
    bank = MemoryBank(
        entries, np.array(["source"] * 3000), np.array(["sample"] * 3000), "x", projection=fit_projection(entries, 32)
    )
    approx = bank.score(queries)
    np.testing.assert_allclose(approx, knn_distance(queries, entries, 1), atol=0.01)
    # sound unlike every entry, mostly in directions the projection leaves out, still scores as far
    # as it is (without the residual it would look close to normal)
    far = unit(rng.normal(size=(20, 256)))
    np.testing.assert_allclose(bank.score(far), knn_distance(far, entries, 1), atol=0.05)
    assert bank.score(far).min() > approx.max()
    # k > 1 averages the k nearest, as the exact k-NN does
    bank.k = 3
    assert np.all(bank.score(queries) >= approx - 1e-6)


def test_enrol_compacts_only_large_banks_and_the_projection_survives_a_save(tmp_path):
    rng = np.random.default_rng(1)
    emb = clustered(rng, 300)
    groups = np.repeat([f"clip{i}" for i in range(6)], 50)
    small = enrol("sha", Enrolment(emb, groups, "source"), keep_source_samples=True, compact_above=0)
    assert small.bank.projection is None and small.bank.meta["projection_dim"] is None
    big = enrol("sha", Enrolment(emb, groups, "source"), keep_source_samples=True, compact_above=250, compact_dim=32)
    assert big.bank.projection is not None and big.bank.meta["projection_dim"] == 32
    assert any("32-d projection" in n for n in big.notes)
    # the threshold is fitted on the projected scores the runtime will give; with the entries' spread
    # inside the kept directions it is the exact bank's
    assert abs(big.bank.threshold - small.bank.threshold) < 0.01
    big.bank.save(tmp_path / "b.npz")
    back = MemoryBank.load(tmp_path / "b.npz")
    q = clustered(rng, 10)
    np.testing.assert_allclose(back.score(q), big.bank.score(q), atol=1e-6)
    np.testing.assert_allclose(back.projection.components, big.bank.projection.components)


def test_calibrate_refuses_a_meaningless_compaction(tmp_path):
    from tests.cliproc import cli
    from tests.conftest import DATA

    r = cli(
        "calibrate",
        "--machine",
        "m",
        "--state-dir",
        str(tmp_path),
        "--from",
        str(DATA / "valve" / "train"),
        "--compact-dim",
        "0",
    )
    assert r.returncode == 2 and "--compact-dim" in r.stderr and "Traceback" not in r.stderr


def test_a_projected_bank_keeps_one_projection_per_domain_however_many_windows():
    rng = np.random.default_rng(3)
    src, tgt = clustered(rng, 400), clustered(rng, 50)
    emb = np.concatenate([src, tgt])
    dom = np.array(["source"] * 400 + ["target"] * 50)
    bank = MemoryBank(
        emb,
        dom,
        np.array(["sample"] * 450),
        "x",
        normalise_domains=True,
        domain_stats={"source": (0.1, 0.05), "target": (0.1, 0.05)},
        projection=fit_projection(emb, 32),
    )
    for _ in range(20):
        bank.score(clustered(rng, 3))
    assert sorted(bank._projected) == ["source", "target"]
    # a one-off exclusion is scored but not kept
    bank.domain_distances(clustered(rng, 2), exclude=np.arange(450) % 2 == 0)
    assert sorted(bank._projected) == ["source", "target"]
