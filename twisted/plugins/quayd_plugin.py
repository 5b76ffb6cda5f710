"""
The C{twistd quayd} plugin; C{quayd.tap} is imported only when it is used.
"""

from __future__ import annotations

from twisted.application.service import ServiceMaker

quayd = ServiceMaker("quayd", "quayd.tap", "A private container image registry", "quayd")
