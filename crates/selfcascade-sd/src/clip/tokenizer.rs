//! CLIP's tokenizer: byte-level BPE with CLIP's text cleanup, built on the `tokenizers` crate.
//!
//! [`ClipTokenizer::encode`] gives the ids of
//! `transformers.CLIPTokenizer(prompt, padding="max_length", max_length=77, truncation=True).input_ids`,
//! the call the diffusers Stable Diffusion pipelines make (transformers 5: `CLIPTokenizer` is the
//! `tokenizers`-backed class, `CLIPTokenizerFast` is the same class). The pipeline is the one transformers
//! builds:
//!
//! 1. special tokens written in the prompt are found first and kept whole (see below);
//! 2. normalisation: Unicode NFC, every run of whitespace becomes one space, lowercase. There is no ftfy
//!    and no HTML unescaping (`&amp;` stays as it is), unlike OpenAI's original tokenizer;
//! 3. pre-tokenisation: CLIP's pattern keeps letter runs, single digits, runs of other non-space
//!    characters and the contractions `'s 't 're 've 'm 'll 'd`, and drops whitespace; then GPT-2's
//!    byte-level step maps each piece's UTF-8 bytes to printable symbols (splitting again with GPT-2's
//!    pattern, which only matters for a non-special `<|endoftext|>`: it becomes `<|`, `endoftext`, `|>`);
//! 4. BPE with CLIP's 48894 merges; the last symbol of each piece carries the `</w>` suffix;
//! 5. `<|startoftext|>` (49406) + at most `max_len - 2` tokens + `<|endoftext|>` (49407), then padding
//!    with the pad token up to `max_len` (77).
//!
//! Special tokens: the bos/eos/unk/pad tokens of the config are *added tokens* and match anywhere in the
//! prompt, before any splitting. A token flagged `normalized` matches the normalised text (so
//! `<|ENDOFTEXT|>` matches `<|endoftext|>`), the others match the raw prompt. The notable consequence:
//! SD 2.x and SDXL's second tokenizer use `pad_token = "!"`, so **every `!` in a prompt is id 0** (`!`,
//! without `</w>`), wherever it stands: `hello!` is `hello</w>`, `!`, and `!!!` is id 0 three times,
//! where SD 1.x gives `!</w>` (256) and `!!!</w>` (995). Likewise a literal `<|endoftext|>` in a prompt is
//! id 49407, an early end of text for the text encoders, as in diffusers. Which flags each special token ends up with follows
//! transformers' own rules for `tokenizer_config.json` and `special_tokens_map.json`; for the SD repos:
//! SD 1.x matches `<|endoftext|>` on the raw text only (its plain-string pad token overrides the eos's
//! `normalized: true`), SD 2.x and SDXL on the normalised text.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;

use serde_json::{Map, Value};
use tokenizers::models::bpe::{Merges, Vocab, BPE};
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{Lowercase, NormalizerWrapper, Replace, Sequence as NormSeq, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSeq;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::error::{Error, Result};

/// CLIP's beginning-of-text token (id 49406 in CLIP's vocabulary).
pub const BOS_TOKEN: &str = "<|startoftext|>";
/// CLIP's end-of-text token (id 49407 in CLIP's vocabulary); also the unknown token, and the pad token
/// of SD 1.x and SDXL's first tokenizer.
pub const EOS_TOKEN: &str = "<|endoftext|>";
/// CLIP's context length: the `model_max_length` of every Stable Diffusion tokenizer.
pub const DEFAULT_MAX_LEN: usize = 77;

/// Pre-tokenisation pattern of CLIP (OpenAI's `simple_tokenizer`, as transformers writes it).
const CLIP_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";
/// The named special tokens of transformers, in the order it adds them.
const NAMED_SPECIALS: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];
/// transformers writes `model_max_length` ≈ 1e30 when a tokenizer has none.
const UNSET_MAX_LEN: f64 = 1e20;
/// Largest `model_max_length` accepted from a config.
const MAX_MAX_LEN: u64 = 1 << 20;

/// The ids of one prompt, with what was cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Exactly `max_len` ids: BOS, the prompt's tokens (at most `max_len - 2`), EOS, padding.
    pub ids: Vec<u32>,
    /// Whether the prompt had more than `max_len - 2` tokens, so that some were dropped. diffusers logs
    /// a warning in that case.
    pub truncated: bool,
    /// How many tokens the prompt has before truncation, without BOS and EOS.
    pub num_tokens: usize,
}

