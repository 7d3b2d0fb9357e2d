"""The one renderer of untrusted text: what a person sees of an agent-supplied string.

Every agent-supplied value (`tool_name`, `user_id`, `reason`, argument keys and values,
notes, error messages quoting them) passes through here before a person reads it — CLI
tables and messages, Slack, e-mail text and HTML. Machine outputs (`--json`, the HTTP API,
webhook bodies) never do: they carry the exact stored value.

Guarantees of every human-facing variant (`plain`, `terminal`, `slack`, `html`, `json_text`):

- No character that can act on a display reaches the output raw. Each becomes a visible
  escape: `\\x1b` (code points below U+0100), `\\u202e` (the BMP), `\\U000e0041` (above).
  Escaped are: C0 and C1 controls and DEL (so every ESC/CSI/OSC/DCS sequence, OSC 52
  clipboard writes included, is inert), the bidirectional controls, every other format
  character (Unicode category Cf: U+00AD, U+180E, U+200B–U+200F, U+2060–U+2064, U+FEFF, the
  tag characters U+E0000–U+E007F, …), line and paragraph separators U+2028/U+2029, lone
  surrogates, unassigned code points (they may be assigned a display effect later), every
  space other than U+0020 (U+00A0, U+3000, … look like a space but are not one), variation
  selectors and the invisible fillers (U+034F, U+115F, U+1160, U+17B4, U+17B5, U+2800,
  U+3164, U+FFA0, U+180B–U+180F), which render as nothing yet make two strings differ.
  Newline, tab and CR become `\\n`, `\\t`, `\\r`, so one value is always one line and
  cannot fake a field of its own.
- A backslash in the value is shown as `\\\\`, so the agent cannot forge an escape: the
  text `\\x1b` typed by an agent shows as `\\\\x1b`, a real ESC as `\\x1b`.
- Private-use characters and ordinary letters, marks and emoji are kept. Look-alike letters
  (Cyrillic `а` for Latin `a`) are not flagged here; the request's digest is what ties a
  decision to exact bytes.
- A width limit is applied after escaping and never splits an escape (or an HTML/Slack
  entity); a cut is marked with `…` and the count of characters of the value left out,
  e.g. `… (+1,234 chars)`. Terminal and plain text count width in terminal cells (East Asian
  wide characters take two); Slack and HTML count characters, as their limits do.
- `terminal` returns a `rich.text.Text`: rich never reads markup (`[red]`, `[/x]`) or emoji
  codes in it. `slack` escapes `&`, `<`, `>` as Slack asks and shows backticks as `\\x60`,
  so the value can sit inside a code span and neither break out of it nor make a link or a
  mention. `html` is `html.escape`d (quotes too), safe in element text and attribute values.
  `notification` is for a desktop notification (`notify-send`), whose body the
  freedesktop.org Desktop Notifications specification lets carry a markup subset (`<b>`,
  `<i>`, `<u>`, `<a href>`, `<img>`): `&`, `<`, `>` become XML entities, so none is read.
"""

from __future__ import annotations

import html as _html
import json
import re
import unicodedata
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

#: Code points that render as nothing (or as a blank) although Unicode classes them as
#: letters or marks: variation selectors, fillers, the combining grapheme joiner.
_INVISIBLE = frozenset([0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x2800, 0x3164, 0xFFA0,
                        *range(0x180B, 0x1810), *range(0xFE00, 0xFE10),
                        *range(0xE0100, 0xE01F0)])
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\"}
ELLIPSIS = "…"


def is_unsafe(ch: str) -> bool:
    """True if `ch` (one code point) must not reach a display raw (see the module doc)."""
    cp = ord(ch)
    if 0x20 <= cp < 0x7F:
        return False
    if cp in _INVISIBLE:
        return True
    cat = unicodedata.category(ch)
    return (cat[0] == "C" and cat != "Co") or cat in ("Zl", "Zp", "Zs")


def _code(cp: int) -> str:
    if cp < 0x100:
        return f"\\x{cp:02x}"
    if cp < 0x10000:
        return f"\\u{cp:04x}"
    return f"\\U{cp:08x}"


@lru_cache(maxsize=4096)
def _visible(ch: str) -> str:
    """One code point as the visible text that stands for it."""
    named = _NAMED.get(ch)
    if named is not None:
        return named
    return _code(ord(ch)) if is_unsafe(ch) else ch


