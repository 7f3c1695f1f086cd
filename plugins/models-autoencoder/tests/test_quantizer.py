"""VectorQuantizer against brute-force nearest-neighbour search and the loss formula."""

import torch

from diffkit_models_autoencoder.quantizer import VectorQuantizer


def _quantizer(seed: int = 0) -> VectorQuantizer:
    torch.manual_seed(seed)
    q = VectorQuantizer(12, 3, beta=0.25)
    with torch.no_grad():
        q.embedding.weight.copy_(torch.randn(12, 3))
    return q


def test_each_vector_snaps_to_its_nearest_codebook_entry():
    q = _quantizer()
    z = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(1))
    quantized, loss, (perplexity, encodings, indices) = q(z)
    assert perplexity is None and encodings is None
    vectors = z.permute(0, 2, 3, 1).reshape(-1, 3)
    squared = ((vectors[:, None, :] - q.embedding.weight[None]) ** 2).sum(-1)
    assert torch.equal(indices, squared.argmin(dim=1))
    expected = q.embedding.weight[indices].view(2, 4, 5, 3).permute(0, 3, 1, 2)
    torch.testing.assert_close(quantized, expected)
    assert quantized.is_contiguous()
    mse = torch.mean((expected - z) ** 2)
    torch.testing.assert_close(loss, 1.25 * mse)


def test_non_legacy_loss_weighs_the_other_term_by_the_same_amount():
    q = _quantizer()
    q.legacy = False
    z = torch.randn(1, 3, 2, 2)
    _, loss, _ = q(z)
    _, legacy_loss, _ = _quantizer()(z)
    torch.testing.assert_close(loss, legacy_loss)  # equal values; the terms differ only in their gradients


def test_codebook_entries_come_back_in_the_requested_layout():
    q = _quantizer()
    indices = torch.tensor([0, 3, 11, 5, 5, 2])
    flat = q.get_codebook_entry(indices, None)
    assert flat.shape == (6, 3)
    maps = q.get_codebook_entry(indices, (1, 2, 3, 3))
    assert maps.shape == (1, 3, 2, 3)
    torch.testing.assert_close(maps[0, :, 1, 0], q.embedding.weight[5])


def test_meta_build_creates_no_real_tensors():
    with torch.device("meta"):
        q = VectorQuantizer(8, 4)
    assert q.embedding.weight.is_meta
