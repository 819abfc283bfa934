"""The byte-level alphabet of GPT-2 and HF `tokenizers`: every byte shown as a printable character.

GPT-2's vocabulary files store tokens as text, so each of the 256 byte values needs a visible
stand-in: printable Latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves and the
other 68 (space, control bytes, ...) map to U+0100 onwards, in byte order. That is why a space
shows as 'Ġ' (U+0120) and a newline as 'Ċ' (U+010A) in GPT-2's vocab.json.

HF's BPE trainer numbers its alphabet in code-point order of these stand-ins, and breaks ties
between equally frequent pairs by the smaller pair of those numbers; `HF_BYTE_ORDER` holds that
position for each byte so that our trainer can reproduce HF's merge order exactly.
"""

from __future__ import annotations


def bytes_to_unicode() -> dict[int, str]:
    """Map each byte value 0..255 to its printable stand-in character (GPT-2's table)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


BYTE_TO_UNICODE: dict[int, str] = bytes_to_unicode()
UNICODE_TO_BYTE: dict[str, int] = {ch: b for b, ch in BYTE_TO_UNICODE.items()}

# HF_BYTE_ORDER[b]: index of byte b's stand-in among all 256 stand-ins sorted by code point.
_sorted_bytes = sorted(range(256), key=lambda b: ord(BYTE_TO_UNICODE[b]))
HF_BYTE_ORDER: list[int] = [0] * 256
for _position, _byte in enumerate(_sorted_bytes):
    HF_BYTE_ORDER[_byte] = _position


def token_to_text(token: bytes) -> str:
    """A token's bytes written with the byte-level alphabet (as in HF vocab.json)."""
    return "".join(BYTE_TO_UNICODE[b] for b in token)


def text_to_token(text: str) -> bytes:
    """Inverse of `token_to_text`; a KeyError names a character outside the alphabet."""
    return bytes(UNICODE_TO_BYTE[ch] for ch in text)
