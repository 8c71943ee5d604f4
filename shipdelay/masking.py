"""Hiding secrets in what shipdelay prints: settings, error sentences, log lines meant for people.

A value is secret when its name says so (password, secret, token, private key, API key,
signature, credential, ...: `is_secret_name`), when it is the password of a URL, when it is a
query parameter of a URL with such a name (`?token=...`, `&sig=...`, `X-Amz-Signature=...`),
when it follows such a name and "=" in free text (`password=...`, `clientSecret="..."`,
`AccountKey=...;`), or when it is a PEM private key. Names are compared word by word, so
`ssl.key.pem`, `sasl.oauthbearer.client.secret`, `AccountKey` and `api_key` are secret while
`ssl.key.location` (a path) and `security.protocol` are not.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

MASK = "********"

# Words that make a name secret wherever they stand in it.
_SECRET_WORDS = frozenset({
    "password", "passwd", "pwd", "pass", "passphrase", "secret", "token", "credential",
    "credentials", "private", "privatekey", "apikey", "sig", "signature", "sas", "authorization",
    "auth", "cookie", "jwt", "bearer",
})
# "key" is secret (api key, access key, ssl.key.pem, AccountKey) unless the name says it is
# about the key rather than the key itself: where it is stored, its id, its type.
_KEY_ABOUT = frozenset({"location", "file", "path", "dir", "id", "name", "type", "serializer",
                        "deserializer", "alias", "size", "algorithm", "version"})
_SECRET_FRAGMENTS = ("password", "secret", "token", "privatekey", "private_key", "apikey",
                     "api_key", "credential")

_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s'\"<>]+")
# name=value in free text; the value is quoted or runs to a separator. (Not "name: value": in
# prose, "KeyError: 'x'" would read as a secret.)
_PAIR = re.compile(r"""(?P<name>[A-Za-z][A-Za-z0-9_.\-]*)(?P<eq>\s*=\s*)"""
                   r"""(?P<value>"[^"]*"|'[^']*'|[^\s,;&'"]+)""")
_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)",
                  re.DOTALL)


def words(name: str) -> list[str]:
    """`name` as lower-case words: camelCase, dots, dashes and underscores split."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return [w for w in re.split(r"[^a-z0-9]+", spaced.lower()) if w]


def is_secret_name(name: str) -> bool:
    """Whether a setting, query parameter or field called `name` holds a secret."""
    parts = words(name)
    if any(w in _SECRET_WORDS for w in parts):
        return True
    if "key" in parts and not any(w in _KEY_ABOUT for w in parts[parts.index("key") + 1:]):
        return True
    flat = "_".join(parts)
    return any(fragment in flat for fragment in _SECRET_FRAGMENTS)


def mask_url(url: str) -> str:
    """`url` with its password and its secret query parameters replaced by the mask; nothing
    else of it changes (no re-encoding, `sqlite:////abs/path` keeps its slashes)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return mask_text_pairs(url)
    out = url
    if "@" in parts.netloc:
        creds, host = parts.netloc.rsplit("@", 1)
        if ":" in creds:
            out = out.replace(parts.netloc, f"{creds.split(':', 1)[0]}:{MASK}@{host}", 1)
    if parts.query:
        query = "&".join(_mask_param(p) for p in parts.query.split("&"))
        out = out.replace(f"?{parts.query}", f"?{query}", 1)
    if parts.fragment:
        out = out.replace(f"#{parts.fragment}", f"#{mask_text_pairs(parts.fragment)}", 1)
    return out


def _mask_param(param: str) -> str:
    name, eq, _value = param.partition("=")
    return f"{name}={MASK}" if eq and is_secret_name(unquote(name)) else param


def mask_text_pairs(text: str) -> str:
    """`text` with the values of secret-named `name=value` pairs masked."""
    def hide(m: re.Match) -> str:
        if not is_secret_name(m["name"]):
            return m[0]
        value = m["value"]
        quote = value[0] if value[:1] in ("'", '"') else ""
        return f"{m['name']}{m['eq']}{quote}{MASK}{quote}"

    return _PAIR.sub(hide, text)


def mask_text(text: str) -> str:
    """Any text (a setting's value, an error message) with everything secret-shaped masked."""
    text = _PEM.sub(MASK, text)
    text = _URL.sub(lambda m: mask_url(m[0]), text)
    # URLs are done; mask pairs outside them only (a URL's query was handled above).
    pieces, last = [], 0
    for m in _URL.finditer(text):
        pieces += [mask_text_pairs(text[last:m.start()]), m[0]]
        last = m.end()
    pieces.append(mask_text_pairs(text[last:]))
    return "".join(pieces)


def mask_value(name: str, value: object) -> object:
    """A setting's value as it may be printed: secret names hide the whole value, mappings are
    masked key by key, text is masked by shape."""
    if value is None:
        return None
    if isinstance(value, dict):
        return {k: mask_value(str(k), v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_value(name, v) for v in value]
    if is_secret_name(name):
        return MASK if value != "" else value
    if isinstance(value, str):
        return mask_text(value)
    return value
