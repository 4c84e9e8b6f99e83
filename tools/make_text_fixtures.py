#!/usr/bin/env python3
"""Parity fixtures for the text side of CLIP-family models: tokenizers and text towers.

Tokenizers (token ids must be equal):
  clip-bpe: open_clip's SimpleTokenizer with the real OpenAI vocabulary
      (open_clip/bpe_simple_vocab_16e6.txt.gz, which the Rust test takes from the same pinned
      open_clip_torch wheel), context length 77.
  wordpiece: transformers' BertTokenizer (slow, the reference algorithm) with a small uncased
      WordPiece vocabulary trained here on radiology text and committed next to the fixture
      (crates/models/tests/fixtures/wordpiece_vocab.txt). BiomedBERT's own vocab.txt is on the
      Hugging Face hub only, so this proves the algorithm (normalisation, accent stripping,
      punctuation splitting, greedy longest-match, [UNK], truncation to 256), not that vocab.
      The fast tokenizer is checked to agree as well.

Text towers (seeded weights as in make_seeded_fixtures.py; cosine >= 0.9999):
  biomedclip-text: open_clip HFTextEncoder over transformers BertModel with BiomedBERT-base's
      config (vocab 30522, 12 x 768, GELU, eps 1e-12), CLS of the last hidden state, MLP
      projection 768->640->512 without bias, names `text.transformer.*`, `text.proj.{0,2}`.
  clip-vit-b16-text, clip-vit-l14-text: open_clip ViT-B-16-quickgelu / ViT-L-14-quickgelu
      text towers (causal, QuickGELU, EOT pooling, `text_projection`).

Usage: python3 tools/make_text_fixtures.py
Needs: pip install torch transformers tokenizers open_clip_torch==3.3.0 numpy
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_seeded_fixtures import SCALE, SEED, checkpoint_name, seeded  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "crates/models/tests/fixtures"
OUT = FIX / "text.json"
VOCAB = FIX / "wordpiece_vocab.txt"

PHRASES = [
    "pneumothorax",
    "Right-sided tension pneumothorax with mediastinal shift.",
    "T2-weighted MRI of the brain: glioma in the left frontal lobe",
    "CT abdomen, kidney stone (5 mm) at the left UPJ",
    "Crohn's disease vs. ulcerative colitis?",
    "Ménétrier's disease; naïve café-au-lait spots",
    "Knee X-ray, Kellgren–Lawrence grade 3 osteoarthritis ± effusion",
    "BI-RADS 4 breast ultrasound: irregular hypoechoic mass → biopsy",
    "COVID-19 pneumonia, bilateral ground-glass opacities 50%",
    "meningioma   with\tdural tail\nsign",
    "肺结节 lung nodule",
    "",
    # Longer than CLIP's 77 tokens: exercises truncation (and the EOT kept at the end).
    " ".join(["no acute cardiopulmonary abnormality; stable postoperative changes"] * 12),
    # open_clip's basic_clean: HTML references (once and twice escaped), ftfy's quote,
    # ligature, width and control-character fixes.
    "pleural effusion &amp; atelectasis, nodule &lt;5 mm, mass &gt;2 cm",
    "&quot;ground-glass&quot; opacity, 10&deg; tilt, &plusmn;2 mm, 3&times;4 cm",
    "&#177;3 mm &#x2192; follow-up in 6&ndash;8 weeks; &amp;lt;1 cm",
    "\u201cconsolidation\u201d in the \u2018right\u2019 lower lobe",
    "\ufb01brosis and \ufb02uid, \uff23\uff34\u3000\uff43\uff48\uff45\uff53\uff54",
    "control\x07character\ufeff and trailing space   ",
]
TOWER_PHRASES = PHRASES[:4] + [PHRASES[8]]

CORPUS = [
    "chest x-ray shows a right-sided pneumothorax with mediastinal shift and no effusion",
    "ct of the abdomen demonstrates a kidney stone and a simple renal cyst",
    "mri of the brain with a glioma, meningioma or pituitary tumour",
    "breast ultrasound shows a benign cyst or a malignant irregular hypoechoic mass",
    "knee radiograph with osteoarthritis, joint space narrowing and osteophytes",
    "covid-19 pneumonia with bilateral ground glass opacities and consolidation",
    "normal study without acute abnormality, stable postoperative changes",
    "t1 weighted, t2 weighted and flair sequences with contrast enhancement",
    "lesion measures 5 mm in the left lobe, follow-up recommended in 6 months",
    "pleural effusion, atelectasis, cardiomegaly, edema, emphysema and fibrosis",
]


def train_wordpiece():
    """A deterministic ~400-token uncased WordPiece vocabulary (BERT special tokens first)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=400,
        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 3, trainer)
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    VOCAB.write_text("".join(t + "\n" for t, _ in vocab))


