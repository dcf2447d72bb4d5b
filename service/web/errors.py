"""Exceptions of the dashboard's pages: each a 4xx with the field and the value at fault.

The pages answer them as an HTML page (:mod:`service.web.pages`), the API's
own errors (``service/api/errors.py``) as JSON.
"""

from __future__ import annotations

from typing import Any

from engine import FoliodiffError


class WebError(FoliodiffError):
    """A request a page refuses: @status, the @field at fault, the @value sent and why."""

    status = 400

    def __init__(self, field: str, value: Any, detail: str) -> None:
        self.field = field
        self.value = value
        self.detail = detail
        super().__init__(f"{field}: {detail} (got {value!r})")


class BadFormError(WebError):
    """A form body that is not a form, or a form field out of its bounds."""

    status = 422


class CsrfError(WebError):
    """A write without the CSRF token of the page it came from, or from another site."""

    status = 403


class SignInRequiredError(WebError):
    """A write while a write token is set and the browser has not signed in."""

    status = 401
