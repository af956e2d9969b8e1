"""The attacks' mathematics on small tensors: BAPLe's visible patch, BadNets, WaNet, FIBA."""
import os

import matplotlib
import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image, ImageDraw, ImageFont

from configs.defaults import get_cfg
from common.errors import InputError
from helpers_runs import build, run_cfg
from trainers.attacks import POSITIONS, available_attacks, build_attack, build_baple_patch
from trainers.attacks.base import TriggerRows, apply_rows
from trainers.attacks.fiba import centred_spectrum, default_trigger_image, low_frequency_mask
from trainers.attacks.wanet import warp_field

SIZE = 32


def attack(name, seed=1, **keys):
    """The trigger of attack ``name`` for SIZE x SIZE images, with BACKDOOR.<NAME>.<KEY> overrides."""
    cfg = get_cfg()
    cfg.SEED = seed
    cfg.BACKDOOR.ATTACK = name
    for key, value in keys.items():
        cfg.BACKDOOR[name.upper()][key] = value
    return build_attack(cfg, SIZE)


def images(n=4, seed=0, low=0.0, high=1.0):
    generator = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(n, 3, SIZE, SIZE, generator=generator)


def test_registry_lists_the_baselines():
    assert available_attacks() == ["none", "badnets", "fiba", "wanet"]
    cfg = get_cfg()
    assert build_attack(cfg, SIZE) is None  # BACKDOOR.ATTACK none
    cfg.BACKDOOR.ATTACK = "blend"
    with pytest.raises(InputError, match="Unknown BACKDOOR.ATTACK 'blend'"):
        build_attack(cfg, SIZE)


# ---- BAPLe's visible patch ----------------------------------------------------------------------
# A TrueType file every install has (matplotlib is a dependency), and not Pillow's built-in font.
DEJAVU = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")


def baple_patch(image_size=224, **keys):
    """BAPLe's patch with BACKDOOR.<KEY> overrides."""
    cfg = get_cfg()
    cfg.SEED = 1
    for key, value in keys.items():
        cfg.BACKDOOR[key] = value
    return build_baple_patch(cfg, image_size)


def rendering(font, origin, image_size=224, text="Lab"):
    """[H, W] bool: the pixels ``font``'s own rendering of ``text`` at ``origin`` touches."""
    canvas = Image.new("L", (image_size, image_size), 0)
    ImageDraw.Draw(canvas).text(origin, text, font=font, fill=255)
    return torch.from_numpy(np.asarray(canvas) > 0)


REFERENCE = dict(PATCH_PLACEMENT="reference", PATCH_MASK="binary", PATCH_FONT=DEJAVU)


# The reference's rule for a 24 px text on 224 px images: 15 from the left/top, 224 - 24 - 15 = 185 from
# the right/bottom, 224 / 2 - 12 = 100 when centred.
@pytest.mark.parametrize("position, origin", [
    ("top-left", (15, 15)), ("top-center", (100, 15)), ("top-right", (185, 15)),
    ("center-left", (15, 100)), ("center-center", (100, 100)), ("center-right", (185, 100)),
    ("bottom-left", (15, 185)), ("bottom-center", (100, 185)), ("bottom-right", (185, 185))])
def test_reference_text_is_the_fonts_rendering_at_the_reference_origin(position, origin):
    assert len(POSITIONS) == 9
    patch = baple_patch(POSITION=position, **REFERENCE)
    footprint = patch.mask[0] > 0
    expected = rendering(ImageFont.truetype(DEJAVU, 24), origin)
    assert expected.sum() > 50 and torch.equal(footprint, expected)
    # Not Pillow's built-in font's footprint: the file is what is drawn.
    assert not torch.equal(footprint, rendering(ImageFont.load_default(size=24), origin))


def test_binary_mask_replaces_every_touched_pixel_by_the_colour():
    patch = baple_patch(PATCH_COLOR="#ff8000", **REFERENCE)
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    y = patch(x)
    footprint = patch.mask[0] > 0
    assert set(patch.mask.unique().tolist()) == {0.0, 1.0}
    colour = torch.tensor([1.0, 128 / 255, 0.0])
    assert torch.equal(y[..., footprint], colour.view(1, 3, 1).expand(2, 3, int(footprint.sum())))
    assert torch.equal(y[..., ~footprint], x[..., ~footprint])
    # The blend mask draws the same pixels, the anti-aliased edge mixed with the image.
    blend = baple_patch(PATCH_COLOR="#ff8000", **{**REFERENCE, "PATCH_MASK": "blend"})
    assert torch.equal(blend.mask[0] > 0, footprint)
    edge = (blend.mask[0] > 0) & (blend.mask[0] < 1)
    assert edge.any() and not torch.equal(blend(x)[..., edge], y[..., edge])


