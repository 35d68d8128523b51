"""Oracle for selfcascade-sd's CLIP tokenizer: Hugging Face transformers' `CLIPTokenizer`.

Writes crates/selfcascade-sd/tests/fixtures/clip-tokenizer/:

* vocab.json + merges.txt: CLIP's byte-level BPE (49408 tokens, 48894 merges), derived from the BPE file
  that ships inside the open-clip-torch wheel, built the way OpenAI's/open_clip's simple tokenizer builds
  its vocabulary (256 byte symbols, the same 256 with `</w>`, one token per merge, then the two special
  tokens), in the layout of the `tokenizer/` folder of the Stable Diffusion repos.
* configs/<name>/: tokenizer configs as the real repos ship them (SD 1.x, SD 2.x, SDXL's two tokenizers,
  transformers 5's own `save_pretrained` output, and two odd special-token combinations that pin down
  how transformers merges the special tokens' flags). A config folder plus the two vocabulary files is a
  complete tokenizer folder.
* ids.json: prompts and the ids transformers gives for them, `padding="max_length", max_length=77,
  truncation=True`, exactly as the diffusers Stable Diffusion pipelines call it.

The Rust tests read these files; CI needs no Python. Run with transformers 5.24, tokenizers 0.23, diffusers 0.42
and open-clip-torch installed (nothing is downloaded):

    HF_HUB_OFFLINE=1 python tools/oracle/tokenizer.py

The output is deterministic: running it again rewrites the same files.
"""
import gzip
import json
import logging
import os
import random
import shutil
import sys
import tempfile

import diffusers
import tokenizers
import transformers
from transformers import CLIPTokenizer

logging.disable(logging.WARNING)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "crates", "selfcascade-sd", "tests", "fixtures", "clip-tokenizer")
OPEN_CLIP_BPE = os.path.join(os.path.dirname(__import__("open_clip").__file__), "bpe_simple_vocab_16e6.txt.gz")
MAX_LEN = 77
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
N_MERGES = 49152 - 256 - 2  # CLIP's vocabulary is 49408 = 2 * 256 byte symbols + 48894 merges + 2 specials


def byte_symbols():
    """GPT-2/CLIP byte-to-unicode table: printable Latin-1 bytes map to themselves, the others to U+0100.."""
    printable = [b for b in range(256) if 0x21 <= b <= 0x7E or 0xA1 <= b <= 0xAC or 0xAE <= b <= 0xFF]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(0x100 + extra)
            extra += 1
    # Vocabulary order: printable bytes first (ascending), then the remapped ones (ascending).
    return [table[b] for b in printable] + [table[b] for b in range(256) if b not in printable]


def build_vocab():
    with gzip.open(OPEN_CLIP_BPE, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 1 + N_MERGES]]  # line 0 is the file's header
    assert all(len(m) == 2 for m in merges)
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [BOS, EOS]
    vocab = {}
    for i, t in enumerate(tokens):
        assert t not in vocab, t
        vocab[t] = i
    assert len(vocab) == 49408 and vocab[BOS] == 49406 and vocab[EOS] == 49407 and vocab["!"] == 0
    return vocab, merges


def added(content, normalized=True, typed=True, special=None):
    d = {"content": content, "lstrip": False, "normalized": normalized, "rstrip": False, "single_word": False}
    if special is not None:
        d["special"] = special
    return {"__type": "AddedToken", **d} if typed else d


def legacy_config(pad, eos=None, unk=None):
    """tokenizer_config.json as in the SD 1.x / 2.x repos (written by transformers 4.2x)."""
    return {
        "add_prefix_space": False,
        "bos_token": added(BOS),
        "do_lower_case": True,
        "eos_token": added(EOS) if eos is None else eos,
        "errors": "replace",
        "model_max_length": MAX_LEN,
        "name_or_path": "openai/clip-vit-large-patch14",
        "pad_token": pad,
        "special_tokens_map_file": "./special_tokens_map.json",
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": added(EOS) if unk is None else unk,
    }


def legacy_map(pad):
    return {"bos_token": added(BOS, typed=False), "eos_token": added(EOS, typed=False), "pad_token": pad,
            "unk_token": added(EOS, typed=False)}


