"""Token estimates for requests, without a tokenizer.

Used for the `input_tokens` of a translated stream's `message_start` (the upstream reports real
numbers only at the end) and for `count_tokens` when the upstream cannot count. Exact counts
need the model's own tokenizer, which is not available offline; this estimator mirrors the
pre-tokenizer of BPE tokenizers (cl100k_base's split into words, numbers, punctuation runs and
whitespace) and prices each piece from tables fitted on Python source and package READMEs.

Measured against cl100k_base, o200k_base and Claude's legacy tokenizer in
tests/unit/test_tokens.py (see the module docstring there for the figures).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from functools import lru_cache

from desktop_proxy.protocols.internal import (
    DocumentPart,
    ImagePart,
    Message,
    Part,
    Request,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)

__all__ = [
    "IMAGE_TOKENS",
    "MESSAGE_OVERHEAD_TOKENS",
    "PDF_PAGE_TOKENS",
    "TOOLS_OVERHEAD_TOKENS",
    "estimate_request_tokens",
    "estimate_tokens",
]

# The real cost of an image depends on its pixel size (Anthropic: width*height/750, at most
# ~1600 for the largest images it keeps), which is unknowable without decoding it. A fixed
# near-maximum cost keeps estimates on the safe (high) side.
IMAGE_TOKENS = 1600
# Anthropic: "each page typically uses 1,500-3,000 tokens" (text plus the page image).
PDF_PAGE_TOKENS = 2000
# Role markers and separators around each message in every chat format.
MESSAGE_OVERHEAD_TOKENS = 4
# The system prompt Anthropic adds when tools are present (346 tokens for Claude 4 models with
# tool_choice auto/none, per Anthropic's tool-use pricing table).
TOOLS_OVERHEAD_TOKENS = 346

_PIECE = re.compile(
    r"'(?i:[sdmt]|ll|ve|re)"
    r"|(?P<lead>[^\r\n\w]|_)?+(?P<word>[^\W\d_]++)"
    r"|\d{1,3}+"
    r"|(?P<punct> ?(?:[^\s\w]|_)++[\r\n]*+)"
    r"|\s++$|\s*[\r\n]|\s+(?!\S)|\s"
)
_CAMEL = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")
# Long base64/hex runs (data URLs, hashes) tokenize at about 1.4 characters per token.
_BLOB = re.compile(r"[A-Za-z0-9+/=_-]{120,}")
_BLOB_CHARS_PER_TOKEN = 1.4

# Cost by length of an ASCII word after a space, with no lead, or after a punctuation mark;
# past the end of a table each extra character adds `step`.
_Table = tuple[tuple[float, ...], float]
_AFTER_SPACE: _Table = (
    (0, 1.0, 1.0, 1.01, 1.01, 1.03, 1.15, 1.2, 1.22, 1.24, 1.28, 1.31, 1.45, 1.45, 1.7),
    0.2,
)
_BARE: _Table = (
    (0, 1.0, 1.01, 1.04, 1.09, 1.09, 1.65, 1.7, 1.85, 1.9, 2.0, 2.2, 2.3, 2.4, 2.9),
    0.25,
)
_AFTER_MARK: _Table = (
    (0, 1.02, 1.12, 1.14, 1.19, 1.23, 2.0, 2.0, 2.3, 2.3, 2.4, 2.7, 2.7, 3.1),
    0.25,
)
_UPPER_AFTER_SPACE: _Table = ((0, 1.0, 1.05, 1.12, 1.16, 1.3, 1.3, 1.4, 2.6, 2.7, 2.95), 0.3)
_UPPER: _Table = ((0, 1.0, 1.2, 1.4, 1.35, 1.6, 1.6, 1.95, 2.3, 2.5, 2.6), 0.25)
_PUNCT: _Table = ((0, 1.0, 1.01, 1.08, 1.32, 1.72, 2.09, 2.79, 3.1), 0.4)
_COMMON_AFTER_MARK = 1.16
_CJK_CHAR = 1.2
_OTHER_NON_ASCII_CHAR = 0.6

# Words of five letters or more that BPE vocabularies hold as one token even without a leading
# space (most frequent such words in Python source, READMEs and JSON schemas).
_COMMON_WORD_LIST = """
    accept action actions additional address adjusted aliases always annotation annotations
    append archive argument arguments array assert assistant attribute attributes author
    available basename before binary binding blocking boolean bootstrap boundary branch
    buffer builtin cached callback callbacks called cancel cancelled cannot canvas center
    changes character characters charset checked children choices chunks classes
    classmethod cleanup client closed closing collections command commands commit common
    compare comparison compatible compile compiler complete completion complex config
    connect connection container contains content contents context continue contrib control
    convert counter create current darwin datetime decimal decode default defaults define
    defined delete deprecated description details dictionary digest digits directory
    dirname disable discord dispatch display distribution divide document documentation
    download element enable encode encoded encoding endpoint ensure environment errors
    escape events example examples except exception exceptions exclusive executable
    existing exists expected expression extend extended extension extensions external
    extract factory failed failure false family feature features fields filename filter
    filters finally finder format formats formatter fullname function functions future
    generate generator getattr getitem github global globals groups handle handler handlers
    header headers heading helper hostname identifier identity ignore implementation import
    include including indent input insert inspection install installed instance instances
    integer integral internal interval invalid issues items keyword keywords kwargs lambda
    latest legacy length libraries library license lineno listener loader locale localhost
    locals locations logger logging logical macros manager mapping markdown markers master
    matches matrix maximum medium member members memory message metadata method methods
    minimum minute missing module modules namespace nearest negative normal normalize
    number numbers numeric object objects offset operation operator optimize option
    optional options original output package packages parameter parameters params parent
    parser partial password pattern patterns payload pending pickle platform policy
    position precision prefix prepare process project projects properties property protocol
    provider pytest python quoted random reader reason received record reduce reference
    register registry relative release remainder remove replace report request requests
    required requires reserved resource resources response result results return reverse
    rotate rstrip running sample schema scheme screen script scripts search second seconds
    section security select separator sequence server service session setattr setter
    settings shared should shutdown signal signals signature simple single socket source
    sources sparse special specific sqlite stable standard started startswith statement
    static staticmethod status stderr stdout stream strict string strings struct subclass
    subscription subtype success suffix support symbol symbols system target template
    testing thread timeout tokenizer tokens tools translate transport turtle typing unicode
    unique unittest unknown unlink unpack unused update username validate validation values
    variable vendor verbose verify version warning warnings without workflow wrapped
    wrapper writer writing
