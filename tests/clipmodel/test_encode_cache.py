import threading

import torch
import torch.nn.functional as F
from PIL import Image

import clipmodel


def _bare_features(clip, paths):
    batch = torch.stack([clip.preprocess(Image.open(p).convert("RGB")) for p in paths])
    with torch.no_grad():
        return F.normalize(clip.model.encode_image(batch), dim=-1)


def test_encode_images_matches_a_bare_model_forward(tiny_clip, image_files):
    got = clipmodel.encode_images(clip=tiny_clip, images=image_files, batch_size=3, num_workers=0)
    assert got.shape == (len(image_files), 16) and got.dtype == torch.float32
    torch.testing.assert_close(got, _bare_features(tiny_clip, image_files), rtol=1e-5, atol=1e-6)


def test_encode_images_gives_the_same_result_with_workers_and_pil_inputs(tiny_clip, image_files):
    calls = []
    with_workers = clipmodel.encode_images(
        clip=tiny_clip, images=image_files, batch_size=3, num_workers=2, progress=lambda d, t: calls.append((d, t))
    )
    pil_images = [Image.open(p).convert("RGB") for p in image_files]
    from_pil = clipmodel.encode_images(clip=tiny_clip, images=pil_images, batch_size=3, num_workers=0)
    in_process = clipmodel.encode_images(clip=tiny_clip, images=image_files, batch_size=3, num_workers=0)
    torch.testing.assert_close(with_workers, in_process)
    torch.testing.assert_close(from_pil, in_process)
    assert calls == [(3, 8), (6, 8), (8, 8)]


def _count_encoded_images(monkeypatch, clip):
    counter = {"images": 0}
    original = clip.model.encode_image

    def counting(images, *args, **kwargs):
        counter["images"] += images.shape[0]
        return original(images, *args, **kwargs)

    monkeypatch.setattr(clip.model, "encode_image", counting)
    return counter


def test_feature_cache_hit_avoids_re_encoding(tiny_clip, image_files, tmp_path, monkeypatch):
    cache = clipmodel.FeatureCache(tmp_path / "cache")
    counter = _count_encoded_images(monkeypatch, tiny_clip)
    first = clipmodel.encode_with_cache(clip=tiny_clip, images=image_files[:5], cache=cache, num_workers=0)
    assert counter["images"] == 5
    torch.testing.assert_close(first, clipmodel.encode_images(clip=tiny_clip, images=image_files[:5], num_workers=0))
    counter["images"] = 0

    again = clipmodel.encode_with_cache(clip=tiny_clip, images=image_files[:5], cache=cache, num_workers=0)
    assert counter["images"] == 0
    assert torch.equal(again, first)

    # A new order with one new image and a duplicate: only the new image is encoded.
    mixed = [image_files[5], image_files[0], image_files[0], image_files[3]]
    progress = []
    got = clipmodel.encode_with_cache(
        clip=tiny_clip, images=mixed, cache=cache, num_workers=0, progress=lambda d, t: progress.append((d, t))
    )
    assert counter["images"] == 1
    assert torch.equal(got[1], first[0]) and torch.equal(got[2], first[0]) and torch.equal(got[3], first[3])
    assert progress[-1] == (4, 4)


def test_feature_cache_is_keyed_by_model_fingerprint(tmp_path):
    cache = clipmodel.FeatureCache(tmp_path)
    key = clipmodel.image_hash(Image.new("RGB", (4, 4), "red"))
    cache.put_many(fingerprint="model-a:openai:oc3", features={key: torch.ones(3)})
    assert torch.equal(cache.get_many(fingerprint="model-a:openai:oc3", keys=[key])[key], torch.ones(3))
    assert cache.get_many(fingerprint="model-b:openai:oc3", keys=[key]) == {}


def test_image_hash_depends_on_content_not_file_name(image_files, tmp_path):
    copy = tmp_path / "renamed.png"
    copy.write_bytes(image_files[0].read_bytes())
    assert clipmodel.image_hash(copy) == clipmodel.image_hash(image_files[0])
    assert clipmodel.image_hash(image_files[1]) != clipmodel.image_hash(image_files[0])


def test_concurrent_writers_never_leave_partial_entries(tmp_path):
    cache = clipmodel.FeatureCache(tmp_path)
    keys = [f"{i:064x}" for i in range(20)]
    vectors = {w: torch.full((64,), float(w)) for w in range(6)}

    def writer(w):
        for _ in range(5):
            cache.put_many(fingerprint="fp", features={k: vectors[w] for k in keys})

    threads = [threading.Thread(target=writer, args=(w,)) for w in vectors]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = cache.get_many(fingerprint="fp", keys=keys)
    assert set(got) == set(keys)
    assert all(any(torch.equal(v, candidate) for candidate in vectors.values()) for v in got.values())
    assert not list(tmp_path.rglob("*.tmp"))


def test_each_put_is_one_file_and_vectors_cached_before_packs_are_still_found(tmp_path):
    import numpy as np

    cache = clipmodel.FeatureCache(tmp_path)
    first = {f"{i:064x}": torch.full((8,), float(i)) for i in range(50)}
    later = {f"{i:064x}": torch.full((8,), float(i)) for i in range(50, 60)}
    cache.put_many(fingerprint="fp", features=first)
    assert set(cache.get_many(fingerprint="fp", keys=[*first, *later])) == set(first)  # this process has read it
    cache.put_many(fingerprint="fp", features=later)
    old_style = "ab" * 32  # one .npy per vector, as caches were written before packs
    path = tmp_path / "features" / next((tmp_path / "features").iterdir()).name / "ab" / f"{old_style}.npy"
    path.parent.mkdir(parents=True)
    np.save(path, np.ones(8, dtype=np.float32))

    got = cache.get_many(fingerprint="fp", keys=[*first, *later, old_style])

    assert len(list(tmp_path.rglob("*.npz"))) == 2
    assert set(got) == {*first, *later, old_style}
    assert torch.equal(got[f"{57:064x}"], torch.full((8,), 57.0)) and torch.equal(got[old_style], torch.ones(8))