def xl_config(pad, with_bang):
    """tokenizer_config.json as in the SDXL repos (written by transformers 4.3x: `added_tokens_decoder`)."""
    dec = {}
    if with_bang:
        dec["0"] = {**added("!", normalized=False, typed=False), "special": True}
    dec["49406"] = {**added(BOS, typed=False), "special": True}
    dec["49407"] = {**added(EOS, typed=False), "special": True}
    return {"add_prefix_space": False, "added_tokens_decoder": dec, "bos_token": BOS,
            "clean_up_tokenization_spaces": True, "do_lower_case": True, "eos_token": EOS, "errors": "replace",
            "model_max_length": MAX_LEN, "pad_token": pad, "tokenizer_class": "CLIPTokenizer", "unk_token": EOS}


CONFIGS = {
    # name: {file name: content}
    "sd15": {"tokenizer_config.json": legacy_config(EOS), "special_tokens_map.json": legacy_map(EOS)},
    "sd21": {"tokenizer_config.json": legacy_config("!"), "special_tokens_map.json": legacy_map("!")},
    "sdxl": {"tokenizer_config.json": xl_config(EOS, False),
             "special_tokens_map.json": {**legacy_map(EOS), "bos_token": added(BOS, typed=False)}},
    "sdxl2": {"tokenizer_config.json": xl_config("!", True), "special_tokens_map.json": legacy_map("!")},
    # eos normalized, unk a plain string, pad normalized: the pad is a duplicate of eos and is dropped, the unk's
    # flags win (a plain string is not normalized).
    "odd-a": {"tokenizer_config.json": legacy_config(added(EOS), unk=EOS)},
    # eos not normalized, unk normalized, pad equal to eos (dropped): the unk's flags win, `<|endoftext|>` is normalized.
    "odd-b": {"tokenizer_config.json": legacy_config(added(EOS, normalized=False), eos=added(EOS, normalized=False))},
    # special_tokens_map.json wins over tokenizer_config.json (configs without `added_tokens_decoder`).
    "map-wins": {"tokenizer_config.json": legacy_config(EOS), "special_tokens_map.json": legacy_map("!")},
}
# The two configs every prompt runs through; the others run the hand-written prompts.
FULL = ["sd15", "sd21"]


HARD = [
    "a photograph of an astronaut riding a horse",
    "A Photograph Of An ASTRONAUT riding a HoRsE",
    "  leading and trailing spaces  ",
    "multiple   spaces\tand\ttabs\nand\nnew\r\nlines\x0bvt\x0cff",
    "no-break\u00a0space, em\u2003space, ideographic\u3000space, zero\u200bwidth, nel\u0085x, ls\u2028ps\u2029end",
    "!!!",
    "!",
    "?!...",
    "hello!world",
    "hello!",
    "hello !",
    "! hello ! world !",
    "wow!!! really?! yes... (maybe) [no] {ok} <tag> #hash @at $5 %50 ^caret &amp; *star* _under_ ~tilde `tick`",
    "don't it's we're they've I'm you'll he'd",
    "DON'T IT'S We'Re",
    "rock'n'roll o'clock ''quoted'' 's 't",
    "1024x1024 3.14 2023-12-31 100% 1,000,000 v1.5 sd2.1 4k 8K uhd",
    "\u2460\u00bd\u00b2 \u0663\u0664 \u096a \uff11\uff12",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber stra\u00dfe",
    "cafe\u0301 nai\u0308ve",
    "\u00c9COLE \u0130STANBUL \u1e9e \u03a3\u039f\u03a6\u0399\u0391 \u0391\u0398\u0397\u039d\u0391\u03a3",
    "\u4e00\u53ea\u732b\u5728\u8349\u5730\u4e0a \u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8 \ud55c\uad6d\uc5b4",
    "\u043a\u043e\u0448\u043a\u0430 \u03b3\u03ac\u03c4\u03b1 \u05d7\u05ea\u05d5\u05dc \u0642\u0637\u0629 \u092c\u093f\u0932\u094d\u0932\u0940 \u0e41\u0e21\u0e27",
    "a cat \U0001f431 with a hat \U0001f3a9\u2728 \U0001f468\u200d\U0001f469\u200d\U0001f467 \U0001f44d\U0001f3fd \U0001f1eb\U0001f1f7",
    "\uff21\uff22\uff23 \uff41\uff42\uff43 \u2122 \ufb01 \u212b",
    "a <|endoftext|> b",
    "<|endoftext|>",
    "x<|endoftext|>y",
    "x<|ENDOFTEXT|>y",
    "a <|startoftext|> b",
    "<|startoftext|><|endoftext|>",
    "<|startoftext|> <|ENDOFTEXT|> <|EndOfText|>",
    "<|endof text|> <|endoftext| > < |endoftext|>",
    "a !<|endoftext|>! b",
    "",
    " ",
    "      ",
    "\t\n \r\n",
    "a",
    "A",
    "\u00ff\u0100\u0101 \x7f\x01 tab\there",
    "&amp; &lt;b&gt; &#39;",
    "https://example.com/path?query=1&x=y#frag user@example.com",
    ", ".join(["masterpiece", "best quality", "ultra-detailed", "8k", "photorealistic", "intricate", "cinematic lighting",
               "depth of field", "bokeh", "golden hour", "trending on artstation", "octane render", "unreal engine",
               "highly detailed face", "sharp focus", "volumetric fog", "dramatic sky", "concept art", "wide angle"]),
    " ".join(["word"] * 75),
    " ".join(["word"] * 76),
    " ".join(["word"] * 100),
    "!" * 80,
    "! " * 80,
    "supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
]


