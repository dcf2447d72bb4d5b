"""The triage dashboard: server-rendered pages over the store, in the API's own app.

:func:`service.web.pages.install` mounts the pages under ``/ui`` (``/``
redirects there), the package's static files under ``/static`` (the
dashboard's CSS and script, and the vendored uPlot, Swagger UI and ReDoc of
``static/vendor``: no page loads anything from another host) and the API
documents ``/docs`` and ``/redoc`` on those local assets.

Pages only read: a button that asks for engine work (replay, bisection)
queues it on the app's :class:`service.web.jobs.JobQueue`, whose one worker
thread runs it after the page has answered.  Writes from a page go through
:mod:`service.web.security`: the write token, when one is set, through a
sign-in form and a session cookie; a CSRF token on every form.
"""
