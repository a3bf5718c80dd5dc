"""The more recipes (issue 9): clvae and w2v-ast train on real clips (small configs, random
weights), export with the parity check, run through calibrate, run and evaluate; pre-trained
weights load from local files in the Hugging Face and the original projects' formats."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge_agent.model.bundle import Bundle  # noqa: E402
from edge_agent.scoring.bank import MemoryBank, bank_path  # noqa: E402
from tests.conftest import DATA, small_recipe_bundle  # noqa: E402
from tests.test_run_replay import cli, write_config  # noqa: E402

pytestmark = pytest.mark.slow  # trains a model per recipe

SMALL_CLVAE = {
    "window_seconds": 1.0,
    "stem": 8,
    "blocks": [1, 1, 1, 1],
    "widths": [8, 16, 16, 32],
    "encoder": [64, 64, 32],
    "latent": 16,
    "backbone_epochs": 1,
    "vae_epochs": 4,
    "feature_crops": 2,
}
SMALL_W2V = {
    "window_seconds": 1.0,
    "w2v_conv_dim": [16, 16, 16],
    "w2v_conv_kernel": [10, 3, 3],
    "w2v_conv_stride": [5, 4, 4],
    "w2v_hidden": 32,
    "w2v_layers": 2,
    "w2v_heads": 2,
    "w2v_ffn": 64,
    "w2v_pos_kernel": 8,
    "w2v_pos_groups": 4,
    "ast_hidden": 32,
    "ast_layers": 2,
    "ast_heads": 2,
    "ast_mlp": 64,
    "n_mels": 32,
    "fusion_channels": 4,
    "embedding_dim": 16,
}
SMALL = {"clvae": SMALL_CLVAE, "w2v-ast": SMALL_W2V}


@pytest.fixture(scope="module", params=list(SMALL))
def recipe_bundle(request, tmp_path_factory):
    recipe = request.param
    return (recipe, *small_recipe_bundle(recipe, SMALL[recipe], tmp_path_factory.mktemp(recipe)))


def test_export_declares_outputs_and_heads(recipe_bundle):
    recipe, path, ck = recipe_bundle
    m = Bundle.load(path).manifest.to_json()
    assert m["parity_max_abs_diff"] <= 1e-4
    if recipe == "clvae":
        assert [o["name"] for o in m["outputs"]] == ["embedding", "rec_kld", "center_dist"]
        assert m["outputs"][2]["shape"] == [-1, 2]
        assert m["heads"]["rec-kld-center"] == {
            "outputs": ["rec_kld", "center_dist"],
            "weight": 150.0,
            "classes": ["enrol|id_00", "valve|00"],
        }
        assert m["score"]["head"] == "rec-kld+rec-kld-center"
        assert [f["kind"] for f in m["frontend"]["features"]] == ["logmel"] and m["frontend"]["sample_rate"] == 32000
        assert ck["stage_history"]["backbone"] and len(ck["stage_history"]["vae"]) == 4
    else:
        assert [o["name"] for o in m["outputs"]] == ["embedding"] and m["score"]["head"] == "knn"
        assert [f["kind"] for f in m["frontend"]["features"]] == ["waveform", "fbank"]
        assert ck["train_args"]["speed_perturb"] == [0.9, 1.0, 1.1] and ck["loss"] == "arcface"
        assert set(ck["heads"]) == {"machine", "joint"}  # one ArcFace head per sub-system


def test_calibrate_run_and_evaluate(recipe_bundle, tmp_path):
    recipe, path, _ = recipe_bundle
    st = tmp_path / "st"
    args = (
        "calibrate",
        "--machine",
        "m1",
        "--from",
        DATA / "valve" / "train",
        "--model",
        path,
        "--state-dir",
        st,
        "--no-plot",
    )
    if recipe == "clvae":
        # the bundle's own score is the ensemble with the center head, which needs the machine's class
        r = cli(*args)
        assert r.returncode == 2 and "--class NAME" in r.stderr and "rec-kld" in r.stderr
        args += ("--class", "valve|00")
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    bank = MemoryBank.load(bank_path(st, "m1"))
    if recipe == "clvae":
        spec = bank.meta["score"]
        assert spec["kind"] == "ensemble" and [m["kind"] for m in spec["members"]] == ["rec-kld", "rec-kld-center"]
        assert spec["members"][1]["class_index"] == 1 and all(m["std"] > 0 for m in spec["members"])
        assert "ensemble of VAE reconstruction" in r.stdout
    else:
        assert bank.meta.get("score") is None and "k-NN cosine distance" in r.stdout
    cfg = tmp_path / "c.yaml"
    write_config(cfg, st, {"m1": {"file": DATA / "valve" / "test", "realtime": "false"}})
    cfg.write_text(cfg.read_text().replace("engine: cpu", f"engine: cpu\nmodel: {path}"))
    r = cli("run", "--config", cfg, "--scores")
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if "m1: score" in line]
    assert lines and not any("nan" in line for line in lines)  # score lines are rate-limited
    r = cli("evaluate", DATA / "valve", "--model", path, "--out", tmp_path / "ev")
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert 0.0 <= res["hmean"] <= 1.0


@pytest.mark.parametrize("recipe_bundle", ["clvae"], indirect=True)
def test_clvae_heads_alone_and_with_knn(recipe_bundle, tmp_path):
    _, path, _ = recipe_bundle
    st = tmp_path / "st"
    base = ("calibrate", "--from", DATA / "valve" / "train", "--model", path, "--state-dir", st, "--no-plot")
    assert cli(*base, "--machine", "a", "--score", "rec-kld").returncode == 0
    assert MemoryBank.load(bank_path(st, "a")).meta["score"] == {"kind": "rec-kld"}
    assert cli(*base, "--machine", "b", "--score", "knn+rec-kld").returncode == 0
    assert [m["kind"] for m in MemoryBank.load(bank_path(st, "b")).meta["score"]["members"]] == ["knn", "rec-kld"]
    # adding to a bank scored with knn in an ensemble: the leave-one-out scores would not line up
    r = cli(*base, "--machine", "b", "--score", "knn+rec-kld")
    assert r.returncode == 2 and "--replace" in r.stderr
    r = cli(*base, "--machine", "c", "--score", "classifier")
    assert r.returncode == 2 and "no classifier head" in r.stderr
    r = cli(*base, "--machine", "c", "--score", "rec-kld+bogus")
    assert r.returncode == 2 and "use one of" in r.stderr


def test_clvae_feature_size_of_resnet38():
    from export.recipes.clvae import CLVAEConfig, CLVAENet

    cfg = CLVAEConfig(n_classes=3)
    assert cfg.feature_dim == 3776  # 16 residual blocks: 3 x 64 + 4 x 128 + 6 x 256 + 3 x 512
    net = CLVAENet(cfg).eval()
    x = torch.randn(1, 201, 64)
    with torch.no_grad():
        assert net.backbone(x).shape == (1, 3776)
        emb, rec, cd = net(x)
    assert emb.shape == (1, 512) and rec.shape == (1,) and cd.shape == (1, 3)


def test_w2v_ast_base_sizes():
    from export.recipes.w2vast import W2VASTConfig, count_parameters

    n = count_parameters(W2VASTConfig())
    assert 94.0e6 < n["wav2vec2"] < 95.0e6  # wav2vec 2.0 base: 94.4 M without the quantiser
    assert 85.0e6 < n["ast"] < 87.0e6  # AST base (ViT-B/16) with this window's position grid


# -- pre-trained weights ----------------------------------------------------------------------------
def _small_w2v_cfg(**kw):
    from export.recipes.w2vast import W2VASTConfig

    return W2VASTConfig(**{**SMALL_W2V, **kw})


def _same_outputs(a, b, x):
    a.eval(), b.eval()
    with torch.no_grad():
        return torch.allclose(a(x), b(x), atol=1e-5)


def _weight_norm(sd, key):
    w = sd.pop(key + "weight")
    g = w.norm(dim=(0, 1), keepdim=True)
    return g, w  # v = w gives back w = g * v / ||v||


def test_wav2vec2_from_hugging_face_and_fairseq(tmp_path):
    from safetensors.torch import save_file

    from export.pretrained import PretrainedError
    from export.recipes.w2vast import Wav2Vec2
    from export.recipes.w2vast_weights import load_wav2vec2

    cfg = _small_w2v_cfg()
    src = Wav2Vec2(cfg)
    sd = {k: v.clone() for k, v in src.state_dict().items()}
    x = torch.randn(2, 16000)
    # Hugging Face Wav2Vec2ForPreTraining layout: "wav2vec2." prefix, weight-normed positional conv
    g, v = _weight_norm(sd, "encoder.pos_conv_embed.conv.")
    hf = {f"wav2vec2.{k}": t for k, t in sd.items()}
    hf["wav2vec2.encoder.pos_conv_embed.conv.parametrizations.weight.original0"] = g
    hf["wav2vec2.encoder.pos_conv_embed.conv.parametrizations.weight.original1"] = v
    hf["wav2vec2.masked_spec_embed"] = torch.zeros(cfg.w2v_hidden)
    hf["project_q.weight"] = torch.zeros(4, 4)
    (tmp_path / "hf").mkdir()
    save_file(hf, str(tmp_path / "hf" / "model.safetensors"))
    dst = Wav2Vec2(cfg)
    info = load_wav2vec2(dst, str(tmp_path / "hf"))
    assert info["unused"] == 1 and _same_outputs(src, dst, x)
    # fairseq layout, named independently here
    fs = {}
    for k, t in sd.items():
        k = (
            k.replace("feature_extractor.conv_layers.0.layer_norm", "feature_extractor.conv_layers.0.2")
            .replace(".conv.weight", ".0.weight")
            .replace("feature_projection.layer_norm", "layer_norm")
            .replace("feature_projection.projection", "post_extract_proj")
            .replace("pos_conv_embed.conv.bias", "pos_conv.0.bias")
            .replace(".attention.", ".self_attn.")
            .replace(".layer_norm.", ".self_attn_layer_norm.")
            .replace("feed_forward.intermediate_dense", "fc1")
            .replace("feed_forward.output_dense", "fc2")
        )
        k = k.replace("encoder.self_attn_layer_norm.", "encoder.layer_norm.")
        fs[k] = t
    fs["encoder.pos_conv.0.weight_g"], fs["encoder.pos_conv.0.weight_v"] = g, v
    torch.save({"model": fs, "cfg": {"model": {"_name": "wav2vec2"}}}, tmp_path / "wav2vec_small.pt")
    dst = Wav2Vec2(cfg)
    load_wav2vec2(dst, str(tmp_path / "wav2vec_small.pt"))
    assert _same_outputs(src, dst, x)
    # a checkpoint of another size says what to change
    with pytest.raises(PretrainedError, match="w2v_hidden"):
        load_wav2vec2(Wav2Vec2(_small_w2v_cfg(w2v_hidden=64, w2v_heads=4)), str(tmp_path / "hf"))
    with pytest.raises(PretrainedError, match="not a wav2vec 2.0 checkpoint"):
        torch.save({"model": {"x": torch.zeros(1)}}, tmp_path / "other.pt")
        load_wav2vec2(dst, str(tmp_path / "other.pt"))


def test_ast_from_hugging_face_and_original_with_position_grid(tmp_path):
    from export.recipes.ast import AST
    from export.recipes.w2vast_weights import load_ast

    cfg = _small_w2v_cfg()
    f, t = cfg.ast_grid
    src = AST(cfg)
    sd = {k: v.clone() for k, v in src.state_dict().items()}
    x = torch.randn(2, cfg.frames, cfg.n_mels)
    torch.save(
        {f"audio_spectrogram_transformer.{k}": v for k, v in sd.items()}
        | {"classifier.dense.weight": torch.zeros(3, 32)},
        tmp_path / "pytorch_model.bin",
    )
    dst = AST(cfg)
    load_ast(dst, str(tmp_path), cfg)
    assert _same_outputs(src, dst, x)
    # the AST repository's layout (fused qkv, timm names), trained on a longer input: the time
    # positions are cut from the middle of a grid three times as long
    orig = {
        "module.v.cls_token": sd["embeddings.cls_token"],
        "module.v.dist_token": sd["embeddings.distillation_token"],
        "module.v.patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
        "module.v.patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
        "module.v.norm.weight": sd["layernorm.weight"],
        "module.v.norm.bias": sd["layernorm.bias"],
    }
    pos = sd["embeddings.position_embeddings"]
    grid = pos[:, 2:].reshape(1, f, t, -1)
    long = torch.cat([torch.randn(1, f, t, grid.shape[-1]), grid, torch.randn(1, f, t, grid.shape[-1])], dim=2)
    orig["module.v.pos_embed"] = torch.cat([pos[:, :2], long.reshape(1, 3 * f * t, -1)], dim=1)
    for i in range(cfg.ast_layers):
        p = f"encoder.layer.{i}."
        for part in ("weight", "bias"):
            orig[f"module.v.blocks.{i}.attn.qkv.{part}"] = torch.cat(
                [sd[p + f"attention.attention.{n}.{part}"] for n in ("query", "key", "value")]
            )
            orig[f"module.v.blocks.{i}.attn.proj.{part}"] = sd[p + f"attention.output.dense.{part}"]
            orig[f"module.v.blocks.{i}.norm1.{part}"] = sd[p + f"layernorm_before.{part}"]
            orig[f"module.v.blocks.{i}.norm2.{part}"] = sd[p + f"layernorm_after.{part}"]
            orig[f"module.v.blocks.{i}.mlp.fc1.{part}"] = sd[p + f"intermediate.dense.{part}"]
            orig[f"module.v.blocks.{i}.mlp.fc2.{part}"] = sd[p + f"output.dense.{part}"]
    torch.save(orig, tmp_path / "audioset_10_10_0.4593.pth")
    dst = AST(cfg)
    load_ast(dst, str(tmp_path / "audioset_10_10_0.4593.pth"), cfg)
    assert _same_outputs(src, dst, x)


def test_panns_checkpoint_into_clvae(tmp_path):
    from edge_agent.model.frontend import mel_filterbank
    from export.pretrained import PretrainedError
    from export.recipes.clvae import CLVAEConfig, PANNsFeatures, load_panns

    cfg = CLVAEConfig(**{k: v for k, v in SMALL_CLVAE.items()})
    src = PANNsFeatures(cfg)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    sd = dict(src.state_dict())
    sd["logmel_extractor.melW"] = torch.from_numpy(mel_filterbank(32000, 1024, 64, 50.0, 14000.0))
    sd["fc_audioset.weight"] = torch.zeros(527, 2048)
    torch.save({"model": sd, "iteration": 1}, tmp_path / "ResNet38_mAP=0.434.pth")
    dst = PANNsFeatures(cfg)
    info = load_panns(dst, str(tmp_path / "ResNet38_mAP=0.434.pth"), cfg)
    assert info["unused"] == 2
    assert _same_outputs(src, dst, torch.randn(2, 101, 64))
    with pytest.raises(PretrainedError, match="ResNet38"):
        load_panns(
            PANNsFeatures(CLVAEConfig(stem=8, blocks=[2, 1, 1, 1], widths=[8, 16, 16, 32])),
            str(tmp_path / "ResNet38_mAP=0.434.pth"),
            cfg,
        )


def test_train_with_pretrained_and_its_errors(tmp_path):
    from export.recipes.ast import AST
    from export.train import TrainArgs, load_checkpoint, train

    cfg = _small_w2v_cfg()
    ast = AST(cfg)
    torch.save({f"audio_spectrogram_transformer.{k}": v for k, v in ast.state_dict().items()}, tmp_path / "ast.bin")
    train(
        TrainArgs(
            data=[str(DATA / "valve")],
            out=str(tmp_path / "m.ckpt"),
            recipe="w2v-ast",
            epochs=1,
            batch_size=8,
            lr=0.0,
            recipe_config=SMALL_W2V,
            exclude_test_of=[],
            include_test_normals=False,
            pretrained=[f"ast={tmp_path / 'ast.bin'}"],
        ),
        progress=False,
    )
    sd = load_checkpoint(tmp_path / "m.ckpt")["state_dict"]
    # lr 0: both sub-systems still hold the given AST weights after an epoch
    for sub in ("sub1", "sub2"):
        assert torch.equal(
            sd[f"{sub}.ast.embeddings.patch_embeddings.projection.weight"],
            ast.embeddings.patch_embeddings.projection.weight,
        )
    r = cli(
        "train",
        "--recipe",
        "w2v-ast",
        "--data",
        DATA / "valve",
        "--out",
        tmp_path / "x.ckpt",
        "--pretrained",
        tmp_path / "ast.bin",
    )
    assert r.returncode == 2 and "wav2vec2=PATH, ast=PATH" in r.stderr
    r = cli(
        "train",
        "--recipe",
        "clvae",
        "--data",
        DATA / "valve",
        "--out",
        tmp_path / "x.ckpt",
        "--pretrained",
        "panns=/nonexistent.pth",
    )
    assert r.returncode == 2 and "no such file" in r.stderr


def test_speed_perturbation_changes_tempo_and_pitch():
    from export.train import speed_perturb

    sr, n = 16000, 16000
    x = np.sin(2 * np.pi * 1000 * np.arange(3 * sr) / sr).astype(np.float32)
    rng = np.random.default_rng(0)
    for f in (0.9, 1.0, 1.1):
        y = speed_perturb(x, n, f, rng)
        assert y.shape == (n,)
        peak = np.argmax(np.abs(np.fft.rfft(y[: n - 200]))) * sr / (n - 200)
        assert abs(peak - 1000 * f) < 10