def wordpiece_ids():
    from transformers import BertTokenizer, BertTokenizerFast

    slow = BertTokenizer(str(VOCAB), do_lower_case=True)
    fast = BertTokenizerFast(str(VOCAB), do_lower_case=True)
    out = []
    for p in PHRASES:
        # As open_clip's HFTokenizer: basic_clean (ftfy, html.unescape) and whitespace clean,
        # then truncated to 256 (specials included).
        from open_clip.tokenizer import _clean_whitespace

        text = _clean_whitespace(p)
        ids = slow(text, max_length=256, truncation=True)["input_ids"]
        assert ids == fast(text, max_length=256, truncation=True)["input_ids"], p
        out.append({"text": p, "ids": ids})
    return out


def clip_ids():
    import open_clip

    tok = open_clip.get_tokenizer("ViT-B-16-quickgelu")
    out = []
    for p in PHRASES:
        row = tok([p])[0].tolist()
        n = next((i + 1 for i, t in enumerate(row) if t == 49407), len(row))
        out.append({"text": p, "ids": row[:n]})
    return out


def seeded_module(module, prefix, skip=()):
    """Fill `module`'s float parameters (named `prefix` + name) with seeded values."""
    sd = {k: v for k, v in module.state_dict().items() if v.is_floating_point()}
    sd = {k: v for k, v in sd.items() if not any(k.startswith(s) for s in skip)}
    names = {prefix + checkpoint_name(k): k for k in sd}
    params = {ck: list(sd[k].shape) for ck, k in names.items()}
    values = seeded(params)
    module.load_state_dict({names[ck]: torch.from_numpy(v) for ck, v in values.items()}, strict=False)
    return sorted(params.items())


def l2(v):
    v = v.detach().double().numpy()
    return (v / np.linalg.norm(v)).tolist()


def biomedclip_text(wordpiece):
    import transformers
    from open_clip.hf_model import HFTextEncoder
    from transformers import BertConfig

    cfg = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12,
                     num_attention_heads=12, intermediate_size=3072,
                     max_position_embeddings=512, layer_norm_eps=1e-12, pad_token_id=0)
    enc = HFTextEncoder("BiomedBERT", 512, config=cfg, pooler_type="cls_last_hidden_state_pooler",
                        proj_type="mlp", pretrained=False).eval()
    # BertModel's own pooler is unused by the CLS-of-last-hidden-state pooling.
    params = seeded_module(enc, "text.", skip=("transformer.pooler.",))
    texts = []
    with torch.no_grad():
        for row in wordpiece:
            if row["text"] not in TOWER_PHRASES:
                continue
            ids = row["ids"] + [0] * (256 - len(row["ids"]))  # padded as open_clip pads
            texts.append({"ids": row["ids"], "embedding": l2(enc(torch.tensor([ids]))[0])})
    return {
        "reference": f"open_clip HFTextEncoder over transformers {transformers.__version__} "
                     f"BertModel, torch {torch.__version__}",
        "params": params,
        "texts": texts,
    }


def clip_text(arch, clip_rows):
    import open_clip

    model = open_clip.create_model(arch, pretrained=None).eval()
    params = seeded_module(model, "", skip=("visual.", "logit_scale", "logit_bias"))
    texts = []
    with torch.no_grad():
        for row in clip_rows:
            if row["text"] not in TOWER_PHRASES:
                continue
            ids = row["ids"] + [0] * (77 - len(row["ids"]))
            texts.append({"ids": row["ids"], "embedding": l2(model.encode_text(torch.tensor([ids]))[0])})
    return {
        "reference": f"open_clip {open_clip.__version__} {arch} text tower, torch {torch.__version__}",
        "params": params,
        "texts": texts,
    }


def main():
    torch.set_num_threads(2)
    train_wordpiece()
    wordpiece = wordpiece_ids()
    clip = clip_ids()
    fixture = {
        "generator": "tools/make_text_fixtures.py",
        "seed": SEED,
        "scale": float(SCALE),
        "tokenizers": {"wordpiece": wordpiece, "clip-bpe": clip},
        "models": {
            "biomedclip-text": biomedclip_text(wordpiece),
            "clip-vit-b16-text": clip_text("ViT-B-16-quickgelu", clip),
            "clip-vit-l14-text": clip_text("ViT-L-14-quickgelu", clip),
        },
    }
    OUT.write_text(json.dumps(fixture, indent=1))
    print(f"wrote {OUT} and {VOCAB}")


if __name__ == "__main__":
    main()
