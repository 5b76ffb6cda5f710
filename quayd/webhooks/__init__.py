"""
Push webhooks: payloads, target checks and the delivery dispatcher.
"""