def escape(value: Any) -> str:
    """`value` (str() of it; None is "") with every unsafe character as a visible escape."""
    text = "" if value is None else str(value)
    if text.isascii() and text.isprintable() and "\\" not in text:
        return text
    return "".join(map(_visible, text))


def _cells(text: str) -> int:
    from rich.cells import cell_len

    return cell_len(text)


def cut_marker(left_out: int, hint: str | None = None) -> str:
    """The mark put where text was cut: `… (+1,234 chars)`, optionally with a hint."""
    extra = f"; {hint}" if hint else ""
    return f"{ELLIPSIS} (+{left_out:,} char{'s' if left_out != 1 else ''}{extra})"


def _fit(tokens: list[str], limit: int | None, measure: Callable[[str], int],
         hint: str | None, marker_form: Callable[[str], str]) -> str:
    """Join tokens (each the final form of one source character), cutting to `limit`.

    The cut falls between tokens, so an escape or entity is never split; the marker (in the
    output's own form, `marker_form`) counts the source characters left out.
    """
    whole = "".join(tokens)
    if limit is None or measure(whole) <= limit:
        return whole
    total = len(tokens)
    # the full mark, or for a very narrow limit a shorter one: `…+1,234`, then bare `…`
    forms: list[Callable[[int], str]] = [lambda n: cut_marker(n, hint),
                                         lambda n: f"{ELLIPSIS}+{n:,}", lambda n: ELLIPSIS]
    for form in forms:
        if measure(marker_form(form(total))) > limit:
            continue
        out: list[str] = []
        used = 0
        for i, tok in enumerate(tokens):
            marker = marker_form(form(total - i))
            w = measure(tok)
            if used + w + measure(marker) > limit:
                return "".join(out) + marker
            out.append(tok)
            used += w
    return ""


def _tokens(value: Any) -> list[str]:
    text = "" if value is None else str(value)
    return [_visible(ch) for ch in text]


def plain(value: Any, width: int | None = None, *, hint: str | None = None) -> str:
    """Safe plain text on one line, at most `width` terminal cells (None: no limit)."""
    if width is None:
        return escape(value)
    return _fit(_tokens(value), width, _cells, hint, str)


def terminal(value: Any, width: int | None = None, *, style: str = "") -> Any:
    """`plain` as a `rich.text.Text`, which rich prints without reading any markup."""
    from rich.text import Text

    return Text(plain(value, width), style=style, no_wrap=False)


def slack(value: Any, limit: int | None = None, *, hint: str | None = None) -> str:
    """Safe Slack mrkdwn for use inside a code span: `&<>` as entities, backtick as `\\x60`.

    `limit` counts characters of the result (entities included), as Slack's limits do.
    """
    def form(ch: str) -> str:
        if ch == "`":
            return "\\x60"
        return _slack_entities(_visible(ch))

    text = "" if value is None else str(value)
    return _fit([form(ch) for ch in text], limit, len, hint, _slack_entities)


