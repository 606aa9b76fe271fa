"""Feature extractors: identity, the small digit classifier, Inception-v3 (random weights)."""

import numpy as np
import pytest
import torch

from diffmem.metrics import features


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.data / 8.0 - 1).reshape(-1, 1, 8, 8).astype(np.float32)  # pixel values 0..16 -> [-1, 1]
    order = np.random.default_rng(0).permutation(len(x))
    return x[order], bunch.target[order]


def test_data_features_flatten(rng):
    x = rng.normal(size=(4, 1, 3, 5)).astype(np.float32)
    out = features.extract_features("data", x)
    assert out.shape == (4, 15) and out.dtype == np.float64 and np.array_equal(out, x.reshape(4, 15))
    with pytest.raises(ValueError, match="unknown feature space"):
        features.extract_features("pixels", x)
    with pytest.raises(ValueError, match="needs its network"):
        features.extract_features("classifier", x)


def test_classifier_learns_digits(digits):
    x, y = digits
    gen = torch.Generator().manual_seed(0)
    global_state = torch.get_rng_state()
    model = features.train_classifier(x[:1400], y[:1400], epochs=20, lr=5e-3, generator=gen, device="cpu")
    assert torch.equal(torch.get_rng_state(), global_state)  # only the explicit generator was used
    assert not model.training
    assert features.classifier_accuracy(model, x[1400:], y[1400:]) > 0.95
    feats = features.extract_features("classifier", x[:5], model=model)
    assert feats.shape == (5, 128) and feats.dtype == np.float64
    # flat input plus image_shape gives the same features
    flat = features.extract_features("classifier", x[:5].reshape(5, 64), model=model, image_shape=(1, 8, 8))
    assert np.array_equal(flat, feats)


def test_classifier_training_is_reproducible(digits):
    x, y = digits
    models = [features.train_classifier(x[:200], y[:200], epochs=1, generator=torch.Generator().manual_seed(3))
              for _ in range(2)]
    other = features.train_classifier(x[:200], y[:200], epochs=1, generator=torch.Generator().manual_seed(4))
    a, b, c = (m.state_dict() for m in (*models, other))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["head.weight"], c["head.weight"])


@pytest.mark.parametrize("height, width", [(8, 8), (7, 5), (2, 3), (32, 32)])
def test_max_pool_without_autograd_equals_max_pool2d_bit_for_bit(rng, height, width):
    x = torch.relu(torch.as_tensor(rng.normal(size=(6, 4, height, width)), dtype=torch.float32))
    x[0, 0, :2, :2] = 0.5  # a tie
    x[1, 1, 0, 0] = float("nan")  # a NaN keeps its block NaN
    pool = features.MaxPool2x2()
    with torch.no_grad():
        got = pool(x)
    want = torch.nn.functional.max_pool2d(x, 2)
    assert got.shape == want.shape and torch.equal(torch.nan_to_num(got, nan=-7.0), torch.nan_to_num(want, nan=-7.0))
    assert bool(torch.isnan(got[1, 1, 0, 0]))
    # with autograd it is max_pool2d itself: the gradient goes to the first maximum of each block
    leaf = x.clone().requires_grad_(True)
    pool(leaf).nansum().backward()
    other = x.clone().requires_grad_(True)
    torch.nn.functional.max_pool2d(other, 2).nansum().backward()
    assert torch.equal(leaf.grad, other.grad)


def test_classifier_features_do_not_depend_on_the_batch_size(rng):
    model = features.DigitClassifier().eval()
    x = rng.uniform(-1, 1, size=(300, 1, 8, 8)).astype(np.float32)
    ref = features.classifier_features(model, x, batch_size=300)
    for size in (4, 32, 128, 299, 1024):  # 299: one batch of 150 and one of 150, not 299 and 1
        assert np.array_equal(features.classifier_features(model, x, batch_size=size), ref), size
    for count in (129, 131, 259, 387):  # counts whose batches of 128 would end with 1-3 rows
        want = features.classifier_features(model, x[:count], batch_size=1024)
        assert np.array_equal(features.classifier_features(model, x[:count], batch_size=128), want), count


