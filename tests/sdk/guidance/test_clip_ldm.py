"""The CLIP-image LDM guidance: open_clip embeddings of images and prompts (y / y′), loading from local files only,
the clear errors of missing weights, SDS through it, and `nfldm refine --guidance clip-ldm`.

Every model here is tiny and randomly initialised (an open_clip config registered from a JSON file, a tiny diffusers
U-Net and VAE), so the code paths run on CPU in seconds; nothing is downloaded.
"""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.guidance.base import GuidanceModel, GuidanceNotAvailable
from nfldm_sdk.guidance.clip_ldm import ClipImageLDMGuidance
from nfldm_sdk.guidance.open_clip_encoder import CLIP_CHECKPOINT_FILE, CLIP_CHECKPOINT_REPO, OpenClipEncoder
from nfldm_sdk.guidance.sds import refine_scene
from nfldm_sdk.models.scene_ae import SceneAEConfig, SceneAutoEncoder

pytestmark = pytest.mark.usefixtures("one_thread_module")

BOX = ((-6.0, -6.0, -1.0), (6.0, 6.0, 3.0))
#: A tiny open_clip CLIP: 12-d embeddings (the tiny U-Net's cross-attention size), 32×32 images, 16-token prompts.
TINY_CLIP = {"embed_dim": 12, "quick_gelu": True,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 16, "patch_size": 8, "head_width": 8},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}


def _tiny_clip(folder, name="nfldm-test-tiny-clip", embed_dim=12, seed=0):
    """``(config_json, checkpoint)``: a random-weight open_clip model of `TINY_CLIP` written as an open_clip
    model-config JSON (``folder/<name>.json``) and a safetensors checkpoint (``folder/open_clip/``)."""
    import open_clip

    folder.mkdir(parents=True, exist_ok=True)
    config = folder / f"{name}.json"
    config.write_text(json.dumps({**TINY_CLIP, "embed_dim": embed_dim}))
    open_clip.add_model_config(config)
    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None)
    ckpt = folder / "open_clip" / CLIP_CHECKPOINT_FILE
    ckpt.parent.mkdir(exist_ok=True)
    save_file({k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}, str(ckpt))
    return config, ckpt


