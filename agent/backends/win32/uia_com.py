"""UI Automation's COM set-up through comtypes: join an apartment on the calling thread, make the client.

Used by :mod:`~agent.backends.win32.uia` (password fields, on its own worker thread) and
:mod:`~agent.backends.win32.uia_elements` (element lookups, on the element lookup's worker
thread): COM objects belong to the thread that made them, so each thread that calls UI
Automation runs both functions itself.  comtypes is imported when they run, never when this
module is imported, so it imports on any OS.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

logger = logging.getLogger(__name__)


def com_initialize() -> None:
    """On the calling thread: join the multithreaded COM apartment (a thread that already joined
    one keeps it, which is fine for a UI Automation client).  The apartment is left joined when
    the thread ends, as COM allows: objects a traceback still holds may be released after."""
    comtypes = importlib.import_module("comtypes")
    try:
        comtypes.CoInitializeEx(comtypes.COINIT_MULTITHREADED)
    except OSError:
        logger.debug("COM already initialised on the UI Automation thread")


def create_automation(timeout_ms: int | None = None) -> tuple[Any, Any]:
    """On a thread in a COM apartment: ``(module, automation)``, the UIAutomationClient type
    library comtypes generates and an ``IUIAutomation`` client.

    :param timeout_ms: when given, the client is ``CUIAutomation8`` as ``IUIAutomation2``
        (Windows 8+) with ``ConnectionTimeout`` and ``TransactionTimeout`` set to it, so a call
        to an application that does not answer fails with ``UIA_E_TIMEOUT`` after that long
        (the defaults are 2 s and 20 s); where that client cannot be made, the plain one.
    """
    client = importlib.import_module("comtypes.client")
    uia = client.GetModule("UIAutomationCore.dll")
    if timeout_ms is not None:
        try:
            automation = client.CreateObject(uia.CUIAutomation8, interface=uia.IUIAutomation2)
            automation.ConnectionTimeout = timeout_ms
            automation.TransactionTimeout = timeout_ms
        except Exception as exc:  # an older Windows: no IUIAutomation2; the type only
            logger.debug("UI Automation timeouts cannot be set (%s)", type(exc).__name__)
        else:
            return uia, automation
    return uia, client.CreateObject(uia.CUIAutomation, interface=uia.IUIAutomation)


__all__ = ["com_initialize", "create_automation"]