@pytest.mark.parametrize("size", [8, 32])
def test_classifier_features_with_relus_in_place_equal_the_module_bit_for_bit(rng, size):
    model = features.DigitClassifier().eval()
    x = rng.uniform(-1, 1, size=(260, 1, size, size)).astype(np.float32)
    with torch.no_grad():
        want = torch.cat([model.features(torch.as_tensor(x[i : i + 130])) for i in (0, 130)]).double().numpy()
    assert np.array_equal(features.classifier_features(model, x), want)  # batches of 130 too


def test_classifier_handles_32x32_images(rng):
    model = features.DigitClassifier(num_classes=3).eval()
    x = rng.uniform(-1, 1, size=(3, 1, 32, 32)).astype(np.float32)
    assert features.classifier_features(model, x).shape == (3, 128)
    assert model(torch.as_tensor(x)).shape == (3, 3)


def test_classifier_save_load_round_trip(tmp_path, rng):
    model = features.DigitClassifier(feature_dim=16).eval()
    features.save_classifier(model, tmp_path / "c.pt")
    back = features.load_classifier(tmp_path / "c.pt")
    assert back.args == {"in_channels": 1, "num_classes": 10, "feature_dim": 16}
    x = rng.normal(size=(3, 1, 8, 8)).astype(np.float32)
    assert np.array_equal(features.classifier_features(model, x), features.classifier_features(back, x))
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        features.load_classifier(tmp_path / "nowhere.pt")