/// CLIP's tokenizer, equal to transformers' `CLIPTokenizer` with
/// `padding="max_length", truncation=True` (see the [module docs](self)).
#[derive(Clone)]
pub struct ClipTokenizer {
    tokenizer: Tokenizer,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
    pad_token: String,
    max_len: usize,
}

impl fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("pad_token", &self.pad_token)
            .field("pad_id", &self.pad_id)
            .field("max_len", &self.max_len)
            .finish()
    }
}

impl ClipTokenizer {
    /// Loads a diffusers `tokenizer/` (or `tokenizer_2/`) folder.
    ///
    /// The vocabulary comes from `tokenizer.json` when the folder has one, else from `vocab.json` +
    /// `merges.txt` (the layout of the Stable Diffusion repos). The special tokens, the pad token among them
    /// (`<|endoftext|>` for SD 1.x and SDXL's first tokenizer, `!` for SD 2.x and SDXL's second), and
    /// `model_max_length` come from `tokenizer_config.json` and `special_tokens_map.json`, read the way
    /// transformers reads them; at least one of the two must be there. Without `model_max_length` the
    /// length is [`DEFAULT_MAX_LEN`].
    ///
    /// # Errors
    /// [`Error::Tokenizer`] naming the expected files when the folder or a file is missing, or when a file
    /// is malformed; [`Error::Io`] when a file cannot be read.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::Tokenizer(format!(
                "tokenizer folder {} not found: expected a diffusers `tokenizer/` folder holding vocab.json + \
                 merges.txt (or tokenizer.json) and tokenizer_config.json",
                dir.display()
            )));
        }
        let config = read_json_object_opt(&dir.join("tokenizer_config.json"))?;
        let special_map = read_json_object_opt(&dir.join("special_tokens_map.json"))?;
        if config.is_none() && special_map.is_none() {
            return Err(Error::Tokenizer(format!(
                "{}: neither tokenizer_config.json nor special_tokens_map.json found; one of them is needed for \
                 the special tokens (the pad token is `<|endoftext|>` for SD 1.x, `!` for SD 2.x)",
                dir.display()
            )));
        }
        let config = config.unwrap_or_default();

        let tokenizer_json = dir.join("tokenizer.json");
        let (vocab, merges, file_added) = if tokenizer_json.is_file() {
            let (vocab, merges, added) =
                parse_tokenizer_json(&read_text(&tokenizer_json)?, &tokenizer_json)?;
            (vocab, merges, Some(added))
        } else {
            let vocab_path = dir.join("vocab.json");
            let merges_path = dir.join("merges.txt");
            for path in [&vocab_path, &merges_path] {
                if !path.is_file() {
                    return Err(Error::Tokenizer(format!(
                        "{} not found: a CLIP tokenizer folder needs vocab.json and merges.txt (or a tokenizer.json)",
                        path.display()
                    )));
                }
            }
            let vocab = parse_vocab(&read_text(&vocab_path)?, &vocab_path.display().to_string())?;
            let merges = parse_merges(
                &read_text(&merges_path)?,
                &merges_path.display().to_string(),
            )?;
            (vocab, merges, None)
        };

        let config_name = dir.join("tokenizer_config.json").display().to_string();
        let map_name = dir.join("special_tokens_map.json").display().to_string();
        // transformers: a config with `added_tokens_decoder` is complete; otherwise (older configs) the
        // legacy special_tokens_map.json overrides the config's named tokens, and tokenizer.json's added
        // tokens play the part of `added_tokens_decoder`.
        let (decoder, named) = match config.get("added_tokens_decoder") {
            Some(value) => {
                let decoder = parse_added_tokens_decoder(value, &config_name)?;
                let named = named_specials(&config, None, &config_name, &map_name)?;
                (decoder, named)
            }
            None => {
                let named = named_specials(&config, special_map.as_ref(), &config_name, &map_name)?;
                (file_added.unwrap_or_default(), named)
            }
        };
        let max_len = max_len_from(&config, &config_name)?;
        Self::build(vocab, merges, decoder, named, max_len)
    }

    /// Builds the tokenizer from the contents of `vocab.json` and `merges.txt`, for embedded vocabularies.
    ///
    /// The special tokens are set up as in the SD 1.x / 2.x repos' configs (bos, eos and unk flagged
    /// `normalized`, the pad token a plain string), so `pad_token = "<|endoftext|>"` gives SD 1.x's
    /// tokenizer and `pad_token = "!"` SD 2.x's. `max_len` is the padded length (77 for CLIP).
    ///
    /// # Errors
    /// [`Error::Tokenizer`] for malformed JSON or merges, merges whose symbols are not in the vocabulary,
    /// an empty pad token, special tokens missing from the vocabulary, or `max_len` below 2 or above
    /// 2²⁰.
    pub fn from_vocab_merges(
        vocab_json: &str,
        merges_txt: &str,
        pad_token: &str,
        max_len: usize,
    ) -> Result<Self> {
        if pad_token.is_empty() {
            return Err(Error::Tokenizer("the pad token must not be empty".into()));
        }
        let vocab = parse_vocab(vocab_json, "vocab.json")?;
        let merges = parse_merges(merges_txt, "merges.txt")?;
        let normalized = |content: &str| Special::Token(special_token(content, true));
        let named = vec![
            normalized(BOS_TOKEN),
            normalized(EOS_TOKEN),
            normalized(EOS_TOKEN),
            Special::Plain(pad_token.to_owned()),
        ];
        Self::build(
            vocab,
            merges,
            Vec::new(),
            NamedSpecials {
                tokens: named,
                pad: pad_token.to_owned(),
            },
            max_len,
        )
    }

    fn build(
        vocab: Vocab,
        merges: Merges,
        decoder: Vec<AddedToken>,
        named: NamedSpecials,
        max_len: usize,
    ) -> Result<Self> {
        if max_len < 2 {
            return Err(Error::Tokenizer(format!(
                "max length {max_len} leaves no room for <|startoftext|> and <|endoftext|>: it must be at least 2"
            )));
        }
        if max_len as u64 > MAX_MAX_LEN {
            return Err(Error::Tokenizer(format!(
                "max length {max_len} is too large: at most {MAX_MAX_LEN} (77 for CLIP)"
            )));
        }
        let unk = named.unk_content().unwrap_or(EOS_TOKEN).to_owned();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .unk_token(unk)
            .continuing_subword_prefix(String::new())
            .end_of_word_suffix("</w>".to_owned())
            .fuse_unk(false)
            .build()
            .map_err(|e| Error::Tokenizer(format!("invalid CLIP vocabulary/merges: {e}")))?;

        let mut tokenizer = Tokenizer::new(bpe);
        let whitespace = Replace::new(ReplacePattern::Regex(r"\s+".to_owned()), " ")
            .map_err(|e| Error::Tokenizer(format!("whitespace pattern: {e}")))?;
        let normalizer = NormSeq::new(vec![
            NormalizerWrapper::from(NFC),
            NormalizerWrapper::from(whitespace),
            NormalizerWrapper::from(Lowercase),
        ]);
        let split = Split::new(
            SplitPattern::Regex(CLIP_PATTERN.to_owned()),
            SplitDelimiterBehavior::Removed,
            true,
        )
        .map_err(|e| Error::Tokenizer(format!("CLIP pattern: {e}")))?;
        let pre_tokenizer = PreSeq::new(vec![
            PreTokenizerWrapper::from(split),
            PreTokenizerWrapper::from(ByteLevel::new(false, true, true)),
        ]);
        // The normaliser must be in place before tokens are added: normalised added tokens are matched in
        // their normalised form.
        tokenizer.with_normalizer(Some(normalizer));
        tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
        tokenizer.add_tokens(&added_tokens(decoder, &named.tokens));

        let id = |token: &str, what: &str| {
            tokenizer.token_to_id(token).ok_or_else(|| {
                Error::Tokenizer(format!("{what} token {token:?} is not in the vocabulary"))
            })
        };
        let bos_id = id(named.bos_content().unwrap_or(BOS_TOKEN), "bos")?;
        let eos_id = id(named.eos_content().unwrap_or(EOS_TOKEN), "eos")?;
        let pad_id = id(&named.pad, "pad")?;
        Ok(Self {
            bos_id,
            eos_id,
            pad_id,
            pad_token: named.pad,
            max_len,
            tokenizer,
        })
    }

    /// Ids of `prompt`: exactly [`max_len`](Self::max_len) of them (see [`Encoded::ids`]).
    ///
    /// # Errors
    /// [`Error::Tokenizer`] if the underlying tokenizer fails (it does not for any valid UTF-8 text with
    /// a byte-level vocabulary).
    pub fn encode(&self, prompt: &str) -> Result<Vec<u32>> {
        Ok(self.encode_with_info(prompt)?.ids)
    }

    /// Ids of `prompt`, and whether it was truncated (see [`Encoded`]).
    ///
    /// # Errors
    /// As [`encode`](Self::encode).
    pub fn encode_with_info(&self, prompt: &str) -> Result<Encoded> {
        let tokens = self.tokens(prompt)?;
        let room = self.max_len - 2;
        let num_tokens = tokens.len();
        let mut ids = Vec::with_capacity(self.max_len);
        ids.push(self.bos_id);
        ids.extend_from_slice(&tokens[..num_tokens.min(room)]);
        ids.push(self.eos_id);
        ids.resize(self.max_len, self.pad_id);
        Ok(Encoded {
            ids,
            truncated: num_tokens > room,
            num_tokens,
        })
    }

    /// Ids of the prompt's tokens alone: no BOS/EOS, no truncation, no padding.
    ///
    /// # Errors
    /// As [`encode`](Self::encode).
    pub fn tokens(&self, prompt: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode_fast(prompt, false)
            .map_err(|e| Error::Tokenizer(format!("cannot tokenize prompt: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The padded length of [`encode`](Self::encode) (`model_max_length`, 77 for CLIP).
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Id of `<|startoftext|>` (49406 in CLIP's vocabulary).
    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    /// Id of `<|endoftext|>` (49407 in CLIP's vocabulary). The text encoders pool at its first position.
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// Id the ids are padded with: 49407 for SD 1.x, 0 (`!`) for SD 2.x.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The pad token: `<|endoftext|>` for SD 1.x, `!` for SD 2.x.
    pub fn pad_token(&self) -> &str {
        &self.pad_token
    }

    /// Number of ids, added tokens included (49408 for CLIP).
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// Id of a token of the vocabulary (BPE symbols are written byte-level, word ends with `</w>`).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }
}

/// A named special token as a config gives it: a plain string, or an `AddedToken` object with flags.
#[derive(Debug, Clone, PartialEq)]
enum Special {
    Plain(String),
    Token(AddedToken),
}

impl Special {
    fn content(&self) -> &str {
        match self {
            Special::Plain(s) => s,
            Special::Token(t) => &t.content,
        }
    }

    /// The token transformers adds: a plain string becomes a special token matched on the raw text.
    fn to_added(&self) -> AddedToken {
        match self {
            Special::Plain(s) => special_token(s, false),
            Special::Token(t) => {
                let mut t = t.clone();
                t.special = true;
                t
            }
        }
    }
}

/// The named special tokens of a config, in transformers' order (absent ones left out), and the pad token.
struct NamedSpecials {
    /// bos, eos, unk, sep, pad, cls, mask: those that are set.
    tokens: Vec<Special>,
    pad: String,
}

impl NamedSpecials {
    fn find(&self, index: usize) -> Option<&str> {
        self.tokens.get(index).map(Special::content)
    }
    fn bos_content(&self) -> Option<&str> {
        self.find(0)
    }
    fn eos_content(&self) -> Option<&str> {
        self.find(1)
    }
    fn unk_content(&self) -> Option<&str> {
        self.find(2)
    }
}

fn special_token(content: &str, normalized: bool) -> AddedToken {
    AddedToken {
        content: content.to_owned(),
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized,
        special: true,
    }
}

/// The added tokens, one per content, with the flags transformers 5 ends up with.
///
/// transformers hands the backend, in one call: first `added_tokens_decoder`; then each named special
/// token whose content is not among those and that is not equal (same kind, content and flags) to one
/// already listed. For tokens of equal content the backend it ships (`tokenizers` 0.23) keeps the last
/// one's flags; `tokenizers` 0.22 would match with the first one's, so duplicates are resolved here.
fn added_tokens(decoder: Vec<AddedToken>, named: &[Special]) -> Vec<AddedToken> {
    let decoded: HashSet<String> = decoder.iter().map(|t| t.content.clone()).collect();
    let mut picked: Vec<&Special> = Vec::new();
    for special in named {
        if !decoded.contains(special.content()) && !picked.contains(&special) {
            picked.push(special);
        }
    }
    let mut tokens: Vec<AddedToken> = Vec::new();
    for token in decoder
        .into_iter()
        .chain(picked.into_iter().map(Special::to_added))
    {
        match tokens.iter_mut().find(|t| t.content == token.content) {
            Some(earlier) => *earlier = token,
            None => tokens.push(token),
        }
    }
    tokens
}

/// Reads bos, eos, unk, sep, pad, cls and mask from the config, overridden by the legacy special-tokens
/// map when given, with `CLIPTokenizer`'s defaults for bos, eos, unk and pad.
fn named_specials(
    config: &Map<String, Value>,
    special_map: Option<&Map<String, Value>>,
    config_name: &str,
    map_name: &str,
) -> Result<NamedSpecials> {
    let mut slots: Vec<(&str, Option<Special>)> = Vec::new();
    for key in NAMED_SPECIALS {
        let from_map = special_map
            .and_then(|m| m.get(key))
            .filter(|v| !v.is_null());
        let value = match from_map {
            Some(v) => parse_special(v, true, map_name, key)?,
            None => match config.get(key).filter(|v| !v.is_null()) {
                Some(v) => parse_special(v, false, config_name, key)?,
                None => None,
            },
        };
        let value = value.or_else(|| {
            let default = match key {
                "bos_token" => BOS_TOKEN,
                "eos_token" | "unk_token" | "pad_token" => EOS_TOKEN,
                _ => return None,
            };
            Some(Special::Plain(default.to_owned()))
        });
        slots.push((key, value));
    }
    let pad = slots
        .iter()
        .find(|(k, _)| *k == "pad_token")
        .and_then(|(_, v)| v.as_ref())
        .map_or_else(|| EOS_TOKEN.to_owned(), |s| s.content().to_owned());
    // Keep bos, eos, unk at fixed positions for the accessors: they always have a value (defaults).
    let tokens = slots.into_iter().filter_map(|(_, v)| v).collect();
    Ok(NamedSpecials { tokens, pad })
}

/// A special-token value: `"<|endoftext|>"` or `{"content": ..., "normalized": ..., ...}` (an empty
/// content counts as absent, as in transformers).
fn parse_special(value: &Value, from_map: bool, file: &str, key: &str) -> Result<Option<Special>> {
    match value {
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => Ok(Some(Special::Plain(s.clone()))),
        Value::Object(obj) => {
            let token = parse_added_token(obj, from_map, file, key)?;
            Ok((!token.content.is_empty()).then_some(Special::Token(token)))
        }
        other => Err(Error::Tokenizer(format!(
            "{file}: `{key}` must be a string or an object with `content`, found {other}"
        ))),
    }
}

/// An `AddedToken` object. `normalized` defaults to `!special`, as in `tokenizers`.
fn parse_added_token(
    obj: &Map<String, Value>,
    special_default: bool,
    file: &str,
    key: &str,
) -> Result<AddedToken> {
    let content = obj
        .get("content")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::Tokenizer(format!("{file}: `{key}` has no string `content`")))?;
    let flag = |name: &str, default: bool| -> Result<bool> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(Error::Tokenizer(format!(
                "{file}: `{key}.{name}` must be true or false, found {other}"
            ))),
        }
    };
    let special = flag("special", special_default)?;
    Ok(AddedToken {
        content: content.to_owned(),
        single_word: flag("single_word", false)?,
        lstrip: flag("lstrip", false)?,
        rstrip: flag("rstrip", false)?,
        normalized: flag("normalized", !special)?,
        special,
    })
}

/// `added_tokens_decoder`: `{"49406": {"content": ..., ...}, ...}`, in id order.
fn parse_added_tokens_decoder(value: &Value, file: &str) -> Result<Vec<AddedToken>> {
    let obj = value.as_object().ok_or_else(|| {
        Error::Tokenizer(format!("{file}: `added_tokens_decoder` must be an object"))
    })?;
    let mut tokens = Vec::with_capacity(obj.len());
    for (id, token) in obj {
        let key = format!("added_tokens_decoder.{id}");
        let id: u64 = id.parse().map_err(|_| {
            Error::Tokenizer(format!("{file}: `{key}`: the key must be a token id"))
        })?;
        let token = token
            .as_object()
            .ok_or_else(|| Error::Tokenizer(format!("{file}: `{key}` must be an object")))?;
        tokens.push((id, parse_added_token(token, false, file, &key)?));
    }
    tokens.sort_by_key(|(id, _)| *id);
    Ok(tokens.into_iter().map(|(_, t)| t).collect())
}

/// `model_max_length`: missing or transformers' "unset" value gives [`DEFAULT_MAX_LEN`].
fn max_len_from(config: &Map<String, Value>, file: &str) -> Result<usize> {
    let Some(value) = config.get("model_max_length").filter(|v| !v.is_null()) else {
        return Ok(DEFAULT_MAX_LEN);
    };
    if let Some(n) = value.as_u64() {
        if (2..=MAX_MAX_LEN).contains(&n) {
            return usize::try_from(n)
                .map_err(|_| Error::Tokenizer(format!("{file}: model_max_length {n} too large")));
        }
    } else if value.as_f64().is_some_and(|x| x >= UNSET_MAX_LEN) {
        return Ok(DEFAULT_MAX_LEN);
    }
    Err(Error::Tokenizer(format!(
        "{file}: model_max_length must be an integer from 2 to {MAX_MAX_LEN} (77 for CLIP), found {value}"
    )))
}

fn parse_vocab(text: &str, name: &str) -> Result<Vocab> {
    let vocab: HashMap<String, u32> = serde_json::from_str(text).map_err(|e| {
        Error::Tokenizer(format!("{name}: expected a JSON object of token → id: {e}"))
    })?;
    Ok(vocab.into_iter().collect())
}

/// merges.txt: one `left right` pair a line, in priority order; `#version` lines are skipped, as by
/// `tokenizers`, and so are blank lines.
fn parse_merges(text: &str, name: &str) -> Result<Merges> {
    let mut merges = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with("#version") || line.is_empty() {
            continue;
        }
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), None) => merges.push((a.to_owned(), b.to_owned())),
            _ => {
                return Err(Error::Tokenizer(format!(
                    "{name} line {}: expected two symbols separated by one space, found {line:?}",
                    n + 1
                )))
            }
        }
    }
    Ok(merges)
}