def random_prompts(vocab, seed=20240607):
    rng = random.Random(seed)
    symbols = byte_symbols()
    decode = {s: b for b, s in zip(
        [b for b in range(256) if 0x21 <= b <= 0x7E or 0xA1 <= b <= 0xAC or 0xAE <= b <= 0xFF]
        + [b for b in range(256) if not (0x21 <= b <= 0x7E or 0xA1 <= b <= 0xAC or 0xAE <= b <= 0xFF)], symbols)}
    words = [t for t in vocab if t not in (BOS, EOS)]

    def token_text(t):
        end = t.endswith("</w>")
        body = t[: -len("</w>")] if end else t
        text = bytes(decode[c] for c in body).decode("utf-8", errors="ignore")
        return text + (" " if end else "")

    def recase(s):
        r = rng.random()
        return s.upper() if r < 0.15 else s.title() if r < 0.3 else s

    seps = [" ", " ", " ", "  ", "\t", "\n", "", ", ", " . ", "!", " ! ", "'s ", "-"]
    pools = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "0123456789",
        "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
        " \t\n\r\x0b\x0c\u00a0\u1680\u2000\u2003\u2009\u200a\u2028\u2029\u202f\u205f\u3000\u0085\u200b\u180e\ufeff",
        "\u00e0\u00e1\u00e2\u00e3\u00e4\u00e5\u00e6\u00e7\u00e8\u00e9\u00ea\u00eb\u00f1\u00f6\u00f8\u00fc\u00df\u00c0\u00c9\u00d6\u00dc\u0130\u0131\u0152\u0153\u1e9e",
        "\u0300\u0301\u0302\u0303\u0308\u030a\u0327\u0328\u0331\u20dd\u0e31\u093f",
        "\u03b1\u03b2\u03b3\u03a3\u03c2\u03c3\u0410\u0411\u0430\u0431\u044f\u05d0\u05d1\u0627\u0628\u0660\u0661\u0915\u0916\u0966\u0e01\u0e02",
        "\u4e00\u4e8c\u4e09\u732b\u72d7\u5c71\u6c34\u3042\u3044\u30a2\u30a4\u30fc\uac00\ud55c\uae00\u3131\uff01\uff1f\u3002\u3001",
        "\U0001f600\U0001f431\U0001f3a8\u2764\ufe0f\u2728\U0001f44d\U0001f3fb\u200d\U0001f1fa\U0001f1f8\U0001f9d1\u2600\u26a1",
        "\u2160\u2161\u2460\u00bd\u00b2\u00b3\u2070\u2153\u216b\u3007\U00010107",
        "\u00a9\u00ae\u2122\u00b0\u00b1\u00d7\u00f7\u2211\u221e\u2248\u2260\u2264\u2190\u2192\u2500\u25a0\u2605\u266a\u20ac\u00a3\u00a5",
        "\uff21\uff41\uff10\ufb01\ufb02\u2126\u212b\u01c4\u01c5\u01c6\u1f88\u1fbc\u0345",
    ]

    prompts = []
    for _ in range(100):  # vocabulary words, recased, with assorted separators
        n = rng.randint(1, 30)
        parts = []
        for _ in range(n):
            parts.append(recase(token_text(rng.choice(words))))
            parts.append(rng.choice(seps))
        prompts.append("".join(parts))
    for _ in range(100):  # characters from the pools above
        n = rng.randint(1, 60)
        weights = [8, 3, 3, 3, 2, 1, 2, 2, 2, 1, 1, 1]
        prompts.append("".join(rng.choice(rng.choices(pools, weights)[0]) for _ in range(n)))
    for _ in range(50):  # arbitrary code points of all planes (no surrogates): probes the Unicode tables
        chars = []
        for _ in range(rng.randint(1, 25)):
            r = rng.random()
            if r < 0.3:
                cp = rng.randint(0x20, 0x7E)
            elif r < 0.8:
                cp = rng.randint(0xA0, 0xFFFF)
            else:
                cp = rng.randint(0x10000, 0x10FFFF)
            if 0xD800 <= cp <= 0xDFFF:
                cp = 0x20
            chars.append(chr(cp))
        prompts.append("".join(chars))
    for _ in range(10):  # long prompts: truncation
        prompts.append(" ".join(token_text(rng.choice(words)).strip() or "x" for _ in range(rng.randint(60, 140))))
    return prompts


