"""FID/KID maths, exact statistics merging, resize conventions and the Inception extractor end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
from infinity_eval.fid import (
    FeatureStats,
    compute_fid,
    extract_features,
    fid_from_stats,
    frechet_distance,
    kernel_inception_distance,
    load_fid_inception,
)
from infinity_eval.fid.preprocess import preprocess_for_fid, resize_clean, resize_tf1_bilinear, resize_torch_bilinear
from PIL import Image
from resize_images import SAMPLE_POSITIONS, procedural_images

GOLDEN = Path(__file__).parent / "fixtures" / "resize_golden.npz"


def _scipy_fid(mu1, s1, mu2, s2) -> float:
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


def test_frechet_matches_diagonal_closed_form() -> None:
    rng = np.random.default_rng(0)
    d = 64
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    a, b = rng.uniform(0.1, 3, size=d), rng.uniform(0.1, 3, size=d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert abs(got - expected) <= 1e-6 * expected


def test_frechet_matches_scipy_on_gaussian_features() -> None:
    rng = np.random.default_rng(1)
    d, n = 32, 4000
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))  # rotated, non-commuting covariances
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 2, size=d)
    y = (rng.normal(size=(n, d)) * rng.uniform(0.5, 2, size=d)) @ q.T + 0.3
    mu1, s1, mu2, s2 = x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)
    expected = _scipy_fid(mu1, s1, mu2, s2)
    assert abs(frechet_distance(mu1, s1, mu2, s2) - expected) <= 1e-6 * expected


def test_frechet_of_identical_features_is_zero_and_rank_deficient_is_finite() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 128))  # N < D: singular covariance
    stats = FeatureStats.from_features(x)
    assert fid_from_stats(stats, stats) == pytest.approx(0.0, abs=1e-8)
    y = FeatureStats.from_features(rng.normal(size=(50, 128)) + 0.1)
    value = fid_from_stats(stats, y)
    assert np.isfinite(value) and value > 0
    # Invariances: a common translation and a common orthogonal rotation leave FID unchanged; scaling by c gives c².
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    a, b = rng.normal(size=(300, 8)), rng.normal(size=(300, 8)) * 1.5
    base = frechet_distance(a.mean(0), np.cov(a.T), b.mean(0), np.cov(b.T))
    ar, br = a @ q + 2.0, b @ q + 2.0
    assert frechet_distance(ar.mean(0), np.cov(ar.T), br.mean(0), np.cov(br.T)) == pytest.approx(base, rel=1e-9)
    assert frechet_distance(3 * a.mean(0), 9 * np.cov(a.T), 3 * b.mean(0), 9 * np.cov(b.T)) == pytest.approx(9 * base, rel=1e-9)


def test_frechet_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="shape mismatch"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.zeros(2), np.full((2, 2), np.nan), np.zeros(2), np.eye(2))


@pytest.mark.parametrize("workers", [1, 2, 3, 7])
def test_merged_statistics_equal_single_process_exactly(workers: int) -> None:
    rng = np.random.default_rng(3)
    feats = np.abs(rng.normal(size=(1000, 96))).astype(np.float32) * 2
    single = FeatureStats.from_features(feats)
    cuts = np.sort(rng.choice(np.arange(1, 1000), size=workers - 1, replace=False))
    shards = [FeatureStats.from_features(part) for part in np.split(feats[rng.permutation(1000)], cuts)]
    merged = shards[0]
    for shard in reversed(shards[1:]):  # any order
        merged = merged.merge(shard)
    assert merged.count == single.count
    assert np.array_equal(merged.sum_D, single.sum_D) and np.array_equal(merged.outer_DD, single.outer_DD)
    assert np.array_equal(merged.cov, single.cov) and merged.digest() == single.digest()
    # Moments agree with numpy on the raw (unquantised) features far below FID-relevant precision.
    np.testing.assert_allclose(single.mean, feats.mean(0, dtype=np.float64), atol=1e-5)
    np.testing.assert_allclose(single.cov, np.cov(feats.astype(np.float64), rowvar=False), atol=1e-5)


def test_stats_file_round_trip_refuses_other_protocol(tmp_path: Path) -> None:
    stats = FeatureStats.from_features(np.random.default_rng(4).normal(size=(20, 8)))
    stats.save(tmp_path / "ref.npz", mode="clean", extractor="x")
    assert FeatureStats.load(tmp_path / "ref.npz", mode="clean").digest() == stats.digest()
    with pytest.raises(ValueError, match=r"mode='clean'.*expected 'legacy_pytorch'"):
        FeatureStats.load(tmp_path / "ref.npz", mode="legacy_pytorch")
    with pytest.raises(ValueError, match="exceeds"):
        FeatureStats.from_features(np.full((2, 2), 1e3))


def test_kid_matches_hand_computed_unbiased_mmd() -> None:
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(40, 6)), rng.normal(size=(40, 6)) + 0.5
    k = lambda a, b: (a @ b.T / 6 + 1) ** 3  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    m = 40
    expected = (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean()
    mean, std = kernel_inception_distance(x, y, num_subsets=3, max_subset_size=40)
    assert mean == pytest.approx(expected, rel=1e-12) and std == pytest.approx(0.0, abs=1e-12)
    same, _ = kernel_inception_distance(rng.normal(size=(400, 6)), rng.normal(size=(400, 6)), num_subsets=10)
    assert abs(same) < 0.1 * expected


@pytest.mark.parametrize("mode", ["clean", "legacy_pytorch"])
@pytest.mark.parametrize("name", sorted(procedural_images()))
def test_resize_matches_clean_fid_golden(name: str, mode: str) -> None:
    image = procedural_images()[name]
    with np.load(GOLDEN) as golden:
        values, total = golden[f"{name}/{mode}/values"], float(golden[f"{name}/{mode}/sum"])
    resized = resize_clean(image) if mode == "clean" else resize_torch_bilinear(image)
    flat = resized.astype(np.float64).reshape(-1)
    # torch's float32 bilinear kernel gives results that depend on the thread count by up to ~4e-3 (of 0..255): its
    # vectorised and scalar paths split the rows differently (measured 3.6e-3 between 1 and 2 threads). PIL's clean
    # resize does not depend on threads.
    atol, rel = (1e-4, 1e-9) if mode == "clean" else (1e-2, 1e-7)
    np.testing.assert_allclose(flat[SAMPLE_POSITIONS], values, atol=atol, rtol=0)
    assert flat.sum() == pytest.approx(total, rel=rel)
    if mode == "clean":
        # The clean convention keeps fractions (no re-quantisation) and differs from an 8-bit PIL resize.
        assert np.any(np.abs(flat - np.rint(flat)) > 1e-3)
        pil_8bit = np.asarray(Image.fromarray(image).resize((299, 299), Image.Resampling.BICUBIC), dtype=np.float64)
        assert not np.array_equal(pil_8bit.reshape(-1), flat)


def test_tf1_bilinear_follows_tensorflow_coordinates() -> None:
    # A horizontal ramp 0..W-1 resized to 299: TF1 samples source x = dst * W / 299 (no half-pixel shift),
    # clamped at the last column.
    width = 10
    ramp = np.tile(np.arange(width, dtype=np.uint8)[None, :, None], (4, 1, 3))
    out = resize_tf1_bilinear(ramp)
    expected = np.minimum(np.arange(299) * width / 299, width - 1)
    np.testing.assert_allclose(out[0, :, 0], expected, atol=1e-5)
    # legacy modes normalise differently: 2x/255-1 vs (x-128)/128
    img = np.full((299, 299, 3), 200, np.uint8)
    assert float(preprocess_for_fid(img, "legacy_pytorch")[0, 0, 0]) == pytest.approx(2 * 200 / 255 - 1, abs=1e-6)
    assert float(preprocess_for_fid(img, "clean")[0, 0, 0]) == pytest.approx((200 - 128) / 128, abs=1e-6)
    with pytest.raises(ValueError, match="unknown FID mode"):
        preprocess_for_fid(img, "bogus")  # type: ignore[arg-type]


def test_inception_loads_strictly_and_errors_name_the_file(fid_weights: Path, tmp_path: Path) -> None:
    import torch

    with pytest.raises(FileNotFoundError, match=r"pt_inception-missing\.pth"):
        load_fid_inception(tmp_path / "pt_inception-missing.pth")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not an FID Inception"):
        load_fid_inception(tmp_path / "bad.pth")
    model = load_fid_inception(fid_weights)
    rng = np.random.default_rng(6)
    feats = extract_features(model, [rng.integers(0, 256, (40, 30, 3), dtype=np.uint8) for _ in range(2)],
                             progress=False)
    assert feats.shape == (2, 2048) and np.all(np.isfinite(feats)) and feats.std() > 0


def test_compute_fid_between_folders(fid_weights: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    for folder, shift in (("a", 0), ("b", 90)):
        (tmp_path / folder).mkdir()
        for i in range(2):
            img = np.clip(rng.normal(128 + shift, 40, size=(48, 64, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(tmp_path / folder / f"{i}.png")
    same = compute_fid(tmp_path / "a", tmp_path / "a", weights=fid_weights, progress=False)
    assert same.fid == pytest.approx(0.0, abs=1e-6) and same.num_pred == 2
    diff = compute_fid(tmp_path / "a", tmp_path / "b", weights=fid_weights, progress=False)
    assert diff.fid > 1.0 and diff.kid_mean is not None
    assert set(diff.metrics()) == {"fid/clean/N_2", "kid/clean/N_2", "kid/clean/N_2/std"}
    (tmp_path / "a" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"broken\.png"):
        compute_fid(tmp_path / "a", tmp_path / "b", weights=fid_weights, progress=False)
