"""Who may write from the dashboard, and that a form was posted by one of its pages.

Two cookies, both ``HttpOnly`` and ``SameSite=Strict`` (a cross-site request
carries neither, whatever it is):

- the CSRF cookie, a random nonce every page sets when the browser has none;
  each form carries ``HMAC(key, nonce)`` and a write must bring both
  (a signed double-submit token, OWASP's pattern: another site can neither
  read the page's token nor forge one for a cookie it planted).  A write
  whose ``Origin`` header names another host is refused before that;
- the session cookie, only when the API's write token is set
  (``FOLIODIFF_TOKEN``): ``issued.nonce.HMAC(token, issued.nonce)``, set by
  the sign-in form once the token was typed in.  It is checked against the
  token itself, so no session table is kept, and changing the token signs
  every browser out.  It lasts :data:`SESSION_SECONDS`.

The CSRF key is random per process: a form rendered before the server
restarted is refused once (reload the page), which costs less than keeping
a secret on disk.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from pydantic import SecretStr

from service.web.errors import CsrfError, SignInRequiredError

SESSION_COOKIE = "foliodiff_session"
CSRF_COOKIE = "foliodiff_csrf"
#: The author a triager last wrote under, to fill the next form with.
AUTHOR_COOKIE = "foliodiff_author"
#: How long a sign-in lasts.
SESSION_SECONDS = 7 * 24 * 3600


def _mac(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


class Guard:
    """The write checks of one app: its write token (None: writes are open) and CSRF key.

    @clock: seconds since the epoch (sessions expire on it).
    """

    def __init__(self, token: SecretStr | None, clock: Callable[[], float] = time.time) -> None:
        self._token = token.get_secret_value().encode() if token is not None else None
        self._key = secrets.token_bytes(32)
        self._clock = clock

    @property
    def needs_sign_in(self) -> bool:
        """Whether writes need a signed-in session (the write token is set)."""
        return self._token is not None

    # -- sessions --------------------------------------------------------------------

    def token_matches(self, given: str) -> bool:
        """Whether @given is the write token (in constant time)."""
        return self._token is not None and secrets.compare_digest(given.encode(), self._token)

    def new_session(self) -> str:
        """A session cookie value for a browser that just gave the right token."""
        assert self._token is not None, "no sessions without a write token"
        body = f"{int(self._clock())}.{secrets.token_hex(16)}"
        return f"{body}.{_mac(self._token, body)}"

    def signed_in(self, cookie: str | None) -> bool:
        """Whether session cookie @cookie is one of ours, not older than :data:`SESSION_SECONDS`.

        Return: True for every request when no write token is set.
        """
        if self._token is None:
            return True
        issued, _, rest = (cookie or "").partition(".")
        nonce, _, mac = rest.partition(".")
        if not issued.isdigit() or not nonce or not mac:
            return False
        if not secrets.compare_digest(mac, _mac(self._token, f"{issued}.{nonce}")):
            return False
        return 0 <= self._clock() - int(issued) <= SESSION_SECONDS

    def require_session(self, cookie: str | None) -> None:
        """Refuse a write from a browser that has not signed in (:class:`SignInRequiredError`)."""
        if not self.signed_in(cookie):
            raise SignInRequiredError(SESSION_COOKIE, None if cookie is None else "(expired or "
                                      "not ours)", "writes need the write token: sign in first")

    # -- CSRF ------------------------------------------------------------------------

    @staticmethod
    def new_nonce() -> str:
        """A CSRF cookie value."""
        return secrets.token_hex(16)

    def form_token(self, nonce: str) -> str:
        """The CSRF token the forms of a page rendered for CSRF cookie @nonce carry."""
        return _mac(self._key, f"csrf.{nonce}")

    def check_form(self, nonce: str | None, token: str | None, origin: str | None,
                   host: str | None) -> None:
        """Refuse a write that did not come from one of our pages (:class:`CsrfError`).

        @nonce: the CSRF cookie; @token: the form's ``csrf`` field; @origin,
        @host: the request's ``Origin`` (absent in some same-origin requests)
        and ``Host`` headers.
        """
        if origin is not None and origin != "null" and urlsplit(origin).netloc != host:
            raise CsrfError("Origin", origin, f"a write from another site (this is {host})")
        if not nonce:
            raise CsrfError(CSRF_COOKIE, None, "no CSRF cookie: load the page, then post its form")
        if not token or not secrets.compare_digest(token, self.form_token(nonce)):
            raise CsrfError("csrf", token, "the form's CSRF token does not match this browser's "
                                           "(a form from before a server restart: reload the page)")
