//! Text tokenizers of the CLIP-family text towers, on the `tokenizers` crate (already in the
//! build through candle), so a user's Hugging Face `tokenizer.json` loads unchanged:
//!
//! - **WordPiece**, BERT uncased (BiomedCLIP's BiomedBERT): `[CLS] … [SEP]`, truncated to the
//!   context length as transformers does, from `vocab.txt` or `tokenizer.json`.
//! - **CLIP BPE** (OpenAI CLIP): byte-level BPE with `</w>` word ends, `<start_of_text> …
//!   <end_of_text>`, truncated with the end token kept last as open_clip does, from open_clip's
//!   `bpe_simple_vocab_16e6.txt.gz`. open_clip also runs `ftfy.fix_text` and HTML unescaping,
//!   which only change mojibake and `&amp;`-style entities; those are not reproduced.

use anyhow::{anyhow, Context, Result};
use std::io::Read;
use std::path::Path;
use tokenizers::models::bpe::BPE;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{BertNormalizer, Lowercase, Replace, Sequence, NFC};
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{SplitDelimiterBehavior, Tokenizer};

/// A tokenizer plus the framing its text tower expects.
pub struct TextTokenizer {
    inner: Tokenizer,
    start: u32,
    end: u32,
    context: usize,
}

/// OpenAI CLIP's pre-tokenisation pattern (open_clip `SimpleTokenizer.pat`, lower-cased input).
const CLIP_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

fn tk<T>(r: tokenizers::Result<T>) -> Result<T> {
    r.map_err(|e| anyhow!("{e}"))
}

impl TextTokenizer {
    /// BERT uncased WordPiece from a `vocab.txt` (one token per line, the id is the line).
    pub fn wordpiece_vocab(vocab: &Path, context: usize) -> Result<Self> {
        let path = vocab.to_str().context("vocab path is not UTF-8")?;
        let model = tk(WordPiece::from_file(path).unk_token("[UNK]".into()).build())
            .with_context(|| format!("{}: not a WordPiece vocab.txt", vocab.display()))?;
        let mut inner = Tokenizer::new(model);
        tk(inner.with_normalizer(Some(BertNormalizer::new(true, true, None, true))))?;
        inner.with_pre_tokenizer(Some(BertPreTokenizer));
        Self::bert_framed(inner, context)
    }

    /// A Hugging Face `tokenizer.json` of a BERT-style model (`[CLS]`/`[SEP]` framing).
    pub fn bert_json(path: &Path, context: usize) -> Result<Self> {
        let inner = tk(Tokenizer::from_file(path))
            .with_context(|| format!("{}: not a tokenizer.json", path.display()))?;
        Self::bert_framed(inner, context)
    }

    fn bert_framed(inner: Tokenizer, context: usize) -> Result<Self> {
        let id = |t: &str| {
            inner
                .token_to_id(t)
                .with_context(|| format!("the vocabulary has no {t}"))
        };
        Ok(Self {
            start: id("[CLS]")?,
            end: id("[SEP]")?,
            inner,
            context,
        })
    }

    /// OpenAI CLIP's BPE from open_clip's `bpe_simple_vocab_16e6.txt.gz`, context 77.
    pub fn clip_bpe_gz(path: &Path) -> Result<Self> {
        let mut text = String::new();
        flate2::read::GzDecoder::new(
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
        )
        .read_to_string(&mut text)
        .with_context(|| format!("{}: not a gzipped BPE merges file", path.display()))?;
        Self::clip_bpe(&text)
    }

    /// OpenAI CLIP's BPE from the merges text (first line a header), as open_clip builds it:
    /// 256 byte symbols, the same with `</w>`, one token per merge, then the two specials.
    pub fn clip_bpe(merges_text: &str) -> Result<Self> {
        let merges: Vec<(String, String)> = merges_text
            .lines()
            .skip(1)
            .take(49152 - 256 - 2)
            .map(|l| {
                let (a, b) = l.split_once(' ').context("malformed BPE merge line")?;
                Ok((a.to_string(), b.to_string()))
            })
            .collect::<Result<_>>()?;
        let bytes: Vec<String> = byte_symbols().into_iter().map(String::from).collect();
        let mut tokens: Vec<String> = bytes.clone();
        tokens.extend(bytes.iter().map(|b| format!("{b}</w>")));
        tokens.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
        tokens.push("<start_of_text>".into());
        tokens.push("<end_of_text>".into());
        let vocab: tokenizers::models::bpe::Vocab = tokens
            .into_iter()
            .enumerate()
            .map(|(i, t)| (t, i as u32))
            .collect();
        let (start, end) = (vocab["<start_of_text>"], vocab["<end_of_text>"]);
        let model = tk(BPE::builder()
            .vocab_and_merges(vocab, merges)
            .end_of_word_suffix("</w>".into())
            .build())?;
        let mut inner = Tokenizer::new(model);
        let ws = tk(Replace::new(ReplacePattern::Regex(r"\s+".into()), " "))?;
        tk(inner.with_normalizer(Some(Sequence::new(vec![
            NFC.into(),
            ws.into(),
            Lowercase.into(),
        ]))))?;
        let split = tk(Split::new(
            SplitPattern::Regex(CLIP_PATTERN.into()),
            SplitDelimiterBehavior::Removed,
            true,
        ))?;
        inner.with_pre_tokenizer(Some(PreSequence::new(vec![
            split.into(),
            ByteLevel::new(false, false, false).into(),
        ])));
        Ok(Self {
            inner,
            start,
            end,
            context: 77,
        })
    }

    /// Token ids of `text`, framed by the start and end tokens and truncated to the context
    /// length with the end token kept last.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = tk(self.inner.encode(text, false))?;
        let body = enc.get_ids();
        let keep = body.len().min(self.context.saturating_sub(2));
        let mut ids = Vec::with_capacity(keep + 2);
        ids.push(self.start);
        ids.extend_from_slice(&body[..keep]);
        ids.push(self.end);
        Ok(ids)
    }

    pub fn context_length(&self) -> usize {
        self.context
    }

    /// The end-of-text id (CLIP pools the text tower's output there).
    pub fn end_id(&self) -> u32 {
        self.end
    }
}

/// GPT-2 / CLIP `bytes_to_unicode`, in its order (which is open_clip's vocabulary order):
/// printable bytes as themselves, then every other byte as U+0100, U+0101, ….
fn byte_symbols() -> Vec<char> {
    let printable = |b: &u32| (33..=126).contains(b) || (161..=172).contains(b) || *b >= 174;
    let shown = (0u32..256).filter(printable).filter_map(char::from_u32);
    let hidden = (256u32..).take(256 - (0u32..256).filter(printable).count());
    shown.chain(hidden.filter_map(char::from_u32)).collect()
}
