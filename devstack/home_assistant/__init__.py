"""A real Home Assistant from PyPI as the tests' peer: install (cached venv per version), config,
process, headless provisioning (onboarding, long-lived token, MQTT entry) and the API the tests call.
"""