PROBE_TEMPLATE = "x{c}y{c}{c}1{c}"
PROBE_BLOCK = 0x1000
FNV_OFFSET, FNV_PRIME, MASK64 = 0xCBF29CE484222325, 0x100000001B3, (1 << 64) - 1


def codepoint_probe(tok):
    """Every Unicode scalar value c in `x{c}y{c}{c}1{c}` (no BOS/EOS): whitespace, letter, digit, lowercase,
    NFC and pattern classes of the whole Unicode range. Too many ids to store, so one FNV-1a-64 digest per
    block of 4096 code points: each id is folded in as one 64-bit value, 0xFFFFFFFF closes each code point."""
    digests = []
    for start in range(0, 0x110000, PROBE_BLOCK):
        cps = [c for c in range(start, start + PROBE_BLOCK) if not 0xD800 <= c <= 0xDFFF]
        if not cps:
            continue
        texts = [PROBE_TEMPLATE.replace("{c}", chr(c)) for c in cps]
        h = FNV_OFFSET
        for ids in tok(texts, add_special_tokens=False).input_ids:
            for i in ids + [0xFFFFFFFF]:
                h = ((h ^ i) * FNV_PRIME) & MASK64
        digests.append({"start": start, "end": cps[-1], "fnv1a64": f"{h:016x}"})
    return digests


def encode(tok, prompt):
    ids = tok(prompt, padding="max_length", max_length=MAX_LEN, truncation=True).input_ids
    full = tok(prompt).input_ids  # no truncation: BOS + tokens + EOS
    assert len(ids) == MAX_LEN
    return ids, len(full) > MAX_LEN


def added_tokens_of(tok):
    j = json.loads(tok.backend_tokenizer.to_str())
    return [{k: a[k] for k in ("id", "content", "normalized", "lstrip", "rstrip", "single_word")} for a in j["added_tokens"]]