/// The BPE vocabulary, merges and added tokens of a `tokenizer.json`. Like transformers 5, only these
/// are taken: the pipeline itself is always CLIP's.
fn parse_tokenizer_json(text: &str, path: &Path) -> Result<(Vocab, Merges, Vec<AddedToken>)> {
    let name = path.display().to_string();
    let root: Value = serde_json::from_str(text)
        .map_err(|e| Error::Tokenizer(format!("{name}: invalid JSON: {e}")))?;
    let model = root
        .get("model")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::Tokenizer(format!("{name}: no `model` object")))?;
    if let Some(kind) = model.get("type").and_then(Value::as_str) {
        if kind != "BPE" {
            return Err(Error::Tokenizer(format!(
                "{name}: model type {kind:?}, CLIP needs \"BPE\""
            )));
        }
    }
    let vocab_value = model
        .get("vocab")
        .ok_or_else(|| Error::Tokenizer(format!("{name}: `model.vocab` missing")))?;
    let vocab: HashMap<String, u32> = serde_json::from_value(vocab_value.clone()).map_err(|e| {
        Error::Tokenizer(format!("{name}: `model.vocab` must map tokens to ids: {e}"))
    })?;
    let merges_value = model
        .get("merges")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::Tokenizer(format!("{name}: `model.merges` missing")))?;
    let mut merges = Vec::with_capacity(merges_value.len());
    for (i, merge) in merges_value.iter().enumerate() {
        let pair = match merge {
            // Older files: "left right"; newer ones: ["left", "right"].
            Value::String(s) => s.split_once(' ').filter(|(_, b)| !b.contains(' ')),
            Value::Array(a) if a.len() == 2 => a[0].as_str().zip(a[1].as_str()),
            _ => None,
        };
        let (a, b) = pair.ok_or_else(|| {
            Error::Tokenizer(format!(
                "{name}: `model.merges[{i}]` must be \"left right\" or [\"left\", \"right\"]"
            ))
        })?;
        merges.push((a.to_owned(), b.to_owned()));
    }
    let mut added = Vec::new();
    if let Some(list) = root.get("added_tokens").filter(|v| !v.is_null()) {
        let list = list
            .as_array()
            .ok_or_else(|| Error::Tokenizer(format!("{name}: `added_tokens` must be a list")))?;
        for (i, token) in list.iter().enumerate() {
            let key = format!("added_tokens[{i}]");
            let obj = token
                .as_object()
                .ok_or_else(|| Error::Tokenizer(format!("{name}: `{key}` must be an object")))?;
            added.push(parse_added_token(obj, false, &name, &key)?);
        }
    }
    Ok((vocab.into_iter().collect(), merges, added))
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

/// A JSON object file, `None` if the file does not exist.
fn read_json_object_opt(path: &Path) -> Result<Option<Map<String, Value>>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = read_text(path)?;
    match serde_json::from_str(&text) {
        Ok(Value::Object(obj)) => Ok(Some(obj)),
        Ok(_) => Err(Error::Tokenizer(format!(
            "{}: expected a JSON object",
            path.display()
        ))),
        Err(e) => Err(Error::Tokenizer(format!(
            "{}: invalid JSON: {e}",
            path.display()
        ))),
    }
}