def _slack_entities(text: str) -> str:
    """`&`, `<`, `>` as the entities Slack and the XML markup of desktop notifications read."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_code(value: Any, limit: int | None = None, *, hint: str | None = None) -> str:
    """`value` as an inline code span (`` `…` ``); the limit counts the backticks too.

    The cut marker goes after the span, so it can never be mistaken for part of the value.
    """
    inner = slack(value, None)
    if limit is None or len(inner) + 2 <= limit:
        return f"`{inner}`"
    text = "" if value is None else str(value)
    tokens = ["\\x60" if ch == "`" else _slack_entities(_visible(ch)) for ch in text]
    # the longest prefix whose span plus the marker fits
    out: list[str] = []
    used = 0
    for i, tok in enumerate(tokens):
        marker = " " + _slack_entities(cut_marker(len(tokens) - i, hint))
        if used + len(tok) + 2 + len(marker) > limit:
            return f"`{''.join(out)}`{marker}" if out else marker.strip()[:limit]
        out.append(tok)
        used += len(tok)
    return f"`{''.join(out)}`"  # pragma: no cover


def notification(value: Any, limit: int | None = None) -> str:
    """Safe text for a desktop notification's summary or body (`notify-send`).

    The freedesktop.org Desktop Notifications specification ("Markup") lets a server read a
    body as a markup subset (`<b>`, `<i>`, `<u>`, `<a href>`, `<img>`) and asks senders to
    escape `&`, `<`, `>` as the XML entities `&amp;`, `&lt;`, `&gt;`: done here on top of
    `plain`'s escapes, so an agent's `<a href=...>` shows as text, never as a link. One line;
    `limit` counts characters of the result (entities included), and a cut never splits an
    escape or an entity.
    """
    text = "" if value is None else str(value)
    return _fit([_slack_entities(_visible(ch)) for ch in text], limit, len, None,
                _slack_entities)


def html(value: Any, limit: int | None = None, *, hint: str | None = None) -> str:
    """Safe HTML text (element content or quoted attribute), at most `limit` characters."""
    text = "" if value is None else str(value)
    return _fit([_html.escape(_visible(ch)) for ch in text], limit, len, hint, _html.escape)


def json_text(value: Any, *, indent: int | None = 2, ascii_only: bool = False) -> str:
    """`value` as pretty JSON for a person: unsafe characters as JSON `\\uXXXX` escapes.

    The result is still valid JSON for the same value (astral characters as surrogate
    pairs, e.g. a tag character as `\\udb40\\udc41`), keys sorted, one item per line. Lone
    surrogates in the value also come out as escapes, never raw. `ascii_only` escapes every
    non-ASCII character (for a stream that cannot encode the rest).
    """
    text = json.dumps(value, indent=indent, sort_keys=True, ensure_ascii=ascii_only,
                      default=str)
    if text.isascii() and "\x7f" not in text:  # JSON escapes the C0 controls, not DEL
        return text
    return "".join(map(_json_char, text))


@lru_cache(maxsize=4096)
def _json_char(ch: str) -> str:
    if ch == "\n" or not is_unsafe(ch):
        return ch
    cp = ord(ch)
    if cp < 0x10000:
        return f"\\u{cp:04x}"
    cp -= 0x10000
    return f"\\u{0xD800 + (cp >> 10):04x}\\u{0xDC00 + (cp & 0x3FF):04x}"


def lines_fit(lines: Iterable[str], limit: int, hint: str | None = None,
              measure: Callable[[str], int] = len) -> str:
    """Already-safe `lines` joined by newlines, cut at a line end to at most `limit`.

    For multi-line blocks (pretty JSON arguments): a cut is marked on its own last line with
    the count of characters left out, e.g. `… (+5,120 chars; see all: approvalctl show ID)`.
    """
    lines = list(lines)
    whole = "\n".join(lines)
    if measure(whole) <= limit:
        return whole
    total = len(whole)
    out: list[str] = []
    used = 0
    for line in lines:
        marker = cut_marker(total - used, hint)
        if measure("\n".join([*out, line])) + 1 + measure(marker) <= limit:
            out.append(line)
            used += len(line) + 1
            continue
        # this line overflows: keep as much of it as fits, cut between escapes
        head, n = "", 0
        for tok in _TOKEN.findall(line):
            marker = cut_marker(total - used - n - len(tok), hint)
            if measure("\n".join([*out, head + tok])) + 1 + measure(marker) > limit:
                break
            head += tok
            n += len(tok)
        marker = cut_marker(total - used - n, hint)
        return "\n".join([*out, head] if head else out) + "\n" + marker
    return whole  # pragma: no cover


def escape_unencodable(text: str, encoding: str) -> str:
    """`text` (already rendered) with the characters `encoding` cannot carry as escapes.

    For human output on a non-UTF-8 stream: `é` on an ASCII terminal shows as `\\xe9`.
    """
    def one(ch: str) -> str:
        try:
            ch.encode(encoding)
        except (UnicodeEncodeError, LookupError):
            return _code(ord(ch))
        return ch

    return "".join(map(one, text))


def slack_json(text: str) -> str:
    """Already-rendered JSON text made safe for a Slack code block: `&<>` as entities,
    backticks as the JSON escape `\\u0060` (still valid JSON, cannot close the block)."""
    return _slack_entities(text.replace("`", "\\u0060"))


#: One unit of rendered text that must not be split: an HTML/Slack entity, a surrogate
#: pair, one of our escapes, or a single character.
_TOKEN = re.compile(r"&(?:[a-z]+|#x?[0-9a-f]+);|\\ud[89ab][0-9a-f]{2}\\ud[c-f][0-9a-f]{2}|"
                    r"\\U[0-9a-f]{8}|\\u[0-9a-fA-F]{4}|\\x[0-9a-f]{2}|\\.|.", re.S)


def cut_tokens(text: str, limit: int) -> str:
    """Rendered `text` cut to at most `limit` characters without splitting an escape or an
    entity, marked with the count of characters left out."""
    tokens = _TOKEN.findall(text)
    return _fit(tokens, limit, len, None, str)