def main():
    # diffusers' Stable Diffusion pipelines type their tokenizers as transformers.CLIPTokenizer; in transformers 5
    # that class is the tokenizers-backed one and CLIPTokenizerFast is the same class.
    from diffusers import StableDiffusionPipeline
    import inspect
    assert "CLIPTokenizer" in str(inspect.signature(StableDiffusionPipeline.__init__).parameters["tokenizer"].annotation)
    assert transformers.CLIPTokenizerFast is CLIPTokenizer

    vocab, merges = build_vocab()
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    with open(os.path.join(OUT, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False, separators=(",", ":"))
    with open(os.path.join(OUT, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))

    prompts = HARD + random_prompts(vocab)
    work = tempfile.mkdtemp()
    result = {
        "transformers_version": transformers.__version__,
        "tokenizers_version": tokenizers.__version__,
        "diffusers_version": diffusers.__version__,
        "python": sys.version.split()[0],
        "tokenizer_class": f"{CLIPTokenizer.__module__}.{CLIPTokenizer.__name__}",
        "call": f'tokenizer(prompt, padding="max_length", max_length={MAX_LEN}, truncation=True).input_ids',
        "max_length": MAX_LEN,
        "n_hard": len(HARD),
        "prompts": prompts,
        "configs": {},
    }

    def run(name, folder, n):
        tok = CLIPTokenizer.from_pretrained(folder)
        out = [encode(tok, p) for p in prompts[:n]]
        return tok, {
            "pad_token": str(tok.pad_token),
            "pad_id": tok.pad_token_id,
            "model_max_length": tok.model_max_length,
            "added_tokens": added_tokens_of(tok),
            "ids": [ids for ids, _ in out],
            "truncated": [t for _, t in out],
        }

    all_configs = dict(CONFIGS)
    for name, files in CONFIGS.items():
        cdir = os.path.join(OUT, "configs", name)
        os.makedirs(cdir)
        folder = os.path.join(work, name)
        os.makedirs(folder)
        for fname, content in files.items():
            for d in (cdir, folder):
                with open(os.path.join(d, fname), "w", encoding="utf-8") as f:
                    json.dump(content, f, indent=2, ensure_ascii=False)
                    f.write("\n")
        shutil.copy(os.path.join(OUT, "vocab.json"), folder)
        shutil.copy(os.path.join(OUT, "merges.txt"), folder)
        tok, res = run(name, folder, len(prompts) if name in FULL else len(HARD))
        result["configs"][name] = res

        if name in FULL:
            # transformers 5's own save format: tokenizer.json + a short tokenizer_config.json. Reloading it must
            # give the same ids. The fixture keeps the tokenizer.json without its vocabulary and merges (the
            # tests put the shared ones back in); they are checked here to be the same as vocab.json/merges.txt.
            saved = os.path.join(work, name + "-saved")
            tok.save_pretrained(saved)
            assert sorted(os.listdir(saved)) == ["tokenizer.json", "tokenizer_config.json"], os.listdir(saved)
            with open(os.path.join(saved, "tokenizer.json"), encoding="utf-8") as f:
                tj = json.load(f)
            assert tj["model"]["vocab"] == vocab
            assert [tuple(m) for m in tj["model"]["merges"]] == merges
            sname = name + "-saved"
            sdir = os.path.join(OUT, "configs", sname)
            os.makedirs(sdir)
            shutil.copy(os.path.join(saved, "tokenizer_config.json"), sdir)
            tj["model"]["vocab"] = {}
            tj["model"]["merges"] = []
            with open(os.path.join(sdir, "tokenizer.stub.json"), "w", encoding="utf-8") as f:
                json.dump(tj, f, indent=2, ensure_ascii=False)
                f.write("\n")
            _, sres = run(sname, saved, len(prompts))
            assert sres["ids"] == res["ids"], sname
            sres["ids"] = sres["ids"][: len(HARD)]
            sres["truncated"] = sres["truncated"][: len(HARD)]
            result["configs"][sname] = sres
            all_configs[sname] = None

    probe_tok = CLIPTokenizer.from_pretrained(os.path.join(work, "sd21"))
    result["codepoint_probe"] = {"config": "sd21", "template": PROBE_TEMPLATE, "block": PROBE_BLOCK,
                                 "digests": codepoint_probe(probe_tok)}
    shutil.rmtree(work)
    with open(os.path.join(OUT, "ids.json"), "w", encoding="utf-8") as f:
        # One prompt / one id list per line: reviewable diffs, modest size.
        f.write("{\n")
        meta = [k for k in result if k not in ("prompts", "configs", "codepoint_probe")]
        for k in meta:
            f.write(f"  {json.dumps(k)}: {json.dumps(result[k])},\n")
        probe = result["codepoint_probe"]
        f.write('  "codepoint_probe": {\n')
        for k in ("config", "template", "block"):
            f.write(f"    {json.dumps(k)}: {json.dumps(probe[k])},\n")
        f.write('    "digests": [\n')
        f.write(",\n".join("      " + json.dumps(d) for d in probe["digests"]))
        f.write("\n    ]\n  },\n")
        f.write('  "prompts": [\n')
        f.write(",\n".join("    " + json.dumps(p, ensure_ascii=True) for p in prompts))
        f.write("\n  ],\n  \"configs\": {\n")
        blocks = []
        for name, res in result["configs"].items():
            lines = [f'    {json.dumps(name)}: {{']
            for k in ("pad_token", "pad_id", "model_max_length", "added_tokens", "truncated"):
                lines.append(f"      {json.dumps(k)}: {json.dumps(res[k])},")
            lines.append('      "ids": [')
            lines.append(",\n".join("        " + json.dumps(ids, separators=(",", ":")) for ids in res["ids"]))
            lines.append("      ]")
            lines.append("    }")
            blocks.append("\n".join(lines))
        f.write(",\n".join(blocks))
        f.write("\n  }\n}\n")
    n_trunc = sum(result["configs"]["sd15"]["truncated"])
    print(f"wrote {OUT}: {len(prompts)} prompts ({len(HARD)} hand-written, {n_trunc} truncated), "
          f"configs {list(result['configs'])}, transformers {transformers.__version__}, tokenizers {tokenizers.__version__}")


if __name__ == "__main__":
    main()
