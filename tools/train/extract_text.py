#!/usr/bin/env python3
"""Extract plain text from the mdBook HTML documentation shipped with the Rust toolchain.

Input : $(rustc --print sysroot)/share/doc/rust/html   (MIT OR Apache-2.0)
Output (in --out, default /work/train-work/data):
  train.txt          training text (all selected books except the Rustonomicon);
                     documents separated by the line "<|endoftext|>"
  train-stats.json   characters / pages per book
  nomicon.txt        the Rustonomicon, held out entirely (evaluation text)
  nomicon-spans.json [[start, end, "code"|"prose"], ...] character spans of nomicon.txt
  nomicon-code.txt   code blocks only of the Rustonomicon
  nomicon-prose.txt  prose only of the Rustonomicon

Text format: prose paragraphs with whitespace collapsed, separated by blank lines;
headings prefixed with '#'; list items with '- '; inline code in backticks;
code blocks (<pre>) kept verbatim inside ``` fences (```rust for Rust code).
Only the page's <main> element is read, so the sidebar, navigation, scripts and
buttons are dropped.
"""
import argparse
import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser

# Books used for training, in this order. The Rustonomicon is never among them.
TRAIN_BOOKS = [
    "book",
    "rust-by-example",
    "reference",
    "cargo",
    "edition-guide",
    "embedded-book",
    "rustdoc",
    "style-guide",
    "error_codes",
    "rustc",
]
HELDOUT_BOOK = "nomicon"
SKIP_PAGES = {"print.html", "toc.html", "404.html"}
# Old-edition redirect trees of the Book.
SKIP_DIRS = {"2018-edition", "first-edition", "second-edition", "theme", "css", "fonts", "img"}
LANG_DIR = re.compile(r"^[a-z]{2}(-[A-Za-z]{2,4})?$")  # translations: es, ja, ko, zh, pt-BR ...

BLOCK_TAGS = {
    "p", "div", "section", "article", "blockquote", "table", "tr", "ul", "ol", "dl",
    "dt", "dd", "h1", "h2", "h3", "h4", "h5", "h6", "li", "hr", "br", "figure", "details",
    "summary", "thead", "tbody",
}
SKIP_TAGS = {"script", "style", "nav", "button", "noscript", "template", "svg", "head", "title"}
VOID_TAGS = {"br", "hr", "img", "input", "meta", "link", "wbr", "area", "base", "col", "source"}


