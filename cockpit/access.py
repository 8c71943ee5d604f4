"""Access to the cockpit: the service's API key (`SHIPDELAY_API_KEY`), never open when one is set.

Every request (pages, Dash callbacks, its scripts) is refused without the key: a page sends the
browser to a login form; anything else gets 401. The form's key, once right, is kept as a cookie
(HttpOnly, SameSite=Strict) holding an HMAC of the key, never the key itself; the `X-API-Key`
header works too (scripts, tests). Compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import html

from flask import Flask, Response, redirect, request

COOKIE = "shipdelay_cockpit"
OPEN_PATHS = ("/login", "/logout")

LOGIN_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>shipdelay cockpit: sign in</title>
<style>body{{font-family:system-ui,sans-serif;margin:15vh auto;max-width:22rem;color:#222}}
input,button{{font-size:1rem;padding:.4rem;width:100%;box-sizing:border-box;margin:.3rem 0}}
.error{{color:#a40000}}</style></head><body>
<h1>shipdelay cockpit</h1>
<form id="login-form" method="post" action="/login">
<label for="login-key">API key (the prediction service's)</label>
<input id="login-key" name="key" type="password" autocomplete="current-password" autofocus>
<button id="login-submit" type="submit">Sign in</button></form>
<p id="login-error" class="error">{error}</p></body></html>"""


def token(key: str) -> str:
    """What the cookie holds: an HMAC of the key (the key itself never leaves the form)."""
    return hmac.new(key.encode(), b"shipdelay-cockpit", hashlib.sha256).hexdigest()


def allowed(key: str, header: str | None, cookie: str | None) -> bool:
    """The request carries the key (header) or the token of a signed-in browser (cookie)."""
    if header is not None and hmac.compare_digest(header.encode(), key.encode()):
        return True
    return cookie is not None and hmac.compare_digest(cookie.encode(), token(key).encode())


def protect(server: Flask, key: str | None) -> None:
    """Require the key on every route of `server` when `key` is set (nothing when it is not)."""
    if not key:
        return

    @server.before_request
    def _check():
        if request.path in OPEN_PATHS:
            return None
        if allowed(key, request.headers.get("X-API-Key"), request.cookies.get(COOKIE)):
            return None
        if request.method == "GET" and not request.path.startswith("/_"):
            return redirect("/login")
        return Response('{"error": "sign in to the cockpit first"}', status=401,
                        mimetype="application/json")

    @server.route("/login", methods=["GET", "POST"])
    def _login():
        if request.method == "GET":
            return Response(LOGIN_PAGE.format(error=""), mimetype="text/html")
        supplied = request.form.get("key", "")
        if not hmac.compare_digest(supplied.encode(), key.encode()):
            page = LOGIN_PAGE.format(error=html.escape("That key is not the service's API "
                                                       "key; try again."))
            return Response(page, status=401, mimetype="text/html")
        answer = redirect("/")
        answer.set_cookie(COOKIE, token(key), httponly=True, samesite="Strict",
                          secure=request.is_secure)
        return answer

    @server.route("/logout")
    def _logout():
        answer = redirect("/login")
        answer.delete_cookie(COOKIE)
        return answer