def _tiny_clip_ldm(folder):
    """A randomly initialised model in the sd-image-variations layout (tiny UNet2DConditionModel with cross-attention
    dim 12, tiny AutoencoderKL of factor 2, DDPMScheduler) plus a tiny open_clip checkpoint in ``folder/open_clip/``;
    returns ``(folder, clip_config_json)``."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    torch.manual_seed(0)
    UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
                         down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                         up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                         cross_attention_dim=12, attention_head_dim=4, norm_num_groups=4).save_pretrained(folder / "unet")
    AutoencoderKL(block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                  sample_size=16).save_pretrained(folder / "vae")
    DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                  beta_end=0.012).save_pretrained(folder / "scheduler")
    config, _ = _tiny_clip(folder)
    return folder, config


@pytest.fixture(scope="module")
def clip_ldm(tmp_path_factory):
    return _tiny_clip_ldm(tmp_path_factory.mktemp("clip") / "sd-iv")


@pytest.fixture
def no_network(monkeypatch):
    import socket

    def refuse(*a, **k):
        raise AssertionError("a network call was attempted")

    monkeypatch.setattr(socket, "create_connection", refuse)


# ============================================================================================ open_clip embeddings
def test_open_clip_embeddings_are_the_models_own_deterministic_and_distinct(clip_ldm, no_network):
    import open_clip

    folder, config = clip_ldm
    enc = OpenClipEncoder.from_checkpoint(str(config), folder / "open_clip")           # a folder finds its file
    assert enc.embed_dim == 12 and enc.image_size == (32, 32) and enc.model_name == "nfldm-test-tiny-clip"
    assert not any(p.requires_grad for p in enc.parameters())
    imgs = torch.rand(3, 3, 20, 28, generator=torch.Generator().manual_seed(0))
    e = enc.embed_images(imgs, batch_size=2)
    assert e.shape == (3, 12) and e.dtype == torch.float32
    # the open_clip model's encode_image of the whole image resized (bicubic) and normalised with CLIP's mean/std
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).reshape(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).reshape(1, 3, 1, 1)
    x = F.interpolate(imgs, size=(32, 32), mode="bicubic", align_corners=False).clamp(0, 1)
    with torch.no_grad():
        torch.testing.assert_close(e, enc.model.encode_image((x - mean) / std))
    # the checkpoint's weights were loaded: a second load gives the same bytes, a random init does not
    again = OpenClipEncoder.from_checkpoint(str(config), folder / "open_clip" / CLIP_CHECKPOINT_FILE)
    assert torch.equal(again.embed_images(imgs), e)
    torch.manual_seed(123)
    other = OpenClipEncoder(open_clip.create_model("nfldm-test-tiny-clip"), enc.tokenizer)
    assert not torch.allclose(other.embed_images(imgs), e)
    # text: the model's encode_text of the tokenizer's tokens; prompt and negative differ; deterministic
    prompts = ["a photo of a city street", "a blurry render with artifacts"]
    t = enc.embed_texts(prompts)
    assert t.shape == (2, 12) and not torch.allclose(t[0], t[1])
    with torch.no_grad():
        torch.testing.assert_close(t, enc.model.encode_text(open_clip.get_tokenizer("nfldm-test-tiny-clip")(prompts)))
    assert torch.equal(again.embed_texts(prompts), t)
    torch.testing.assert_close(enc.embed_texts(prompts[0]), t[:1])
    with pytest.raises(ValueError, match="non-empty strings"):
        enc.embed_texts([" "])


def test_clip_ldm_guidance_end_to_end(clip_ldm, no_network):
    folder, config = clip_ldm
    g = ClipImageLDMGuidance.from_pretrained(folder, clip_model=str(config))           # CLIP from folder/open_clip/
    assert g.image_size == (16, 16) and g.num_train_timesteps == 1000 and g.clip_size == (32, 32)
    imgs = torch.rand(5, 3, 20, 28, generator=torch.Generator().manual_seed(0))
    y, y_prime = g.compute_condition(imgs[:3]), g.compute_condition([imgs[3], imgs[4:]])
    e = g.embed_images(imgs[:3])
    assert y.shape == (12,) and torch.allclose(y.norm(), e.norm(dim=-1).mean())          # mean direction, mean norm
    torch.testing.assert_close(y / y.norm(), e.mean(0) / e.mean(0).norm())
    # prompts: the text embedding, rescaled to a given norm; prompt and negative prompt give different conditions
    yp = g.compute_text_condition("a photo of a city street")
    torch.testing.assert_close(yp, g.embed_texts(["a photo of a city street"])[0])
    yn = g.compute_text_condition(["a blurry render", "artifacts"], norm=y.norm())
    torch.testing.assert_close(yn.norm(), y.norm())
    assert not torch.allclose(yp / yp.norm(), yn / yn.norm())
    with pytest.raises(ValueError, match="dataset condition y is not set"):
        g.dataset_condition
    g.set_conditions(dataset=y, artifact=y_prime)
    with pytest.raises(ValueError, match=r"\[12\] CLIP embedding"):
        g.set_conditions(dataset=torch.zeros(7))
    assert isinstance(g, GuidanceModel)
    assert torch.equal(g.null_condition, torch.zeros(12))
    x0 = g.encode(torch.rand(2, 3, 16, 16))
    assert x0.shape == (2, 4, 8, 8)
    # ε̂ is the U-Net's output with the embedding as one cross-attention token
    t = torch.tensor([50, 120])
    with torch.no_grad():
        direct = g.unet(x0, t, encoder_hidden_states=y.expand(2, 1, 12)).sample
    torch.testing.assert_close(g.predict_noise(x0, t, y.expand(2, 12)), direct)
    # SDS through the VAE encoder into a field (real stage-1 decoder), deterministic for one seed
    torch.manual_seed(0)
    ae = SceneAutoEncoder(SceneAEConfig(image_size=(16, 16), downsample=4, depth_bins=4, near=0.2, far=12.0,
                                        feature_channels=4, grid_shape=(4, 16, 16), bounds=BOX, render_samples=16,
                                        encoder_widths=(8, 8, 8), decoder_widths=(8, 8, 8))).eval()
    gen = torch.Generator().manual_seed(0)
    field = VoxelField(torch.rand(4, 16, 16, generator=gen) * 0.3, torch.randn(4, 4, 16, 16, generator=gen),
                       torch.tensor(BOX))
    r = refine_scene(field, ae, g, steps=2, alpha=3.0, seed=0, progress=False)
    assert r.nonfinite_steps == 0 and not torch.equal(r.field.features, field.features)
    assert all(n > 0 for n in r.history.feature_grad_norm)
    assert torch.equal(refine_scene(field, ae, g, steps=2, alpha=3.0, seed=0, progress=False).field.features,
                       r.field.features)


def test_clip_of_another_size_than_the_unet_is_refused(clip_ldm, tmp_path):
    folder, _ = clip_ldm
    config, ckpt = _tiny_clip(tmp_path, name="nfldm-test-tiny-clip-10", embed_dim=10)
    with pytest.raises(ValueError, match=r"makes 10-d embeddings but the U-Net reads 12-d"):
        ClipImageLDMGuidance.from_pretrained(folder, clip_model=str(config), clip_checkpoint=ckpt)


# ============================================================================================ missing weights
def test_missing_folder_or_clip_checkpoint_names_the_file_and_the_download(clip_ldm, tmp_path, no_network):
    folder, config = clip_ldm
    with pytest.raises(GuidanceNotAvailable, match=r"huggingface-cli download lambdalabs/sd-image-variations-diffusers "
                                                    r"--local-dir .*nope"):
        ClipImageLDMGuidance.from_pretrained(tmp_path / "nope")
    (tmp_path / "partial" / "unet").mkdir(parents=True)
    (tmp_path / "partial" / "unet" / "config.json").write_text("{}")
    with pytest.raises(GuidanceNotAvailable, match=r"lacks unet/ weights .*vae/config.json.*scheduler/scheduler_config.json"
                                                    r"(.|\n)*CLIP encoder is missing too"):
        ClipImageLDMGuidance.from_pretrained(tmp_path / "partial")
    # a complete diffusion model without the CLIP checkpoint: the file, the repository and the option are named
    with pytest.raises(GuidanceNotAvailable, match=rf"needs {CLIP_CHECKPOINT_FILE}(.|\n)*huggingface-cli download "
                                                    rf"{CLIP_CHECKPOINT_REPO} {CLIP_CHECKPOINT_FILE} --local-dir "
                                                    r".*empty(.|\n)*--clip-checkpoint"):
        ClipImageLDMGuidance.from_pretrained(folder, clip_model=str(config), clip_checkpoint=tmp_path / "empty")
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "open_clip_pytorch_model.bin").write_bytes(b"\0")
    with pytest.raises(GuidanceNotAvailable, match=r"open_clip_pytorch_model.bin: pickle checkpoints are refused"):
        ClipImageLDMGuidance.from_pretrained(folder, clip_model=str(config), clip_checkpoint=tmp_path / "pickled")
    with pytest.raises(GuidanceNotAvailable, match=r"not a .safetensors file"):
        OpenClipEncoder.from_checkpoint(str(config), tmp_path / "pickled" / "open_clip_pytorch_model.bin")
    with pytest.raises(GuidanceNotAvailable, match="none was given"):
        OpenClipEncoder.from_checkpoint(str(config), None)
    # a checkpoint of another architecture, an unknown model name
    other, _ = _tiny_clip(tmp_path / "other", name="nfldm-test-tiny-clip-10", embed_dim=10)
    with pytest.raises(ValueError, match=r"does not fit open_clip model 'nfldm-test-tiny-clip-10'.*--clip-model"):
        OpenClipEncoder.from_checkpoint(str(other), folder / "open_clip")
    with pytest.raises(ValueError, match=r"unknown open_clip model 'ViT-Nope'"):
        OpenClipEncoder.from_checkpoint("ViT-Nope", folder / "open_clip")


# ============================================================================================ CLI
def test_cli_refine_with_clip_ldm_conditions(clip_ldm, default_stats_bundle, tmp_path):
    """clip-ldm: y from --dataset-images (or --prompt), y′ from renders of the raw scene (or --negative-prompt),
    saved with --save-conditions and reused."""
    import imageio.v3 as iio
    import numpy as np
    from click.testing import CliRunner

    from nfldm_sdk.cli.refine import refine
    from nfldm_sdk.guidance.base import load_conditions
    from nfldm_sdk.pipelines.generator import SceneGenerator
    from nfldm_sdk.pipelines.scene import NeuralScene

    folder, config = clip_ldm
    images = tmp_path / "frames"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        iio.imwrite(images / f"{i}.png", rng.integers(0, 256, (24 + 8 * i, 40, 3), dtype=np.uint8))
    SceneGenerator.from_pretrained(default_stats_bundle).generate(1, seed=2, steps=2)[0].save(tmp_path / "scene")
    base = [str(tmp_path / "scene"), "--model", str(default_stats_bundle), "--guidance", "clip-ldm", "--guidance-path",
            str(folder), "--clip-model", str(config), "--steps", "1", "--device", "cpu", "--no-progress", "--no-preview"]
    runner = CliRunner()
    res = runner.invoke(refine, base + ["--out", str(tmp_path / "a")])
    assert res.exit_code != 0 and "--dataset-images" in res.output and "--prompt" in res.output
    res = runner.invoke(refine, base + ["--out", str(tmp_path / "a"), "--dataset-images", str(images),
                                        "--save-conditions", str(tmp_path / "cond.safetensors")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    y, y_prime = load_conditions(tmp_path / "cond.safetensors")
    assert y.shape == y_prime.shape == (12,) and not torch.allclose(y, y_prime)
    res = runner.invoke(refine, base + ["--out", str(tmp_path / "b"), "--conditions", str(tmp_path / "cond.safetensors")],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    a, b = NeuralScene.load(tmp_path / "a"), NeuralScene.load(tmp_path / "b")
    assert torch.equal(a.field.features, b.field.features)                          # same conditions, same seed
    # prompts: y and y′ are text embeddings scaled to the renders' image-embedding norm
    res = runner.invoke(refine, base + ["--out", str(tmp_path / "c"), "--prompt", "a city street", "--negative-prompt",
                                        "a blurry render", "--save-conditions", str(tmp_path / "text.safetensors")],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    ty, ty_prime = load_conditions(tmp_path / "text.safetensors")
    torch.testing.assert_close(ty.norm(), ty_prime.norm())
    g = ClipImageLDMGuidance.from_pretrained(folder, clip_model=str(config))
    for got, prompt in ((ty, "a city street"), (ty_prime, "a blurry render")):
        e = g.embed_texts([prompt])[0]
        torch.testing.assert_close(got / got.norm(), e / e.norm())
    assert not torch.equal(NeuralScene.load(tmp_path / "c").field.features, a.field.features)
    res = runner.invoke(refine, base + ["--out", str(tmp_path / "d"), "--dataset-images", str(images),
                                        "--clip-checkpoint", str(tmp_path / "no-clip")])
    assert res.exit_code != 0 and CLIP_CHECKPOINT_FILE in res.output and "--clip-checkpoint" in res.output