# torchvision's Inception3 layout (the FID weights file is its state_dict with num_classes=1008 and no
# AuxLogits), written out here from torchvision's source rather than read from our model
_CONVS = {
    "A": ["branch1x1", "branch5x5_1", "branch5x5_2", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3",
          "branch_pool"],
    "B": ["branch3x3", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"],
    "C": ["branch1x1", "branch7x7_1", "branch7x7_2", "branch7x7_3", "branch7x7dbl_1", "branch7x7dbl_2",
          "branch7x7dbl_3", "branch7x7dbl_4", "branch7x7dbl_5", "branch_pool"],
    "D": ["branch3x3_1", "branch3x3_2", "branch7x7x3_1", "branch7x7x3_2", "branch7x7x3_3", "branch7x7x3_4"],
    "E": ["branch1x1", "branch3x3_1", "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_1", "branch3x3dbl_2",
          "branch3x3dbl_3a", "branch3x3dbl_3b", "branch_pool"],
}
_BLOCKS = {"5b": "A", "5c": "A", "5d": "A", "6a": "B", "6b": "C", "6c": "C", "6d": "C", "6e": "C", "7a": "D",
           "7b": "E", "7c": "E"}


def fid_weights_keys() -> set[str]:
    convs = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3"]
    convs += [f"Mixed_{b}.{c}" for b, kind in _BLOCKS.items() for c in _CONVS[kind]]
    keys = {f"{c}.{t}" for c in convs for t in ("conv.weight", "bn.weight", "bn.bias", "bn.running_mean",
                                                 "bn.running_var", "bn.num_batches_tracked")}
    return keys | {"fc.weight", "fc.bias"}


def test_inception_key_set_and_size_match_the_fid_weights_layout():
    model = features.InceptionV3Features()
    state = model.state_dict()
    assert set(state) == fid_weights_keys() and len(state) == 94 * 6 + 2
    assert state["fc.weight"].shape == (1008, 2048) and state["fc.bias"].shape == (1008,)
    assert state["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert state["Mixed_7c.branch_pool.conv.weight"].shape == (192, 2048, 1, 1)
    assert state["Mixed_6b.branch7x7_2.conv.weight"].shape == (128, 128, 1, 7)
    # torchvision's inception_v3 has 27,161,264 parameters (1000 classes, with AuxLogits: 3,326,696);
    # the FID network: less AuxLogits, plus 8 more classes (8 x 2048 + 8)
    assert sum(p.numel() for p in model.parameters()) == 27_161_264 - 3_326_696 + 8 * 2048 + 8
    assert all(m.eps == 1e-3 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_inception_at_random_weights_shapes_and_determinism(rng):
    model = features.InceptionV3Features().eval()
    x = rng.uniform(-1, 1, size=(3, 1, 8, 8))
    feats = features.extract_features("inception", x, model=model)
    assert feats.shape == (3, 2048) and feats.dtype == np.float64
    assert np.all(np.isfinite(feats)) and np.all(feats >= 0)  # a mean of ReLU outputs
    # the same input gives the same features, alone or in a batch of another size
    again = features.extract_features("inception", x[1:2], model=model, batch_size=1)
    np.testing.assert_allclose(again[0], feats[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(features.extract_features("inception", x, model=model), feats)
    # grayscale is the same image in each colour channel; 32x32 RGB input works too
    rgb = np.repeat(x, 3, axis=1)
    np.testing.assert_allclose(features.extract_features("inception", rgb, model=model), feats, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        logits = model.logits(torch.as_tensor(rng.uniform(-1, 1, size=(2, 3, 32, 32)), dtype=torch.float32))
    assert logits.shape == (2, 1008)
    assert (model.Mixed_7b.pool, model.Mixed_7c.pool) == ("avg", "max")


def test_fid_pooling_leaves_padding_out_of_the_average():
    # TF's average pool (and so the FID network's Mixed_5b-d, 6b-e, 7b) divides by the number of
    # valid pixels; torchvision's default counts the zero padding. A constant map stays constant.
    block = features.InceptionA(4, pool_features=4).eval()
    with torch.no_grad():
        for conv in (block.branch_pool.conv,):
            conv.weight.zero_()
            conv.weight[:, 0] = 1.0  # the pool branch reads channel 0
        out = block(torch.ones(1, 4, 5, 5))[:, -4:]  # the pool branch's output channels
    assert torch.allclose(out, out[..., 2:3, 2:3].expand_as(out)), "padding entered the average"


def test_digest_of_the_weights_file(tmp_path):
    import hashlib

    model = features.InceptionV3Features()
    plain = tmp_path / "weights.pth"
    torch.save(model.state_dict(), plain)
    digest = hashlib.sha256(plain.read_bytes()).hexdigest()
    named = tmp_path / f"pt_inception-2015-12-05-{digest[:8]}.pth"
    named.write_bytes(plain.read_bytes())
    assert features.check_digest(plain) is None  # nothing to check
    assert features.check_digest(named) == digest[:8]
    assert features.check_digest(plain, digest.upper()) == digest
    wrong = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    wrong.write_bytes(plain.read_bytes())
    with pytest.raises(ValueError, match="does not start with 6726825d"):
        features.load_inception(wrong)
    with pytest.raises(ValueError, match="does not start with 00000000"):
        features.load_inception(plain, sha256="00000000")
    assert isinstance(features.load_inception(named), features.InceptionV3Features)


def test_load_inception(tmp_path):
    model = features.InceptionV3Features()
    # the weights file may come without BatchNorm's num_batches_tracked (saved by an older torch)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "inception.pt")
    loaded = features.load_inception(tmp_path / "inception.pt")
    assert not loaded.training
    assert torch.equal(loaded.Mixed_7c.branch_pool.conv.weight, model.Mixed_7c.branch_pool.conv.weight)
    assert torch.equal(loaded.fc.weight, model.fc.weight)
    with pytest.raises(FileNotFoundError, match="missing.pt.*pt_inception-2015-12-05-6726825d.pth"):
        features.load_inception(tmp_path / "missing.pt")
    partial = dict(state)
    del partial["Mixed_6e.branch1x1.conv.weight"]
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match="1 missing"):
        features.load_inception(tmp_path / "partial.pt")
    # torchvision's ImageNet weights: 1000-class fc and an auxiliary head
    imagenet = {**state, "fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000),
                "AuxLogits.fc.weight": torch.zeros(1000, 768)}
    torch.save(imagenet, tmp_path / "imagenet.pt")
    with pytest.raises(ValueError, match="unexpected.*wrong shape.*torchvision's ImageNet"):
        features.load_inception(tmp_path / "imagenet.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="cannot be read"):
        features.load_inception(tmp_path / "junk.pt")