"""
_COMMON_WORDS = frozenset(_COMMON_WORD_LIST.split())


def estimate_tokens(text: str) -> int:
    """Estimated token count of a text (typically within 10% of cl100k_base for English prose,
    code and JSON; see tests/unit/test_tokens.py)."""
    if len(text) < 256:
        return _estimate(text)
    # System prompts, tool schemas and earlier messages repeat on every request of a session.
    # The memo is keyed by hash and length so it does not keep the texts alive; a collision
    # would only swap two estimates.
    key = (hash(text), len(text))
    cached = _MEMO.get(key)
    if cached is None:
        cached = _estimate(text)
        if len(_MEMO) >= _MEMO_SIZE:
            del _MEMO[next(iter(_MEMO))]
        _MEMO[key] = cached
    return cached


_MEMO: dict[tuple[int, int], int] = {}
_MEMO_SIZE = 4096


def _estimate(text: str) -> int:
    total = 0.0
    blob_chars = 0
    if len(text) >= 120:
        for blob in _BLOB.findall(text):
            blob_chars += len(blob)
        if blob_chars:
            text = _BLOB.sub(" ", text)
    for lead, word, punct in _PIECE.findall(text):
        if word:
            total += _word_cost(lead, word)
        elif punct:
            total += _punct_cost(punct.strip(" "))
        else:
            total += 1.0
    return round(total + blob_chars / _BLOB_CHARS_PER_TOKEN)


def _cost(table: _Table, length: int) -> float:
    values, step = table
    if length < len(values):
        return values[length]
    return values[-1] + (length - len(values) + 1) * step


@lru_cache(maxsize=8192)
def _word_cost(lead: str, word: str) -> float:
    if not word.isascii():
        return _non_ascii_cost(word) + (0.0 if lead in ("", " ") else 1.0)
    if len(word) > 1 and word.isupper():
        return _cost(_UPPER_AFTER_SPACE if lead == " " else _UPPER, len(word))
    segments = _CAMEL.findall(word)
    if len(segments) >= 3 and len(word) < 3.5 * len(segments):
        # Mixed-case noise (ids, base64 fragments) splits into short pieces.
        return len(word) / 1.6
    if len(segments) <= 1:
        return _segment_cost(lead, word)
    first = _segment_cost(lead, segments[0])
    return first + sum(_segment_cost("", s) for s in segments[1:])


def _segment_cost(lead: str, word: str) -> float:
    if len(word) >= 5 and word.lower() in _COMMON_WORDS:
        return _COMMON_AFTER_MARK if lead not in ("", " ") else 1.0
    if lead == " ":
        return _cost(_AFTER_SPACE, len(word))
    return _cost(_AFTER_MARK if lead else _BARE, len(word))


def _non_ascii_cost(word: str) -> float:
    total = 0.0
    for char in word:
        code = ord(char)
        if code < 0x80:
            total += 0.25
        elif 0x3040 <= code <= 0x9FFF or 0xAC00 <= code <= 0xD7AF:
            total += _CJK_CHAR
        else:
            total += _OTHER_NON_ASCII_CHAR
    return total


def _punct_cost(run: str) -> float:
    core = run.rstrip("\r\n")
    if len(core) >= 4 and core == core[0] * len(core):
        # Vocabularies hold long runs of one mark ("=====", "-----") as few tokens.
        return len(core) // 16 + (1.2 if len(core) % 16 else 0.0)
    return _cost(_PUNCT, len(run))


# --- requests -------------------------------------------------------------------------------


def estimate_request_tokens(req: Request) -> int:
    """Estimated input tokens of a request: system prompt, messages, tool definitions.

    Images count `IMAGE_TOKENS` each and PDF documents `PDF_PAGE_TOKENS` per page.
    """
    total = sum(estimate_tokens(part.text) for part in req.system)
    if req.system:
        total += MESSAGE_OVERHEAD_TOKENS
    for message in req.messages:
        total += _message_tokens(message)
    if req.tools:
        total += TOOLS_OVERHEAD_TOKENS
        for tool in req.tools:
            total += estimate_tokens(tool.name) + estimate_tokens(tool.description or "")
            total += estimate_tokens(json.dumps(tool.parameters, ensure_ascii=False))
    return total


def _message_tokens(message: Message) -> int:
    return MESSAGE_OVERHEAD_TOKENS + sum(_part_tokens(part) for part in message.parts)


def _part_tokens(part: Part) -> int:
    if isinstance(part, TextPart):
        return estimate_tokens(part.text)
    if isinstance(part, ImagePart):
        return IMAGE_TOKENS
    if isinstance(part, DocumentPart):
        return _document_tokens(part)
    if isinstance(part, ToolCallPart):
        return estimate_tokens(part.name) + estimate_tokens(part.arguments)
    if isinstance(part, ToolResultPart):
        return sum(_part_tokens(inner) for inner in part.content)
    return estimate_tokens(part.text)


def _document_tokens(doc: DocumentPart) -> int:
    if doc.text is not None:
        return estimate_tokens(doc.text)
    if doc.data is None:
        return PDF_PAGE_TOKENS
    return PDF_PAGE_TOKENS * _pdf_page_count(doc.data)


_PDF_PAGE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")


def _pdf_page_count(data: str) -> int:
    try:
        raw = base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        return 1
    return max(1, len(_PDF_PAGE.findall(raw)))
