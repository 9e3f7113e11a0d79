"""diffusers interop, both ways, checked against diffusers itself: a UNet2DModel folder opened
as a scorelab run gives diffusers' eps, DDIM and DDPM results; a scorelab run exported as a
DDPMPipeline gives scorelab's eps and samples in diffusers; bad folders get one line."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from scorelab.cli import main
from scorelab.config import RunConfig, UNetConfig
from scorelab.errors import ScorelabError
from scorelab.runs import load_run, train
from scorelab.runs.diffusers import diffusers_betas, load_diffusers, map_scheduler
from scorelab.runs.export import export_diffusers, exportable
from tests.helpers import cli_fails
from tests.test_images import fake_sklearn

diffusers = pytest.importorskip(
    "diffusers", reason="diffusers is not installed (pip install 'scorelab[diffusers]')"
)
UNet2DModel = diffusers.UNet2DModel

# float32 networks: eps agrees to rounding (the export folds layers in float64, then rounds)
EPS_TOL = 1e-5
SAMPLE_TOL = 1e-4


def tiny_unet(*, out_channels: int = 1, classes: int | None = None, seed: int = 0):
    """A random 8x8 UNet2DModel whose output is far from zero (DDPM's zero-initialized last
    layer would make every comparison trivial)."""
    torch.manual_seed(seed)
    unet = UNet2DModel(
        sample_size=8, in_channels=1, out_channels=out_channels, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), layers_per_block=1, norm_num_groups=4,
        num_class_embeds=classes,
    )  # fmt: skip
    with torch.no_grad():
        for p in unet.parameters():
            p.normal_(0, 0.2)
    return unet.eval()


def save_pipeline(path, unet, **scheduler):
    diffusers.DDPMPipeline(
        unet=unet, scheduler=diffusers.DDPMScheduler(**scheduler)
    ).save_pretrained(path)
    return path


def diffusers_eps(unet, scheduler, x, k, labels=None):
    """eps from the diffusers model at integer timesteps k, by its prediction type; the
    conversion uses alphas_cumprod of diffusers' betas in float64 (its own float32 table is
    off by 6e-4 relative in 1 - alpha_bar at k = 0, which x0 prediction divides by)."""
    out = unet(x, k, class_labels=labels).sample[:, : x.shape[1]].double()
    a = torch.cumprod(1 - scheduler.betas.double(), 0)[k].view(-1, 1, 1, 1)
    x = x.double()
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return out.float()
    if kind == "sample":
        return ((x - a.sqrt() * out) / (1 - a).sqrt()).float()
    return (a.sqrt() * out + (1 - a).sqrt() * x).float()  # v_prediction


@pytest.mark.parametrize(
    "name,options",
    [("linear", {}), ("scaled_linear", {"beta_start": 0.00085, "beta_end": 0.012}),
     ("squaredcos_cap_v2", {}), ("sigmoid", {})],
)  # fmt: skip
def test_betas_are_diffusers_own(name, options):
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule=name, **options)
    ours = diffusers_betas({"beta_schedule": name, "num_train_timesteps": 1000, **options})
    assert torch.equal(ours.float(), scheduler.betas)
    mapped = map_scheduler(dict(scheduler.config))
    # diffusers' alphas_cumprod[k] is scorelab's alpha_bar(k + 1)
    table = mapped.schedule.alpha_bar_table[1:]
    torch.testing.assert_close(table.float(), scheduler.alphas_cumprod, rtol=2e-5, atol=1e-7)


def test_trained_betas_are_taken_as_given():
    betas = np.linspace(1e-3, 0.05, 100)
    mapped = map_scheduler({"num_train_timesteps": 100, "trained_betas": betas.tolist()})
    assert torch.equal(mapped.schedule.betas, torch.tensor(betas, dtype=torch.float32).double())
    with pytest.raises(ScorelabError, match="trained_betas has 100 values"):
        map_scheduler({"num_train_timesteps": 99, "trained_betas": betas.tolist()})


@pytest.mark.parametrize("prediction", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large", "learned_range"])
def test_imported_eps_is_the_diffusers_models(tmp_path, prediction, variance):
    if variance == "learned_range" and prediction != "epsilon":
        pytest.skip("a learned variance goes with eps prediction (refused: tested below)")
    unet = tiny_unet(out_channels=2 if variance == "learned_range" else 1)
    save_pipeline(tmp_path, unet, prediction_type=prediction, variance_type=variance,
                  clip_sample=False)  # fmt: skip
    run = load_diffusers(tmp_path)
    scheduler = diffusers.DDPMScheduler.from_pretrained(tmp_path / "scheduler")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 1, 8, 8, generator=g)
    k = torch.tensor([0, 1, 10, 400, 998, 999])
    with torch.no_grad():
        ours = run.eps_fn(x, (k + 1).float())
        theirs = diffusers_eps(unet, scheduler, x, k)
    assert ours.abs().max() > 0.1
    torch.testing.assert_close(ours, theirs, rtol=0, atol=EPS_TOL * max(1.0, theirs.abs().max()))
    expected = {"fixed_small": "beta_tilde", "fixed_large": "beta"}
    if variance in expected:
        assert run.variance == expected[variance]
    else:  # the learned interpolation v = (r + 1) / 2 of the second half of the output
        v = run.variance(x, (k + 1).float())
        r = unet(x, k).sample[:, 1:]
        torch.testing.assert_close(v, (r + 1) / 2, rtol=0, atol=EPS_TOL)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_ddim_on_the_leading_grid_is_diffusers_ddim(tmp_path, prediction):
    unet = tiny_unet()
    save_pipeline(tmp_path, unet, prediction_type=prediction)  # clip_sample: True, the default
    run = load_diffusers(tmp_path)
    assert run.clip == 1.0
    x_T = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    scheduler = diffusers.DDIMScheduler.from_pretrained(tmp_path / "scheduler")
    scheduler.set_timesteps(10)
    x = x_T.clone()
    with torch.no_grad():
        for k in scheduler.timesteps:
            # scorelab clips x0 and re-derives eps from it (Glide's and DDPM's posterior mean);
            # diffusers' DDIM does so with use_clipped_model_output (by default it mixes the
            # clipped x0 with the unclipped eps, which no single eps function gives)
            step = scheduler.step(unet(x, k).sample, k, x, use_clipped_model_output=True)
            x = step.prev_sample
        from scorelab.samplers import sample

        ours = sample(run.eps_fn, x_T.shape, run.schedule, "ddim", 10, spacing="leading",
                      x_T=x_T).x  # fmt: skip
    assert (x - x_T).abs().max() > 0.1
    torch.testing.assert_close(ours, x, rtol=0, atol=SAMPLE_TOL)


def test_ancestral_ddpm_with_the_same_noise_is_diffusers_ddpm(tmp_path):
    unet = tiny_unet()
    save_pipeline(tmp_path, unet)
    run = load_diffusers(tmp_path)
    scheduler = diffusers.DDPMScheduler.from_pretrained(tmp_path / "scheduler")
    scheduler.set_timesteps(20)
    g = torch.Generator().manual_seed(3)
    x_T = torch.randn(4, 1, 8, 8, generator=g)
    x = x_T.clone()
    with torch.no_grad():
        for k in scheduler.timesteps:
            x = scheduler.step(unet(x, k).sample, k, x, generator=g).prev_sample
        from scorelab.samplers import sample

        # the same generator state after x_T: each step draws its noise after the network
        g2 = torch.Generator().manual_seed(3)
        torch.randn(4, 1, 8, 8, generator=g2)
        ours = sample(run.eps_fn, x_T.shape, run.schedule, "ddpm", 20, spacing="leading",
                      x_T=x_T, generator=g2).x  # fmt: skip
    torch.testing.assert_close(ours, x, rtol=0, atol=SAMPLE_TOL)


def test_class_conditional_models_take_labels_and_refuse_none(tmp_path):
    unet = tiny_unet(classes=3)
    save_pipeline(tmp_path, unet, clip_sample=False)
    run = load_diffusers(tmp_path)
    assert run.num_classes == 3
    x = torch.randn(3, 1, 8, 8)
    y = torch.tensor([0, 1, 2])
    with torch.no_grad():
        ours = run.cond_eps_fn(x, torch.full((3,), 50.0), y)
        theirs = unet(x, torch.full((3,), 49), class_labels=y).sample
    torch.testing.assert_close(ours, theirs, rtol=0, atol=EPS_TOL)
    with pytest.raises(ScorelabError, match="pass --class"):
        run.eps_fn(x, torch.full((3,), 50.0))


# --- export ------------------------------------------------------------------------------

UNET_FLAGS = dict(channels=16, channel_mult=(1, 2), res_blocks=1, attn_resolutions=(4,),
                  dropout=0.0, norm_groups=4)  # fmt: skip


def trained_run(path, **changes):
    """A scorelab digits run of a few steps, its last layer given weight (DDPM starts it at
    zero) so that the exported function is not trivially zero."""
    mp = pytest.MonkeyPatch()
    fake_sklearn(mp, n=60)
    try:
        cfg = RunConfig(**{"data": "digits", "model": UNetConfig(**UNET_FLAGS), **changes})
        cfg = cfg.replace(train=cfg.train.__class__(steps=4, batch_size=8, log_every=2,
                                                    ckpt_every=4, sample_every=0))  # fmt: skip
        train(cfg, path, progress=False, log=lambda _: None, pictures=False)
    finally:
        mp.undo()
    run = load_run(path)
    with torch.no_grad():
        for p in run.model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return run


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    base = tmp_path_factory.mktemp("export")
    runs = {
        "plain": trained_run(base / "plain"),
        "conditional": trained_run(base / "cond", conditional=True),
    }
    return {
        name: (run, export_diffusers(run, base / f"{name}_diffusers")) for name, run in runs.items()
    }


@pytest.mark.parametrize("name", ["plain", "conditional"])
def test_exported_unet_gives_scorelabs_eps(exported, name):
    run, out = exported[name]
    pipe = diffusers.DDPMPipeline.from_pretrained(out)
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    k = torch.tensor([0, 3, 250, 700, 999])
    y = torch.tensor([0, 1, 2, 9, 10]) if run.num_classes else None  # 10: the null class
    with torch.no_grad():
        ours = run.model(x, (k + 1).float(), y)
        theirs = pipe.unet(x, k, class_labels=y).sample
    assert ours.abs().max() > 0.1
    torch.testing.assert_close(theirs, ours, rtol=0, atol=EPS_TOL * max(1.0, ours.abs().max()))
    config = json.loads((out / "scheduler/scheduler_config.json").read_text())
    assert torch.equal(
        torch.tensor(config["trained_betas"], dtype=torch.float64), run.schedule.betas
    )
    assert "scorelab config" in (out / "README.md").read_text()


def test_diffusers_ddim_on_the_export_gives_scorelabs_samples(exported):
    run, out = exported["plain"]
    unet = diffusers.UNet2DModel.from_pretrained(out / "unet")
    scheduler = diffusers.DDIMScheduler.from_pretrained(out / "scheduler")
    scheduler.set_timesteps(10)
    pipe = diffusers.DDIMPipeline(unet=unet, scheduler=scheduler)
    with torch.no_grad():
        g = torch.Generator().manual_seed(5)
        theirs = pipe(batch_size=3, num_inference_steps=10, generator=g, eta=0.0,
                      use_clipped_model_output=True, output_type="np").images  # fmt: skip
        x_T = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(5))
        ours, _ = run.sample(3, sampler="ddim", steps=10, spacing="leading", x_T=x_T)
    theirs = torch.from_numpy(theirs).permute(0, 3, 1, 2) * 2 - 1  # [0, 1] NHWC -> [-1, 1]
    torch.testing.assert_close(ours, theirs, rtol=0, atol=SAMPLE_TOL)


def test_round_trip_export_then_import_gives_the_same_eps(exported):
    run, out = exported["plain"]
    back = load_run(out)  # any command taking a run directory opens the folder
    x = torch.randn(4, 1, 8, 8)
    t = torch.tensor([1.0, 20.0, 500.0, 1000.0])
    with torch.no_grad():
        torch.testing.assert_close(back.eps_fn(x, t), run.eps_fn(x, t), rtol=0, atol=EPS_TOL)
    assert back.schedule.T == 1000 and back.config.schedule.name == "linear"


def test_cli_export_sample_and_eval_on_a_pipeline_folder(exported, tmp_path, capsys):
    run, out = exported["plain"]
    assert main(["export", str(run.run_dir), "--out", str(tmp_path / "x")]) == 0
    assert (tmp_path / "x/unet/diffusion_pytorch_model.safetensors").is_file()
    cli_fails(["export", str(run.run_dir), "--out", str(tmp_path / "x")], capsys, "not empty")
    capsys.readouterr()
    assert main(["sample", str(out), "--sampler", "dpm-solver++", "--steps", "5", "--n", "4",
                 "--out", str(tmp_path / "s.npy")]) == 0  # fmt: skip
    assert np.load(tmp_path / "s.npy").shape[0] == 4
    images = np.random.default_rng(0).integers(0, 256, (6, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "d.npy", images)
    capsys.readouterr()
    assert main(["eval", str(out), "--nll", "vlb", "--data", str(tmp_path / "d.npy"),
                 "--format", "json"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["n"] == 6 and np.isfinite(report["nll_bits_per_dim"])
    cli_fails(["eval", str(out), "--nll", "vlb"], capsys, "pass --data")


def test_export_refuses_what_diffusers_cannot_express(tmp_path, exported):
    run, out = exported["plain"]
    assert exportable(run) is None
    assert "diffusers model already" in exportable(load_run(out))
    mixed = trained_run(tmp_path / "mixed", model=UNetConfig(**{**UNET_FLAGS, "norm_groups": 0}))
    assert "one norm_num_groups" in exportable(mixed)
    with pytest.raises(ScorelabError, match="--norm-groups"):
        export_diffusers(mixed, tmp_path / "never")
    assert not (tmp_path / "never").exists()
    cfg = run.config
    run.config = cfg.replace(schedule=cfg.schedule.__class__("linear", 500))
    assert "T = 500" in exportable(run)
    run.config = cfg
    assert "mlp run" in exportable(type("R", (), {"config": RunConfig(), "model": None})())


# --- bad folders ------------------------------------------------------------------------


def test_bad_folders_get_one_line(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    cli_fails(["sample", str(empty), "--out", str(tmp_path / "a.npy")], capsys, "checkpoint")
    good = save_pipeline(tmp_path / "good", tiny_unet())

    def variant(name, edit):
        import shutil

        path = tmp_path / name
        shutil.copytree(good, path)
        edit(path)
        return path

    def set_json(rel, **changes):
        def edit(path):
            d = json.loads((path / rel).read_text())
            d.update(changes)
            (path / rel).write_text(json.dumps(d))

        return edit

    cases = {
        "another kind of pipeline": (
            set_json(
                "model_index.json",
                _class_name="StableDiffusionPipeline",
                text_encoder=["transformers", "CLIPTextModel"],
            ),  # fmt: skip
            "StableDiffusionPipeline",
        ),
        "corrupt weights": (
            lambda p: (p / "unet/diffusion_pytorch_model.safetensors").write_bytes(b"\x00" * 64),
            "not a readable safetensors file",
        ),
        "pickled weights only": (
            lambda p: (p / "unet/diffusion_pytorch_model.safetensors").rename(
                p / "unet/diffusion_pytorch_model.bin"
            ),
            "pickled weights",
        ),
        "unknown scheduler key": (
            set_json("scheduler/scheduler_config.json", shift_schedule=2.0),
            "unknown key(s) shift_schedule",
        ),
        "zero terminal SNR": (
            set_json("scheduler/scheduler_config.json", rescale_betas_zero_snr=True),
            "rescale_betas_zero_snr",
        ),
        "thresholding": (
            set_json("scheduler/scheduler_config.json", thresholding=True),
            "thresholding",
        ),
        "unknown scheduler": (
            set_json(
                "scheduler/scheduler_config.json", _class_name="FlowMatchEulerDiscreteScheduler"
            ),
            "not a DDPM-family scheduler",
        ),
        "fourier time features": (
            set_json("unet/config.json", time_embedding_type="fourier"),
            "time_embedding_type",
        ),
        "learned variance with x0 prediction": (
            set_json(
                "scheduler/scheduler_config.json",
                variance_type="learned_range",
                prediction_type="sample",
            ),  # fmt: skip
            "learned variance",
        ),
        "no scheduler": (lambda p: (p / "scheduler/scheduler_config.json").unlink(), "missing"),
    }
    for i, (why, (edit, pattern)) in enumerate(cases.items()):
        folder = variant(f"case{i}", edit)
        err = cli_fails(["sample", str(folder), "--out", str(tmp_path / "a.npy")], capsys, pattern)
        assert str(folder) in err or pattern in err, why


def test_a_bare_unet_folder_with_its_scheduler_config_opens(tmp_path):
    unet = tiny_unet()
    unet.save_pretrained(tmp_path)
    diffusers.DDPMScheduler(clip_sample=False).save_pretrained(tmp_path)
    run = load_run(tmp_path)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(run.eps_fn(x, torch.tensor([5.0, 5.0])),
                                   unet(x, 4).sample, rtol=0, atol=EPS_TOL)  # fmt: skip


def test_without_diffusers_the_error_says_how_to_install(tmp_path, monkeypatch, capsys):
    folder = save_pipeline(tmp_path / "p", tiny_unet())
    monkeypatch.setitem(sys.modules, "diffusers", None)
    cli_fails(["sample", str(folder), "--out", str(tmp_path / "a.npy")], capsys,
              "pip install 'scorelab[diffusers]'")  # fmt: skip


def test_a_scorelab_classifier_guides_an_imported_model(tmp_path, capsys, monkeypatch):
    fake_sklearn(monkeypatch, n=60)
    folder = save_pipeline(tmp_path / "p", tiny_unet())  # linear betas, T = 1000
    cls = tmp_path / "cls"
    assert main(["train-classifier", "--data", "digits", "--out", str(cls), "--steps", "4",
                 "--batch-size", "16", "--channels", "8", "--no-progress"]) == 0  # fmt: skip
    out = ["--n", "4", "--sampler", "ddim", "--steps", "5", "--out", str(tmp_path / "g.npy")]
    assert main(["sample", str(folder), "--class", "3", "--classifier", str(cls), *out]) == 0
    # guidance changes the samples: the same seed without it differs
    guided = np.load(tmp_path / "g.npy")
    assert main(["sample", str(folder), *out]) == 0
    assert not np.array_equal(guided, np.load(tmp_path / "g.npy"))
    cosine = save_pipeline(tmp_path / "c", tiny_unet(), beta_schedule="squaredcos_cap_v2")
    cli_fails(["sample", str(cosine), "--class", "3", "--classifier", str(cls), *out], capsys,
              "schedule")  # fmt: skip


def test_compare_judges_a_diffusers_folder_on_the_data_given(exported, tmp_path, monkeypatch):
    from scorelab.reports.compare import compare_runs

    fake_sklearn(monkeypatch, n=60)
    run, out = exported["plain"]
    with pytest.raises(ScorelabError, match="pass --data"):
        compare_runs([run.run_dir, out], tmp_path / "r", n=8, n_nll=0, steps=3, log=print)
    _, md = compare_runs([run.run_dir, out], tmp_path / "r", n=8, n_nll=0, steps=3,
                         data="digits", log=lambda _: None)  # fmt: skip
    rows = [
        line for line in md.read_text().splitlines() if line.startswith(("| plain", "| plain_"))
    ]
    assert any(out.name in line for line in rows) and any("| plain |" in line for line in rows)
