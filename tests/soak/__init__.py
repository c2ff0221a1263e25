"""The soak (issue 18 item 6): ``make soak`` / ``python -m tests.soak``; not part of ``make test``.

The real agent (``optin run``) records a private display (Xvfb + openbox) for ``SOAK_MINUTES``
(default 60) of scripted activity in cycles: typing, clicking and scrolling, switching between
windows, watching an animated window (a separate Tk process, :mod:`tests.soak.animation`), an idle
stretch with the animation stopped, and a pause and resume through ``optin pause`` / ``optin resume``.
Every few seconds :mod:`tests.soak.sampler` reads the agent process and each of its children from
/proc (RSS, PSS, CPU, threads, open files) and the agent's status over the control socket (events
written, frames, loss).  :mod:`tests.soak.growth` decides whether anything grew or leaked,
:mod:`tests.soak.plot` draws the PNGs (Pillow only).  Results go to ``docs/soak/``.

No module here is named ``test_*``: pytest never collects the soak; its detector is unit-tested in
tests/unit/test_soak_growth.py.
"""