class MainTextParser(HTMLParser):
    """Collects segments [(kind, text)] from inside <main>, kind in {'prose', 'code'}."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.in_main = 0
        self.skip = 0
        self.pre = 0
        self.pre_lang = ""
        self.segments = []  # (kind, text)
        self.buf = []  # current prose paragraph pieces
        self.code = []
        self.in_inline_code = False
        self.heading = None

    # --- prose buffer -----------------------------------------------------------------
    def flush_prose(self):
        text = "".join(self.buf)
        text = re.sub(r"[ \t\r\n]+", " ", text).strip()
        if text:
            self.segments.append(("prose", text))
        self.buf = []

    def handle_starttag(self, tag, attrs):
        if tag == "main":
            self.in_main += 1
            return
        if not self.in_main:
            return
        if tag in SKIP_TAGS:
            if tag not in VOID_TAGS:
                self.skip += 1
            return
        if self.skip:
            return
        a = dict(attrs)
        if tag == "pre":
            self.flush_prose()
            self.pre += 1
            self.code = []
            self.pre_lang = ""
            return
        if self.pre:
            if tag == "code":
                cls = a.get("class") or ""
                m = re.search(r"language-([A-Za-z0-9_+-]+)", cls)
                if m:
                    self.pre_lang = m.group(1)
            return
        if tag in BLOCK_TAGS:
            self.flush_prose()
            if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
                self.buf.append("#" * int(tag[1]) + " ")
            elif tag == "li":
                self.buf.append("- ")
        elif tag in ("td", "th"):
            self.buf.append(" | ")
        elif tag == "code":
            self.in_inline_code = True
            self.buf.append("`")

    def handle_endtag(self, tag):
        if tag == "main":
            if self.in_main:
                self.flush_prose()
                self.in_main -= 1
            return
        if not self.in_main:
            return
        if tag in SKIP_TAGS:
            if self.skip:
                self.skip -= 1
            return
        if self.skip:
            return
        if tag == "pre" and self.pre:
            self.pre -= 1
            code = "".join(self.code).strip("\n")
            if code.strip():
                fence = "```rust" if self.pre_lang.startswith("rust") else "```"
                self.segments.append(("code", f"{fence}\n{code}\n```"))
            self.code = []
            return
        if self.pre:
            return
        if tag in BLOCK_TAGS:
            self.flush_prose()
        elif tag == "code" and self.in_inline_code:
            self.in_inline_code = False
            self.buf.append("`")

    def handle_data(self, data):
        if not self.in_main or self.skip:
            return
        if self.pre:
            self.code.append(data)
        else:
            self.buf.append(data)


def page_segments(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        html = f.read()
    p = MainTextParser()
    p.feed(html)
    p.close()
    p.flush_prose()
    return p.segments


def book_pages(root):
    pages = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        dirnames[:] = sorted(
            d for d in dirnames if d not in SKIP_DIRS and not (rel == "." and LANG_DIR.match(d))
        )
        for fn in sorted(filenames):
            if fn.endswith(".html") and fn not in SKIP_PAGES:
                pages.append(os.path.join(dirpath, fn))
    return pages


def join_segments(segments):
    """Join segments with blank lines; return text and [(start, end, kind)] spans."""
    out, spans, pos = [], [], 0
    for kind, text in segments:
        if out:
            out.append("\n\n")
            pos += 2
        spans.append((pos, pos + len(text), kind))
        out.append(text)
        pos += len(text)
    return "".join(out), spans


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--html", default=None, help="doc root (default: rustc sysroot share/doc/rust/html)")
    ap.add_argument("--out", default="/work/train-work/data")
    ap.add_argument("--sample", default=None, help="also write a <=40 KB held-out sample here")
    args = ap.parse_args()
    html_root = args.html
    if html_root is None:
        sysroot = subprocess.check_output(["rustc", "--print", "sysroot"], text=True).strip()
        html_root = os.path.join(sysroot, "share", "doc", "rust", "html")
    os.makedirs(args.out, exist_ok=True)

    stats = {}
    with open(os.path.join(args.out, "train.txt"), "w", encoding="utf-8") as out:
        for book in TRAIN_BOOKS:
            root = os.path.join(html_root, book)
            if not os.path.isdir(root):
                print(f"warning: {root} missing, skipped", file=sys.stderr)
                continue
            n_pages = n_chars = n_code = 0
            for page in book_pages(root):
                segs = page_segments(page)
                text, spans = join_segments(segs)
                if len(text) < 200:  # redirect stubs and empty index pages
                    continue
                out.write(text)
                out.write("\n<|endoftext|>\n")
                n_pages += 1
                n_chars += len(text)
                n_code += sum(e - s for s, e, k in spans if k == "code")
            stats[book] = {"pages": n_pages, "chars": n_chars, "code_chars": n_code}
            print(f"{book:16s} pages={n_pages:5d} chars={n_chars:9d} code={n_code:9d}")

    # Held-out Rustonomicon, with code/prose spans.
    all_segs = []
    for page in book_pages(os.path.join(html_root, HELDOUT_BOOK)):
        segs = page_segments(page)
        text, _ = join_segments(segs)
        if len(text) < 200:
            continue
        all_segs.extend(segs)
    text, spans = join_segments(all_segs)
    with open(os.path.join(args.out, "nomicon.txt"), "w", encoding="utf-8") as f:
        f.write(text)
    with open(os.path.join(args.out, "nomicon-spans.json"), "w") as f:
        json.dump(spans, f)
    with open(os.path.join(args.out, "nomicon-code.txt"), "w", encoding="utf-8") as f:
        f.write("\n\n".join(t for k, t in all_segs if k == "code"))
    with open(os.path.join(args.out, "nomicon-prose.txt"), "w", encoding="utf-8") as f:
        f.write("\n\n".join(t for k, t in all_segs if k == "prose"))
    code_chars = sum(e - s for s, e, k in spans if k == "code")
    stats[HELDOUT_BOOK] = {"chars": len(text), "code_chars": code_chars, "heldout": True}
    print(f"{HELDOUT_BOOK:16s} chars={len(text):9d} code={code_chars:9d} (held out)")
    with open(os.path.join(args.out, "train-stats.json"), "w") as f:
        json.dump(stats, f, indent=1)

    if args.sample:
        # First whole paragraphs up to 40 KB (bytes) of the held-out text.
        limit = 40 * 1024 - 64
        cut = text.encode("utf-8")[:limit].decode("utf-8", errors="ignore")
        cut = cut[: cut.rfind("\n\n")] if "\n\n" in cut else cut
        with open(args.sample, "w", encoding="utf-8") as f:
            f.write(cut + "\n")
        print(f"sample: {args.sample} ({len(cut.encode('utf-8'))} bytes)")


if __name__ == "__main__":
    main()