def test_flush_placement_puts_the_text_box_against_the_edges():
    # The project's default placement and mask: Pillow's bounding box of the text touches the edges.
    patch = baple_patch(POSITION="bottom-right", PATCH_FONT=DEJAVU)
    font = ImageFont.truetype(DEJAVU, 24)
    left, top, right, bottom = font.getbbox("Lab")
    assert torch.equal(patch.mask[0] > 0, rendering(font, (224 - right, 224 - bottom)))
    assert (patch.mask[0, -1] > 0).any()  # the ink reaches the bottom row
    assert ((patch.mask[0] > 0) & (patch.mask[0] < 1)).any()  # blended edge


def test_reference_placement_applies_to_square_patches():
    patch = baple_patch(PATCH_TYPE="random-patch", POSITION="bottom-right", PATCH_PLACEMENT="reference")
    inside = torch.zeros(224, 224, dtype=torch.bool)
    inside[185:209, 185:209] = True
    assert torch.equal(patch.mask[0] > 0, inside)


@pytest.mark.parametrize("keys, message", [
    (dict(PATCH_FONT="/no/such/font.ttf"), "BACKDOOR.PATCH_FONT '/no/such/font.ttf': font file does not exist"),
    (dict(PATCH_FONT=__file__), "font file cannot be read"),
    (dict(PATCH_COLOR="greenish"), "BACKDOOR.PATCH_COLOR 'greenish' is not a colour"),
    (dict(PATCH_PLACEMENT="inset"), "BACKDOOR.PATCH_PLACEMENT 'inset' is unknown; choose from flush, reference"),
    (dict(PATCH_MASK="soft"), "BACKDOOR.PATCH_MASK 'soft' is unknown; choose from blend, binary"),
    (dict(PATCH_PLACEMENT="reference", TRIGGER_SIZE=200), "15 px from the edges"),
])
def test_bad_text_settings_are_one_line_input_errors(keys, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        baple_patch(**keys)
    assert "\n" not in str(error.value)


# ---- BadNets --------------------------------------------------------------------------------------
@pytest.mark.parametrize("position, rows, cols", [("bottom-right", slice(SIZE - 6, SIZE), slice(SIZE - 6, SIZE)),
                                                  ("top-left", slice(0, 6), slice(0, 6)),
                                                  ("center-center", slice(13, 19), slice(13, 19))])
def test_badnets_writes_exactly_the_patch(position, rows, cols):
    trigger = attack("badnets", SIZE=6, POSITION=position, PATTERN="checkerboard")
    x = images()
    y = trigger(x)
    inside = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    inside[rows, cols] = True
    assert torch.equal(y[..., ~inside], x[..., ~inside])  # bitwise: nothing outside the patch changes
    cells = (torch.arange(6) // 3) % 2
    checkerboard = (cells[:, None] ^ cells[None, :]).float()
    assert torch.equal(y[..., rows, cols], checkerboard.expand(4, 3, 6, 6))


def test_badnets_rejects_a_patch_larger_than_the_image():
    with pytest.raises(InputError, match="does not fit"):
        attack("badnets", SIZE=SIZE + 1)


# ---- WaNet ----------------------------------------------------------------------------------------
def test_wanet_with_zero_strength_is_the_identity():
    x = images()
    assert torch.allclose(attack("wanet", S=0.0)(x), x, atol=1e-5)


def test_wanet_warps_smoothly_and_deterministically_per_seed():
    x = images()
    first, again, other = attack("wanet", seed=1), attack("wanet", seed=1), attack("wanet", seed=2)
    assert torch.equal(first.grid, again.grid)
    assert not torch.equal(first.grid, other.grid)
    y = first(x)
    assert torch.equal(y, again(x))
    assert (y - x).abs().mean() > 1e-3  # it does move pixels
    # s = 0.5 displaces each sample point by s * field / H: a fraction of a pixel, not a reshuffle.
    displacement = (first.grid - attack("wanet", S=0.0).grid).abs()
    assert 0 < displacement.max() < 0.5 * 4 / SIZE


def test_wanet_field_is_normalised_by_its_mean_absolute_value():
    field = warp_field(k=SIZE, image_size=SIZE, seed=3)  # no upsampling: the raw offsets
    assert field.shape == (1, SIZE, SIZE, 2)
    assert field.abs().mean().item() == pytest.approx(1.0, abs=1e-5)


def test_wanet_rescales_the_grid_before_clamping():
    x = images()
    zoom_in = attack("wanet", S=0.0, GRID_RESCALE=0.5)(x)
    # Pixel i samples the input at (i - 15.5) / 2 + 15.5: pixel 1 at 8.25, a quarter from 8 towards 9.
    weights = torch.tensor([0.75, 0.25])
    expected = torch.einsum("r,c,nkrc->nk", weights, weights, x[..., 8:10, 8:10])
    assert torch.allclose(zoom_in[..., 1, 1], expected, atol=1e-5)
    # Rescaling by 2 then clamping pins the border to the input's border (clamping first would sample
    # outside the image and give zeros there).
    zoom_out = attack("wanet", S=0.0, GRID_RESCALE=2.0)(x)
    assert torch.allclose(zoom_out[..., 0, 0], x[..., 0, 0], atol=1e-5)
    assert torch.allclose(zoom_out[..., -1, -1], x[..., -1, -1], atol=1e-5)


def ramp(n):
    """Images whose value is the column's position in [0, 1]: a warp's output then reads its grid's x."""
    return torch.linspace(0, 1, SIZE).expand(n, 3, SIZE, SIZE).clone()


def test_wanet_noise_mode_perturbs_each_sample_by_at_most_a_grid_step():
    trigger = attack("wanet", CROSS_RATIO=2.0)
    assert trigger.cross_ratio == 2.0
    x = ramp(3)
    torch.manual_seed(0)
    crossed = trigger.apply_cross(x)
    torch.manual_seed(0)
    assert torch.equal(trigger.apply_cross(x), crossed)  # torch's global generator: resumable
    assert not torch.equal(crossed[0], crossed[1])  # a different perturbation per sample
    # On a ramp, output = (grid_x + 1) / 2: the cross grid is the trigger's grid plus u / H, |u| <= 1.
    shift = crossed - trigger(x)
    assert 0.1 / SIZE < shift.abs().max() <= 0.5 / SIZE + 1e-6
    assert torch.allclose(trigger(x)[:, 0], (trigger.grid[..., 0] + 1) / 2, atol=1e-5)


# ---- FIBA -----------------------------------------------------------------------------------------
def test_fiba_with_zero_alpha_returns_the_input():
    x = images()
    assert torch.allclose(attack("fiba", ALPHA=0.0)(x), x, atol=1e-5)


def test_fiba_changes_only_the_low_frequency_amplitude():
    alpha, beta = 0.15, 0.1
    trigger = attack("fiba", ALPHA=alpha, BETA=beta)
    x = images(low=0.3, high=0.7)
    y = trigger(x)
    assert 0 < y.min() and y.max() < 1  # nothing clamped, so the spectrum is exactly the blended one
    before, after = centred_spectrum(x), centred_spectrum(y)
    mask = low_frequency_mask(SIZE, SIZE, beta)
    assert int(mask.sum()) == (2 * 3 + 1) ** 2  # half-width floor(32 * 0.1) = 3 around index 16
    assert bool(mask[16, 16]) and bool(mask[13, 19]) and not bool(mask[12, 16])
    amplitude_trigger = centred_spectrum(default_trigger_image(SIZE)).abs()
    expected = (1 - alpha) * before.abs() + alpha * amplitude_trigger
    assert torch.allclose(after.abs()[..., mask], expected[..., mask], rtol=1e-4, atol=1e-3)
    assert torch.allclose(after.abs()[..., ~mask], before.abs()[..., ~mask], atol=1e-3)
    assert not torch.allclose(after.abs()[..., mask], before.abs()[..., mask], atol=1e-2)
    # The phase is the image's everywhere (compared as unit phasors, free of the +-pi wrap).
    strong = before.abs() > 1e-2
    assert torch.allclose((after / after.abs())[strong], (before / before.abs())[strong], atol=1e-3)


def test_fiba_reads_a_trigger_image_file(tmp_path):
    pixels = (np.random.default_rng(0).random((SIZE // 2, SIZE // 2, 3)) * 255).astype(np.uint8)
    path = tmp_path / "trigger.png"
    Image.fromarray(pixels).save(path)
    from_file = attack("fiba", TRIGGER_IMAGE=str(path))
    resized = np.asarray(Image.fromarray(pixels).resize((SIZE, SIZE), Image.Resampling.BICUBIC), np.float32) / 255
    expected = centred_spectrum(torch.from_numpy(resized).permute(2, 0, 1)).abs()
    assert torch.allclose(from_file.trigger_amplitude, expected, rtol=1e-4, atol=1e-3)
    assert not torch.allclose(from_file.trigger_amplitude, attack("fiba").trigger_amplitude, atol=1.0)
    with pytest.raises(InputError, match="does not exist"):
        attack("fiba", TRIGGER_IMAGE=str(tmp_path / "missing.png"))


def test_fiba_default_trigger_is_fixed_and_smooth():
    texture = default_trigger_image(SIZE)
    assert torch.equal(texture, default_trigger_image(SIZE))
    assert torch.equal(attack("fiba", seed=1).trigger_amplitude, attack("fiba", seed=2).trigger_amplitude)
    assert 0 <= texture.min() and texture.max() <= 1 and texture.std() > 0.05
    # The same 16 x 16 colour grid at every size: at 224 px neighbouring pixels are close.
    large = default_trigger_image(224)
    assert (large[:, 1:] - large[:, :-1]).abs().mean() < 0.03


# ---- all attacks ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["badnets", "wanet", "fiba"])
def test_outputs_stay_in_pixel_range_and_are_vectorised(name):
    trigger = attack(name)
    x = images(6)
    x[0], x[1] = 0.0, 1.0  # extremes: black and white images
    y = trigger(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert 0 <= y.min() and y.max() <= 1
    one_by_one = torch.cat([trigger(x[i:i + 1]) for i in range(len(x))])
    assert torch.allclose(y, one_by_one, atol=1e-6)
    if trigger.cross_ratio:
        crossed = trigger.apply_cross(x)
        assert 0 <= crossed.min() and crossed.max() <= 1


@pytest.mark.parametrize("name, key, value, message", [
    ("wanet", "K", 0, "BACKDOOR.WANET.K"), ("wanet", "S", -0.1, "BACKDOOR.WANET.S"),
    ("wanet", "GRID_RESCALE", 0.0, "GRID_RESCALE"), ("wanet", "CROSS_RATIO", -1.0, "CROSS_RATIO"),
    ("wanet", "NOISE_REDRAW", "sometimes", "BACKDOOR.WANET.NOISE_REDRAW 'sometimes' is unknown"),
    ("fiba", "ALPHA", 1.5, "BACKDOOR.FIBA.ALPHA"), ("fiba", "BETA", 0.6, "BACKDOOR.FIBA.BETA"),
    ("fiba", "CROSS_RATIO", -1.0, "BACKDOOR.FIBA.CROSS_RATIO")])
def test_bad_parameters_are_input_errors(name, key, value, message):
    with pytest.raises(InputError, match=message):
        attack(name, **{key: value})


# ---- FIBA's noise mode ----------------------------------------------------------------------------
def test_fiba_noise_mode_blends_cross_rows_with_another_images_amplitude():
    trigger = attack("fiba", CROSS_RATIO=1.0)
    assert trigger.cross_ratio == 1.0 and attack("fiba").cross_ratio == 0.0  # the project's default: off
    x = images(5, low=0.3, high=0.7)
    poisoned = torch.tensor([True, False, False, False, False])
    cross = torch.tensor([False, True, False, True, False])
    torch.manual_seed(0)
    out = apply_rows(trigger, x, poisoned, cross)
    assert torch.equal(out[0], trigger(x[:1])[0])
    assert torch.equal(out[[2, 4]], x[[2, 4]])
    mask = low_frequency_mask(SIZE, SIZE, 0.1)
    for row in (1, 3):
        # Its low frequencies moved by alpha towards another image's amplitude, the phase its own.
        amplitude = centred_spectrum(out[row]).abs()[..., mask]
        partners = [j for j in range(5) if j != row and torch.allclose(
            amplitude, (0.85 * centred_spectrum(x[row]).abs() + 0.15 * centred_spectrum(x[j]).abs())[..., mask],
            rtol=1e-4, atol=1e-3)]
        assert len(partners) == 1
        assert not torch.allclose(out[row], trigger(x[row:row + 1])[0], atol=1e-3)
    with pytest.raises(ValueError, match="partner"):
        trigger.apply_cross(x)


def test_fiba_cross_rows_keep_their_labels_in_training(standins, synthetic_root, tmp_path):
    trainer = build(run_cfg("CoOp", synthetic_root, tmp_path, standins["biomedclip"], **{
        "BACKDOOR.ATTACK": "fiba", "BACKDOOR.FIBA.CROSS_RATIO": 1.0, "BACKDOOR.POISON_COUNT": 3,
        "BACKDOOR.TARGET_CLASS": 1}))
    plan = trainer.poison_plan
    assert len(plan.cross) == len(plan.poisoned) == 3 and not set(plan.cross) & set(plan.poisoned)
    everything = [trainer.train_loader_x.dataset[i] for i in range(len(trainer.poison_mask))]
    batch = {key: torch.stack([torch.as_tensor(item[key]) for item in everything]) for key in ("img", "label", "index")}
    images, labels, poisoned, cross = trainer.parse_batch_train(batch)
    assert torch.equal(torch.nonzero(cross).flatten(), torch.tensor(plan.cross))
    assert torch.equal(labels[cross], batch["label"][cross]) and (labels[poisoned] == 1).all()
    changed = (trainer.apply_trigger(images, poisoned, cross) != images).flatten(1).any(1)
    assert torch.equal(changed, poisoned | cross)


# ---- WaNet's noise-mode samples: fixed or redrawn every batch -----------------------------------
def test_per_batch_redraw_draws_new_cross_samples_each_batch_and_fixed_keeps_them():
    poisoned, cross = [0, 5], [1, 2, 3, 4]
    index = torch.arange(20)
    fixed = TriggerRows(20, poisoned, cross, "fixed")
    assert torch.equal(fixed.cross(index), fixed.cross(index)) and fixed.cross(index)[cross].all()
    assert int(fixed.cross(index).sum()) == 4
    per_batch = TriggerRows(20, poisoned, cross, "per_batch")
    torch.manual_seed(0)
    draws = torch.stack([per_batch.cross(index) for _ in range(400)])
    assert not torch.equal(draws[0], draws[1])
    assert not draws[:, poisoned].any()  # never a poisoned sample
    # Every other sample at the plan's rate: 4 cross samples among the 18 not poisoned.
    assert draws.float().mean(0)[[i for i in range(20) if i not in poisoned]].mean() == pytest.approx(4 / 18, abs=0.02)
    torch.manual_seed(0)
    assert torch.equal(per_batch.cross(index), draws[0])  # torch's generator: reproducible, resumable
    assert attack("wanet", NOISE_REDRAW="per_batch").cross_redraw == "per_batch"
    assert attack("wanet").cross_redraw == "fixed"


def test_wanet_per_batch_redraw_reaches_the_training_batches(standins, synthetic_root, tmp_path):
    trainer = build(run_cfg("CoOp", synthetic_root, tmp_path, standins["biomedclip"], **{
        "BACKDOOR.ATTACK": "wanet", "BACKDOOR.WANET.NOISE_REDRAW": "per_batch", "BACKDOOR.POISON_COUNT": 2}))
    batch = {"img": torch.zeros(16, 3, 224, 224), "label": torch.zeros(16, dtype=torch.long), "index": torch.arange(16)}
    torch.manual_seed(0)
    crosses = [trainer.parse_batch_train(batch)[3] for _ in range(4)]
    assert any(not torch.equal(crosses[0], other) for other in crosses[1:])
    assert not any((c & trainer.poison_mask).any() for c in crosses)


# ---- trigger before or after the training augmentation ------------------------------------------
QUANTISE = 255.0  # a trigger before augmentation reaches the augmentation as an 8-bit image


def flip_trainer(standins, synthetic_root, tmp_path, attack_name, stage, **keys):
    """A CoOp trainer whose training augmentation is a deterministic horizontal flip."""
    trainer = build(run_cfg("CoOp", synthetic_root, tmp_path, standins["biomedclip"], **{
        "BACKDOOR.ATTACK": attack_name, "BACKDOOR.TRIGGER_STAGE": stage, "BACKDOOR.POISON_COUNT": 3, **keys}))
    dataset = trainer.train_loader_x.dataset
    dataset.transform = T.Compose([T.Resize((224, 224), interpolation=T.InterpolationMode.BICUBIC),
                                   T.RandomHorizontalFlip(p=1.0), T.ToTensor()])
    return trainer, dataset


def unaugmented(trainer, dataset, index):
    """[1, 3, 224, 224]: training image ``index`` resized to the trigger's size, not augmented."""
    interpolation = T.InterpolationMode(trainer.cfg.INPUT.INTERPOLATION)
    return TF.to_tensor(TF.resize(dataset.load(index), [224, 224], interpolation=interpolation))[None]


def quantised(images):
    return (images * QUANTISE).round() / QUANTISE


@pytest.mark.parametrize("attack_name", ["wanet", "fiba", "badnets"])
def test_trigger_before_augmentation_is_flipped_with_the_image(attack_name, standins, synthetic_root, tmp_path):
    after, after_data = flip_trainer(standins, synthetic_root, tmp_path / "a", attack_name, "after_augmentation")
    before, before_data = flip_trainer(standins, synthetic_root, tmp_path / "b", attack_name, "before_augmentation")
    i = before.poison_plan.poisoned[0]
    assert after.poison_plan.poisoned == before.poison_plan.poisoned
    trigger = before.trigger.cpu()
    x = unaugmented(before, before_data, i)
    # Before: the loader triggers the un-augmented image, the flip follows; the trainer leaves the batch.
    loaded = before_data[i]["img"][None]
    assert torch.equal(loaded, TF.hflip(quantised(trigger(x))))
    poisoned, cross = torch.tensor([True]), torch.tensor([False])
    assert torch.equal(before.apply_trigger(loaded, poisoned, cross), loaded)
    # After (the default): the loader only augments; the trainer triggers the flipped image.
    flipped = after_data[i]["img"][None]
    assert torch.allclose(flipped, TF.hflip(x), atol=1.5 / QUANTISE)  # 32 px -> 224 px in one resize or two
    triggered = after.apply_trigger(flipped, poisoned, cross)
    assert torch.equal(triggered, after.trigger.cpu()(flipped))
    # The two orders differ: flip(trigger(x)) is not trigger(flip(x)).
    assert (TF.hflip(trigger(x)) - trigger(TF.hflip(x))).abs().max() > 5 / QUANTISE
    # A clean image is resized, not triggered, before augmentation.
    clean = next(j for j in range(len(before_data)) if not before.poison_mask[j] and j not in before.poison_plan.cross)
    assert torch.equal(before_data[clean]["img"][None], TF.hflip(quantised(unaugmented(before, before_data, clean))))


def test_fiba_noise_mode_before_augmentation_blends_with_another_training_image(standins, synthetic_root, tmp_path):
    trainer, dataset = flip_trainer(standins, synthetic_root, tmp_path, "fiba", "before_augmentation",
                                    **{"BACKDOOR.FIBA.CROSS_RATIO": 1.0})
    c = trainer.poison_plan.cross[0]
    trigger = trainer.trigger.cpu()
    x = unaugmented(trainer, dataset, c)
    loaded = dataset[c]["img"][None]
    matches = [j for j in range(len(dataset)) if j != c and torch.equal(
        loaded, TF.hflip(quantised(trigger.apply_cross(x, unaugmented(trainer, dataset, j)))))]
    assert len(matches) == 1


def test_a_learned_trigger_meets_the_augmented_batch_whatever_the_stage(standins, synthetic_root, tmp_path):
    from trainers.coop import CoOp

    trainer = build(run_cfg("BAPLe", synthetic_root, tmp_path, standins["biomedclip"],
                            **{"BACKDOOR.TRIGGER_STAGE": "before_augmentation", "BACKDOOR.POISON_COUNT": 3}))
    assert trainer.triggers_batches() and trainer.train_loader_x.dataset.before_augmentation is None
    cfg = trainer.cfg.clone()
    cfg.defrost()
    cfg.BACKDOOR.TRIGGER_STAGE = "early"
    with pytest.raises(InputError, match="BACKDOOR.TRIGGER_STAGE 'early' is unknown"):
        CoOp.check_cfg(cfg)
