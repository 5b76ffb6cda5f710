"""
Tests for L{quayd.webhooks}.
"""
